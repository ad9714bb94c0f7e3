"""What the HTTP stand-ins of the Kubernetes API share: quiet logs, a JSON answer with its
length, and (for the HTTPS ones `bootstrap.sh` talks to) a server that asks for a client
certificate of the cluster's CA, as the API server does."""
from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path


class JSONHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def answer(self, code: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_tls(handler: type[http.server.BaseHTTPRequestHandler], cert: Path, key: Path,
              client_ca: Path) -> http.server.ThreadingHTTPServer:
    """Serve `handler` on a loopback port over TLS with `cert`/`key`, requiring a client
    certificate signed by `client_ca`; the caller ends it with shutdown() and server_close()."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
