"""Role flannel: every node has the flannel etcd client and the runtime directory flanneld writes."""
from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from ._common import check

FILES = ["/etc/ssl/etcd/ca.crt", "/etc/ssl/etcd/flannel.crt", "/etc/ssl/etcd/flannel.key"]


@deploy("flannel")
def apply(report: dict) -> None:
    entry = check(report, FILES, ["flanneld.service"])
    if entry["units"]["flanneld.service"]["state"] == "absent":
        entry["units"].pop("flanneld.service")  # the OS runs flannel itself (container-linux)
    # flanneld writes its subnet lease here; kubelet's CNI config reads it.
    files.directory(name="flannel runtime directory", path="/run/flannel", mode="755", _sudo=True)
