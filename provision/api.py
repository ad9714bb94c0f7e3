"""provision's Python API: drive a cluster from Python the way the CLI does, without printing.

    from provision.api import Cluster, ProvisionError

    cluster = Cluster.load("cluster.yaml", state_dir=".provision")   # loads and validates
    print([h.name for h in cluster.plan().create])
    result = cluster.up(progress=lambda e: print(f"[{e.topic}] {e.message}"))
    print(result.changed, cluster.status().healthy)
    cluster.scale("workers", 3)
    cluster.headroom_once()
    cluster.down()

Every call returns a typed result (the dataclasses below, or `provision.plan.Plan`) and raises
the errors of `provision.errors`: `UserError` for bad input (`SpecError` for a spec, one
`path: field: message` line per problem in `.lines`; nothing was touched), `ActionError` for a
failure while acting (state records what exists; calling again repairs), `LockHeld` when
another provision process acts on the cluster. Nothing is printed: progress goes to the
`progress` callback as `Event`s, if one is given.

Acting calls (`up`, `scale`, `down`) act at once: there is no confirmation to give, as with
`--yes` on the command line. State is found as the CLI finds it: `state_dir`, else
$PROVISION_STATE_DIR, else the spec's `state.path` (local backend).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ActionError, LockHeld, ProvisionError, UserError
from .phases import PHASE_NAMES, RunContext, phase_changed, select
from .plan import Plan, plan
from .spec import Spec, SpecError, load_spec
from .state import StateStore, open_store, state_directory
from .ui import UI

__all__ = ["ActionError", "Cluster", "DownResult", "Event", "HeadroomResult", "LockHeld", "PHASE_NAMES",
           "ProvisionError", "ScaleResult", "SpecError", "StatusReport", "UpResult", "UserError", "validate"]


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


def _quiet(event: Event) -> None:
    pass


class _EventUI(UI):
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

    def result(self, data: dict[str, Any], text: Any = None, ok: bool = True) -> None:
        self.data = data


def validate(path: str | os.PathLike) -> Spec:
    """Load a spec and check it as `provision validate` does: the spec contract, then the
    provider's own checks of its options (no credentials or machine checks). Raises SpecError
    (a UserError) with one `path: field: message` line per problem."""
    from .verbs.preflight import check_provider
    spec = load_spec(path)
    try:
        check_provider(spec, preflight=False)
    except SpecError:
        raise
    except UserError as err:  # name the file, as the spec's own problems do
        raise SpecError([f"{path}: {line}" for line in err.lines]) from None
    return spec


class Cluster:
    """One cluster: its spec and where its state is. Opening the state creates nothing."""

    def __init__(self, spec: Spec, state_dir: str | os.PathLike | None = None,
                 spec_path: str | os.PathLike | None = None):
        self.spec = spec
        self.spec_path = str(spec_path) if spec_path is not None else None
        self.state_dir = str(state_dir) if state_dir is not None else None
        self.store: StateStore = open_store(spec, state_directory(spec, self.state_dir))
        self._ui: UI = _EventUI(_quiet)

    @classmethod
    def load(cls, path: str | os.PathLike, state_dir: str | os.PathLike | None = None) -> "Cluster":
        """The cluster of the spec file at `path`, validated as `provision validate` does."""
        return cls(validate(path), state_dir=state_dir, spec_path=path)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def location(self) -> str:
        """Where its state is (a directory, or the s3 / etcd location)."""
        return self.store.location

    def exists(self) -> bool:
        """Whether state records anything for the cluster."""
        return self.store.exists()

    def plan(self) -> Plan:
        """Hosts to create, keep and destroy against what state records (changes nothing)."""
        return plan(self.spec, self.store.read())

    def up(self, *, until: str | None = None, only: str | None = None, dry_run: bool = False,
           progress: Progress | None = None) -> UpResult:
        """Bring the cluster to its spec: the phases of `provision up` in order (`until` stops
        after one, `only` runs one; names in PHASE_NAMES). `dry_run` changes nothing. Holds the
        cluster's lock throughout (LockHeld if another process has it)."""
        from .verbs.preflight import check_provider
        emit = progress or _quiet
        ui = _EventUI(emit)
        phases = select(until=until, only=only)
        check_provider(self.spec)  # a spec the provider refuses fails here, before pki makes anything
        store = self.store
        # as `provision up`: a dry run of a cluster with nothing recorded takes no lock (it
        # would create the cluster's directory)
        lock = store.lock(self._command("up")) if not dry_run or store.exists() else contextlib.nullcontext()
        timings: dict[str, float] = {}
        with lock:
            state = store.read()
            current = plan(self.spec, state)
            emit(Event("log", "plan", f"{len(current.create)} to create, {len(current.keep)} to keep, "
                                      f"{len(current.destroy)} to destroy"))
            ctx = RunContext(spec=self.spec, store=store, state=state, ui=ui, dry_run=dry_run,
                             options={"yes": True})
            for index, phase in enumerate(phases, 1):
                runner = phase.runner()
                emit(Event("phase", phase.name, phase.summary, index, len(phases)))
                started = time.monotonic()
                result = runner(ctx)
                timings[phase.name] = time.monotonic() - started
                if result is not None:
                    ctx.results[phase.name] = result
                emit(Event("done", phase.name, f"done in {timings[phase.name]:.1f}s", index, len(phases),
                           timings[phase.name]))
        kubeconfig = None if dry_run else (ctx.results.get("kubeconfig") or {}).get("path")
        return UpResult(applied=not dry_run, dry_run=dry_run, phases=tuple(p.name for p in phases), plan=current,
                        results=ctx.results,
                        changed=tuple(name for name, result in ctx.results.items() if phase_changed(result)),
                        seconds=timings, kubeconfig=os.path.abspath(kubeconfig) if kubeconfig else None)

    def status(self) -> StatusReport:
        """Hosts, etcd membership and health, unit states, headroom figures. ActionError when
        the cluster has no state."""
        from .status import cluster_status
        from .verbs.preflight import check_provider
        provider = check_provider(self.spec, self.store.workdir)
        self._require_state()
        report = cluster_status(self.spec, self.store, self.store.read(), provider)
        return StatusReport(cluster=self.spec.name, healthy=bool(report["healthy"]), hosts=report["hosts"],
                            etcd=report["etcd"], headroom=report["headroom"],
                            orphans=tuple(report.get("orphans") or ()), missing=tuple(report.get("missing") or ()),
                            failed_units=tuple(report["failed_units"]), report=report)

    def scale(self, pool: str, count: int, *, dry_run: bool = False, progress: Progress | None = None) -> ScaleResult:
        """Set a worker pool's size (within its min..max) and converge: new hosts are created and
        bootstrapped, surplus ones destroyed. UserError for an unknown pool or a count out of range."""
        from .verbs import scale
        data = self._verb(scale.run, progress, pool=pool, count=count, yes=True, dry_run=dry_run)
        return ScaleResult(pool=data["pool"], size=data["size"], dry_run=data["dry_run"],
                           created=tuple(data["created"]), destroyed=tuple(data["destroyed"]),
                           results=data["results"])

    def headroom_once(self, *, dry_run: bool = False, progress: Progress | None = None) -> HeadroomResult:
        """One headroom pass (what cron runs): observe the pool, decide, act unless `dry_run`.
        UserError when the spec has no headroom section."""
        from .verbs import headroom
        data = self._verb(headroom.run, progress, once=True, dry_run=dry_run, explain=False)
        return HeadroomResult(status=data["status"], message=data["message"], added=tuple(data["added"]),
                              removed=tuple(data["removed"]), not_drained=tuple(data["not_drained"]),
                              decision=data["decision"])

    def down(self, *, progress: Progress | None = None) -> DownResult:
        """Destroy every host of the cluster (found by tag in the provider) and what the
        provider made for it; state keeps the cluster with no hosts."""
        from .verbs import down
        data = self._verb(down.run, progress, yes=True)
        return DownResult(destroyed=tuple(data["destroyed"]), forgotten=tuple(data.get("forgotten", ())))

    # ---- what the verbs need of the CLI's App, without a terminal -----------------------------

    @property
    def ui(self) -> UI:
        return self._ui

    def command(self, *words: str, extra: tuple[str, ...] = ()) -> str:
        """The command line a hint in an error message names."""
        import shlex
        parts = ["provision", *words, self.spec_path or "SPEC"]
        if self.state_dir is not None:
            parts += ["--state-dir", self.state_dir]
        return shlex.join(parts + list(extra))

    def require_state(self) -> None:
        self._require_state()

    def _require_state(self) -> None:
        if not self.store.exists():
            raise ActionError(f"cluster {self.spec.name} has no state at {self.store.location}; "
                              f"create it with: {self.command('up', extra=('--yes',))}")

    def _command(self, verb: str) -> str:
        return f"provision.api {verb} {self.spec.name}"

    def _verb(self, run: Callable[..., Any], progress: Progress | None, **options: Any) -> dict[str, Any]:
        """Run a verb with this cluster as its App; returns the result it would have printed."""
        self._ui = _EventUI(progress or _quiet)
        code = run(self, **options)
        data = self._ui.data or {}
        if code:
            raise ActionError(data.get("errors") or [f"{self.spec.name}: failed (exit {code})"])
        return data
