"""Local ports forwarded over SSH to addresses a cluster host reaches (`ssh -L`, with paramiko).

provision reaches etcd's 2379 and the API server's 6443 through one SSH connection to a
master, so a machine that can reach only the hosts' port 22 runs the whole lifecycle. Each
forward listens on 127.0.0.1 of this machine only; every connection to it becomes one SSH
`direct-tcpip` channel that the host opens to the target. TLS runs end to end inside it: the
host relays bytes and sees no key (etcd's and the API server's certificates name 127.0.0.1).

The host's key is checked: the key state pins for it, else what `known_hosts` remembers for
its address; an address seen for the first time is remembered there (`accept-new`, as the
bootstrap roles' pyinfra does).
"""
from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import ActionError

if TYPE_CHECKING:
    import paramiko

    from .spec import Spec
    from .state import StateStore

CHUNK = 65536
PROBE_TIMEOUT = 2.0  # seconds a reused connection has to answer before it is taken for dead


class Tunnel:
    """One SSH connection to `address` as `user` and the ports forwarded through it."""

    def __init__(self, address: str, user: str, key_path: Path, host_key: str | None = None,
                 known_hosts: Path | None = None, timeout: float = 5.0, port: int = 22):
        self.address, self.user, self.key_path, self.port = address, user, Path(key_path), port
        self.host_key, self.known_hosts, self.timeout = host_key, known_hosts, timeout
        self._client: Any = None
        self._forwards: dict[tuple[str, int], int] = {}
        self._listeners: list[socket.socket] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()

    # -- the connection ------------------------------------------------------------------------
    def open(self) -> "Tunnel":
        import paramiko
        # a dropped connection surfaces as the error of the etcd or API call that needed it,
        # not as paramiko's own log lines on stderr
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        client = paramiko.SSHClient()
        remembered = self._load_host_keys(client)
        client.set_missing_host_key_policy(paramiko.RejectPolicy() if self.host_key else paramiko.AutoAddPolicy())
        try:
            client.connect(self.address, port=self.port, username=self.user, key_filename=str(self.key_path),
                           timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                           look_for_keys=False, allow_agent=False)
        except (paramiko.SSHException, OSError) as err:
            client.close()
            raise ActionError(f"ssh {self.user}@{self.address}: {err or type(err).__name__}") from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        if not self.host_key and not remembered and self.known_hosts is not None:
            self._remember(client)
        self._client = client
        return self

    def _load_host_keys(self, client: paramiko.SSHClient) -> bool:
        """Load the keys this host may present; whether one was known for its address."""
        import paramiko
        keys = client.get_host_keys()
        if self.host_key:
            kind, blob = self.host_key.split()[:2]
            keys.add(self._key_name(), kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
            return True
        if self.known_hosts is not None and self.known_hosts.is_file():
            with contextlib.suppress(OSError, paramiko.SSHException):
                keys.load(str(self.known_hosts))
        return keys.lookup(self._key_name()) is not None

    def _key_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def _remember(self, client: paramiko.SSHClient) -> None:
        """Append the key seen for a new address to known_hosts (accept-new)."""
        transport = client.get_transport()
        assert transport is not None and self.known_hosts is not None  # called once connected
        key = transport.get_remote_server_key()
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{self._key_name()} {key.get_name()} {key.get_base64()}\n")
        self.known_hosts.chmod(0o600)

    @property
    def active(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return bool(transport is not None and transport.is_active() and not self._closed.is_set())

    def answers(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """Whether the host still answers on this connection: a session channel opened and
        closed again (one round trip). A host that went away without closing the connection
        (destroyed, frozen, unplugged) keeps the transport "active" until a write fails."""
        if not self.active:
            return False
        import paramiko
        try:
            channel = self._client.get_transport().open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError):
            return False
        channel.close()
        return True

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            with contextlib.suppress(OSError):
                listener.close()
        if self._client is not None:
            self._client.close()

    # -- forwards ------------------------------------------------------------------------------
    def forward(self, host: str, port: int) -> int:
        """A port of 127.0.0.1 here that reaches `host`:`port` from the SSH host (made once)."""
        with self._lock:
            if not self.active:
                raise ActionError(f"ssh {self.user}@{self.address}: the connection is closed")
            if (host, port) in self._forwards:
                return self._forwards[(host, port)]
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            self._listeners.append(listener)
            local = listener.getsockname()[1]
            self._forwards[(host, port)] = local
            threading.Thread(target=self._accept, args=(listener, host, port), daemon=True,
                             name=f"ssh-forward-{local}").start()
            return local

    def _accept(self, listener: socket.socket, host: str, port: int) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn, peer, host, port), daemon=True).start()

    def _relay(self, conn: socket.socket, peer: tuple[str, int], host: str, port: int) -> None:
        try:
            transport = self._client.get_transport()
            channel = transport.open_channel("direct-tcpip", (host, port), peer, timeout=self.timeout)
        except Exception:  # noqa: BLE001 - the host refused or the connection is gone: close the client's socket
            conn.close()
            return
        # one blocking copier per direction: no select() on the channel (paramiko would make a
        # pipe per channel for it)
        back = threading.Thread(target=_copy, args=(channel.recv, conn.sendall, conn), daemon=True)
        back.start()
        _copy(conn.recv, channel.sendall, None)
        with contextlib.suppress(Exception):
            channel.shutdown_write()  # EOF towards the host; its answer still flows back
        back.join(self.timeout * 6)
        channel.close()
        conn.close()


def _copy(read: Callable[[int], bytes], write: Callable[[bytes], object], done: socket.socket | None) -> None:
    """Copy until end of file or an error; then tell the local end (if given) no more comes."""
    try:
        while True:
            data = read(CHUNK)
            if not data:
                break
            write(data)
    except (OSError, EOFError):
        pass
    if done is not None:
        with contextlib.suppress(OSError):
            done.shutdown(socket.SHUT_WR)


# ---- a cluster's services as this machine reaches them ---------------------------------------

_OPEN: dict[tuple[str, str, str], Tunnel] = {}  # (address, user, key path): one connection per process
_FAILED: dict[tuple[str, ...], tuple[float, str]] = {}  # gateways that all refused SSH: when, and why
RETRY_AFTER = 60.0  # seconds before a long-running process (headroom's loop) tries them again


def gateways(state: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Hosts to tunnel through, in order: masters, then etcd members (a cluster whose etcd runs
    on hosts of its own); each with the address provision reaches it by SSH."""
    hosts = sorted((state.get("hosts") or {}).items())
    masters = [(n, h) for n, h in hosts if h.get("role") == "master"]
    members = [(n, h) for n, h in hosts if h.get("etcd") and h.get("role") != "master"]
    return [(n, h) for n, h in masters + members if h.get("ssh_address") or h.get("address")]


def cluster_tunnel(spec: "Spec", store: "StateStore", state: Mapping[str, Any]) -> Tunnel:
    """An open SSH connection to the first gateway host that takes one (reused in this process
    while its host is still the one state records and answers); ActionError naming each host
    tried and why it failed."""
    from . import pki
    from .bootstrap import inventory_dir
    candidates = gateways(state)
    key_path = pki.ssh_private_key_path(store)
    drop_stale(candidates, spec.ssh.user, str(key_path))
    if not candidates:
        raise ActionError("ssh: state records no master or etcd host to reach the cluster through")
    # a replaced gateway (same address, new pinned key) is tried again at once
    tried = tuple(f"{h.get('ssh_address') or h['address']} {h.get('host_key') or ''}" for _, h in candidates)
    if tried in _FAILED and time.monotonic() - _FAILED[tried][0] < RETRY_AFTER:
        raise ActionError(_FAILED[tried][1])
    problems = []
    for name, host in candidates:
        address = host.get("ssh_address") or host["address"]
        handle = (address, spec.ssh.user, str(key_path))
        tunnel = _OPEN.get(handle)
        if tunnel is not None:
            return tunnel
        tunnel = Tunnel(address, spec.ssh.user, key_path, host_key=host.get("host_key"),
                        known_hosts=inventory_dir(store.workdir) / "known_hosts")
        try:
            _OPEN[handle] = tunnel.open()
            return tunnel
        except ActionError as err:
            problems.append(f"{name}: {err}")
    why = f"ssh: no host of the cluster takes an SSH connection ({'; '.join(problems)})"
    _FAILED[tried] = (time.monotonic(), why)
    raise ActionError(why)


def drop_stale(candidates: Sequence[tuple[str, Mapping[str, Any]]], user: str, key_path: str) -> list[Tunnel]:
    """Close and forget the cached tunnels of `user` and `key_path` whose gateway is no longer
    one of `candidates` (gone from state), whose host now has another pinned key than the one
    the connection checked (the machine was replaced at the same address), or whose connection
    is dead (the host went without closing it). Returns the tunnels dropped."""
    wanted = {h.get("ssh_address") or h["address"]: h for _, h in candidates}
    dropped = []
    for handle, tunnel in list(_OPEN.items()):
        if handle[1:] != (user, key_path):
            continue
        host = wanted.get(handle[0])
        pinned = host.get("host_key") if host is not None else None
        if host is None or (pinned and pinned != tunnel.host_key) or not tunnel.answers():
            tunnel.close()
            del _OPEN[handle]
            dropped.append(tunnel)
    return dropped


def reach(spec: "Spec", store: "StateStore", state: Mapping[str, Any], targets: Sequence[tuple[str, int]],
          log: Callable[[str], None] = lambda m: None) -> list[tuple[str, int]]:
    """Where this machine connects to reach each (address, port) of the cluster: a local port
    forwarded over SSH through a master. When no host of the cluster takes an SSH connection
    (members made by hand, without sshd), the targets themselves, and `log` says why."""
    try:
        tunnel = cluster_tunnel(spec, store, state)
    except ActionError as err:
        log(f"{err}; connecting directly")
        return list(targets)
    return [("127.0.0.1", tunnel.forward(address, port)) for address, port in targets]


def close_all() -> None:
    """Close every tunnel this process opened (at exit; tests call it between clusters)."""
    for tunnel in list(_OPEN.values()):
        tunnel.close()
    _OPEN.clear()
    _FAILED.clear()


atexit.register(close_all)
