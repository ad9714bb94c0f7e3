"""The OpenStack provider's network layer: the Neutron network and subnet (or the named ones),
the router to the external network, the security group and its rules, the Nova key pair, and
their removal."""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .base import network_inside
from .openstack_base import OpenStackBase

if TYPE_CHECKING:
    from openstack.network.v2.security_group_rule import SecurityGroupRule

# Subnets provision creates keep their first addresses out of Neutron's allocation pool: the
# gateway, the cloud's own ports and the plan's fixed addresses (from the 10th host address on,
# one per etcd member, at most 7 with room for replacements). Neutron picks the rest at random.
FIXED_ADDRESSES = 32
MIN_SUBNET_ADDRESSES = 64


def wanted_rules(backend: str, pod_cidr: str, burst: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """SSH and the Kubernetes API from anywhere; etcd, kubelet and flannel's traffic between
    members (remote_group_id None means the group itself). flannel's port follows its backend:
    vxlan 8472/udp, udp 8285/udp; host-gw routes pod packets unencapsulated, so it needs no port
    but pod addresses must be let in (and through port security: see `_pod_address_pairs`)."""
    rules: list[dict[str, Any]] = [
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 6443, "port_range_max": 6443, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 2379, "port_range_max": 2380, "remote_group_id": None},
        {"protocol": "tcp", "port_range_min": 10250, "port_range_max": 10250, "remote_group_id": None},
    ]
    if backend == "vxlan":
        rules.append({"protocol": "udp", "port_range_min": 8472, "port_range_max": 8472, "remote_group_id": None})
    elif backend == "udp":
        rules.append({"protocol": "udp", "port_range_min": 8285, "port_range_max": 8285, "remote_group_id": None})
    elif backend == "host-gw":
        rules.append({"protocol": None, "port_range_min": None, "port_range_max": None, "remote_ip_prefix": pod_cidr})
    # headroom.burst_networks: hosts on the other side of a burst, on the ports a burst needs
    ports = [("tcp", 2379), ("tcp", 6443), ("tcp", 10250)] + [p for b, p in OVERLAY.items() if b == backend]
    rules += [{"protocol": proto, "port_range_min": port, "port_range_max": port, "remote_ip_prefix": cidr}
              for cidr in burst for proto, port in ports]
    return rules


OVERLAY = {"vxlan": ("udp", 8472), "udp": ("udp", 8285)}


def allocation_pool(cidr: str) -> list[dict[str, str]]:
    """Neutron's random allocation stays above the fixed addresses (see FIXED_ADDRESSES)."""
    net = ipaddress.ip_network(cidr)
    return [{"start": str(net.network_address + FIXED_ADDRESSES), "end": str(net.broadcast_address - 1)}]


@dataclass(frozen=True)
class Subnet:
    """The subnet hosts live on (ours, or the named network's)."""

    network_id: str
    subnet_id: str
    cidr: str


class OpenStackNetwork(OpenStackBase):
    """Shared network resources, found by name or made; removed in `teardown`."""

    _shared: dict[str, Any] | None

    def shared(self) -> dict[str, Any]:
        if self._shared is None:
            subnet = self._ensure_network()
            router = self._ensure_router(subnet)
            group = self._ensure_security_group()
            key = self._ensure_keypair()
            self._shared = {"subnet": subnet, "router": router, "security_group": group, "key_name": key}
        return self._shared

    def _named_subnet(self, network_id: str) -> Subnet | None:
        """The named network's subnet that holds provider.subnet_cidr (fixed addresses come from it)."""
        for s in self._retry(lambda: list(self.conn.network.subnets(network_id=network_id)), "list subnets"):
            if s.ip_version == 4 and network_inside(self.options.subnet_cidr, s.cidr):
                return Subnet(network_id, s.id, s.cidr)
        return None

    def _ensure_network(self) -> Subnet:
        net = self.conn.network
        o = self.options
        if o.network:
            found = self._retry(lambda: net.find_network(o.network), "find network")
            if found is None:
                raise UserError(f"provider.network: no network {o.network!r} in this cloud")
            subnet = self._named_subnet(found.id)
            if subnet is None:
                raise UserError(f"provider.subnet_cidr: {o.subnet_cidr} is not inside a subnet of network {o.network!r}")
            self._warn_shared_pool(subnet)
            return subnet

        def network_attempt():
            return (net.find_network(self.resource_name)
                    or net.create_network(name=self.resource_name, description=f"provision cluster {self.spec.name}"))
        network = self._retry(network_attempt, "create network")

        def subnet_attempt():
            existing = [s for s in net.subnets(network_id=network.id)]
            if existing:
                return existing[0]
            self.log(f"creating subnet {o.subnet_cidr}")
            return net.create_subnet(name=self.resource_name, network_id=network.id, ip_version=4,
                                     cidr=o.subnet_cidr, allocation_pools=allocation_pool(o.subnet_cidr),
                                     dns_nameservers=list(o.dns_nameservers))
        subnet = self._retry(subnet_attempt, "create subnet")
        return Subnet(network.id, subnet.id, subnet.cidr)

    def _warn_shared_pool(self, subnet: Subnet) -> None:
        """A named network's allocation pool is not ours to change: say when it covers the
        addresses the plan fixes, which Neutron may then hand to other ports first."""
        # the subnet matched is IPv4 (`_named_subnet`), so are provider.subnet_cidr and the pools
        base = ipaddress.IPv4Network(self.options.subnet_cidr).network_address
        fixed_lo, fixed_hi = base + 1, base + FIXED_ADDRESSES - 1
        found = self._retry(lambda: self.conn.network.get_subnet(subnet.subnet_id), "get subnet")
        for pool in found.allocation_pools or []:
            start, end = ipaddress.IPv4Address(pool["start"]), ipaddress.IPv4Address(pool["end"])
            if start <= fixed_hi and fixed_lo <= end:
                self.log(f"network {self.options.network!r}: its allocation pool {start}-{end} covers the fixed "
                         f"addresses provision plans (from {base + 10}); Neutron may give them to other ports "
                         f"first. Start the pool at {base + FIXED_ADDRESSES} or later to keep them free")
                return

    def _router_interfaces(self, router_id: str) -> set[str]:
        ports = self._retry(lambda: list(self.conn.network.ports(device_id=router_id,
                                                                 device_owner="network:router_interface")),
                            "list router ports")
        return {ip["subnet_id"] for p in ports for ip in p.fixed_ips or []}

    def _routed_already(self, subnet: Subnet, external_id: str) -> bool:
        """Whether someone else's router joins the subnet to the external network already (a
        named network usually has one)."""
        net = self.conn.network
        ports = self._retry(lambda: list(net.ports(network_id=subnet.network_id,
                                                   device_owner="network:router_interface")), "list router ports")
        from openstack import exceptions as os_exc

        def router_of(port):
            try:
                return net.get_router(port.device_id)
            except (os_exc.NotFoundException, os_exc.ForbiddenException):  # another project's router
                return None
        for port in ports:
            if not any(ip["subnet_id"] == subnet.subnet_id for ip in port.fixed_ips or []):
                continue
            router = self._retry(functools.partial(router_of, port), "get router")
            if router is None:
                continue
            if router.name != self.resource_name and (router.external_gateway_info or {}).get("network_id") == external_id:
                return True
        return False

    def _find_router(self) -> Any:
        routers = self._retry(lambda: list(self.conn.network.routers(name=self.resource_name)), "list routers")
        return min(routers, key=lambda r: r.id) if routers else None

    def _ensure_router(self, subnet: Subnet) -> str | None:
        """A router from the hosts' subnet to provider.external_network, so hosts reach the
        Internet (binaries), the metadata service and floating IPs work."""
        o = self.options
        if not o.external_network:
            return None
        net = self.conn.network
        external = self._retry(lambda: net.find_network(o.external_network), "find external network")
        if external is None:
            raise UserError(f"provider.external_network: no network {o.external_network!r} in this cloud")
        if o.network and self._routed_already(subnet, external.id):
            return None
        gateway = {"network_id": external.id}

        def router_attempt():
            return self._find_router() or net.create_router(
                name=self.resource_name, description=f"provision cluster {self.spec.name}",
                external_gateway_info=gateway)
        router = self._retry(router_attempt, "create router")
        if (router.external_gateway_info or {}).get("network_id") != external.id:
            self.log(f"setting the gateway of router {self.resource_name} to {o.external_network}")
            router = self._retry(lambda: net.update_router(router, external_gateway_info=gateway), "set router gateway")
        if subnet.subnet_id not in self._router_interfaces(router.id):
            self.log(f"attaching subnet {subnet.cidr} to router {self.resource_name}")
            self._retry(lambda: net.add_interface_to_router(router, subnet_id=subnet.subnet_id),
                        "attach subnet to router")
        return router.id

    def _ensure_security_group(self) -> str:
        net = self.conn.network

        def attempt():
            return (net.find_security_group(self.resource_name)
                    or net.create_security_group(name=self.resource_name,
                                                 description=f"provision cluster {self.spec.name}"))
        group = self._retry(attempt, "create security group")
        have = {rule_key(r, group.id): r for r in self._retry(
            lambda: list(net.security_group_rules(security_group_id=group.id, direction="ingress")),
            "list security group rules")}
        wanted = []
        from .burst_reach import burst_networks
        for rule in wanted_rules(self.spec.network.flannel.backend, self.spec.network.pod_cidr, burst_networks(self.spec)):
            rule = {**rule, "remote_group_id": group.id} if "remote_group_id" in rule else rule
            wanted.append({k: v for k, v in rule.items() if v is not None})
        for rule in wanted:
            if rule_key(rule, group.id) not in have:
                self._retry(functools.partial(
                    net.create_security_group_rule, security_group_id=group.id, direction="ingress",
                    ethertype="IPv4", **rule),
                    "create security group rule")
        # A rule of ours the spec no longer wants (flannel's backend changed) goes.
        for key in set(have) - {rule_key(r, group.id) for r in wanted}:
            self.log(f"removing security group rule {key[0] or 'any'} {key[1] or ''}-{key[2] or ''} no longer needed")
            self._retry(functools.partial(net.delete_security_group_rule, have[key], ignore_missing=True),
                        "delete security group rule")
        return group.id

    def _ensure_keypair(self) -> str:
        """The key pair Nova puts in the metadata. Nova holds one public key per pair: it holds
        the first of ssh.authorized_keys (every key, and provision's own, reach the hosts through
        their Ignition config). A pair holding other key material is replaced."""
        compute = self.conn.compute
        key = self.spec.ssh.authorized_keys[0].strip()

        def attempt():
            found = compute.find_keypair(self.resource_name)
            if found is not None and key_material(found.public_key) != key_material(key):
                self.log(f"key pair {self.resource_name} holds another key; replacing it")
                compute.delete_keypair(found, ignore_missing=True)
                found = None
            if found is None:
                found = compute.create_keypair(name=self.resource_name, public_key=key)
            return found.name
        return self._retry(attempt, "create key pair")

    # -- removal -----------------------------------------------------------------------------
    def _remove_router(self) -> None:
        net = self.conn.network
        router = self._find_router()
        if router is None:
            return
        for subnet_id in self._router_interfaces(router.id):
            self._delete_when_free(functools.partial(net.remove_interface_from_router, router, subnet_id=subnet_id),
                                   "detach subnet from router")
        self.log(f"deleting router {router.name}")
        self._delete_when_free(lambda: net.delete_router(router, ignore_missing=True), "delete router")

    def _remove_security_group(self) -> None:
        net = self.conn.network
        group = self._retry(lambda: net.find_security_group(self.resource_name), "find security group")
        if group is not None:
            self._delete_when_free(lambda: net.delete_security_group(group, ignore_missing=True),
                                   "delete security group")

    def _remove_network(self) -> None:
        if self.options.network:
            return  # named by the user: not ours
        net = self.conn.network
        network = self._retry(lambda: net.find_network(self.resource_name), "find network")
        if network is None:
            return
        for subnet in self._retry(lambda: list(net.subnets(network_id=network.id)), "list subnets"):
            self._delete_when_free(functools.partial(net.delete_subnet, subnet, ignore_missing=True), "delete subnet")
        self._delete_when_free(lambda: net.delete_network(network, ignore_missing=True), "delete network")

    def _remove_keypair(self) -> None:
        self._retry(lambda: self.conn.compute.delete_keypair(self.resource_name, ignore_missing=True),
                    "delete key pair")


def key_material(public_key: str | None) -> tuple[str, ...]:
    """An OpenSSH public key without its comment (what Nova compares)."""
    return tuple((public_key or "").split()[:2])


def rule_key(rule: SecurityGroupRule | dict[str, object], group_id: str) -> tuple:
    get = rule.get if isinstance(rule, dict) else (lambda k, d=None: getattr(rule, k, d))
    return (get("protocol"), get("port_range_min"), get("port_range_max"), get("remote_ip_prefix"),
            get("remote_group_id"))
