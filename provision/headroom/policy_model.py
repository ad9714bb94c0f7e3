"""Headroom's data: settings, what was observed, what decisions remember, and the decision.

Plain frozen values with their JSON forms (state keeps them; a recorded decision carries
enough of them to be decided again, see `policy.replay`). No I/O, no policy logic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import compress
from typing import Any, Mapping, Sequence

from ..spec.model import Reserve, Spec

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
    def from_spec(cls, spec: Spec) -> "Settings":
        """Settings of `spec.headroom` for its pool; the spec must have a headroom section."""
        h = spec.headroom
        if h is None:
            raise ValueError("the spec has no headroom section")
        pool = spec.pool(h.pool)
        low, high = pool.min_count, pool.max_count
        primary_max: int | None = None
        if h.burst_pool:
            extra = spec.pool(h.burst_pool)
            low, high = low + extra.min_count, high + extra.max_count
            primary_max = pool.max_count
        return cls(pool=h.pool, min_count=low, max_count=high, policies=h.policies,
                   containers_per_host=h.containers_per_host, reserve=h.reserve, cpu_threshold=h.cpu_threshold,
                   memory_threshold=h.memory_threshold, scale_down_utilization=h.scale_down_utilization,
                   scale_up_cooldown=h.scale_up_cooldown, scale_down_cooldown=h.scale_down_cooldown,
                   burst_pool=h.burst_pool or None, primary_max=primary_max)


@dataclass(frozen=True, slots=True)
class HostLoad:
    """One host as observed. `status` is ready, booting (new, silent, within the
    provisioning bound), unknown (no fresh load) or unready. A host that is not ready is never
    capacity and never idle. `flags` notes what was wrong with its report (e.g. clamped).
    Slots: no attribute dict per host, so passes over 50,000 of them touch half the memory."""

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

    @cached_property
    def columns(self) -> dict[str, list[Any]]:
        """Every host's fields by column (HOST_COLUMNS, then `flags`), in the hosts' order, read
        once per observation: the decision's sums over the pool and its record both take them
        from here, so a host's field is visited once, not once per pass (P5, issue 11). The
        observation and its hosts are frozen: the columns never go stale. An observation made by
        `observed` (as observe makes them) has them from the start."""
        hosts = self.hosts
        # Comprehensions, not map(attrgetter): they read slots by a specialised instruction, a
        # third faster on 50,000 hosts.
        return {"name": [h.name for h in hosts], "pool": [h.pool for h in hosts], "role": [h.role for h in hosts],
                "status": [h.status for h in hosts], "etcd": [h.etcd for h in hosts],
                "containers": [h.containers for h in hosts], "cpu": [h.cpu for h in hosts],
                "memory": [h.memory for h in hosts], "flags": [h.flags for h in hosts]}


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
        # Not sorted here: every state backend writes with sorted keys (a sort of one timer per
        # host on every decision was a tenth of P5's 50,000-host figure).
        return {"last_change_at": self.last_change_at, "last_change": self.last_change,
                "shrink_since": self.shrink_since, "low_since": dict(self.low_since),
                "history": [[s.at, s.containers, s.cpu, s.memory] for s in self.history],
                "wanted": [[at, n] for at, n in self.wanted],
                "undrainable": dict(self.undrainable), "added": dict(self.added)}

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


HOST_COLUMNS = ("name", "pool", "role", "status", "etcd", "containers", "cpu", "memory")


class HostColumns:
    """Hosts' fields gathered by column as `observe` reads them (HOST_COLUMNS, then flags), for
    `observed`."""

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = {key: [] for key in HOST_COLUMNS + ("flags",)}
        self._appends = tuple(column.append for column in self.lists.values())

    def add(self, name: str, pool: str, role: str, status: str, etcd: bool, containers: int = 0, cpu: float = 0.0,
            memory: float = 0.0, flags: tuple[str, ...] = ()) -> None:
        """One host, with HostLoad's fields in its order."""
        names, pools, roles, statuses, members, counts, cpus, memories, flagged = self._appends
        names(name)
        pools(pool)
        roles(role)
        statuses(status)
        members(etcd)
        counts(containers)
        cpus(cpu)
        memories(memory)
        flagged(flags)


def observed(at: float, columns: Mapping[str, Sequence[Any]], pending: int = 0, pending_cpu: float = 0.0,
             pending_memory: float = 0.0, source: str = "etcd") -> Observation:
    """The observation of hosts given by column (HOST_COLUMNS and `flags`, one list each, in the
    hosts' order), as `observe` reads them: the hosts are made from the columns, which the
    observation keeps as its own `columns`. A decision then reads no host's field to sum the
    pool or to record it (at 50,000 hosts those reads were a fifth of P5's figure, issue 11)."""
    names = columns["name"]
    # lists are handed over (observe builds them for this), anything else is copied into one
    taken = {key: columns[key] if type(columns[key]) is list else list(columns[key])
             for key in HOST_COLUMNS + ("flags",)}
    if any(len(column) != len(names) for column in taken.values()):
        raise ValueError("observed: the host columns differ in length")
    obs = Observation(at=at, hosts=tuple(map(HostLoad, *taken.values())), pending=pending, pending_cpu=pending_cpu,
                      pending_memory=pending_memory, source=source)
    # what `Observation.columns` would read off these hosts, the same values in the same order
    # (a cached_property keeps its value in the instance's __dict__; a frozen dataclass has one)
    obs.__dict__["columns"] = taken
    return obs


def observation_json(obs: Observation) -> dict[str, Any]:
    """The observation as JSON, hosts by column (one list per field, flags only for the hosts
    that have some): no list per host, which on 50,000 hosts cost more than the decision. The
    columns are the observation's own (`Observation.columns`), copied: a record does not share
    a list with the observation it came from."""
    taken = obs.columns
    columns: dict[str, Any] = {key: list(taken[key]) for key in HOST_COLUMNS}
    flags = taken["flags"]
    columns["flags"] = {name: list(f) for name, f in compress(zip(taken["name"], flags), flags)}
    return {"at": obs.at, "pending": obs.pending, "pending_cpu": obs.pending_cpu,
            "pending_memory": obs.pending_memory, "source": obs.source, "hosts": columns}


def hosts_of_json(hosts: Mapping[str, Any] | Sequence[Sequence[Any]]) -> tuple[HostLoad, ...]:
    """The hosts of `observation_json`: by column, or (records of older versions) one row each."""
    if isinstance(hosts, Mapping):
        flags = hosts.get("flags") or {}
        return tuple(HostLoad(name, pool, role, status, bool(etcd), int(containers), float(cpu), float(memory),
                              tuple(flags.get(name, ())))
                     for name, pool, role, status, etcd, containers, cpu, memory
                     in zip(*(hosts[key] for key in HOST_COLUMNS)))
    return tuple(HostLoad(name, pool, role, status, bool(etcd), int(containers), float(cpu), float(memory),
                          tuple(flags)) for name, pool, role, status, etcd, containers, cpu, memory, flags in hosts)

