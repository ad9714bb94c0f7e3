"""What every role does: check files a host needs and read its unit states into the report;
what every node role does: kubelet's directories."""
from __future__ import annotations

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import files as file_ops

from .facts import UnitStates


def check(report: dict, files: list[str], units: list[str]) -> dict:
    """Record missing `files` and the state of `units` for the current host."""
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    for path in files:
        if not host.get_fact(File, path=path, _sudo=True):  # keys live in 0700 directories
            entry["missing"].append(path)
    states = host.get_fact(UnitStates)
    for unit in units:
        entry["units"][unit] = states.get(unit, {"state": "absent", "reason": "not enabled on the host"})
    return entry


def kubelet_directories() -> None:
    """Directories every node's kubelet needs. kubelet's ExecStartPre makes them too; having
    them before kubelet runs lets static pods land."""
    file_ops.directory(name="static pod manifests", path="/etc/kubernetes/manifests", mode="755", _sudo=True)
    file_ops.directory(name="kubelet state", path="/var/lib/kubelet", mode="700", _sudo=True)
