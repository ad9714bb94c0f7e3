"""The `pki` and `render` phases of `provision up`: runnable up to render, idempotent, and
a dry run that changes nothing."""
from __future__ import annotations

import json

from provision.phases import RunContext, run_phases, select
from provision.render import INDEX
from provision.spec import load_spec
from provision.state import open_store
from provision.ui import UI
from tests.helpers_render import SMALL_SPEC, served_artifacts, write_spec


def context(spec_path, state_dir, dry_run=False, artifacts=True):
    spec = load_spec(spec_path)
    store = open_store(spec, state_dir)
    state = store.read()
    if artifacts:
        state["artifacts"] = served_artifacts("http://10.77.0.1:8080")
        store.write(state)
    return RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1), dry_run=dry_run)


def test_phases_up_to_render_store_configs_as_secret_blobs(tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    ctx = context(path, tmp_path / "state")
    run_phases(ctx, select(until="render"))
    store = ctx.store
    index = json.loads(store.read_blob("rendered/" + INDEX))
    assert set(index["hosts"]) == {"small-masters-0", "small-workers-0", "small-workers-1"}
    assert sorted(store.list_blobs("rendered/")) == ["rendered/index.json", "rendered/pool-workers.ign",
                                                      "rendered/small-masters-0.ign"]
    assert (store.root / "rendered" / "small-masters-0.ign").stat().st_mode & 0o777 == 0o600
    assert ctx.results["render"]["configs"] == ["pool-workers.ign", "small-masters-0.ign"]
    assert ctx.results["pki"]["created"]
    # a second run changes nothing
    again = context(path, tmp_path / "state", artifacts=False)
    run_phases(again, select(until="render"))
    assert again.results["pki"]["created"] == [] and again.results["render"]["changed"] == []
    # a smaller pool drops its hosts from the index and keeps the pool config
    path.write_text(SMALL_SPEC.replace("count: 2", "count: 1"))
    third = context(path, tmp_path / "state", artifacts=False)
    run_phases(third, select(only="render"))
    assert "small-workers-1" not in json.loads(store.read_blob("rendered/" + INDEX))["hosts"]
    assert third.results["render"]["changed"] == ["index.json"]


def test_dry_run_changes_nothing(tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    ctx = context(path, tmp_path / "state", dry_run=True)
    run_phases(ctx, select(until="render"))
    assert ctx.store.list_blobs("pki/") == [] and ctx.store.list_blobs("rendered/") == []
    assert ctx.results["render"] == {"dry_run": True}


def test_cli_up_until_render(cli, tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC + "fleet:\n  enabled: false\n")
    state_dir = tmp_path / "state"
    spec = load_spec(path)
    store = open_store(spec, state_dir)
    doc = store.read()
    doc["artifacts"] = served_artifacts("http://10.77.0.1:8080")
    store.write(doc)
    result = cli("up", path, "--until", "render", "--yes", "--state-dir", state_dir, "-o", "json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["results"]["render"]["configs"] == ["pool-workers.ign", "small-masters-0.ign"]
    assert store.read_blob("rendered/small-masters-0.ign").startswith(b"{")
    assert "PRIVATE KEY" not in result.out + result.err
