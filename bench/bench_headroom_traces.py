"""The headroom policies over load traces (steady, ramp, spike, oscillation, a diurnal day),
side by side with Clocker's reactive `containers` policy as the baseline: minutes below
demand, idle host-hours and scale actions, with each policy's ratio to the baseline."""
from __future__ import annotations

import json
import time

from provision.headroom.simulate import POLICY_SETS, TRACES, run_all


def ratio(value: float, base: float) -> str:
    if base == 0:
        return "=" if value == 0 else "n/a (baseline 0)"
    return f"{value / base:.2f}"


def run() -> dict:
    t0 = time.perf_counter()
    scores = run_all()
    elapsed = time.perf_counter() - t0
    baseline = {s.trace: s for s in scores if s.policy == "containers"}
    figures, ratios = {}, {}
    for s in scores:
        key = f"{s.trace}/{s.policy}"
        figures[key] = f"below {s.minutes_below_demand} min, idle {s.idle_host_hours:.1f} host-h, " \
                       f"{s.actions} actions, {s.flaps} flaps"
        if s.policy != "containers":
            b = baseline[s.trace]
            ratios[key] = f"below x{ratio(s.minutes_below_demand, b.minutes_below_demand)}, " \
                          f"idle x{ratio(s.idle_host_hours, b.idle_host_hours)} vs containers"
    steps = sum(minutes for _, minutes in TRACES.values()) * len(POLICY_SETS)  # one decision a minute
    figures["decisions_per_second"] = round(steps / elapsed)
    figures["simulation_seconds"] = round(elapsed, 2)
    return {"name": "headroom policies over load traces", "figures": figures, "ratios": ratios}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
