"""What provision's Python API hands back: progress `Event`s, typed results, and the UI the
domain code writes to, turned into events (nothing printed). `provision.api` re-exports them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .changes import HostChange
from .plan import Plan
from .ui import UI


@dataclass(frozen=True)
class Event:
    """One step of progress.

    `kind` is `phase` (a phase of `up` starts: `index` of `total`), `done` (it ended, after
    `seconds`), `log` (a progress line), `debug` (a detail) or `warning`. `topic` is the phase
    or the step the line belongs to (`plan`, `etcd`, `scale`...)."""

    kind: str
    topic: str
    message: str
    index: int = 0
    total: int = 0
    seconds: float | None = None


Progress = Callable[[Event], None]


@dataclass(frozen=True)
class UpResult:
    """What `up` did: the phases run, the plan it applied, each phase's result (as in
    `provision up -o json`), the phases that changed something, and the admin kubeconfig."""

    applied: bool
    dry_run: bool
    phases: tuple[str, ...]
    plan: Plan
    results: dict[str, Any]
    changed: tuple[str, ...]
    seconds: dict[str, float]
    kubeconfig: str | None = None
    hosts: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)  # state's hosts afterwards


@dataclass(frozen=True)
class PlanReview:
    """What `provision plan` shows: the plan, what the spec does to each running host (keep,
    update in place, replace, with the fields that cause it), the order a Kubernetes version
    change moves in, the pools made by another provider with what they need, and with
    `save` the document `plan --out` writes (fingerprints of the spec and state)."""

    plan: Plan
    changes: dict[str, HostChange]
    kubernetes_version_order: tuple[str, ...]
    pool_providers: list[dict[str, Any]]
    saved: dict[str, Any] | None = None


@dataclass(frozen=True)
class StatusReport:
    """The cluster seen from outside (`provision status`): `healthy` when every host runs, etcd
    answers healthy on every member and no unit failed. `hosts` by name: pool, role, etcd,
    address, provider state, units."""

    cluster: str
    healthy: bool
    hosts: dict[str, dict[str, Any]]
    etcd: dict[str, Any]
    headroom: dict[str, Any] | None
    orphans: tuple[str, ...]
    missing: tuple[str, ...]
    failed_units: tuple[str, ...]
    report: dict[str, Any] = field(repr=False, default_factory=dict)  # the whole `status -o json` body


@dataclass(frozen=True)
class ScaleResult:
    pool: str
    size: int
    dry_run: bool
    created: tuple[str, ...]
    destroyed: tuple[str, ...]
    results: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)  # each phase's, as `up` gives them


@dataclass(frozen=True)
class HeadroomResult:
    """One headroom pass: `status` is acted, decided, busy or dry-run; `decision` the
    recorded decision (pool, action, current, desired, reasons) when one was made."""

    status: str
    message: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    not_drained: tuple[str, ...]
    decision: dict[str, Any] | None


@dataclass(frozen=True)
class DownResult:
    """Hosts destroyed (found in the provider by tag), and hosts state recorded that were
    already gone."""

    destroyed: tuple[str, ...]
    forgotten: tuple[str, ...]
    nothing: bool = field(default=False, compare=False)  # no host and no state: nothing was done or written


def quiet(event: Event) -> None:
    pass


class EventUI(UI):
    """The UI the verbs write to, turned into events; prints nothing and keeps the result."""

    def __init__(self, progress: Progress):
        super().__init__(output="json", verbosity=1)  # json: never ask a question on a terminal
        self.progress = progress
        self.data: dict[str, Any] | None = None

    def log(self, prefix: str, message: str) -> None:
        self.progress(Event("log", prefix, message))

    def debug(self, prefix: str, message: str) -> None:
        self.progress(Event("debug", prefix, message))

    def warn(self, message: str) -> None:
        self.progress(Event("warning", "warning", message))

    def error(self, line: str) -> None:
        pass  # errors are raised

    def result(self, data: dict[str, Any], text: object = None, ok: bool = True) -> None:
        self.data = data
