"""Facts the roles share."""
from __future__ import annotations

import json
import shlex
from typing import Sequence

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


class PathStates(FactBase):
    """{path: "MODE:UID:GID SHA256"} for files, {path: "MODE:UID:GID dir"} for directories,
    {path: None} when absent (read as root: keys are 0600). One command for every path."""

    def command(self, paths: Sequence[str]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for p in {quoted}; do "
                "if [ -d \"$p\" ]; then echo \"$p $(stat -c %a:%u:%g \"$p\") dir\"; "
                "elif [ -f \"$p\" ]; then echo \"$p $(stat -c %a:%u:%g \"$p\") $(sha256sum < \"$p\" | cut -d' ' -f1)\"; "
                "else echo \"$p -\"; fi; done")

    def process(self, output: list[str]) -> dict:
        out: dict[str, str | None] = {}
        for line in output:
            path, _, rest = line.partition(" ")
            out[path] = None if rest == "-" else rest
        return out
