"""Ignition spec 3.3.0 for flatcar and fedora-coreos: sorted keys, no timestamps."""
from __future__ import annotations

import base64
import json
from typing import Any

from .machine import Machine

IGNITION_VERSION = "3.3.0"


def data_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()



def to_ignition(machine: Machine, user: str, ssh_keys: list[str]) -> dict[str, Any]:
    files = []
    for path in sorted(machine.files):
        f = machine.files[path]
        entry: dict[str, Any] = {"path": f.path, "mode": f.mode, "overwrite": True}
        if f.url:
            entry["contents"] = {"source": f.url, "verification": {"hash": f.hash}}
        else:
            entry["contents"] = {"source": data_url(f.data or b"")}
        files.append(entry)
    directories = [{"path": p, "mode": m} for p, m in sorted(machine.directories.items())]
    units = [{"name": u.name, "enabled": u.enabled, "contents": u.contents}
             for _, u in sorted(machine.units.items())]
    return {
        "ignition": {"version": IGNITION_VERSION},
        "passwd": {"users": [{"name": user, "sshAuthorizedKeys": list(ssh_keys)}]},
        "storage": {"directories": directories, "files": files},
        "systemd": {"units": units},
    }


def dumps(config: dict[str, Any]) -> bytes:
    """Readable and deterministic: the same config always gives the same bytes."""
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
