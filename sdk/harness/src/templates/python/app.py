"""CONNECTOR_NAME — a Switchboard connector, in Python.

POSTs each event's payload, verbatim, to ``config.url`` with the headers of
SPEC §4.5 (``Idempotency-Key``, ``X-Switchboard-Event``,
``X-Switchboard-Type``) and classifies the answer: 2xx done; 408, 429, 5xx,
connect errors and timeouts retry (honouring ``Retry-After``); any other
status rejects with the status and the start of the body. Change
``deliver`` to speak your system's API; the SDK is ``switchboard_connector``.
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
            "CONNECTOR_NAME",
            VERSION,
            [ConfigField("url", True, "http(s) URL the payload is POSTed to")],
        )

    def deliver(self, d):
        headers = delivery_headers(d)
        headers["user-agent"] = f"CONNECTOR_NAME/{VERSION}"
        resp = http.post(config.require("url"), headers=headers, json_text=d.payload)
        return outcome_from_status(resp)
