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

UPLOAD_DIR = "/run/provision-upload"
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
    # pyinfra uploads as the SSH user to a temporary file, then copies it into place as root:
    # that temporary file lives in a directory only the SSH user (who may sudo anyway) can enter.
    upload_dir = f"{UPLOAD_DIR}-{host.data.get('ssh_user') or 'root'}"
    files.directory(name="private upload directory", path=upload_dir, user=host.data.get("ssh_user") or "root",
                    mode="700", _sudo=True)
    changed_units: dict[str, list] = {}
    for path, mode, data in secret_files:
        octal = f"{int(mode):o}"
        # An absent file is made empty with its mode first: the copy keeps it, so no moment
        # exists where the key is readable by others. Names carry paths only, never contents.
        files.file(name=f"secret {path} exists, {octal}", path=path, user="root", group="root", mode=octal,
                   _sudo=True)
        op = files.put(name=f"secret {path}", src=io.BytesIO(bytes(data)), dest=path, user="root", group="root",
                       mode=octal, _sudo=True, _temp_dir=upload_dir)
        unit = CONSUMERS.get(path)
        if unit:
            changed_units.setdefault(unit, []).append(op)
    for unit, ops in sorted(changed_units.items()):
        if any(op.will_change for op in ops):  # only what differs yields an operation
            server.shell(name=f"restart {unit}: a key it reads changed", commands=[restart_command(unit)],
                         _sudo=True)
    entry["notes"].append(f"{len(secret_files)} secret files checked")
