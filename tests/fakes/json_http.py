"""What the HTTPS stand-ins of the Kubernetes API that `bootstrap.sh` talks to share: quiet
logs and a JSON answer with its length."""
from __future__ import annotations

import http.server
import json


class JSONHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def answer(self, code: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
