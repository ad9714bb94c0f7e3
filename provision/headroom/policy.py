"""Headroom decisions: pure functions from (settings, observation, memory, now) to a decision.

No I/O here. `decide` runs every configured policy, lets the largest need win, applies the
safety rules (min/max, halt on unknown hosts, cooldowns, who may be removed) and returns a
`Decision` that carries the memory for the next run (histories, timers), so the caller only
has to persist it. The data types are in `policy_model`, the policies in `policy_rules`.

The three policies (`containers`, `utilization`, `predictive`) are described in `policy_rules`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

# The data types and the policies live in their own modules; they are re-exported here, the
# module callers import (`from provision.headroom.policy import decide, Settings, ...`).
from .policy_model import (BOOTING, CLAMPED, DECISIONS_KEPT, HALT_UNKNOWN_COUNT, HALT_UNKNOWN_FRACTION,
                           MIN_PREDICT_SAMPLES, PREDICT_AHEAD, PREDICT_WINDOW, PROVISIONING_BOUND, READY,
                           REPLAYS_KEPT, TREND_COVER, TREND_FIT, UNDRAINABLE_SKIP, UNKNOWN, UNREADY, Decision,
                           HostLoad, Memory, Need, Observation, Sample, Settings, hosts_of_json, observation_json,
                           settings_json)
from .policy_hosts import (PoolView, choose_removals, emptiest_first, pool_view, removable_hosts, removal_candidates,
                           removal_order, removals)
from .policy_trend import compact
from .policy_rules import (containers_hosts_needed, containers_policy, fit_quality, history_window, hosts_for_load,
                           load_factor, noise_spread, predict, predict_window, predictive_policy, slope, utilization_policy)
from .policy_rules import fit_window, low_hosts

__all__ = [
    "BOOTING", "CLAMPED", "DECISIONS_KEPT", "HALT_UNKNOWN_COUNT", "HALT_UNKNOWN_FRACTION", "MIN_PREDICT_SAMPLES",
    "PREDICT_AHEAD", "PREDICT_WINDOW", "PROVISIONING_BOUND", "READY", "REPLAYS_KEPT", "TREND_COVER", "TREND_FIT",
    "UNDRAINABLE_SKIP", "UNKNOWN", "UNREADY", "Decision", "HostLoad", "Memory", "Need", "Observation", "Sample",
    "Settings", "hosts_of_json", "observation_json", "settings_json", "containers_hosts_needed",
    "containers_policy", "fit_quality", "history_window", "noise_spread", "hosts_for_load", "load_factor", "predict", "predict_window",
    "predictive_policy", "slope", "utilization_policy", "replay", "removable", "emptiness_key",
    "removal_candidates", "choose_removals", "window_values", "sane_memory", "halted", "decide", "split_adds",
    "without", "not_after", "remember", "memory_of", "summarize", "PoolView", "pool_view", "emptiest_first",
    "removable_hosts", "removal_order", "removals", "low_hosts",
]


def replay(record: Mapping[str, Any]) -> "Decision":
    """Decide a recorded decision again from what it recorded; the same decision comes out."""
    from ..spec.model import parse_reserve
    data = record.get("replay")
    if not data:
        raise ValueError("this decision record has nothing to replay from (recorded by an older provision)")
    raw = dict(data["settings"])
    raw["reserve"] = parse_reserve(raw["reserve"])
    raw["policies"] = tuple(raw["policies"])
    o = data["observation"]
    hosts = hosts_of_json(o["hosts"])
    obs = Observation(at=o["at"], hosts=hosts, pending=o["pending"], pending_cpu=o["pending_cpu"],
                      pending_memory=o["pending_memory"], source=o["source"])
    return decide(Settings(**raw), obs, Memory.from_json(data["memory"]), record["at"])



# ---- combination -------------------------------------------------------------------------

def removable(host: HostLoad, pool: str | Sequence[str]) -> bool:
    """Only ready workers of the managed pool(s) that carry no etcd member may ever be removed."""
    pools = (pool,) if isinstance(pool, str) else tuple(pool)
    return host.pool in pools and host.role == "worker" and not host.etcd and host.status == READY


def emptiness_key(host: HostLoad) -> tuple[float, float, str]:
    return (host.containers, host.cpu + host.memory, host.name)


def window_values(wanted: Sequence[tuple[float, int]], now: float, window: float) -> list[int] | None:
    """Sizes wanted during the last `window` seconds: every value recorded in it plus the one in
    effect when it began; None when the record does not reach back that far."""
    if window <= 0:
        return []
    before = [n for at, n in wanted if at <= now - window]
    inside = [n for at, n in wanted if now - window < at <= now]
    if not before:
        return None
    return [before[-1]] + inside


def sane_memory(memory: Memory, now: float) -> Memory:
    """Memory as of `now`: sorted history and windows, nothing from the future (a clock that went
    back must not block scaling: a future last change is forgotten)."""
    last_at, last = memory.last_change_at, memory.last_change
    if last_at is not None and last_at > now:
        last_at, last = None, None
    return replace(memory, last_change_at=last_at, last_change=last,
                   history=tuple(sorted((x for x in memory.history if x.at <= now), key=lambda x: x.at)),
                   wanted=tuple(sorted(((at, n) for at, n in memory.wanted if at <= now), key=lambda w: w[0])),
                   low_since=not_after(memory.low_since, now),
                   undrainable={k: v for k, v in memory.undrainable.items() if v <= now},
                   added=not_after(memory.added, now))


def not_after(times: Mapping[str, float], now: float) -> Mapping[str, float]:
    """`times` with every time after `now` set to `now`; the same mapping when none is (the
    usual case: no copy of a timer per host on every decision)."""
    if not times or max(times.values()) <= now:
        return times
    return {k: min(v, now) for k, v in times.items()}


def halted(troubled: int, total: int) -> bool:
    """cluster-autoscaler: more than 3 AND more than 45% of the hosts unready."""
    return troubled > HALT_UNKNOWN_COUNT and troubled > HALT_UNKNOWN_FRACTION * total


def decide(s: Settings, obs: Observation, memory: Memory, now: float | None = None) -> Decision:
    """The one decision for the pool now. Pure: same inputs, same decision.

    Only ready hosts are capacity; booting hosts are capacity on its way (`upcoming`), so they
    are neither added again nor removed; silent hosts (unknown, unready) are neither. The size
    wanted now is stabilised both ways: the pool shrinks only to the largest size wanted
    throughout the scale-down window, and grows only to the smallest size wanted throughout
    the scale-up window, unless work is pending (it cannot wait)."""
    now = obs.at if now is None else now
    given = memory
    memory = sane_memory(memory, now)
    # The per-host passes (policy_hosts): over 50,000 hosts in well under 100 ms (P5, issue 11).
    view = pool_view(s, obs)
    pool, sizes, ready, booting, troubled = view.pool, view.sizes, view.ready, view.booting, view.troubled
    current = len(pool)
    upcoming = len(ready) + len(booting)
    used = view.containers + obs.pending
    sample = Sample(now, float(used), view.cpu + obs.pending_cpu, view.memory + obs.pending_memory)
    # the newest raw, older samples as five-minute means: bounded whatever the loop's frequency
    history = compact(tuple(x for x in memory.history
                            if now - x.at <= history_window(s.predict_ahead) and x.at < now) + (sample,),
                      now, fit_window(s.predict_ahead))
    inputs = {"hosts": len(obs.hosts), "pool_hosts": current, "ready": len(ready),
              "booting": sorted(h.name for h in booting),
              "unknown": sorted(h.name for h in troubled), "containers": used, "pending": obs.pending,
              "cpu": round(sample.cpu, 4), "memory": round(sample.memory, 4), "source": obs.source,
              "clamped": view.clamped,
              "pool_sizes": dict(sizes)}
    # A host headroom added is remembered until it first reports; one still silent past the
    # provisioning bound never came up (nothing can run there): it is replaced.
    added = {k: v for k, v in memory.added.items() if k in view.not_ready}
    failed = sorted(k for k, v in added.items() if now - v > PROVISIONING_BOUND)
    undrainable = {k: v for k, v in memory.undrainable.items()
                   if now - v < max(UNDRAINABLE_SKIP, s.scale_down_cooldown)}

    def done(action: str, desired: int, reason: str, needs=(), add: int = 0, remove=(), spare=(), wanted=None,
             adds=None, **mem) -> Decision:
        mem.setdefault("added", added)
        mem.setdefault("undrainable", undrainable)
        return Decision(at=now, pool=s.pool, action=action, current=current, desired=desired, reason=reason,
                        add=add, remove=tuple(remove), spare=tuple(spare), needs=tuple(needs), inputs=inputs,
                        memory=replace(memory, history=history,
                                       wanted=memory.wanted if wanted is None else wanted, **mem),
                        settings=s, observation=obs, memory_before=given, adds=dict(adds or {}))

    if halted(len(troubled), len(obs.hosts)):
        return done("halt", current, f"halted: {len(troubled)} of {len(obs.hosts)} hosts unknown or unready "
                                     f"({', '.join(sorted(h.name for h in troubled)[:5])}"
                                     f"{', ...' if len(troubled) > 5 else ''}); limit is more than "
                                     f"{HALT_UNKNOWN_COUNT} and more than {HALT_UNKNOWN_FRACTION:.0%}",
                    shrink_since=None)

    if failed:
        return done("replace", current, f"{len(failed)} host(s) added more than {PROVISIONING_BOUND:g}s ago never "
                                        f"reported ({', '.join(failed)}): destroy them; the next pass adds what "
                                        f"is needed", remove=failed,
                    added={k: v for k, v in added.items() if k not in failed})

    needs: list[Need] = []
    low_since = dict(memory.low_since)
    # With the utilization policy only its low hosts may go: removals look at them, not the pool.
    candidates: Sequence[HostLoad] = ready
    for policy in s.policies:
        if policy == "containers":
            needs.append(containers_policy(s, len(ready), used))
        elif policy == "utilization":
            candidates = low_hosts(s, ready)
            need, low_since = utilization_policy(s, pool, obs.pending_cpu, obs.pending_memory, memory.low_since,
                                                 now, ready=ready, load=(view.cpu, view.memory), below=candidates)
            needs.append(need)
        elif policy == "predictive":
            needs.append(predictive_policy(s, history, len(ready), obs.pending, len(booting)))
    largest = max(needs, key=lambda n: n.hosts) if needs else Need("none", len(ready), "no policy")
    raw = largest.hosts
    wanted_now = max(s.min_count, min(s.max_count, raw))
    bound = ""
    if wanted_now != raw:
        bound = f" (policies want {raw}; pool is bounded to {s.min_count}..{s.max_count})"
    why = f"{largest.policy} wants {largest.hosts}{bound}"
    keep_for = max(s.scale_up_cooldown, s.scale_down_cooldown)
    older = [w for w in memory.wanted if w[0] <= now - keep_for][-1:]
    # The size the policies asked for, not the capacity that existed (Brooklyn: shrink to the
    # largest size *desired* in the window): recording booting hosts as wanted held the pool
    # at a booting overshoot for a whole window after it served (the 420 s ramp: 1.54x idle).
    # No removal happens while hosts boot anyway (below).
    wanted = tuple(older) + tuple(w for w in memory.wanted if w[0] > now - keep_for and w[0] < now) + \
        ((now, wanted_now),)
    since_change = None if memory.last_change_at is None else now - memory.last_change_at
    booting_note = f" ({len(booting)} booting)" if booting else ""
    silent = view.silent

    if wanted_now > upcoming:
        up = window_values(memory.wanted, now, s.scale_up_cooldown)
        target = wanted_now
        if not obs.pending and up is not None and upcoming >= s.min_count:
            target = max(upcoming, min(up + [wanted_now]))
        # Silent hosts are not capacity, but they are paid for: the pool never passes max.
        target = min(target, upcoming + max(0, s.max_count - current))
        if target <= upcoming:
            if target < wanted_now and current >= s.max_count:
                return done("none", wanted_now, f"{why}; pool is at its max of {s.max_count} hosts counting "
                                                f"{len(silent)} silent ({', '.join(sorted(h.name for h in silent))})",
                            needs, wanted=wanted, low_since=low_since)
            return done("wait", wanted_now, f"{why}; growth not wanted for the whole {s.scale_up_cooldown:g}s "
                                            f"scale-up window yet (at most {target} hosts wanted in it)", needs,
                        wanted=wanted, low_since=low_since)
        if since_change is not None and since_change < s.scale_up_cooldown:
            return done("wait", target, f"{why}; scale-up cooldown: {since_change:.0f}s of "
                                        f"{s.scale_up_cooldown:g}s since the last change", needs,
                        wanted=wanted, low_since=low_since)
        adds = split_adds(s, sizes, target - upcoming)
        where = "" if not s.burst_pool else " (" + ", ".join(f"{n} to {p}" for p, n in adds.items()) + ")"
        return done("add", target, f"{why}: add {target - upcoming} in one batch{where}{booting_note}", needs,
                    add=target - upcoming, adds=adds, wanted=wanted, low_since=low_since, last_change_at=now,
                    last_change="add", shrink_since=None)
    if wanted_now < upcoming:
        down = window_values(memory.wanted, now, s.scale_down_cooldown)
        if booting:
            return done("wait", wanted_now, f"{why}; {len(booting)} host(s) still booting "
                                            f"({', '.join(sorted(h.name for h in booting))})", needs,
                        wanted=wanted, low_since=low_since)
        if down is None:
            return done("wait", wanted_now, f"{why}; the scale-down window of {s.scale_down_cooldown:g}s "
                                            f"is not covered by the record yet", needs, wanted=wanted,
                        low_since=low_since)
        target = max(down + [wanted_now])
        if target >= upcoming:
            return done("wait", target, f"{why}; the largest size wanted in the last "
                                        f"{s.scale_down_cooldown:g}s is {target}, the pool has {upcoming}",
                        needs, wanted=wanted, low_since=low_since)
        if memory.last_change == "add" and since_change is not None and since_change < s.scale_down_cooldown:
            return done("wait", target, f"{why}; scale-down cooldown: {since_change:.0f}s of "
                                        f"{s.scale_down_cooldown:g}s since the last addition", needs,
                        wanted=wanted, low_since=low_since)
        chosen, spare = removals(s, candidates, low_since, undrainable, now, upcoming - target)
        gone = set(chosen)
        if not chosen:
            return done("none", target, f"{why}; no host of the pool may be removed now (removable: ready "
                                        f"workers without etcd, not failing to drain"
                                        f"{', low for the whole window' if 'utilization' in s.policies else ''})",
                        needs, wanted=wanted, low_since=low_since)
        return done("remove", upcoming - len(chosen), f"{why}: remove {', '.join(chosen)} towards {target} "
                                                      f"(emptiest first; non-empty hosts one at a time)",
                    needs, remove=chosen, spare=spare, wanted=wanted,
                    low_since=without(low_since, gone),
                    last_change_at=now, last_change="remove", shrink_since=None)
    return done("none", wanted_now, f"{why}: pool is at {upcoming}{booting_note}", needs, wanted=wanted,
                low_since=low_since, shrink_since=None)


def without(times: Mapping[str, float], gone: Iterable[str]) -> dict[str, float]:
    """`times` less the hosts in `gone` (a copy, then a few deletions: not a pass per host)."""
    out = dict(times)
    for name in gone:
        out.pop(name, None)
    return out


def split_adds(s: Settings, sizes: Mapping[str, int], count: int) -> dict[str, int]:
    """Where `count` new hosts go: the managed pool up to `primary_max`, the rest to the burst
    pool (cloud bursting); without a burst pool, all to the managed pool."""
    if not s.burst_pool or s.primary_max is None:
        return {s.pool: count}
    primary = min(count, max(0, s.primary_max - sizes.get(s.pool, 0)))
    out = {s.pool: primary, s.burst_pool: count - primary}
    return {k: v for k, v in out.items() if v}


def remember(headroom_state: Mapping[str, Any], decision: Decision, keep: int = DECISIONS_KEPT) -> dict[str, Any]:
    """The new state["headroom"]: memory for the next run and the last `keep` decision records."""
    if keep < 1:
        raise ValueError("remember: keep must be at least 1")
    old = list(headroom_state.get("decisions") or [])
    kept = old[max(0, len(old) - (keep - 1)):] if keep > 1 else []
    records = kept + [decision.record()]
    # What a replay needs (every host's load, the memory) is large on a big cluster: only the
    # newest REPLAYS_KEPT records keep it.
    for record in records[:-REPLAYS_KEPT]:
        record.pop("replay", None)
    return {"memory": decision.memory.to_json(), "decisions": records}


def memory_of(headroom_state: Mapping[str, Any] | None) -> Memory:
    return Memory.from_json((headroom_state or {}).get("memory"))


def summarize(decisions: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per recorded decision, for `--explain`."""
    import time
    lines = []
    for d in decisions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.get("at", 0)))
        lines.append(f"{when}Z {d.get('action')}: {d.get('current')} -> {d.get('desired')}; {d.get('reason')}")
        for p in d.get("policies", []):
            lines.append(f"    {p['policy']}: {p['hosts']} hosts; {p['reason']}")
    return lines
