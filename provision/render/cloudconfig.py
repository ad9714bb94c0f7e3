"""CoreOS cloud-config (`#cloud-config` with a `coreos:` section) for `os.config: cloud-config`.

coreos-cloudinit configures the OS's own fleet and flanneld through `coreos.fleet` and
`coreos.flannel`; everything else (etcd member, kubelet, agent, installs) is a unit in
`coreos.units`, and every file goes to `write_files`. Directories are left to the services,
which create their own.
"""
from __future__ import annotations

from typing import Any

import yaml

from .machine import Machine


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so units and certificates stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_cloud_config(machine: Machine, ssh_keys: list[str], hostname: str | None,
                    fleet: dict[str, str] | None, flannel: dict[str, str] | None) -> dict[str, Any]:
    write_files = []
    for path in sorted(machine.files):
        f = machine.files[path]
        write_files.append({"path": f.path, "permissions": f"{f.mode:04o}", "owner": "root",
                            "content": (f.data or b"").decode()})
    units = []
    for name in sorted(machine.units):
        u = machine.units[name]
        entry: dict[str, Any] = {"name": u.name, "content": u.contents}
        if u.enabled:
            entry.update({"enable": True, "command": "start"})
        units.append(entry)
    coreos: dict[str, Any] = {"units": units}
    if fleet:
        coreos["fleet"] = fleet
    if flannel:
        coreos["flannel"] = flannel
    doc: dict[str, Any] = {"ssh_authorized_keys": list(ssh_keys), "write_files": write_files, "coreos": coreos}
    if hostname:
        doc["hostname"] = hostname
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000,
                     allow_unicode=True)
    return ("#cloud-config\n" + body).encode()
