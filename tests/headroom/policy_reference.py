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
                                             UNREADY, HostLoad, Need, Observation, Settings)
from provision.headroom.policy_rules import first_true, hosts_for_load


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


def utilization_policy(s: Settings, pool: Sequence[HostLoad], pending_cpu: float, pending_memory: float,
                       low_since: Mapping[str, float], now: float, **_given: Any) -> tuple[Need, dict[str, float]]:
    """As before P5: its own passes over the pool (what the caller gives it is ignored)."""
    ready = [h for h in pool if h.status == READY]
    n = len(ready)
    cpu = sum(map(attrgetter("cpu"), ready)) + pending_cpu
    mem = sum(map(attrgetter("memory"), ready)) + pending_memory
    low = s.scale_down_utilization
    low_now = [h.name for h in ready if h.cpu < low and h.memory < low]
    new_low = dict.fromkeys(low_now, now)
    new_low.update({name: low_since[name] for name in low_since.keys() & new_low.keys()})
    if n == 0:
        want = max(hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"no ready host; load of {cpu:.2f} CPU / {mem:.2f} memory hosts"), new_low
    mean_cpu, mean_mem = cpu / n, mem / n
    figures = f"mean CPU {mean_cpu:.2f} (threshold {s.cpu_threshold:g}), memory {mean_mem:.2f} " \
              f"(threshold {s.memory_threshold:g})"
    if mean_cpu > s.cpu_threshold or mean_mem > s.memory_threshold:
        want = max(n + 1, hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"busy: {figures}; {want} hosts bring it under"), new_low

    def others_carry(k: int) -> bool:
        rest = n - k - 1
        return (rest > 0 and cpu / rest <= s.cpu_threshold and mem / rest <= s.memory_threshold) or \
            (rest == 0 and cpu == 0 and mem == 0)

    k = first_true(0, min(len(new_low), n), lambda k: not others_carry(k))
    if k:
        return Need("utilization", n - k, f"{k} host(s) below {s.scale_down_utilization:g}; {figures}"), new_low
    return Need("utilization", n, f"OK: {figures}"), new_low


def low_hosts(s: Settings, ready: Sequence[HostLoad]) -> list[HostLoad]:
    """Before P5 the removals looked at every ready host, low or not."""
    return list(ready)
