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

# (trace, boot, noise) -> the goals missed, with the figures measured (predictive vs the
# baseline of the goal). The predictive policy sizes predicted containers plus a margin of the
# observed noise (grow at 1, shrink at 3 standard deviations) a boot and a pass ahead; the
# noisy day meets its goals since the slow fit over two hours of five-minute means finds its
# rise (before: 2/1/13/37 min below demand at 60/180/420/900 s boot); the clean 420/900 s
# ramps since the down window holds the sizes asked for, not booting capacity (1.54x/1.62x
# idle before); the noisy spike since pending work with no trusted trend grows as far as the
# utilization policy would (2/5 min below at 60/180 s boot before), and the noisy 60/420 s
# oscillation since it does so while learning with no host booting (2/4 min below before). What
# is left: a noisy ramp at 60 s boot is too noisy to trust over the fit's window (R^2 < 0.8)
# and over three of them, so the pool follows the load instead of leading it (below demand); the ramps pay their
# booting hosts, the bend at the ramp's start and the overshoot at its end (idle). The pool
# keeps its size while a step down is inside the fit's window, so a spike no longer flaps.
KNOWN_GAPS = {
    ("ramp", 60, 0.1): "below 9 min vs utilization 4",
    ("ramp", 180, 0.0): "idle 2.6 h vs containers 1.7 h (1.54x)",
    ("ramp", 420, 0.1): "idle 7.3 h vs containers 3.6 h (2.04x); 2 flaps",
    ("ramp", 900, 0.1): "idle 10.0 h vs containers 5.8 h (1.72x)",
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


def samples(values, step=60.0):
    from provision.headroom.policy import Sample
    return [Sample(i * step, float(v), v / 10, v / 20) for i, v in enumerate(values)]


def test_noise_is_measured_apart_from_trend_and_jumps():
    import random
    from provision.headroom.policy_rules import noise_spread
    rng = random.Random(7)
    noisy = [40 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(21)]
    # uniform within 10% of 40: a standard deviation of 4/sqrt(3), about 2.3
    assert 1.5 < noise_spread(samples(noisy), "containers") < 3.2
    assert noise_spread(samples([20 + 2.5 * i for i in range(21)]), "containers") == 0.0  # a clean ramp
    assert noise_spread(samples([30] * 10 + [100] * 11), "containers") == 0.0  # a spike's step


def test_predictive_holds_the_size_inside_its_noise_band():
    # 40 +- 10% on 6 hosts (48 slots, reserve 2): 1 standard deviation over the prediction
    # fits, so 6 do not grow (5 do); 3 do not fit on 6, so 7 hosts stay and 9 shrink to 7.
    import random
    from provision.headroom.policy import predictive_policy
    rng = random.Random(3)
    hist = samples([40 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(21)])
    s = sim.default_settings(["predictive"])
    assert predictive_policy(s, hist, 6).hosts == 6
    assert predictive_policy(s, hist, 5).hosts == 6
    assert predictive_policy(s, hist, 7).hosts == 7
    assert predictive_policy(s, hist, 9).hosts == 7


def test_a_step_down_holds_the_pool_until_it_leaves_the_fit():
    # Before: the noisy spike (30 -> 100 -> 30 containers) removed a host 20 minutes after
    # the add that met it, a flap; a step down inside the fit's window now keeps the size.
    import random
    from provision.headroom.policy import predictive_policy
    from provision.headroom.policy_rules import stepped_down
    rng = random.Random(5)
    noisy = [v * (1 + 0.1 * rng.uniform(-1, 1)) for v in [100] * 15 + [30] * 6]
    # the fit spans six one-minute samples: the step is inside it while it is among the last six
    assert stepped_down(samples(noisy[-7:]))
    assert stepped_down(samples([100, 100, 100, 30, 30, 30]))  # a clean step
    assert not stepped_down(samples(noisy[-6:]))  # the step has left the fit
    assert not stepped_down(samples([40 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(6)]))
    assert not stepped_down(samples([100 - 2.5 * i for i in range(6)]))  # a falling ramp is no step
    s = sim.default_settings(["predictive"])
    assert predictive_policy(s, samples(noisy[:-2]), 14).hosts == 14
    assert predictive_policy(s, samples(noisy), 14).hosts < 14


def test_a_noisy_ramp_is_fitted_over_a_longer_window():
    # Before: a ramp of 2.5 containers a minute in 10% noise was no trend over the 5-minute
    # fit (R^2 < 0.8), so the pool was sized for the window's average (about 75 containers);
    # over 15 minutes the line is trusted and met 4 minutes on (87.5: 12 hosts with the reserve).
    import random
    from provision.headroom.policy import predictive_policy
    from provision.headroom.policy_rules import trusted
    rng = random.Random(0)
    hist = samples([(40 + 2.5 * i) * (1 + 0.1 * rng.uniform(-1, 1)) for i in range(16)])
    assert not trusted(hist[-6:], "containers") and trusted(hist, "containers")
    s = sim.default_settings(["predictive"])
    assert predictive_policy(s, hist, 10).hosts >= 12
    assert predictive_policy(s, hist[-6:], 10).hosts <= 11  # the short record alone: the average


def test_a_slow_rise_in_noise_is_found_over_two_hours_of_means():
    # Before: a day's rise (0.22 containers a minute) in 10% noise was no trend over 5 or 15
    # minutes, so the pool was sized for the level and met the load late (37 min below at
    # 900 s boot); the line through two hours of five-minute means is trusted and extrapolated.
    import random
    from provision.headroom.policy_rules import trusted
    from provision.headroom.policy_trend import slow_predict
    rng = random.Random(11)
    hist = samples([(40 + 0.22 * i) * (1 + 0.1 * rng.uniform(-1, 1)) for i in range(121)])
    assert not trusted(hist[-16:], "containers")
    ahead = hist[-1].at + 900
    predicted = slow_predict(hist, "containers", ahead, 4.0)
    assert predicted is not None and abs(predicted - (40 + 0.22 * 135)) < 4
    # noise around a level: no line
    flat = samples([40 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(121)])
    assert slow_predict(flat, "containers", ahead, 2.3) is None


def test_the_slow_line_is_not_carried_past_a_ramp_that_ended():
    # A ramp of 2.3 a minute that stopped 5 minutes ago: the two-hour line would overshoot;
    # it is too steep to be a slow rise (the shorter fits would have seen it) and the newest
    # samples lie behind it.
    from provision.headroom.policy_trend import slow_predict
    values = [20.0] * 40 + [20 + 2.3 * i for i in range(61)] + [160.0] * 6
    hist = samples(values)
    assert slow_predict(hist, "containers", hist[-1].at + 180, 1.0) is None


def test_a_slow_rise_grows_the_pool_at_the_wider_margin():
    # The noisy day's morning: only the two-hour fit sees the rise; the pool grows at
    # RISING_MARGIN deviations (before: 1, and the noise peaks ran past it). The same noise
    # around a level keeps the narrower margin, so a steady load does not grow.
    import random
    from provision.headroom.policy import predictive_policy
    from provision.headroom.policy_rules import GROW_MARGIN, RISING_MARGIN
    from provision.headroom.policy_rules import trusted
    assert RISING_MARGIN > GROW_MARGIN
    rng = random.Random(0)
    s = sim.default_settings(["predictive"])
    rise = samples([(40 + 0.22 * i) * (1 + 0.1 * rng.uniform(-1, 1)) for i in range(121)])
    assert not trusted(rise[-6:], "containers") and not trusted(rise[-16:], "containers")
    need = predictive_policy(s, rise, 8)
    assert "slow rise" in need.reason and f"margins {RISING_MARGIN:g}/" in need.reason and need.hosts >= 10
    flat = samples([66 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(121)])
    assert "slow rise" not in predictive_policy(s, flat, 10).reason


def test_a_ramp_that_ended_is_not_extrapolated_at_its_old_pace():
    # Before: the line over the last 20 minutes kept predicting the ramp's pace (2.3 a minute)
    # three minutes after it stopped at 160; the newest four samples are level, so the
    # prediction is damped to them. A ramp still under way is not damped.
    from provision.headroom.policy_rules import damped_at_turn
    ended = samples([20 + 2.3 * i for i in range(17)] + [56.8] * 4)
    assert damped_at_turn(ended, "containers", ended[-1].at + 420, 0.0) == 56.8
    going = samples([20 + 2.3 * i for i in range(21)])
    assert damped_at_turn(going, "containers", going[-1].at + 420, 0.0) is None
    # in noise a level stretch of four samples is no turn unless clearly below the line
    assert damped_at_turn(ended, "containers", ended[-1].at + 420, 40.0) is None


def test_the_bend_is_not_extrapolated_far_past_the_fitted_samples():
    # Before: at a ramp's start the curvature, carried a 15-minute boot past a 5-minute fit,
    # added its full parabola (the 900 s ramp paid 11.5 idle host-hours in noise, now 10).
    # A gradient rising by 0.2 a minute each minute: the parabola predicts 71.6 containers
    # 15 minutes on; the bend grows linearly past BEND_SPAN times the fit's span: 57.8.
    from provision.headroom import policy_rules
    start = samples([20, 21, 22.2, 23.6, 25.2, 27])
    assert 55 < policy_rules.predict(start, "containers", 900.0) < 60
    assert policy_rules.BEND_SPAN * 300 < 900  # the cap is what bends it here


def test_the_remembered_history_is_bounded_whatever_the_loop_frequency():
    # Before: a pass every 10 s kept every sample of the two-hour slow window (720 samples in
    # the headroom state and in every decision record); now the newest fit window raw
    # (twenty minutes, plus the part of a five-minute bucket not yet whole: at most 151
    # samples) and the older ones as five-minute means (at most 25).
    from provision.headroom.policy import READY, HostLoad, Memory, Observation, decide
    from provision.headroom.policy_trend import SLOW_BUCKET, bucket_means, compact
    s = sim.default_settings(["predictive"])
    memory = Memory()
    for i in range(0, 3 * 3600 // 10):
        at = i * 10.0
        hosts = tuple(HostLoad(f"w{k}", s.pool, "worker", READY, containers=4, cpu=0.4, memory=0.3) for k in range(5))
        memory = decide(s, Observation(at=at, hosts=hosts, pending=0, source="simulation"), memory).memory
    assert len(memory.history) <= 151 + 25, len(memory.history)
    assert memory.history[-1].at == at and at - memory.history[0].at <= 7200
    raw = [h for h in memory.history if h.at >= at - 1200]
    assert len(raw) == 121 and all(b.at - a.at == 10 for a, b in zip(raw, raw[1:]))
    # whole buckets are merged: the slow fit's five-minute means are the same either way
    hist = samples([40 + 0.2 * i + (i % 7) for i in range(130)], step=10.0)
    kept = compact(hist, hist[-1].at, 300.0)
    assert len(kept) < len(hist) and [m.containers for m in bucket_means(kept, SLOW_BUCKET)] == \
        [m.containers for m in bucket_means(hist, SLOW_BUCKET)]


def test_pending_work_without_a_trusted_trend_grows_as_far_as_utilization_would():
    # Before: a noisy spike (30 -> 100 containers) was met with 13 hosts, the newest sample
    # plus the reserve, and the next noisy minute ran short (spike 60 s / 180 s boot in 10%
    # noise: 2 / 5 min below demand vs the utilization policy's 1 / 4). The step is no trusted
    # trend, so while work waits the pool grows at least to utilization's size: CPU 10 hosts'
    # worth at a 0.7 threshold is 15 hosts.
    import random
    from provision.headroom.policy import predictive_policy
    from provision.headroom.policy_rules import trusted
    rng = random.Random(2)
    hist = samples([30 * (1 + 0.1 * rng.uniform(-1, 1)) for _ in range(10)] + [100])
    assert not trusted(hist[-6:], "containers") and not trusted(hist, "containers")
    s = sim.default_settings(["predictive"])
    assert predictive_policy(s, hist, 4, pending=68).hosts == 15
    assert predictive_policy(s, hist, 4).hosts == 13  # nothing waits: sized by the prediction
    # a trusted trend keeps its own sizing, pending or not
    ramp = samples([40 + 2.5 * i for i in range(16)])
    assert predictive_policy(s, ramp, 10, pending=3).hosts == predictive_policy(s, ramp, 10).hosts


def test_the_down_window_holds_the_sizes_asked_for_not_the_hosts_booting():
    # Before: every pass while hosts booted recorded the pool's booting size as wanted, so an
    # add that turned out unneeded held the pool for a whole scale-down window after its hosts
    # served (the 420 s ramp paid 1.54x the containers policy's idle host-hours, now 1.47x).
    # Here 3 hosts were added at 0 (8 wanted then) and boot for 420 s while 30 containers on 5
    # hosts want 5: once the add's wish has left the 600 s window the pool shrinks.
    from provision.headroom.policy import BOOTING, READY, HostLoad, Memory, Observation, decide
    s = sim.default_settings(["containers"])

    def observe(at, ready, booting):
        per, extra = divmod(30, ready)
        hosts = tuple(HostLoad(f"w{i}", s.pool, "worker", READY, containers=per + (i < extra), cpu=0.3, memory=0.2)
                      for i in range(ready))
        hosts += tuple(HostLoad(f"w{ready + i}", s.pool, "worker", BOOTING) for i in range(booting))
        return Observation(at=at, hosts=hosts, pending=0, source="simulation")

    memory = Memory(last_change_at=0.0, last_change="add", wanted=((0.0, 8),))
    actions = {}
    for at in range(60, 781, 60):
        booting = 3 if at < 420 else 0
        decision = decide(s, observe(float(at), 5 if booting else 8, booting), memory)
        memory, actions[at] = decision.memory, decision.action
    assert all(n <= 5 for at, n in memory.wanted if 0 < at < 420)  # asked for, not the 8 booting
    assert actions[600] == "wait"  # the add's wish (8) is still inside the window
    assert actions[660] == "remove"


def test_while_learning_the_pool_grows_as_far_as_utilization_would_unless_hosts_boot():
    # Before: a noisy oscillation's first minute (52 containers on 6 hosts, 4 waiting) was met
    # with 7 hosts, the newest sample plus the reserve, and fell short again at its next peak
    # (60/420 s boot in 10% noise: 2/4 min below demand vs the utilization policy's 1/3). With
    # two samples there is no trend yet: the pool grows to utilization's 8 (5.2 CPU at 0.7).
    # Not while hosts boot: at 900 s boot that growth came too late and was removed (a flap).
    from provision.headroom.policy import predictive_policy
    s = sim.default_settings(["predictive"])
    hist = samples([43, 52])
    assert "learning" in predictive_policy(s, hist, 6, pending=4).reason
    assert predictive_policy(s, hist, 6, pending=4).hosts == 8
    assert predictive_policy(s, hist, 6, pending=4, booting=2).hosts == 7
    assert predictive_policy(s, hist, 6).hosts == 8  # nothing waits yet: the same
    assert predictive_policy(s, samples([40, 41]), 6).hosts == 6  # utilization would not grow
