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

import base64
import dataclasses
import ipaddress
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from ..spec.model import OpenStackOptions
from .base import TAG_CLUSTER, TAG_HOST, TAG_POOL, TAG_ROLE, HostRecord, Provider, UserDataLimit, host_tags, network_inside
from .retry import Backoff, call_with_retry

STATE_MAP = {"ACTIVE": "running", "BUILD": "pending", "REBUILD": "pending", "REBOOT": "running",
             "HARD_REBOOT": "running", "SHUTOFF": "stopped", "SUSPENDED": "stopped", "PAUSED": "stopped",
             "DELETED": "terminated", "SOFT_DELETED": "terminated", "ERROR": "failed"}

# Subnets provision creates keep their first addresses out of Neutron's allocation pool: the
# gateway, the cloud's own ports and the plan's fixed addresses (from the 10th host address on,
# one per etcd member, at most 7 with room for replacements). Neutron picks the rest at random.
FIXED_ADDRESSES = 32
MIN_SUBNET_ADDRESSES = 64
SERVER_GROUP_POLICY = "soft-anti-affinity"  # spread when the cloud can, never refuse to boot
DELETE_TIMEOUT = 600.0  # seconds for servers to go
IN_USE_TIMEOUT = 120.0  # seconds a Neutron "in use" (409) is retried while ports go away
WAIT_POLL_CAP = 10.0


# openstacksdk's retry settings (passed to openstack.connect; they reach every service's
# keystoneauth adapter): refused answers are repeated by keystoneauth, connections never.
# openstacksdk's defaults give Glance its own count (image_status_code_retries: 5), so it is named too.
OPENSTACK_RETRIES = {"status_code_retries": 7, "image_status_code_retries": 7, "retriable_status_codes": [429, 503],
                     "connect_retries": 0}


def openstack_retryable(err: BaseException) -> str | None:
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc
    if isinstance(err, os_exc.HttpException):
        status = err.status_code or 0
        if status in OPENSTACK_RETRIES["retriable_status_codes"]:
            return None  # keystoneauth tried it OPENSTACK_RETRIES times already
        if status >= 500:
            return f"server error {status}"
        return None
    if isinstance(err, (ks.connection.ConnectFailure, ks.connection.ConnectTimeout, ks.http.InternalServerError,
                        ks.connection.UnknownConnectionError)):
        return f"connection problem ({type(err).__name__})"
    import requests
    if isinstance(err, requests.exceptions.ConnectionError):
        return f"connection problem ({type(err).__name__})"
    return None


def in_use(err: BaseException) -> bool:
    """Neutron's 409 for a network, subnet, router or security group that ports still use."""
    from openstack import exceptions as os_exc
    if not isinstance(err, os_exc.ConflictException):
        return False
    kind = ""
    try:
        kind = (err.response.json().get("NeutronError") or {}).get("type", "")
    except Exception:  # not JSON: fall back on the message
        pass
    return kind.endswith("InUse") or "in use" in str(getattr(err, "details", "") or err).lower()


def wanted_rules(backend: str, pod_cidr: str) -> list[dict[str, Any]]:
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
    return rules


def allocation_pool(cidr: str) -> list[dict[str, str]]:
    """Neutron's random allocation stays above the fixed addresses (see FIXED_ADDRESSES)."""
    net = ipaddress.ip_network(cidr)
    return [{"start": str(net.network_address + FIXED_ADDRESSES), "end": str(net.broadcast_address - 1)}]


def pick_image(images: Sequence[Any]) -> Any:
    """Of several images with one name, the newest (created_at, then id: a stable choice)."""
    return max(images, key=lambda i: (getattr(i, "created_at", None) or "", i.id))


def server_fault(server: Any) -> str:
    fault = getattr(server, "fault", None) or {}
    message = (fault.get("message") or "no fault recorded").strip()
    return f"{message} (code {fault['code']})" if fault.get("code") else message


@dataclass(frozen=True)
class Subnet:
    """The subnet hosts live on (ours, or the named network's)."""

    network_id: str
    subnet_id: str
    cidr: str


class OpenStackProvider(Provider):
    """Nova servers on a Neutron network the provider creates (or the one `provider.network` names)."""

    name = "openstack"
    options: OpenStackOptions  # the spec's provider options, typed
    user_data_limit = UserDataLimit(65535, "base64")  # Nova: 65,535 characters of base64

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()
        self._conn = None
        self._shared: dict[str, Any] | None = None
        self._lookups: dict[str | None, tuple[str, str]] = {}
        self._image: Any = None
        self._octavia: Any = None
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def resource_name(self) -> str:
        return f"provision-{self.spec.name}"

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

    @property
    def cluster_tag(self) -> str:
        return f"{TAG_CLUSTER}={self.spec.name}"

    @property
    def conn(self):
        if self._conn is None:
            import openstack
            from openstack import exceptions as os_exc
            try:
                cloud = self.options.cloud
                self._conn = (openstack.connect(cloud=cloud, **OPENSTACK_RETRIES) if cloud
                              else openstack.connect(**OPENSTACK_RETRIES))
            except os_exc.ConfigException as err:
                raise UserError(f"provider.cloud: {err}") from None
        return self._conn

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        from keystoneauth1 import exceptions as ks
        from openstack import exceptions as os_exc
        try:
            return call_with_retry(call, retryable=openstack_retryable, what=f"openstack {what}", log=self.log,
                                   backoff=self.backoff)
        except os_exc.ConfigException as err:
            raise UserError(f"provider.cloud: {err}") from None
        except (os_exc.SDKException, ks.ClientException) as err:
            detail = getattr(err, "details", None) or str(err)
            raise ActionError(f"openstack {what}: {detail}") from None

    def _delete_when_free(self, call: Callable[[], Any], what: str) -> None:
        """A delete Neutron refuses while ports still use the resource (servers going away):
        tried again for IN_USE_TIMEOUT seconds, then an error saying a re-run finishes it."""
        timeout = IN_USE_TIMEOUT
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            try:
                self._retry(lambda: self._raise_in_use(call), what)
                return
            except _InUse as err:
                if time.monotonic() > deadline:
                    raise ActionError(f"openstack {what}: still in use after {timeout:.0f}s ({err}); "
                                      "run `provision down` again") from None
                self.sleep(delay)
                delay = min(delay * 2, WAIT_POLL_CAP)

    @staticmethod
    def _raise_in_use(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as err:
            if in_use(err):
                raise _InUse(getattr(err, "details", None) or str(err)) from None
            raise

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
        base = ipaddress.ip_network(self.options.subnet_cidr).network_address
        fixed_lo, fixed_hi = base + 1, base + FIXED_ADDRESSES - 1
        found = self._retry(lambda: self.conn.network.get_subnet(subnet.subnet_id), "get subnet")
        for pool in found.allocation_pools or []:
            start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
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
            router = self._retry(lambda p=port: router_of(p), "get router")
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
        for rule in wanted_rules(self.spec.network.flannel.backend, self.spec.network.pod_cidr):
            rule = {**rule, "remote_group_id": group.id} if "remote_group_id" in rule else rule
            wanted.append({k: v for k, v in rule.items() if v is not None})
        for rule in wanted:
            if rule_key(rule, group.id) not in have:
                self._retry(lambda rule=rule: net.create_security_group_rule(
                    security_group_id=group.id, direction="ingress", ethertype="IPv4", **rule),
                    "create security group rule")
        # A rule of ours the spec no longer wants (flannel's backend changed) goes.
        for key in set(have) - {rule_key(r, group.id) for r in wanted}:
            self.log(f"removing security group rule {key[0] or 'any'} {key[1] or ''}-{key[2] or ''} no longer needed")
            self._retry(lambda r=have[key]: net.delete_security_group_rule(r, ignore_missing=True),
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

    def _server_group(self, host: HostPlan) -> str | None:
        """Masters, and hosts of etcd pools, each share a soft-anti-affinity server group so the
        scheduler spreads them over hypervisors where it can."""
        kind = "masters" if host.role == "master" else "etcd" if host.role == "etcd" else None
        if kind is None:
            return None
        name = f"{self.resource_name}-{kind}"
        cache = self._shared.setdefault("server_groups", {}) if self._shared is not None else {}
        if name in cache:
            return cache[name]
        compute = self.conn.compute

        def attempt():
            found = sorted((g for g in compute.server_groups() if g.name == name), key=lambda g: g.id)
            if found:
                return found[0]
            self.log(f"creating server group {name} ({SERVER_GROUP_POLICY})")
            return compute.create_server_group(name=name, policy=SERVER_GROUP_POLICY)
        cache[name] = self._retry(attempt, f"create server group {name}").id
        return cache[name]

    # -- hosts -------------------------------------------------------------------------------
    def _find_image(self) -> Any:
        if self._image is not None:
            return self._image
        image_api = self.conn.image
        wanted = self.options.image
        images = self._retry(lambda: list(image_api.images(name=wanted)), "list images")
        if not images:
            from openstack import exceptions as os_exc

            def by_id():
                try:
                    return image_api.get_image(wanted)
                except os_exc.NotFoundException:
                    return None
            found = self._retry(by_id, "find image")
            images = [found] if found is not None else []
        if not images:
            raise UserError(f"provider.image: no image {self.options.image!r} in this cloud")
        image = pick_image(images)
        if len(images) > 1:
            self.log(f"{len(images)} images are named {wanted!r}; using the newest, {image.id} "
                     f"(created {getattr(image, 'created_at', '?')})")
        self._image = image
        return image

    def _image_and_flavor(self, size: str | None) -> tuple[str, str]:
        if size in self._lookups:
            return self._lookups[size]
        image = self._find_image()
        flavor_name = size or self.options.flavor
        flavor = self._retry(lambda: self.conn.compute.find_flavor(flavor_name), "find flavor")
        if flavor is None:
            raise UserError(f"{'pools[].size' if size else 'provider.flavor'}: no flavor {flavor_name!r} in this cloud")
        self._lookups[size] = (image.id, flavor.id)
        return self._lookups[size]

    def _servers(self, name_regex: str) -> list[Any]:
        servers = self._retry(lambda: list(self.conn.compute.servers(details=True, name=name_regex)),
                              "list servers")
        return [s for s in servers if (s.metadata or {}).get(TAG_CLUSTER) == self.spec.name]

    @staticmethod
    def _going(server: Any) -> bool:
        return server.status in ("DELETED", "SOFT_DELETED") or getattr(server, "task_state", None) == "deleting"

    def _record(self, server: Any) -> HostRecord:
        meta = server.metadata or {}
        private = public = None
        for addresses in (server.addresses or {}).values():
            for a in addresses:
                if a.get("version", 4) != 4:
                    continue
                if a.get("OS-EXT-IPS:type") == "floating":
                    public = public or a.get("addr")
                else:
                    private = private or a.get("addr")
        if self._going(server):
            state = "terminated"
        else:
            # Nova's answer to a create carries no status yet: the server is building.
            state = STATE_MAP.get(server.status, "unknown") if server.status else "pending"
        extra: dict[str, Any] = {"flavor": (server.flavor or {}).get("id") if isinstance(server.flavor, dict) else None}
        if state == "failed":
            extra["fault"] = server_fault(server)
        return HostRecord(name=meta.get(TAG_HOST) or server.name, pool=meta.get(TAG_POOL, ""),
                          role=meta.get(TAG_ROLE, ""), provider_id=server.id, state=state,
                          private_address=private, public_address=public, extra=extra)

    def list_hosts(self) -> list[HostRecord]:
        return sorted((self._record(s) for s in self._servers(f"^{self.spec.name}-")), key=lambda r: r.name)

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

    def _remove_api_endpoint(self) -> None:
        if self.options.load_balancer:
            self.octavia.remove()

    def _zone(self, host: HostPlan) -> str | None:
        zones = self.options.availability_zones
        return zones[host.index % len(zones)] if zones else None

    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        """Create the hosts; one that exists is returned, one Nova gave up on (ERROR) is deleted
        (its fault logged) and created again."""
        self.prepare()
        shared = self.shared()
        existing = {h.name: h for h in self.list_hosts() if h.state != "terminated"}
        failed = [existing.pop(h.name) for h in hosts if h.name in existing and existing[h.name].state == "failed"]
        for record in failed:
            self.log(f"server {record.name} is in ERROR: {record.extra.get('fault')}; deleting it and creating it again")
            self._delete_servers([record])
        if failed:
            self._wait_gone({r.provider_id for r in failed})
        records = []
        for host in hosts:
            if host.name in existing:
                records.append(existing[host.name])
                continue
            image_id, flavor_id = self._image_and_flavor(self.spec.pool(host.pool).size)
            network: dict[str, Any] = {"uuid": shared["subnet"].network_id}
            if host.address:
                network["fixed_ip"] = host.address
            extra: dict[str, Any] = {}
            zone = self._zone(host)
            if zone:
                extra["availability_zone"] = zone
            group = self._server_group(host)
            if group:
                extra["scheduler_hints"] = {"group": group}

            def attempt(host=host, network=network, image_id=image_id, flavor_id=flavor_id, extra=extra):
                found = [s for s in self._servers(f"^{host.name}$") if s.name == host.name and not self._going(s)
                         and s.status != "ERROR"]
                if found:
                    return found[0]
                return self.conn.compute.create_server(
                    name=host.name, image_id=image_id, flavor_id=flavor_id, networks=[network],
                    user_data=base64.b64encode(configs[host.name]).decode(), key_name=shared["key_name"],
                    metadata=host_tags(self.spec.name, host), config_drive=self.options.config_drive,
                    security_groups=[{"name": shared["security_group"]}], **extra)
            self.log(f"creating server {host.name}" + (f" in zone {zone}" if zone else ""))
            records.append(self._record(self._retry(attempt, f"create server {host.name}")))
        planned = {h.name: h.address for h in hosts}
        self.register_api_targets([dataclasses.replace(r, private_address=planned.get(r.name) or r.private_address)
                                   for r in records if r.role == "master"])
        return records

    def wait_running(self, names: Sequence[str], timeout: float = 600.0) -> list[HostRecord]:
        """Until every named server is ACTIVE, then their network extras (floating IP, host-gw
        address pairs). A server that goes to ERROR stops the wait at once with Nova's fault."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            records = {h.name: h for h in self.list_hosts() if h.state != "terminated"}
            failed = [records[n] for n in names if n in records and records[n].state == "failed"]
            if failed:
                raise ActionError("openstack: " + "; ".join(
                    f"server {r.name} failed to boot: {r.extra.get('fault')}" for r in failed)
                    + "; the next `provision up` deletes and re-creates it")
            if all(n in records and records[n].state == "running" for n in names):
                break
            if time.monotonic() > deadline:
                pending = sorted(n for n in names if n not in records or records[n].state != "running")
                raise ActionError(f"openstack: servers not running after {timeout:.0f}s: {', '.join(pending)}")
            self.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_CAP)
        # Every running host of the cluster, not only the awaited ones: a host an earlier run
        # left without its floating IP (that run stopped at a failed boot) gets it now.
        changed = False
        for record in records.values():
            if record.state == "running":
                changed |= self._attach_addresses(record)
        if changed:
            records = {h.name: h for h in self.list_hosts()}
        return [records[n] for n in names]

    def _ports_of(self, server_id: str) -> list[Any]:
        return self._retry(lambda: list(self.conn.network.ports(device_id=server_id)), "list ports")

    def _attach_addresses(self, record: HostRecord) -> bool:
        """A floating IP for the host (when the cluster has an external network), and with
        flannel host-gw the pod network as an allowed address pair on its port (port security
        drops packets from addresses the port does not own). True when something changed."""
        o = self.options
        want_fip = bool(o.external_network and o.floating_ips)
        host_gw = self.spec.network.flannel.backend == "host-gw"
        if not host_gw and (not want_fip or record.public_address):
            return False
        ports = self._ports_of(record.provider_id)
        if not ports:
            return False
        port = ports[0]
        changed = False
        if host_gw:
            pairs = [{"ip_address": self.spec.network.pod_cidr}]
            if [p.get("ip_address") for p in port.allowed_address_pairs or []] != [self.spec.network.pod_cidr]:
                self._retry(lambda: self.conn.network.update_port(port, allowed_address_pairs=pairs),
                            f"set address pairs of {record.name}")
        if want_fip and not record.public_address:
            self._ensure_floating_ip(record, port)
            changed = True
        return changed

    def _floating_ips(self, **query: Any) -> list[Any]:
        return self._retry(lambda: list(self.conn.network.ips(**query)), "list floating IPs")

    def _ensure_floating_ip(self, record: HostRecord, port: Any) -> None:
        net = self.conn.network
        host_tag = f"{TAG_HOST}={record.name}"
        tags = [self.cluster_tag, host_tag]
        external = self._retry(lambda: net.find_network(self.options.external_network), "find external network")

        def attempt():
            on_port = self._floating_ips(port_id=port.id)
            if on_port:
                return on_port[0]
            free = [f for f in self._floating_ips(tags=",".join(tags)) if not f.port_id]
            if free:
                return net.update_ip(free[0], port_id=port.id)
            self.log(f"allocating a floating IP for {record.name}")
            return net.create_ip(floating_network_id=external.id, port_id=port.id,
                                 description=f"provision cluster {self.spec.name} host {record.name}")
        fip = self._retry(attempt, f"create floating IP for {record.name}")
        if set(tags) - set(fip.tags or []):
            self._retry(lambda: net.set_tags(fip, sorted(set(fip.tags or []) | set(tags))),
                        f"tag floating IP of {record.name}")

    def destroy_hosts(self, names: Sequence[str]) -> None:
        wanted = set(names)
        records = [r for r in self.list_hosts() if r.name in wanted and r.state != "terminated"]
        self._delete_servers(records)
        self._release_floating_ips({r.name for r in records})

    def _delete_servers(self, records: Sequence[HostRecord]) -> None:
        for record in records:
            self.log(f"deleting server {record.name}")
            self._retry(lambda r=record: self.conn.compute.delete_server(r.provider_id, ignore_missing=True),
                        f"delete server {record.name}")

    def _release_floating_ips(self, host_names: set[str] | None = None) -> None:
        """Floating IPs tagged with this cluster (and one of `host_names`, when given) go back
        to the cloud: a kept floating IP is billed."""
        for fip in self._floating_ips(tags=self.cluster_tag):
            hosts = {t.split("=", 1)[1] for t in fip.tags or [] if t.startswith(f"{TAG_HOST}=")}
            if host_names is None or hosts & host_names:
                self.log(f"releasing floating IP {fip.floating_ip_address}")
                self._retry(lambda f=fip: self.conn.network.delete_ip(f, ignore_missing=True),
                            "release floating IP")

    def _wait_gone(self, server_ids: set[str] | None = None, timeout: float = DELETE_TIMEOUT) -> None:
        """Until the servers (all of this cluster's when None) are gone. A server Nova keeps
        SOFT_DELETED (reclaim_instance_interval) is force-deleted: we asked for it to go, and
        it would hold its ports and addresses until reclaimed."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        forced: set[str] = set()
        while True:
            left = [s for s in self._servers(f"^{self.spec.name}-") if server_ids is None or s.id in server_ids]
            if not left:
                return
            for server in left:
                if server.status == "SOFT_DELETED" and server.id not in forced:
                    self.log(f"server {server.name} is soft-deleted; forcing its deletion")
                    forced.add(server.id)
                    try:
                        self._retry(lambda s=server: self.conn.compute.delete_server(s, force=True,
                                                                                    ignore_missing=True),
                                    f"force delete server {server.name}")
                    except ActionError as err:  # policy may forbid it: the cloud reclaims it later
                        self.log(f"{err}; waiting for the cloud to reclaim it")
                elif not self._going(server):
                    self._retry(lambda s=server: self.conn.compute.delete_server(s, ignore_missing=True),
                                f"delete server {server.name}")
            if time.monotonic() > deadline:
                raise ActionError(f"openstack: servers still deleting after {timeout:.0f}s: "
                                  f"{', '.join(sorted(s.name for s in left))}; run `provision down` again")
            self.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_CAP)

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

    def _remove_server_groups(self) -> None:
        names = {f"{self.resource_name}-masters", f"{self.resource_name}-etcd"}
        for group in self._retry(lambda: list(self.conn.compute.server_groups()), "list server groups"):
            if group.name in names:
                self.log(f"deleting server group {group.name}")
                self._retry(lambda g=group: self.conn.compute.delete_server_group(g, ignore_missing=True),
                            "delete server group")

    def _remove_router(self) -> None:
        net = self.conn.network
        router = self._find_router()
        if router is None:
            return
        for subnet_id in self._router_interfaces(router.id):
            self._delete_when_free(lambda s=subnet_id: net.remove_interface_from_router(router, subnet_id=s),
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
            self._delete_when_free(lambda s=subnet: net.delete_subnet(s, ignore_missing=True), "delete subnet")
        self._delete_when_free(lambda: net.delete_network(network, ignore_missing=True), "delete network")

    def _remove_keypair(self) -> None:
        self._retry(lambda: self.conn.compute.delete_keypair(self.resource_name, ignore_missing=True),
                    "delete key pair")


class _InUse(Exception):
    """A Neutron resource still used by ports (409 ...InUse)."""


def key_material(public_key: str | None) -> tuple[str, ...]:
    """An OpenSSH public key without its comment (what Nova compares)."""
    return tuple((public_key or "").split()[:2])


def rule_key(rule: Any, group_id: str) -> tuple:
    get = rule.get if isinstance(rule, dict) else (lambda k, d=None: getattr(rule, k, d))
    return (get("protocol"), get("port_range_min"), get("port_range_max"), get("remote_ip_prefix"),
            get("remote_group_id"))
