"""provision.api: the CLI's work driven from Python on the local provider's spec (no root is
needed up to `render`): typed results, typed errors with field paths, progress as events, and
nothing printed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provision import api
from provision.errors import ActionError, UserError
from provision.spec import SpecError

from .conftest import run_cli

REPO = Path(__file__).resolve().parent.parent


def files_of(folder: Path) -> dict[str, int]:
    """{relative path: mode} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def local_spec(tmp_path: Path, **changes) -> Path:
    doc = yaml.safe_load((REPO / "examples/local.yaml").read_text())
    doc["name"] = "apitest"
    doc.update(changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROVISION_STATE_DIR", raising=False)
    return api.Cluster.load(local_spec(tmp_path), state_dir=tmp_path / "state")


def test_validate_returns_the_typed_spec(tmp_path):
    spec = api.validate(local_spec(tmp_path))
    assert (spec.name, spec.provider.name) == ("apitest", "local")
    assert [(p.name, p.role, p.count) for p in spec.pools] == [("masters", "master", 3), ("workers", "worker", 2)]


def test_an_invalid_spec_raises_spec_error_with_field_paths(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    path = local_spec(tmp_path, network={"pod_cidr": "nope", "service_cidr": "10.3.0.0/24"},
                      pools=[{"name": "masters", "role": "master", "count": 3}, {"name": "workers", "role": "wrker"}])
    with pytest.raises(SpecError) as raised:
        api.Cluster.load(path, state_dir=tmp_path / "state")
    err = raised.value
    assert isinstance(err, UserError) and err.exit_code == 2
    assert any(line.startswith(f"{path}: network.pod_cidr: must be a CIDR") for line in err.lines), err.lines
    assert any(line.startswith(f"{path}: pools[1].role:") for line in err.lines), err.lines
    assert list(tmp_path.iterdir()) == [path]  # nothing created
    assert capfd.readouterr() == ("", "")


def test_a_provider_option_problem_names_the_file_and_field(tmp_path):
    path = local_spec(tmp_path, provider={"name": "local", "subnet": "10.250.0.0/24", "bridge": "x" * 16})
    with pytest.raises(SpecError) as raised:
        api.validate(path)
    assert raised.value.lines == [f"{path}: provider.bridge: must be a network interface name (letters, digits, "
                                  "'_', '.', '-') of at most 15 characters (got 16)"]


def test_plan_creates_nothing(cluster, tmp_path):
    result = cluster.plan()
    assert [h.name for h in result.create] == [f"apitest-masters-{i}" for i in range(3)] + \
        [f"apitest-workers-{i}" for i in range(2)]
    assert result.keep == () and result.destroy == ()
    assert [h.address for h in result.create if h.etcd] == ["10.250.0.10", "10.250.0.11", "10.250.0.12"]
    assert not (tmp_path / "state").exists() and not cluster.exists()


def test_up_until_render_reports_each_phase_and_prints_nothing(cluster, tmp_path, capfd):
    events: list[api.Event] = []
    result = cluster.up(until="render", progress=events.append)
    assert capfd.readouterr() == ("", "")
    assert isinstance(result, api.UpResult)
    assert result.phases == ("validate", "endpoint", "pki", "render") and result.applied and not result.dry_run
    assert result.changed == ("pki", "render") and result.kubeconfig is None
    assert [h.name for h in result.plan.create][:1] == ["apitest-masters-0"]
    started = [(e.topic, e.index, e.total) for e in events if e.kind == "phase"]
    assert started == [("validate", 1, 4), ("endpoint", 2, 4), ("pki", 3, 4), ("render", 4, 4)]
    done = [e for e in events if e.kind == "done"]
    assert [e.topic for e in done] == ["validate", "endpoint", "pki", "render"] and all(e.seconds >= 0 for e in done)
    assert result.seconds.keys() == {"validate", "endpoint", "pki", "render"}
    # between a phase's start and its end come its own log lines
    pki_at = events.index(next(e for e in events if e.kind == "phase" and e.topic == "pki"))
    assert events[pki_at + 1].kind == "log" and events[pki_at + 1].topic == "pki"
    # state now holds the files the CLI's `up --until render` leaves, with the same modes
    made = files_of(tmp_path / "state")
    cli = run_cli("up", tmp_path / "cluster.yaml", "--yes", "--until", "render", "--state-dir", tmp_path / "cli",
                  "-q", cwd=tmp_path)
    assert cli.code == 0, cli.err
    assert made == files_of(tmp_path / "cli")
    assert {"apitest/pki/ca.crt", "apitest/rendered/apitest-masters-0.ign", "apitest/rendered/index.json"} <= made.keys()
    assert made["apitest/pki/ca.key"] == 0o600
    # a second run changes nothing, and says so
    again = cluster.up(until="render")
    assert again.changed == () and again.results["pki"] and again.phases == result.phases


def test_a_dry_run_of_a_new_cluster_writes_nothing(cluster, tmp_path):
    result = cluster.up(until="pki", dry_run=True)
    assert result.dry_run and not result.applied and result.changed == ()
    assert not (tmp_path / "state").exists()


def test_bad_arguments_raise_user_errors_naming_them(cluster, tmp_path):
    with pytest.raises(UserError, match="unknown phase 'rendr'"):
        cluster.up(until="rendr")
    with pytest.raises(UserError, match="POOL: no pool 'nope'"):
        cluster.scale("nope", 3)
    with pytest.raises(UserError, match="COUNT: 9 is outside pool 'workers'"):
        cluster.scale("workers", 9)
    assert not (tmp_path / "state").exists()


def test_read_calls_on_a_cluster_without_state(cluster, tmp_path):
    with pytest.raises(ActionError, match="cluster apitest has no state at"):
        cluster.status()
    result = cluster.down()
    assert result == api.DownResult(destroyed=(), forgotten=())
    assert not (tmp_path / "state").exists()


def test_headroom_needs_a_headroom_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster = api.Cluster.load(local_spec(tmp_path, headroom=None), state_dir=tmp_path / "state")
    with pytest.raises(UserError, match="headroom: the spec has no headroom section"):
        cluster.headroom_once()


def test_a_held_lock_raises_lock_held_and_changes_nothing(cluster, tmp_path):
    from provision.state import open_store
    other = open_store(cluster.spec, tmp_path / "state")  # as a second provision process opens it
    with other.lock("provision up cluster.yaml --yes"):
        with pytest.raises(api.LockHeld) as raised:
            cluster.up(until="render")
    assert raised.value.holder["command"] == "provision up cluster.yaml --yes"
    assert isinstance(raised.value, ActionError) and raised.value.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "state" / "apitest").iterdir()) == ["lock"]
