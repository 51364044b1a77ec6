"""Tests of the built CONNECTOR_NAME.wasm in the gateway's own sandbox
(``switchboard connector check``) against a local server. Build first:
``make build``. The gateway binary is $SWITCHBOARD_BIN, else ``switchboard``
on the PATH."""

import json
import os
import subprocess
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
WASM = os.path.join(HERE, "..", "CONNECTOR_NAME.wasm")
BIN = os.environ.get("SWITCHBOARD_BIN", "switchboard")

EVENT = {
    "id": "evt-1",
    "type": "number.assign",
    "keys": ["msisdn:2065551234"],
    "payload": {"msisdn": "2065551234", "customer": "A2"},
}


class Upstream:
    """A server answering ``status`` (and ``headers``, ``body``), recording requests."""

    def __init__(self, status, headers=None, body=b""):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                outer.requests.append((self.command, dict(self.headers), self.rfile.read(length)))
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def check(args, event=None):
    argv = [BIN, "--format", "json", "connector", "check", WASM, *args]
    with tempfile.TemporaryDirectory() as tmp:
        if event is not None:
            path = os.path.join(tmp, "event.json")
            with open(path, "w") as f:
                json.dump(event, f)
            argv += ["--event", path]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def deliver_to(up):
    return check([f"--config=url=http://{up.host}/hook", f"--allow-host={up.host}"], EVENT)


class ConnectorTest(unittest.TestCase):
    def test_declares_its_name_and_a_required_url(self):
        info = check([])
        self.assertEqual(info["name"], "CONNECTOR_NAME")
        self.assertTrue(any(c["name"] == "url" and c["required"] for c in info["config"]))

    def test_a_2xx_is_done_with_the_payload_and_the_idempotency_headers(self):
        up = Upstream(200)
        try:
            self.assertEqual(deliver_to(up)["outcome"]["kind"], "done")
            method, headers, body = up.requests[0]
            headers = {k.lower(): v for k, v in headers.items()}
            self.assertEqual(method, "POST")
            self.assertEqual(json.loads(body), EVENT["payload"])
            self.assertEqual(headers["idempotency-key"], "evt-1-check")
            self.assertEqual(headers["x-switchboard-event"], "evt-1")
            self.assertEqual(headers["x-switchboard-type"], "number.assign")
        finally:
            up.close()

    def test_a_503_is_a_retry_that_honours_retry_after(self):
        up = Upstream(503, {"retry-after": "7"})
        try:
            outcome = deliver_to(up)["outcome"]
            self.assertEqual(outcome["kind"], "retry")
            self.assertEqual(outcome["after_ms"], 7000)
        finally:
            up.close()

    def test_a_404_is_a_reject_quoting_the_status_and_the_body(self):
        up = Upstream(404, body=b"no such subscriber")
        try:
            outcome = deliver_to(up)["outcome"]
            self.assertEqual(outcome["kind"], "reject")
            self.assertRegex(outcome["reason"], "404.*no such subscriber")
        finally:
            up.close()

    def test_a_missing_url_is_a_reject_not_a_crash(self):
        outcome = check([], EVENT)["outcome"]
        self.assertEqual(outcome["kind"], "reject")
        self.assertIn("url", outcome["reason"])


if __name__ == "__main__":
    unittest.main()
