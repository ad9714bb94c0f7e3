"""What every role does: check the files a host needs (present, and where its boot config
gives their contents, those contents and mode) and read its unit states into the report;
what every node role does: kubelet's directories."""
from __future__ import annotations

import hashlib
import io
import shlex
from typing import Iterable, Mapping, Sequence

from pyinfra import host
from pyinfra.operations import files as file_ops
from pyinfra.operations import server

from .facts import PathStates, UnitStates


def wanted_file_state(mode: int, data: bytes) -> str:
    """What PathStates says of a root-owned file with these mode and bytes."""
    return f"{mode:o}:0:0 {hashlib.sha256(data).hexdigest()}"


def drifted_files(paths: Iterable[str], config_files: Mapping[str, tuple[int, bytes]],
                  current: Mapping[str, str | None]) -> tuple[list[str], list[str]]:
    """(missing paths, paths whose contents, mode or owner differ from the boot config's).
    A path the config does not give (a key the `secrets` phase delivers) is checked for
    presence only."""
    missing, differ = [], []
    for path in paths:
        seen = current.get(path)
        if seen is None:
            missing.append(path)
        elif path in config_files and seen != wanted_file_state(*config_files[path]):
            differ.append(path)
    return missing, differ


def read_paths(*groups: Iterable[str]) -> dict[str, str | None]:
    """The PathStates fact of every path of `groups` (each once): one command for all the
    files and directories a role looks at, as root (keys live in 0700 directories)."""
    paths = list(dict.fromkeys(p for group in groups for p in group))
    return host.get_fact(PathStates, paths=paths, _sudo=True) if paths else {}


def check(report: dict, files: list[str], units: list[str], directories: Mapping[str, int] | None = None,
          current: Mapping[str, str | None] | None = None) -> dict:
    """Record missing `files` and the state of `units` for the current host, and put back the
    contents of each of `files` that differs from the host's boot config (host data
    `config_files`: [path, mode, bytes] triples the phase passes; a file changed by hand).
    `directories` ({path: mode}) are made, or given their mode, where they differ (see
    `ensure_directories`). `current` is what `read_paths` gave for them all (read here when
    not given)."""
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    given: Sequence[Sequence] = host.data.get("config_files") or ()
    config_files = {str(path): (int(mode), bytes(data)) for path, mode, data in given}
    directories = dict(directories or {})
    if current is None:
        current = read_paths(files, directories)
    missing, differ = drifted_files(files, config_files, current)
    entry["missing"].extend(missing)
    for path in differ:
        mode, data = config_files[path]
        entry["notes"].append(f"{path}: differs from its boot config (changed on the host): put back")
        entry.setdefault("restored", []).append(path)
        file_ops.put(name=f"restore {path} from the boot config", src=io.BytesIO(data), dest=path,
                     user="root", group="root", mode=f"{mode:o}", force=True, _sudo=True)
    ensure_directories(directories, current)
    states = host.get_fact(UnitStates)
    for unit in units:
        entry["units"][unit] = states.get(unit, {"state": "absent", "reason": "not enabled on the host"})
    return entry


def differing_directories(wanted: Mapping[str, int], current: Mapping[str, str | None]) -> list[str]:
    """The paths of `wanted` ({path: mode}) that are not a directory of that mode on the host
    (`current`: the PathStates fact; the owner is left as it is, as pyinfra's files.directory
    without user or group leaves it)."""
    out = []
    for path, mode in wanted.items():
        seen = current.get(path) or ""
        if not (seen.endswith(" dir") and seen.split(":", 1)[0] == f"{mode:o}"):
            out.append(path)
    return out


def ensure_directories(wanted: Mapping[str, int], current: Mapping[str, str | None]) -> None:
    """Make each directory of `wanted` ({path: mode}) that differs, with its parents, and give
    it its mode: one command for all of them, none when all are right. (pyinfra's
    files.directory costs a fact and up to three commands per directory, each fact read again
    when the operation runs: each an SSH session.)"""
    stale = differing_directories(wanted, current)
    if stale:
        server.shell(name=f"directories {', '.join(stale)}", commands=[directories_command(wanted, stale)],
                     _sudo=True)


def directories_command(wanted: Mapping[str, int], stale: Iterable[str]) -> str:
    """One shell command that makes each of `stale` (with its parents) and gives it its mode of `wanted`."""
    return " && ".join(f"mkdir -p {shlex.quote(p)} && chmod {wanted[p]:o} {shlex.quote(p)}" for p in stale)


# Directories every node's kubelet needs ({path: mode}). kubelet's ExecStartPre makes them too;
# having them before kubelet runs lets static pods land.
KUBELET_DIRECTORIES = {"/etc/kubernetes/manifests": 0o755, "/var/lib/kubelet": 0o700}


# Files earlier versions put on nodes and this one does not. kube-proxy's static pod used one
# client key shared by every node; kube-proxy is now a DaemonSet (an addon of the first master).
RETIRED = ("/etc/kubernetes/manifests/kube-proxy.yaml", "/etc/kubernetes/kube-proxy.conf",
           "/etc/kubernetes/pki/kube-proxy.key", "/etc/kubernetes/pki/kube-proxy.crt")


def retired_paths() -> tuple[str, ...]:
    """The RETIRED paths when host data `remove_retired` says they go (for `read_paths`), else none."""
    return RETIRED if host.data.get("remove_retired") else ()


def remove_retired(report: dict, current: Mapping[str, str | None] | None = None) -> None:
    """Remove the RETIRED files found on the current host, when host data `remove_retired` says
    so: the phases set it only once state records the addons applied (the kube-proxy DaemonSet
    exists), so no node is ever left without kube-proxy. `current`: `read_paths` of them."""
    if not host.data.get("remove_retired"):
        return
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    if current is None:
        current = read_paths(RETIRED)
    retired = [path for path in RETIRED if current.get(path) is not None]
    if retired:
        # the static pod's manifest first: kubelet stops the pod, then its key goes
        server.shell(name=f"remove {len(retired)} retired files", _sudo=True,
                     commands=["rm -f " + " ".join(shlex.quote(p) for p in retired)])
        entry["notes"].append(f"{len(retired)} retired files removed")
