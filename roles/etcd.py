"""Role etcd: an etcd member has its configuration, certificates and data directory."""
from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from ._common import check

FILES = ["/etc/etcd/etcd.env", "/etc/ssl/etcd/ca.crt", "/etc/ssl/etcd/server.crt", "/etc/ssl/etcd/server.key",
         "/etc/ssl/etcd/peer.crt", "/etc/ssl/etcd/peer.key"]


@deploy("etcd member")
def apply(report: dict) -> None:
    check(report, FILES, ["etcd-member.service"])
    # etcd refuses a data directory others can read.
    files.directory(name="etcd data directory is private", path="/var/lib/etcd", mode="700", _sudo=True)
