"""The headroom policies over load traces (steady, ramp, spike, oscillation, a diurnal day) at
every boot time (60, 180, 420, 900 s) and noise level (none, 10%), side by side: minutes
below demand, container-minutes short, idle host-hours, flaps and halts, with each policy's
idle ratio to Clocker's reactive `containers` policy and below-demand ratio to the
`utilization` policy (the issue's goals: idle at most 1.5x, below demand at most 1x)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from provision.headroom.simulate import (BOOT_TIMES, NOISE_LEVELS, POLICY_SETS, TRACES, default_settings, run_all,
                                        table)

PICTURES = Path(__file__).resolve().parent / "pictures"
PICTURE_BOOT = 180.0


def draw(scores) -> list[str]:
    """One picture per trace and policy (180 s boot, no noise): demand, capacity, hosts and
    actions over time, in bench/pictures/."""
    from provision.headroom.plot import plot
    PICTURES.mkdir(exist_ok=True)
    written = []
    per = default_settings(["containers"]).containers_per_host
    for s in scores:
        if s.boot != PICTURE_BOOT or s.noise:
            continue
        path = PICTURES / f"{s.trace}-{s.policy.replace('+', '-')}.png"
        plot(s.timeline, path, f"{s.trace} trace, {s.policy} policy, {s.boot:.0f} s boot", per)
        written.append(path.name)
    return written


def ratio(value: float, base: float) -> str:
    if base == 0:
        return "=" if value == 0 else "n/a (baseline 0)"
    return f"{value / base:.2f}"


def run() -> dict:
    t0 = time.perf_counter()
    scores = run_all(boots=BOOT_TIMES, noises=NOISE_LEVELS)
    elapsed = time.perf_counter() - t0
    by = {(s.trace, s.boot, s.noise, s.policy): s for s in scores}
    figures, ratios = {}, {}
    for s in scores:
        if s.policy in ("containers", "utilization"):
            continue
        key = f"{s.trace}/{s.boot:.0f}s/{s.noise:g}/{s.policy}"
        idle_base = by[(s.trace, s.boot, s.noise, "containers")]
        below_base = by[(s.trace, s.boot, s.noise, "utilization")]
        ratios[key] = (f"idle x{ratio(s.idle_host_hours, idle_base.idle_host_hours)} vs containers, "
                       f"below x{ratio(s.minutes_below_demand, below_base.minutes_below_demand)} vs utilization, "
                       f"{s.flaps} flaps, {s.halts} halts")
    steps = sum(minutes for _, minutes in TRACES.values()) * len(POLICY_SETS) * len(BOOT_TIMES) * len(NOISE_LEVELS)
    figures["halts"] = sum(s.halts for s in scores)
    figures["pictures"] = f"{len(draw(scores))} in {PICTURES.name}/"
    figures["decisions_per_second"] = round(steps / elapsed)
    figures["simulation_seconds"] = round(elapsed, 2)
    return {"name": "headroom policies over load traces", "figures": figures, "ratios": ratios,
            "table": table(scores), "scores": [s.to_json() for s in scores]}


if __name__ == "__main__":
    result = run()
    print(result.pop("table"))
    print(json.dumps(result["figures"], indent=2))
