"""The API endpoint on OpenStack: an Octavia load balancer (openstacksdk's `load_balancer` proxy).

One load balancer on the cluster's subnet named `provision-<cluster>-api` (tagged with the
cluster), a TCP listener on 6443, a ROUND_ROBIN TCP pool with a TCP health monitor, and every
master as a member on 6443 (a master that goes leaves the pool first). Each piece is found by name before it is made, so a re-run makes
nothing; Octavia refuses changes while the load balancer is not ACTIVE, so every change waits for
ACTIVE. With `provider.external_network` and `floating_ips`, the VIP gets a floating IP (tagged
like the hosts' ones, released with them) and that address is the endpoint. A cloud without the
load-balancer service in its catalog gets none: nodes use the node-local proxy.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .base import HostRecord

if TYPE_CHECKING:
    from openstack.load_balancer.v2.load_balancer import LoadBalancer

    from .openstack import OpenStackProvider

API_PORT = 6443
KIND = "openstack-octavia"
WAIT_INTERVAL = 1  # seconds between looks at a load balancer that is not ACTIVE yet
WAIT_SECONDS = 600


class Octavia:
    """The API load balancer of one OpenStackProvider (`provider`: its connection, retries,
    shared network and floating IPs)."""

    def __init__(self, provider: OpenStackProvider):
        self.provider = provider
        self._available: bool | None = None

    @property
    def name(self) -> str:
        return f"{self.provider.resource_name}-api"

    @property
    def api(self) -> Any:
        return self.provider.conn.load_balancer

    def available(self) -> bool:
        """Whether the cloud's catalog offers the load-balancer service (a cloud that cannot be
        reached is an error, never taken for one without it)."""
        if self._available is None:
            self._available = bool(self.provider._retry(lambda: self.provider.conn.endpoint_for("load-balancer"),
                                                        "look up the load-balancer service"))
        return self._available

    def _find(self, kind: str, **query: object) -> Any:
        listing = getattr(self.api, kind)
        found = self.provider._retry(lambda: [x for x in listing(name=self.name, **query) if x.name == self.name],
                                     f"list {kind}")
        return found[0] if found else None

    def _wait_active(self, lb_id: str) -> Any:
        return self.provider._retry(
            lambda: self.api.wait_for_load_balancer(lb_id, interval=WAIT_INTERVAL, wait=WAIT_SECONDS),
            "wait for the API load balancer")

    def _ensure(self, kind: str, create: Callable[[], Any], lb_id: str, **query: object) -> Any:
        def attempt():
            found = self._find(kind, **query)
            if found is not None:
                return found
            self.provider.log(f"creating API load balancer {kind[:-1].replace('_', ' ')} {self.name}")
            return create()
        made = self.provider._retry(attempt, f"create API load balancer {kind}")
        self._wait_active(lb_id)
        return made

    def ensure(self) -> dict[str, str] | None:
        if not self.available():
            self.provider.log("the cloud offers no load-balancer service (Octavia): workers reach every "
                              "master through the node-local proxy")
            return None
        self.provider.prepare()
        subnet = self.provider.shared()["subnet"]
        tags = [self.provider.cluster_tag]
        lb = self._ensure("load_balancers", lambda: self.api.create_load_balancer(
            name=self.name, vip_subnet_id=subnet.subnet_id, tags=tags,
            description=f"provision cluster {self.provider.spec.name}: Kubernetes API"), lb_id=self.name)
        lb = self._wait_active(lb.id)
        listener = self._ensure("listeners", lambda: self.api.create_listener(
            name=self.name, protocol="TCP", protocol_port=API_PORT, load_balancer_id=lb.id, tags=tags), lb.id)
        pool = self._ensure("pools", lambda: self.api.create_pool(
            name=self.name, protocol="TCP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id, tags=tags), lb.id)
        self._ensure("health_monitors", lambda: self.api.create_health_monitor(
            name=self.name, pool_id=pool.id, type="TCP", delay=10, timeout=5, max_retries=3, tags=tags), lb.id)
        return self._endpoint(lb, attach=True)

    def _endpoint(self, lb: LoadBalancer, attach: bool) -> dict[str, str]:
        address = lb.vip_address
        o = self.provider.options
        if o.external_network and o.floating_ips and lb.vip_port_id:
            if attach:
                port = SimpleNamespace(id=lb.vip_port_id)
                self.provider._ensure_floating_ip(SimpleNamespace(name=self.name), port)
            fips = self.provider._floating_ips(port_id=lb.vip_port_id)
            if fips:
                address = fips[0].floating_ip_address
        return {"kind": KIND, "dns_name": address, "load_balancer": lb.id, "vip_address": lb.vip_address}

    def find(self) -> dict[str, str] | None:
        lb = self._find("load_balancers")
        return self._endpoint(lb, attach=False) if lb is not None else None

    def register(self, masters: Sequence[HostRecord]) -> None:
        """Every master a member of the pool on 6443 (by its fixed address); idempotent."""
        pool = self._find("pools")
        lb = self._find("load_balancers")
        if pool is None or lb is None:
            return
        subnet = self.provider.shared()["subnet"]
        members = self.provider._retry(lambda: list(self.api.members(pool)), "list API load balancer members")
        have = {m.address for m in members}
        for master in sorted(masters, key=lambda m: m.name):
            address = master.private_address
            if not address or address in have:
                continue
            self.provider.log(f"adding {master.name} to the API load balancer")
            def add_member(m: HostRecord = master, a: str = address) -> Any:
                return self.api.create_member(pool, name=m.name, address=a, protocol_port=API_PORT,
                                              subnet_id=subnet.subnet_id)
            self.provider._retry(add_member, f"add API load balancer member {master.name}")
            self._wait_active(lb.id)
            have.add(address)

    def deregister(self, names: Sequence[str]) -> None:
        """The pool's members named for these hosts (as `register` names them) deleted, each
        change waiting for ACTIVE; idempotent. Octavia keeps a member whose server is gone, and
        would go on sending API traffic to its address or to whatever server gets it next."""
        pool = self._find("pools")
        lb = self._find("load_balancers")
        if pool is None or lb is None:
            return
        going = set(names)
        members = self.provider._retry(lambda: list(self.api.members(pool)), "list API load balancer members")
        for member in sorted((m for m in members if m.name in going), key=lambda m: m.name):
            self.provider.log(f"taking {member.name} off the API load balancer")
            self.provider._retry(functools.partial(self.api.delete_member, member, pool, ignore_missing=True),
                                 f"delete API load balancer member {member.name}")
            self._wait_active(lb.id)

    def remove(self) -> None:
        """The load balancer with its listener, pool, members and monitor (Octavia's cascade)."""
        if not self.available():
            return
        lb = self._find("load_balancers")
        if lb is None:
            return
        self.provider.log(f"deleting API load balancer {self.name}")
        self.provider._retry(lambda: self.api.delete_load_balancer(lb, ignore_missing=True, cascade=True),
                             "delete API load balancer")
        self.provider._retry(lambda: self.api.wait_for_delete(lb, interval=WAIT_INTERVAL, wait=WAIT_SECONDS),
                             "wait for the API load balancer to go")
