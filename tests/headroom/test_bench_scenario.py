"""The P5 benchmark (bench/bench_headroom.py) times one headroom decision; it means something
only while that decision goes the whole way (every policy weighed, hosts chosen for removal
and spares ordered). A change of a policy once turned its scenario into a hold and the bench
failed at run time only: this builds the same scenario at small sizes, fast, in the suite."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from provision.headroom.policy import Sample, decide, replay

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_headroom.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_headroom", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [300, 1000])
def test_bench_scenario_is_a_full_decision(n: int) -> None:
    bench = load_bench()
    s, obs, mem = bench.scenario(n)
    decision = decide(s, obs, mem)
    assert decision.action == "remove", decision.reason
    assert bench.is_full(decision)
    # every policy ran on a record covering the fit's window: no policy is still learning
    assert [need.policy for need in decision.needs] == ["containers", "utilization", "predictive"]
    assert not any("learning" in need.reason for need in decision.needs)
    # the predictive policy does not hold the pool (no step down read into the record)
    predictive = decision.needs[2]
    assert predictive.hosts < decision.current
    # the record it writes replays to the same decision
    assert replay(decision.record()).record() == decision.record()


def test_is_full_rejects_a_hold() -> None:
    """The record the bench had when it broke (flat at 4 containers a host, above what the
    observation reports): the predictive policy reads a step down and holds; `is_full` says so."""
    bench = load_bench()
    s, obs, mem = bench.scenario(1000)
    flat = tuple(Sample(obs.at - 60 * k, 4000.0, 500.0, 500.0) for k in range(5, 0, -1))
    held = decide(s, obs, replace(mem, history=flat))
    assert held.action == "none" and held.reason.startswith("predictive wants")
    assert not bench.is_full(held)
