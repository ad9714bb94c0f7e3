"""Facts the roles share."""
from __future__ import annotations

import json

from pyinfra.api import FactBase

# Where the local provider's unit runner keeps unit states; systemd hosts answer systemctl.
LOCAL_UNIT_DIR = "/run/provision/units"


class UnitStates(FactBase):
    """{unit: {"state": running|exited|failed|skipped|inactive|..., "reason": ...}} of services.

    On a systemd host this is `systemctl list-units`; on a local-provider host, the unit
    runner's state files.
    """

    def command(self) -> str:
        return ("if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then "
                "systemctl list-units --type=service --all --no-legend --plain --no-pager "
                "| awk '{print \"systemd\", $1, $3, $4}'; "
                f"else for f in {LOCAL_UNIT_DIR}/*.json; do [ -f \"$f\" ] && "
                "{ printf 'local '; tr -d '\\n' < \"$f\"; echo; }; done; fi; true")

    def process(self, output: list[str]) -> dict:
        units: dict[str, dict] = {}
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "local":
                try:
                    doc = json.loads(rest)
                except ValueError:
                    continue
                units[doc.get("unit", "?")] = {"state": doc.get("state", "unknown"),
                                               "reason": doc.get("reason")}
            elif kind == "systemd":
                parts = rest.split()
                if len(parts) == 3:
                    name, active, sub = parts
                    state = "running" if sub == "running" else ("exited" if sub == "exited" else active)
                    units[name] = {"state": state, "reason": None}
        return units
