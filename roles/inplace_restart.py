"""Role inplace_restart: restart the units whose files an in-place update changed, on a host
run by systemd (systemd re-reads changed unit files first)."""
from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import systemd


@deploy("restart changed units")
def apply(report: dict) -> None:
    report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    for unit in host.data.get("restart_units") or []:
        systemd.service(name=f"restart {unit}", service=unit, restarted=True, daemon_reload=True, _sudo=True)
