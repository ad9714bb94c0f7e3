"""Role fleet: fleetd's configuration carries this host's metadata (role=<role>,pool=<pool>)."""
from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindInFile

from ._common import check

ENV_FILE = "/etc/fleet/fleet.env"


@deploy("fleet")
def apply(report: dict) -> None:
    entry = check(report, ["/etc/ssl/etcd/fleet.crt", "/etc/ssl/etcd/fleet.key"], ["fleet.service"])
    want = f"FLEET_METADATA=role={host.data.role},pool={host.data.pool}"
    lines = host.get_fact(FindInFile, path=ENV_FILE, pattern="^FLEET_METADATA=")
    if lines is None:
        if entry["units"]["fleet.service"]["state"] == "absent":
            entry["units"].pop("fleet.service")
            entry["notes"].append("fleet is run by the OS (no fleet.env)")
        else:
            entry["missing"].append(ENV_FILE)
    elif want not in lines:
        entry["notes"].append(f"fleet metadata is {lines[0] if lines else 'unset'}, want {want}")
        entry["missing"].append(f"{ENV_FILE}: {want}")
    entry["metadata"] = want.split("=", 1)[1]
