"""The per-host passes of `policy.decide` as they were before P5's rework (issue 11), kept as
the reference the rework is compared with (tests/headroom/test_policy_equivalence.py): the
straightforward version, one comprehension per question and one sort with a tuple key.
Not used by provision itself."""
from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Any, Mapping, Sequence

from provision.headroom.policy_hosts import PoolView
from provision.headroom.policy_model import (BOOTING, CLAMPED, HOST_COLUMNS, READY, UNDRAINABLE_SKIP, UNKNOWN,
                                             UNREADY, HostLoad, Observation, Settings)


def pool_view(s: Settings, obs: Observation) -> PoolView:
    pools = s.pools
    pool = tuple([h for h in obs.hosts if h.pool in pools])
    counted = Counter(map(attrgetter("pool"), pool))
    ready = [h for h in pool if h.status == READY]
    return PoolView(
        pool=pool, sizes={name: counted[name] for name in pools}, ready=ready,
        booting=[h for h in pool if h.status == BOOTING],
        silent=[h for h in pool if h.status in (UNKNOWN, UNREADY)],
        not_ready={h.name for h in pool if h.status != READY},
        troubled=[h for h in obs.hosts if h.status == UNKNOWN or h.status == UNREADY],
        clamped=sorted(h.name for h in obs.hosts if h.flags and CLAMPED in h.flags),
        containers=sum(map(attrgetter("containers"), ready)), cpu=sum(map(attrgetter("cpu"), ready)),
        memory=sum(map(attrgetter("memory"), ready)))


def removal_candidates(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
                       undrainable: Mapping[str, float], now: float) -> list[HostLoad]:
    pools = s.pools
    skip = max(UNDRAINABLE_SKIP, s.scale_down_cooldown)
    blocked = {name for name, failed in undrainable.items() if now - failed < skip}
    out = [h for h in pool if h.status == READY and h.role == "worker" and not h.etcd and h.pool in pools
           and h.name not in blocked]
    if "utilization" in s.policies:
        window = s.scale_down_cooldown
        out = [h for h in out if h.name in low_since and not now - low_since[h.name] < window]
    burst = s.burst_pool
    if burst is None:
        return sorted(out, key=lambda h: (h.containers, h.cpu + h.memory, h.name))
    return sorted(out, key=lambda h: (h.pool != burst, h.containers, h.cpu + h.memory, h.name))


def choose_removals(s: Settings, candidates: Sequence[HostLoad], count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if count <= 0 or not candidates:
        return (), ()
    first = candidates[0].pool
    first_pool = [h for h in candidates if h.pool == first]
    if s.burst_pool and first == s.burst_pool:
        candidates = first_pool + [h for h in candidates if h.pool != s.burst_pool]
    empty = [h.name for h in first_pool if h.containers == 0][:count]
    chosen = tuple(empty) if empty else (first_pool[0].name,)
    taken = set(chosen)
    return chosen, tuple([h.name for h in candidates if h.name not in taken])


def observation_json(obs: Observation) -> dict[str, Any]:
    hosts = obs.hosts
    columns: dict[str, Any] = {key: list(map(attrgetter(key), hosts)) for key in HOST_COLUMNS}
    columns["flags"] = {h.name: list(h.flags) for h in hosts if h.flags}
    return {"at": obs.at, "pending": obs.pending, "pending_cpu": obs.pending_cpu,
            "pending_memory": obs.pending_memory, "source": obs.source, "hosts": columns}


def removals(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
             undrainable: Mapping[str, float], now: float, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return choose_removals(s, removal_candidates(s, pool, low_since, undrainable, now), count)
