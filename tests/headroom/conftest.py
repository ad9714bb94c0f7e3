"""Fixtures: real etcd servers (TLS with client-certificate auth) for the headroom tests, with
certificates made by provision.pki's own functions: `etcd_server` with the v2 API enabled
(the etcd state backend speaks v2), `etcd_v3_server` with v3 only, as a cluster without fleet
runs it (headroom's load keys, drain keys and lock are v3)."""
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
        """python-etcd (the v2 API)."""
        from provision.etcd.v2 import client as etcd_client
        return etcd_client([self.endpoint], self.client_tls)

    def v3(self):
        """provision's client of the v3 JSON gateway."""
        from provision.etcd.client import Etcd
        return Etcd([self.endpoint], self.client_tls)


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
    from provision.etcd.client import Etcd
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("etcd exited early")
        try:
            Etcd([endpoint], tls).put("/health-probe", "1")
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise RuntimeError("etcd did not become healthy")


def serve_etcd(tmp_path_factory, v2: bool):
    require("etcd")
    base = tmp_path_factory.mktemp("etcd")
    ca_key, ca_cert = make_ca("test-etcd-ca", 30, "ecdsa-p256")
    # server and client usage, as provision issues it: the v3 JSON gateway dials the member
    # with this certificate
    server = write_tls(base, "server", ca_key, ca_cert, "peer", ips=("127.0.0.1",), dns=("localhost",))
    client = write_tls(base, "client", ca_key, ca_cert, "client")
    other_dir = base / "other"
    other_dir.mkdir()
    o_key, o_cert = make_ca("unrelated-ca", 30, "ecdsa-p256")
    other = write_tls(other_dir, "client", o_key, o_cert, "client")
    other = TLS(client.ca, other.cert, other.key)  # trusts the server, but is not trusted by it
    proc, endpoint = start_etcd(base, server, v2=v2)
    try:
        wait_healthy(endpoint, client, proc)
        yield Etcd(endpoint, client, other)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    yield from serve_etcd(tmp_path_factory, v2=True)


@pytest.fixture(scope="session")
def etcd_v3_server(tmp_path_factory):
    yield from serve_etcd(tmp_path_factory, v2=False)
