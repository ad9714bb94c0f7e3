"""The cluster spec, version 1: typed, immutable objects with every default of the contract.

Field names and meanings are the public contract (`spec-v1`). Each field carries a one-line
description that `provision init` prints as a comment.
"""
from __future__ import annotations

import ipaddress
from types import MappingProxyType
from typing import Any, Literal

from .schema import FrozenMap, SpecModel, field
from .values import (DURATION_RE, DURATION_UNITS, HASH_RE, NAME_RE, POOL_NAME_RE, Reserve, artifact_hashes,  # noqa: F401
                     cidr, cidr_list, fraction, ip_list, parse_duration, parse_reserve, policies, scalar_map,
                     string_list)


# ---- provider-specific keys -------------------------------------------------------------
# They live in `provider:` next to `name`; each provider has one options class here so that
# `validate` needs no cloud library. Providers may check more when they act.

class LocalOptions(SpecModel):
    subnet: str = field("bridge network the namespace hosts live on", "10.250.0.0/24",
                        convert=cidr)
    bridge: str | None = field("bridge interface name (default: pv-<cluster>, cut to 15 chars)", None)


class AWSOptions(SpecModel):
    region: str = field("AWS region", "us-east-1")
    ami: str | None = field("AMI id; default: the latest Flatcar AMI of os.channel", None)
    instance_type: str = field("instance type used when a pool's size is null", "t3.medium")
    vpc_cidr: str = field("CIDR of the VPC created for the cluster", "10.240.0.0/16", convert=cidr)
    subnet_cidr: str = field("CIDR of the cluster's subnet inside the VPC", "10.240.0.0/20",
                             convert=cidr)
    availability_zone: str | None = field("zone of the subnet; the region's first when null", None)
    zones: tuple[str, ...] = field(
        "availability zones the cluster spans: subnet_cidr is cut into one subnet per zone, etcd "
        "members and masters are spread one per zone and worker pools across them; empty: "
        "availability_zone alone when set, else the region's first three available zones",
        (), convert=string_list)
    api_cidrs: tuple[str, ...] = field(
        "networks allowed to reach the API server's 6443 (the VPC always is); default: anywhere, "
        "as kubectl users expect", ("0.0.0.0/0",), convert=cidr_list)
    ssh_cidrs: tuple[str, ...] = field(
        "networks allowed to reach SSH (provision bootstraps hosts over it); default: anywhere",
        ("0.0.0.0/0",), convert=cidr_list)


class OpenStackOptions(SpecModel):
    cloud: str | None = field("clouds.yaml entry; OS_CLOUD or OS_* variables when null", None)
    image: str = field("Glance image name or id", "flatcar-stable")
    flavor: str = field("Nova flavor used when a pool's size is null", "m1.medium")
    network: str | None = field("Neutron network name; one is created when null", None)
    subnet_cidr: str = field("CIDR of the subnet created when network is null; with network, the subnet "
                             "of it (or a range inside) fixed addresses come from", "10.241.0.0/24",
                             convert=cidr)
    # Routing, addressing and placement (see README, Providers > OpenStack).
    external_network: str | None = field(
        "Neutron external network: a router to it and floating IPs come from it; null keeps the "
        "network isolated (provision must then reach the fixed addresses)", None, example="public")
    floating_ips: bool = field("with external_network: a floating IP (tagged with the cluster) on every host", True)
    dns_nameservers: tuple[str, ...] = field("DNS servers of the subnet provision creates; [] leaves DNS to Neutron",
                                             ("1.1.1.1", "8.8.8.8"), convert=ip_list)
    availability_zones: tuple[str, ...] = field(
        "Nova availability zones hosts are spread over (by host index); the cloud's choice when empty", (),
        convert=string_list)
    config_drive: bool = field("attach a config drive (Ignition reads it without the metadata service)", True)
    load_balancer: bool = field(
        "an Octavia load balancer (TCP 6443 to every master) as the API endpoint when the cloud offers "
        "the load-balancer service; false, or a cloud without one: a node-local proxy on every node", True)


class LibcloudOptions(SpecModel):
    driver: str = field("libcloud compute driver name, e.g. digitalocean, linode, gce, ec2", "dummy",
                        example="digitalocean")
    location: str | None = field("driver location/region id; when null and the driver needs one, the first "
                                "it lists that offers the image and sizes", None)
    image: str | None = field("image id or name; a Flatcar image of os.channel when null", None)
    size: str | None = field("size id used when a pool's size is null; the smallest when null", None)
    region: str | None = field("region passed to drivers that take one at connection; on digitalocean "
                              "(none taken) the location when location is null", None)
    load_balancer: bool = field(
        "the cloud's load balancer (libcloud.loadbalancer: TCP 6443 to every master, named <name>-api) as the "
        "API endpoint where libcloud has a load-balancer driver for the compute driver (ec2: ELB; also gce, "
        "cloudstack, rackspace, brightbox, dimensiondata, nttcis, aliyun_ecs); false, or a driver without one "
        "(digitalocean, linode...): a node-local proxy on every node", True)


class VagrantOptions(SpecModel):
    box: str | None = field("Vagrant box; null: Flatcar's published VirtualBox box of os.channel "
                            "(virtualbox only: Flatcar publishes none for libvirt, name your own)", None)
    box_url: str | None = field("where the box comes from when it is not installed (null with box null: "
                                "Flatcar's release server)", None)
    memory: int = field("MiB of memory per VM", 2048)
    cpus: int = field("virtual CPUs per VM", 2)
    subnet: str = field("private network of the VMs; the host is its first address (virtualbox: inside "
                        "192.168.56.0/21)", "192.168.60.0/24", convert=cidr)
    vm_provider: Literal["libvirt", "virtualbox"] = field("hypervisor plugin: virtualbox | libvirt", "virtualbox")


PROVIDER_OPTIONS: "MappingProxyType[str, type[SpecModel]]" = MappingProxyType({
    "local": LocalOptions,
    "aws": AWSOptions,
    "openstack": OpenStackOptions,
    "libcloud": LibcloudOptions,
    "vagrant": VagrantOptions,
})


class ProviderSpec(SpecModel):
    """`provider:` of a spec: its `name` and that provider's own keys (parsed apart, since
    which keys exist depends on the name)."""

    name: str = field("the provider: " + " | ".join(PROVIDER_OPTIONS))
    options: Any = field("the provider's own keys: an instance of PROVIDER_OPTIONS[name]")

    @property
    def subnet(self) -> str | None:
        """The host network the provider lays out, when the spec fixes one."""
        return getattr(self.options, "subnet", None) or getattr(self.options, "subnet_cidr", None)


def pool_provider(value: object) -> "ProviderSpec | None":
    """A worker pool's own provider (cloud bursting): `name` and that provider's keys, exactly
    as the top-level `provider`."""
    if value is None:
        return None
    from .schema import FieldProblems, Problems, build
    if not isinstance(value, dict):
        raise ValueError("must be a mapping with at least `name`, like the top-level provider")
    name = value.get("name")
    if not isinstance(name, str) or name not in PROVIDER_OPTIONS:
        raise FieldProblems([("name", f"must be one of {' | '.join(PROVIDER_OPTIONS)} (got {name!r})")])
    problems = Problems()
    options = build(PROVIDER_OPTIONS[name], {k: v for k, v in value.items() if k != "name"}, "", problems)
    if problems:
        raise FieldProblems(problems.items)
    return ProviderSpec(name=name, options=options)


# ---- the rest of the spec ---------------------------------------------------------------

class OSSpec(SpecModel):
    family: Literal["flatcar", "fedora-coreos", "container-linux"] = field(
        "host OS: flatcar | fedora-coreos | container-linux", "flatcar")
    channel: str = field("release channel (stable, beta, alpha; fedora-coreos: stable, testing, next)",
                         "stable")
    config: Literal["ignition", "cloud-config"] = field(
        "first-boot config: ignition | cloud-config (flatcar and container-linux only)", "ignition")


class SSHSpec(SpecModel):
    user: str = field("login user on every host", "core")
    authorized_keys: tuple[str, ...] = field(
        "public keys allowed to log in; at least one for every provider but local", (),
        convert=string_list)


class EtcdSpec(SpecModel):
    count: int = field("members; odd, 1..7", 3)
    placement: Literal["masters", "dedicated"] = field(
        "masters (on the first `count` masters) | dedicated (hosts of etcd pools)", "masters")
    version: str = field("etcd release run on the hosts", "3.5.17")
    discovery: Literal["static", "token"] = field(
        "static (--initial-cluster) | token (a discovery service URL)", "static")
    discovery_url: str | None = field(
        "with discovery: token, the discovery service that hands out tokens", None)


class FlannelSpec(SpecModel):
    backend: Literal["vxlan", "host-gw", "udp"] = field("flannel backend: vxlan | host-gw | udp", "vxlan")
    etcd_api: Literal["v3", "v2"] = field("etcd API flannel uses: v3 | v2 (CoreOS-era flannel)", "v3")
    version: str = field("flannel release", "0.27.4")


class NetworkSpec(SpecModel):
    pod_cidr: str = field("pod network", "10.2.0.0/16", convert=cidr)
    service_cidr: str = field("service network; its first address is the API service IP", "10.3.0.0/24",
                              convert=cidr)
    flannel: FlannelSpec = field("overlay network", factory=FlannelSpec)
    cni_plugins_version: str = field(
        "containernetworking plugins release (bridge, host-local, loopback, portmap) installed in "
        "/opt/cni/bin; pods get addresses from the host's flannel subnet through them", "1.6.2")

    @property
    def api_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr).network_address + 10)


class FleetSpec(SpecModel):
    enabled: bool = field("run fleetd on every host with metadata role=<role>,pool=<pool> (no fleet release "
                          "publishes a checksum: needs artifacts.hashes.fleetd or a pin on first use; an offline "
                          "render without either is refused, exit 2)", True)
    version: str = field("fleet release", "1.0.0")


class KubernetesSpec(SpecModel):
    version: str = field("Kubernetes release", "1.33.4")
    cluster_domain: str = field("cluster DNS domain", "cluster.local")
    api_server_names: tuple[str, ...] = field("extra SANs for the API server certificate", (),
                                              convert=string_list)
    coredns_version: str = field("CoreDNS release serving cluster DNS at network.service_cidr's "
                                 "tenth address (the address kubelet hands to pods)", "1.12.0")
    api_proxy_port: int = field(
        "port of the node-local API proxy on 127.0.0.1 of every node (haproxy forwarding to every "
        "master's 6443); kubelet, kube-proxy and addons of workers use it; 1024..65535, not a port "
        "a host already uses (2379, 2380, 6443, 10250, 10256-10259)", 6444)


class PoolSpec(SpecModel):
    name: str = field("pool name; host names are <cluster>-<pool>-<n>")
    role: Literal["master", "worker", "etcd"] = field(
        "master | worker | etcd (etcd only with etcd.placement: dedicated)")
    count: int = field("hosts in the pool at creation")
    size: str | None = field("provider machine size / flavor; provider default when null", None)
    min: int | None = field("workers: headroom never goes below min (default: count)", None)
    max: int | None = field("workers: headroom never goes above max (default: count)", None)
    labels: FrozenMap = field("Kubernetes node labels for the pool's hosts",
                              factory=lambda: MappingProxyType({}), convert=scalar_map)
    provider: ProviderSpec | None = field(
        "workers: a provider of the pool's own for cloud bursting (`name` and that provider's keys, "
        "as the top-level `provider`); its hosts join the cluster over the network; null: the "
        "cluster's provider", None, convert=pool_provider, accepts=dict[str, Any] | None,
        example={"name": "aws", "region": "eu-west-1"})

    @property
    def min_count(self) -> int:
        return self.count if self.min is None else self.min

    @property
    def max_count(self) -> int:
        return self.count if self.max is None else self.max


class HeadroomSpec(SpecModel):
    pool: str = field("worker pool whose size headroom manages", "workers")
    source: Literal["etcd", "kubernetes"] = field(
        "etcd (host agents publish load) | kubernetes (API allocatable/requests)", "etcd")
    policies: tuple[str, ...] = field(
        "any of containers | utilization | predictive; the largest need wins", ("containers",),
        convert=policies)
    containers_per_host: int = field("container slots per host (Clocker's maxContainers)", 8)
    reserve: Reserve = field("free container slots to keep: a count, or a percentage like \"20%\"",
                             Reserve(count=1), convert=parse_reserve)
    cpu_threshold: float = field("utilization: add hosts above this mean CPU", 0.7, convert=fraction)
    memory_threshold: float = field("utilization: add hosts above this mean memory", 0.8,
                                    convert=fraction)
    scale_down_utilization: float = field(
        "a host below this CPU and memory use is removable (cluster-autoscaler 0.5)", 0.5,
        convert=fraction)
    scale_up_cooldown: float = field("wait after any change before adding again", 30.0,
                                     convert=parse_duration, example="30s")
    scale_down_cooldown: float = field("wait after any change, and time a host must stay removable, "
                                       "before removing", 600.0, convert=parse_duration, example="10m")
    interval: float = field("loop interval without --once", 10.0, convert=parse_duration, example="10s")
    load_ttl: float = field("TTL of the load keys host agents publish", 60.0, convert=parse_duration,
                            example="60s")
    drain_timeout: float = field("how long a host may take to drain before removal is abandoned",
                                 120.0, convert=parse_duration, example="2m")
    kubeconfig: str | None = field("source kubernetes: kubeconfig to read; the cluster's admin one when null",
                                   None)
    burst_pool: str | None = field(
        "worker pool with a provider of its own that headroom fills only once `pool` is at its max, "
        "and empties first when load falls (cloud bursting); null: none", None)
    burst_networks: tuple[str, ...] = field(
        "IPv4 CIDRs the hosts of a pool on another provider come from, as the firewalls see them "
        "(cloud bursting): the security groups and firewalls provision makes admit them on etcd's "
        "2379, the API's 6443, flannel's overlay port and kubelet's 10250; empty: none",
        (), convert=string_list, example=["198.51.100.0/24"])


class StateSpec(SpecModel):
    backend: Literal["local", "etcd", "s3"] = field("local (a directory) | etcd | s3", "local")
    path: str = field("local: directory holding every cluster's state, relative to the working "
                      "directory; --state-dir overrides it", ".provision")
    endpoints: tuple[str, ...] = field("etcd: client URLs of the etcd holding state", (),
                                       convert=string_list)
    prefix: str = field("etcd and s3: key prefix", "provision")
    bucket: str | None = field("s3: bucket holding state", None)
    region: str | None = field("s3: bucket region", None)



class ArtifactsSpec(SpecModel):
    mirror: str | None = field("base URL serving the binaries hosts download (air-gapped sites, local "
                               "provider)", None)
    hashes: FrozenMap = field(
        "published hashes of binaries (etcd, kubelet, flanneld, fleetd, cni-plugins) that provision does not know, "
        "as sha512-<hex> or sha256-<hex>", factory=lambda: MappingProxyType({}), convert=artifact_hashes)


class PKISpec(SpecModel):
    algorithm: Literal["ecdsa-p256", "rsa-2048"] = field("key type: ecdsa-p256 | rsa-2048", "ecdsa-p256")
    ca_days: int = field("validity of the CAs in days", 3650)
    leaf_days: int = field("validity of every other certificate in days", 365)


class Spec(SpecModel):
    name: str = field("cluster name; ^[a-z][a-z0-9-]{0,30}$; prefixes host names and tags")
    provider: ProviderSpec = field("where hosts are created, with the provider's own keys")
    pools: tuple[PoolSpec, ...] = field("host pools; at least one master pool")
    os: OSSpec = field("host operating system", factory=OSSpec)
    ssh: SSHSpec = field("SSH access to hosts", factory=SSHSpec)
    etcd: EtcdSpec = field("etcd cluster", factory=EtcdSpec)
    network: NetworkSpec = field("cluster networks", factory=NetworkSpec)
    fleet: FleetSpec = field("fleet scheduler", factory=FleetSpec)
    kubernetes: KubernetesSpec = field("Kubernetes", factory=KubernetesSpec)
    headroom: HeadroomSpec | None = field("automatic sizing of one worker pool; off when absent", None)
    state: StateSpec = field("where provision keeps its state", factory=StateSpec)
    artifacts: ArtifactsSpec = field("where hosts download binaries", factory=ArtifactsSpec)
    pki: PKISpec = field("certificates and keys", factory=PKISpec)

    def pool(self, name: str) -> PoolSpec:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def master_pools(self) -> tuple[PoolSpec, ...]:
        return tuple(p for p in self.pools if p.role == "master")

    @property
    def worker_pools(self) -> tuple[PoolSpec, ...]:
        return tuple(p for p in self.pools if p.role == "worker")

    @property
    def etcd_pools(self) -> tuple[PoolSpec, ...]:
        if self.etcd.placement == "dedicated":
            return tuple(p for p in self.pools if p.role == "etcd")
        return self.master_pools

    @property
    def needs_etcd_v2(self) -> bool:
        """fleet and v2 flannel speak etcd's v2 API (headroom's etcd source speaks v3)."""
        return self.fleet.enabled or self.network.flannel.etcd_api == "v2"
