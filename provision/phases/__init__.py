"""`provision up` as an ordered list of named phases (kubeadm style).

Each phase is a thin function `run(ctx)` in its own module, runnable alone
(`up --only NAME`), up to a point (`up --until NAME`) and in dry-run (`ctx.dry_run`: it says
what it would do and changes nothing). A phase logs with its own prefix through `ctx.log`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ActionError, NotYetAvailable, UserError
from ..spec import Spec
from ..state import MissingBlob, StateStore
from ..ui import UI


@dataclass
class RunContext:
    """What a phase works with. `state` is the document; call `save()` after changing it."""

    spec: Spec
    store: StateStore
    state: dict[str, Any]
    ui: UI
    dry_run: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # per phase, for --output json

    def log(self, phase: str, message: str) -> None:
        self.ui.log(phase, message)

    def save(self) -> None:
        if not self.dry_run:
            self.store.write(self.state)


@dataclass(frozen=True)
class Phase:
    name: str
    summary: str
    module: str  # provision.phases.<module> defines run(ctx)

    def runner(self) -> Callable[[RunContext], Any]:
        try:
            mod = importlib.import_module(f"provision.phases.{self.module}")
        except ModuleNotFoundError as err:
            if err.name == f"provision.phases.{self.module}":
                raise NotYetAvailable(f"phase {self.name!r} is not available yet: {self.summary}") from None
            raise

        def run(ctx: RunContext) -> Any:
            try:
                return mod.run(ctx)
            except MissingBlob as err:  # run alone (--only) before the phase that writes it
                raise missing_output(self.name, err) from None
        return run


PHASES: tuple[Phase, ...] = (
    Phase("validate", "check the spec against the contract", "validate"),
    Phase("pki", "create or reuse the CA, certificates, keys and tokens", "pki"),
    Phase("render", "render each host's Ignition or cloud-config", "render"),
    Phase("machines", "create and destroy hosts with the provider", "machines"),
    Phase("wait", "wait until every host runs and answers SSH", "wait"),
    Phase("hosts", "write cluster host names into /etc/hosts where the cloud assigns addresses", "hosts"),
    Phase("etcd", "check etcd membership and health over TLS", "etcd"),
    Phase("flannel", "write the flannel network config into etcd", "flannel"),
    Phase("fleet", "publish fleet metadata and check fleetd", "fleet"),
    Phase("masters", "check each master's services", "masters"),
    Phase("workers", "check each worker's services", "workers"),
    Phase("kubeconfig", "write the admin kubeconfig", "kubeconfig"),
)
PHASE_NAMES = tuple(p.name for p in PHASES)


def select(until: str | None = None, only: str | None = None) -> tuple[Phase, ...]:
    """The phases to run for `--until` / `--only` (names are checked: exit 2 on a typo)."""
    for option, value in (("--until", until), ("--only", only)):
        if value is not None and value not in PHASE_NAMES:
            raise UserError(f"{option}: unknown phase {value!r} (phases: {', '.join(PHASE_NAMES)})")
    if until and only:
        raise UserError("--until and --only: give one of them")
    if only:
        return tuple(p for p in PHASES if p.name == only)
    if until:
        return PHASES[: PHASE_NAMES.index(until) + 1]
    return PHASES


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
        result = runner(ctx)
        if result is not None:
            ctx.results[phase.name] = result


# Phases that bring hosts of a resized pool to the same state as the rest (scale, headroom).
POOL_PHASES = ("pki", "render", "machines", "wait", "hosts", "etcd", "flannel", "fleet", "masters", "workers")


def converge(ctx: RunContext, phases: tuple[str, ...] = POOL_PHASES) -> dict[str, Any]:
    """Run the named phases in `up` order (e.g. after `state["pools"]` changed a pool's size):
    new hosts are created and bootstrapped, existing ones only checked. Returns ctx.results."""
    for name in phases:
        if name not in PHASE_NAMES:
            raise UserError(f"unknown phase {name!r} (phases: {', '.join(PHASE_NAMES)})")
    run_phases(ctx, tuple(p for p in PHASES if p.name in phases))
    return ctx.results
