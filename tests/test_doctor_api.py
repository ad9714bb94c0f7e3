"""`provision doctor`'s API check. kube-apiserver cannot run here; a stand-in answers GET
/healthz over TLS like it does (body `ok`), with a certificate of the cluster's CA, and requires
a client certificate of that CA, as the API server does for the admin kubeconfig."""
from __future__ import annotations

import json
import random
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provision.pki import SERVER, CertSpec, cert_pem, key_pem, make_leaf
from provision.state import LocalStateStore

from tests.test_changes import write_spec
from tests.test_doctor import DOCTOR_BASE


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"ok" if self.path == "/healthz" else b'{"kind":"Status","code":404}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_healthz(store: LocalStateStore, address: str, workdir) -> ThreadingHTTPServer:
    ca_cert = x509.load_pem_x509_certificate(store.read_blob("pki/ca.crt"))
    ca_key = serialization.load_pem_private_key(store.read_blob("pki/ca.key"), password=None)
    key, cert = make_leaf(CertSpec("apiserver", "kube-apiserver", SERVER, (), (), (address,)), ca_key, ca_cert, 1,
                          "ecdsa-p256")
    workdir.mkdir()
    (workdir / "s.crt").write_bytes(cert_pem(cert))
    (workdir / "s.key").write_bytes(key_pem(key))
    (workdir / "ca.crt").write_bytes(store.read_blob("pki/ca.crt"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / "s.crt", workdir / "s.key")
    context.load_verify_locations(workdir / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer((address, 6443), Healthz)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def master_state(cli, tmp_path):
    spec_path = write_spec(tmp_path, DOCTOR_BASE)
    state_dir = tmp_path / "state"
    assert cli("up", spec_path, "--yes", "--until", "pki", "--state-dir", state_dir).code == 0
    store = LocalStateStore("doctor", state_dir)
    address = f"127.78.{random.randrange(1, 255)}.{random.randrange(2, 250)}"
    state = store.read()
    state["hosts"] = {"doctor-masters-0": {"pool": "masters", "role": "master", "index": 0, "etcd": False,
                                           "address": address}}
    store.write(state)
    return spec_path, state_dir, store, address


def api_check(cli, spec_path, state_dir) -> dict:
    doc = json.loads(cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json").out)
    return next(c for c in doc["checks"] if c["name"] == "api")


def test_api_answering_healthz_is_no_finding_and_a_silent_one_is(cli, master_state, tmp_path):
    spec_path, state_dir, store, address = master_state
    server = serve_healthz(store, address, tmp_path / "api")
    try:
        check = api_check(cli, spec_path, state_dir)
        assert check["ok"] is True and check["detail"] == "1 API server(s) answer /healthz", check
    finally:
        server.shutdown()
        server.server_close()
    check = api_check(cli, spec_path, state_dir)
    assert not check["ok"]
    assert check["findings"][0]["problem"].startswith(
        f"the API server on doctor-masters-0 ({address}:6443) is not reachable")
