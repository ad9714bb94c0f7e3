"""`provision.tunnel` against a real sshd (a private one on a loopback port): forwarded
connections reach what the SSH host reaches, the host key is checked (pinned, remembered,
first seen), and `reach` falls back to direct connections only when no host takes SSH."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from provision.errors import ActionError
from provision import tunnel as tunnels
from provision.tunnel import Tunnel, close_all, reach

from tests.real import require


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path) -> str:
    subprocess.run([require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (path.parent / f"{path.name}.pub").read_text().strip()


@contextlib.contextmanager
def running_sshd(tmp_path, address: str = "127.0.0.1", port: int | None = None):
    """sshd on ADDRESS:PORT taking our key for the current user; yields its address and keys."""
    binary = require("sshd")
    require("root")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    tmp_path.mkdir(parents=True, exist_ok=True)
    host_pub = keygen(tmp_path / "host_key")
    client_pub = keygen(tmp_path / "client_key")
    (tmp_path / "authorized_keys").write_text(client_pub + "\n")
    port = port or free_port()
    (tmp_path / "sshd_config").write_text(
        f"ListenAddress {address}:{port}\nHostKey {tmp_path / 'host_key'}\nUsePAM no\nStrictModes no\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile none\nAllowTcpForwarding yes\n")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "sshd.log", "wb"), start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sshd.log").read_text()
        time.sleep(0.1)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield SimpleNamespace(port=port, user=user, key=tmp_path / "client_key", host_key=host_pub.split()[:2],
                              known_hosts=tmp_path / "known_hosts", proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        close_all()


@pytest.fixture
def sshd(tmp_path):
    with running_sshd(tmp_path) as server:
        yield server


@pytest.fixture
def echo_server():
    """A TCP server on 127.0.0.1 answering each line with its upper case and the peer it saw."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, peer = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def ask(port: int, text: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(text)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(1024):
            out += chunk
        return out


def tunnel(sshd, **kw) -> Tunnel:
    return Tunnel("127.0.0.1", sshd.user, sshd.key, port=sshd.port, **kw)


def test_forwarded_connections_reach_the_target_through_ssh(sshd, echo_server):
    t = tunnel(sshd, host_key=" ".join(sshd.host_key)).open()
    local = t.forward("127.0.0.1", echo_server)
    assert local != echo_server and t.forward("127.0.0.1", echo_server) == local  # made once
    answers = [ask(local, f"hello {i}\n".encode()) for i in range(5)]
    assert answers == [f"HELLO {i}\n".encode() for i in range(5)]
    big = bytes(random.getrandbits(8) for _ in range(300_000)).replace(b"\n", b"x") + b"\n"
    assert ask(local, big) == big.upper()
    t.close()
    assert not t.active
    with pytest.raises(OSError):
        ask(local, b"after close\n")


def test_a_host_key_other_than_the_pinned_one_is_refused(sshd, tmp_path):
    other = keygen(tmp_path / "other_key").split()
    with pytest.raises(ActionError, match=f"ssh {sshd.user}@127.0.0.1"):
        tunnel(sshd, host_key=" ".join(other[:2])).open()


def test_a_new_host_key_is_remembered_then_checked(sshd, tmp_path):
    tunnel(sshd, known_hosts=sshd.known_hosts).open().close()
    remembered = sshd.known_hosts.read_text().split()
    assert remembered == [f"[127.0.0.1]:{sshd.port}", *sshd.host_key]
    assert oct(sshd.known_hosts.stat().st_mode & 0o777) == "0o600"
    tunnel(sshd, known_hosts=sshd.known_hosts).open().close()  # the remembered key matches
    assert sshd.known_hosts.read_text().split() == remembered  # and is not written twice
    other = keygen(tmp_path / "other_key").split()
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(ActionError):
        tunnel(sshd, known_hosts=sshd.known_hosts).open()


def test_reach_goes_direct_only_when_no_host_takes_ssh(tmp_path):
    """State names a master on an address where nothing answers SSH: `reach` says so and returns
    the targets themselves."""
    from provision import pki
    from provision.state import LocalStateStore
    store = LocalStateStore("c", tmp_path / "state")
    keygen(tmp_path / "k")
    store.write_blob(pki.SSH_KEY, (tmp_path / "k").read_bytes())
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.9"
    state = {"hosts": {"c-masters-0": {"role": "master", "etcd": True, "address": address}}}
    spec = SimpleNamespace(ssh=SimpleNamespace(user="core"))
    said: list[str] = []
    closed_port = free_port()
    try:
        assert reach(spec, store, state, [(address, 2379), (address, closed_port)], log=said.append) == \
            [(address, 2379), (address, closed_port)]
    finally:
        close_all()
    assert len(said) == 1 and "c-masters-0" in said[0] and "connecting directly" in said[0]


def test_the_kubernetes_client_reaches_the_api_through_the_tunnel(sshd, tmp_path):
    """headroom's API client with a route: the real `kubernetes` client talks to the stand-in
    API server (kube-apiserver cannot run here) through a port forwarded over SSH."""
    from tests.fakes.kubernetes_api import FakeKubernetesAPI, node
    from provision.headroom.observe import kubernetes_api, read_kubernetes
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [node("n0"), node("n1")]
        t = tunnel(sshd, host_key=" ".join(sshd.host_key)).open()
        routed: list[tuple[str, int]] = []

        def route(host: str, port: int) -> tuple[str, int]:
            routed.append((host, port))
            return "127.0.0.1", t.forward(host, port)

        api = kubernetes_api(str(fake.kubeconfig), route=route)
        assert routed == [("127.0.0.1", fake.server.server_address[1])]
        assert api.api_client.configuration.host != fake.url
        nodes, _pods = read_kubernetes(api)
        assert sorted(n.metadata.name for n in nodes) == ["n0", "n1"]
        api.api_client.close()  # its kept-alive connection ends, so the stand-in stops at once
        t.close()
        with pytest.raises(ActionError):
            read_kubernetes(kubernetes_api(str(fake.kubeconfig), route=route))


def descendants(pid: int) -> list[int]:
    """Processes started under `pid` (sshd's per-connection processes), read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        of = todo.pop()
        children = [p for p, parent in parents.items() if parent == of]
        out += children
        todo += children
    return out


def test_a_cached_tunnel_is_dropped_when_its_gateway_is_replaced_gone_or_dead(tmp_path):
    """A real sshd on port 22 of a loopback address stands for a master: its tunnel is reused
    while state records the same host; a machine replaced at the same address (another pinned
    key) gets a new connection; a host gone from state, or one that stops answering without
    closing the connection, has its tunnel closed and forgotten."""
    from provision import pki
    from provision.state import LocalStateStore
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 254)}"
    spec = SimpleNamespace(ssh=SimpleNamespace(user=None))
    store = LocalStateStore("c", tmp_path / "state")

    def master(server) -> dict:
        spec.ssh.user = server.user
        store.write_blob(pki.SSH_KEY, server.key.read_bytes(), secret=True)
        return {"hosts": {"c-masters-0": {"role": "master", "etcd": True, "address": address,
                                          "host_key": " ".join(server.host_key)}}}

    with running_sshd(tmp_path / "first", address, 22) as first:
        state = master(first)
        t1 = tunnels.cluster_tunnel(spec, store, state)
        assert tunnels.cluster_tunnel(spec, store, state) is t1 and t1.active  # reused
        # the machine is replaced: same address, another host key pinned in state
    with running_sshd(tmp_path / "second", address, 22) as second:
        state = master(second)
        t2 = tunnels.cluster_tunnel(spec, store, state)
        assert t2 is not t1 and not t1.active and t2.active and t2.host_key == " ".join(second.host_key)
        # the host leaves state: its tunnel is closed, none is left cached
        with pytest.raises(ActionError, match="no master or etcd host"):
            tunnels.cluster_tunnel(spec, store, {"hosts": {}})
        assert not t2.active and not tunnels._OPEN
        # the host freezes (no FIN, no RST): the transport still looks active, the probe says dead
        t3 = tunnels.cluster_tunnel(spec, store, state)
        frozen = [second.proc.pid, *descendants(second.proc.pid)]
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):  # a child may end while they are listed
                os.kill(pid, signal.SIGSTOP)
        try:
            assert t3.active
            started = time.monotonic()
            with pytest.raises(ActionError, match="c-masters-0"):
                tunnels.cluster_tunnel(spec, store, state)
            assert time.monotonic() - started < tunnels.PROBE_TIMEOUT + 10
            assert not t3.active and not tunnels._OPEN
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):  # one ended meanwhile (killed or reaped)
                    os.kill(pid, signal.SIGCONT)
