"""`provision down SPEC [--yes]`: destroy every host of the cluster and what the provider made
for it.

Hosts are found by tag in the cloud (`provider.list_hosts()`), not only from state, so hosts a
lost or stale state forgot go too. A cluster with no state and no host exits 0 ("nothing to
destroy") and writes nothing. Without --yes: on a terminal it asks for the cluster's name;
without one it lists what would go and exits 0, changing nothing (kops).
"""
from __future__ import annotations

import click

from ..app import App
from ..errors import ActionError
from .preflight import check_provider
from ..state import command_line


def confirm_by_name(app: App, count: int) -> bool:
    """A destroy is confirmed by typing the cluster's name, not by a single `y`."""
    name = app.spec.name
    answer = click.prompt(f"Destroy {count} host(s) of cluster {name}? Type the cluster's name to confirm",
                          default="", show_default=False, err=True)
    return answer.strip() == name


def run(app: App, yes: bool) -> int:
    spec, store, ui = app.spec, app.store, app.ui
    log = lambda message: ui.log("down", message)  # noqa: E731
    provider = check_provider(spec, store.workdir, log=log)  # a refused spec creates nothing
    live = [h for h in provider.list_hosts() if h.state != "terminated"]
    if not live and not store.exists():
        ui.result({"destroyed": [], "forgotten": [], "confirmed": False},
                  f"cluster {spec.name}: nothing to destroy (no host found, no state at {store.location})")
        return 0
    if not yes:
        names = sorted(h.name for h in live)
        for host in live:
            log(f"would destroy {host.name} ({host.pool or '?'}, {host.provider_id})")
        if not app.ui.can_ask():
            apply = app.command("down", extra=("--yes",))
            log(f"nothing destroyed (no --yes, no terminal to ask); to destroy: {apply}")
            ui.result({"destroyed": [], "would_destroy": names, "confirmed": False, "apply": apply},
                      "\n".join(names) if names else f"cluster {spec.name}: no host, only state to forget")
            return 0
        if not confirm_by_name(app, len(names)):
            raise ActionError(f"nothing destroyed: the answer was not {spec.name!r}")
    with store.lock(command_line()):
        state = store.read()
        live = [h for h in provider.list_hosts() if h.state != "terminated"]
        names = sorted(h.name for h in live)
        recorded = sorted(state.get("hosts", {}))
        gone = sorted(set(recorded) - set(names))
        for host in live:
            note = "" if host.name in recorded else " (not in state)"
            log(f"destroy {host.name} ({host.pool or '?'}, {host.provider_id}){note}")
        if gone:
            log(f"{len(gone)} host(s) in state already gone from the cloud: {', '.join(gone)}")
        if names:
            log(f"destroying {len(names)} host(s)")
            provider.destroy_hosts(names)
        provider.teardown()
        state["hosts"] = {}
        store.write(state)
    ui.result({"destroyed": names, "forgotten": gone, "confirmed": True},
              f"cluster {spec.name}: {len(names)} host(s) destroyed")
    return 0
