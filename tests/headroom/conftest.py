"""Fixtures: one real etcd (v2 API enabled, TLS with client-certificate auth) for the
headroom tests, with certificates made by provision.pki's own functions."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import sys

import pytest

from tests.real import require
from provision.pki import CertSpec, cert_pem, key_pem, make_ca, make_leaf


# tests/fakes holds the local API servers shared by the suite.
TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TLS:
    ca: Path
    cert: Path
    key: Path


@dataclass
class Etcd:
    endpoint: str
    client_tls: TLS
    other_tls: TLS  # signed by another CA: must be refused

    def client(self):
        from provision.headroom.observe import etcd_client
        return etcd_client([self.endpoint], self.client_tls)


def write_tls(directory: Path, name: str, ca_key, ca_cert, usage: str, ips=(), dns=()) -> TLS:
    key, cert = make_leaf(CertSpec(name, name, usage, dns_names=tuple(dns), ip_addresses=tuple(ips)),
                          ca_key, ca_cert, 30, "ecdsa-p256")
    paths = TLS(directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")
    paths.ca.write_bytes(cert_pem(ca_cert))
    paths.cert.write_bytes(cert_pem(cert))
    paths.key.write_bytes(key_pem(key))
    os.chmod(paths.key, 0o600)
    return paths


def start_etcd(directory: Path, server: TLS, *, v2: bool = True) -> tuple[subprocess.Popen, str]:
    client_port, peer_port = free_port(), free_port()
    endpoint = f"https://127.0.0.1:{client_port}"
    args = [require("etcd"), "--name", "t", "--data-dir", str(directory / "data"),
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer_port}",
            "--cert-file", str(server.cert), "--key-file", str(server.key),
            "--trusted-ca-file", str(server.ca), "--client-cert-auth"]
    if v2:
        args.append("--enable-v2")
    log = open(directory / "etcd.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, endpoint


def wait_healthy(endpoint: str, tls: TLS, proc: subprocess.Popen, timeout: float = 20) -> None:
    import etcd
    from provision.headroom.observe import etcd_client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("etcd exited early")
        try:
            etcd_client([endpoint], tls).write("/health-probe", "1")
            return
        except (etcd.EtcdException, OSError, Exception):
            time.sleep(0.2)
    raise RuntimeError("etcd did not become healthy")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    require("etcd")
    base = tmp_path_factory.mktemp("etcd")
    ca_key, ca_cert = make_ca("test-etcd-ca", 30, "ecdsa-p256")
    server = write_tls(base, "server", ca_key, ca_cert, "server", ips=("127.0.0.1",), dns=("localhost",))
    client = write_tls(base, "client", ca_key, ca_cert, "client")
    other_dir = base / "other"
    other_dir.mkdir()
    o_key, o_cert = make_ca("unrelated-ca", 30, "ecdsa-p256")
    other = write_tls(other_dir, "client", o_key, o_cert, "client")
    other = TLS(client.ca, other.cert, other.key)  # trusts the server, but is not trusted by it
    proc, endpoint = start_etcd(base, server)
    try:
        wait_healthy(endpoint, client, proc)
        yield Etcd(endpoint, client, other)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
