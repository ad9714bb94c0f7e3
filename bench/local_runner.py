"""What the local-provider benchmarks (P2/P4, P6) share: running `provision` as a user does
(a new process, `-o json`, start-up included) with its wall and CPU seconds and its phases'
own seconds, a spec for a throw-away local cluster, and dropping a cluster's convergence
records (the baseline: every host bootstrapped again). Not a benchmark itself (run.py runs
`bench_*.py` only)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

PHASES: dict[str, dict[str, float]] = {}  # step -> seconds per phase (from -o json)
CPU: dict[str, float] = {}  # step -> CPU seconds of provision and what it started


def compiled_env() -> dict[str, str]:
    """The environment with bytecode caching on, as an installed package runs (a shell with
    PYTHONDONTWRITEBYTECODE set would otherwise time CPython compiling every module on each
    run); the cache goes to a folder of its own, not into the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "provision-bench-pycache")
    return env


def provision(*args: object, step: str | None = None) -> float:
    """Seconds `provision ARGS` took (its phases' own seconds and its CPU seconds kept under
    `step`); raises on failure (with its last error lines)."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "provision", *map(str, args), "-o", "json"], capture_output=True,
                          text=True, cwd=REPO, timeout=1800, env=compiled_env())
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if step:
        CPU[step] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"provision {' '.join(map(str, args[:2]))} failed: {proc.stderr[-2000:]}")
    if step:
        try:
            PHASES[step] = json.loads(proc.stdout).get("seconds") or {}
        except ValueError:
            pass
    return seconds


def local_spec(folder: Path, prefix: str, masters: int, workers: int, etcd_count: int,
               max_workers: int) -> tuple[Path, str]:
    """A spec file in `folder` for a local cluster with a unique name and a free subnet:
    `masters` masters (the first `etcd_count` carry etcd) and one pool `workers`."""
    sys.path.insert(0, str(REPO))
    from tests.local.conftest import free_subnet, unique_name
    name = unique_name(prefix)
    doc = yaml.safe_load((REPO / "examples/local.yaml").read_text())
    doc.update(name=name, etcd={"count": etcd_count, "placement": "masters"},
               pools=[{"name": "masters", "role": "master", "count": masters},
                      {"name": "workers", "role": "worker", "count": workers, "min": 1, "max": max_workers}])
    doc["provider"]["subnet"] = free_subnet()
    doc.pop("headroom", None)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, name


def drop_records(state_dir: Path, name: str) -> None:
    """Forget what converged on every host of cluster `name`."""
    path = state_dir / name / "state.json"
    doc = json.loads(path.read_text())
    doc.pop("convergence", None)
    path.write_text(json.dumps(doc))
