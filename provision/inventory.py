"""A cluster's hosts as pyinfra inventory groups, read from provision's state.

`inventories/cluster.py` calls `inventory_groups()` so users run their own pyinfra deploys
against a cluster provision made:

    PROVISION_SPEC=cluster.yaml pyinfra inventories/cluster.py my_deploy.py

The spec is named by $PROVISION_SPEC; its state is found as every verb finds it
($PROVISION_STATE_DIR, else the spec's `state.path`; s3 and etcd backends as configured). Hosts
are reached the way provision's own roles reach them (`bootstrap.host_data`): provision's SSH
key, the spec's `ssh.user`, and the cluster's `known_hosts` file with each host's pinned key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .bootstrap import cluster_hosts, host_data, write_inventory
from .errors import ActionError, UserError
from .spec import Spec, load_spec

SPEC_ENV = "PROVISION_SPEC"

HostEntry = tuple[str, dict[str, Any]]


def group_name(text: str) -> str:
    """A pyinfra group name (a Python identifier) for a pool or role name (`edge-workers`)."""
    return text.replace("-", "_")


def groups_of(spec: Spec, cluster: Mapping[str, Mapping[str, Any]], key_path: Path,
              known_hosts: Path) -> dict[str, list[HostEntry]]:
    """Groups of the cluster's hosts: one per role (`masters`, `workers`), `etcd` for the hosts
    carrying an etcd member, and one per pool (`pool_<name>`). Every host appears with its SSH
    data in every group it belongs to (pyinfra merges them). Sorted by host name."""
    groups: dict[str, list[HostEntry]] = {}
    for name, host in sorted(cluster.items()):
        entry = (name, host_data(spec, name, host, key_path, known_hosts))
        groups.setdefault(f"{host.get('role')}s", []).append(entry)
        if host.get("etcd"):
            groups.setdefault("etcd", []).append(entry)
        if host.get("pool"):
            groups.setdefault("pool_" + group_name(str(host["pool"])), []).append(entry)
    return dict(sorted(groups.items()))


def inventory_groups(spec_path: str | None = None, state_dir: str | None = None,
                     environ: Mapping[str, str] | None = None) -> dict[str, list[HostEntry]]:
    """The inventory groups of the cluster whose spec is `spec_path` (default $PROVISION_SPEC).

    `state_dir` overrides $PROVISION_STATE_DIR and the spec's state.path, as --state-dir does.
    Refreshes the cluster's `known_hosts` (and generated inventory file) the way a role run
    does, so pinned host keys are checked. Raises UserError for a missing or invalid spec,
    ActionError for a cluster with no state or no host with an address."""
    from . import pki
    from .state import open_store, state_directory

    environ = os.environ if environ is None else environ
    spec_path = spec_path if spec_path is not None else environ.get(SPEC_ENV, "")
    if not spec_path.strip():
        raise UserError(f"{SPEC_ENV}: name the cluster's spec file, e.g. "
                        f"{SPEC_ENV}=cluster.yaml pyinfra inventories/cluster.py deploy.py")
    spec = load_spec(spec_path)
    store = open_store(spec, state_directory(spec, state_dir, environ=environ))
    if not store.exists():
        raise ActionError(f"cluster {spec.name} has no state at {store.location}; "
                          f"create it with: provision up {spec_path} --yes")
    cluster = cluster_hosts(store.read())
    if not cluster:
        raise ActionError(f"cluster {spec.name}: state at {store.location} records no host with an address")
    key_path = pki.ssh_private_key_path(store)
    _, known_hosts = write_inventory(spec, store.workdir, cluster, key_path)
    return groups_of(spec, cluster, key_path, known_hosts)
