"""Trace simulation: what each policy costs and how it tracks demand."""
from __future__ import annotations

from dataclasses import replace

import pytest

from provision.headroom import simulate as sim


@pytest.fixture(scope="module")
def scores():
    return {(s.trace, s.policy): s for s in sim.run_all()}


def test_every_trace_and_policy_is_scored(scores):
    assert {t for t, _ in scores} == {"steady", "ramp", "spike", "oscillation", "diurnal"}
    assert {p for _, p in scores} == {"containers", "utilization", "predictive", "containers+utilization+predictive"}


def test_predictive_is_below_demand_less_often_on_the_ramp(scores):
    predictive = scores[("ramp", "predictive")].minutes_below_demand
    for other in ("containers", "utilization"):
        assert predictive < scores[("ramp", other)].minutes_below_demand, other


@pytest.mark.parametrize("policy", ["containers", "utilization", "predictive", "containers+utilization+predictive"])
def test_no_flapping_on_oscillation(scores, policy):
    score = scores[("oscillation", policy)]
    assert score.flaps == 0
    assert score.removes == 0  # a load that keeps coming back never makes a host removable
    assert score.actions <= 4


@pytest.mark.parametrize("policy", ["containers", "utilization", "predictive"])
def test_steady_load_takes_no_action(scores, policy):
    assert scores[("steady", policy)].actions == 0


def test_diurnal_day_grows_and_shrinks_without_flapping(scores):
    for policy in ("containers", "utilization", "predictive"):
        s = scores[("diurnal", policy)]
        assert s.adds > 0 and s.removes > 0 and s.flaps == 0, policy
        assert s.minutes_below_demand < 30, policy


def test_containers_policy_is_leanest_on_the_diurnal_day(scores):
    lean = scores[("diurnal", "containers")].idle_host_hours
    assert lean < scores[("diurnal", "utilization")].idle_host_hours


def test_simulation_is_deterministic():
    a = sim.simulate("ramp", sim.ramp, 90, sim.default_settings(["predictive"]))
    b = sim.simulate("ramp", sim.ramp, 90, sim.default_settings(["predictive"]))
    assert a.to_json() == b.to_json() and a.decisions == b.decisions


def test_flap_counter_counts_reversals():
    # A square wave with a long period and no scale-down wait forces add/remove reversals.
    def square(minute):
        return 60.0 if (minute // 15) % 2 else 10.0
    settings = replace(sim.default_settings(["containers"]), scale_down_cooldown=0.0)
    score = sim.simulate("square", square, 120, settings)
    assert score.flaps > 0


def test_table_lists_each_row(scores):
    text = sim.table(list(scores.values()))
    assert text.count("\n") >= len(scores) + 1 and "oscillation" in text


# ---- boot time, noise, magnitude (issue 15) ---------------------------------------------------

@pytest.mark.parametrize("boot", sim.BOOT_TIMES)
def test_booting_hosts_never_halt_headroom(boot):
    # Issue: the spike trace halted twice on hosts still booting right after headroom added them.
    for policies in sim.POLICY_SETS:
        score = sim.simulate("spike", sim.spike, 180, sim.default_settings(policies), boot=boot)
        assert score.halts == 0 and score.adds > 0, policies


@pytest.mark.parametrize("boot", sim.BOOT_TIMES)
def test_predictive_does_not_flap_on_a_noisy_steady_day(boot):
    # Issue: on steady load with 10% noise it flapped 11 times a day.
    score = sim.simulate("steady", sim.steady, 1440, sim.default_settings(["predictive"]), boot=boot, noise=0.1)
    assert score.flaps == 0


@pytest.mark.parametrize("boot, before", [(420, 10), (900, 59)])
def test_predictive_meets_the_ramp_with_slow_boots(boot, before):
    # Issue: with 420 s boot it was below demand 10 minutes on the ramp, with 900 s 59.
    predictive = sim.simulate("ramp", sim.ramp, 120, sim.default_settings(["predictive"]), boot=boot)
    utilization = sim.simulate("ramp", sim.ramp, 120, sim.default_settings(["utilization"]), boot=boot)
    assert predictive.minutes_below_demand < before
    assert predictive.minutes_below_demand <= utilization.minutes_below_demand
    assert predictive.container_minutes_short <= utilization.container_minutes_short


def test_container_minutes_short_measures_how_far_below():
    score = sim.simulate("spike", sim.spike, 180, sim.default_settings(["containers"]), boot=900)
    assert score.minutes_below_demand > 0
    assert score.container_minutes_short >= score.minutes_below_demand  # at least one short per minute
    assert sim.simulate("steady", sim.steady, 60, sim.default_settings(["containers"])).container_minutes_short == 0


def test_noise_is_deterministic_and_changes_demand():
    a = sim.simulate("steady", sim.steady, 120, sim.default_settings(["utilization"]), noise=0.1)
    b = sim.simulate("steady", sim.steady, 120, sim.default_settings(["utilization"]), noise=0.1)
    quiet = sim.simulate("steady", sim.steady, 120, sim.default_settings(["utilization"]))
    assert a.to_json() == b.to_json() and a.noise == 0.1
    assert a.idle_host_hours != quiet.idle_host_hours


def test_table_has_boot_noise_and_ratio_columns():
    scores = sim.run_all(traces={"spike": (sim.spike, 90)}, boots=(60, 900), noises=(0.0,))
    text = sim.table(scores)
    assert "idle x" in text and "below x" in text and "short" in text and "halts" in text
    rows = [line for line in text.splitlines() if line.startswith("spike")]
    assert len(rows) == 2 * len(sim.POLICY_SETS)
    assert any(" 900 " in line for line in rows)


@pytest.mark.parametrize("boot", sim.BOOT_TIMES)
def test_no_trace_halts_at_any_boot_time_with_noise(boot):
    """The trace goal 'no halts from booting hosts', for every trace with 10% noise."""
    for name, (trace, minutes) in sim.TRACES.items():
        score = sim.simulate(name, trace, minutes, sim.default_settings(["containers", "utilization", "predictive"]),
                             boot=boot, noise=0.1)
        assert score.halts == 0, name
