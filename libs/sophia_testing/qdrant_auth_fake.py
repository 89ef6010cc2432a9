"""A stand-in for one Qdrant server node, faithful in what a key rotation touches and nothing else:
it reads `service.api_key` from its config file (components/qdrant.py's `local.yaml`) once, at start,
as Qdrant does, and checks every request but the health endpoints against it: the key in an
`api-key` header or as `Authorization: Bearer`, missing -> 401, wrong -> 403. It answers the
collections listing and existence (no storage): enough for a client's requests to succeed or fail.
No Qdrant binary or image can be had on this machine (docs/secrets.md).

    python -m sophia_testing.qdrant_auth_fake <local.yaml> <port>
"""

from __future__ import annotations

import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

HEALTH = {"/healthz", "/livez", "/readyz"}


def serve(config_path: str, port: int) -> None:
    with open(config_path) as f:
        api_key = ((yaml.safe_load(f) or {}).get("service") or {}).get("api_key")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict | str) -> None:
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if not api_key:
                return True
            given = self.headers.get("api-key")
            bearer = self.headers.get("Authorization", "")
            if given is None and bearer.startswith("Bearer "):
                given = bearer.removeprefix("Bearer ")
            if given is None:
                self._send(401, {"status": {"error": "Must provide an API key or an Authorization bearer token"}})
                return False
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                self._send(403, {"status": {"error": "Invalid API key or JWT"}})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if path in HEALTH:
                return self._send(200, "healthz check passed")
            if not self._authorized():
                return None
            ok = {"status": "ok", "time": 0.0}
            if path == "/collections":
                return self._send(200, {"result": {"collections": []}, **ok})
            if path.startswith("/collections/") and path.endswith("/exists"):
                return self._send(200, {"result": {"exists": False}, **ok})
            return self._send(404, {"status": {"error": "Not found"}})

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
