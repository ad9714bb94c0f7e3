"""The SSH inventory of a cluster's hosts: the pyinfra inventory file and the pinned known_hosts.

Written to `<workdir>/inventories/<cluster>.py` for the pyinfra CLI. Host keys are pinned: the
provider's known host keys when it has them (local), else the first key seen is remembered
(`accept-new`) in `<workdir>/inventories/known_hosts`.
"""
from __future__ import annotations

import contextlib
import pprint
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from . import faults

if TYPE_CHECKING:
    from .spec import Spec


def inventory_dir(workdir: Path) -> Path:
    path = Path(workdir) / "inventories"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def ssh_address(host: Mapping[str, Any]) -> str:
    """Where provision reaches a host: its public address when it has one, else its address."""
    return host.get("ssh_address") or host["address"]


def host_data(spec: Spec, name: str, host: Mapping[str, Any], key_path: Path, known_hosts: Path) -> dict[str, Any]:
    return {"ssh_hostname": ssh_address(host), "ssh_user": spec.ssh.user, "ssh_port": 22,
            "ssh_key": str(key_path), "ssh_known_hosts_file": str(known_hosts),
            "ssh_strict_host_key_checking": "yes" if host.get("host_key") else "accept-new",
            "ssh_connect_retries": 2, "role": host.get("role"), "pool": host.get("pool"),
            "etcd": bool(host.get("etcd")), "cluster": spec.name}


def known_hosts_text(existing: str, cluster: Mapping[str, Mapping[str, Any]]) -> str:
    """known_hosts for the whole cluster: the keys already remembered for its addresses, with
    each host's pinned `host_key` (when state has one) replacing what was remembered for it.
    Addresses no host of the cluster has any more are dropped (a reused address must not
    meet an old key)."""
    remembered: dict[str, list[str]] = {}
    for line in existing.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            remembered.setdefault(parts[0], []).append(line)
    for host in cluster.values():
        if host.get("host_key"):
            remembered[ssh_address(host)] = [f"{ssh_address(host)} {host['host_key']}"]
    addresses = {ssh_address(h) for h in cluster.values()}
    return "".join(f"{line}\n" for addr, lines in sorted(remembered.items()) if addr in addresses
                   for line in lines)


def inventory_text(spec: Spec, cluster: Mapping[str, Mapping[str, Any]], key_path: Path, known_hosts: Path) -> str:
    """The pyinfra inventory file of the whole cluster: one group per role (`masters`,
    `workers`) holding each host with its data, and one group per pool (`pool_<name>`)."""
    groups: dict[str, list] = {}
    for name, host in sorted(cluster.items()):
        groups.setdefault(f"{host.get('role')}s", []).append(
            (name, host_data(spec, name, host, key_path, known_hosts)))
        if host.get("pool"):
            groups.setdefault("pool_" + str(host["pool"]).replace("-", "_"), []).append(name)
    text = ['"""pyinfra inventory of cluster %s, written by provision from its state."""' % spec.name]
    for group, members in sorted(groups.items()):
        text.append(f"{group} = {pprint.pformat(members, indent=1, sort_dicts=True)}")
    return "\n".join(text) + "\n"


def write_inventory(spec: Spec, workdir: Path, cluster: Mapping[str, Mapping[str, Any]], key_path: Path) -> tuple[Path, Path]:
    """Write known_hosts and the pyinfra inventory file of the whole cluster (`cluster`:
    every host of state); returns their paths."""
    folder = inventory_dir(workdir)
    known_hosts = folder / "known_hosts"
    existing = known_hosts.read_text() if known_hosts.is_file() else ""
    known_hosts.write_text(known_hosts_text(existing, cluster))
    known_hosts.chmod(0o600)
    inventory = folder / f"{spec.name}.py"
    inventory.write_text(inventory_text(spec, cluster, key_path, known_hosts))
    inventory.chmod(0o600)
    return inventory, known_hosts


@contextlib.contextmanager
def known_hosts_for_run(spec: Spec, workdir: Path, cluster: Mapping[str, Mapping[str, Any]], key_path: Path,
                        dry_run: bool) -> Iterator[Path]:
    """The known_hosts file a role run checks keys against. A real run writes the cluster's
    inventory files; a dry run writes nothing of the cluster's and uses a private temporary
    copy (keys first seen during it are forgotten)."""
    if not dry_run:
        known = write_inventory(spec, workdir, cluster, key_path)[1]
        faults.point(faults.FIRST_WRITE)
        yield known
        return
    kept = Path(workdir) / "inventories" / "known_hosts"
    existing = kept.read_text() if kept.is_file() else ""
    with tempfile.TemporaryDirectory(prefix="provision-dry-run-") as folder:
        known_hosts = Path(folder) / "known_hosts"
        known_hosts.write_text(known_hosts_text(existing, cluster))
        known_hosts.chmod(0o600)
        yield known_hosts
