"""`provision headroom` and `provision headroom install` from the command line."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.real import require

from provision.headroom.policy import HostLoad, Memory, Observation, Settings, decide, remember
from provision.spec import load_spec
from provision.state import LocalStateStore

SPEC = """\
name: {name}
provider: {{name: local, subnet: 10.252.0.0/24}}
etcd: {{count: 1}}
pools:
  - {{name: masters, role: master, count: 1}}
  - {{name: workers, role: worker, count: 1, min: 1, max: 3}}
"""
HEADROOM = "headroom: {pool: workers, interval: 30s, policies: [containers, utilization]}\n"


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(SPEC.format(name="hrcli") + HEADROOM)
    return path


def test_without_headroom_section_is_a_user_error(cli, tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(SPEC.format(name="plain"))
    for args in ([path, "--once"], ["install", path]):
        result = cli("headroom", *args, "--state-dir", tmp_path / "s")
        assert result.code == 2 and "headroom" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "s").exists()  # nothing created


def test_bad_arguments_exit_2(cli, spec_file):
    assert cli("headroom", "install").code == 2
    assert cli("headroom", "frobnicate", spec_file).code == 2
    assert cli("headroom", spec_file, "--timer", "at").code == 2


def test_explain_shows_the_last_decisions_and_why(cli, spec_file, tmp_path):
    state_dir = tmp_path / "state"
    result = cli("headroom", spec_file, "--explain", "--state-dir", state_dir)
    assert result.code == 0 and "no headroom decision recorded yet" in result.out
    spec = load_spec(spec_file)
    store = LocalStateStore(spec.name, state_dir)
    hosts = (HostLoad("hrcli-masters-0", "masters", "master", etcd=True),
             HostLoad("hrcli-workers-0", "workers", "worker", containers=8, cpu=0.9, memory=0.2))
    d = decide(Settings.from_spec(spec), Observation(at=1_800_000_000.0, hosts=hosts), Memory())
    state = store.read()
    state["headroom"] = remember({}, d)
    store.write(state)
    result = cli("headroom", spec_file, "--explain", "--state-dir", state_dir)
    assert result.code == 0
    assert "2027-01-15 08:00:00Z add: 1 -> 2; containers wants 2" in result.out
    assert "containers: 2 hosts; HOT" in result.out and "utilization: 2 hosts; busy: mean CPU 0.90" in result.out
    result = cli("headroom", spec_file, "--explain", "--state-dir", state_dir, "-o", "json")
    doc = json.loads(result.out)
    assert doc["decisions"][0]["inputs"]["containers"] == 8 and doc["decisions"][0]["action"] == "add"


def test_once_before_up_fails_clearly(cli, spec_file, tmp_path):
    result = cli("headroom", spec_file, "--once", "--state-dir", tmp_path / "state")
    assert result.code == 1 and "provision up" in result.err and "Traceback" not in result.err


def test_install_prints_a_cron_line(cli, spec_file, tmp_path):
    result = cli("headroom", "install", spec_file, "--state-dir", tmp_path / "state")
    assert result.code == 0
    line = [l for l in result.out.splitlines() if l and not l.startswith("#")][0]
    fields = line.split()
    assert fields[:6] == ["*", "*", "*", "*", "*", "root"]
    assert f"headroom {spec_file} --once" in line and f"--state-dir {tmp_path / 'state'}" in line


def test_install_cron_every_few_minutes_for_long_intervals(cli, tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(SPEC.format(name="slow") + "headroom: {pool: workers, interval: 5m}\n")
    result = cli("headroom", "install", path)
    assert "*/5 * * * * root" in result.out


def test_install_write_systemd_units_that_verify(cli, spec_file, tmp_path, monkeypatch):
    target = tmp_path / "units"
    monkeypatch.setenv("PROVISION_SYSTEMD_DIR", str(target))
    result = cli("headroom", "install", spec_file, "--timer", "systemd", "--write")
    assert result.code == 0 and "systemctl daemon-reload" in result.out
    service, timer = target / "provision-headroom-hrcli.service", target / "provision-headroom-hrcli.timer"
    assert "--once" in service.read_text() and "OnUnitActiveSec=30s" in timer.read_text()
    analyze = require("systemd-analyze")
    check = subprocess.run([analyze, "verify", str(service), str(timer)], capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check.stderr


def test_install_write_cron_file(cli, spec_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_CRON_DIR", str(tmp_path / "cron.d"))
    result = cli("headroom", "install", spec_file, "--write")
    written = tmp_path / "cron.d" / "provision-headroom-hrcli"
    assert result.code == 0 and "--once" in written.read_text()
    assert (written.stat().st_mode & 0o777) == 0o644


def test_without_once_it_loops_at_the_interval(cli, spec_file, tmp_path, monkeypatch):
    import provision.verbs.headroom as verb
    from provision.headroom.reconcile import Outcome

    calls, sleeps = [], []

    class Edges:
        def __init__(self, *a, **kw):
            pass

        def etcd(self, state):
            return None

        observe = None

    class Stop(Exception):
        pass

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop()

    import provision.headroom.reconcile as reconcile_module
    from provision.app import App
    from provision.ui import UI

    made = []
    monkeypatch.setattr(reconcile_module, "ClusterEdges", lambda *a, **kw: made.append(a) or Edges())
    monkeypatch.setattr(reconcile_module, "EtcdReconcileLock", lambda *a, **kw: None)
    monkeypatch.setattr(reconcile_module, "reconcile", lambda *a, **kw: calls.append(kw) or Outcome("decided"))
    monkeypatch.setattr(verb.time, "sleep", fake_sleep)
    with pytest.raises(Stop):
        verb.run(App(ui=UI(verbosity=-1), state_dir=str(tmp_path), spec_path=str(spec_file)),
                 once=False, dry_run=False, explain=False)
    assert len(calls) == 3 and sleeps == [30.0, 30.0, 30.0]
    assert len(made) == 1  # the observer and actuator (its connections) last from pass to pass
    assert all(not kw["dry_run"] for kw in calls)


def test_history_prints_every_decision_over_time_and_that_each_replays(cli, spec_file, tmp_path):
    state_dir = tmp_path / "state"
    result = cli("headroom", "history", spec_file, "--state-dir", state_dir)
    assert result.code == 0 and "no headroom decision recorded yet" in result.out
    spec = load_spec(spec_file)
    store = LocalStateStore(spec.name, state_dir)
    settings = Settings.from_spec(spec)
    memory, headroom = Memory(), {}
    for i, containers in enumerate([8, 8, 8, 20]):
        hosts = (HostLoad("hrcli-masters-0", "masters", "master", etcd=True),
                 HostLoad("hrcli-workers-0", "workers", "worker", containers=containers, cpu=0.9, memory=0.2))
        d = decide(settings, Observation(at=1_800_000_000.0 + 60 * i, hosts=hosts), memory)
        memory, headroom = d.memory, remember(headroom, d)
    state = store.read()
    state["headroom"] = headroom
    store.write(state)
    result = cli("headroom", "history", spec_file, "--state-dir", state_dir, "-o", "json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)["decisions"]
    assert [r["containers"] for r in rows] == [8, 8, 8, 20]
    assert all(r["replays"] is True for r in rows) and rows[0]["capacity"] == 8
    text = cli("headroom", "history", spec_file, "--state-dir", state_dir)
    assert text.code == 0 and text.out.count("2027-01-15") == 4 and "replays" in text.out
    # a record tampered with no longer replays to what it says
    state = store.read()
    state["headroom"]["decisions"][-1]["desired"] = 99
    store.write(state)
    rows = json.loads(cli("headroom", "history", spec_file, "--state-dir", state_dir, "-o", "json").out)["decisions"]
    assert rows[-1]["replays"] is False


def test_history_plot_draws_png_or_svg_deterministically_and_refuses_other_files(cli, spec_file, tmp_path):
    state_dir = tmp_path / "state"
    spec = load_spec(spec_file)
    store = LocalStateStore(spec.name, state_dir)
    memory, headroom = Memory(), {}
    for i, containers in enumerate([4, 8, 8, 20, 20, 3]):
        hosts = (HostLoad("hrcli-masters-0", "masters", "master", etcd=True),
                 HostLoad("hrcli-workers-0", "workers", "worker", containers=containers, cpu=0.5, memory=0.2))
        d = decide(Settings.from_spec(spec), Observation(at=1_800_000_000.0 + 60 * i, hosts=hosts), memory)
        memory, headroom = d.memory, remember(headroom, d)
    state = store.read()
    state["headroom"] = headroom
    store.write(state)
    png, svg, svg2 = tmp_path / "h.png", tmp_path / "h.svg", tmp_path / "again.svg"
    for target in (png, svg, svg2):
        result = cli("headroom", "history", spec_file, "--plot", target, "--state-dir", state_dir)
        assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert svg.read_bytes().startswith(b"<?xml") and b"demand (containers)" in svg.read_bytes()
    assert svg.read_bytes() == svg2.read_bytes()  # same records, same picture
    bad = cli("headroom", "history", spec_file, "--plot", tmp_path / "h.gif", "--state-dir", state_dir)
    assert bad.code == 2 and "--plot" in bad.err and not (tmp_path / "h.gif").exists()
    assert cli("headroom", spec_file, "--plot", png, "--state-dir", state_dir).code == 2
