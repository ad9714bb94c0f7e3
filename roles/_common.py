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


def check(report: dict, files: list[str], units: list[str]) -> dict:
    """Record missing `files` and the state of `units` for the current host, and put back the
    contents of each of `files` that differs from the host's boot config (host data
    `config_files`: [path, mode, bytes] triples the phase passes; a file changed by hand)."""
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    given: Sequence[Sequence] = host.data.get("config_files") or ()
    config_files = {str(path): (int(mode), bytes(data)) for path, mode, data in given}
    # One fact for every file, as root (keys live in 0700 directories).
    current = host.get_fact(PathStates, paths=list(files), _sudo=True) if files else {}
    missing, differ = drifted_files(files, config_files, current)
    entry["missing"].extend(missing)
    for path in differ:
        mode, data = config_files[path]
        entry["notes"].append(f"{path}: differs from its boot config (changed on the host): put back")
        entry.setdefault("restored", []).append(path)
        file_ops.put(name=f"restore {path} from the boot config", src=io.BytesIO(data), dest=path,
                     user="root", group="root", mode=f"{mode:o}", force=True, _sudo=True)
    states = host.get_fact(UnitStates)
    for unit in units:
        entry["units"][unit] = states.get(unit, {"state": "absent", "reason": "not enabled on the host"})
    return entry


def kubelet_directories() -> None:
    """Directories every node's kubelet needs. kubelet's ExecStartPre makes them too; having
    them before kubelet runs lets static pods land."""
    file_ops.directory(name="static pod manifests", path="/etc/kubernetes/manifests", mode="755", _sudo=True)
    file_ops.directory(name="kubelet state", path="/var/lib/kubelet", mode="700", _sudo=True)


# Files earlier versions put on nodes and this one does not. kube-proxy's static pod used one
# client key shared by every node; kube-proxy is now a DaemonSet (an addon of the first master).
RETIRED = ("/etc/kubernetes/manifests/kube-proxy.yaml", "/etc/kubernetes/kube-proxy.conf",
           "/etc/kubernetes/pki/kube-proxy.key", "/etc/kubernetes/pki/kube-proxy.crt")


def remove_retired(report: dict) -> None:
    """Remove the RETIRED files found on the current host, when host data `remove_retired` says
    so: the phases set it only once state records the addons applied (the kube-proxy DaemonSet
    exists), so no node is ever left without kube-proxy."""
    if not host.data.get("remove_retired"):
        return
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    current = host.get_fact(PathStates, paths=list(RETIRED), _sudo=True)
    retired = [path for path in RETIRED if current.get(path) is not None]
    if retired:
        # the static pod's manifest first: kubelet stops the pod, then its key goes
        server.shell(name=f"remove {len(retired)} retired files", _sudo=True,
                     commands=["rm -f " + " ".join(shlex.quote(p) for p in retired)])
        entry["notes"].append(f"{len(retired)} retired files removed")
