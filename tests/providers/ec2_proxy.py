"""An HTTP proxy in front of moto's EC2 server: counts API actions and injects faults.

Real boto3 (and libcloud) talk to it as to any EC2 endpoint. Faults are queued per action:
`throttle` answers 503 RequestLimitExceeded without forwarding; `fail` answers 400 with an
error code; `drop` forwards the request (the cloud acts) and then closes the connection
without an answer, as a lost response would.
"""
from __future__ import annotations

import collections
import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

THROTTLE_BODY = ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
                 '<Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>')


def error_body(code: str) -> str:
    return THROTTLE_BODY.replace("RequestLimitExceeded", code).replace("Request limit exceeded.", f"injected {code}")


class EC2Proxy:
    def __init__(self, upstream_host: str, upstream_port: int, bind: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.calls: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, dict[str, list[str]]]] = []
        self.faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = urllib.parse.parse_qs(body.decode(errors="replace")) if body else {}
                query.update(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                action = (query.get("Action") or [""])[0]
                with proxy.lock:
                    proxy.calls[action] += 1
                    proxy.log.append((action, query))
                    fault = proxy.faults[action].popleft() if proxy.faults.get(action) else None
                if fault == "throttle":
                    return self._answer(503, THROTTLE_BODY.encode())
                if fault and fault.startswith("fail:"):
                    return self._answer(400, error_body(fault[5:]).encode())
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()
                return None

            def _answer(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def inject(self, action: str, *faults: str) -> None:
        with self.lock:
            self.faults[action].extend(faults)

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.log.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
