"""Targeted bootstrap on the local provider (issue 11): the bootstrap phases run their roles
only on hosts whose convergence record differs; `scale` +1 touches the new host only, a no-op
`up` touches none, `up --verify` re-checks every host and changes nothing on a converged
cluster. Which hosts a phase touched is read from `--output json` (`results.PHASE.hosts`)."""
from __future__ import annotations

import json
import shutil

import pytest

from .conftest import example_spec, free_subnet, needs_root, provision, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]
ROLE_PHASES = ("secrets", "etcd", "flannel", "fleet", "masters", "workers")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    name = unique_name("cv")
    spec = example_spec(tmp, name, free_subnet(), etcd={"count": 1, "placement": "masters"},
                        pools=[{"name": "masters", "role": "master", "count": 1},
                               {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 4}])
    state_dir = tmp / "state"
    info = {"name": name, "spec": spec, "state_dir": state_dir, "workdir": state_dir / name}
    try:
        first = run(info, "up", "--yes")
        info["first"] = first
        # the hosts the first up made, for tests that may run after a scale (shuffled order)
        info["first_hosts"] = {n: h["role"] for n, h in state(info)["hosts"].items()}
        yield info
    finally:
        if (state_dir / name).exists():
            provision("down", spec, "--yes", "--state-dir", state_dir)
        from provision.providers import get_provider
        from provision.spec import load_spec
        get_provider(load_spec(spec), state_dir / name).teardown()


def run(info, verb, *args) -> dict:
    proc = provision(verb, info["spec"], *args, "--state-dir", info["state_dir"], "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def state(info) -> dict:
    return json.loads((info["workdir"] / "state.json").read_text())


def touched(document: dict) -> dict[str, list[str]]:
    """Per role phase, the hosts it ran its roles on."""
    return {phase: sorted(document["results"][phase]["hosts"]) for phase in ROLE_PHASES}


def names(info, role: str | None = None) -> list[str]:
    return sorted(n for n, h in state(info)["hosts"].items() if role is None or h["role"] == role)


def test_first_up_bootstraps_every_host_and_records_it(cluster):
    made = cluster["first_hosts"]
    everyone = sorted(made)
    masters, workers = (sorted(n for n, role in made.items() if role == r) for r in ("master", "worker"))
    assert touched(cluster["first"]) == {"secrets": everyone, "etcd": masters, "flannel": everyone,
                                         "fleet": everyone, "masters": masters, "workers": workers}
    records = state(cluster)["convergence"]
    assert sorted(records) == names(cluster)  # every host, those a scale added since too
    assert sorted(records[workers[0]]) == ["flannel", "fleet", "secrets", "workers"]
    # the secrets record keeps a digest of the host's keys and certificates (a renewed key re-delivers)
    assert len(records[workers[0]]["secrets"]["secrets"]) == 64
    # the first master applied the addons (a local host runs no API: the files are checked, the
    # apply step is a no-op) and state records what it applied; then the node roles were told to
    # remove kube-proxy's retired files
    assert cluster["first"]["results"]["masters"]["addons"]["applied"] is True
    assert state(cluster)["addons"]["host"] == masters[0] and len(state(cluster)["addons"]["applied"]) == 64
    assert records[workers[0]]["workers"]["retired"] == "removed"


def test_noop_up_runs_the_roles_on_no_host(cluster):
    document = run(cluster, "up", "--yes")
    assert touched(document) == {phase: [] for phase in ROLE_PHASES}
    assert document["results"]["wait"]["logged_in"] == []
    # the node phases' records carry the addons' field: a converged host is not checked again
    assert document["results"]["wait"]["checked"] == []
    status = run(cluster, "status")
    assert {n: h["convergence"]["state"] for n, h in status["hosts"].items()} == {n: "converged" for n in names(cluster)}
    assert document["results"]["masters"]["addons"]["applied"] is False  # nothing changed since
    assert document["results"]["workers"]["converged"] == len(names(cluster, "worker"))
    assert document["results"]["etcd"]["members"]  # the constant-cost cluster check still ran
    assert document["changed"] == []


def test_scale_plus_one_bootstraps_the_new_host_only(cluster):
    before = names(cluster, "worker")
    document = run(cluster, "scale", "workers", str(len(before) + 1), "--yes")
    new = sorted(set(names(cluster, "worker")) - set(before))
    assert len(new) == 1
    assert touched(document) == {"secrets": new, "etcd": [], "flannel": new, "fleet": new, "masters": [],
                                 "workers": new}
    assert document["results"]["wait"]["logged_in"] == new
    assert document["results"]["workers"]["hosts"][new[0]]["error"] is None
    # each phase's own seconds, as `up` gives them (the P6 bench reads where scale +1 spends them)
    assert set(document["seconds"]) == {"pki", "render", "machines", "wait", "hosts", "secrets", "etcd",
                                        "flannel", "fleet", "masters", "workers"}
    assert all(s >= 0 for s in document["seconds"].values()) and document["seconds"]["machines"] > 0


def test_verify_rechecks_every_host_and_changes_nothing(cluster):
    everyone, masters, workers = names(cluster), names(cluster, "master"), names(cluster, "worker")
    before = state(cluster)["convergence"]
    document = run(cluster, "up", "--yes", "--verify")
    assert touched(document) == {"secrets": everyone, "etcd": masters, "flannel": everyone, "fleet": everyone,
                                 "masters": masters, "workers": workers}
    assert document["results"]["wait"]["logged_in"] == everyone
    for phase in ROLE_PHASES:
        assert document["results"][phase]["changed"] == 0, (phase, document["results"][phase])
        assert document["results"][phase]["verify"] is True
    assert document["changed"] == []
    assert state(cluster)["convergence"] == before


def test_a_host_whose_record_differs_or_is_missing_is_bootstrapped(cluster):
    workers = names(cluster, "worker")
    path = cluster["workdir"] / "state.json"
    doc = json.loads(path.read_text())
    doc["convergence"][workers[0]]["workers"]["config"] = "0" * 64  # as if its config changed
    del doc["convergence"][workers[-1]]  # as if never recorded
    path.write_text(json.dumps(doc))
    document = run(cluster, "up", "--yes")
    assert touched(document)["workers"] == sorted({workers[0], workers[-1]})
    assert touched(document)["fleet"] == touched(document)["secrets"] == [workers[-1]]
    assert touched(document)["masters"] == []
    again = run(cluster, "up", "--yes")
    assert touched(again) == {phase: [] for phase in ROLE_PHASES}


def test_drift_on_a_converged_host_is_left_by_up_and_repaired_by_verify(cluster):
    """A directory the workers role makes is removed by hand: the record still says converged,
    so a plain `up` does not look; `up --verify` finds and repairs it on that host only."""
    worker = names(cluster, "worker")[0]
    kubelet_dir = cluster["workdir"] / "local" / "hosts" / worker / "root" / "var" / "lib" / "kubelet"
    assert kubelet_dir.is_dir()
    shutil.rmtree(kubelet_dir)
    plain = run(cluster, "up", "--yes")
    assert touched(plain)["workers"] == [] and not kubelet_dir.exists()
    verified = run(cluster, "up", "--yes", "--verify")
    changed = {n for n, r in verified["results"]["workers"]["hosts"].items() if r["changed"]}
    assert changed == {worker}
    assert kubelet_dir.is_dir()


def test_a_stopped_unit_and_a_mode_changed_by_hand_are_reported_by_status_and_repaired_by_verify(cluster):
    """Drift on a converged worker: its host agent stopped and kubelet's directory opened up by
    hand (mode 755, the role wants 700). `status` reports the host as drifted (its record says
    converged, the unit says otherwise; exit 1); `up --verify` starts the unit again and the
    workers role puts the mode back on that host only; then `status` is healthy again."""
    import os
    from provision.providers import get_provider
    from provision.providers.local.provider import AGENT_UNIT
    from provision.spec import load_spec
    worker = names(cluster, "worker")[0]
    provider = get_provider(load_spec(cluster["spec"]), cluster["workdir"])
    kubelet_dir = provider.host_root(worker) / "var" / "lib" / "kubelet"
    assert provider.stop_unit(worker, AGENT_UNIT), "the host agent was not running"
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(kubelet_dir, 0o755)

    proc = provision("status", cluster["spec"], "--state-dir", cluster["state_dir"], "-o", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert report["drifted"] == [worker], {n: (h.get("convergence"), h.get("units")) for n, h in report["hosts"].items()}
    assert report["hosts"][worker]["convergence"] == {"state": "drifted", "units": [AGENT_UNIT]}
    assert all(h["convergence"]["state"] == "converged" for n, h in report["hosts"].items() if n != worker)
    assert any(AGENT_UNIT in line for line in report["errors"])
    text = provision("status", cluster["spec"], "--state-dir", cluster["state_dir"])
    assert f"drifted since it converged: {worker}" in text.stdout and "--verify" in text.stdout

    verified = run(cluster, "up", "--yes", "--verify")
    changed = {n for n, r in verified["results"]["workers"]["hosts"].items() if r["changed"]}
    assert changed == {worker}
    assert kubelet_dir.stat().st_mode & 0o777 == 0o700
    assert provider.unit_states(worker)[AGENT_UNIT]["state"] == "running"

    after = provision("status", cluster["spec"], "--state-dir", cluster["state_dir"], "-o", "json")
    assert after.returncode == 0, after.stdout
    assert {h["convergence"]["state"] for h in json.loads(after.stdout)["hosts"].values()} == {"converged"}


def test_a_file_changed_by_hand_is_restored_by_verify_and_then_left_alone(cluster):
    """Content drift on a converged worker: a file its boot config wrote (kubelet.env) is edited
    by hand, mode kept. `status` reports the host drifted, naming the file (the local provider
    reads host files without SSH); a plain `up` trusts the record and does not look; `up
    --verify` compares every checked file's sha256 with the boot config's and puts that file
    back, on that host only; a second `up --verify` changes nothing anywhere and `status` says
    every host converged."""
    from provision.providers import get_provider
    from provision.spec import load_spec
    worker = names(cluster, "worker")[0]
    provider = get_provider(load_spec(cluster["spec"]), cluster["workdir"])
    env_file = provider.host_root(worker) / "etc" / "kubernetes" / "kubelet.env"
    original = env_file.read_bytes()
    env_file.write_bytes(original + b"KUBELET_EXTRA_ARGS=--edited-by-hand\n")

    report = json.loads(provision("status", cluster["spec"], "--state-dir", cluster["state_dir"], "-o", "json").stdout)
    assert report["drifted"] == [worker], {n: (h.get("convergence"), h.get("units")) for n, h in report["hosts"].items()}
    assert report["hosts"][worker]["convergence"] == {"state": "drifted", "units": [],
                                                      "files": ["/etc/kubernetes/kubelet.env"]}
    text = provision("status", cluster["spec"], "--state-dir", cluster["state_dir"])
    assert f"drifted since it converged: {worker}" in text.stdout and "changed on the host" in text.stdout
    assert "/etc/kubernetes/kubelet.env" in text.stdout and "--verify" in text.stdout

    plain = run(cluster, "up", "--yes")
    assert touched(plain)["workers"] == [] and b"edited-by-hand" in env_file.read_bytes()
    verified = run(cluster, "up", "--yes", "--verify")
    workers = verified["results"]["workers"]["hosts"]
    assert {n for n, r in workers.items() if r["changed"]} == {worker}
    assert env_file.read_bytes() == original
    assert env_file.stat().st_mode & 0o777 == 0o644

    again = run(cluster, "up", "--yes", "--verify")
    for phase in ROLE_PHASES:
        assert {n for n, r in again["results"][phase]["hosts"].items() if r["changed"]} == set(), phase
    after = json.loads(provision("status", cluster["spec"], "--state-dir", cluster["state_dir"], "-o", "json").stdout)
    assert after["drifted"] == []
    assert {h["convergence"]["state"] for h in after["hosts"].values()} == {"converged"}


def running_environment(provider, host: str, unit: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """(pid, /proc/PID/environ) of the unit's running process, once it runs."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        doc = provider.unit_states(host).get(unit, {})
        pid = doc.get("pid")
        if doc.get("state") == "running" and pid:
            try:
                return pid, open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                pass
        assert time.monotonic() < deadline, (unit, doc)
        time.sleep(0.1)


def test_a_restored_file_restarts_the_unit_that_reads_it(cluster):
    """A converged worker's host-agent environment file is edited by hand and the agent
    restarted, so the running agent carries the edit. `up --verify` puts the file back and
    restarts the unit that reads it (its EnvironmentFile=), on that host only: the agent runs
    again without the edit. Units that do not read the file keep running untouched."""
    from provision.providers import get_provider
    from provision.providers.local.provider import AGENT_UNIT
    from provision.spec import load_spec
    workers = names(cluster, "worker")
    worker = workers[0]
    provider = get_provider(load_spec(cluster["spec"]), cluster["workdir"])
    env_file = provider.host_root(worker) / "etc" / "provision" / "host-agent.env"
    original = env_file.read_bytes()
    env_file.write_bytes(original + b"PROVISION_EDITED_BY_HAND=1\n")
    assert provider.restart_units(worker, [AGENT_UNIT])
    edited_pid, environ = running_environment(provider, worker, AGENT_UNIT)
    assert b"PROVISION_EDITED_BY_HAND=1" in environ.split(b"\0")
    # the other workers' running agents (one another test just added may still be starting: it has none yet)
    others = {n: pid for n in workers if n != worker
              if (pid := provider.unit_states(n)[AGENT_UNIT].get("pid")) is not None}
    sshd_pid = provider.unit_states(worker)["sshd.service"].get("pid")

    verified = run(cluster, "up", "--yes", "--verify")
    result = verified["results"]["workers"]["hosts"]
    assert result[worker]["restored"] == ["/etc/provision/host-agent.env"]
    assert result[worker]["restarted"] == [AGENT_UNIT]
    assert all("restarted" not in r for n, r in result.items() if n != worker)
    assert env_file.read_bytes() == original
    pid, environ = running_environment(provider, worker, AGENT_UNIT)
    assert pid != edited_pid
    assert b"PROVISION_EDITED_BY_HAND=1" not in environ.split(b"\0")
    assert provider.unit_states(worker)["sshd.service"].get("pid") == sshd_pid  # not a reader: left alone
    assert {n: provider.unit_states(n)[AGENT_UNIT].get("pid") for n in others} == others

    again = run(cluster, "up", "--yes", "--verify")
    assert all("restarted" not in r for r in again["results"]["workers"]["hosts"].values())
    assert running_environment(provider, worker, AGENT_UNIT)[0] == pid


def test_etcd_auth_is_checked_again_only_when_verifying_or_a_member_changed(cluster):
    """etcd's users and roles converged on the first `up` (recorded in state with a digest of
    what the spec wants): a no-op `up` and `scale` skip their etcdctl round trips; `up
    --verify` checks them again, and finds nothing to change."""
    plain = run(cluster, "up", "--yes")
    assert plain["results"]["etcd"]["auth_checked"] is False
    assert plain["results"]["etcd"]["health"] and plain["results"]["etcd"]["auth_changes"] == []
    verified = run(cluster, "up", "--yes", "--verify")
    assert verified["results"]["etcd"]["auth_checked"] is True
    assert verified["results"]["etcd"]["auth_changes"] == []
    assert state(cluster)["etcd"]["auth_converged"]


def test_the_flannel_config_is_asked_of_etcd_again_only_when_verifying(cluster):
    """The flannel network config found in etcd is recorded in state: a no-op `up` does not ask
    etcd again; `up --verify` does, and writes it again when it is gone from etcd (real etcd,
    over TLS as the cluster's root identity)."""
    from provision import pki
    from provision.etcd import cluster as etcd_cluster
    from provision.etcd.keys import FLANNEL_KEY
    from provision.spec import load_spec
    from provision.state import LocalStateStore
    plain = run(cluster, "up", "--yes")
    assert plain["results"]["flannel"]["etcd_checked"] is False
    assert state(cluster)["etcd"]["flannel_config"]
    spec = load_spec(cluster["spec"])
    store = LocalStateStore(spec.name, cluster["state_dir"])
    etcd = etcd_cluster.connect(spec, store, state(cluster))
    root = etcd.as_identity(pki.client_tls(store, "root"))
    assert root.delete(FLANNEL_KEY) == 1
    assert run(cluster, "up", "--yes")["results"]["flannel"]["etcd_checked"] is False  # as recorded
    assert root.get(FLANNEL_KEY) is None
    verified = run(cluster, "up", "--yes", "--verify")
    assert verified["results"]["flannel"]["etcd_checked"] is True
    assert verified["results"]["flannel"]["created"] is True
    assert root.get(FLANNEL_KEY) is not None
