"""Headroom decisions: pure functions from (settings, observation, memory, now) to a decision.

No I/O here. `decide` runs every configured policy, lets the largest need win, applies the
safety rules (min/max, halt on unknown hosts, cooldowns, who may be removed) and returns a
`Decision` that carries the memory for the next run (histories, timers), so the caller only
has to persist it.

Policies:
- `containers` (Clocker): possible = containers_per_host x hosts, available = possible -
  used; HOT (add) while reserve > available, COLD (remove) while available > reserve +
  containers_per_host.
- `utilization` (cluster-autoscaler): mean CPU / memory above their thresholds adds hosts
  (enough to bring the mean back under); hosts below `scale_down_utilization` on both for
  `scale_down_cooldown` are removable while the rest stay under the thresholds.
- `predictive` (Stratos): each load factor is predicted as
  average + gradient*t + 1/2*curvature*t^2 over the recorded history and sized like the
  reactive policies, so a rising ramp is met before it arrives.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from ..spec.model import Reserve

# cluster-autoscaler: halt when more than 45% or more than 3 hosts are unready.
HALT_UNKNOWN_FRACTION = 0.45
HALT_UNKNOWN_COUNT = 3
# Stratos extrapolates one step ahead; we look ahead by about the time a new host takes to
# boot and join, measured from the newest sample.
PREDICT_AHEAD = 180.0
PREDICT_WINDOW = 300.0  # history used for average, gradient and curvature
MIN_PREDICT_SAMPLES = 3
DECISIONS_KEPT = 50

READY, UNKNOWN, UNREADY = "ready", "unknown", "unready"


@dataclass(frozen=True)
class Settings:
    """What the policies need from the spec (`headroom:` and the managed pool)."""

    pool: str
    min_count: int
    max_count: int
    policies: tuple[str, ...] = ("containers",)
    containers_per_host: int = 8
    reserve: Reserve = Reserve(count=1)
    cpu_threshold: float = 0.7
    memory_threshold: float = 0.8
    scale_down_utilization: float = 0.5
    scale_up_cooldown: float = 30.0
    scale_down_cooldown: float = 600.0

    @classmethod
    def from_spec(cls, spec: Any) -> "Settings":
        """Settings of `spec.headroom` for its pool; the spec must have a headroom section."""
        h = spec.headroom
        pool = spec.pool(h.pool)
        return cls(pool=h.pool, min_count=pool.min_count, max_count=pool.max_count, policies=h.policies,
                   containers_per_host=h.containers_per_host, reserve=h.reserve, cpu_threshold=h.cpu_threshold,
                   memory_threshold=h.memory_threshold, scale_down_utilization=h.scale_down_utilization,
                   scale_up_cooldown=h.scale_up_cooldown, scale_down_cooldown=h.scale_down_cooldown)


@dataclass(frozen=True)
class HostLoad:
    """One host as observed. `status` is ready, unknown (no fresh load) or unready."""

    name: str
    pool: str
    role: str
    status: str = READY
    etcd: bool = False
    containers: int = 0
    cpu: float = 0.0  # fraction of the host, 0..1
    memory: float = 0.0


@dataclass(frozen=True)
class Observation:
    """Every host of the cluster (from the provider's tagged list) with its load, plus work
    waiting for room: `pending` containers/pods, `pending_cpu`/`pending_memory` in hosts."""

    at: float
    hosts: tuple[HostLoad, ...]
    pending: int = 0
    pending_cpu: float = 0.0
    pending_memory: float = 0.0
    source: str = "etcd"


@dataclass(frozen=True)
class Sample:
    """Load of the managed pool at one time: containers in use and CPU / memory in hosts."""

    at: float
    containers: float
    cpu: float
    memory: float


@dataclass(frozen=True)
class Memory:
    """What decisions remember between runs (kept in state["headroom"])."""

    last_change_at: float | None = None
    last_change: str | None = None  # add | remove
    shrink_since: float | None = None  # since when the pool has continuously been too big
    low_since: Mapping[str, float] = field(default_factory=dict)  # host -> below scale_down_utilization since
    history: tuple[Sample, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"last_change_at": self.last_change_at, "last_change": self.last_change,
                "shrink_since": self.shrink_since, "low_since": dict(sorted(self.low_since.items())),
                "history": [[s.at, s.containers, s.cpu, s.memory] for s in self.history]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Memory":
        data = data or {}
        return cls(last_change_at=data.get("last_change_at"), last_change=data.get("last_change"),
                   shrink_since=data.get("shrink_since"), low_since=dict(data.get("low_since") or {}),
                   history=tuple(Sample(*map(float, row)) for row in data.get("history") or ()))


@dataclass(frozen=True)
class Need:
    """One policy's outcome: the pool size it wants, and why."""

    policy: str
    hosts: int
    reason: str


@dataclass(frozen=True)
class Decision:
    """What to do now and why; `memory` is what the next run starts from."""

    at: float
    pool: str
    action: str  # add | remove | none | wait | halt
    current: int
    desired: int
    reason: str
    add: int = 0
    remove: tuple[str, ...] = ()
    needs: tuple[Need, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    memory: Memory = field(default_factory=Memory)

    def record(self) -> dict[str, Any]:
        """The decision record kept in state: time, inputs, policy outcomes, action."""
        return {"at": self.at, "pool": self.pool, "action": self.action, "current": self.current,
                "desired": self.desired, "add": self.add, "remove": list(self.remove),
                "reason": self.reason, "inputs": dict(self.inputs),
                "policies": [asdict(n) for n in self.needs]}


# ---- the policies ------------------------------------------------------------------------

def containers_hosts_needed(used: float, per_host: int, reserve: Reserve, limit: int) -> int:
    """Smallest host count whose free slots cover `reserve` (Clocker not HOT); `limit` + 1
    when even `limit` hosts are not enough."""
    m = max(0, math.ceil(used / per_host)) if per_host else 0
    while m <= limit:
        if per_host * m - used >= reserve.slots(per_host * m):
            return m
        m += 1
    return limit + 1


def containers_policy(s: Settings, hosts: int, used: float) -> Need:
    """Clocker's ContainerHeadroomEnricher as a wanted size for `hosts` ready hosts."""
    per = s.containers_per_host
    possible = per * hosts
    available = possible - used
    headroom = s.reserve.slots(possible)
    if headroom > available:
        want = containers_hosts_needed(used, per, s.reserve, max(s.max_count, hosts))
        return Need("containers", want, f"HOT: {available:g} free of {possible} slots, reserve {s.reserve} "
                                        f"needs {headroom}; {want} hosts keep the reserve")
    want = hosts
    while want > 0:
        smaller = per * (want - 1)
        # COLD while a whole host's worth of slots remains above the reserve.
        if per * want - used > s.reserve.slots(per * want) + per and smaller - used >= s.reserve.slots(smaller):
            want -= 1
        else:
            break
    if want < hosts:
        return Need("containers", want, f"COLD: {available:g} free of {possible} slots, reserve {headroom}; "
                                        f"{want} hosts still keep the reserve")
    return Need("containers", hosts, f"OK: {available:g} free of {possible} slots, reserve {headroom}")


def hosts_for_load(total: float, threshold: float) -> int:
    """Hosts needed to carry `total` host-units of load with each at most `threshold` busy."""
    return max(0, math.ceil(round(total / threshold, 9)))


def utilization_policy(s: Settings, pool: Sequence[HostLoad], pending_cpu: float, pending_memory: float,
                       low_since: Mapping[str, float], now: float) -> tuple[Need, dict[str, float]]:
    """cluster-autoscaler style sizing on CPU and memory; returns the need and the updated
    map of hosts that have been below `scale_down_utilization` and since when."""
    ready = [h for h in pool if h.status == READY]
    n = len(ready)
    cpu = sum(h.cpu for h in ready) + pending_cpu
    mem = sum(h.memory for h in ready) + pending_memory
    new_low = {h.name: low_since.get(h.name, now) for h in ready
               if h.cpu < s.scale_down_utilization and h.memory < s.scale_down_utilization}
    if n == 0:
        want = max(hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"no ready host; load of {cpu:.2f} CPU / {mem:.2f} memory hosts"), new_low
    mean_cpu, mean_mem = cpu / n, mem / n
    figures = f"mean CPU {mean_cpu:.2f} (threshold {s.cpu_threshold:g}), memory {mean_mem:.2f} " \
              f"(threshold {s.memory_threshold:g})"
    if mean_cpu > s.cpu_threshold or mean_mem > s.memory_threshold:
        want = max(n + 1, hosts_for_load(cpu, s.cpu_threshold), hosts_for_load(mem, s.memory_threshold))
        return Need("utilization", want, f"busy: {figures}; {want} hosts bring it under"), new_low
    # Removable: low for the whole scale_down_cooldown, and the others can take their load.
    removable = sorted(name for name, since in new_low.items() if now - since >= s.scale_down_cooldown)
    k = 0
    while k < len(removable) and n - k - 1 > 0 and \
            cpu / (n - k - 1) <= s.cpu_threshold and mem / (n - k - 1) <= s.memory_threshold:
        k += 1
    if k:
        return Need("utilization", n - k, f"{k} host(s) below {s.scale_down_utilization:g} for "
                                          f"{s.scale_down_cooldown:g}s; {figures}"), new_low
    return Need("utilization", n, f"OK: {figures}"), new_low


def predict(history: Sequence[Sample], attribute: str, ahead: float = PREDICT_AHEAD) -> float | None:
    """Stratos: average + gradient*t + 1/2*curvature*t^2, with t counted from the middle of
    the history to `ahead` seconds past its newest sample; None without enough history."""
    if len(history) < MIN_PREDICT_SAMPLES:
        return None
    ts = [h.at for h in history]
    vs = [getattr(h, attribute) for h in history]
    n = len(ts)
    t_mean = sum(ts) / n
    average = sum(vs) / n
    gradient = slope(ts, vs)  # 0 when every sample has the same time: then only the average counts
    # Curvature: the change of the gradient between the older and the newer half.
    half = n // 2
    curvature = 0.0
    if half >= 2 and n - half >= 2:
        g_old = slope(ts[:half], vs[:half])
        g_new = slope(ts[half:], vs[half:])
        dt = (sum(ts[half:]) / (n - half)) - (sum(ts[:half]) / half)
        if dt > 0:
            curvature = (g_new - g_old) / dt
    t = (ts[-1] - t_mean) + ahead
    bend = 0.5 * curvature * t * t
    # The curvature term is noisy on short histories: it may at most double the linear trend.
    limit = abs(gradient * t)
    return max(0.0, average + gradient * t + max(-limit, min(limit, bend)))


def slope(ts: Sequence[float], vs: Sequence[float]) -> float:
    n = len(ts)
    tm, vm = sum(ts) / n, sum(vs) / n
    sxx = sum((t - tm) ** 2 for t in ts)
    return sum((t - tm) * (v - vm) for t, v in zip(ts, vs)) / sxx if sxx else 0.0


def load_factor(predicted: float, hosts: int, threshold: float, low: float) -> int:
    """Hosts for a predicted load: more when the mean would pass `threshold`; fewer only when
    it would fall below `low` (the gap between the two keeps the pool from flapping)."""
    if hosts == 0 or predicted / hosts > threshold:
        return hosts_for_load(predicted, threshold)
    if predicted / hosts < low:
        return min(hosts, max(1, hosts_for_load(predicted, threshold)))
    return hosts


def predictive_policy(s: Settings, history: Sequence[Sample], hosts: int) -> Need:
    """Stratos: size for the predicted containers, CPU and memory; the largest factor wins.
    Each factor keeps the hysteresis of its reactive policy (Clocker HOT/COLD for containers,
    threshold vs scale_down_utilization for CPU and memory)."""
    pc, pcpu, pmem = (predict(history, a) for a in ("containers", "cpu", "memory"))
    if pc is None:
        return Need("predictive", hosts, f"learning: {len(history)} of {MIN_PREDICT_SAMPLES} samples")
    by_containers = containers_policy(s, hosts, pc).hosts
    by_cpu = load_factor(pcpu, hosts, s.cpu_threshold, s.scale_down_utilization)
    by_mem = load_factor(pmem, hosts, s.memory_threshold, s.scale_down_utilization)
    want = max(by_containers, by_cpu, by_mem)
    return Need("predictive", want, f"predicted in {PREDICT_AHEAD:g}s: {pc:.1f} containers ({by_containers} hosts), "
                                    f"{pcpu:.2f} CPU ({by_cpu}), {pmem:.2f} memory ({by_mem})")


# ---- combination -------------------------------------------------------------------------

def removable(host: HostLoad, pool: str) -> bool:
    """Only ready workers of the managed pool that carry no etcd member may ever be removed."""
    return host.pool == pool and host.role == "worker" and not host.etcd and host.status == READY


def emptiness_key(host: HostLoad) -> tuple[float, float, str]:
    return (host.containers, host.cpu + host.memory, host.name)


def choose_removals(s: Settings, pool: Sequence[HostLoad], count: int) -> tuple[str, ...]:
    """Emptiest first; empty hosts may go together, a non-empty host only alone."""
    candidates = sorted((h for h in pool if removable(h, s.pool)), key=emptiness_key)
    empty = [h.name for h in candidates if h.containers == 0][:count]
    if empty:
        return tuple(empty)
    return (candidates[0].name,) if candidates and count > 0 else ()


def decide(s: Settings, obs: Observation, memory: Memory, now: float | None = None) -> Decision:
    """The one decision for the pool now. Pure: same inputs, same decision."""
    now = obs.at if now is None else now
    pool = tuple(h for h in obs.hosts if h.pool == s.pool)
    current = len(pool)
    ready = [h for h in pool if h.status == READY]
    troubled = [h for h in obs.hosts if h.status != READY]
    used = sum(h.containers for h in ready) + obs.pending
    sample = Sample(now, float(used), sum(h.cpu for h in ready) + obs.pending_cpu,
                    sum(h.memory for h in ready) + obs.pending_memory)
    history = tuple(x for x in memory.history if now - x.at <= PREDICT_WINDOW and x.at < now) + (sample,)
    inputs = {"hosts": len(obs.hosts), "pool_hosts": current, "ready": len(ready),
              "unknown": sorted(h.name for h in troubled), "containers": used, "pending": obs.pending,
              "cpu": round(sample.cpu, 4), "memory": round(sample.memory, 4), "source": obs.source}

    def done(action: str, desired: int, reason: str, needs=(), add: int = 0, remove=(), **mem) -> Decision:
        return Decision(at=now, pool=s.pool, action=action, current=current, desired=desired, reason=reason,
                        add=add, remove=tuple(remove), needs=tuple(needs), inputs=inputs,
                        memory=replace(memory, history=history, **mem))

    if troubled and (len(troubled) > HALT_UNKNOWN_COUNT or
                     len(troubled) > HALT_UNKNOWN_FRACTION * len(obs.hosts)):
        return done("halt", current, f"halted: {len(troubled)} of {len(obs.hosts)} hosts unknown or unready "
                                     f"({', '.join(sorted(h.name for h in troubled)[:5])}"
                                     f"{', ...' if len(troubled) > 5 else ''}); limit is more than "
                                     f"{HALT_UNKNOWN_COUNT} or {HALT_UNKNOWN_FRACTION:.0%}",
                    shrink_since=None)

    needs: list[Need] = []
    low_since = dict(memory.low_since)
    for policy in s.policies:
        if policy == "containers":
            needs.append(containers_policy(s, len(ready), used))
        elif policy == "utilization":
            need, low_since = utilization_policy(s, pool, obs.pending_cpu, obs.pending_memory,
                                                 memory.low_since, now)
            needs.append(need)
        elif policy == "predictive":
            needs.append(predictive_policy(s, history, len(ready)))
    # Policies size the pool from the ready hosts' load; hosts not ready yet (booting) are
    # counted as coming capacity, so a run during boot does not add them a second time.
    largest = max(needs, key=lambda n: n.hosts) if needs else Need("none", len(ready), "no policy")
    raw = largest.hosts
    desired = max(s.min_count, min(s.max_count, raw))
    bound = ""
    if desired != raw:
        bound = f" (policies want {raw}; pool is bounded to {s.min_count}..{s.max_count})"
    why = f"{largest.policy} wants {largest.hosts}{bound}"
    since_change = None if memory.last_change_at is None else now - memory.last_change_at

    if desired > current:
        if since_change is not None and since_change < s.scale_up_cooldown:
            return done("wait", desired, f"{why}; scale-up cooldown: {since_change:.0f}s of "
                                         f"{s.scale_up_cooldown:g}s since the last change", needs,
                        shrink_since=None, low_since=low_since)
        return done("add", desired, f"{why}: add {desired - current} in one batch", needs, add=desired - current,
                    shrink_since=None, low_since=low_since, last_change_at=now, last_change="add")
    if desired < current:
        shrink_since = memory.shrink_since if memory.shrink_since is not None else now
        if now - shrink_since < s.scale_down_cooldown:
            return done("wait", desired, f"{why}; too big for {now - shrink_since:.0f}s of the "
                                         f"{s.scale_down_cooldown:g}s it must last before removing", needs,
                        shrink_since=shrink_since, low_since=low_since)
        if since_change is not None and since_change < s.scale_down_cooldown:
            return done("wait", desired, f"{why}; scale-down cooldown: {since_change:.0f}s of "
                                         f"{s.scale_down_cooldown:g}s since the last change", needs,
                        shrink_since=shrink_since, low_since=low_since)
        chosen = choose_removals(s, pool, current - desired)
        gone = set(chosen)
        if not chosen:
            return done("none", desired, f"{why}; no host of the pool may be removed (none ready)", needs,
                        shrink_since=shrink_since, low_since=low_since)
        return done("remove", desired, f"{why}: remove {', '.join(chosen)} (emptiest first; non-empty "
                                       f"hosts one at a time)", needs, remove=chosen, shrink_since=None,
                    low_since={k: v for k, v in low_since.items() if k not in gone},
                    last_change_at=now, last_change="remove")
    return done("none", desired, f"{why}: pool is at {current}", needs, shrink_since=None, low_since=low_since)


def remember(headroom_state: Mapping[str, Any], decision: Decision, keep: int = DECISIONS_KEPT) -> dict[str, Any]:
    """The new state["headroom"]: memory for the next run and the last `keep` decision records."""
    records = list(headroom_state.get("decisions") or [])[-(keep - 1):] + [decision.record()]
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
