"""The per-host passes of a headroom decision: what the pool is made of, and which hosts may go
in which order. Pure functions over the observed hosts.

They run on every decision over every host (50,000 in issue 11's P5, under 100 ms with the
decision record), so each pass is a comprehension or a C-level map, a question asked of the
few hosts it concerns is not asked of all of them, and sorts use single-type keys, which
CPython compares without the generic per-element comparison of tuple keys (a tuple-key sort
of 18,000 candidates was most of P5's figure).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import chain, compress
from operator import eq
from typing import Container, Iterable, Mapping, Sequence, TypeVar

from .policy_model import BOOTING, CLAMPED, READY, UNDRAINABLE_SKIP, UNKNOWN, UNREADY, HostLoad, Observation, Settings

__all__ = ["PoolView", "pool_view", "removable_hosts", "removal_candidates", "removal_order", "emptiest_first",
           "removals", "choose_removals"]

T = TypeVar("T")


@dataclass(frozen=True)
class PoolView:
    """The managed pool(s) as one decision sees them. Host lists keep the observation's order."""

    pool: tuple[HostLoad, ...]  # hosts of the managed pool and the burst pool
    sizes: dict[str, int]  # pool name -> its hosts, for each managed pool
    ready: list[HostLoad]  # capacity
    booting: list[HostLoad]  # capacity on its way
    silent: list[HostLoad]  # unknown or unready: neither capacity nor idle
    not_ready: set[str]  # names of every pool host that is not ready (booting and silent among them)
    troubled: list[HostLoad]  # unknown or unready hosts of the whole cluster (the halt rule)
    clamped: list[str]  # names of the cluster's hosts whose report was clamped, sorted
    containers: int  # sums over the ready hosts
    cpu: float
    memory: float


def pool_view(s: Settings, obs: Observation) -> PoolView:
    """The pool's hosts grouped by status, with the sums over the ready ones."""
    pools = s.pools
    hosts = obs.hosts
    # Usually nearly every host is a ready host of the pool without flags: one pass finds where
    # the few others are, the other questions (status, pool, flags) go to them only, and the
    # pool, its ready hosts and their sums are the hosts and the observation's columns less
    # those places, taken by slices (no step per host in Python).
    odd_at = [i for i, h in enumerate(hosts) if h.flags or h.status != READY or h.pool not in pools]
    odd = [hosts[i] for i in odd_at]
    outside = [i for i in odd_at if hosts[i].pool not in pools]
    not_serving = [i for i in odd_at if hosts[i].status != READY or hosts[i].pool not in pools]
    others = [h for h in odd if h.pool not in pools]
    waiting = [h for h in odd if h.status != READY and h.pool in pools]
    pool = tuple(skipping(hosts, outside))
    ready = list(skipping(hosts, not_serving))
    sizes = {pools[0]: len(pool)} if len(pools) == 1 else Counter([h.pool for h in pool])
    silent = [h for h in waiting if h.status == UNKNOWN or h.status == UNREADY]
    flagged = [h for h in odd if h.flags]
    columns = obs.columns
    return PoolView(
        pool=pool, sizes={name: sizes.get(name, 0) for name in pools}, ready=ready,
        booting=[h for h in waiting if h.status == BOOTING], silent=silent,
        not_ready={h.name for h in waiting},
        troubled=silent + [h for h in others if h.status == UNKNOWN or h.status == UNREADY],
        clamped=sorted([h.name for h in flagged if CLAMPED in h.flags]),
        # the sums over the ready hosts' own fields, added in the same order
        containers=sum(skipping(columns["containers"], not_serving)),
        cpu=sum(skipping(columns["cpu"], not_serving)), memory=sum(skipping(columns["memory"], not_serving)))


def skipping(items: Sequence[T], skip: Sequence[int]) -> Iterable[T]:
    """`items` in order less those at the ascending indexes `skip`: slices between them."""
    if not skip:
        return items
    parts, start = [], 0
    for i in skip:
        parts.append(items[start:i])
        start = i + 1
    parts.append(items[start:])
    return chain.from_iterable(parts)


def removable_hosts(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
                    undrainable: Mapping[str, float], now: float) -> list[HostLoad]:
    """The hosts that may be removed now, in `pool`'s order: ready workers of the managed pools
    without etcd, not recently failing to drain, and with the utilization policy low for the
    whole scale-down window."""
    pools = s.pools
    skip = max(UNDRAINABLE_SKIP, s.scale_down_cooldown)
    blocked = {name for name, failed in undrainable.items() if now - failed < skip}
    if "utilization" in s.policies:
        # one pass: the names low for the whole window, less the blocked ones, then the hosts.
        # Usually every timer is old enough (now - since falls as since grows: the newest tells).
        window = s.scale_down_cooldown
        # (names asked first: most hosts are not low and need no other question; when every
        # timer counts, the timers' own keys answer, with no set built of them)
        low: Container[str] = low_since
        if blocked or (low_since and now - max(low_since.values()) < window):
            low = {name for name, since in low_since.items() if not now - since < window}.difference(blocked)
        return [h for h in pool if h.name in low and h.status == READY and h.role == "worker" and not h.etcd
                and h.pool in pools]
    out = [h for h in pool if h.status == READY and h.role == "worker" and not h.etcd and h.pool in pools]
    if blocked:
        out = [h for h in out if h.name not in blocked]
    return out


def removal_candidates(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
                       undrainable: Mapping[str, float], now: float) -> list[HostLoad]:
    """Removable hosts, burst pool first, then emptiest first. A host that recently failed to drain is skipped; with
    the utilization policy only hosts below scale_down_utilization for the whole scale-down
    window qualify (cluster-autoscaler's unneeded time)."""
    hosts = removable_hosts(s, pool, low_since, undrainable, now)
    return [hosts[i] for i in removal_order(hosts, s.burst_pool)]


def removal_order(hosts: Sequence[HostLoad], burst: str | None = None) -> list[int]:
    """Indexes of `hosts` in removal order: burst pool first, then by (containers, cpu + memory,
    name). Sorted on columns taken in the hosts' own order (a host's fields are read once, where
    they lie in memory), by one single-type key at a time from the last key to the first (stable
    sorts), names only within runs that tie on the other two: CPython sorts floats and small
    ints several times faster than tuples, and a sorted visit of 18,000 hosts' fields is mostly
    cache misses."""
    return ordered(hosts, burst)[0]


def ordered(hosts: Sequence[HostLoad], burst: str | None = None) -> tuple[list[int], list[int]]:
    """`removal_order`, and the hosts' container counts (by index) it sorted on."""
    containers = [h.containers for h in hosts]
    loads = [h.cpu + h.memory for h in hosts]
    order = sorted(range(len(hosts)), key=loads.__getitem__)
    order.sort(key=containers.__getitem__)
    by_load = [loads[i] for i in order]
    # runs of equal (containers, load): sorted by name, the last key
    ties = [j for j in compress(range(1, len(order)), map(eq, by_load[1:], by_load))
            if containers[order[j]] == containers[order[j - 1]]]
    if ties:
        names = [h.name for h in hosts]
        start = end = -1
        for j in ties + [-1]:
            if j != end + 1:
                if end > start:
                    order[start:end + 1] = sorted(order[start:end + 1], key=names.__getitem__)
                start = j - 1
            end = j
    if burst is None:
        return order, containers
    in_burst = [h.pool == burst for h in hosts]
    return [i for i in order if in_burst[i]] + [i for i in order if not in_burst[i]], containers


def emptiest_first(hosts: Sequence[HostLoad]) -> list[HostLoad]:
    """`hosts` by (containers, cpu + memory, name)."""
    return [hosts[i] for i in removal_order(hosts)]


def removals(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
             undrainable: Mapping[str, float], now: float, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`choose_removals` of `removal_candidates`, on columns: after the sort no host is visited
    again, only its name, pool and container count taken in the pool's order."""
    hosts = removable_hosts(s, pool, low_since, undrainable, now)
    if count <= 0 or not hosts:
        return (), ()
    order, containers = ordered(hosts, s.burst_pool)
    names = [h.name for h in hosts]
    # burst pool first already (removal_order): the first pool's hosts lead. Without a burst
    # pool every removable host is of the managed pool.
    pools = [h.pool for h in hosts] if s.burst_pool else [s.pool] * len(hosts)
    first = pools[order[0]]
    first_pool = [i for i in order if pools[i] == first] if s.burst_pool else order
    if s.burst_pool or min(containers) < 0:
        empty = [names[i] for i in first_pool if containers[i] == 0][:count]
    else:  # sorted by container count, none below 0: the empty hosts lead, no search for them
        empty = [names[i] for i in order[:min(count, containers.count(0))]]
    chosen = tuple(empty) if empty else (names[first_pool[0]],)
    rest = order if not (s.burst_pool and first == s.burst_pool) else \
        first_pool + [i for i in order if pools[i] != s.burst_pool]
    in_order = [names[i] for i in rest]
    # Usually the chosen hosts lead the order (the emptiest come first): the spare ones are the
    # rest of it, with no lookup per host. Names are unique: a prefix equal to them is them.
    if tuple(in_order[:len(chosen)]) == chosen:
        return chosen, tuple(in_order[len(chosen):])
    taken = set(chosen)
    return chosen, tuple([name for name in in_order if name not in taken])


def choose_removals(s: Settings, candidates: Sequence[HostLoad], count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(chosen, spare): in the candidates' order (burst pool first), emptiest first; empty hosts
    may go together, a non-empty host only alone. `spare` are the other candidates in order,
    tried when a chosen host will not drain."""
    if count <= 0 or not candidates:
        return (), ()
    first = candidates[0].pool
    first_pool = [h for h in candidates if h.pool == first]
    if s.burst_pool and first == s.burst_pool:
        candidates = first_pool + [h for h in candidates if h.pool != s.burst_pool]
    empty = [h.name for h in first_pool if h.containers == 0][:count]
    chosen = tuple(empty) if empty else (first_pool[0].name,)
    taken = set(chosen)  # a set: thousands of empty hosts made this quadratic (P5, issue 11)
    return chosen, tuple([h.name for h in candidates if h.name not in taken])
