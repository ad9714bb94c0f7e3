"""`provision up SPEC [--yes] [--until PHASE | --only PHASE] [--dry-run]`.

Shows the plan first; acts with --yes, with --plan FILE (a plan saved by `provision plan --out`,
refused when the spec or state changed since), or with a yes at the prompt on a terminal.
Without any of them and without a terminal it prints the plan and exits 0 (kops). Holds the
cluster lock for the whole run, so a second `provision` on the same cluster fails at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from ..app import App
from ..errors import ActionError, UserError
from ..phases import RunContext, phase_changed, select
from ..plan import plan
from ..saved_plan import PLAN_FORMAT, spec_fingerprint, state_fingerprint
from ..state import command_line
from ..version_skew import check_spec as check_version_skew
from .changes_note import warn_unapplied_changes
from .plan_table import plan_table
from .preflight import check_provider



def log_plan(app: App, current) -> None:
    app.ui.log("plan", f"{len(current.create)} to create, {len(current.keep)} to keep, "
                       f"{len(current.destroy)} to destroy")
    for host in current.create:
        app.ui.debug("plan", f"create {host.name} ({host.role}, {host.address or 'address from provider'})")
    for name in current.destroy:
        app.ui.log("plan", f"destroy {name}")


def load_saved_plan(app: App, plan_file: str) -> dict:
    """The plan `provision plan SPEC --out FILE` saved; UserError (exit 2) if it is not one for
    this cluster or the spec changed since."""
    try:
        doc = json.loads(Path(plan_file).read_text())
    except FileNotFoundError:
        raise UserError(f"--plan: {plan_file}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"--plan: {plan_file}: not a saved plan ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        raise UserError(f"--plan: {plan_file}: not a saved plan (written by `provision plan SPEC --out FILE`)")
    if doc.get("cluster") != app.spec.name:
        raise UserError(f"--plan: {plan_file} is a plan for cluster {doc.get('cluster')!r}, "
                        f"not {app.spec.name!r}")
    if doc.get("spec_sha256") != spec_fingerprint(app.spec):
        raise UserError(f"--plan: the spec changed since {plan_file} was saved; review a new plan: "
                        f"{app.command('plan', extra=('--out', plan_file))}")
    return doc


def check_saved_state(app: App, doc: dict, state: dict, plan_file: str) -> None:
    if doc.get("state_sha256") != state_fingerprint(state, app.store.list_blobs()):
        raise UserError(f"--plan: the state changed since {plan_file} was saved (serial "
                        f"{doc.get('state_serial')} then, {state.get('serial', 0)} now); review a new plan: "
                        f"{app.command('plan', extra=('--out', plan_file))}")


def print_unconfirmed_plan(app: App, current) -> int:
    """No --yes and nobody to ask: the plan is the answer (kops); exit 0, nothing changed."""
    apply = app.command("up", extra=("--yes",))
    app.ui.log("up", f"nothing changed (no --yes, no terminal to ask); to apply: {apply}")
    app.ui.result({"applied": False, "plan": current.to_json(), "apply": apply}, plan_table(app, current))
    return 0


def check_skew(spec, state) -> None:
    """A Kubernetes version change the skew policy refuses: exit 2 naming kubernetes.version."""
    creating = [(h.name, h.role) for h in plan(spec, state).create]
    skew = check_version_skew(spec, state, creating)
    if not skew.allowed:
        raise UserError(skew.reason)


def run(app: App, yes: bool, until: str | None, only: str | None, dry_run: bool, plan_file: str | None = None,
        verify: bool = False, max_unavailable: int = 1) -> int:
    spec = app.spec
    phases = select(until=until, only=only)
    saved = load_saved_plan(app, plan_file) if plan_file else None
    store = app.store  # said first; opening it creates nothing
    check_provider(spec)  # a spec the provider refuses fails here, before pki makes anything
    check_skew(spec, store.read())  # before anything changes
    if saved is not None:
        check_saved_state(app, saved, store.read(), plan_file or "")  # saved only with a plan file
        yes = True  # the saved plan is what was approved
    if not dry_run and not yes and not app.ui.can_ask():  # answer before the lock: nothing is created
        current = plan(spec, store.read())
        log_plan(app, current)
        warn_unapplied_changes(app, spec, store.read(), current, applying=any(p.name == "rollout" for p in phases))
        return print_unconfirmed_plan(app, current)
    # A dry run of a cluster with nothing recorded yet takes no lock: the lock would create its
    # directory. Once anything is recorded, a dry run holds the lock like any run.
    recorded = store.exists()
    lock = store.lock(command_line()) if not dry_run or recorded else contextlib.nullcontext()
    with lock:
        state = store.read()
        if saved is not None:
            check_saved_state(app, saved, state, plan_file or "")  # again, under the lock
        check_skew(spec, state)  # again, under the lock
        current = plan(spec, state)
        log_plan(app, current)
        warn_unapplied_changes(app, spec, state, current, applying=any(p.name == "rollout" for p in phases))
        if not dry_run and not app.ui.confirm(f"Apply to cluster {spec.name}?", yes):
            raise ActionError(f"nothing changed: to apply, run: {app.command('up', extra=('--yes',))} "
                              "(or --dry-run to see each phase)")
        ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui, dry_run=dry_run,
                         options={"yes": yes, "verify": verify, "max_unavailable": max_unavailable})
        timings = run_with_progress(app, ctx, phases)
    hosts = ctx.state.get("hosts", {})
    rows = [[name, h.get("pool"), h.get("role") + (" +etcd" if h.get("etcd") else ""), h.get("address"),
             h.get("state")] for name, h in sorted(hosts.items())]
    changed = [name for name, result in ctx.results.items() if phase_changed(result)]
    outcome = ("dry run" if dry_run else f"changed: {', '.join(changed)}" if changed
               else "already converged, no change")
    summary = app.ui.table(f"cluster {spec.name}: {', '.join(p.name for p in phases)} done in "
                           f"{sum(timings.values()):.1f}s; {outcome}",
                           ["host", "pool", "role", "address", "state"], rows,
                           ids=("host", "pool", "role", "address", "state"))
    kubeconfig = (ctx.results.get("kubeconfig") or {}).get("path") if not dry_run else None
    if kubeconfig:  # what to do next, as kops and Typhoon say it
        kubeconfig = os.path.abspath(kubeconfig)
        summary.caption = f"admin kubeconfig: {kubeconfig}  (export KUBECONFIG={kubeconfig}); " \
                          f"check the cluster with: {app.command('status')}"
        summary.caption_justify = "left"
    app.ui.result({"applied": not dry_run, "dry_run": dry_run, "phases": [p.name for p in phases],
                   "plan": current.to_json(), "results": ctx.results, "changed": changed,
                   "seconds": {k: round(v, 2) for k, v in timings.items()}}, summary)
    return 0


def run_with_progress(app: App, ctx: RunContext, phases) -> dict[str, float]:
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
