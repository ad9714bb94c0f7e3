"""What `up` and `scale` say as they go, as progress events: the plan announced (counts, hosts
made and destroyed, running hosts a spec change affects) and each phase's start and end."""
from __future__ import annotations

import time
from typing import Any

from .api_results import Event, Progress
from .changes import KEEP, REPLACE, UNKNOWN, host_changes
from .phases import Phase, RunContext
from .plan import Plan
from .spec import Spec


def announce_plan(emit: Progress, spec: Spec, state: dict[str, Any], current: Plan, applying: bool) -> list[str]:
    """Say what a plan does: counts, each host created (detail) and destroyed, and once per
    running host a spec change affects what `up` does with it (`applying`: the rollout phase
    runs; otherwise a warning that it stays as it is). Returns those hosts' names."""
    emit(Event("log", "plan", f"{len(current.create)} to create, {len(current.keep)} to keep, "
                              f"{len(current.destroy)} to destroy"))
    for host in current.create:
        emit(Event("debug", "plan", f"create {host.name} ({host.role}, {host.address or 'address from provider'})"))
    for name in current.destroy:
        emit(Event("log", "plan", f"destroy {name}"))
    affected = [c for c in host_changes(spec, state, current).values() if c.action not in (KEEP, UNKNOWN)]
    for change in affected:
        what = "replacement" if change.action == REPLACE else "an in-place update"
        if applying:
            emit(Event("log", "plan", f"{change.name}: {what} ({change.reason})"))
        else:
            emit(Event("warning", "warning", f"{change.name}: needs {what} ({change.reason}); the phases chosen "
                                             "leave out `rollout`, so the host stays as it is (see `provision plan`)"))
    return [c.name for c in affected]


def run_phases(ctx: RunContext, phases: tuple[Phase, ...], emit: Progress) -> dict[str, float]:
    """Run the phases in order, each announced (`phase` event: index of total) and timed
    (`done` event); returns each phase's seconds."""
    timings: dict[str, float] = {}
    for index, phase in enumerate(phases, 1):
        runner = phase.runner()
        emit(Event("phase", phase.name, ("dry run: " if ctx.dry_run else "") + phase.summary, index, len(phases)))
        started = time.monotonic()
        result = runner(ctx)
        timings[phase.name] = time.monotonic() - started
        if result is not None:
            ctx.results[phase.name] = result
        emit(Event("done", phase.name, f"done in {timings[phase.name]:.1f}s", index, len(phases),
                   timings[phase.name]))
    return timings
