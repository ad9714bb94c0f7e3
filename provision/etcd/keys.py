"""The key layout of a cluster's etcd: who writes where.

- `/coreos.com/network/` flannel's prefix; `config` is the network config the `flannel`
  phase creates, `subnets/` the leases flanneld keeps;
- `/provision/<cluster>/` provision's own prefix: `hosts/<host>/load` (each host agent's load
  document, on a lease), `hosts/<host>/drain` (stop taking work) and `headroom/lock` (the
  reconcile lock, on a lease);
- `/_coreos.com/fleet/` fleet's prefix (only when fleet is on);
- `/registry/` the Kubernetes keyspace (the API server alone).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec import Spec

FLANNEL_PREFIX = "/coreos.com/network/"
FLANNEL_KEY = f"{FLANNEL_PREFIX}config"
FLEET_PREFIX = "/_coreos.com/fleet/"
KUBERNETES_PREFIX = "/registry/"


def provision_prefix(cluster: str) -> str:
    """provision's own prefix in the cluster's etcd (with the trailing slash)."""
    return f"/provision/{cluster}/"


def hosts_key(cluster: str) -> str:
    return f"{provision_prefix(cluster)}hosts"


def load_key(cluster: str, host: str) -> str:
    """The key a host agent publishes its load under (spec-v1)."""
    return f"{hosts_key(cluster)}/{host}/load"


def drain_key(cluster: str, host: str) -> str:
    """The key that tells a host's agent and fleet units to stop taking work."""
    return f"{hosts_key(cluster)}/{host}/drain"


def headroom_lock_key(cluster: str) -> str:
    return f"{provision_prefix(cluster)}headroom/lock"


def flannel_config(spec: "Spec") -> str:
    """The network config flanneld reads: the spec's pod network and backend."""
    return json.dumps({"Backend": {"Type": spec.network.flannel.backend}, "Network": spec.network.pod_cidr},
                      sort_keys=True, separators=(",", ":"))
