"""Role secrets: a host's private keys and tokens, delivered over SSH (never in its boot config).

Typhoon's model: a boot config carries certificates, CA bundles and units only; the keys come
after the host answers SSH. The `secrets` phase passes each host its own files as host data
`secret_files` ([path, mode, bytes] triples, in memory only: never written to the inventory file)
and `secret_dirs` (the directories that hold them, kept 0700). Each file is written root-owned
with its mode (0600); pyinfra compares the host's copy first, so an unchanged file is not
rewritten and a re-run changes nothing. When a file changed on a systemd host, the unit that
reads it is restarted if it runs (`try-restart`); a unit waiting for its key (its ExecStartPre
checks for the file, Restart=always) starts by itself on its next try.
"""
from __future__ import annotations

import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

# Which unit reads which key (for a restart once a key changed).
CONSUMERS = {
    "/etc/ssl/etcd/server.key": "etcd-member.service",
    "/etc/ssl/etcd/peer.key": "etcd-member.service",
    "/etc/ssl/etcd/agent.key": "provision-host-agent.service",
    "/etc/ssl/etcd/flannel.key": "flanneld.service",
    "/etc/ssl/etcd/fleet.key": "fleet.service",
}


def restart_command(unit: str) -> str:
    """Restart `unit` if it runs, on a systemd host only (elsewhere the unit's own retry loop
    picks the file up)."""
    return (f"if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then "
            f"systemctl try-restart {unit}; fi")


@deploy("secrets")
def apply(report: dict) -> None:
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    secret_files = host.data.get("secret_files")
    if secret_files is None:
        # Run without the phase's data (e.g. from the pyinfra CLI): nothing to deliver.
        entry["notes"].append("no secret_files data given: nothing delivered")
        return
    for path in host.data.get("secret_dirs") or ():
        files.directory(name=f"private directory {path}", path=path, user="root", group="root", mode="700",
                        _sudo=True)
    changed_units: dict[str, list] = {}
    for path, mode, data in secret_files:
        # The name pyinfra prints and keeps is the path only, never the contents.
        op = files.put(name=f"secret {path}", src=io.BytesIO(bytes(data)), dest=path, user="root", group="root",
                       mode=f"{int(mode):o}", _sudo=True)
        unit = CONSUMERS.get(path)
        if unit:
            changed_units.setdefault(unit, []).append(op)
    for unit, ops in sorted(changed_units.items()):
        server.shell(name=f"restart {unit} if a key it reads changed", commands=[restart_command(unit)],
                     _sudo=True, _if=lambda ops=ops: any(op.did_change() for op in ops))
    entry["notes"].append(f"{len(secret_files)} secret files checked")
