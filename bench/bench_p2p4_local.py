"""P2 and P4 (issue 11) on the local provider: add 1 worker (`scale` +1) and a no-op `up`, on
clusters of 3 and 21 hosts (1 master carrying etcd, the rest workers; sizes from
$BENCH_LOCAL_SIZES: `make bench-large` sets "3,21,101" for P2's 101-host case), each timed as a user runs it (`python -m provision`, so
start-up counts).

Beside each, in the same run, its baseline: the same verb when every host is bootstrapped
again, as before convergence records existed: a no-op `up --verify`, and `scale` +1 after the
cluster's convergence records were dropped from state. Ratios: largest / smallest cluster
(goal <= 1.2) and baseline / targeted per size. Needs root (network namespaces).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_runner import CPU, PHASES, REPO, drop_records, local_spec, provision  # noqa: E402

SIZES = [int(s) for s in os.environ.get("BENCH_LOCAL_SIZES", "3,21").split(",") if s.strip()]


def cluster_spec(folder: Path, hosts: int) -> tuple[Path, str]:
    return local_spec(folder, f"bn{hosts}x", masters=1, workers=hosts - 1, etcd_count=1, max_workers=hosts + 1)


def measure(hosts: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    spec, name = cluster_spec(folder, hosts)
    state_dir = folder / "state"
    common = ("--state-dir", state_dir)
    out: dict[str, float] = {}
    try:
        print(f"  {hosts} hosts: up ...", file=sys.stderr)
        out["up"] = provision("up", spec, "--yes", *common)
        out["noop_up"] = provision("up", spec, "--yes", *common, step=f"{hosts}_noop_up")
        out["noop_up_baseline"] = provision("up", spec, "--yes", "--verify", *common)
        workers = hosts - 1
        out["add_1"] = provision("scale", spec, "workers", workers + 1, "--yes", *common, step=f"{hosts}_add_1")
        provision("scale", spec, "workers", workers, "--yes", *common)
        drop_records(state_dir, name)
        out["add_1_baseline"] = provision("scale", spec, "workers", workers + 1, "--yes", *common)
    finally:
        try:
            provision("down", spec, "--yes", *common)
        except RuntimeError as err:
            print(f"  {err}", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def run() -> dict:
    title = "P2/P4: add 1 worker and no-op up on local clusters (seconds, start-up included)"
    if os.geteuid() != 0:
        return {"name": title, "figures": {"skipped": "needs root (network namespaces)"}, "ratios": {}}
    sys.path.insert(0, str(REPO))
    results = {n: measure(n) for n in SIZES}
    figures: dict[str, object] = {}
    for n, r in results.items():
        for key, value in r.items():
            figures[f"{n}_hosts_{key}"] = round(value, 2)
    small, large = min(results), max(results)
    ratios: dict[str, object] = {}
    # P2's goal is on the largest cluster against the smallest (101 vs 3 when 101 is measured),
    # P4's on 21 hosts against 3; every size is shown against the smallest.
    for n in sorted(results)[1:]:
        p2 = " (P2 goal <= 1.2)" if n == large else ""
        p4 = " (P4 goal <= 1.2)" if (n, small) == (21, 3) else ""
        ratios[f"add_1 {n}/{small} hosts{p2}"] = round(results[n]["add_1"] / results[small]["add_1"], 2)
        ratios[f"add_1_baseline {n}/{small} hosts"] = round(
            results[n]["add_1_baseline"] / results[small]["add_1_baseline"], 2)
        ratios[f"noop_up {n}/{small} hosts{p4}"] = round(results[n]["noop_up"] / results[small]["noop_up"], 2)
        ratios[f"noop_up_baseline {n}/{small} hosts"] = round(
            results[n]["noop_up_baseline"] / results[small]["noop_up_baseline"], 2)
    for n, r in results.items():
        ratios[f"add_1 baseline/targeted at {n} hosts"] = round(r["add_1_baseline"] / r["add_1"], 2)
        ratios[f"noop_up baseline/targeted at {n} hosts"] = round(r["noop_up_baseline"] / r["noop_up"], 2)
    # CPU seconds of provision itself: the local provider's hosts are processes on this machine,
    # so a larger cluster (and other users) slow the wall clock of the same work; CPU seconds
    # show what provision's own work costs.
    for step, cpu in sorted(CPU.items()):
        figures[f"{step} cpu_s"] = round(cpu, 2)
    for n in sorted(results)[1:]:
        for step in ("noop_up", "add_1"):
            if f"{small}_{step}" in CPU and f"{n}_{step}" in CPU:
                ratios[f"{step} cpu {n}/{small} hosts"] = round(CPU[f"{n}_{step}"] / CPU[f"{small}_{step}"], 2)
    for step, seconds in sorted(PHASES.items()):  # where the time of a no-op goes, per phase
        slow = sorted(seconds.items(), key=lambda kv: -kv[1])[:4]
        if not slow:  # the verb reports no per-phase seconds (scale)
            continue
        figures[f"{step} slowest phases (s)"] = ", ".join(f"{k} {v:.1f}" for k, v in slow)
    return {"name": title, "figures": figures, "ratios": ratios}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
