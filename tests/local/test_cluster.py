"""`provision up examples/local.yaml` end to end on the local provider, checked from outside.

The module brings up its own cluster (torn down at the end); each test leaves it converged as
it found it (a partition heals, killed processes are restarted by `up`, a scale up is scaled
back), so the tests pass in any order. The fault test (kills at every point of every phase)
and `down` are in test_faults.py, on a cluster of their own.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provision import etcd_binaries
from provision.providers.local import net as local_net

from tests.real import require, require_local_host

from .conftest import (cluster_namespaces, example_spec, free_subnet, needs_root, processes_mentioning,
                       provision, unique_name)

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


def comm(pid: str) -> str | None:
    """A process's name; None when it ended since it was listed (an ssh session, an etcdctl)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it ended between the open and the read
        return None


def no_duplicates(cluster: str, workdir: Path) -> None:
    """Each host runs one init and one launcher per unit; one mirror serves the cluster."""
    launchers: dict[str, int] = {}
    for pid in processes_mentioning(str(workdir / "local" / "hosts")):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            job = f.read().split(b"\0")[-2].decode()
        launchers[job] = launchers.get(job, 0) + 1
    assert launchers and all(n == 1 for n in launchers.values()), launchers
    hosts = cluster_namespaces(cluster)
    for ns in hosts:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        etcds = [p for p in pids if comm(p) == "etcd"]
        assert len(etcds) <= 1, (ns, etcds)
    assert len(processes_mentioning("providers/local/mirror_server.py")) >= 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    name = unique_name("e2e")
    spec = example_spec(tmp, name, free_subnet())
    state_dir = tmp / "state"
    info = {"name": name, "spec": spec, "state_dir": state_dir, "workdir": state_dir / name,
            "doc": yaml.safe_load(spec.read_text())}
    require_local_host()
    try:
        final = provision("up", spec, "--yes", "--state-dir", state_dir, "-o", "json", "-v")
        assert final.returncode == 0, final.stderr
        info["up"] = json.loads(final.stdout)
        info["up_output"] = final.stdout + final.stderr
        yield info
    finally:
        if (state_dir / name).exists():
            provision("down", spec, "--yes", "--state-dir", state_dir)
        from provision.providers import get_provider
        from provision.spec import load_spec
        get_provider(load_spec(spec), state_dir / name).teardown()  # whatever a failed test left


def etcdctl(info, *args, cert: bool | str = True, host: str | None = None) -> subprocess.CompletedProcess:
    """etcdctl from outside with the client certificate rendered into a host's root."""
    state = json.loads((info["workdir"] / "state.json").read_text())
    members = sorted(n for n, h in state["hosts"].items() if h.get("etcd"))
    endpoints = ",".join(f"https://{state['hosts'][n]['address']}:2379" for n in members)
    ssl = info["workdir"] / "local" / "hosts" / (host or members[0]) / "root" / "etc" / "ssl" / "etcd"
    cmd = [require("etcdctl"), f"--endpoints={endpoints}", f"--cacert={ssl / 'ca.crt'}", "--dial-timeout=3s",
           "--command-timeout=5s"]
    if cert:
        identity = cert if isinstance(cert, str) else "agent"
        cmd += [f"--cert={ssl / f'{identity}.crt'}", f"--key={ssl / f'{identity}.key'}"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                          env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]})


def status(info) -> tuple[int, dict]:
    proc = provision("status", info["spec"], "--state-dir", info["state_dir"], "-o", "json")
    return proc.returncode, json.loads(proc.stdout)


def test_etcd_has_three_healthy_members_over_tls(cluster):
    listed = etcdctl(cluster, "member", "list", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    names = sorted(m["name"] for m in json.loads(listed.stdout)["members"])
    assert names == [f"{cluster['name']}-masters-{i}" for i in range(3)]
    health = etcdctl(cluster, "endpoint", "health", "-w", "json")
    assert health.returncode == 0, health.stderr
    assert [h["health"] for h in json.loads(health.stdout)] == [True, True, True]


def test_etcd_refuses_a_client_without_certificate(cluster):
    proc = etcdctl(cluster, "member", "list", cert=False)
    assert proc.returncode != 0
    assert cluster["name"] not in proc.stdout


def test_flannel_config_holds_the_spec_network(cluster):
    proc = etcdctl(cluster, "get", "/coreos.com/network/config", "--print-value-only", cert="flannel")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert config["Network"] == cluster["doc"]["network"]["pod_cidr"]
    assert config["Backend"]["Type"] == "vxlan"


def test_a_workers_etcd_identities_are_refused_outside_their_prefixes(cluster):
    """Auth is on after up: the keys a worker holds reach only their own prefixes; its agent's
    identity is its own, good for its own load key alone (not another host's)."""
    worker = f"{cluster['name']}-workers-0"
    hosts = f"/provision/{cluster['name']}/hosts/"
    assert etcdctl(cluster, "get", f"{hosts}{worker}/load", cert="agent", host=worker).returncode == 0
    assert etcdctl(cluster, "get", "/coreos.com/network/", "--prefix", "--keys-only", cert="flannel",
                   host=worker).returncode == 0
    for identity, own in (("agent", f"{hosts}{worker}/load"), ("flannel", "/coreos.com/network/")):
        for key in ("/registry/secrets/kube-system/x", "/coreos.com/network/config", f"/provision/{cluster['name']}/x",
                    f"{hosts}{cluster['name']}-masters-0/load"):
            if key.startswith(own):
                continue
            for args in (("put", key, "x"), ("get", key)):
                proc = etcdctl(cluster, *args, cert=identity, host=worker)
                assert proc.returncode != 0 and "permission denied" in proc.stderr, (identity, args, proc.stderr)


def test_v2_create_only_if_absent_like_coreos_kubernetes(cluster):
    """The v2 path flannel.etcd_api: v2 uses (python-etcd, prevExist=false) on the same cluster."""
    from provision.etcd import cluster as cluster_etcd, v2
    from provision.spec import load_spec
    from provision.state import LocalStateStore
    store = LocalStateStore(cluster["name"], cluster["state_dir"])
    access = cluster_etcd.connect(load_spec(cluster["spec"]), store, store.read())
    key = f"/provision/{cluster['name']}/test/network"  # inside the provisioner's prefix (v2 auth is on)
    assert v2.create(access, key, '{"Network":"10.9.0.0/16"}') is True
    assert v2.create(access, key, '{"Network":"10.8.0.0/16"}') is False
    assert v2.get(access, key) == '{"Network":"10.9.0.0/16"}'


def test_kubeconfig_verb_writes_where_asked(cluster, tmp_path):
    out = tmp_path / "admin.conf"
    proc = provision("kubeconfig", cluster["spec"], "--out", out, "--state-dir", cluster["state_dir"], "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(out)
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_bytes() == (cluster["workdir"] / "kubeconfig").read_bytes()


def test_each_root_holds_what_its_role_needs(cluster):
    hosts = cluster["workdir"] / "local" / "hosts"
    etcd_binary = Path(require("etcd")).read_bytes()  # the newest etcd 3.5 of this machine
    for i in range(3):
        root = hosts / f"{cluster['name']}-masters-{i}" / "root"
        for rel in ("etc/etcd/etcd.env", "etc/ssl/etcd/server.key", "etc/kubernetes/manifests/kube-apiserver.yaml",
                    "etc/kubernetes/pki/apiserver.crt", "etc/systemd/system/kubelet.service"):
            assert (root / rel).is_file(), rel
        assert (root / "opt/bin/etcd").read_bytes() == etcd_binary
        assert oct((root / "etc/ssl/etcd/server.key").stat().st_mode & 0o777) == "0o600"
        # keys came over SSH (secrets phase), into private directories; the boot config has none
        assert oct((root / "etc/ssl/etcd").stat().st_mode & 0o777) == "0o700"
        assert oct((root / "etc/kubernetes/pki").stat().st_mode & 0o777) == "0o700"
        assert b"PRIVATE KEY" not in (root.parent / "config.ign").read_bytes()
        assert f"ETCD_NAME={cluster['name']}-masters-{i}" in (root / "etc/etcd/etcd.env").read_text()
    for i in range(2):
        root = hosts / f"{cluster['name']}-workers-{i}" / "root"
        assert (root / "etc/kubernetes/bootstrap-kubeconfig").stat().st_mode & 0o777 == 0o600
        assert b"PRIVATE KEY" not in (root.parent / "config.ign").read_bytes()
        assert b"token:" not in (root.parent / "config.ign").read_bytes()
        assert (root / "opt/bin/provision-host-agent").is_file()
        assert not (root / "etc/ssl/etcd/server.key").exists()  # no etcd member on workers
        assert not (root / "etc/kubernetes/pki/ca.key").exists()  # the cluster CA key stays on masters
    pub = (cluster["workdir"] / "pki/ssh/id_ed25519.pub").read_text().split()[1]
    assert pub in (hosts / f"{cluster['name']}-workers-0/root/home/core/.ssh/authorized_keys.d/ignition").read_text()


def test_status_reports_units_running_and_skipped(cluster):
    code, report = status(cluster)
    assert code == 0, report
    assert report["healthy"] and report["orphans"] == [] and report["missing"] == []
    master = report["hosts"][f"{cluster['name']}-masters-0"]
    assert master["units"]["etcd-member.service"]["state"] == "running"
    assert master["units"]["kubelet.service"] == {"state": "skipped", "reason": "binary /opt/bin/kubelet is not present"}
    for host in report["hosts"].values():
        assert host["units"]["provision-host-agent.service"]["state"] == "running"
    # a 3.5 serves the spec's 3.5.17, and each member says which version it runs
    served = etcd_binaries.newest("etcd", "3.5")
    assert report["artifacts"]["etcd"].startswith(f"{served.path} (etcd Version: {served.version_text})")
    assert report["artifacts"]["etcd"].endswith("served as etcd 3.5.17")
    assert report["etcd"]["versions"] == {e: served.version_text for e in report["etcd"]["endpoints"]}
    assert len(report["etcd"]["versions"]) == 3 and served.series == "3.5"
    human = provision("status", cluster["spec"], "--state-dir", cluster["state_dir"])
    assert f"healthy (etcd {served.version_text})" in human.stdout


def test_admin_kubeconfig_is_private(cluster):
    path = cluster["workdir"] / "kubeconfig"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    state = json.loads((cluster["workdir"] / "state.json").read_text())
    address = state["hosts"][f"{cluster['name']}-masters-0"]["address"]
    assert doc["clusters"][0]["cluster"]["server"] == f"https://{address}:6443"


def test_second_up_changes_nothing(cluster):
    before = json.loads((cluster["workdir"] / "state.json").read_text())
    proc = provision("up", cluster["spec"], "--yes", "--state-dir", cluster["state_dir"], "-o", "json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["changed"] == []
    results = document["results"]
    assert results["machines"]["created"] == [] and results["machines"]["destroyed"] == []
    assert results["render"]["changed"] == []
    assert results["flannel"]["created"] is False
    assert results["kubeconfig"]["changed"] is False
    for phase in ("secrets", "etcd", "flannel", "fleet", "masters", "workers"):
        assert results[phase]["changed"] == 0, (phase, results[phase])
        assert "already converged: no change" in proc.stderr
    after = json.loads((cluster["workdir"] / "state.json").read_text())
    assert after["hosts"].keys() == before["hosts"].keys()
    no_duplicates(cluster["name"], cluster["workdir"])


def inventory_files(info) -> dict[str, tuple[bytes, int]]:
    folder = info["workdir"] / "inventories"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_inventory_files_hold_the_whole_cluster_after_up(cluster):
    """The last role phase (workers) must not narrow the inventory to its own hosts."""
    import runpy
    state = json.loads((cluster["workdir"] / "state.json").read_text())
    folder = cluster["workdir"] / "inventories"
    groups = runpy.run_path(str(folder / f"{cluster['name']}.py"))
    listed = sorted(name for group in ("masters", "workers") for name, _ in groups[group])
    assert listed == sorted(state["hosts"])
    assert sorted(groups["pool_workers"]) == sorted(n for n, h in state["hosts"].items() if h["pool"] == "workers")
    known = {line.split()[0] for line in (folder / "known_hosts").read_text().splitlines()}
    assert known == {h["address"] for h in state["hosts"].values()}


def test_dry_run_up_on_the_live_cluster_checks_every_phase(cluster):
    """Two role runs in one process (masters, then workers) both connect: pyinfra's
    memoized known_hosts must not keep the first run's keys. A dry run writes no file."""
    before = inventory_files(cluster)
    from provision import bootstrap, pki
    from provision.spec import load_spec
    from provision.state import LocalStateStore
    store = LocalStateStore(cluster["name"], cluster["state_dir"])
    hosts = store.read()["hosts"]
    for role in ("master", "worker"):
        chosen = {n: h for n, h in hosts.items() if h["role"] == role}
        outcomes = bootstrap.run_roles(load_spec(cluster["spec"]), store.workdir, chosen, (f"{role}s",),
                                       pki.ssh_private_key_path(store), dry_run=True)
        assert {n: o.error for n, o in outcomes.items()} == {n: None for n in chosen}
    proc = provision("up", cluster["spec"], "--dry-run", "--state-dir", cluster["state_dir"])
    assert proc.returncode == 0, proc.stderr
    for i in range(2):
        assert f"{cluster['name']}-workers-{i}: would change 0 of" in proc.stderr
    assert inventory_files(cluster) == before


def test_partition_is_reported_then_heals(cluster):
    member = f"{cluster['name']}-masters-1"
    state = json.loads((cluster["workdir"] / "state.json").read_text())
    endpoint = f"https://{state['hosts'][member]['address']}:2379"
    local_net.set_link(cluster["name"], member, up=False)
    try:
        code, report = status(cluster)
        assert code == 1
        assert report["etcd"]["health"][endpoint]["healthy"] is False
        assert sum(h["healthy"] for h in report["etcd"]["health"].values()) == 2
        assert not report["etcd"]["healthy"]
    finally:
        local_net.set_link(cluster["name"], member, up=True)
    deadline = time.monotonic() + 60
    while True:
        code, report = status(cluster)
        if code == 0:
            break
        assert time.monotonic() < deadline, report["etcd"]
        time.sleep(1)
    assert report["etcd"]["health"][endpoint]["healthy"] is True


def test_a_host_whose_processes_died_is_reported_and_restarted_by_up(cluster):
    host = f"{cluster['name']}-workers-1"
    ns = f"provision.{cluster['name']}.{host}"
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        code, report = status(cluster)
        if report["hosts"][host]["state"] == "stopped":
            break
        assert time.monotonic() < deadline, report["hosts"][host]
        time.sleep(0.2)
    assert code == 1
    proc = provision("up", cluster["spec"], "--yes", "--state-dir", cluster["state_dir"])
    assert proc.returncode == 0, proc.stderr
    assert f"starting 1 stopped host(s): {host}" in proc.stderr
    code, report = status(cluster)
    assert report["hosts"][host]["state"] == "running"
    assert report["hosts"][host]["units"]["provision-host-agent.service"]["state"] == "running"
    no_duplicates(cluster["name"], cluster["workdir"])


def test_a_stopped_unit_of_a_running_host_is_restarted_by_up(cluster):
    """A master's etcd launcher and etcd die: `up` starts that unit again (and only it)."""
    host = f"{cluster['name']}-masters-1"
    hosts_dir = cluster["workdir"] / "local" / "hosts"

    def unit(name: str, on: str = host) -> dict:
        return json.loads((hosts_dir / on / "root/run/provision/units" / f"{name}.json").read_text())

    launcher = int((hosts_dir / host / "jobs" / "etcd-member.service.pid").read_text())
    etcd_pid = unit("etcd-member.service")["pid"]
    untouched = {(h, u): unit(u, h)["launcher_pid"] for h, u in ((host, "sshd.service"),
                 (f"{cluster['name']}-masters-0", "etcd-member.service"))}
    for pid in (launcher, etcd_pid):
        os.kill(pid, signal.SIGKILL)
    proc = provision("up", cluster["spec"], "--yes", "--state-dir", cluster["state_dir"])
    assert proc.returncode == 0, proc.stderr
    assert f"{host}: started etcd-member.service" in proc.stderr
    assert "started sshd.service" not in proc.stderr
    assert unit("etcd-member.service")["state"] == "running"
    assert {(h, u): unit(u, h)["launcher_pid"] for h, u in untouched} == untouched
    health = etcdctl(cluster, "endpoint", "health", "-w", "json")
    assert [h["health"] for h in json.loads(health.stdout)] == [True, True, True]
    no_duplicates(cluster["name"], cluster["workdir"])


def test_scale_outside_min_max_is_refused_unchanged(cluster):
    before = (cluster["workdir"] / "state.json").read_bytes()
    proc = provision("scale", cluster["spec"], "workers", "9", "--yes", "--state-dir", cluster["state_dir"])
    assert proc.returncode == 2
    assert "COUNT: 9" in proc.stderr and "Traceback" not in proc.stderr
    assert (cluster["workdir"] / "state.json").read_bytes() == before


def test_scale_adds_hosts_that_publish_load_and_back(cluster):
    before = set(json.loads((cluster["workdir"] / "state.json").read_text())["hosts"])
    proc = provision("scale", cluster["spec"], "workers", "4", "--yes", "--state-dir", cluster["state_dir"],
                     "-o", "json")
    assert proc.returncode == 0, proc.stderr
    state = json.loads((cluster["workdir"] / "state.json").read_text())
    assert state["pools"]["workers"]["size"] == 4
    # another test of the module may have grown the pool first: the new hosts are those added now
    new = sorted(set(state["hosts"]) - before)
    assert new and all(n.startswith(f"{cluster['name']}-workers-") for n in new)
    # keys were delivered to the new hosts only (their records were missing), each 0600
    delivered = json.loads(proc.stdout)["results"]["secrets"]
    assert sorted(delivered["hosts"]) == new and delivered["converged"] == 5, delivered
    for n in new:
        key = cluster["workdir"] / "local" / "hosts" / n / "root" / "etc/ssl/etcd/agent.key"
        assert key.stat().st_mode & 0o777 == 0o600
    # their host-load agents publish into etcd's v3 keyspace on leases (headroom's source), each
    # with its own identity (read here as provision reads them)
    from provision.etcd.client import Etcd
    pki_dir = cluster["workdir"] / "pki"
    # the pki phase made no agent certificate: each new host's was issued as it was bootstrapped
    assert not [n for n in json.loads(proc.stdout)["results"]["pki"]["created"] if n.startswith("etcd-agent-")]
    assert sorted(delivered["agent_certificates_issued"]) == [f"etcd-agent-{n}" for n in new]
    assert all((pki_dir / f"etcd-agent-{n}.crt").is_file() for n in new)
    address = state["hosts"][f"{cluster['name']}-masters-0"]["address"]
    assert sorted(state["etcd"]["agent_users"]) == sorted(state["hosts"])

    class ProvisionerTLS:
        ca = pki_dir / "etcd-ca.crt"
        cert, key = pki_dir / "etcd-client-provisioner.crt", pki_dir / "etcd-client-provisioner.key"

    client = Etcd([f"https://{address}:2379"], ProvisionerTLS)
    prefix = f"/provision/{cluster['name']}/hosts/"
    deadline = time.monotonic() + 60
    while True:
        found = client.get_prefix(prefix)
        if all(f"{prefix}{n}/load" in found for n in new):
            loads = {n: json.loads(found[f"{prefix}{n}/load"][0]) for n in new}
            assert all(found[f"{prefix}{n}/load"][1] for n in new)  # each on a lease
            break
        assert time.monotonic() < deadline, "new workers did not publish load"
        time.sleep(1)
    for load in loads.values():
        assert set(load) == {"containers", "cpu", "memory", "at"} and 0 <= load["cpu"] <= 1
    code, report = status(cluster)
    assert report["headroom"]["hosts"] == 4
    # and back: scaling down removes the highest hosts (the cluster is as the module made it)
    proc = provision("scale", cluster["spec"], "workers", "2", "--yes", "--state-dir", cluster["state_dir"])
    assert proc.returncode == 0, proc.stderr
    state = json.loads((cluster["workdir"] / "state.json").read_text())
    workers = sorted(n for n, h in state["hosts"].items() if h["pool"] == "workers")
    assert workers == [f"{cluster['name']}-workers-0", f"{cluster['name']}-workers-1"]
    # the removed hosts' agent identities are gone from etcd and from state
    assert sorted(state["etcd"]["agent_users"]) == sorted(state["hosts"])
    assert not any((pki_dir / f"etcd-agent-{n}.{suffix}").exists() for n in new for suffix in ("crt", "key"))
    assert len(cluster_namespaces(cluster["name"])) == 5
    assert not (cluster["workdir"] / "local" / "hosts" / f"{cluster['name']}-workers-3").exists()
    no_duplicates(cluster["name"], cluster["workdir"])


def key_material(workdir: Path) -> dict[str, bytes]:
    """What must never be printed or logged: a line from the body of every private key in
    state (a 64-character base64 line is unique to its key) and the bootstrap token's secret."""
    out = {}
    for path in sorted((workdir / "pki").rglob("*")):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            body = path.read_bytes().strip().splitlines()[1:-1]
            out[str(path.relative_to(workdir))] = body[len(body) // 2]
    token_id, _, token_secret = (workdir / "pki" / "bootstrap-token").read_text().strip().partition(".")
    assert len(token_secret) == 16
    out["bootstrap token"] = token_secret.encode()
    return out


def test_no_command_output_log_or_json_holds_key_material(cluster, tmp_path):
    """Every command an operator runs, its human and JSON output, and every log the cluster's
    hosts and units write: no private key, no token (issue 10)."""
    spec, state_dir, workdir = cluster["spec"], cluster["state_dir"], cluster["workdir"]
    secrets = key_material(workdir)
    assert len(secrets) >= 20 and any(k.endswith("ca.key") for k in secrets), sorted(secrets)
    outputs = {"up (the fixture's)": cluster["up_output"]}
    for args in (("validate", spec), ("plan", spec, "-o", "json"), ("up", spec, "--yes", "-v"),
                 ("up", spec, "--yes", "-o", "json"), ("up", spec, "--dry-run", "-v"),
                 ("up", spec, "--yes", "--verify", "-v", "-o", "json"),
                 ("status", spec, "-v"), ("status", spec, "-o", "json"), ("pki", "show", spec, "-o", "json"),
                 ("render", spec, "--out", tmp_path / "rendered", "-o", "json"),
                 ("headroom", spec, "--once", "-v", "-o", "json"), ("headroom", "history", spec, "-o", "json"),
                 ("kubeconfig", spec, "--out", tmp_path / "kubeconfig", "-o", "json"),
                 ("doctor", spec, "-o", "json")):
        proc = provision(*args, "--state-dir", state_dir) if args[0] not in ("validate",) else provision(*args)
        assert "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        outputs[" ".join(map(str, args[:2]))] = proc.stdout + proc.stderr
    for path in sorted((tmp_path / "rendered").iterdir()):  # what `render --out` wrote
        outputs[f"rendered {path.name}"] = path.read_text()
    logs = [p for p in (workdir / "local").rglob("*.log") if p.is_file()]
    logs += [p for p in (workdir / "local" / "hosts").glob("*/root/run/provision/units/*.log")]
    assert logs
    for path in logs:
        outputs[str(path.relative_to(workdir))] = path.read_text(errors="replace")
    for what in ("state.json", *(p.name for p in (workdir / "inventories").iterdir())):
        path = workdir / what if what == "state.json" else workdir / "inventories" / what
        outputs[what] = path.read_text()
    for name, text in outputs.items():
        flat = text.replace("\\n", "").replace("\n", "")
        assert "PRIVATE KEY" not in text, name
        for what, secret in secrets.items():
            assert secret.decode() not in flat, (name, what)
