"""End to end on the local provider: `provision up`, then load written into the etcd keys
makes `provision headroom --once` add workers up to max; removing the load makes later runs
remove them down to min. Two reconcilers started together act once; the master (the etcd
member) is never chosen. Everything is real: namespace hosts, Ignition, etcd over TLS,
the host-load agents, the CLI as its own process.

The agent of the first worker is paused (SIGSTOP) while the test writes that worker's load
itself (etcd v3, on a lease, as the agent does), so the agent's own figures do not overwrite
it; the agents of the workers headroom adds run and publish on their own, then are paused
too for the drain checks: a host reporting containers is never destroyed (it does not drain
in drain_timeout: reported, taking work again, the next candidate tried), nor is a silent
one."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.real import require_local_host

from provision.headroom.observe import load_key
from provision.pki import client_tls
from provision.state import LocalStateStore
from provision.etcd.client import Etcd

pytestmark = [pytest.mark.slow, pytest.mark.root]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "provision", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def agent_pids(host: str) -> list[int]:
    """The local provider's launcher of `host`'s load agent unit and every process under it
    (worker configs are per pool, so the agent's environment does not name the host)."""
    parents: dict[int, int] = {}
    launcher = []
    needle = f"/hosts/{host}/jobs/provision-host-agent.service".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if needle in cmdline:
            launcher.append(int(entry.name))
    found = list(launcher)
    for pid in found:  # grows while walking: children, grandchildren, ...
        found.extend(child for child, parent in parents.items() if parent == pid and child not in found)
    return found


@pytest.fixture
def cluster(tmp_path):
    require_local_host()
    name = f"hr{uuid.uuid4().hex[:6]}"
    octet2, octet3 = random.randint(100, 199), random.randint(0, 255)
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"""\
name: {name}
provider: {{name: local, subnet: 10.{octet2}.{octet3}.0/24}}
etcd: {{count: 1}}
pools:
  - {{name: masters, role: master, count: 1}}
  - {{name: workers, role: worker, count: 1, min: 1, max: 3}}
headroom:
  pool: workers
  source: etcd
  policies: [containers]
  containers_per_host: 8
  reserve: 2
  scale_up_cooldown: 0s
  scale_down_cooldown: 0s
  drain_timeout: 4s
""")
    state_dir = tmp_path / "state"
    paused: list[int] = []
    try:
        up = cli("up", spec, "--yes", "--state-dir", state_dir)
        assert up.returncode == 0, up.stderr[-3000:]
        yield name, spec, state_dir, paused
    finally:
        for pid in paused:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        down = cli("down", spec, "--yes", "--state-dir", state_dir)
        assert down.returncode == 0, down.stderr[-2000:]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_headroom_adds_to_max_and_removes_to_min_on_the_local_provider(cluster):
    name, spec, state_dir, paused = cluster
    store = LocalStateStore(name, state_dir)
    state = store.read()
    endpoints = [f"https://{h['address']}:2379" for h in state["hosts"].values() if h.get("etcd")]
    assert endpoints == [f"https://{state['hosts'][f'{name}-masters-0']['address']}:2379"]
    etcd = Etcd(endpoints, client_tls(store))
    first = f"{name}-workers-0"

    def loads():
        out = {}
        for n in store.read()["hosts"]:
            raw = etcd.get(load_key(name, n))
            if raw is not None:
                out[n] = json.loads(raw)
        return out

    wait_for(lambda: first in loads() and f"{name}-masters-0" in loads(), 30, "the agents' first loads")
    pids = agent_pids(first)
    assert pids, "the first worker's agent is not running"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
        paused.append(pid)

    def write_load(host, containers):
        etcd.put(load_key(name, host), json.dumps({"containers": containers, "cpu": 0.5, "memory": 0.5,
                                                   "at": time.time()}), etcd.grant(120))

    write_load(first, 30)  # far more than one worker's 8 slots

    # Two reconcilers at once: exactly one acts.
    args = [sys.executable, "-m", "provision", "headroom", spec, "--once", "--state-dir", state_dir, "-o", "json"]
    runs = [subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    docs = [json.loads(out) for _, out, _ in results]
    assert sorted(d["status"] for d in docs) == ["acted", "busy"]
    assert any("another run holds the lock" in err for _, _, err in results)
    acted = next(d for d in docs if d["status"] == "acted")
    assert acted["decision"]["action"] == "add" and acted["decision"]["desired"] == 3
    assert sorted(acted["added"]) == [f"{name}-workers-1", f"{name}-workers-2"]
    state = store.read()
    assert sorted(n for n, h in state["hosts"].items() if h["pool"] == "workers") == \
        [f"{name}-workers-{i}" for i in range(3)]
    assert state["pools"]["workers"]["size"] == 3
    assert len(state["headroom"]["decisions"]) == 1  # the busy run recorded nothing

    # `plan` respects the size headroom chose.
    plan = cli("plan", spec, "--state-dir", state_dir, "-o", "json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["create"] == [] and json.loads(plan.stdout)["destroy"] == []

    # The new workers' own agents publish (0 containers); the load goes away from the first.
    wait_for(lambda: {f"{name}-workers-1", f"{name}-workers-2"} <= set(loads()), 60, "the new workers' agents")
    second, third = f"{name}-workers-1", f"{name}-workers-2"
    for host in (second, third):
        for pid in agent_pids(host):
            os.kill(pid, signal.SIGSTOP)
            paused.append(pid)
    write_load(first, 1)
    write_load(second, 1)
    write_load(third, 0)

    def headroom_once():
        run = cli("headroom", spec, "--once", "--state-dir", state_dir, "-o", "json")
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout), run.stderr

    # 2 containers want 1 host: the empty one goes first (its report of zero is the proof).
    doc, _ = headroom_once()
    assert doc["decision"]["action"] == "remove" and doc["removed"] == [third]
    # its agent's own etcd identity went with it: user and role, state's record, certificate
    assert third not in store.read()["etcd"]["agent_users"] and second in store.read()["etcd"]["agent_users"]
    assert store.read_blob(f"pki/etcd-agent-{third}.key") is None
    # Two hosts with a container each: neither reports zero within drain_timeout, so neither
    # is destroyed; both are reported, take work again, and the second was tried in place of
    # the first.
    doc, err = headroom_once()
    assert doc["decision"]["action"] == "remove" and doc["removed"] == []
    assert doc["not_drained"] == [first, second] and "not drained" in doc["message"]
    state = store.read()
    assert {first, second} <= set(state["hosts"]) and state["pools"]["workers"]["size"] == 2
    assert etcd.get(f"/provision/{name}/hosts/{first}/drain") is None  # taking work again
    assert sorted(state["headroom"]["memory"]["undrainable"]) == [first, second]
    # The first goes silent (its key is gone): unknown, neither capacity nor removable.
    etcd.delete(load_key(name, first))
    write_load(second, 0)
    doc, _ = headroom_once()
    assert doc["removed"] == [] and first in doc["decision"]["inputs"]["unknown"]
    assert first in store.read()["hosts"]
    removed = [n for d in store.read()["headroom"]["decisions"] for n in d["remove"]]
    assert removed and all("-workers-" in n for n in removed)
    remaining = [n for n, h in state["hosts"].items() if h["pool"] == "workers"]
    assert len(set(removed)) == 2 and set(removed) | set(remaining) == {f"{name}-workers-{i}" for i in range(3)}
    listed = cli("plan", spec, "--state-dir", state_dir, "-o", "json")
    assert json.loads(listed.stdout)["create"] == [] and json.loads(listed.stdout)["destroy"] == []
    explain = cli("headroom", spec, "--explain", "--state-dir", state_dir)
    assert explain.returncode == 0 and "add: 1 -> 3" in explain.stdout and "remove:" in explain.stdout
