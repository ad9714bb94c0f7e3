"""`provision up` as an ordered list of named phases (kubeadm style).

Each phase is a thin function `run(ctx)` in its own module, runnable alone
(`up --only NAME`), up to a point (`up --until NAME`) and in dry-run (`ctx.dry_run`: it says
what it would do and changes nothing). A phase logs with its own prefix through `ctx.log`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .. import faults
from ..errors import ActionError, UserError
from ..plan import Plan, plan
from ..state import MissingBlob
from ..ui import Progress

if TYPE_CHECKING:  # annotations only: the CLI's start-up lists the phases
    from ..spec import Spec
    from ..state import StateStore


@dataclass
class RunContext:
    """What a phase works with. `state` is the document; call `save()` after changing it."""

    spec: Spec
    store: StateStore
    state: dict[str, Any]
    ui: Progress  # the CLI's UI, or what headroom logs through
    dry_run: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # per phase, for --output json
    seconds: dict[str, float] = field(default_factory=dict)  # per phase run by run_phases

    _plan: tuple[tuple[Any, ...], Plan] | None = field(default=None, repr=False, compare=False)

    def plan(self) -> Plan:
        """The plan of the spec against `state` as it is now. Made once and handed to every
        phase that asks; made again only when what it is made from changed (a phase such as
        `machines` or `rollout` recorded hosts or pool sizes): each call compares the inputs
        `plan()` reads, the pools' sizes and each recorded host's pool, index, role and
        address, which costs far less than planning."""
        key = plan_inputs(self.state)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, plan(self.spec, self.state))
        return self._plan[1]

    def log(self, phase: str, message: str) -> None:
        self.ui.log(phase, message)

    def save(self) -> None:
        if not self.dry_run:
            self.store.write(self.state)


def plan_inputs(state: dict[str, Any]) -> tuple[Any, ...]:
    """What `plan.plan` reads of a state document: the pools' recorded sizes and, per recorded
    host, its pool, index, role and address (equal inputs give an equal plan)."""
    pools = state.get("pools") or {}
    hosts = state.get("hosts") or {}
    return (tuple((name, tuple(sorted((str(k), repr(v)) for k, v in (pools[name] or {}).items())))
                  for name in sorted(pools)),
            tuple((name, h.get("pool"), h.get("index"), h.get("role"), h.get("address"))
                  for name, h in hosts.items()))


class PhaseModule(Protocol):
    """A phase's module: `run(ctx)` does the phase and returns its result for --output json."""

    def run(self, ctx: RunContext) -> Any: ...


@dataclass(frozen=True)
class Phase:
    name: str
    summary: str
    module: PhaseModule  # its run(ctx) is looked up at each run

    def runner(self) -> Callable[[RunContext], Any]:
        def run(ctx: RunContext) -> Any:
            faults.enter(self.name)  # the phase whose named fault points are live
            try:
                return self.module.run(ctx)
            except MissingBlob as err:  # run alone (--only) before the phase that writes it
                raise missing_output(self.name, err) from None
        return run


# Each phase's name and summary, in `up` order. Kept apart from the modules so the CLI's help
# and completion, `validate` and `init` read them without importing what the phases need
# (Jinja2, cryptography, provider code): a second or so per command on a busy machine.
PHASE_SUMMARIES: tuple[tuple[str, str], ...] = (
    ("validate", "check the spec against the contract"),
    ("endpoint", "find or create the API load balancer (clouds that have one)"),
    ("pki", "create or reuse the CA, certificates, keys and tokens"),
    ("render", "render each host's Ignition or cloud-config"),
    ("rollout", "update changed running hosts in place or replace them, a few at a time"),
    ("machines", "create and destroy hosts with the provider"),
    ("wait", "wait until every host runs and answers SSH"),
    ("hosts", "write cluster host names into /etc/hosts where the cloud assigns addresses"),
    ("secrets", "deliver each host's private keys and tokens over SSH (never in a boot config)"),
    ("etcd", "check etcd membership and health over TLS"),
    ("flannel", "write the flannel network config into etcd"),
    ("fleet", "publish fleet metadata and check fleetd"),
    ("masters", "check each master's services"),
    ("workers", "check each worker's services"),
    ("kubeconfig", "write the admin kubeconfig"),
)
PHASE_NAMES = tuple(name for name, _ in PHASE_SUMMARIES)


@functools.cache
def all_phases() -> tuple[Phase, ...]:
    """Every phase of `up` in order, each with its module (imported here, on first use; the
    modules import RunContext from this package)."""
    from . import (endpoint, etcd, flannel, fleet, hosts, kubeconfig, machines, masters, pki, render, rollout,
                   secrets, validate, wait, workers)
    modules: tuple[PhaseModule, ...] = (validate, endpoint, pki, render, rollout, machines, wait, hosts, secrets, etcd,
                                        flannel, fleet, masters, workers, kubeconfig)
    phases = tuple(Phase(name, summary, module) for (name, summary), module in zip(PHASE_SUMMARIES, modules,
                                                                                    strict=True))
    for phase in phases:  # the two tuples above are kept in the same order
        if phase.module.__name__ != f"{__name__}.{phase.name}":  # type: ignore[attr-defined]
            raise AssertionError(f"phase {phase.name!r} is paired with module {phase.module!r}")
    return phases


def __getattr__(name: str) -> Any:
    """`PHASES` (the tuple of `all_phases()`), imported on first use."""
    if name == "PHASES":
        return all_phases()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select(until: str | None = None, only: str | None = None) -> tuple[Phase, ...]:
    """The phases to run for `--until` / `--only` (names are checked: exit 2 on a typo)."""
    for option, value in (("--until", until), ("--only", only)):
        if value is not None and value not in PHASE_NAMES:
            raise UserError(f"{option}: unknown phase {value!r} (phases: {', '.join(PHASE_NAMES)})")
    if until and only:
        raise UserError("--until and --only: give one of them")
    if only:
        return tuple(p for p in all_phases() if p.name == only)
    if until:
        return all_phases()[: PHASE_NAMES.index(until) + 1]
    return all_phases()


# Which phase writes the state blobs under each prefix (to say what to run first).
BLOB_PHASES = (("pki/", "pki"), ("rendered/", "render"))


def missing_output(phase: str, err: MissingBlob) -> ActionError:
    """The error for a phase that needs what an earlier phase writes: which phase to run first."""
    maker = next((name for prefix, name in BLOB_PHASES if err.name.startswith(prefix)), None)
    if maker is None:
        return ActionError(f"{phase}: {err}")
    return ActionError(f"{phase}: {err}: run `provision up SPEC --until {maker}` first")


def run_phases(ctx: RunContext, phases: tuple[Phase, ...]) -> None:
    for phase in phases:
        runner = phase.runner()
        ctx.log(phase.name, ("dry run: " if ctx.dry_run else "") + phase.summary)
        started = time.monotonic()
        result = runner(ctx)
        ctx.seconds[phase.name] = time.monotonic() - started
        if result is not None:
            ctx.results[phase.name] = result


# Phases that bring hosts of a resized pool to the same state as the rest (scale, headroom).
POOL_PHASES = ("pki", "render", "machines", "wait", "hosts", "secrets", "etcd", "flannel", "fleet", "masters",
               "workers")


def converge(ctx: RunContext, phases: tuple[str, ...] = POOL_PHASES) -> dict[str, Any]:
    """Run the named phases in `up` order (e.g. after `state["pools"]` changed a pool's size):
    new hosts are created and bootstrapped, existing ones only checked. Returns ctx.results."""
    for name in phases:
        if name not in PHASE_NAMES:
            raise UserError(f"unknown phase {name!r} (phases: {', '.join(PHASE_NAMES)})")
    run_phases(ctx, tuple(p for p in all_phases() if p.name in phases))
    return ctx.results


def phase_changed(result) -> bool:
    """Whether a phase's result says it changed something (created, changed, destroyed...)."""
    if not isinstance(result, dict) or result.get("dry_run"):
        return False
    return any(bool(result.get(key)) for key in ("created", "changed", "destroyed", "recreated"))
