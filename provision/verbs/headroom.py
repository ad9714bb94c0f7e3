"""`provision headroom SPEC [--once] [--dry-run] [--explain]`: keep spare capacity in the
headroom pool. `--once` is what cron runs; without it, reconcile every `headroom.interval`.
An overlapping run exits 0 with "another run holds the lock"."""
from __future__ import annotations

import time

from ..app import App
from ..errors import UserError
from ..headroom.policy import summarize
from ..headroom.reconcile import ClusterEdges, EtcdReconcileLock, reconcile
from ..state import command_line


def run(app: App, once: bool, dry_run: bool, explain: bool) -> int:
    spec = app.spec
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; add one to scale a pool automatically")
    if explain:
        decisions = (app.store.read().get("headroom") or {}).get("decisions") or []
        lines = summarize(decisions[-10:]) or ["no headroom decision recorded yet"]
        app.ui.result({"cluster": spec.name, "decisions": decisions[-10:]}, "\n".join(lines))
        return 0
    log = lambda message: app.ui.log("headroom", message)  # noqa: E731
    edges = ClusterEdges(spec, app.store, log=log, ui=app.ui)
    while True:
        etcd_lock = None
        if spec.headroom.source == "etcd":
            etcd_lock = EtcdReconcileLock(edges.etcd(app.store.read()), spec.name, command_line(),
                                          ttl=int(max(60, 3 * spec.headroom.interval + spec.headroom.drain_timeout)))
        outcome = reconcile(spec, app.store, edges.observe, edges, dry_run=dry_run, etcd_lock=etcd_lock,
                            log=log, command=command_line())
        if once or dry_run:
            d = outcome.decision
            text = outcome.message if d is None else \
                f"{spec.name}/{d.pool}: {d.action} ({d.current} -> {d.desired}): {outcome.message}"
            app.ui.result({"cluster": spec.name, **outcome.to_json()}, text)
            return 0
        time.sleep(spec.headroom.interval)
