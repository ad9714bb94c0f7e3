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

# cluster-autoscaler: halt when more than 3 hosts AND more than 45% of them are unready
# (--ok-total-unready-count, --max-total-unready-percentage).
HALT_UNKNOWN_FRACTION = 0.45
HALT_UNKNOWN_COUNT = 3
# cluster-autoscaler's --max-node-provision-time: a new host silent for longer than this is
# no longer "booting" but unknown (reported, and it counts towards the halt rule).
PROVISIONING_BOUND = 900.0
# A host that failed to drain is skipped as a removal candidate for this long, or for the
# scale-down window when that is longer.
UNDRAINABLE_SKIP = 600.0
# Stratos extrapolates one step ahead; we look ahead by about the time a new host takes to
# boot and join, measured from the newest sample.
PREDICT_AHEAD = 180.0
PREDICT_WINDOW = 300.0  # history used for average, gradient and curvature
MIN_PREDICT_SAMPLES = 3
TREND_FIT = 0.8  # R^2 a trend needs before the predictive policy extrapolates it
# A trend extrapolated `ahead` seconds is fitted over at least that long (a five-minute fit
# stretched over a fifteen-minute boot turns every swing into a runaway), and only once the
# record reaches back over most of that window (the first samples after a start are no trend).
TREND_COVER = 0.7
DECISIONS_KEPT = 50
REPLAYS_KEPT = 10

READY, UNKNOWN, UNREADY, BOOTING = "ready", "unknown", "unready", "booting"
# Flag on a host whose published load was out of range and clamped to 0..1.
CLAMPED = "clamped"


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
    # predictive: how far ahead to size, about the time a new host takes to boot and join
    predict_ahead: float = PREDICT_AHEAD
    # cloud bursting: a second pool (another provider) filled only once `pool` has
    # `primary_max` hosts and emptied first; min_count / max_count then cover both pools.
    burst_pool: str | None = None
    primary_max: int | None = None

    @property
    def pools(self) -> tuple[str, ...]:
        """The pools headroom sizes: the managed pool, then the burst pool."""
        return (self.pool,) + ((self.burst_pool,) if self.burst_pool else ())

    @classmethod
    def from_spec(cls, spec: Any) -> "Settings":
        """Settings of `spec.headroom` for its pool; the spec must have a headroom section."""
        h = spec.headroom
        pool = spec.pool(h.pool)
        low, high, burst = pool.min_count, pool.max_count, {}
        if h.burst_pool:
            extra = spec.pool(h.burst_pool)
            low, high = low + extra.min_count, high + extra.max_count
            burst = {"burst_pool": h.burst_pool, "primary_max": pool.max_count}
        return cls(pool=h.pool, min_count=low, max_count=high, policies=h.policies,
                   containers_per_host=h.containers_per_host, reserve=h.reserve, cpu_threshold=h.cpu_threshold,
                   memory_threshold=h.memory_threshold, scale_down_utilization=h.scale_down_utilization,
                   scale_up_cooldown=h.scale_up_cooldown, scale_down_cooldown=h.scale_down_cooldown, **burst)


@dataclass(frozen=True)
class HostLoad:
    """One host as observed. `status` is ready, booting (new, silent, within the
    provisioning bound), unknown (no fresh load) or unready. A host that is not ready is never
    capacity and never idle. `flags` notes what was wrong with its report (e.g. clamped)."""

    name: str
    pool: str
    role: str
    status: str = READY
    etcd: bool = False
    containers: int = 0
    cpu: float = 0.0  # fraction of the host, 0..1
    memory: float = 0.0
    flags: tuple[str, ...] = ()


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
    # (time, pool size wanted then), oldest first: the stabilisation windows read it.
    wanted: tuple[tuple[float, int], ...] = ()
    # host -> when it failed to drain: skipped as a removal candidate for a scale-down window.
    undrainable: Mapping[str, float] = field(default_factory=dict)
    # host -> when headroom added it: silent until PROVISIONING_BOUND later means booting.
    added: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"last_change_at": self.last_change_at, "last_change": self.last_change,
                "shrink_since": self.shrink_since, "low_since": dict(sorted(self.low_since.items())),
                "history": [[s.at, s.containers, s.cpu, s.memory] for s in self.history],
                "wanted": [[at, n] for at, n in self.wanted],
                "undrainable": dict(sorted(self.undrainable.items())), "added": dict(sorted(self.added.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Memory":
        data = data or {}
        return cls(last_change_at=data.get("last_change_at"), last_change=data.get("last_change"),
                   shrink_since=data.get("shrink_since"), low_since=dict(data.get("low_since") or {}),
                   history=tuple(Sample(*map(float, row)) for row in data.get("history") or ()),
                   wanted=tuple((float(at), int(n)) for at, n in data.get("wanted") or ()),
                   undrainable={k: float(v) for k, v in (data.get("undrainable") or {}).items()},
                   added={k: float(v) for k, v in (data.get("added") or {}).items()})


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
    action: str  # add | remove | replace | none | wait | halt
    current: int
    desired: int
    reason: str
    add: int = 0
    remove: tuple[str, ...] = ()
    spare: tuple[str, ...] = ()  # further removal candidates, in order, for hosts that do not drain
    needs: tuple[Need, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    memory: Memory = field(default_factory=Memory)
    # What `decide` started from: with these three a decision replays exactly (see `replay`).
    settings: Settings | None = None
    observation: Observation | None = None
    memory_before: Memory | None = None
    # pool -> hosts to add there (bursting: the managed pool up to its max, then the burst pool)
    adds: Mapping[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The decision record kept in state: time, inputs, policy outcomes, action, and what
        it was decided from (settings, every host's load, the memory with its histories and
        timers), so `replay` can decide it again."""
        out = {"at": self.at, "pool": self.pool, "action": self.action, "current": self.current,
               "desired": self.desired, "add": self.add,
               "add_pools": dict(self.adds), "remove": list(self.remove), "spare": list(self.spare),
               "reason": self.reason, "inputs": dict(self.inputs),
               "policies": [asdict(n) for n in self.needs]}
        if self.settings is not None and self.observation is not None and self.memory_before is not None:
            out["replay"] = {"settings": settings_json(self.settings),
                             "observation": observation_json(self.observation),
                             "memory": self.memory_before.to_json()}
        return out


def settings_json(s: Settings) -> dict[str, Any]:
    data = asdict(s)
    data["reserve"] = str(s.reserve)
    data["policies"] = list(s.policies)
    return data


def observation_json(obs: Observation) -> dict[str, Any]:
    return {"at": obs.at, "pending": obs.pending, "pending_cpu": obs.pending_cpu,
            "pending_memory": obs.pending_memory, "source": obs.source,
            "hosts": [[h.name, h.pool, h.role, h.status, h.etcd, h.containers, h.cpu, h.memory, list(h.flags)]
                      for h in obs.hosts]}


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
    hosts = tuple(HostLoad(name, pool, role, status, bool(etcd), int(containers), float(cpu), float(memory),
                           tuple(flags)) for name, pool, role, status, etcd, containers, cpu, memory, flags in o["hosts"])
    obs = Observation(at=o["at"], hosts=hosts, pending=o["pending"], pending_cpu=o["pending_cpu"],
                      pending_memory=o["pending_memory"], source=o["source"])
    return decide(Settings(**raw), obs, Memory.from_json(data["memory"]), record["at"])


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
        elif want == 1 and used == 0 and s.reserve.slots(0) == 0:
            want = 0  # no work and nothing to keep free: min 0 is reachable
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
    # Hosts low now whose load the others can take; the scale-down window (see `decide`)
    # makes this last, and only hosts low for that whole window are removal candidates.
    k = 0
    while k < len(new_low) and n - k - 1 >= 0 and (
            (n - k - 1 > 0 and cpu / (n - k - 1) <= s.cpu_threshold and mem / (n - k - 1) <= s.memory_threshold)
            or (n - k - 1 == 0 and cpu == 0 and mem == 0)):
        k += 1
    if k:
        return Need("utilization", n - k, f"{k} host(s) below {s.scale_down_utilization:g}; {figures}"), new_low
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
    # Noise is no trend: the trend counts as much as the straight line explains the samples
    # (R^2), so a steady noisy load predicts its average and a clean ramp its extrapolation.
    trust = fit_quality(ts, vs, gradient)
    return max(0.0, average + trust * (gradient * t + max(-limit, min(limit, bend))))


def fit_quality(ts: Sequence[float], vs: Sequence[float], gradient: float) -> float:
    """R^2 of the least-squares line: 1 for a clean trend, near 0 for noise around a level."""
    n = len(ts)
    tm, vm = sum(ts) / n, sum(vs) / n
    total = sum((v - vm) ** 2 for v in vs)
    if total == 0:
        return 1.0
    residual = sum((v - (vm + gradient * (t - tm))) ** 2 for t, v in zip(ts, vs))
    r2 = max(0.0, min(1.0, 1 - residual / total))
    # Six noisy samples can line up by chance; below TREND_FIT a line explains too little.
    return r2 if r2 >= TREND_FIT else 0.0


def slope(ts: Sequence[float], vs: Sequence[float]) -> float:
    n = len(ts)
    tm, vm = sum(ts) / n, sum(vs) / n
    sxx = sum((t - tm) ** 2 for t in ts)
    return sum((t - tm) * (v - vm) for t, v in zip(ts, vs)) / sxx if sxx else 0.0


def predict_window(ahead: float) -> float:
    """History the predictive policy fits: PREDICT_WINDOW, or `ahead` when that is longer."""
    return max(PREDICT_WINDOW, ahead)


def load_factor(predicted: float, hosts: int, threshold: float, low: float) -> int:
    """Hosts for a predicted load: more when the mean would pass `threshold`; fewer only when
    it would fall below `low` (the gap between the two keeps the pool from flapping)."""
    if hosts == 0 or predicted / hosts > threshold:
        return hosts_for_load(predicted, threshold)
    if predicted / hosts < low:
        return min(hosts, max(1, hosts_for_load(predicted, threshold)))
    return hosts


def predictive_policy(s: Settings, history: Sequence[Sample], hosts: int, pending: float = 0) -> Need:
    """Stratos: size for the predicted containers, CPU and memory; the largest factor wins.
    Each factor keeps the hysteresis of its reactive policy (Clocker HOT/COLD for containers,
    threshold vs scale_down_utilization for CPU and memory). A prediction never falls below
    the newest sample (after a turning point the fitted curve lags what is used now), and
    with too little history the newest sample is the prediction, so pending work is met."""
    newest = history[-1] if history else Sample(0.0, float(pending), 0.0, 0.0)
    window = predict_window(s.predict_ahead)
    fitted = [h for h in history if newest.at - h.at <= window]
    covered = len(fitted) >= MIN_PREDICT_SAMPLES and fitted[0].at <= newest.at - TREND_COVER * window
    predicted = [predict(fitted, a, s.predict_ahead) if covered else None for a in ("containers", "cpu", "memory")]
    learning = predicted[0] is None
    if learning:
        pc, pcpu, pmem = newest.containers, newest.cpu, newest.memory
    else:
        pc = max(newest.containers, predicted[0])
        pcpu = max(newest.cpu, predicted[1])
        pmem = max(newest.memory, predicted[2])
    by_containers = containers_policy(s, hosts, pc).hosts
    by_cpu = load_factor(pcpu, hosts, s.cpu_threshold, s.scale_down_utilization)
    by_mem = load_factor(pmem, hosts, s.memory_threshold, s.scale_down_utilization)
    want = max(by_containers, by_cpu, by_mem)
    if learning:
        return Need("predictive", want, f"learning ({len(fitted)} samples, a trend needs {MIN_PREDICT_SAMPLES} over "
                                        f"{TREND_COVER * window:.0f}s): sized for "
                                        f"now: {pc:.1f} containers ({by_containers} hosts), {pcpu:.2f} CPU "
                                        f"({by_cpu}), {pmem:.2f} memory ({by_mem})")
    return Need("predictive", want, f"predicted in {s.predict_ahead:g}s: {pc:.1f} containers ({by_containers} hosts), "
                                    f"{pcpu:.2f} CPU ({by_cpu}), {pmem:.2f} memory ({by_mem})")


# ---- combination -------------------------------------------------------------------------

def removable(host: HostLoad, pool: str | Sequence[str]) -> bool:
    """Only ready workers of the managed pool(s) that carry no etcd member may ever be removed."""
    pools = (pool,) if isinstance(pool, str) else tuple(pool)
    return host.pool in pools and host.role == "worker" and not host.etcd and host.status == READY


def emptiness_key(host: HostLoad) -> tuple[float, float, str]:
    return (host.containers, host.cpu + host.memory, host.name)


def removal_candidates(s: Settings, pool: Sequence[HostLoad], low_since: Mapping[str, float],
                       undrainable: Mapping[str, float], now: float) -> list[HostLoad]:
    """Removable hosts, burst pool first, then emptiest first. A host that recently failed to drain is skipped; with
    the utilization policy only hosts below scale_down_utilization for the whole scale-down
    window qualify (cluster-autoscaler's unneeded time)."""
    out = []
    for h in pool:
        if not removable(h, s.pools):
            continue
        failed = undrainable.get(h.name)
        if failed is not None and now - failed < max(UNDRAINABLE_SKIP, s.scale_down_cooldown):
            continue
        if "utilization" in s.policies:
            since = low_since.get(h.name)
            if since is None or now - since < s.scale_down_cooldown:
                continue
        out.append(h)
    return sorted(out, key=lambda h: (h.pool != s.burst_pool,) + emptiness_key(h))


def choose_removals(s: Settings, candidates: Sequence[HostLoad], count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(chosen, spare): in the candidates' order (burst pool first), emptiest first; empty hosts
    may go together, a non-empty host only alone. `spare` are the other candidates in order,
    tried when a chosen host will not drain."""
    if count <= 0 or not candidates:
        return (), ()
    first_pool = [h for h in candidates if h.pool == candidates[0].pool]
    if s.burst_pool and candidates[0].pool == s.burst_pool:
        candidates = first_pool + [h for h in candidates if h.pool != s.burst_pool]
    empty = [h.name for h in first_pool if h.containers == 0][:count]
    chosen = tuple(empty) if empty else (first_pool[0].name,)
    taken = set(chosen)  # a set: thousands of empty hosts made this quadratic (P5, issue 11)
    return chosen, tuple(h.name for h in candidates if h.name not in taken)


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
                   low_since={k: min(v, now) for k, v in memory.low_since.items()},
                   undrainable={k: v for k, v in memory.undrainable.items() if v <= now},
                   added={k: min(v, now) for k, v in memory.added.items()})


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
    pool = tuple(h for h in obs.hosts if h.pool in s.pools)
    current = len(pool)
    sizes = {name: sum(1 for h in pool if h.pool == name) for name in s.pools}
    ready = [h for h in pool if h.status == READY]
    booting = [h for h in pool if h.status == BOOTING]
    upcoming = len(ready) + len(booting)
    troubled = [h for h in obs.hosts if h.status in (UNKNOWN, UNREADY)]
    used = sum(h.containers for h in ready) + obs.pending
    sample = Sample(now, float(used), sum(h.cpu for h in ready) + obs.pending_cpu,
                    sum(h.memory for h in ready) + obs.pending_memory)
    history = tuple(x for x in memory.history
                    if now - x.at <= predict_window(s.predict_ahead) and x.at < now) + (sample,)
    inputs = {"hosts": len(obs.hosts), "pool_hosts": current, "ready": len(ready),
              "booting": sorted(h.name for h in booting),
              "unknown": sorted(h.name for h in troubled), "containers": used, "pending": obs.pending,
              "cpu": round(sample.cpu, 4), "memory": round(sample.memory, 4), "source": obs.source,
              "clamped": sorted(h.name for h in obs.hosts if CLAMPED in h.flags),
              "loads": {h.name: [h.status, h.containers, round(h.cpu, 4), round(h.memory, 4)] for h in pool},
              "pool_sizes": dict(sizes)}
    # A host headroom added is remembered until it first reports; one still silent past the
    # provisioning bound never came up (nothing can run there): it is replaced.
    silent_names = {h.name for h in pool if h.status != READY}
    added = {k: v for k, v in memory.added.items() if k in silent_names}
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
    for policy in s.policies:
        if policy == "containers":
            needs.append(containers_policy(s, len(ready), used))
        elif policy == "utilization":
            need, low_since = utilization_policy(s, pool, obs.pending_cpu, obs.pending_memory,
                                                 memory.low_since, now)
            needs.append(need)
        elif policy == "predictive":
            needs.append(predictive_policy(s, history, len(ready), obs.pending))
    largest = max(needs, key=lambda n: n.hosts) if needs else Need("none", len(ready), "no policy")
    raw = largest.hosts
    wanted_now = max(s.min_count, min(s.max_count, raw))
    bound = ""
    if wanted_now != raw:
        bound = f" (policies want {raw}; pool is bounded to {s.min_count}..{s.max_count})"
    why = f"{largest.policy} wants {largest.hosts}{bound}"
    keep_for = max(s.scale_up_cooldown, s.scale_down_cooldown)
    older = [w for w in memory.wanted if w[0] <= now - keep_for][-1:]
    # While hosts boot the pool is still arriving: no wish to shrink accumulates, so the
    # scale-down window starts once they serve (else a slow boot ends in an instant removal).
    recorded_now = max(wanted_now, upcoming) if booting else wanted_now
    wanted = tuple(older) + tuple(w for w in memory.wanted if w[0] > now - keep_for and w[0] < now) + \
        ((now, recorded_now),)
    since_change = None if memory.last_change_at is None else now - memory.last_change_at
    booting_note = f" ({len(booting)} booting)" if booting else ""
    silent = [h for h in pool if h.status in (UNKNOWN, UNREADY)]

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
        candidates = removal_candidates(s, pool, low_since, undrainable, now)
        chosen, spare = choose_removals(s, candidates, upcoming - target)
        gone = set(chosen)
        if not chosen:
            return done("none", target, f"{why}; no host of the pool may be removed now (removable: ready "
                                        f"workers without etcd, not failing to drain"
                                        f"{', low for the whole window' if 'utilization' in s.policies else ''})",
                        needs, wanted=wanted, low_since=low_since)
        return done("remove", upcoming - len(chosen), f"{why}: remove {', '.join(chosen)} towards {target} "
                                                      f"(emptiest first; non-empty hosts one at a time)",
                    needs, remove=chosen, spare=spare, wanted=wanted,
                    low_since={k: v for k, v in low_since.items() if k not in gone},
                    last_change_at=now, last_change="remove", shrink_since=None)
    return done("none", wanted_now, f"{why}: pool is at {upcoming}{booting_note}", needs, wanted=wanted,
                low_since=low_since, shrink_since=None)


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
