"""`provision up` SIGKILLed at every named point of every phase (provision/faults.py), then
re-run to convergence: nothing left over (namespaces, processes, hosts) and nothing lost (the
CA made by the first run, every recorded host).

The kills are chained on one cluster: each run is killed at its point, and the next run goes
through every earlier phase again (the killed one included) before it reaches its own point, so
every phase resumes from every kill. A marker file written just before each kill says which
point fired; a run that ends without being killed fails the test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from provision import faults
from provision.phases import PHASE_NAMES
from provision.providers.local import net as local_net

from .conftest import (REPO, cluster_namespaces, example_spec, free_subnet, needs_root, processes_mentioning,
                       provision, unique_name)
from .test_cluster import no_duplicates

# Phases that do nothing on the local provider (no cloud load balancer; addresses are planned):
# their points are reached only on other providers, so a local run cannot fire them.
# `rollout` acts only when a spec change reaches running hosts: test_rollout kills it mid-way.
IDLE_ON_LOCAL = {"endpoint", "hosts", "rollout"}
KILL_POINTS = [(phase, point) for phase in PHASE_NAMES if phase in faults.POINTS and phase not in IDLE_ON_LOCAL
               for point in faults.POINTS[phase]]


def up_with_fault(spec: Path, state_dir: Path, fault: str, marker: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{faults.ENV: fault, faults.MARKER_ENV: str(marker)})
    return subprocess.run([sys.executable, "-m", "provision", "up", str(spec), "--yes", "--state-dir", str(state_dir)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_every_phase_lists_its_points():
    """Every phase that acts has named points (validate only reads the spec)."""
    assert set(faults.POINTS) == set(PHASE_NAMES) - {"validate"}
    assert all(faults.FIRST_WRITE in points for points in faults.POINTS.values())


@pytest.mark.slow
@pytest.mark.root
@needs_root
def test_killed_at_every_point_of_every_phase_then_converges(tmp_path):
    name = unique_name("flt")
    spec = example_spec(tmp_path, name, free_subnet())
    state_dir = tmp_path / "state"
    workdir = state_dir / name
    marker = tmp_path / "fired"
    fired, ca = [], None
    try:
        for phase, point in KILL_POINTS:
            fault = f"{phase}:{point}"
            marker.unlink(missing_ok=True)
            proc = up_with_fault(spec, state_dir, fault, marker)
            assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-2000:])
            assert marker.read_text() == f"{fault}\n"
            fired.append(fault)
            if ca is None and (workdir / "pki" / "ca.crt").exists():
                ca = (workdir / "pki" / "ca.crt").read_bytes()
        assert fired == [f"{p}:{q}" for p, q in KILL_POINTS]
        final = provision("up", spec, "--yes", "--state-dir", state_dir, "-o", "json")
        assert final.returncode == 0, final.stderr
        # nothing lost: the CA of the first run is the CA of the cluster
        assert ca is not None and (workdir / "pki" / "ca.crt").read_bytes() == ca
        hosts = sorted(f"{name}-{h}" for h in ("masters-0", "masters-1", "masters-2", "workers-0", "workers-1"))
        state = json.loads((workdir / "state.json").read_text())
        assert sorted(state["hosts"]) == hosts
        # nothing left over: one namespace per host, one process per unit, one mirror
        assert cluster_namespaces(name) == sorted(f"provision.{name}.{h}" for h in hosts)
        no_duplicates(name, workdir)
        status = provision("status", spec, "--state-dir", state_dir, "-o", "json")
        assert status.returncode == 0, status.stdout
        report = json.loads(status.stdout)
        assert report["healthy"] and report["orphans"] == [] and report["missing"] == []
        # and a further run has nothing to do
        again = provision("up", spec, "--yes", "--state-dir", state_dir, "-o", "json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["changed"] == []
        down = provision("down", spec, "--yes", "--state-dir", state_dir)
        assert down.returncode == 0, down.stderr
        assert cluster_namespaces(name) == []
        assert processes_mentioning(str(workdir)) == []
        assert local_net.links_by_alias(name) == {}
    finally:
        if workdir.exists():
            provision("down", spec, "--yes", "--state-dir", state_dir)
        from provision.providers import get_provider
        from provision.spec import load_spec
        get_provider(load_spec(spec), workdir).teardown()
