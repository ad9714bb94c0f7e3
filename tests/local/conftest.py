"""Fixtures for local-provider tests: root only, unique cluster names and subnets, cleanup."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.real import needs_local

REPO = Path(__file__).resolve().parents[2]

# Root, the Ignition engine, sshd, etcd 3.5...: skipped with the reason outside CI, a failure
# naming what is missing under CI=true (tests/real.py).
needs_root = needs_local


def free_subnet() -> str:
    """A /24 in 10.0.0.0/8 that no route of this machine overlaps."""
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True).stdout or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    while True:
        net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)


def unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def example_spec(tmp_path: Path, name: str, subnet: str, **changes) -> Path:
    """examples/local.yaml with its own name and subnet."""
    doc = yaml.safe_load((REPO / "examples/local.yaml").read_text())
    doc["name"] = name
    doc["provider"]["subnet"] = subnet
    doc.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def provision(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`provision ARGS` as its own process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "provision", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@contextmanager
def live_cluster(tmp: Path, prefix: str, pools: list[dict]) -> Iterator[dict]:
    """A local cluster of `pools` brought up with `up --yes` for the block, then taken down with
    its namespaces: {name, spec, doc, state_dir, workdir, tmp} (a module fixture yields it)."""
    name = unique_name(prefix)
    spec = example_spec(tmp, name, free_subnet())
    doc = yaml.safe_load(spec.read_text())
    doc["pools"] = pools
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    state_dir = tmp / "state"
    c = {"name": name, "spec": spec, "doc": doc, "state_dir": state_dir, "workdir": state_dir / name, "tmp": tmp}
    try:
        made = provision("up", spec, "--yes", "--state-dir", state_dir, timeout=600)
        assert made.returncode == 0, made.stderr
        yield c
    finally:
        provision("down", c["spec"], "--yes", "--state-dir", state_dir)
        from provision.providers import get_provider
        from provision.spec import load_spec
        get_provider(load_spec(c["spec"]), c["workdir"]).teardown()


def processes_mentioning(text: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def cluster_namespaces(cluster: str) -> list[str]:
    listing = json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]")
    return sorted(n["name"] for n in listing if n["name"].startswith(f"provision.{cluster}."))


def bare_cluster(tmp: Path, prefix: str, workers: int):
    """A local cluster's spec (one master carrying etcd, `workers` workers; unique name, free
    subnet) in `tmp`, a fresh SSH key pair there, its state directory and provider: (spec,
    provider, public key, state directory). Nothing is created yet."""
    from provision.providers import get_provider
    from provision.spec import load_spec
    name = unique_name(prefix)
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(f"name: {name}\nprovider:\n  name: local\n  subnet: {free_subnet()}\n"
                         "etcd:\n  count: 1\npools:\n  - name: masters\n    role: master\n    count: 1\n"
                         f"  - name: workers\n    role: worker\n    count: {workers}\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
    spec = load_spec(spec_file)
    workdir = tmp / "state" / spec.name
    workdir.mkdir(parents=True, mode=0o700)
    return spec, get_provider(spec, workdir), (tmp / "key.pub").read_text().strip(), workdir


@pytest.fixture(scope="module")
def ssh_hosts(tmp_path_factory):
    """A local cluster's two hosts (one master, one worker) booted with nothing but a `core` user
    holding a fresh SSH key, each answering SSH; for role tests that run pyinfra against real
    sshd. One per test module (the module's tests share it); the hosts go when it ends. Yields
    `spec`, `provider`, `hosts` (what state records: role, pool, address, private address, host
    key), `workdir` (the state directory) and `key` (the private key's path)."""
    from provision import bootstrap
    from provision.plan import plan

    tmp = tmp_path_factory.mktemp("sshhosts")
    spec, provider, pubkey, workdir = bare_cluster(tmp, "sh", workers=1)
    hosts = plan(spec, {}).create
    config = json.dumps({"ignition": {"version": "3.3.0"},
                         "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [pubkey]}]}}).encode()
    try:
        provider.create_hosts(hosts, {h.name: config for h in hosts})
        records = {r.name: r for r in provider.wait_running([h.name for h in hosts], timeout=60)}
        state_hosts = {h.name: {"role": h.role, "pool": h.pool, "address": h.address,
                                "private_address": records[h.name].private_address,
                                "host_key": provider.host_public_key(h.name)} for h in hosts}
        assert bootstrap.wait_for_ssh({n: h["address"] for n, h in state_hosts.items()}, 60) == []
        yield {"spec": spec, "provider": provider, "hosts": state_hosts, "workdir": workdir, "key": tmp / "key"}
    finally:
        provider.teardown()
