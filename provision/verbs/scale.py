"""`provision scale SPEC POOL COUNT [--yes] [--dry-run]`: set a worker pool's size and converge.

COUNT must lie within the pool's min..max. The size is recorded in state
(`state["pools"][POOL] = {"size": COUNT, "spec_count": <the spec's count>}`), so a later `up`
keeps it until the spec's count changes; then the phases from `machines` to `workers` create
and bootstrap the new hosts (or destroy the surplus ones).
"""
from __future__ import annotations

from ..app import App
from ..errors import ActionError, UserError
from ..phases import RunContext, converge
from ..plan import plan
from ..state import command_line
from ..version_skew import check_spec as check_version_skew
from .preflight import check_provider

def not_confirmed(app: App, pool: str, count: int) -> ActionError:
    """Nothing changed; the hint is the complete command that applies it."""
    return ActionError(f"nothing changed: to apply, run: {app.command('scale', extra=(pool, str(count), '--yes'))} "
                       "(or --dry-run)")


def check_request(spec, pool_name: str, count: int):
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


def request(app: App, state: dict, target_pool, count: int):
    """Record the requested size in `state` (in memory), log what it means, return the plan."""
    pool = target_pool.name
    before = len([h for h in state.get("hosts", {}).values() if h.get("pool") == pool])
    state.setdefault("pools", {})[pool] = {**state.get("pools", {}).get(pool, {}),
                                           "size": count, "spec_count": target_pool.count}
    target = plan(app.spec, state)
    app.ui.log("scale", f"pool {pool}: {before} -> {count} hosts ({len(target.create)} to create, "
                        f"{len(target.destroy)} to destroy)")
    return target


def run(app: App, pool: str, count: int, yes: bool, dry_run: bool) -> int:
    spec, store, ui = app.spec, app.store, app.ui
    target_pool = check_request(spec, pool, count)
    check_provider(spec)
    if not dry_run and not yes and not app.ui.can_ask():  # refuse before the lock: nothing is created
        request(app, store.read(), target_pool, count)
        raise not_confirmed(app, pool, count)
    with store.lock(command_line()):
        state = store.read()
        target = request(app, state, target_pool, count)
        skew = check_version_skew(spec, state, [(h.name, h.role) for h in target.create])
        if not skew.allowed:  # new kubelets newer than the running API server; nothing saved yet
            raise UserError(skew.reason)
        if not dry_run and not app.ui.confirm(f"Scale pool {pool} of {spec.name} to {count}?", yes):
            raise not_confirmed(app, pool, count)
        ctx = RunContext(spec=spec, store=store, state=state, ui=ui, dry_run=dry_run, options={"yes": yes})
        ctx.save()  # the requested size first: a crash after it leaves state a re-run completes
        converge(ctx)
    ui.result({"cluster": spec.name, "pool": pool, "size": count, "dry_run": dry_run,
               "created": [h.name for h in target.create], "destroyed": list(target.destroy),
               "results": ctx.results},
              f"cluster {spec.name}: pool {pool} {'would be' if dry_run else 'is'} {count} hosts "
              f"({len(target.create)} created, {len(target.destroy)} destroyed)")
    return 0
