"""Role `hosts` run by the real pyinfra over SSH against local hosts (network namespaces, the
image's sshd): /etc/hosts gets the cluster block, the names resolve on the host, a second run
changes nothing, new addresses replace the block, and this machine's /etc/hosts is untouched."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provision import bootstrap

from .conftest import needs_root

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


@pytest.fixture(scope="module")
def cluster(ssh_hosts):
    """Both hosts of the module's local cluster (tests/local/conftest.py)."""
    return ssh_hosts


def run(cluster, entries):
    return bootstrap.run_roles(cluster["spec"], cluster["workdir"], cluster["hosts"], ("hosts",), cluster["key"],
                               data={"etc_hosts": entries})


def ssh(cluster, name: str, *command: str) -> str:
    host = cluster["hosts"][name]
    known = cluster["key"].parent / "known_hosts_test"
    known.write_text(f"{host['address']} {host['host_key']}\n")
    proc = subprocess.run(["ssh", "-i", str(cluster["key"]), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", f"core@{host['address']}",
                           *command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def hosts_file(cluster, name) -> list[str]:
    return (cluster["provider"].host_root(name) / "etc/hosts").read_text().splitlines()


def test_block_written_resolved_kept_and_replaced(cluster):
    machine_hosts = Path("/etc/hosts").read_bytes() if Path("/etc/hosts").exists() else b""
    spec, hosts = cluster["spec"], cluster["hosts"]
    entries = [(h["private_address"], n) for n, h in sorted(hosts.items())]
    for n in hosts:  # the module's other tests share the hosts: start from a file without the block
        path = cluster["provider"].host_root(n) / "etc/hosts"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            marks = [i for i, line in enumerate(lines) if line.startswith("# BEGIN provision cluster ")
                     or line.startswith("# END provision cluster ")]
            if len(marks) == 2:
                path.write_text("".join(lines[:marks[0]] + lines[marks[1] + 1:]))
    # what each host has: the local provider's own /etc/hosts, else this machine's below the overlay
    before = {n: hosts_file(cluster, n) if (cluster["provider"].host_root(n) / "etc/hosts").exists()
              else machine_hosts.decode().splitlines() for n in hosts}
    begin = f"# BEGIN provision cluster {spec.name} "
    end = f"# END provision cluster {spec.name}"

    first = run(cluster, entries)
    assert {n: (o.error, o.changed) for n, o in first.items()} == {n: (None, 1) for n in hosts}
    for name in hosts:
        lines = hosts_file(cluster, name)
        start = next(i for i, line in enumerate(lines) if line.startswith(begin))
        assert lines[start + 1:] == [*(f"{a}\t{n}" for a, n in entries), end]
        # what the host had is kept above the block
        assert lines[:start] == before[name] and before[name]
        # every name resolves on the host, through its own resolver (nsswitch `files`)
        # (a host's own name may also have the image's 127.0.1.1 line, which comes first)
        for address, other in entries:
            found = [line.split()[0] for line in ssh(cluster, name, "getent", "ahostsv4", other).splitlines()]
            assert address in found if other == name else set(found) == {address}, (name, other, found)

    again = run(cluster, entries)
    assert {n: (o.error, o.changed) for n, o in again.items()} == {n: (None, 0) for n in hosts}

    moved = [("10.99.0.7" if n.endswith("workers-0") else a, n) for a, n in entries]
    third = run(cluster, moved)
    assert {n: o.changed for n, o in third.items()} == {n: 1 for n in hosts}
    for name in hosts:
        text = hosts_file(cluster, name)
        assert sum(line.startswith(begin) for line in text) == 1
        start = next(i for i, line in enumerate(text) if line.startswith(begin))
        assert text[:start] == before[name]
        assert text[start + 1:] == [*(f"{a}\t{n}" for a, n in moved), end]
        assert f"10.99.0.7\t{spec.name}-workers-0" in text
    assert (Path("/etc/hosts").read_bytes() if Path("/etc/hosts").exists() else b"") == machine_hosts


def test_the_phase_maps_state_hosts_when_the_provider_cannot_plan_addresses(cluster, monkeypatch):
    """The `hosts` phase as `up` runs it (state, the store's SSH key, apply_roles), on local
    hosts standing in for a provider without planned addresses."""
    from provision import pki
    from provision.phases import RunContext
    from provision.phases.hosts import run as run_phase
    from provision.providers.local import LocalProvider
    from provision.state import LocalStateStore
    from provision.ui import UI

    spec, hosts = cluster["spec"], cluster["hosts"]
    monkeypatch.setattr(LocalProvider, "plans_addresses", False)
    store = LocalStateStore(spec.name, cluster["workdir"].parent)
    store.write_blob(pki.SSH_KEY, cluster["key"].read_bytes())
    state = {"hosts": {n: dict(h) for n, h in hosts.items()}}
    ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
    result = run_phase(ctx)
    assert result["entries"] == {n: h["private_address"] for n, h in hosts.items()}
    block = [*(f"{h['private_address']}\t{n}" for n, h in sorted(hosts.items())),
             f"# END provision cluster {spec.name}"]
    for name in hosts:
        assert hosts_file(cluster, name)[-len(block):] == block
    again = run_phase(ctx)
    assert again["changed"] == 0 and all(h["changed"] == 0 for h in again["hosts"].values())


def test_without_the_phase_data_the_file_is_left_alone(cluster):
    before = {n: hosts_file(cluster, n) for n in cluster["hosts"]}
    outcomes = bootstrap.run_roles(cluster["spec"], cluster["workdir"], cluster["hosts"], ("hosts",), cluster["key"])
    assert {n: (o.error, o.changed, o.notes) for n, o in outcomes.items()} == {
        n: (None, 0, ["/etc/hosts: no etc_hosts data given, left alone"]) for n in cluster["hosts"]}
    assert {n: hosts_file(cluster, n) for n in cluster["hosts"]} == before
