"""SSH connections the bootstrap roles keep open across the role runs of one process.

`up` and `scale` run pyinfra on a new host once per phase (`wait`, `secrets`, `flannel`,
`fleet`, `workers`): without this, each run opens its own SSH connection (TCP, key exchange,
public-key login) to the same host. A connection pyinfra made is kept here after its run and
handed to the next run's pyinfra host instead of connecting again, when it is still the same
host: the host key the connection checked is the one the new run's known_hosts pins for that
address (a machine replaced at the same address has another key: a fresh connection checks
it), and the host answers on it (one session opened and closed: a host that went away without
closing the connection keeps it "active" until a write fails).

Connections are kept per (address, port, user, key file) and closed at exit, and those of
addresses the cluster no longer has are closed when a run sees the cluster
(`drop_absent`), so a long-running process (headroom's loop) holds at most one per host.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Collection, Iterable

if TYPE_CHECKING:
    import paramiko
    from pyinfra.api import Host

PROBE_TIMEOUT = 2.0  # seconds a kept connection has to answer before it is taken for dead

Handle = tuple[str, int, str, str]  # (address, port, user, key file)
_KEPT: dict[Handle, paramiko.SSHClient] = {}


def handle(host: Host) -> Handle:
    """Which connection a pyinfra host's data asks for."""
    data = host.data
    return (str(data.get("ssh_hostname") or host.name), int(data.get("ssh_port") or 22),
            str(data.get("ssh_user") or ""), str(data.get("ssh_key") or ""))


def known_keys(known_hosts: str | None) -> paramiko.HostKeys:
    """The keys a known_hosts file lists (none when there is no file)."""
    import paramiko
    keys = paramiko.HostKeys()
    if known_hosts:
        with contextlib.suppress(OSError, paramiko.SSHException):
            keys.load(known_hosts)
    return keys


def pinned(keys: paramiko.HostKeys, address: str, port: int, key: paramiko.PKey) -> bool:
    """Whether `keys` (a known_hosts file's) list `key` for `address`:`port`."""
    entry = keys.lookup(address if port == 22 else f"[{address}]:{port}")
    if entry is None:
        return False
    known = entry.get(key.get_name())
    return known is not None and known.get_base64() == key.get_base64()


def answers(client: paramiko.SSHClient, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the host still answers on this connection (a session opened and closed)."""
    import paramiko
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return False
    try:
        channel = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError):
        return False
    channel.close()
    return True


def adopt_all(hosts: Iterable[Host], parallel: int) -> int:
    """Give each pyinfra host of a run (initialised by its State, not connected) the kept
    connection to the same host, when there is one it may use: its host key is the one the
    run's known_hosts lists for its address, and it answers (`parallel` hosts probed at once).
    A kept connection it may not use is closed and forgotten. Returns how many were adopted."""
    candidates = [(host, _KEPT[handle(host)]) for host in hosts if handle(host) in _KEPT]
    if not candidates:
        return 0
    files: dict[str, paramiko.HostKeys] = {}  # each known_hosts file read once
    for host, _ in candidates:
        path = str(host.data.get("ssh_known_hosts_file") or "")
        if path not in files:
            files[path] = known_keys(path)

    def usable(pair: tuple[Host, paramiko.SSHClient]) -> bool:
        host, client = pair
        address, port = handle(host)[:2]
        transport = client.get_transport()
        return (transport is not None and transport.is_active()
                and pinned(files[str(host.data.get("ssh_known_hosts_file") or "")], address, port,
                           transport.get_remote_server_key())
                and answers(client))

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(candidates)))) as pool:
        verdicts = list(pool.map(usable, candidates))
    adopted = 0
    for (host, client), good in zip(candidates, verdicts):
        if not good:
            _close(handle(host))
            continue
        host.connector.client = client  # type: ignore[attr-defined]  # pyinfra's SSH connector
        host.connected = True  # connect_all activates it without connecting again
        adopted += 1
    return adopted


def keep(host: Host) -> None:
    """Keep the connection pyinfra made for `host` (connected) for the next run."""
    client = getattr(host.connector, "client", None)
    if client is None:
        return
    key = handle(host)
    if _KEPT.get(key) is not client:
        _close(key)
        _KEPT[key] = client


def end_run() -> None:
    """Close the file-transfer (SFTP) sessions pyinfra opened on kept connections in a run:
    pyinfra forgets them at disconnect without closing them, and each open one counts
    against the server's sessions per connection (sshd's MaxSessions)."""
    from pyinfra.connectors.ssh import SSHConnector
    cache = getattr(SSHConnector.get_file_transfer_connection, "cache", None) or {}
    for session in list(cache.values()):
        close = getattr(session, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def drop_absent(addresses: Collection[str], user: str, key_file: str) -> None:
    """Close the kept connections of `user` and `key_file` to addresses not in `addresses`
    (hosts gone from the cluster)."""
    for key in [k for k in _KEPT if k[2:] == (user, key_file) and k[0] not in addresses]:
        _close(key)


def _close(key: Handle) -> None:
    client = _KEPT.pop(key, None)
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def close_all() -> None:
    """Close every kept connection (at exit; tests call it between clusters)."""
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # a closing transport's last words
    for key in list(_KEPT):
        _close(key)


def kept() -> int:
    """How many connections are kept now."""
    return len(_KEPT)


atexit.register(close_all)
