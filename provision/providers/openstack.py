"""OpenStack through openstacksdk: Nova servers with user data and metadata, a Neutron network,
subnet and security group, and a Nova key pair.

Credentials come from `clouds.yaml` (`provider.cloud`, else `OS_CLOUD`) or the `OS_*` variables.
Each server carries the cluster, pool, role and host in its metadata; `list_hosts` asks Nova for
the servers whose name starts with the cluster name and keeps those whose metadata says so, so
the cluster is found from the cloud alone. Servers are created one per host (Nova's multi-create
names servers from a template, which would lose the host identity); before every (re)try the
host's name is looked up, so a lost answer never makes a second server.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from .base import TAG_CLUSTER, TAG_HOST, TAG_POOL, TAG_ROLE, HostRecord, Provider, UserDataLimit, host_tags
from .retry import Backoff, call_with_retry

STATE_MAP = {"ACTIVE": "running", "BUILD": "pending", "REBUILD": "pending", "REBOOT": "running",
             "HARD_REBOOT": "running", "SHUTOFF": "stopped", "SUSPENDED": "stopped", "PAUSED": "stopped",
             "DELETED": "terminated", "SOFT_DELETED": "terminated", "ERROR": "unknown"}


def openstack_retryable(err: BaseException) -> str | None:
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc
    if isinstance(err, os_exc.HttpException):
        status = err.status_code or 0
        if status == 429:
            return "throttled (429)"
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


def wanted_rules() -> list[dict[str, Any]]:
    """SSH and the Kubernetes API from anywhere; etcd, kubelet and flannel vxlan between members
    (remote_group_id None means the group itself)."""
    return [
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 6443, "port_range_max": 6443, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 2379, "port_range_max": 2380, "remote_group_id": None},
        {"protocol": "tcp", "port_range_min": 10250, "port_range_max": 10250, "remote_group_id": None},
        {"protocol": "udp", "port_range_min": 8472, "port_range_max": 8472, "remote_group_id": None},
    ]


class OpenStackProvider(Provider):
    """Nova servers on a Neutron network the provider creates (or the one `provider.network` names)."""

    name = "openstack"
    user_data_limit = UserDataLimit(65535, "base64")  # Nova: 65,535 bytes of base64

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()
        self._conn = None
        self._shared: dict[str, Any] | None = None
        self._lookups: dict[str | None, tuple[str, str]] = {}

    @property
    def resource_name(self) -> str:
        return f"provision-{self.spec.name}"

    def preflight(self) -> list[tuple[str, str]]:
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
    def conn(self):
        if self._conn is None:
            import openstack
            from openstack import exceptions as os_exc
            try:
                cloud = self.options.cloud
                self._conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()
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

    # -- shared resources --------------------------------------------------------------------
    def prepare(self) -> None:
        """Network, subnet, security group with its rules, key pair: found by name or made
        (after image and flavors are resolved, so a spec naming a missing one creates nothing)."""
        for size in {p.size for p in self.spec.pools}:
            self._image_and_flavor(size)
        self.shared()

    def shared(self) -> dict[str, Any]:
        if self._shared is None:
            network = self._ensure_network()
            group = self._ensure_security_group()
            key = self._ensure_keypair()
            self._shared = {"network": network, "security_group": group, "key_name": key}
        return self._shared

    def _ensure_network(self) -> str:
        net = self.conn.network
        if self.options.network:
            found = self._retry(lambda: net.find_network(self.options.network), "find network")
            if found is None:
                raise UserError(f"provider.network: no network {self.options.network!r} in this cloud")
            return found.id

        def network_attempt():
            return (net.find_network(self.resource_name)
                    or net.create_network(name=self.resource_name, description=f"provision cluster {self.spec.name}"))
        network = self._retry(network_attempt, "create network")

        def subnet_attempt():
            existing = [s for s in net.subnets(network_id=network.id)]
            if existing:
                return existing[0]
            self.log(f"creating subnet {self.options.subnet_cidr}")
            return net.create_subnet(name=self.resource_name, network_id=network.id, ip_version=4,
                                     cidr=self.options.subnet_cidr)
        self._retry(subnet_attempt, "create subnet")
        return network.id

    def _ensure_security_group(self) -> str:
        net = self.conn.network

        def attempt():
            return (net.find_security_group(self.resource_name)
                    or net.create_security_group(name=self.resource_name,
                                                 description=f"provision cluster {self.spec.name}"))
        group = self._retry(attempt, "create security group")
        have = {rule_key(r, group.id) for r in self._retry(
            lambda: list(net.security_group_rules(security_group_id=group.id)), "list security group rules")}
        for rule in wanted_rules():
            rule = {**rule, "remote_group_id": group.id} if "remote_group_id" in rule else rule
            if rule_key(rule, group.id) not in have:
                self._retry(lambda rule=rule: net.create_security_group_rule(
                    security_group_id=group.id, direction="ingress", ethertype="IPv4", **rule),
                    "create security group rule")
        return group.id

    def _ensure_keypair(self) -> str:
        compute = self.conn.compute

        def attempt():
            found = compute.find_keypair(self.resource_name)
            if found is None:
                found = compute.create_keypair(name=self.resource_name, public_key=self.spec.ssh.authorized_keys[0])
            return found.name
        return self._retry(attempt, "create key pair")

    # -- hosts -------------------------------------------------------------------------------
    def _image_and_flavor(self, size: str | None) -> tuple[str, str]:
        if size in self._lookups:
            return self._lookups[size]
        image = self._retry(lambda: self.conn.image.find_image(self.options.image), "find image")
        if image is None:
            raise UserError(f"provider.image: no image {self.options.image!r} in this cloud")
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
        return HostRecord(name=meta.get(TAG_HOST) or server.name, pool=meta.get(TAG_POOL, ""),
                          role=meta.get(TAG_ROLE, ""), provider_id=server.id,
                          # Nova's answer to a create carries no status yet: the server is building.
                          state=STATE_MAP.get(server.status, "unknown") if server.status else "pending",
                          private_address=private,
                          public_address=public, extra={"flavor": (server.flavor or {}).get("id")
                                                        if isinstance(server.flavor, dict) else None})

    def list_hosts(self) -> list[HostRecord]:
        return sorted((self._record(s) for s in self._servers(f"^{self.spec.name}-")), key=lambda r: r.name)

    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        self.prepare()
        shared = self.shared()
        existing = {h.name: h for h in self.list_hosts()}
        records = []
        for host in hosts:
            if host.name in existing:
                records.append(existing[host.name])
                continue
            image_id, flavor_id = self._image_and_flavor(self.spec.pool(host.pool).size)
            network = {"uuid": shared["network"]}
            if host.address:
                network["fixed_ip"] = host.address

            def attempt(host=host, network=network, image_id=image_id, flavor_id=flavor_id):
                found = [s for s in self._servers(f"^{host.name}$") if s.name == host.name]
                if found:
                    return found[0]
                return self.conn.compute.create_server(
                    name=host.name, image_id=image_id, flavor_id=flavor_id, networks=[network],
                    user_data=base64.b64encode(configs[host.name]).decode(), key_name=shared["key_name"],
                    metadata=host_tags(self.spec.name, host),
                    security_groups=[{"name": self.resource_name}])
            self.log(f"creating server {host.name}")
            records.append(self._record(self._retry(attempt, f"create server {host.name}")))
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        wanted = set(names)
        for record in self.list_hosts():
            if record.name in wanted:
                self.log(f"deleting server {record.name}")
                self._retry(lambda r=record: self.conn.compute.delete_server(r.provider_id, ignore_missing=True),
                            f"delete server {record.name}")

    def teardown(self) -> None:
        import time
        deadline = time.monotonic() + 600
        while self.list_hosts():
            if time.monotonic() > deadline:
                raise ActionError("openstack: servers still deleting after 600s; run `provision down` again")
            time.sleep(2)
        net = self.conn.network
        group = self._retry(lambda: net.find_security_group(self.resource_name), "find security group")
        if group is not None:
            self._retry(lambda: net.delete_security_group(group, ignore_missing=True), "delete security group")
        if not self.options.network:
            network = self._retry(lambda: net.find_network(self.resource_name), "find network")
            if network is not None:
                for subnet in self._retry(lambda: list(net.subnets(network_id=network.id)), "list subnets"):
                    self._retry(lambda s=subnet: net.delete_subnet(s, ignore_missing=True), "delete subnet")
                self._retry(lambda: net.delete_network(network, ignore_missing=True), "delete network")
        self._retry(lambda: self.conn.compute.delete_keypair(self.resource_name, ignore_missing=True),
                    "delete key pair")
        self._shared = None


def rule_key(rule: Any, group_id: str) -> tuple:
    get = rule.get if isinstance(rule, dict) else (lambda k, d=None: getattr(rule, k, d))
    return (get("protocol"), get("port_range_min"), get("port_range_max"), get("remote_ip_prefix"),
            get("remote_group_id"))
