"""`provision scale SPEC POOL COUNT [--yes] [--dry-run]`: set a worker pool's size and converge.

COUNT must lie within the pool's min..max. The size is recorded in state
(`state["pools"][POOL] = {"size": COUNT, "spec_count": <the spec's count>}`), so a later `up`
keeps it until the spec's count changes; then the phases from `machines` to `workers` create
and bootstrap the new hosts (or destroy the surplus ones). The work is
`provision.api.Cluster.scale`; this verb asks and formats.
"""
from __future__ import annotations

from ..app import App
from ..errors import ActionError


def not_confirmed(app: App, pool: str, count: int) -> ActionError:
    """Nothing changed; the hint is the complete command that applies it."""
    return ActionError(f"nothing changed: to apply, run: {app.command('scale', extra=(pool, str(count), '--yes'))} "
                       "(or --dry-run)")


def run(app: App, pool: str, count: int, yes: bool, dry_run: bool) -> int:
    spec, cluster = app.spec, app.cluster()
    if not dry_run and not yes and not app.ui.can_ask():  # refuse before the lock: nothing is created
        cluster.preview_scale(pool, count, progress=app.progress)
        raise not_confirmed(app, pool, count)
    asks = not yes
    result = cluster.scale(pool, count, dry_run=dry_run, progress=app.progress,
                           confirm=(lambda _plan: app.ui.confirm(f"Scale pool {pool} of {spec.name} to {count}?",
                                                                 False)) if asks else None)
    app.ui.result({"cluster": spec.name, "pool": pool, "size": count, "dry_run": dry_run,
                   "created": list(result.created), "destroyed": list(result.destroyed), "results": result.results,
                   "seconds": {k: round(v, 2) for k, v in result.seconds.items()}},
                  f"cluster {spec.name}: pool {pool} {'would be' if dry_run else 'is'} {count} hosts "
                  f"({len(result.created)} created, {len(result.destroyed)} destroyed)")
    return 0
