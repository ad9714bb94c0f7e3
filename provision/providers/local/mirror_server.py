"""The local provider's artifacts mirror: a small HTTP server on the bridge address serving the
binaries host configs fetch (`python -I -S mirror_server.py ADDRESS PORT DIR`)."""
from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        sys.stderr.write("mirror: " + (format % args) + "\n")


def main(address: str, port: str, directory: str) -> int:
    handler = functools.partial(QuietHandler, directory=directory)
    with ThreadingHTTPServer((address, int(port)), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
