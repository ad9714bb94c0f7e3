"""Role etcd: an etcd member has its configuration, certificates and data directory."""
from __future__ import annotations

from pyinfra.api import deploy

from ._common import check

FILES = ["/etc/etcd/etcd.env", "/etc/ssl/etcd/ca.crt", "/etc/ssl/etcd/server.crt", "/etc/ssl/etcd/server.key",
         "/etc/ssl/etcd/peer.crt", "/etc/ssl/etcd/peer.key"]


@deploy("etcd member")
def apply(report: dict) -> None:
    # etcd refuses a data directory others can read.
    check(report, FILES, ["etcd-member.service"], directories={"/var/lib/etcd": 0o700})
