"""What a spec change does to running hosts: keep, update in place, replace, and which fields."""
from __future__ import annotations

import json

import yaml

from provision.changes import (BOOT, KEEP, REPLACE, UNKNOWN, UPDATE, boot_record, compare_fields,
                               forces_replacement, host_changes)
from provision.plan import plan
from provision.spec import parse_spec
from provision.state import LocalStateStore

from tests.spec.test_validation import BASE, mutate


def recorded(spec) -> dict:
    """State as the machines phase leaves it after creating every host of `spec`."""
    p = plan(spec, {})
    return {"hosts": {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "etcd": h.etcd,
                               "address": h.address, BOOT: boot_record(spec, h, p.desired, b"config")}
                      for h in p.desired}}


def changes_for(before: dict, after: dict) -> dict:
    state = recorded(parse_spec(before))
    spec = parse_spec(after)
    return host_changes(spec, state, plan(spec, state))


def test_same_spec_keeps_every_host():
    result = changes_for(BASE, BASE)
    assert len(result) == 5 and {c.action for c in result.values()} == {KEEP}


def test_api_server_name_updates_masters_in_place_and_moves_workers_endpoint():
    result = changes_for(BASE, mutate({"kubernetes": {"api_server_names": ["api.example.org"]}}))
    masters = {n: c for n, c in result.items() if "masters" in n}
    assert {c.action for c in masters.values()} == {UPDATE}
    assert [f.field for f in masters["demo-masters-0"].fields] == ["kubernetes.api_server_names"]
    worker = result["demo-workers-0"]
    assert worker.action == UPDATE
    assert {f.field for f in worker.fields} == {"cluster.api_endpoint", "kubernetes.api_server_names"}
    assert not any(f.forces_replacement for c in result.values() for f in c.fields)


def test_os_change_forces_replacement_of_every_host():
    result = changes_for(BASE, mutate({"os": {"family": "fedora-coreos"}}))
    assert {c.action for c in result.values()} == {REPLACE}
    change = result["demo-workers-1"]
    assert [f.field for f in change.fields if f.forces_replacement] == ["os.family"]
    assert "os.family (forces replacement)" in change.reason


def test_pool_size_replaces_only_that_pool_and_labels_update():
    after = mutate({"pools[1].size": "big", "pools[0].labels": {"tier": "control"}})
    result = changes_for(BASE, after)
    assert {result[n].action for n in result if "workers" in n} == {REPLACE}
    assert [f.field for f in result["demo-workers-0"].fields] == ["pools[workers].size"]
    assert {result[n].action for n in result if "masters" in n} == {UPDATE}
    assert [f.field for f in result["demo-masters-2"].fields] == ["pools[masters].labels"]


def test_worker_count_change_touches_no_running_host():
    result = changes_for(BASE, mutate({"pools[1].count": 4, "pools[1].max": 5}))
    assert {c.action for c in result.values()} == {KEEP}


def test_mixed_change_is_replace_and_names_every_field():
    result = changes_for(BASE, mutate({"os": {"channel": "beta"}, "kubernetes": {"version": "1.34.0"}}))
    change = result["demo-masters-0"]
    assert change.action == REPLACE
    assert [(f.field, f.forces_replacement) for f in change.fields] == [
        ("kubernetes.version", False), ("os.channel", True)]
    doc = change.to_json()
    assert doc["forces_replacement"] == ["os.channel"]
    assert doc["fields"][0] == {"field": "kubernetes.version", "old": "1.33.4", "new": "1.34.0",
                                "forces_replacement": False}


def test_state_written_before_boot_records_is_unknown_not_a_change():
    spec = parse_spec(BASE)
    state = recorded(spec)
    for entry in state["hosts"].values():
        del entry[BOOT]
    result = host_changes(spec, state, plan(spec, state))
    assert {c.action for c in result.values()} == {UNKNOWN}
    assert "older provision" in result["demo-masters-0"].reason


def test_field_missing_from_an_older_record_is_no_change():
    old = {"os.family": "flatcar"}
    assert compare_fields(old, {"os.family": "flatcar", "os.new_field": 1}) == ()
    assert [c.field for c in compare_fields(old, {"os.family": "fedora-coreos"})] == ["os.family"]


def test_forcing_table():
    assert forces_replacement("provider.instance_type") and forces_replacement("os.config")
    assert forces_replacement("pools[w].size") and not forces_replacement("pools[w].labels")
    assert forces_replacement("ssh.user") and not forces_replacement("ssh.authorized_keys")
    assert not forces_replacement("kubernetes.version") and not forces_replacement("pki.leaf_days")


def write_spec(tmp_path, data: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_cli_shows_update_and_replace_with_fields(cli, tmp_path):
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    store = LocalStateStore(spec.name, state_dir)
    store.write(recorded(spec))
    changed = mutate({"kubernetes": {"api_server_names": ["api.example.org"]}, "pools[1].size": "big"})
    path = write_spec(tmp_path, changed)
    result = cli("plan", path, "--state-dir", state_dir, "-o", "json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["ok"] is True and doc["cluster"] == "demo" and doc["state"] == str((state_dir / "demo").absolute())
    assert doc["changes"]["demo-masters-1"]["action"] == "update"
    assert doc["changes"]["demo-workers-1"]["action"] == "replace"
    assert doc["changes"]["demo-workers-1"]["forces_replacement"] == ["pools[workers].size"]
    text = cli("plan", path, "--state-dir", state_dir)
    assert text.code == 0
    words = " ".join(text.out.split())  # a table in a pipe wraps its last column
    assert "(of those kept: 2 replace, 3 update)" in words
    assert "replace demo-workers-0 workers worker 10.250.0.13 pools[workers].size (forces replacement);" in words
    assert "update demo-masters-0 masters master 10.250.0.10 yes kubernetes.api_server_names" in words
    # a saved plan carries the same per-host changes, for review before `up --plan`
    saved = tmp_path / "cluster.plan"
    assert cli("plan", path, "--state-dir", state_dir, "--out", saved).code == 0
    kept = json.loads(saved.read_text())["changes"]
    assert kept["demo-workers-1"]["action"] == "replace" and kept["demo-masters-1"]["action"] == "update"


def test_up_says_per_host_what_its_rollout_does_and_warns_when_the_phases_leave_it_out(cli, tmp_path):
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    LocalStateStore(spec.name, state_dir).write(recorded(spec))
    path = write_spec(tmp_path, mutate({"os": {"channel": "beta"}}))
    result = cli("up", path, "--state-dir", state_dir, "-o", "json")  # no terminal: prints the plan
    assert result.code == 0, result.err
    assert json.loads(result.out)["applied"] is False
    assert not [line for line in result.err.splitlines() if line.startswith("warning:")]
    said = [line for line in result.err.splitlines() if "replacement (os.channel" in line]
    assert len(said) == 5
    assert "demo-masters-0: replacement (os.channel (forces replacement); destroy before create)" in said[0]
    assert "demo-workers-1: replacement (os.channel (forces replacement); create before destroy)" in said[-1]
    result = cli("up", path, "--state-dir", state_dir, "--until", "render", "-o", "json")
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 5
    assert warnings[0] == ("warning: demo-masters-0: needs replacement (os.channel (forces replacement); destroy "
                           "before create); the "
                           "phases chosen leave out `rollout`, so the host stays as it is (see `provision plan`)")

def test_plan_after_pki_rotate_lists_running_hosts_as_in_place_updates(cli, tmp_path):
    """`pki rotate` changes no spec field, only the configs hosts would render now: `plan` (text
    and json) says update, with rollout's reason, for each host `up` would update in place; before
    the rotation, the same state plans keep everywhere."""
    from provision.render import INDEX
    from provision.rollout import CONFIG_CHANGED
    from tests.test_convergence import rendered_context
    ctx, _ = rendered_context(tmp_path)
    index = json.loads(ctx.store.read_blob("rendered/" + INDEX))["hosts"]
    current = plan(ctx.spec, ctx.state)
    ctx.state["hosts"] = {
        h.name: {"pool": h.pool, "role": h.role, "index": h.index, "etcd": h.etcd, "address": h.address,
                 BOOT: boot_record(ctx.spec, h, current.desired,
                                   ctx.store.read_blob("rendered/" + index[h.name]["config"]))}
        for h in current.desired}
    ctx.store.write(ctx.state)
    names = sorted(ctx.state["hosts"])
    state_dir = ctx.store.workdir.parent
    spec_path = tmp_path / "cluster.yaml"  # what rendered_context wrote

    def planned() -> dict:
        result = cli("plan", spec_path, "--state-dir", state_dir, "-o", "json")
        assert result.code == 0, result.err
        return json.loads(result.out)["changes"]

    assert {n: c["action"] for n, c in planned().items()} == {n: "keep" for n in names}
    rotated = cli("pki", "rotate", spec_path, "--state-dir", state_dir)
    assert rotated.code == 0, rotated.err
    after = planned()
    assert {n: c["action"] for n, c in after.items()} == {n: "update" for n in names}
    assert all(c["because"] == CONFIG_CHANGED and c["fields"] == [] for c in after.values())
    text = cli("plan", spec_path, "--state-dir", state_dir)
    assert text.code == 0
    words = " ".join(text.out.split())
    assert f"(of those kept: {len(names)} update)" in words
