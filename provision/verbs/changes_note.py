"""What `up` says about running hosts a spec change affects: which it updates in place and which
it replaces (its `rollout` phase), or, when the phases chosen leave `rollout` out, that they stay
as they are."""
from __future__ import annotations

from ..app import App
from ..changes import KEEP, REPLACE, UNKNOWN, host_changes


def warn_unapplied_changes(app: App, spec, state, current, applying: bool = True) -> list[str]:
    """Say, once per affected host, what `up` does with it (`applying`: the rollout phase runs);
    returns those host names."""
    affected = [c for c in host_changes(spec, state, current).values() if c.action not in (KEEP, UNKNOWN)]
    for change in affected:
        what = "replacement" if change.action == REPLACE else "an in-place update"
        if applying:
            app.ui.log("plan", f"{change.name}: {what} ({change.reason})")
        else:
            app.ui.warn(f"{change.name}: needs {what} ({change.reason}); the phases chosen leave out `rollout`, "
                        "so the host stays as it is (see `provision plan`)")
    return [c.name for c in affected]
