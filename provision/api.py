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

This is the API the `provision` command itself calls: its verbs parse arguments, ask on a
terminal (the `confirm` callbacks below) and format what these calls return. Acting calls
(`up`, `scale`, `down`) act at once unless a `confirm` callback is given, as with `--yes` on
the command line. State is found as the CLI finds it: `state_dir`, else
$PROVISION_STATE_DIR, else the spec's `state.path` (local backend).
"""
from __future__ import annotations

import contextlib
import os
import shlex
from typing import TYPE_CHECKING, Any, Callable

from .api_results import (DownResult, Event, EventUI, HeadroomResult, PlanReview, Progress, ScaleResult, StatusReport,
                          UpResult, quiet)
from .changes import host_changes
from .errors import ActionError, LockHeld, ProvisionError, UserError
from .phases import PHASE_NAMES, Phase, RunContext, converge, phase_changed, select
from .plan import Plan, plan
from .preflight import check_provider
from .progress import announce_plan, run_phases
from .saved_plan import check_saved_state
from .spec import HeadroomSpec, PoolSpec, Spec, SpecError, load_spec
from .state import StateStore, open_store, state_directory
from .version_skew import check_spec as check_version_skew

if TYPE_CHECKING:
    from .headroom.reconcile import ClusterEdges

__all__ = ["ActionError", "Cluster", "DownResult", "Event", "HeadroomResult", "LockHeld", "PHASE_NAMES",
           "PlanReview", "ProvisionError", "ScaleResult", "SpecError", "StatusReport", "UpResult", "UserError", "validate"]

Confirm = Callable[[Plan], bool]  # asked under the lock with the plan about to be applied; False: nothing changes


def validate(path: str | os.PathLike[str]) -> Spec:
    """Load a spec and check it as `provision validate` does: the spec contract, then the
    provider's own checks of its options (no credentials or machine checks). Raises SpecError
    (a UserError) with one `path: field: message` line per problem."""
    return check_spec_provider(load_spec(path), str(path))


def check_spec_provider(spec: Spec, label: str) -> Spec:
    """The provider's own checks of a loaded spec's options; its problems name the file."""
    try:
        check_provider(spec, preflight=False)
    except SpecError:
        raise
    except UserError as err:  # name the file, as the spec's own problems do
        raise SpecError([f"{label}: {line}" for line in err.lines]) from None
    return spec


def headroom_settings(spec: Spec) -> HeadroomSpec:
    """The spec's headroom section; UserError when it has none."""
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; add one to scale a pool automatically")
    return spec.headroom


def check_pool_request(spec: Spec, pool_name: str, count: int) -> PoolSpec:
    """The worker pool `scale` may set to `count`: UserError naming POOL or COUNT otherwise."""
    try:
        pool = spec.pool(pool_name)
    except KeyError:
        names = ", ".join(p.name for p in spec.pools)
        raise UserError(f"POOL: no pool {pool_name!r} in the spec (pools: {names})") from None
    if pool.role != "worker":
        raise UserError(f"POOL: {pool_name!r} is a {pool.role} pool; only worker pools are scaled "
                        "(change the spec's count for masters and etcd)")
    if not pool.min_count <= count <= pool.max_count:
        raise UserError(f"COUNT: {count} is outside pool {pool_name!r}'s min..max "
                        f"({pool.min_count}..{pool.max_count})")
    return pool


class Cluster:
    """One cluster: its spec and where its state is. Opening the state creates nothing.

    `store` is an already opened state store (the CLI's); `command` is what the cluster's lock
    says holds it (default: `provision.api VERB NAME`)."""

    def __init__(self, spec: Spec, state_dir: str | os.PathLike[str] | None = None,
                 spec_path: str | os.PathLike[str] | None = None, *, store: StateStore | None = None,
                 command: str | None = None):
        self.spec = spec
        self.spec_path = str(spec_path) if spec_path is not None else None
        self.state_dir = str(state_dir) if state_dir is not None else None
        self.store: StateStore = store or open_store(spec, state_directory(spec, self.state_dir))
        self.lock_command = command
        self._edges: ClusterEdges | None = None  # headroom's observer and actuator, made on first use
        self._headroom_progress: Progress = quiet

    @classmethod
    def load(cls, path: str | os.PathLike[str], state_dir: str | os.PathLike[str] | None = None) -> "Cluster":
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

    def review(self, *, save: bool = False) -> PlanReview:
        """`provision plan`: the plan with what it does to each running host; with `save` the
        document to keep for `up(saved_plan=...)`. A Kubernetes version change the skew
        policy refuses is a UserError naming kubernetes.version. Changes nothing."""
        from .providers.pools import pool_providers_needs
        from .saved_plan import saved_plan
        state = self.store.read()
        result = plan(self.spec, state)
        skew = check_version_skew(self.spec, state, [(h.name, h.role) for h in result.create])
        if not skew.allowed:
            raise UserError(skew.reason)
        from . import rollout
        from .config_drift import configs_changed
        # kept hosts whose config renders differently now (after `pki rotate`): up updates them in place
        changes = rollout.with_config_changes(host_changes(self.spec, state, result),
                                              configs_changed(self.spec, state, self.store, result))
        saved = saved_plan(self.spec, state, self.store.list_blobs(), result, changes) if save else None
        return PlanReview(plan=result, changes=changes, kubernetes_version_order=tuple(skew.order),
                          pool_providers=pool_providers_needs(self.spec, state), saved=saved)

    # ---- up ------------------------------------------------------------------------------------

    def preview_up(self, *, until: str | None = None, only: str | None = None,
                   progress: Progress | None = None) -> Plan:
        """What `up` would apply, with its checks (provider, version skew) and its plan said
        through `progress`, without taking the lock or changing anything."""
        phases = select(until=until, only=only)
        state = self.store.read()
        if any(p.name == "validate" for p in phases):
            check_burst_reach(self.spec, state)  # what up's validate phase would refuse, as plan does
        check_provider(self.spec)
        current = plan(self.spec, state)
        self._check_skew(state, current)
        announce_plan(progress or quiet, self.spec, state, current, applying=_applies_rollout(phases))
        return current

    def up(self, *, until: str | None = None, only: str | None = None, dry_run: bool = False,
           verify: bool = False, max_unavailable: int = 1, saved_plan: dict[str, Any] | None = None,
           plan_file: str = "", confirm: Confirm | None = None, progress: Progress | None = None) -> UpResult:
        """Bring the cluster to its spec: the phases of `provision up` in order (`until` stops
        after one, `only` runs one; names in PHASE_NAMES). `dry_run` changes nothing; `verify`
        re-checks every host; `max_unavailable` workers change at once. `saved_plan` (a plan
        `provision plan --out` saved, read by `saved_plan.load_saved_plan`) is applied only if
        the state did not change since. `confirm`, when given, is asked with the plan before
        anything changes. Holds the cluster's lock throughout (LockHeld if another process has
        it). A Kubernetes version change the skew policy refuses is a UserError."""
        emit = progress or quiet
        phases = select(until=until, only=only)
        spec, store = self.spec, self.store
        check_provider(spec)  # a spec the provider refuses fails here, before pki makes anything
        self._check_skew(store.read())  # before anything changes
        if saved_plan is not None:
            check_saved_state(saved_plan, store.read(), store.list_blobs(), plan_file, self.command)
        # A dry run of a cluster with nothing recorded yet takes no lock: the lock would create
        # its directory. Once anything is recorded, a dry run holds the lock like any run.
        lock = store.lock(self._lock_command("up")) if not dry_run or store.exists() else contextlib.nullcontext()
        with lock:
            state = store.read()
            if saved_plan is not None:  # again, under the lock
                check_saved_state(saved_plan, state, store.list_blobs(), plan_file, self.command)
            # the plan is made here, once, and handed to the phases through ctx (remade only
            # when a phase changes what it is made from: see RunContext.plan)
            ctx = RunContext(spec=spec, store=store, state=state, ui=EventUI(emit), dry_run=dry_run,
                             options={"yes": True, "verify": verify, "max_unavailable": max_unavailable})
            current = ctx.plan()
            self._check_skew(state, current)  # again, under the lock
            announce_plan(emit, spec, state, current, applying=_applies_rollout(phases))
            if not dry_run and confirm is not None and any(p.name == "validate" for p in phases):
                check_burst_reach(spec, state)  # not asked to approve what the validate phase refuses
            if not dry_run and confirm is not None and not confirm(current):
                raise ActionError(f"nothing changed: to apply, run: {self.command('up', extra=('--yes',))} "
                                  "(or --dry-run to see each phase)")
            timings = run_phases(ctx, phases, emit)
        kubeconfig = None if dry_run else (ctx.results.get("kubeconfig") or {}).get("path")
        return UpResult(applied=not dry_run, dry_run=dry_run, phases=tuple(p.name for p in phases), plan=current,
                        results=ctx.results,
                        changed=tuple(name for name, result in ctx.results.items() if phase_changed(result)),
                        seconds=timings, kubeconfig=os.path.abspath(kubeconfig) if kubeconfig else None,
                        hosts=dict(ctx.state.get("hosts") or {}))

    # ---- read ----------------------------------------------------------------------------------

    def status(self) -> StatusReport:
        """Hosts, etcd membership and health, unit states, headroom figures. ActionError when
        the cluster has no state."""
        from .status import cluster_status
        provider = check_provider(self.spec, self.store.workdir)
        self.require_state()
        report = cluster_status(self.spec, self.store, self.store.read(), provider)
        return StatusReport(cluster=self.spec.name, healthy=bool(report["healthy"]), hosts=report["hosts"],
                            etcd=report["etcd"], headroom=report["headroom"],
                            orphans=tuple(report.get("orphans") or ()), missing=tuple(report.get("missing") or ()),
                            failed_units=tuple(report["failed_units"]), report=report)

    # ---- scale ---------------------------------------------------------------------------------

    def preview_scale(self, pool: str, count: int, *, progress: Progress | None = None) -> Plan:
        """What `scale` would do (said through `progress`), without the lock or any change."""
        target_pool = check_pool_request(self.spec, pool, count)
        check_provider(self.spec)
        return self._request(progress or quiet, self.store.read(), target_pool, count)

    def scale(self, pool: str, count: int, *, dry_run: bool = False, confirm: Confirm | None = None,
              progress: Progress | None = None) -> ScaleResult:
        """Set a worker pool's size (within its min..max) and converge: new hosts are created and
        bootstrapped, surplus ones destroyed. UserError for an unknown pool or a count out of
        range. `confirm`, when given, is asked with the plan before anything changes."""
        emit = progress or quiet
        spec, store = self.spec, self.store
        target_pool = check_pool_request(spec, pool, count)
        check_provider(spec)
        with store.lock(self._lock_command("scale")):
            state = store.read()
            ctx = RunContext(spec=spec, store=store, state=state, ui=EventUI(emit), dry_run=dry_run,
                             options={"yes": True})
            target = self._request(emit, state, target_pool, count, ctx)  # the plan the phases are handed
            skew = check_version_skew(spec, state, [(h.name, h.role) for h in target.create])
            if not skew.allowed:  # new kubelets newer than the running API server; nothing saved yet
                raise UserError(skew.reason)
            if not dry_run and confirm is not None and not confirm(target):
                raise ActionError(f"nothing changed: to apply, run: "
                                  f"{self.command('scale', extra=(pool, str(count), '--yes'))} (or --dry-run)")
            ctx.save()  # the requested size first: a crash after it leaves state a re-run completes
            converge(ctx)
        return ScaleResult(pool=pool, size=count, dry_run=dry_run, created=tuple(h.name for h in target.create),
                           destroyed=tuple(target.destroy), results=ctx.results, seconds=dict(ctx.seconds))

    def _request(self, emit: Progress, state: dict[str, Any], target_pool: PoolSpec, count: int,
                 ctx: RunContext | None = None) -> Plan:
        """Record the requested size in `state` (in memory), say what it means, return the plan
        (`ctx`'s, when the phases will run on it)."""
        pool = target_pool.name
        before = len([h for h in state.get("hosts", {}).values() if h.get("pool") == pool])
        state.setdefault("pools", {})[pool] = {**state.get("pools", {}).get(pool, {}),
                                               "size": count, "spec_count": target_pool.count}
        target = ctx.plan() if ctx is not None else plan(self.spec, state)
        emit(Event("log", "scale", f"pool {pool}: {before} -> {count} hosts ({len(target.create)} to create, "
                                   f"{len(target.destroy)} to destroy)"))
        return target

    # ---- headroom ------------------------------------------------------------------------------

    def headroom_once(self, *, dry_run: bool = False, progress: Progress | None = None) -> HeadroomResult:
        """One headroom pass (what cron runs): observe the pool, decide, act unless `dry_run`.
        UserError when the spec has no headroom section. Another pass holding the cluster's
        headroom lock makes this one `busy`."""
        from .headroom.reconcile import ClusterEdges, EtcdReconcileLock, reconcile
        emit = progress or quiet
        spec, store = self.spec, self.store
        settings = self.headroom_settings()
        self._headroom_progress = emit
        log: Callable[[str], None] = lambda message: self._headroom_progress(Event("log", "headroom", message))  # noqa: E731
        if self._edges is None:  # kept from pass to pass: connections, the nodes found
            self._edges = ClusterEdges(spec, store, log=log, ui=EventUI(lambda event: self._headroom_progress(event)))
        edges = self._edges
        etcd_lock = None
        if settings.source == "etcd":
            etcd_lock = EtcdReconcileLock(edges.etcd(store.read()), spec.name, self._lock_command("headroom"),
                                          ttl=int(max(60, 3 * settings.interval + settings.drain_timeout)))
        outcome = reconcile(spec, store, edges.observe, edges, dry_run=dry_run, etcd_lock=etcd_lock,
                            log=log, command=self._lock_command("headroom"))
        data = outcome.to_json()
        return HeadroomResult(status=data["status"], message=data["message"], added=tuple(data["added"]),
                              removed=tuple(data["removed"]), not_drained=tuple(data["not_drained"]),
                              decision=data["decision"])

    def headroom_settings(self) -> HeadroomSpec:
        """The spec's headroom section; UserError when it has none."""
        return headroom_settings(self.spec)

    # ---- down ----------------------------------------------------------------------------------

    def down(self, *, confirm: Callable[[list[str]], bool] | None = None,
             progress: Progress | None = None) -> DownResult:
        """Destroy every host of the cluster (found by tag in the provider) and what the
        provider made for it; state keeps the cluster with no hosts. A cluster with no host and
        no state is left as it is (nothing is written). `confirm`, when given, is asked with the
        names of the hosts found, before the lock; False: ActionError, nothing destroyed."""
        emit = progress or quiet
        spec, store = self.spec, self.store
        log: Callable[[str], None] = lambda message: emit(Event("log", "down", message))  # noqa: E731
        provider = check_provider(spec, store.workdir, log=log)  # a refused spec creates nothing
        live = [h for h in provider.list_hosts() if h.state != "terminated"]
        if not live and not store.exists():
            return DownResult(destroyed=(), forgotten=(), nothing=True)
        if confirm is not None:
            for host in live:
                log(f"would destroy {host.name} ({host.pool or '?'}, {host.provider_id})")
            if not confirm(sorted(h.name for h in live)):
                raise ActionError(f"nothing destroyed: the answer was not {spec.name!r}")
        with store.lock(self._lock_command("down")):
            state = store.read()
            live = [h for h in provider.list_hosts() if h.state != "terminated"]
            names = sorted(h.name for h in live)
            recorded = sorted(state.get("hosts", {}))
            gone = sorted(set(recorded) - set(names))
            for host in live:
                note = "" if host.name in recorded else " (not in state)"
                log(f"destroy {host.name} ({host.pool or '?'}, {host.provider_id}){note}")
            if gone:
                log(f"{len(gone)} host(s) in state already gone from the cloud: {', '.join(gone)}")
            if names:
                log(f"destroying {len(names)} host(s)")
                provider.destroy_hosts(names)
            provider.teardown()
            state["hosts"] = {}
            store.write(state)
        return DownResult(destroyed=tuple(names), forgotten=tuple(gone))

    # ---- helpers -------------------------------------------------------------------------------

    def command(self, *words: str, extra: tuple[str, ...] = ()) -> str:
        """The command line a hint in an error message names."""
        parts = ["provision", *words, self.spec_path or "SPEC"]
        if self.state_dir is not None:
            parts += ["--state-dir", self.state_dir]
        return shlex.join(parts + list(extra))

    def require_state(self) -> None:
        """ActionError (exit 1) with one answer for a cluster that has no state."""
        if not self.store.exists():
            raise ActionError(f"cluster {self.spec.name} has no state at {self.store.location}; "
                              f"create it with: {self.command('up', extra=('--yes',))}")

    def _check_skew(self, state: dict[str, Any], current: Plan | None = None) -> None:
        """A Kubernetes version change the skew policy refuses: UserError naming kubernetes.version."""
        creating = [(h.name, h.role) for h in (current or plan(self.spec, state)).create]
        skew = check_version_skew(self.spec, state, creating)
        if not skew.allowed:
            raise UserError(skew.reason)

    def _lock_command(self, verb: str) -> str:
        return self.lock_command or f"provision.api {verb} {self.spec.name}"


def check_burst_reach(spec: Spec, state: dict) -> None:
    """Cloud bursting: a need of a pool on another provider that the rules provision makes
    refuse is a UserError (exit 2) naming the field, before anything is asked or made."""
    from .providers.burst_reach import refuse_blocked
    from .providers.pools import pool_providers_needs
    refuse_blocked(pool_providers_needs(spec, state))


def _applies_rollout(phases: tuple[Phase, ...]) -> bool:
    return any(p.name == "rollout" for p in phases)
