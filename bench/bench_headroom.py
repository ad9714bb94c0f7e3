"""P5 (issue 11), decision cost at scale: one headroom decision (all three policies, and the
decision record) over 5,000 and 50,000 hosts (goals: < 20 ms and < 100 ms).

Side by side in the same run, so the ratios hold on any machine:
- baseline: the same decision at 1,000 hosts (the scale cluster-autoscaler is tested at,
  whose one loop there takes under 10 s);
- the parse of 5,000 published load documents, work every run does anyway before deciding.
Figures are the median of several runs.
"""
from __future__ import annotations

import json
import random
import statistics
import time

from provision.headroom.policy import (READY, UNKNOWN, HostLoad, Memory, Observation, Sample, Settings, decide,
                                       remember)
from provision.spec.model import Reserve

ANCHOR_SECONDS_AT_1000 = 10.0  # cluster-autoscaler: one loop under 10 s at 1,000 nodes


def observation(n: int, seed: int = 7) -> Observation:
    rnd = random.Random(seed)
    hosts = [HostLoad(f"big-masters-{i}", "masters", "master", READY, etcd=True) for i in range(3)]
    for i in range(n):
        c = rnd.randint(0, 8)
        hosts.append(HostLoad(f"big-workers-{i}", "workers", "worker", UNKNOWN if i % 2000 == 1 else READY,
                              containers=c, cpu=rnd.random(), memory=rnd.random()))
    return Observation(at=1_000_000.0, hosts=tuple(hosts), pending=3)


def settings(n: int) -> Settings:
    return Settings(pool="workers", min_count=1, max_count=2 * n, policies=("containers", "utilization", "predictive"),
                    containers_per_host=8, reserve=Reserve(percent=10.0), scale_down_cooldown=0.0,
                    scale_down_utilization=0.6)


def memory(n: int) -> Memory:
    history = tuple(Sample(1_000_000.0 - 60 * k, 4.0 * n, 0.5 * n, 0.5 * n) for k in range(5, 0, -1))
    low = {f"big-workers-{i}": 990_000.0 for i in range(0, n, 3)}
    return Memory(history=history, low_since=low)


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def run(repeat: int = 7) -> dict:
    figures, actions = {}, {}
    for n in (1000, 5000, 50000):
        obs, s, mem = observation(n), settings(n), memory(n)
        actions[n] = decide(s, obs, mem).action
        assert actions[n] not in ("halt", "none"), f"benchmark must exercise a full decision, got {actions[n]}"
        figures[n] = timed(lambda: remember({}, decide(s, obs, mem)), repeat if n < 50000 else 3)
    docs = [json.dumps({"containers": 3, "cpu": 0.4, "memory": 0.5, "at": 1_000_000}) for _ in range(5000)]
    parse = timed(lambda: [json.loads(d) for d in docs], repeat)
    return {
        "name": "P5: headroom decision (median ms)",
        "figures": {
            "decide_5000_hosts_ms (goal < 20)": round(figures[5000] * 1000, 2),
            "decide_50000_hosts_ms (goal < 100)": round(figures[50000] * 1000, 2),
            "baseline_decide_1000_hosts_ms": round(figures[1000] * 1000, 2),
            "parse_5000_load_documents_ms": round(parse * 1000, 2),
            "action_at_5000": actions[5000],
        },
        "ratios": {
            "5000_vs_1000_hosts": round(figures[5000] / figures[1000], 2),
            "50000_vs_5000_hosts (linear: 10)": round(figures[50000] / figures[5000], 2),
            "decide_vs_parse_at_5000": round(figures[5000] / parse, 2),
            "decide_1000_vs_cluster_autoscaler_anchor": f"1/{ANCHOR_SECONDS_AT_1000 / figures[1000]:.0f}",
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
