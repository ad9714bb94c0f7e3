"""The plan as a table, shown by `plan` and by `up` before it acts."""
from __future__ import annotations

from ..app import App
from ..changes import KEEP


def plan_table(app: App, result, changes=None):
    """The plan as a table; with `changes` (changes.host_changes), kept hosts show keep, update,
    replace or unknown, and the fields that cause it."""
    changes = changes or {}
    # a pool on a provider of its own (cloud bursting) shows it beside the pool's name
    where = {p.name: f"{p.name} ({p.provider.name})" for p in app.spec.pools if p.provider is not None}
    rows = [["create", h.name, where.get(h.pool, h.pool), h.role, h.address or "", "yes" if h.etcd else "", ""]
            for h in result.create]
    rows += [[changes[h.name].action if h.name in changes else "keep", h.name, where.get(h.pool, h.pool), h.role,
              h.address or "", "yes" if h.etcd else "", changes[h.name].reason if h.name in changes else ""]
             for h in result.keep]
    rows += [["destroy", n, "", "", "", "", ""] for n in result.destroy]
    counts = change_counts(changes)
    title = (f"plan for {app.spec.name}: {len(result.create)} to create, {len(result.keep)} to keep, "
             f"{len(result.destroy)} to destroy")
    if counts:
        title += " (of those kept: " + ", ".join(f"{n} {action}" for action, n in counts.items()) + ")"
    return app.ui.table(title, ["action", "host", "pool", "role", "address", "etcd", "because"], rows,
                        ids=("action", "host", "pool", "address"))


def change_counts(changes) -> dict[str, int]:
    """How many kept hosts each action other than keep applies to (update, replace, unknown)."""
    counts: dict[str, int] = {}
    for change in changes.values():
        if change.action != KEEP:
            counts[change.action] = counts.get(change.action, 0) + 1
    return dict(sorted(counts.items()))
