"""`provision up SPEC [--yes] [--until PHASE | --only PHASE] [--dry-run]`.

Shows the plan first; acts with --yes, with --plan FILE (a plan saved by `provision plan --out`,
refused when the spec or state changed since), or with a yes at the prompt on a terminal.
Without any of them and without a terminal it prints the plan and exits 0 (kops). The work is
`provision.api.Cluster.up` (which holds the cluster lock for the whole run, so a second
`provision` on the same cluster fails at once); this verb asks and formats.
"""
from __future__ import annotations

from ..api_results import UpResult
from ..app import App
from ..phases import select
from ..plan import Plan
from ..saved_plan import load_saved_plan
from .plan_table import plan_table


def print_unconfirmed_plan(app: App, current: Plan) -> int:
    """No --yes and nobody to ask: the plan is the answer (kops); exit 0, nothing changed."""
    apply = app.command("up", extra=("--yes",))
    app.ui.log("up", f"nothing changed (no --yes, no terminal to ask); to apply: {apply}")
    app.ui.result({"applied": False, "plan": current.to_json(), "apply": apply}, plan_table(app, current))
    return 0


def run(app: App, yes: bool, until: str | None, only: str | None, dry_run: bool, plan_file: str | None = None,
        verify: bool = False, max_unavailable: int = 1) -> int:
    spec = app.spec
    select(until=until, only=only)  # a phase name is checked before anything is read
    saved = load_saved_plan(spec, plan_file, app.command) if plan_file else None
    cluster = app.cluster()  # says the state first; opening it creates nothing
    if saved is None and not dry_run and not yes and not app.ui.can_ask():  # answer before the lock
        return print_unconfirmed_plan(app, cluster.preview_up(until=until, only=only, progress=app.progress))
    asks = not yes and saved is None  # a saved plan is what was approved
    result = cluster.up(until=until, only=only, dry_run=dry_run, verify=verify, max_unavailable=max_unavailable,
                        saved_plan=saved, plan_file=plan_file or "", progress=app.progress,
                        confirm=(lambda _plan: app.ui.confirm(f"Apply to cluster {spec.name}?", False)) if asks else None)
    print_result(app, result)
    return 0


def print_result(app: App, result: UpResult) -> None:
    rows = [[name, h.get("pool"), str(h.get("role")) + (" +etcd" if h.get("etcd") else ""), h.get("address"),
             h.get("state")] for name, h in sorted(result.hosts.items())]
    changed = list(result.changed)
    outcome = ("dry run" if result.dry_run else f"changed: {', '.join(changed)}" if changed
               else "already converged, no change")
    summary = app.ui.table(f"cluster {app.spec.name}: {', '.join(result.phases)} done in "
                           f"{sum(result.seconds.values()):.1f}s; {outcome}",
                           ["host", "pool", "role", "address", "state"], rows,
                           ids=("host", "pool", "role", "address", "state"))
    if result.kubeconfig:  # what to do next, as kops and Typhoon say it
        summary.caption = f"admin kubeconfig: {result.kubeconfig}  (export KUBECONFIG={result.kubeconfig}); " \
                          f"check the cluster with: {app.command('status')}"
        summary.caption_justify = "left"
    app.ui.result({"applied": result.applied, "dry_run": result.dry_run, "phases": list(result.phases),
                   "plan": result.plan.to_json(), "results": result.results, "changed": changed,
                   "seconds": {k: round(v, 2) for k, v in result.seconds.items()}}, summary)
