"""`provision headroom SPEC [--once] [--dry-run] [--explain]`: keep spare capacity in the
headroom pool. `--once` is what cron runs; without it, reconcile every `headroom.interval`.
An overlapping run exits 0 with "another run holds the lock". Each pass is
`provision.api.Cluster.headroom_once`; this verb loops and formats."""
from __future__ import annotations

import time

from ..api import headroom_settings
from ..app import App
from ..headroom.policy import summarize


def run(app: App, once: bool, dry_run: bool, explain: bool) -> int:
    spec = app.spec
    settings = headroom_settings(spec)  # UserError when the spec has none, before state is read
    cluster = app.cluster()
    if explain:
        decisions = (app.store.read().get("headroom") or {}).get("decisions") or []
        lines = summarize(decisions[-10:]) or ["no headroom decision recorded yet"]
        app.ui.result({"cluster": spec.name, "decisions": decisions[-10:]}, "\n".join(lines))
        return 0
    while True:
        outcome = cluster.headroom_once(dry_run=dry_run, progress=app.progress)
        if once or dry_run:
            d = outcome.decision
            text = outcome.message if d is None else \
                f"{spec.name}/{d['pool']}: {d['action']} ({d['current']} -> {d['desired']}): {outcome.message}"
            app.ui.result({"cluster": spec.name, "status": outcome.status, "message": outcome.message,
                           "added": list(outcome.added), "removed": list(outcome.removed),
                           "not_drained": list(outcome.not_drained), "decision": d}, text)
            return 0
        time.sleep(settings.interval)
