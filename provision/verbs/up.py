"""`provision up SPEC [--yes] [--until PHASE | --only PHASE] [--dry-run]`.

Shows the plan first; acts only with --yes (or a yes at the prompt on a terminal). Holds the
cluster lock for the whole run, so a second `provision` on the same cluster fails at once.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import click

from ..errors import ActionError
from ..phases import RunContext, select
from ..plan import plan
from ..state import command_line
from .preflight import check_provider

NOT_CONFIRMED = "nothing changed: re-run with --yes to apply (or --dry-run to see each phase)"


def can_ask(app) -> bool:
    """Whether a question can be put to a person (a terminal, and not a script reading JSON)."""
    return sys.stdin.isatty() and not app.ui.json


def confirm(app, question: str, yes: bool) -> bool:
    if yes:
        return True
    if can_ask(app):
        return click.confirm(question, default=False, err=True)
    return False


def log_plan(app, current) -> None:
    app.ui.log("plan", f"{len(current.create)} to create, {len(current.keep)} to keep, "
                       f"{len(current.destroy)} to destroy")
    for host in current.create:
        app.ui.debug("plan", f"create {host.name} ({host.role}, {host.address or 'address from provider'})")
    for name in current.destroy:
        app.ui.log("plan", f"destroy {name}")


def run(app, yes: bool, until: str | None, only: str | None, dry_run: bool) -> int:
    phases = select(until=until, only=only)
    spec = app.spec
    check_provider(spec)  # a spec the provider refuses fails here, before pki makes anything
    store = app.store
    if not dry_run and not yes and not can_ask(app):  # refuse before the lock: nothing is created
        log_plan(app, plan(spec, store.read()))
        raise ActionError(NOT_CONFIRMED)
    # A dry run of a cluster with nothing recorded yet takes no lock: the lock would create its
    # directory. Once anything is recorded, a dry run holds the lock like any run.
    recorded = store.read().get("serial", 0) > 0 or bool(store.list_blobs())
    lock = store.lock(command_line()) if not dry_run or recorded else contextlib.nullcontext()
    with lock:
        state = store.read()
        current = plan(spec, state)
        log_plan(app, current)
        if not dry_run and not confirm(app, f"Apply to cluster {spec.name}?", yes):
            raise ActionError(NOT_CONFIRMED)
        ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui, dry_run=dry_run,
                         options={"yes": yes})
        timings = run_with_progress(app, ctx, phases)
    hosts = ctx.state.get("hosts", {})
    rows = [[name, h.get("pool"), h.get("role") + (" +etcd" if h.get("etcd") else ""), h.get("address"),
             h.get("state")] for name, h in sorted(hosts.items())]
    changed = [name for name, result in ctx.results.items() if phase_changed(result)]
    outcome = ("dry run" if dry_run else f"changed: {', '.join(changed)}" if changed
               else "already converged, no change")
    summary = app.ui.table(f"cluster {spec.name}: {', '.join(p.name for p in phases)} done in "
                           f"{sum(timings.values()):.1f}s; {outcome}",
                           ["host", "pool", "role", "address", "state"], rows)
    kubeconfig = (ctx.results.get("kubeconfig") or {}).get("path") if not dry_run else None
    if kubeconfig:  # what to do next, as kops and Typhoon say it
        kubeconfig = os.path.abspath(kubeconfig)
        summary.caption = f"admin kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig}); " \
                          f"check the cluster with: provision status {app.spec_path}"
        summary.caption_justify = "left"
    app.ui.result({"cluster": spec.name, "dry_run": dry_run, "phases": [p.name for p in phases],
                   "plan": current.to_json(), "results": ctx.results, "changed": changed,
                   "seconds": {k: round(v, 2) for k, v in timings.items()}}, summary)
    return 0


def phase_changed(result) -> bool:
    """Whether a phase's result says it changed something (created, changed, destroyed...)."""
    if not isinstance(result, dict) or result.get("dry_run"):
        return False
    return any(bool(result.get(key)) for key in ("created", "changed", "destroyed", "recreated"))


def run_with_progress(app, ctx: RunContext, phases) -> dict[str, float]:
    """Run the phases in order, each announced as `[name] (i/n)` and timed."""
    timings: dict[str, float] = {}
    for i, phase in enumerate(phases, 1):
        runner = phase.runner()
        ctx.log(phase.name, f"({i}/{len(phases)}) " + ("dry run: " if ctx.dry_run else "") + phase.summary)
        started = time.monotonic()
        result = runner(ctx)
        timings[phase.name] = time.monotonic() - started
        if result is not None:
            ctx.results[phase.name] = result
        app.ui.debug(phase.name, f"done in {timings[phase.name]:.1f}s")
    return timings
