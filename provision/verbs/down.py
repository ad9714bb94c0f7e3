"""`provision down SPEC [--yes]`: destroy every host of the cluster and what the provider made
for it.

Hosts are found by tag in the cloud (`provider.list_hosts()`), not only from state, so hosts a
lost or stale state forgot go too. Without --yes it shows what would go and exits 1 (or asks,
on a terminal).
"""
from __future__ import annotations

from ..errors import ActionError
from .preflight import check_provider
from ..state import command_line
from .up import confirm


def run(app, yes: bool) -> int:
    spec, store, ui = app.spec, app.store, app.ui
    log = lambda message: ui.log("down", message)  # noqa: E731
    provider = check_provider(spec, store.workdir, log=log)  # a refused spec creates nothing
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
        if not confirm(app, f"Destroy {len(names)} host(s) of cluster {spec.name}?", yes):
            raise ActionError(f"nothing destroyed: {len(names)} host(s) of cluster {spec.name} would go; "
                              "re-run with --yes")
        if names:
            log(f"destroying {len(names)} host(s)")
            provider.destroy_hosts(names)
        provider.teardown()
        state["hosts"] = {}
        store.write(state)
    ui.result({"cluster": spec.name, "destroyed": names, "forgotten": gone, "confirmed": True},
              f"cluster {spec.name}: {len(names)} host(s) destroyed")
    return 0
