"""The OpenStack provider's servers: images and flavors, Nova servers with their server groups,
zones, floating IPs and host-gw address pairs, the wait for them to run, and their deletion."""
from __future__ import annotations

import functools
import base64
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from .base import TAG_CLUSTER, TAG_HOST, TAG_POOL, TAG_ROLE, HostRecord, host_tags
from .openstack_base import DELETE_TIMEOUT, WAIT_POLL_CAP
from .openstack_network import OpenStackNetwork

if TYPE_CHECKING:
    from openstack.compute.v2.server import Server
    from openstack.network.v2.floating_ip import FloatingIP

STATE_MAP = {"ACTIVE": "running", "BUILD": "pending", "REBUILD": "pending", "REBOOT": "running",
             "HARD_REBOOT": "running", "SHUTOFF": "stopped", "SUSPENDED": "stopped", "PAUSED": "stopped",
             "DELETED": "terminated", "SOFT_DELETED": "terminated", "ERROR": "failed"}
SERVER_GROUP_POLICY = "soft-anti-affinity"  # spread when the cloud can, never refuse to boot


class Named(Protocol):
    """What a floating IP is made for: a host record, or the API load balancer's name."""

    @property
    def name(self) -> str: ...


class PortRef(Protocol):
    """A port a floating IP goes on: a Neutron port, or just the id of one (a VIP's)."""

    @property
    def id(self) -> str: ...


def pick_image(images: Sequence[Any]) -> Any:
    """Of several images with one name, the newest (created_at, then id: a stable choice)."""
    return max(images, key=lambda i: (getattr(i, "created_at", None) or "", i.id))


def server_fault(server: Server) -> str:
    fault = getattr(server, "fault", None) or {}
    message = (fault.get("message") or "no fault recorded").strip()
    return f"{message} (code {fault['code']})" if fault.get("code") else message


class OpenStackServers(OpenStackNetwork):
    """Nova servers, one per host, found again by their metadata."""

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
    def _going(server: Server) -> bool:
        return server.status in ("DELETED", "SOFT_DELETED") or getattr(server, "task_state", None) == "deleting"

    def _record(self, server: Server) -> HostRecord:
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

    def _floating_ips(self, **query: object) -> list[FloatingIP]:
        return self._retry(lambda: list(self.conn.network.ips(**query)), "list floating IPs")

    def _ensure_floating_ip(self, record: Named, port: PortRef) -> None:
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
        self.deregister_api_targets(names)  # Octavia keeps a member whose server is gone
        wanted = set(names)
        records = [r for r in self.list_hosts() if r.name in wanted and r.state != "terminated"]
        self._delete_servers(records)
        self._release_floating_ips({r.name for r in records})

    def _delete_servers(self, records: Sequence[HostRecord]) -> None:
        for record in records:
            self.log(f"deleting server {record.name}")
            self._retry(functools.partial(self.conn.compute.delete_server, record.provider_id, ignore_missing=True),
                        f"delete server {record.name}")

    def _release_floating_ips(self, host_names: set[str] | None = None) -> None:
        """Floating IPs tagged with this cluster (and one of `host_names`, when given) go back
        to the cloud: a kept floating IP is billed."""
        for fip in self._floating_ips(tags=self.cluster_tag):
            hosts = {t.split("=", 1)[1] for t in fip.tags or [] if t.startswith(f"{TAG_HOST}=")}
            if host_names is None or hosts & host_names:
                self.log(f"releasing floating IP {fip.floating_ip_address}")
                self._retry(functools.partial(self.conn.network.delete_ip, fip, ignore_missing=True),
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
                        self._retry(functools.partial(self.conn.compute.delete_server, server, force=True,
                                                      ignore_missing=True),
                                    f"force delete server {server.name}")
                    except ActionError as err:  # policy may forbid it: the cloud reclaims it later
                        self.log(f"{err}; waiting for the cloud to reclaim it")
                elif not self._going(server):
                    self._retry(functools.partial(self.conn.compute.delete_server, server, ignore_missing=True),
                                f"delete server {server.name}")
            if time.monotonic() > deadline:
                raise ActionError(f"openstack: servers still deleting after {timeout:.0f}s: "
                                  f"{', '.join(sorted(s.name for s in left))}; run `provision down` again")
            self.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_CAP)

    def _remove_server_groups(self) -> None:
        names = {f"{self.resource_name}-masters", f"{self.resource_name}-etcd"}
        for group in self._retry(lambda: list(self.conn.compute.server_groups()), "list server groups"):
            if group.name in names:
                self.log(f"deleting server group {group.name}")
                self._retry(functools.partial(self.conn.compute.delete_server_group, group, ignore_missing=True),
                            "delete server group")
