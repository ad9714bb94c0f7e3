"""Role secrets: a host's private keys and tokens, delivered over SSH (never in its boot config).

Typhoon's model: a boot config carries certificates, CA bundles and units only; the keys come
after the host answers SSH. The `secrets` phase passes each host its own files as host data
`secret_files` ([path, mode, bytes] triples, in memory only: never written to the inventory file)
and `secret_dirs` (the directories that hold them, kept 0700, root's).

One fact reads what the host has (mode, owner and sha256 of each file, mode and owner of each
directory); only what differs is sent, as one tar archive (root-owned entries with their modes,
so no file is ever readable by others, not even while it is written) uploaded into a directory
only the SSH user can enter, unpacked as root and removed. A host that has everything gets no
operation. When a key changed on a systemd host, the unit that reads it is restarted if it runs
(`try-restart`); a unit still waiting for its key (ExecStartPre checks for it, Restart=) starts
by itself on its next try.
"""
from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from typing import Iterable, Mapping, Sequence

from pyinfra import host
from pyinfra.api import FileUploadCommand, deploy, operation
from pyinfra.operations import server

from .facts import PathStates

UPLOAD_DIR = "/run/provision-upload"
ARCHIVE = "secrets.tar"
TOKEN_SECRET = "/etc/kubernetes/addons/bootstrap-token.yaml"  # the first master's copy of the token Secret
# Which unit reads which key (for a restart once a key changed).
CONSUMERS = {
    "/etc/ssl/etcd/server.key": "etcd-member.service",
    "/etc/ssl/etcd/peer.key": "etcd-member.service",
    "/etc/ssl/etcd/agent.key": "provision-host-agent.service",
    "/etc/ssl/etcd/flannel.key": "flanneld.service",
    "/etc/ssl/etcd/fleet.key": "fleet.service",
}


def wanted_state(mode: int, data: bytes | None = None) -> str:
    """What PathStates says of a root-owned file (with its bytes) or directory (without)."""
    return f"{mode:o}:0:0 " + (hashlib.sha256(data).hexdigest() if data is not None else "dir")


def differing(secret_files: Iterable[Sequence], secret_dirs: Iterable[str],
              current: Mapping[str, str | None]) -> tuple[list[str], list[tuple[str, int, bytes]]]:
    """(directories, files) whose mode, owner or contents on the host differ from what is wanted."""
    dirs = [d for d in secret_dirs if current.get(d) != wanted_state(0o700)]
    stale = [(path, int(mode), bytes(data)) for path, mode, data in secret_files
             if current.get(path) != wanted_state(int(mode), bytes(data))]
    return dirs, stale


def archive(dirs: Iterable[str], stale: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A tar of the directories (0700) and files (their modes), all root's, mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(dirs):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o700, 0, 0, 0
            tar.addfile(info)
        for path, mode, data in sorted(stale):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def token_command() -> str:
    """Create the bootstrap token Secret through the first master's API (its run-once bootstrap
    script, step `token`), on a systemd host whose bootstrap has run; elsewhere no API runs."""
    return ("if [ -d /run/systemd/system ] && [ -e /opt/provision/bootstrap.done ]; then "
            "set -a; . /etc/provision/bootstrap.env; set +a; timeout 300 /opt/provision/bootstrap.sh token; fi")


def restart_command(unit: str) -> str:
    """Restart `unit` if it runs, on a systemd host only (elsewhere the unit's own retry loop
    picks the file up)."""
    return (f"if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then "
            f"systemctl try-restart {unit}; fi")


def prepare_command(upload_dir: str, upload: str, user: str) -> str:
    """Make the upload directory the SSH user's alone (0700) and the archive's file in it empty
    and 0600 before anything is written to it (an upload into an existing file keeps its mode)."""
    d, f, u = shlex.quote(upload_dir), shlex.quote(upload), shlex.quote(user)
    return f"mkdir -p {d} && chown {u} {d} && chmod 700 {d} && install -m 600 -o {u} /dev/null {f}"


@operation()
def upload_file(src: io.BytesIO, dest: str):
    """Upload `src` to `dest` over SFTP as the SSH user: no facts (pyinfra's files.put reads
    the destination twice, as a file and as a directory, when it is evaluated and again when it
    runs; here the destination was just made empty by `prepare_command`)."""
    src.seek(0)
    yield FileUploadCommand(src, dest)


@deploy("secrets")
def apply(report: dict) -> None:
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    secret_files = host.data.get("secret_files")
    if secret_files is None:
        # Run without the phase's data (e.g. from the pyinfra CLI): nothing to deliver.
        entry["notes"].append("no secret_files data given: nothing delivered")
        return
    secret_dirs = list(host.data.get("secret_dirs") or ())
    # (kube-proxy's retired static pod and key are removed by the node roles, once the addons
    # that replace it are applied: roles/_common.remove_retired)
    paths = secret_dirs + [path for path, _, _ in secret_files]
    current = host.get_fact(PathStates, paths=paths, _sudo=True)
    dirs, stale = differing(secret_files, secret_dirs, current)
    entry["written"] = sorted(path for path, _, _ in stale)  # paths only: an in-place update restarts their readers
    entry["notes"].append(f"{len(stale)} of {len(secret_files)} secret files to write"
                          + (f", {len(dirs)} directories to make private" if dirs else ""))
    if not dirs and not stale:
        return
    user = host.data.get("ssh_user") or "root"
    upload_dir = f"{UPLOAD_DIR}-{user}"
    upload = f"{upload_dir}/{ARCHIVE}"
    # The SSH user uploads (SFTP); only that user (who may sudo anyway) can enter the directory.
    # One command makes it (and the archive's file, 0600) instead of a directory operation's
    # facts and three commands: each command is an SSH session (some 50 ms).
    server.shell(name="private upload directory", commands=[prepare_command(upload_dir, upload, user)],
                 _sudo=True)
    # Names carry paths and counts only, never contents.
    upload_file(name=f"upload {len(stale)} secret files", src=io.BytesIO(archive(dirs, stale)), dest=upload)
    # GNU tar as root keeps the entries' owners and modes (-p) and makes each file with its own
    # mode from the start; the archive goes whatever happens.
    server.shell(name="unpack the secret files as root",
                 commands=[f"tar -xpf {upload} -C / --same-owner --numeric-owner; "
                           f"status=$?; rm -f {upload}; exit $status"],
                 _sudo=True)
    for unit in sorted({CONSUMERS[p] for p, _, _ in stale if p in CONSUMERS and current.get(p) is not None}):
        server.shell(name=f"restart {unit}: a key it reads changed", commands=[restart_command(unit)], _sudo=True)
    if any(p == TOKEN_SECRET and current.get(p) is not None for p, _, _ in stale):
        # A renewed bootstrap token: its Secret goes to the API (the run-once bootstrap made the first).
        server.shell(name="create the renewed bootstrap token's Secret", commands=[token_command()], _sudo=True)
