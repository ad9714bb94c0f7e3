"""The vagrant provider's config server: full Ignition configs over HTTP, for first boot only.

A VM's boot config (the VirtualBox guest property `/Ignition/Config`, capped at 1 KiB, or
QEMU's fw_cfg under libvirt) is a small pointer config: `ignition.config.replace` with the URL
of the full config on this machine and its sha512. The full configs are a cluster's internals
(certificates, units; their keys come later over SSH), so the server:

- binds only the host's address on the VMs' private network (the first address of
  `provider.subnet`; VirtualBox and vagrant-libvirt give it to the host side of the network).
  The interface appears only while `vagrant up` creates the network, so the socket is bound
  with IP_FREEBIND and starts answering once the address exists;
- serves each config at a path made of its own sha512 (unguessable without the config), and
  answers 404 to anything else; never logs a request;
- runs only while `vagrant up` runs (Ignition fetches during the first boot, before `vagrant
  up` can reach the VM over SSH), then stops.
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from typing import Mapping

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; the constant is missing from older Pythons


def config_path(full_config: bytes) -> str:
    """Where a full config is served: `/<sha512 hex>.ign`."""
    return f"/{hashlib.sha512(full_config).hexdigest()}.ign"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    configs: Mapping[str, bytes] = {}

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        body = self.server.configs.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.coreos.ignition+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # a request line names a secret's path: never logged


class ConfigServer:
    """Serves `configs` (full config bytes, each at `config_path`) on `address`, port `port`
    (0: any free port) while used as a context manager. `url(config)` is where a VM fetches it."""

    def __init__(self, address: str, configs: list[bytes] | tuple[bytes, ...], port: int = 0):
        self.address = address
        self._server = _Server((address, port), _Handler, bind_and_activate=True)
        self._server.configs = {config_path(c): c for c in configs}
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, full_config: bytes) -> str:
        return f"http://{self.address}:{self.port}{config_path(full_config)}"

    def __enter__(self) -> "ConfigServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="vagrant-configs", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
