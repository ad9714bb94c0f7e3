"""The issue's trace goals for the predictive policy, on every trace, boot time (60, 180, 420,
900 s) and noise level (none, 10%): idle host-hours at most 1.5x the `containers` policy's,
minutes below demand no worse than the `utilization` policy's, no flapping on noisy load, no
halts from booting hosts.

Cells the policy does not meet yet are listed in KNOWN_GAPS with the figures measured, as
strict expected failures: one that starts passing fails the suite until it is taken off the
list, so the list stays the exact state of the goals (see the README's trace table)."""
from __future__ import annotations

import pytest

from provision.headroom import simulate as sim

# (trace, boot, noise) -> the goals missed, with the figures of `make bench` when recorded.
# Nearly all are idle host-hours: the predictive policy sizes CPU to utilization's 0.7
# threshold and shrinks only below 0.5 (30% more hosts than `containers`); sizing CPU to
# saturation instead met every idle goal but fell below demand on noisy load and flapped
# (steady 10% noise at 60 s boot: 1 flap a day; ramp at 420 s boot: 11 minutes below, the
# issue's figure was 10), so it is not done here.
KNOWN_GAPS = {
    ("steady", 60, 0.1): "idle 5.3 h vs containers 3.0 h (1.75x)",
    ("steady", 180, 0.1): "idle 5.7 h vs containers 3.0 h (1.92x)",
    ("steady", 420, 0.1): "idle 5.0 h vs containers 3.0 h (1.67x)",
    ("steady", 900, 0.1): "idle 5.6 h vs containers 3.0 h (1.86x)",
    ("ramp", 60, 0.0): "idle 5.5 h vs containers 1.3 h (4.18x)",
    ("ramp", 60, 0.1): "idle 4.8 h vs containers 2.8 h (1.73x)",
    ("ramp", 180, 0.0): "idle 5.6 h vs containers 1.7 h (3.26x)",
    ("ramp", 180, 0.1): "idle 5.9 h vs containers 3.0 h (1.96x)",
    ("ramp", 420, 0.0): "idle 7.7 h vs containers 2.8 h (2.72x)",
    ("ramp", 420, 0.1): "idle 8.6 h vs containers 3.6 h (2.41x)",
    ("ramp", 900, 0.0): "idle 13.1 h vs containers 5.1 h (2.56x)",
    ("ramp", 900, 0.1): "idle 13.6 h vs containers 5.8 h (2.33x)",
    ("spike", 60, 0.0): "idle 8.3 h vs containers 4.6 h (1.82x)",
    ("spike", 180, 0.0): "idle 8.6 h vs containers 4.8 h (1.77x)",
    ("spike", 180, 0.1): "1 flap(s)",
    ("spike", 420, 0.0): "idle 9.1 h vs containers 5.4 h (1.67x)",
    ("spike", 420, 0.1): "idle 9.6 h vs containers 6.4 h (1.50x, just over)",
    ("spike", 900, 0.0): "idle 9.9 h vs containers 6.5 h (1.52x)",
    ("diurnal", 60, 0.0): "idle 65.4 h vs containers 20.0 h (3.28x)",
    ("diurnal", 60, 0.1): "idle 78.1 h vs containers 33.3 h (2.35x)",
    ("diurnal", 180, 0.0): "idle 65.4 h vs containers 20.0 h (3.28x)",
    ("diurnal", 180, 0.1): "idle 76.8 h vs containers 33.2 h (2.32x)",
    ("diurnal", 420, 0.0): "idle 66.1 h vs containers 20.0 h (3.31x)",
    ("diurnal", 420, 0.1): "idle 78.1 h vs containers 33.4 h (2.34x)",
    ("diurnal", 900, 0.0): "idle 69.5 h vs containers 20.1 h (3.46x)",
    ("diurnal", 900, 0.1): "idle 77.8 h vs containers 34.4 h (2.26x); below 1 min vs utilization 0",
}

CELLS = [(name, boot, noise) for name in sim.TRACES for boot in sim.BOOT_TIMES for noise in sim.NOISE_LEVELS]


def cell_param(cell):
    name, boot, noise = cell
    gap = KNOWN_GAPS.get((name, int(boot), noise))
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    return pytest.param(*cell, marks=marks, id=f"{name}-{boot:.0f}s-noise{noise:g}")


@pytest.fixture(scope="module")
def scores():
    out = {}
    for name, boot, noise in CELLS:
        trace, minutes = sim.TRACES[name]
        for policy in ("containers", "utilization", "predictive"):
            out[(name, boot, noise, policy)] = sim.simulate(name, trace, minutes, sim.default_settings([policy]),
                                                            boot=boot, noise=noise)
    return out


@pytest.mark.parametrize("name, boot, noise", [cell_param(c) for c in CELLS])
def test_predictive_meets_the_trace_goals(scores, name, boot, noise):
    predictive = scores[(name, boot, noise, "predictive")]
    containers = scores[(name, boot, noise, "containers")]
    utilization = scores[(name, boot, noise, "utilization")]
    missed = []
    if predictive.idle_host_hours > 1.5 * containers.idle_host_hours:
        missed.append(f"idle {predictive.idle_host_hours:.1f} h > 1.5 x {containers.idle_host_hours:.1f} h")
    if predictive.minutes_below_demand > utilization.minutes_below_demand:
        missed.append(f"below demand {predictive.minutes_below_demand} min > {utilization.minutes_below_demand} min")
    if noise and predictive.flaps:
        missed.append(f"{predictive.flaps} flaps on noisy load")
    if predictive.halts:
        missed.append(f"{predictive.halts} halts")
    assert not missed, "; ".join(missed)


def test_a_slow_boot_does_not_turn_an_oscillation_into_a_runaway(scores):
    # Before: a 5-minute fit stretched over a 15-minute boot grew the pool to max (30 hosts)
    # on a load that swings between 24 and 56 containers.
    for noise in sim.NOISE_LEVELS:
        swing = scores[("oscillation", 900.0, noise, "predictive")]
        assert swing.peak_hosts <= 9 and swing.removes <= 1, noise
