"""Role addons: the first master applies the cluster's addon manifests (kube-proxy's DaemonSet,
cluster DNS, node RBAC) through the API, as its run-once bootstrap does on a fresh cluster.

Run by the `masters` phase on a running cluster when the addon files rendered now differ from
what state records as last applied (an upgrade that brings a new addon, a changed manifest).
Host data `addon_files` ([path, mode, bytes] triples: the addon manifests, their index and the
bootstrap script with its environment, all from the first master's boot config): the files that
differ on the host are written first, then `bootstrap.sh addons` applies every manifest of the
index (server-side apply: creates what is missing, updates what changed; a re-run is a no-op).
"""
from __future__ import annotations

import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files as file_ops
from pyinfra.operations import server

from ._common import wanted_file_state
from .facts import PathStates


def apply_command() -> str:
    """Apply the addons through the first master's API (its bootstrap script, step `addons`) on a
    systemd host whose run-once bootstrap has run; before that, the bootstrap applies the files
    just written itself; elsewhere (the local provider) no API runs."""
    return ("if [ -d /run/systemd/system ] && [ -e /opt/provision/bootstrap.done ]; then "
            "set -a; . /etc/provision/bootstrap.env; set +a; timeout 300 /opt/provision/bootstrap.sh addons; fi")


@deploy("addons")
def apply(report: dict) -> None:
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    given = host.data.get("addon_files")
    if given is None:
        entry["notes"].append("no addon_files data given: nothing applied")
        return
    wanted = {str(path): (int(mode), bytes(data)) for path, mode, data in given}
    current = host.get_fact(PathStates, paths=sorted(wanted), _sudo=True)
    written = []
    for path, (mode, data) in sorted(wanted.items()):
        if current.get(path) == wanted_file_state(mode, data):
            continue
        file_ops.put(name=f"write {path}", src=io.BytesIO(data), dest=path, user="root", group="root",
                     mode=f"{mode:o}", create_remote_dir=True, force=True, _sudo=True)
        written.append(path)
    entry["written"] = written
    server.shell(name="apply the addon manifests through the API", commands=[apply_command()], _sudo=True)
    entry["notes"].append(f"{len(written)} of {len(wanted)} addon files written; addons applied")
