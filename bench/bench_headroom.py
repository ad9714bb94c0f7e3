"""P5 (issue 11), decision cost at scale: one headroom decision (all three policies, and the
decision record) over 5,000 and 50,000 hosts (goals: < 20 ms and < 100 ms).

Side by side in the same run, so the ratios hold on any machine:
- baseline: the same decision at 1,000 hosts (the scale cluster-autoscaler is tested at,
  whose one loop there takes under 10 s);
- the parse of 5,000 published load documents, work every run does anyway before deciding.
Figures are the median CPU time (process time: the machine is shared) of 21 runs, each on a
fresh observation made before the clock starts, as `observe` makes it: the hosts and their
columns (`policy_model.observed`), read in the same pass over the load reports.
The scenario (`scenario`) is a full decision at every size: three policies weigh a steady
noisy load, and the utilization policy's low hosts are chosen and ordered for removal
(tests/headroom/test_bench_scenario.py keeps it so).
- before: the same decision with the per-host passes P5 replaced (the reference the
  equivalence tests compare with, tests/headroom/policy_reference.py), timed in the same run,
  its runs alternating with the others.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace

from provision.headroom import policy
from provision.headroom import policy_model as model
from provision.headroom.policy import (READY, UNKNOWN, HostLoad, Memory, Observation, Sample, Settings, decide,
                                       remember)
from provision.headroom.policy_model import observed
from provision.headroom.policy_rules import NOISE_WINDOW
from provision.spec.model import Reserve
from provision.state import encode_state

ANCHOR_SECONDS_AT_1000 = 10.0  # cluster-autoscaler: one loop under 10 s at 1,000 nodes


def observation(n: int, seed: int = 7) -> Observation:
    """3 masters and `n` workers with random load, read into columns as `observe` does."""
    rnd = random.Random(seed)
    hosts = [HostLoad(f"big-masters-{i}", "masters", "master", READY, etcd=True) for i in range(3)]
    for i in range(n):
        c = rnd.randint(0, 8)
        hosts.append(HostLoad(f"big-workers-{i}", "workers", "worker", UNKNOWN if i % 2000 == 1 else READY,
                              containers=c, cpu=rnd.random(), memory=rnd.random()))
    return observed(1_000_000.0, Observation(at=0.0, hosts=tuple(hosts)).columns, pending=3)


def settings(n: int) -> Settings:
    return Settings(pool="workers", min_count=1, max_count=2 * n, policies=("containers", "utilization", "predictive"),
                    containers_per_host=8, reserve=Reserve(percent=10.0), scale_down_cooldown=0.0,
                    scale_down_utilization=0.6)


def memory(n: int, seed: int = 7) -> Memory:
    """A steady load with a little noise, one sample a minute over the predictive policy's
    noise window (so its fits and its noise estimate run on a full record), at the level the
    observation reports: the decision is a scale-down, not a hold. (A flat record far from the
    observed level read as a step down, and the predictive policy then held the pool.)"""
    obs = observation(n, seed)
    ready = [h for h in obs.hosts if h.pool == "workers" and h.status == READY]
    level = (sum(h.containers for h in ready) + obs.pending, sum(h.cpu for h in ready),
             sum(h.memory for h in ready))
    rnd = random.Random(seed + 1)
    samples = int(NOISE_WINDOW // 60)
    history = tuple(Sample(obs.at - 60 * k, *(v * (1 + rnd.uniform(-0.002, 0.002)) for v in level))
                    for k in range(samples, 0, -1))
    low = {f"big-workers-{i}": obs.at - 10_000 for i in range(0, n, 3)}
    return Memory(history=history, low_since=low)


def scenario(n: int) -> tuple[Settings, Observation, Memory]:
    """What the benchmark decides over `n` workers (and 3 masters)."""
    return settings(n), observation(n), memory(n)


def is_full(decision) -> bool:
    """A decision that went all the way: every policy weighed, and hosts chosen for removal
    with spares ordered behind them (the longest path through `decide`)."""
    return decision.action == "remove" and len(decision.needs) == 3 and bool(decision.remove) \
        and bool(decision.spare)


def fresh(obs: Observation) -> Observation:
    """The same observation made anew, as `observe` makes it (hosts and their columns), for
    each timed decision; made outside the timed part (`timed`'s setup)."""
    return observed(obs.at, {key: list(column) for key, column in obs.columns.items()}, obs.pending,
                    obs.pending_cpu, obs.pending_memory, obs.source)


def timed(fn, repeat: int, setup=None) -> float:
    """Median CPU time of `fn` (of `fn(setup())` with a setup, made before the clock starts)."""
    runs = []
    for _ in range(repeat):
        given = () if setup is None else (setup(),)
        t0 = time.process_time()
        fn(*given)
        runs.append(time.process_time() - t0)
    return statistics.median(runs)


def fresh_before(obs: Observation) -> Observation:
    """The same observation made anew holding only its hosts, as observe made it before the
    columns moved there (the reference passes read the hosts themselves)."""
    return replace(fresh(obs))


@contextmanager
def passes_before_p5():
    """The decision with the per-host passes as they were before P5's rework."""
    from tests.headroom import policy_reference as reference
    saved = policy.pool_view, policy.removals, model.observation_json, policy.utilization_policy, policy.low_hosts
    policy.pool_view, policy.removals, model.observation_json, policy.utilization_policy, policy.low_hosts = \
        reference.pool_view, reference.removals, reference.observation_json, reference.utilization_policy, \
        reference.low_hosts
    try:
        yield
    finally:
        policy.pool_view, policy.removals, model.observation_json, policy.utilization_policy, policy.low_hosts = saved


def run(repeat: int = 21) -> dict:
    """Figures are medians of `repeat` runs (21: the machine is shared, and five runs of the
    50,000-host decision spread by a third); after and before P5's rework alternate, so a
    burst of load on the machine falls on both alike."""
    figures, actions, before = {}, {}, {}
    for n in (1000, 5000, 50000):
        s, obs, mem = scenario(n)
        decision = decide(s, obs, mem)
        actions[n] = decision.action
        assert is_full(decision), f"benchmark must exercise a full decision, got {decision.action}: {decision.reason}"
        if n < 5000:
            figures[n] = timed(lambda o: remember({}, decide(s, o, mem)), repeat, lambda: fresh(obs))
            continue
        with passes_before_p5():
            assert decide(s, obs, mem).record() == decision.record(), "the rework changed the decision"
        after_runs, before_runs = [], []
        for _ in range(repeat):
            after_runs.append(timed(lambda o: remember({}, decide(s, o, mem)), 1, lambda: fresh(obs)))
            with passes_before_p5():
                before_runs.append(timed(lambda o: remember({}, decide(s, o, mem)), 1, lambda: fresh_before(obs)))
        figures[n], before[n] = statistics.median(after_runs), statistics.median(before_runs)
    # Writing the state after a 50,000-host decision: its record carries every host's load.
    state = {"version": 3, "cluster": "big", "serial": 1, "pools": {}, "phases": {},
             "hosts": {f"big-workers-{i}": {"address": f"10.0.{i // 250}.{i % 250}", "pool": "workers"}
                       for i in range(50000)},
             "headroom": remember({}, decide(*scenario(50000)))}
    assert json.loads(encode_state(state)) == json.loads(json.dumps(state, indent=2, sort_keys=True))
    write_before = timed(lambda: json.dumps(state, indent=2, sort_keys=True).encode(), 3)
    write_after = timed(lambda: encode_state(state).encode(), 3)
    docs = [json.dumps({"containers": 3, "cpu": 0.4, "memory": 0.5, "at": 1_000_000}) for _ in range(5000)]
    parse = timed(lambda: [json.loads(d) for d in docs], repeat)
    return {
        "name": "P5: headroom decision (median ms)",
        "figures": {
            "decide_5000_hosts_ms (goal < 20)": round(figures[5000] * 1000, 2),
            "decide_50000_hosts_ms (goal < 100)": round(figures[50000] * 1000, 2),
            "before_p5_decide_5000_hosts_ms": round(before[5000] * 1000, 2),
            "before_p5_decide_50000_hosts_ms": round(before[50000] * 1000, 2),
            "baseline_decide_1000_hosts_ms": round(figures[1000] * 1000, 2),
            "encode_state_50000_hosts_ms": round(write_after * 1000, 2),
            "before_p5_encode_state_50000_hosts_ms (indent=2)": round(write_before * 1000, 2),
            "parse_5000_load_documents_ms": round(parse * 1000, 2),
            "action_at_5000": actions[5000],
        },
        "ratios": {
            "50000_hosts_after_vs_before_p5": round(figures[50000] / before[50000], 2),
            "5000_vs_1000_hosts": round(figures[5000] / figures[1000], 2),
            "50000_vs_5000_hosts (linear: 10)": round(figures[50000] / figures[5000], 2),
            "decide_vs_parse_at_5000": round(figures[5000] / parse, 2),
            "decide_1000_vs_cluster_autoscaler_anchor": f"1/{ANCHOR_SECONDS_AT_1000 / figures[1000]:.0f}",
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
