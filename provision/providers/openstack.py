"""OpenStack through openstacksdk: Nova servers with user data, metadata and a config drive on a
Neutron network routed to the cloud's external network, floating IPs, a security group, a key
pair and soft-anti-affinity server groups.

Credentials come from `clouds.yaml` (`provider.cloud`, else `OS_CLOUD`) or the `OS_*` variables.
Each server carries the cluster, pool, role and host in its metadata; `list_hosts` asks Nova for
the servers whose name starts with the cluster name and keeps those whose metadata says so, so
the cluster is found from the cloud alone. Floating IPs carry the same facts as Neutron tags.
Servers are created one per host (Nova's multi-create names servers from a template, which
would lose the host identity); before every (re)try the host's name is looked up, so a lost
answer never makes a second server.

Throttling (429) and 503 answers are retried by keystoneauth, under openstacksdk's retry
settings (`OPENSTACK_RETRIES`: `status_code_retries` with `retriable_status_codes`, its own
exponential delay): an answer means the cloud refused the request, so repeating it is safe. A
dropped connection or another 5xx may follow a request the cloud carried out, and the SDK cannot
tell: those stay with `_retry`, whose tries look before they create (keystoneauth's
`connect_retries` is 0 for that reason).

Shared resources are made in `prepare` (network layer, security group, key pair) and removed by
`teardown` in the reverse order, each step its own method so that more (a load balancer) can be
slotted in.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Sequence

from ..errors import ActionError
from .base import HostRecord
from .openstack_base import IN_USE_TIMEOUT, OPENSTACK_RETRIES, OpenStackBase, in_use, openstack_retryable
from .openstack_network import FIXED_ADDRESSES, MIN_SUBNET_ADDRESSES, Subnet, allocation_pool, wanted_rules
from .openstack_servers import STATE_MAP, OpenStackServers, pick_image, server_fault

__all__ = ["FIXED_ADDRESSES", "IN_USE_TIMEOUT", "OPENSTACK_RETRIES", "STATE_MAP", "OpenStackBase", "OpenStackProvider",
           "Subnet", "allocation_pool", "in_use", "openstack_retryable", "pick_image", "server_fault", "wanted_rules"]


class OpenStackProvider(OpenStackServers):
    """Nova servers on a Neutron network the provider creates (or the one `provider.network` names)."""

    def _config_problems(self) -> list[tuple[str, str]]:
        """The cloud's configuration must resolve (clouds.yaml entry, OS_CLOUD or OS_* variables)
        before anything is written; no request reaches the cloud."""
        import openstack.config
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as os_exc
        cloud = self.options.cloud
        try:
            openstack.config.OpenStackConfig().get_one(cloud=cloud) if cloud else \
                openstack.config.OpenStackConfig().get_one()
        except os_exc.ConfigException as err:
            where = f"no clouds.yaml entry {cloud!r}" if cloud else "no OS_CLOUD or OS_* variables"
            return [("provider.cloud", f"{where} on this machine ({err}); add it to clouds.yaml "
                                       "(./clouds.yaml, ~/.config/openstack/, /etc/openstack/)")]
        except ks_exc.MissingRequiredOptions as err:
            return [("provider.cloud", f"the cloud's credentials are incomplete: {err}")]
        return []

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        problems = []
        o = self.options
        if not o.network:
            net = ipaddress.ip_network(o.subnet_cidr)
            if net.num_addresses < MIN_SUBNET_ADDRESSES:
                problems.append(("provider.subnet_cidr", f"{o.subnet_cidr} is too small: provision keeps the first "
                                 f"{FIXED_ADDRESSES} addresses for the gateway and fixed addresses and needs at "
                                 f"least a /{32 - (MIN_SUBNET_ADDRESSES - 1).bit_length()}"))
            else:
                room = net.num_addresses - FIXED_ADDRESSES - 1
                hosts = sum(p.max_count for p in self.spec.pools)
                if hosts > room:
                    problems.append(("provider.subnet_cidr", f"{o.subnet_cidr} has room for {room} hosts in its "
                                     f"allocation pool; the pools need up to {hosts}"))
        if len(set(o.availability_zones)) != len(o.availability_zones):
            problems.append(("provider.availability_zones", "names a zone twice"))
        return problems

    def preflight(self) -> list[tuple[str, str]]:
        """The cloud's configuration first (clouds.yaml entry or OS_* variables, no request),
        then what the cloud must have: the named networks (external, and the hosts' network
        with a subnet holding provider.subnet_cidr) and the named availability zones."""
        from openstack import exceptions as os_exc
        problems = self._config_problems()
        if problems:
            return problems
        o = self.options
        if not (o.external_network or o.network or o.availability_zones):
            return problems  # nothing named that the cloud must have: no request before acting
        from keystoneauth1 import exceptions as ks_exc
        try:
            net = self.conn.network
            if o.external_network:
                ext = self._retry(lambda: net.find_network(o.external_network), "find external network")
                if ext is None:
                    problems.append(("provider.external_network", f"no network {o.external_network!r} in this cloud"))
                elif not getattr(ext, "is_router_external", False):
                    problems.append(("provider.external_network", f"network {o.external_network!r} is not external "
                                     "(router:external is false)"))
            if o.network:
                found = self._retry(lambda: net.find_network(o.network), "find network")
                if found is None:
                    problems.append(("provider.network", f"no network {o.network!r} in this cloud"))
                elif self._named_subnet(found.id) is None:
                    cidrs = [s.cidr for s in self._retry(lambda: list(net.subnets(network_id=found.id)), "list subnets")]
                    problems.append(("provider.subnet_cidr", f"{o.subnet_cidr} is not inside a subnet of network "
                                     f"{o.network!r} (its subnets: {', '.join(cidrs) or 'none'}); set "
                                     "provider.subnet_cidr to the subnet the hosts' fixed addresses come from"))
            if o.availability_zones:
                zones = {z.name for z in self._retry(lambda: list(self.conn.compute.availability_zones()),
                                                     "list availability zones")
                         if (getattr(z, "state", None) or {}).get("available", True)}
                for zone in o.availability_zones:
                    if zone not in zones:
                        problems.append(("provider.availability_zones", f"no available zone {zone!r} in this cloud "
                                         f"(zones: {', '.join(sorted(zones))})"))
        except (os_exc.SDKException, ks_exc.ClientException, ActionError) as err:  # credentials or endpoints that do not work
            problems.append(("provider.cloud", f"cannot use the cloud: {err}"))
        return problems

    # -- shared resources --------------------------------------------------------------------
    def prepare(self) -> None:
        """Network layer (network, subnet, router), security group with its rules, key pair:
        found by name or made (after image and flavors are resolved, so a spec naming a missing
        one creates nothing)."""
        for size in {p.size for p in self.spec.pools}:
            self._image_and_flavor(size)
        self.shared()

    # -- the API load balancer (Octavia, provision.providers.openstack_lb) -------------------
    @property
    def api_load_balancer(self) -> bool:  # type: ignore[override]
        return self.options.load_balancer

    @property
    def octavia(self) -> Any:
        if self._octavia is None:
            from .openstack_lb import Octavia
            self._octavia = Octavia(self)
        return self._octavia

    def ensure_api_endpoint(self) -> dict[str, str] | None:
        return self.octavia.ensure() if self.options.load_balancer else None

    def find_api_endpoint(self) -> dict[str, str] | None:
        return self.octavia.find() if self.options.load_balancer and self.octavia.available() else None

    def register_api_targets(self, masters: Sequence[HostRecord]) -> None:
        if self.options.load_balancer and self.octavia.available():
            self.octavia.register(masters)

    def deregister_api_targets(self, names: Sequence[str]) -> None:
        if self.options.load_balancer and names and self.octavia.available():
            self.octavia.deregister(names)

    def _remove_api_endpoint(self) -> None:
        if self.options.load_balancer:
            self.octavia.remove()

    # -- teardown ----------------------------------------------------------------------------
    def teardown(self) -> None:
        """After `destroy_hosts`: wait for the servers to go, then remove what `prepare` and
        `create_hosts` made, each step idempotent (a re-run finishes an interrupted one)."""
        self._wait_gone()
        for step in self.teardown_steps():
            step()
        self._shared = None

    def teardown_steps(self) -> list[Callable[[], None]]:
        """What `teardown` removes once the servers are gone, in order: what points at the
        network (floating IPs, a load balancer would go here) before the router, the security
        group and the network themselves."""
        return [self._release_floating_ips, self._remove_api_endpoint, self._remove_server_groups, self._remove_router,
                self._remove_security_group, self._remove_network, self._remove_keypair]
