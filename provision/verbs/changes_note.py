"""What `up` says about running hosts a spec change affects: it does not update or replace
them yet (plan shows them), so it says so instead of reporting a silent success."""
from __future__ import annotations

from ..app import App
from ..changes import KEEP, UNKNOWN, host_changes


def warn_unapplied_changes(app: App, spec, state, current) -> list[str]:
    """Warn, once per affected host, that `up` leaves it as it is; returns those host names."""
    affected = [c for c in host_changes(spec, state, current).values() if c.action not in (KEEP, UNKNOWN)]
    for change in affected:
        app.ui.warn(f"{change.name}: needs {'replacement' if change.action == 'replace' else 'an in-place update'} "
                    f"({change.reason}); `up` does not apply changes to running hosts yet: it keeps the host "
                    "as it is (see `provision plan`)")
    return [c.name for c in affected]
