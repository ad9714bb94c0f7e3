"""The cluster's addons (kube-proxy's DaemonSet, cluster DNS, node RBAC) on a running cluster.

The first master's run-once bootstrap applies them when the cluster is made. A cluster made by
an earlier version, or one whose rendered manifests changed since, gets them from the `masters`
phase: it compares a digest of the addon files rendered now with the one state records as last
applied (`state["addons"]`), and re-applies them on the first master when they differ. Files
that the addons replace (kube-proxy's static pod and its shared key) are removed from nodes only
once state records the addons applied. Pure functions; the phases act.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from .render.machine import File
from .render.pool_provider import BURST_APPLIED, KUBE_PROXY_BURST_ADDONS

STATE_KEY = "addons"
ADDON_DIR = "/etc/kubernetes/addons/"
# What the apply reads besides the manifests: the script and its environment.
APPLY_FILES = ("/opt/provision/bootstrap.sh", "/etc/provision/bootstrap.env")


def addon_files(files: Mapping[str, File]) -> dict[str, File]:
    """The first master's boot-config files that make its addons apply: the manifests and their
    index (never the bootstrap token: a secret, delivered and created by the `secrets` phase),
    the bootstrap script and its environment."""
    return {path: f for path, f in sorted(files.items())
            if f.data is not None and (path.startswith(ADDON_DIR) or path in APPLY_FILES)}


def digest(files: Mapping[str, File]) -> str:
    """sha256 over the paths, modes and contents of the addon files."""
    out = hashlib.sha256()
    for path in sorted(files):
        out.update(f"{path}\0{files[path].mode:o}\0".encode())
        out.update(hashlib.sha256(files[path].data or b"").digest())
    return out.hexdigest()


def applied(state: Mapping[str, Any]) -> str | None:
    """The digest of the addon files last applied, as state records it (None: never recorded)."""
    return (state.get(STATE_KEY) or {}).get("applied")


# The node phases whose roles remove the files the addons replace; their convergence records
# carry RETIRED_RECORD once the addons are applied, so every node runs its role once then.
NODE_PHASES = ("masters", "workers")
RETIRED_RECORD = {"retired": "removed"}


def record_fields(state: Mapping[str, Any], phase: str) -> dict[str, str]:
    """What a host's convergence record for `phase` carries besides the common fields."""
    return dict(RETIRED_RECORD) if phase in NODE_PHASES and applied(state) is not None else {}


def needs_apply(state: Mapping[str, Any], first_master: str, files: Mapping[str, File]) -> bool:
    """Whether the addons rendered now differ from what the first master last applied (or
    another host was the first master then)."""
    record = state.get(STATE_KEY) or {}
    return record.get("applied") != digest(files) or record.get("host") != first_master


def record_applied(state: dict[str, Any], first_master: str, files: Mapping[str, File]) -> None:
    """Record the addons applied; once the burst nodes' kube-proxy was among them, say so for
    good, so a later render names its objects for the apply to prune when the spec makes none
    (render.pool_provider)."""
    record: dict[str, Any] = {"applied": digest(files), "host": first_master}
    burst = ADDON_DIR + KUBE_PROXY_BURST_ADDONS[-1]
    if burst in files or (state.get(STATE_KEY) or {}).get(BURST_APPLIED):
        record[BURST_APPLIED] = True
    state[STATE_KEY] = record
