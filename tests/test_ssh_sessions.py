"""`provision.ssh_sessions` with the bootstrap roles' runner against a real sshd (a private one on
port 22 of a loopback address of its own): the role runs of one process log into a host once
and reuse that connection, unless the host at that address changed (another host key) or no
longer answers on it, and a host gone from the cluster has its connection closed."""
from __future__ import annotations

import contextlib
import os
import random
import signal
from types import SimpleNamespace

import pytest
from pyinfra.api.exceptions import PyinfraError

from provision import bootstrap, ssh_sessions

from tests.test_tunnel import descendants, running_sshd


@pytest.fixture(autouse=True)
def no_kept_connections():
    ssh_sessions.close_all()
    yield
    ssh_sessions.close_all()


def logins(tmp_path) -> int:
    """How many SSH logins the sshd of `tmp_path` accepted."""
    return (tmp_path / "sshd.log").read_text().count("Accepted publickey")


def cluster(server, address: str, pinned: bool = True) -> dict[str, dict]:
    return {"c-workers-0": {"role": "worker", "pool": "workers", "address": address,
                            **({"host_key": " ".join(server.host_key)} if pinned else {})}}


def roles(server, tmp_path, hosts, names=(), host_only=None) -> dict:
    spec = SimpleNamespace(name="c", ssh=SimpleNamespace(user=server.user))
    return bootstrap.run_roles(spec, tmp_path / "work", hosts, names, server.key, host_only=host_only)


def test_the_runs_of_one_process_log_into_a_host_once(tmp_path):
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    with running_sshd(tmp_path / "sshd", address=address, port=22) as server:
        hosts = cluster(server, address)
        assert roles(server, tmp_path, hosts)["c-workers-0"].error is None
        assert (logins(tmp_path / "sshd"), ssh_sessions.kept()) == (1, 1)
        # a role's facts, its upload and its commands run over the kept connection
        key = tmp_path / "delivered" / "agent.key"
        key.parent.mkdir()
        # (this sshd has no SFTP subsystem: uploads go by scp)
        data = {"c-workers-0": {"secret_files": [[str(key), 0o600, b"a key"]], "secret_dirs": [],
                                "ssh_file_transfer_protocol": "scp"}}
        for _ in range(2):  # the second run finds the file there: no operation
            outcome = roles(server, tmp_path, hosts, ("secrets",), host_only=data)["c-workers-0"]
            assert outcome.error is None
        assert (key.read_bytes(), key.stat().st_mode & 0o777, outcome.changed) == (b"a key", 0o600, 0)
        assert roles(server, tmp_path, hosts)["c-workers-0"].error is None
        assert logins(tmp_path / "sshd") == 1


def test_a_host_that_no_longer_answers_on_its_connection_is_logged_into_again(tmp_path):
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    with running_sshd(tmp_path / "sshd", address=address, port=22) as server:
        hosts = cluster(server, address)
        roles(server, tmp_path, hosts)
        for pid in descendants(server.proc.pid):  # the connection's sshd processes end
            with contextlib.suppress(ProcessLookupError):  # one ends with its parent
                os.kill(pid, signal.SIGKILL)
        assert roles(server, tmp_path, hosts)["c-workers-0"].error is None
        assert logins(tmp_path / "sshd") == 2


def test_another_host_key_pinned_for_the_address_is_checked_by_a_new_login(tmp_path):
    """State pins another key for the host's address (a machine replaced there): the connection
    kept to the old one, though it still answers, is not used; the new login checks the pinned
    key (here it fails: the sshd is the old one) and the old connection is closed."""
    from tests.test_tunnel import keygen
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    other_key = " ".join(keygen(tmp_path / "other_host_key").split()[:2])
    with running_sshd(tmp_path / "sshd", address=address, port=22) as server:
        roles(server, tmp_path, cluster(server, address))
        replaced = {name: {**host, "host_key": other_key} for name, host in cluster(server, address).items()}
        with pytest.raises(PyinfraError, match="No hosts remaining"):  # pyinfra: every host failed to connect
            roles(server, tmp_path, replaced)
        assert (logins(tmp_path / "sshd"), ssh_sessions.kept()) == (1, 0)
        assert roles(server, tmp_path, cluster(server, address))["c-workers-0"].error is None
        assert logins(tmp_path / "sshd") == 2


def test_a_host_gone_from_the_cluster_has_its_kept_connection_closed(tmp_path):
    first = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    with running_sshd(tmp_path / "sshd", address=first, port=22) as server:
        roles(server, tmp_path, cluster(server, first))
        assert ssh_sessions.kept() == 1
        # a run over a cluster that no longer has that host: nothing to log into, nothing kept
        other = {"c-workers-1": {"role": "worker", "address": "127.0.0.1", "host_key": " ".join(server.host_key)}}
        ssh_sessions.drop_absent({h["address"] for h in other.values()}, server.user, str(server.key))
        assert ssh_sessions.kept() == 0
