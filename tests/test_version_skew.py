"""Kubernetes version changes against the version-skew policy: a table, and the CLI refusing."""
from __future__ import annotations

import json

import pytest

from provision.changes import BOOT, boot_record
from provision.plan import plan
from provision.spec import parse_spec
from provision.state import LocalStateStore
from provision.version_skew import check_new_kubelets, check_version_change, recorded_versions

from tests.spec.test_validation import BASE, mutate
from tests.test_changes import write_spec

# (API servers now, kubelets now, wanted, allowed, order or a piece of the refusal)
TABLE = [
    ("same version", ["1.33.4"], ["1.33.4", "1.33.4"], "1.33.4", True, ()),
    ("patch upgrade", ["1.33.4"], ["1.33.4"], "1.33.9", True, ("control plane", "kubelets")),
    ("patch downgrade", ["1.33.4"], ["1.33.4"], "1.33.1", True, ("kubelets", "control plane")),
    ("one minor up", ["1.33.4"], ["1.33.4"], "1.34.0", True, ("control plane", "kubelets")),
    ("v prefix", ["1.33.4"], ["1.33.4"], "v1.34.1", True, ("control plane", "kubelets")),
    ("two minors up", ["1.33.4"], ["1.33.4"], "1.35.0", False, "one minor version at a time: first to 1.34.x"),
    ("finish a partial upgrade", ["1.33.4", "1.34.0"], ["1.33.4", "1.34.0"], "1.34.0", True,
     ("control plane", "kubelets")),
    ("past the newest of mixed API servers", ["1.33.4", "1.34.0"], ["1.33.4"], "1.35.0", False, "first to 1.34.x"),
    ("kubelets three minors behind after it", ["1.33.0"], ["1.33.0", "1.31.2"], "1.34.0", True,
     ("control plane", "kubelets")),
    ("kubelets four minors behind after it", ["1.33.0"], ["1.33.0", "1.30.2"], "1.34.0", False,
     "more than 3 minor versions behind"),
    ("one minor down", ["1.33.4"], ["1.33.4"], "1.32.9", True, ("kubelets", "control plane")),
    ("two minors down", ["1.33.4"], ["1.33.4"], "1.31.0", False, "at most one minor version (to 1.32.x)"),
    ("major change", ["1.33.4"], ["1.33.4"], "2.0.0", False, "another major version"),
    ("not a version", ["1.33.4"], ["1.33.4"], "latest", False, "not a Kubernetes release"),
    ("kubelets catch up", ["1.33.4"], ["1.33.4", "1.32.0"], "1.33.4", True, ("kubelets",)),
    ("nothing recorded", [], [], "1.40.0", True, ()),
]


@pytest.mark.parametrize("apis,kubelets,wanted,allowed,expect", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_version_change_table(apis, kubelets, wanted, allowed, expect):
    check = check_version_change(apis, kubelets, wanted)
    assert check.allowed is allowed, check.reason
    if allowed:
        assert check.order == expect and check.reason == ""
    else:
        assert check.reason.startswith("kubernetes.version: ") and expect in check.reason


def recorded_state(spec) -> dict:
    p = plan(spec, {})
    return {"hosts": {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "etcd": h.etcd,
                               "address": h.address, BOOT: boot_record(spec, h, p.desired, None)}
                      for h in p.desired}}


def test_recorded_versions_split_masters_from_kubelets():
    state = recorded_state(parse_spec(BASE))
    state["hosts"]["demo-workers-0"][BOOT]["fields"]["kubernetes.version"] = "1.32.1"
    state["hosts"]["demo-workers-1"].pop(BOOT)  # made before boot records: not counted
    apis, kubelets = recorded_versions(state)
    assert apis == ["1.33.4"] * 3
    assert sorted(kubelets) == ["1.32.1"] + ["1.33.4"] * 3


@pytest.mark.parametrize("verb", ["plan", "up"])
def test_refused_version_change_is_exit_2_and_changes_nothing(cli, tmp_path, verb):
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    store = LocalStateStore(spec.name, state_dir)
    store.write(recorded_state(spec))
    before = store.state_file.read_bytes()
    path = write_spec(tmp_path, mutate({"kubernetes": {"version": "1.35.0"}}))
    args = ["--yes"] if verb == "up" else []
    result = cli(verb, path, "--state-dir", state_dir, *args, "-o", "json")
    assert result.code == 2
    doc = json.loads(result.out)
    assert doc["ok"] is False and doc["exit_code"] == 2
    assert doc["errors"][0].startswith("kubernetes.version: 1.35.0 is more than one minor version above")
    assert "Traceback" not in result.err
    assert store.state_file.read_bytes() == before
    assert sorted(p.name for p in (state_dir / "demo").iterdir()) == ["state.json"]
    allowed = cli("plan", write_spec(tmp_path, mutate({"kubernetes": {"version": "1.34.2"}}), "ok.yaml"),
                  "--state-dir", state_dir, "-o", "json")
    assert allowed.code == 0, allowed.err
    doc = json.loads(allowed.out)
    assert doc["kubernetes_version_order"] == ["control plane", "kubelets"]
    assert doc["changes"]["demo-workers-0"]["action"] == "update"


@pytest.mark.parametrize("apis,wanted,new,allowed", [
    (["1.33.4"], "1.34.0", ["w-2"], False),   # a new kubelet a minor ahead of the API server
    (["1.33.4"], "1.33.9", ["w-2"], True),    # a patch ahead: same minor
    (["1.33.4"], "1.34.0", [], True),         # nothing new: running hosts stay as they are
    (["1.33.4", "1.34.0"], "1.34.0", ["w-2"], False),  # still older than one API server
    (["1.34.0"], "1.33.4", ["w-2"], True),    # older kubelets are fine
    ([], "1.34.0", ["w-0"], True),            # a new cluster
])
def test_new_kubelets_never_newer_than_the_api_server(apis, wanted, new, allowed):
    check = check_new_kubelets(apis, wanted, new)
    assert check.allowed is allowed
    if not allowed:
        assert check.reason.startswith(f"kubernetes.version: {wanted} would start kubelets on new hosts (w-2)")


def test_upgrade_that_adds_workers_is_refused_by_plan(cli, tmp_path):
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    LocalStateStore(spec.name, state_dir).write(recorded_state(spec))
    path = write_spec(tmp_path, mutate({"kubernetes": {"version": "1.34.2"}, "pools[1].count": 3}))
    result = cli("plan", path, "--state-dir", state_dir)
    assert result.code == 2
    assert "kubernetes.version: 1.34.2 would start kubelets on new hosts (demo-workers-2)" in result.err
    assert "Traceback" not in result.err


def test_scale_refuses_new_workers_newer_than_the_api_server(cli, tmp_path):
    state_dir = tmp_path / "state"
    spec = parse_spec(BASE)
    store = LocalStateStore(spec.name, state_dir)
    store.write(recorded_state(spec))
    before = store.state_file.read_bytes()
    path = write_spec(tmp_path, mutate({"kubernetes": {"version": "1.34.2"}}))
    result = cli("scale", path, "workers", "3", "--yes", "--state-dir", state_dir)
    assert result.code == 2
    assert "kubernetes.version: 1.34.2 would start kubelets on new hosts (demo-workers-2)" in result.err
    assert store.state_file.read_bytes() == before
