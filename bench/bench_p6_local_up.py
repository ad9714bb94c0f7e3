"""P6 (issue 11) on the local provider: `provision up --until etcd` from nothing to a healthy
etcd for 3 masters carrying a 3-member etcd and 2 workers (goal < 20 s); the rest of `up`; then `scale` +1 worker (goal
< 5 s), each timed as a user runs it (`python -m provision`, start-up included).

Beside them, in the same run, their baselines: the same `up` again with `--verify` (every host
re-checked over SSH, the cost every re-run paid before convergence records), and the same +1
after the convergence records were dropped (every host bootstrapped again). `etcd healthy`
is read from the `etcd` phase's result (every member answered healthy over TLS). Needs root
(network namespaces).
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


def cluster_spec(folder: Path) -> tuple[Path, str]:
    return local_spec(folder, "bp6x", masters=3, workers=2, etcd_count=3, max_workers=4)


def phase_line(seconds: dict[str, float]) -> str:
    """`name seconds` of the phases that took 0.05 s or more, slowest first, and their sum."""
    slow = sorted(((s, n) for n, s in seconds.items() if s >= 0.05), reverse=True)
    return ", ".join(f"{n} {s:.2f}" for s, n in slow) + f" (sum {sum(seconds.values()):.2f})"


def run() -> dict:
    title = "P6: local up to healthy etcd (3 masters + 2 workers) and scale +1 (seconds, start-up included)"
    if os.geteuid() != 0:
        return {"name": title, "figures": {"skipped": "needs root (network namespaces)"}, "ratios": {}}
    sys.path.insert(0, str(REPO))
    folder = Path(tempfile.mkdtemp(prefix="provision-bench-p6-"))
    spec, name = cluster_spec(folder)
    state_dir = folder / "state"
    common = ("--state-dir", state_dir)
    figures: dict[str, object] = {}
    try:
        print("  up 3 masters + 2 workers ...", file=sys.stderr)
        up = provision("up", spec, "--yes", "--until", "etcd", *common, step="p6_up")
        doc = json.loads((state_dir / name / "state.json").read_text())
        figures["up_s (goal < 20)"] = round(up, 2)
        figures["up_rest_s (flannel .. kubeconfig)"] = round(provision("up", spec, "--yes", *common), 2)
        verify = provision("up", spec, "--yes", "--verify", *common, step="p6_verify")
        figures["up_verify_s (baseline: every host re-checked)"] = round(verify, 2)
        add = provision("scale", spec, "workers", 3, "--yes", *common, step="p6_add_1")
        figures["scale_plus_1_s (goal < 5)"] = round(add, 2)
        provision("scale", spec, "workers", 2, "--yes", *common)
        drop_records(state_dir, name)
        add_all = provision("scale", spec, "workers", 3, "--yes", *common, step="p6_add_1_baseline")
        figures["scale_plus_1_baseline_s (every host bootstrapped)"] = round(add_all, 2)
        figures["hosts"] = len(doc.get("hosts") or {})
        for step in ("p6_up", "p6_add_1"):
            figures[f"{step}_cpu_s"] = round(CPU.get(step, 0.0), 2)
        # where the seconds go, slowest phases first (start-up is the rest of the wall time)
        for step in ("p6_up", "p6_add_1"):
            figures[f"{step}_phases_s"] = phase_line(PHASES.get(step) or {})
    finally:
        try:
            provision("down", spec, "--yes", *common)
        except RuntimeError as err:
            print(f"  {err}", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    ratios = {
        "up vs goal 20 s": round(figures["up_s (goal < 20)"] / 20.0, 2),
        "scale +1 vs goal 5 s": round(figures["scale_plus_1_s (goal < 5)"] / 5.0, 2),
        "scale +1 baseline/targeted": round(figures["scale_plus_1_baseline_s (every host bootstrapped)"]
                                            / figures["scale_plus_1_s (goal < 5)"], 2),
    }
    return {"name": title, "figures": figures, "ratios": ratios}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
