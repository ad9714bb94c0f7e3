"""Rolling changes, decided without a cluster: the order and batches of `up`'s rollout phase,
when etcd may lose a member, what an in-place update writes and which units it restarts (from
configs the real render makes), and the etcd member that joins a running cluster."""
from __future__ import annotations

import json

import pytest
import yaml

from provision import inplace, rollout
from provision.changes import KEEP, REPLACE, UPDATE, FieldChange, HostChange, host_changes
from provision.plan import plan
from provision.render import render_cluster
from provision.spec import parse_spec
from tests.helpers_render import env_file, ignition_file, prepared, served_artifacts, write_spec
from tests.spec.test_validation import BASE, mutate
from tests.test_changes import recorded


def rollout_steps(after: dict) -> list[rollout.Step]:
    state = recorded(parse_spec(BASE))
    spec = parse_spec(after)
    current = plan(spec, state)
    return rollout.steps(host_changes(spec, state, current), current.desired)


def test_masters_go_first_then_workers_and_keep_is_left_out():
    steps = rollout_steps(mutate({"pools[1].size": "big", "kubernetes": {"api_server_names": ["api.example.org"]}}))
    assert [(s.host, s.action) for s in steps] == [
        ("demo-masters-0", "update"), ("demo-masters-1", "update"), ("demo-masters-2", "update"),
        ("demo-workers-0", "replace"), ("demo-workers-1", "replace")]
    assert "pools[workers].size (forces replacement)" in steps[-1].because
    assert all(s.etcd for s in steps[:3]) and not any(s.etcd for s in steps[3:])


def test_a_kubernetes_downgrade_changes_workers_before_masters():
    state = recorded(parse_spec(mutate({"kubernetes": {"version": "1.33.4"}})))
    spec = parse_spec(mutate({"kubernetes": {"version": "1.32.9"}}))
    current = plan(spec, state)
    changes = host_changes(spec, state, current)
    down = [s.host for s in rollout.steps(changes, current.desired, workers_first=True)]
    up = [s.host for s in rollout.steps(changes, current.desired)]
    assert down[:2] == ["demo-workers-0", "demo-workers-1"] and up[-2:] == ["demo-workers-0", "demo-workers-1"]
    assert sorted(down) == sorted(up) and len(up) == 5


def test_nothing_changed_gives_no_step():
    assert rollout_steps(BASE) == []


def test_masters_and_etcd_members_alone_workers_max_unavailable_at_a_time():
    steps = rollout_steps(mutate({"os": {"channel": "beta"}}))
    groups = rollout.batches(steps, 2)
    assert [[s.host for s in g] for g in groups] == [
        ["demo-masters-0"], ["demo-masters-1"], ["demo-masters-2"], ["demo-workers-0", "demo-workers-1"]]
    assert [len(g) for g in rollout.batches(steps, 1)] == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError):
        rollout.batches(steps, 0)


@pytest.mark.parametrize("members, healthy, refused", [
    (3, 3, None), (5, 5, None), (2, 2, "below quorum"),
    (3, 2, "only 2 of 3 etcd members are healthy"), (5, 4, "only 4 of 5"),
    (1, 1, "single member"),
])
def test_an_etcd_member_goes_only_when_every_member_is_healthy(members, healthy, refused):
    reason = rollout.member_removal_refusal(members, healthy)
    assert (reason is None) if refused is None else (refused in reason)


def test_recorded_progress_says_how_far_a_replacement_got():
    progress = {"action": "replace", "hosts": {"a": rollout.DESTROYED, "b": rollout.DRAINED}}
    assert rollout.next_stage_done(progress, "a", rollout.DRAINED)
    assert rollout.next_stage_done(progress, "a", rollout.DESTROYED)
    assert not rollout.next_stage_done(progress, "a", rollout.MEMBER_ADDED)
    assert not rollout.next_stage_done(progress, "b", rollout.DESTROYED)
    assert not rollout.next_stage_done(progress, "c", rollout.DRAINED)
    assert not rollout.next_stage_done(None, "a", rollout.DRAINED)
    assert rollout.in_progress(progress) == ["a", "b"] and rollout.in_progress(None) == []


# ---- in-place updates, from configs the real render makes -------------------------------------

def rendered(tmp_path, doc: dict, state_dir, joined=()):
    path = write_spec(tmp_path, yaml.safe_dump(doc), name=f"{len(list(tmp_path.iterdir()))}.yaml")
    spec, store, state, hosts = prepared(path, state_dir, served_artifacts("http://10.250.0.1:8418"))
    if joined:
        state["etcd"] = {"joined": list(joined)}
    return render_cluster(spec, state, store, hosts)


def config_of(result, host: str) -> bytes:
    return result.files[result.index["hosts"][host]["config"]]


def test_a_new_api_server_name_rewrites_the_certificate_and_restarts_what_reads_it(tmp_path):
    state_dir = tmp_path / "state"
    before = rendered(tmp_path, BASE, state_dir)
    after = rendered(tmp_path, mutate({"kubernetes": {"api_server_names": ["api.example.org"]}}), state_dir)
    old, new = (inplace.payload_of(config_of(r, "demo-masters-0")) for r in (before, after))
    assert old.units.keys() == new.units.keys() and new.files
    changed = sorted(p for p in new.files if old.files.get(p) != new.files[p])
    assert "/etc/kubernetes/pki/apiserver.crt" in changed
    assert all(old.files.get(p) == new.files[p] for p in new.files if p not in changed)
    # the payload holds the config's bytes exactly
    doc = json.loads(config_of(after, "demo-masters-0"))
    assert new.files["/etc/kubernetes/pki/apiserver.crt"][1] == ignition_file(doc, "/etc/kubernetes/pki/apiserver.crt")
    restart = inplace.units_to_restart(new, changed)
    assert "kubelet.service" in restart  # runs the API server's static pod with that certificate
    assert "etcd-member.service" not in restart and "sshd.service" not in restart


def test_an_etcd_certificate_change_restarts_etcd_through_its_environment_file(tmp_path):
    doc = json.loads(config_of(rendered(tmp_path, BASE, tmp_path / "s"), "demo-masters-0"))
    payload = inplace.payload_of(json.dumps(doc).encode())
    assert "/etc/etcd/etcd.env" in inplace.environment_files(payload.units["etcd-member.service"])
    assert "etcd-member.service" in inplace.units_to_restart(payload, ["/etc/ssl/etcd/server.crt"])
    assert inplace.units_to_restart(payload, []) == []
    assert inplace.units_to_restart(payload, [inplace.unit_path("etcd-member.service")]) == ["etcd-member.service"]


def test_a_cloud_config_host_is_not_updated_in_place():
    with pytest.raises(Exception, match="not Ignition JSON"):
        inplace.payload_of(b"#cloud-config\nhostname: a\n")


def test_a_member_that_replaced_one_joins_the_running_cluster(tmp_path):
    result = rendered(tmp_path, BASE, tmp_path / "s", joined=["demo-masters-1"])
    states = {}
    for host in ("demo-masters-0", "demo-masters-1"):
        doc = json.loads(config_of(result, host))
        states[host] = env_file(ignition_file(doc, "/etc/etcd/etcd.env").decode())["ETCD_INITIAL_CLUSTER_STATE"]
    assert states == {"demo-masters-0": "new", "demo-masters-1": "existing"}


def test_oneshot_units_are_not_restarted():
    reads = "ExecStart=/bin/cat /etc/kubernetes/pki/x.crt\n"
    payload = inplace.Payload(files={"/etc/kubernetes/pki/x.crt": (0o644, b"x")},
                              units={"first.service": "[Service]\nType=oneshot\n" + reads,
                                     "long.service": "[Service]\n" + reads})
    assert inplace.units_to_restart(payload, ["/etc/kubernetes/pki/x.crt"]) == ["long.service"]


def test_a_killed_replacement_is_resumed_before_anything_else():
    from provision.phases.rollout import resume_first
    state = recorded(parse_spec(BASE))
    spec = parse_spec(mutate({"os": {"channel": "beta"}}))
    current = plan(spec, state)
    todo = rollout.steps(host_changes(spec, state, current), current.desired)
    progress = {"action": "replace", "hosts": {"demo-workers-1": rollout.DESTROYED}}
    resumed = resume_first(todo, progress, current)
    assert resumed[0].host == "demo-workers-1" and sorted(s.host for s in resumed) == sorted(s.host for s in todo)
    # its new machine was made already (keep now): it is still waited for, as a replacement
    unchanged = rollout.steps(host_changes(parse_spec(BASE), state, plan(parse_spec(BASE), state)), current.desired)
    assert unchanged == []
    finishing = resume_first(unchanged, progress, plan(parse_spec(BASE), state))
    assert [(s.host, s.action) for s in finishing] == [("demo-workers-1", "replace")]
    assert resume_first(todo, {"hosts": {"gone-host": rollout.DRAINED}}, current) == todo


def test_max_unavailable_below_one_is_refused_before_anything(cli, tmp_path):
    from provision.state import LocalStateStore
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    LocalStateStore(spec.name, state_dir).write(recorded(spec))
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(mutate({"os": {"channel": "beta"}})))
    before = (state_dir / "demo" / "state.json").read_bytes()
    result = cli("up", path, "--state-dir", state_dir, "--yes", "--max-unavailable", "0")
    assert result.code == 2 and "--max-unavailable" in result.err and "Traceback" not in result.err
    assert (state_dir / "demo" / "state.json").read_bytes() == before


def host(name: str, role: str, etcd: bool = False):
    from types import SimpleNamespace
    return SimpleNamespace(name=name, role=role, etcd=etcd)


def test_a_host_whose_rendered_config_changed_with_no_spec_field_is_updated_in_place():
    """`pki rotate` changes configs, not spec fields: such a kept host becomes an in-place update
    (after any host the spec changes in the same group); unknown digests change nothing."""
    desired = [host("c-masters-0", "master", True), host("c-masters-1", "master", True),
               host("c-workers-0", "worker")]
    assert rollout.config_changed({"c-masters-0": "a", "c-masters-1": "b", "c-workers-0": None},
                                  {"c-masters-0": "a2", "c-masters-1": "b", "c-workers-0": "w"}) == ["c-masters-0"]
    changes = {"c-masters-0": HostChange("c-masters-0", KEEP), "c-masters-1": HostChange("c-masters-1", KEEP),
               "c-workers-0": HostChange("c-workers-0", KEEP)}
    todo = rollout.steps(changes, desired, configs_changed=["c-workers-0", "c-masters-0"])
    assert [(s.host, s.action, s.because) for s in todo] == [
        ("c-masters-0", UPDATE, rollout.CONFIG_CHANGED), ("c-workers-0", UPDATE, rollout.CONFIG_CHANGED)]
    # a host the spec replaces stays a replacement, listed once
    changes["c-masters-0"] = HostChange("c-masters-0", REPLACE, (FieldChange("os.channel", "a", "b", True),))
    todo = rollout.steps(changes, desired, configs_changed=["c-masters-0"])
    assert [(s.host, s.action) for s in todo] == [("c-masters-0", REPLACE)]


# ---- workers replaced by surge (create before destroy) ----------------------------------------

def test_plan_says_a_worker_is_replaced_create_before_destroy_and_a_master_destroy_before_create():
    state = recorded(parse_spec(BASE))
    spec = parse_spec(mutate({"os": {"channel": "beta"}}))
    changes = host_changes(spec, state, plan(spec, state))
    worker, master = changes["demo-workers-0"], changes["demo-masters-0"]
    assert worker.reason.endswith("; create before destroy")
    assert worker.to_json()["replacement"] == "create before destroy"
    assert master.to_json()["replacement"] == "destroy before create" and "create before destroy" not in master.reason
    # an in-place update has no replacement strategy
    updated = host_changes(parse_spec(mutate({"kubernetes": {"api_server_names": ["api.example.org"]}})),
                           state, plan(spec, state))["demo-workers-0"]
    assert updated.action == UPDATE and "replacement" not in updated.to_json()


def test_only_workers_without_etcd_surge():
    assert rollout.Step("w", REPLACE, "worker", False, "").surges
    assert not rollout.Step("w", UPDATE, "worker", False, "").surges
    assert not rollout.Step("w", REPLACE, "worker", True, "").surges  # an etcd member keeps its name
    assert not rollout.Step("m", REPLACE, "master", False, "").surges
    assert not rollout.Step("e", REPLACE, "etcd", True, "").surges
    assert rollout.Step("w", REPLACE, "worker", False, "").to_json()["replacement"] == "create before destroy"


def test_a_replacement_takes_the_lowest_free_indices():
    assert rollout.replacement_indices([0, 1], 1) == [2]
    assert rollout.replacement_indices([1, 2], 1) == [0]
    assert rollout.replacement_indices([0, 2, 3], 2) == [1, 4]
    assert rollout.replacement_indices([], 3) == [0, 1, 2]


def test_recorded_surge_progress_says_which_worker_replaces_which_and_how_far():
    progress = {"action": "replace", "hosts": {"a": rollout.SURGED, "b": rollout.DRAINED},
                rollout.SURGE_KEY: {"a": "a2", "b": "b2"}}
    assert rollout.surging(progress) == {"a": "a2", "b": "b2"} and rollout.surging(None) == {}
    assert rollout.surge_stage_done(progress, "a", rollout.DRAINED)
    assert rollout.surge_stage_done(progress, "a", rollout.SURGED)
    assert rollout.surge_stage_done(progress, "b", rollout.DRAINED)
    assert not rollout.surge_stage_done(progress, "b", rollout.SURGED)
    assert not rollout.surge_stage_done(progress, "c", rollout.DRAINED)
