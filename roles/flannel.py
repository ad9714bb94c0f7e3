"""Role flannel: every node has the flannel etcd client and the runtime directory flanneld writes."""
from __future__ import annotations

from pyinfra.api import deploy

from ._common import check

FILES = ["/etc/ssl/etcd/ca.crt", "/etc/ssl/etcd/flannel.crt", "/etc/ssl/etcd/flannel.key"]


@deploy("flannel")
def apply(report: dict) -> None:
    # /run/flannel: flanneld writes its subnet lease there; kubelet's CNI config reads it.
    entry = check(report, FILES, ["flanneld.service"], directories={"/run/flannel": 0o755})
    if entry["units"]["flanneld.service"]["state"] == "absent":
        entry["units"].pop("flanneld.service")  # the OS runs flannel itself (container-linux)
