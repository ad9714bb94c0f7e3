"""`provision down SPEC [--yes]`: destroy every host of the cluster and what the provider made
for it.

Hosts are found by tag in the cloud (`provider.list_hosts()`), not only from state, so hosts a
lost or stale state forgot go too. A cluster with no state and no host exits 0 ("nothing to
destroy") and writes nothing. Without --yes: on a terminal it asks for the cluster's name;
without one it lists what would go and exits 0, changing nothing (kops). The work is
`provision.api.Cluster.down`; this verb asks and formats.
"""
from __future__ import annotations

import click

from ..app import App


class NotAsked(Exception):
    """No --yes and no terminal: what would go was listed; nothing is destroyed."""

    def __init__(self, names: list[str]):
        super().__init__("not asked")
        self.names = names


def confirm_by_name(app: App, count: int) -> bool:
    """A destroy is confirmed by typing the cluster's name, not by a single `y`."""
    name = app.spec.name
    answer = click.prompt(f"Destroy {count} host(s) of cluster {name}? Type the cluster's name to confirm",
                          default="", show_default=False, err=True)
    return answer.strip() == name


def run(app: App, yes: bool) -> int:
    spec, ui, cluster = app.spec, app.ui, app.cluster()

    def confirm(names: list[str]) -> bool:
        if not ui.can_ask():
            raise NotAsked(names)
        return confirm_by_name(app, len(names))

    try:
        result = cluster.down(confirm=None if yes else confirm, progress=app.progress)
    except NotAsked as asked:
        apply = app.command("down", extra=("--yes",))
        ui.log("down", f"nothing destroyed (no --yes, no terminal to ask); to destroy: {apply}")
        ui.result({"destroyed": [], "would_destroy": asked.names, "confirmed": False, "apply": apply},
                  "\n".join(asked.names) if asked.names else f"cluster {spec.name}: no host, only state to forget")
        return 0
    if result.nothing:
        ui.result({"destroyed": [], "forgotten": [], "confirmed": False},
                  f"cluster {spec.name}: nothing to destroy (no host found, no state at {cluster.location})")
        return 0
    ui.result({"destroyed": list(result.destroyed), "forgotten": list(result.forgotten), "confirmed": True},
              f"cluster {spec.name}: {len(result.destroyed)} host(s) destroyed")
    return 0
