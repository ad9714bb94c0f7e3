"""A cluster's etcd as provision reaches it: members and their client URLs from state, an
identity's TLS material from state's PKI, and the route (a local port forwarded over SSH
through a master, see `provision.tunnel`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import pki, tunnel
from ..errors import ActionError
from .client import Etcd

if TYPE_CHECKING:
    from ..spec import Spec
    from ..state import StateStore

CLIENT_PORT = 2379


def member_addresses(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(host name, address) of every etcd member state records, by name."""
    hosts = state.get("hosts") or {}
    return [(n, h["address"]) for n, h in sorted(hosts.items()) if h.get("etcd") and h.get("address")]


def member_urls(state: Mapping[str, Any]) -> tuple[str, ...]:
    """The members' own client URLs (what their certificates and `status` name)."""
    return tuple(f"https://{address}:{CLIENT_PORT}" for _, address in member_addresses(state))


def connect(spec: "Spec", store: "StateStore", state: Mapping[str, Any], client: str = "provisioner",
            log: Callable[[str], None] = lambda m: None) -> Etcd:
    """The cluster's etcd as etcd user `client` (provisioner, root) reaches it from here."""
    members = member_addresses(state)
    if not members:
        raise ActionError("etcd: state records no etcd member with an address yet; "
                          "run `provision up SPEC` (the machines phase creates them)")
    tls = pki.client_tls(store, client)
    routes = tunnel.reach(spec, store, state, [(address, CLIENT_PORT) for _, address in members], log=log)
    return Etcd(tuple(f"https://{host}:{port}" for host, port in routes), tls, names=member_urls(state))
