"""Changes reach a running local cluster (3 masters carrying a real 3-member etcd over TLS, 2
workers): `up` updates masters in place and replaces them one at a time while a watcher reads
etcd linearizably twice a second; a worker pool change replaces workers one at a time and keeps
headroom's recorded size; a run SIGKILLed mid-rollout, then re-run, finishes the change with no
host lost and none left over.

kube-apiserver and kubelet cannot run here (no binary exists): that the API server's certificate
changed is proven on the file it reads, inside each master's root."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provision import faults
from provision.etcd.client import Etcd
from provision.pki import TLSFiles
from provision.providers.local.net import netns_name

from .conftest import REPO, cluster_namespaces, live_cluster, needs_root, provision
from .test_cluster import no_duplicates

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]
POLL = 0.5  # seconds between the watcher's reads


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with live_cluster(tmp_path_factory.mktemp("rollout"), "ro",
                      [{"name": "masters", "role": "master", "count": 3},
                       {"name": "workers", "role": "worker", "count": 2, "min": 1, "max": 3}]) as c:
        yield c


def change(c: dict, label: str, edit) -> Path:
    """The cluster's current spec with `edit` applied, as a new file (kept as current)."""
    doc = copy.deepcopy(c["doc"])
    edit(doc)
    path = c["tmp"] / f"{label}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    c["doc"], c["spec"] = doc, path
    return path


def state(c: dict) -> dict:
    return json.loads((c["workdir"] / "state.json").read_text())


def access(c: dict, client: str = "provisioner", timeout: float = 5.0) -> Etcd:
    pki = c["workdir"] / "pki"
    endpoints = tuple(f"https://{h['address']}:2379" for _, h in sorted(state(c)["hosts"].items()) if h["etcd"])
    return Etcd(endpoints, TLSFiles(pki / "etcd-ca.crt", pki / f"etcd-client-{client}.crt",
                                    pki / f"etcd-client-{client}.key"), timeout=timeout)


def members(c: dict) -> dict[str, str]:
    proc = access(c, "root").etcdctl("member", "list", "-w", "json")
    assert proc.returncode == 0, proc.stderr
    return {m.get("name", ""): f"{m['ID']:x}" for m in json.loads(proc.stdout)["members"]}


class QuorumWatcher:
    """Reads a key linearizably (which needs a quorum) from any member, every POLL seconds."""

    def __init__(self, c: dict):
        self.access, self.key = access(c, timeout=1.0), f"/provision/{c['name']}/probe"
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self.access.etcdctl("get", self.key, "--consistency=l").returncode == 0
            self.samples.append((started, ok))
            self._stop.wait(POLL)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def longest_outage(self) -> float:
        """Seconds from the first failed read to the next successful one, longest stretch."""
        longest, since = 0.0, None
        for at, ok in self.samples:
            if not ok and since is None:
                since = at
            elif ok and since is not None:
                longest, since = max(longest, at - since), None
        assert since is None, "etcd had no quorum when the watcher stopped"
        return longest


def apiserver_names(c: dict, host: str) -> list[str]:
    pem = (c["workdir"] / "local/hosts" / host / "root/etc/kubernetes/pki/apiserver.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def init_pid(c: dict, host: str) -> int:
    return json.loads((c["workdir"] / "local/hosts" / host / "root/run/provision/init.json").read_text())["pid"]


def plan_actions(c: dict) -> dict[str, str]:
    proc = provision("plan", c["spec"], "--state-dir", c["state_dir"], "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return {name: ch["action"] for name, ch in json.loads(proc.stdout)["changes"].items()}


def test_masters_change_in_place_then_by_replacement_without_losing_etcd_quorum(cluster):
    c = cluster
    masters = [f"{c['name']}-masters-{i}" for i in range(3)]
    pids = {m: init_pid(c, m) for m in masters}
    before = members(c)
    name = f"api-{c['name']}.example.org"
    spec = change(c, "api-name", lambda d: d.setdefault("kubernetes", {}).update(api_server_names=[name]))
    assert set(plan_actions(c).values()) == {"update"}
    with QuorumWatcher(c) as in_place:
        proc = provision("up", spec, "--yes", "--state-dir", c["state_dir"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert in_place.longest_outage() < 2.0 and len(in_place.samples) > 10
    for m in masters:  # the same machines (not re-created), each with the new certificate
        assert name in apiserver_names(c, m)
        assert init_pid(c, m) == pids[m]
        assert f"{m}: updated in place" in proc.stderr
    assert members(c) == before  # etcd untouched: same members, same ids
    assert set(plan_actions(c).values()) == {"keep"}

    spec = change(c, "masters-size", lambda d: d["pools"][0].update(size="large"))
    assert {n: a for n, a in plan_actions(c).items() if a != "keep"} == {m: "replace" for m in masters}
    with QuorumWatcher(c) as replacing:
        proc = provision("up", spec, "--yes", "--state-dir", c["state_dir"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert replacing.longest_outage() < 2.0 and len(replacing.samples) > 10
    after = members(c)
    assert sorted(after) == masters  # every member started, under its own name
    assert all(after[m] != before[m] for m in masters)  # each removed and added back
    # one at a time: each master is healthy again before the next is drained
    lines = proc.stderr.splitlines()
    replaced = {m: next(i for i, line in enumerate(lines) if line.startswith(f"[rollout] replaced {m}:"))
                for m in masters}
    order = [i for m in masters for i in (lines.index(f"[rollout] replacing {m}: draining it"), replaced[m])]
    assert order == sorted(order)
    recorded = state(c)
    rendered_index = json.loads((c["workdir"] / "rendered/index.json").read_text())["hosts"]
    for m in masters:
        config = (c["workdir"] / "rendered" / rendered_index[m]["config"]).read_bytes()
        assert (c["workdir"] / "local/hosts" / m / "config.ign").read_bytes() == config  # booted with it
        assert recorded["hosts"][m]["boot"]["fields"]["pools[masters].size"] == "large"
        assert name in apiserver_names(c, m)
    assert "rollout" not in recorded and sorted(recorded["etcd"]["joined"]) == masters
    assert set(plan_actions(c).values()) == {"keep"}
    no_duplicates(c["name"], c["workdir"])


def workers_of(c: dict) -> list[str]:
    return sorted(n for n, h in state(c)["hosts"].items() if h["pool"] == "workers")


def surge_lines(lines: list[str], old: str, new: str) -> list[int]:
    """Where the run said it drained `old`, made `new`, destroyed `old` and was done with it."""
    return [next(i for i, line in enumerate(lines) if line.startswith(prefix)) for prefix in (
        f"[rollout] replacing {old} by {new} (create before destroy): draining {old}",
        f"[rollout] creating {new}",
        f"[rollout] destroying {old}: {new} healthy in their place",
        f"[rollout] replaced {old} by {new}: running, answering SSH")]


class JoinWatcher:
    """Every POLL seconds, notes when each host's agent load key is first seen in etcd (read as
    root) and when each host's network namespace is last seen (the local machine is gone after)."""

    def __init__(self, c: dict):
        self.access, self.name = access(c, "root", timeout=2.0), c["name"]
        self.prefix = f"/provision/{c['name']}/hosts/"
        self.key_seen: dict[str, float] = {}
        self.machine_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            proc = self.access.etcdctl("get", self.prefix, "--prefix", "--keys-only")
            now = time.monotonic()
            for key in proc.stdout.split() if proc.returncode == 0 else ():
                host = key[len(self.prefix):].split("/")[0]
                if key.endswith("/load"):
                    self.key_seen.setdefault(host, now)
            for ns in cluster_namespaces(self.name):
                self.machine_seen[ns[len(f"provision.{self.name}."):]] = time.monotonic()
            self._stop.wait(POLL)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_worker_pool_change_replaces_workers_one_at_a_time_and_keeps_headrooms_size(cluster):
    """Workers are surged: each old worker is drained, a new one (a new name in the pool) is
    made and joined (its agent's etcd identity, flannel and workers roles converged, its agent
    publishing its load key in etcd), and only then the old one destroyed; one worker at a time
    (the default --max-unavailable 1); the pool size recorded in state (3, where the spec says 2)
    is kept. The later phases of the same `up` find the new workers converged already."""
    c = cluster
    scaled = provision("scale", c["spec"], "workers", "3", "--yes", "--state-dir", c["state_dir"], timeout=600)
    assert scaled.returncode == 0, scaled.stderr
    sizes = state(c)["pools"]
    assert sizes["workers"]["size"] == 3 and c["doc"]["pools"][1]["count"] == 2
    workers = workers_of(c)
    assert len(workers) == 3
    spec = change(c, "workers-size", lambda d: d["pools"][1].update(size="w-large"))
    planned = provision("plan", spec, "--state-dir", c["state_dir"], "-o", "json")
    changes = json.loads(planned.stdout)["changes"]
    assert {n for n, ch in changes.items() if ch["action"] == "replace"} == set(workers)
    assert all(changes[w]["replacement"] == "create before destroy" for w in workers)
    assert all(netns_name(c["name"], w) in cluster_namespaces(c["name"]) for w in workers)
    with JoinWatcher(c) as watcher:
        proc = provision("up", spec, "--yes", "--state-dir", c["state_dir"], "-o", "json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    surged = doc["results"]["rollout"]["surged"]
    assert sorted(surged) == workers and all(surged[w] != w for w in workers)
    lines = proc.stderr.splitlines()
    order = [i for w in workers for i in surge_lines(lines, w, surged[w])]
    # per worker: drained, new one made, old one destroyed, done; the next only after that
    assert order == sorted(order), [lines[i] for i in order]
    # each new worker's agent published its load key (so it had its etcd identity, its secrets
    # and its workers role) while the worker it replaces still existed as a machine
    for old, new in surged.items():
        assert new in watcher.key_seen, (new, sorted(watcher.key_seen))
        assert old in watcher.machine_seen and watcher.key_seen[new] < watcher.machine_seen[old], \
            (old, new, watcher.key_seen, watcher.machine_seen)
    # the later phases of this run found them converged: nothing left for them to do
    new_workers = set(surged.values())
    for phase in ("flannel", "workers"):
        assert not new_workers & set((doc["results"][phase].get("hosts") or {})), doc["results"][phase]
    after = state(c)
    assert sorted(after["etcd"]["agent_users"]) == sorted(after["hosts"])
    assert after["pools"] == sizes and "rollout" not in after
    assert workers_of(c) == sorted(surged.values())
    assert all(after["hosts"][w]["boot"]["fields"]["pools[workers].size"] == "w-large" for w in workers_of(c))
    assert cluster_namespaces(c["name"]) == sorted(netns_name(c["name"], h) for h in after["hosts"])
    assert set(plan_actions(c).values()) == {"keep"}
    no_duplicates(c["name"], c["workdir"])


def up_killed(c: dict, point: str) -> subprocess.CompletedProcess:
    marker = c["tmp"] / "fired"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, **{faults.ENV: f"rollout:{point}", faults.MARKER_ENV: str(marker)})
    proc = subprocess.run([sys.executable, "-m", "provision", "up", str(c["spec"]), "--yes", "--state-dir",
                           str(c["state_dir"])], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == -9 and marker.read_text().strip() == f"rollout:{point}", proc.stderr
    return proc


def test_a_rollout_killed_mid_way_then_rerun_finishes_with_no_host_lost_or_left_over(cluster):
    c = cluster
    hosts = sorted(state(c)["hosts"])
    change(c, "masters-size-again", lambda d: d["pools"][0].update(size="x-large"))
    up_killed(c, faults.FIRST_WRITE)  # right after the first master was drained
    up_killed(c, faults.MID_HOSTS)  # the first master gone from etcd and the cloud, added back, not made
    progress = state(c)["rollout"]["hosts"]
    assert progress == {f"{c['name']}-masters-0": "member-added"}
    proc = provision("up", c["spec"], "--yes", "--state-dir", c["state_dir"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    after = state(c)
    assert sorted(after["hosts"]) == hosts and "rollout" not in after
    assert cluster_namespaces(c["name"]) == sorted(netns_name(c["name"], h) for h in hosts)
    assert sorted(members(c)) == [h for h in hosts if "masters" in h]
    assert all(after["hosts"][h]["boot"]["fields"]["pools[masters].size"] == "x-large" for h in hosts if "masters" in h)
    assert set(plan_actions(c).values()) == {"keep"}
    no_duplicates(c["name"], c["workdir"])


def test_a_worker_surge_killed_at_each_stage_then_rerun_ends_with_exactly_the_pool_size(cluster):
    """Killed right after the first worker was drained, then while its replacement was being
    made (the machine exists, state does not know it yet), then right after the replacement was
    recorded (old and new both in state): the last run finishes with the recorded pool size,
    every worker carrying the change, nothing left over."""
    c = cluster
    size = state(c)["pools"]["workers"]["size"]
    workers = workers_of(c)
    assert len(workers) == size
    change(c, "workers-size-again", lambda d: d["pools"][1].update(size="w-x-large"))
    up_killed(c, faults.FIRST_WRITE)  # the first worker drained, its replacement named
    progress = state(c)["rollout"]
    (old, new), = progress["surge"].items()
    assert old == workers[0] and progress["hosts"] == {old: "drained"} and new not in workers
    up_killed(c, faults.MID_HOSTS)  # inside the provider's create: the machine made, not recorded
    assert state(c)["rollout"]["surge"] == {old: new} and new not in state(c)["hosts"]
    up_killed(c, faults.FIRST_WRITE)  # the replacement recorded: old and new both in state
    assert state(c)["rollout"]["hosts"] == {old: "surged"} and {old, new} <= set(state(c)["hosts"])
    proc = provision("up", c["spec"], "--yes", "--state-dir", c["state_dir"], timeout=900)
    assert proc.returncode == 0, proc.stderr
    after = state(c)
    assert "rollout" not in after and after["pools"]["workers"]["size"] == size
    final = workers_of(c)
    # the old worker's name may come back: the next worker's replacement takes the lowest free index
    assert len(final) == size and new in final
    assert all(after["hosts"][w]["boot"]["fields"]["pools[workers].size"] == "w-x-large" for w in final)
    assert cluster_namespaces(c["name"]) == sorted(netns_name(c["name"], h) for h in after["hosts"])
    assert set(plan_actions(c).values()) == {"keep"}
    no_duplicates(c["name"], c["workdir"])


def on_host(c: dict, host: str, path: str) -> bytes:
    return (c["workdir"] / "local/hosts" / host / "root" / path.lstrip("/")).read_bytes()


def manifest_digests(c: dict, host: str) -> dict[str, str]:
    from provision.render.mounts import ANNOTATION
    return {m: yaml.safe_load(on_host(c, host, f"/etc/kubernetes/manifests/{m}.yaml"))["metadata"]["annotations"]
            [ANNOTATION] for m in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}


def served_certificate(c: dict, address: str, cafile: Path | None = None) -> bytes:
    """The certificate an etcd member presents on its client port (a real TLS handshake)."""
    import socket
    import ssl
    pki = c["workdir"] / "pki"
    context = ssl.create_default_context(cafile=str(cafile or pki / "etcd-ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(pki / "etcd-client-provisioner.crt", pki / "etcd-client-provisioner.key")
    with socket.create_connection((address, 2379), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_pki_rotate_then_up_rolls_the_renewed_certificates_onto_every_master_without_losing_quorum(cluster):
    """`pki rotate` then `up`: the masters are updated in place one at a time; each one's
    certificates and keys on disk are the renewed ones, its control-plane manifests carry the
    new mounted-files digest (kubelet, which cannot run here, restarts a static pod when its
    manifest changes), and its etcd member serves its renewed certificate."""
    c = cluster
    masters = sorted(n for n, h in state(c)["hosts"].items() if h["role"] == "master")
    address = {m: state(c)["hosts"][m]["address"] for m in masters}
    before = {m: manifest_digests(c, m) for m in masters}
    old_serving = {m: served_certificate(c, address[m]) for m in masters}
    rotated = provision("pki", "rotate", c["spec"], "--state-dir", c["state_dir"])
    assert rotated.returncode == 0, rotated.stderr
    pki = c["workdir"] / "pki"
    with QuorumWatcher(c) as watcher:
        started = time.monotonic()
        proc = provision("up", c["spec"], "--yes", "--state-dir", c["state_dir"], timeout=900)
        took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    outage = watcher.longest_outage()
    failed = sum(1 for _, ok in watcher.samples if not ok)
    print(f"rotate+up: {took:.1f}s, {failed}/{len(watcher.samples)} quorum reads failed, longest outage {outage:.2f}s")
    assert outage < 2.0 and len(watcher.samples) > 10
    for m in masters:
        assert f"{m}: updated in place" in proc.stderr
        digests = manifest_digests(c, m)
        assert all(digests[k] != before[m][k] for k in digests), m
        for path, blob in [("/etc/kubernetes/pki/apiserver.crt", "apiserver.crt"),
                           ("/etc/kubernetes/pki/apiserver.key", "apiserver.key"),
                           ("/etc/kubernetes/pki/scheduler.crt", "scheduler.crt"),
                           ("/etc/ssl/etcd/server.crt", f"etcd-server-{m}.crt"),
                           ("/etc/ssl/etcd/server.key", f"etcd-server-{m}.key")]:
            assert on_host(c, m, path) == (pki / blob).read_bytes(), (m, path)
        serving = served_certificate(c, address[m])
        assert serving == (pki / f"etcd-server-{m}.crt").read_bytes() and serving != old_serving[m], m
    # one master at a time: each is updated (and etcd healthy again) before the next starts
    lines = proc.stderr.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"[rollout] {m}: updated in place"))
             for m in masters]
    assert order == sorted(order)
    assert set(plan_actions(c).values()) == {"keep"}
