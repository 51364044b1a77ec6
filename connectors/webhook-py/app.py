"""The ``webhook`` connector (SPEC §4.5), in Python.

POSTs the event payload, verbatim, as the JSON body to ``config.url`` with
``Idempotency-Key: <delivery id>``, ``X-Switchboard-Event: <event id>`` and
``X-Switchboard-Type: <event type>`` (and ``User-Agent:
switchboard-webhook-py/<version>``). 2xx → done; 408, 429, 5xx, connect errors
and timeouts → retry (honouring ``Retry-After``); any other status → reject
with the status and the start of the body. Credentials, if any, are injected
by the host as secret headers; this code never sees them.
"""

from switchboard_connector import (
    ConfigField,
    Connector,
    Info,
    config,
    delivery_headers,
    http,
    outcome_from_status,
)

VERSION = "0.1.0"


class WitWorld(Connector):
    def describe(self) -> Info:
        return Info(
            "webhook",
            VERSION,
            [ConfigField("url", True, "http(s) URL the payload is POSTed to")],
        )

    def deliver(self, d):
        headers = delivery_headers(d)
        headers["user-agent"] = f"switchboard-webhook-py/{VERSION}"
        resp = http.post(config.require("url"), headers=headers, json_text=d.payload)
        return outcome_from_status(resp)
