"""The spec's cross-field rules: what no single field's type can say (pool names and counts,
etcd's quorum, overlapping networks, headroom limits, cloud bursting, cluster services), each
problem under the field it blames."""
from __future__ import annotations

import ipaddress
import re

from .model import Spec
from .schema import Problems, name_problem
from .values import NAME_RE, POOL_NAME_RE


def check_rules(spec: Spec, problems: Problems) -> None:
    """The cross-field rules of the contract, each naming the field it blames."""
    if not NAME_RE.match(spec.name):
        problems.add("name", name_problem(30, spec.name))

    names: dict[str, int] = {}
    for i, pool in enumerate(spec.pools):
        path = f"pools[{i}]"
        if not POOL_NAME_RE.match(pool.name):
            problems.add(f"{path}.name", name_problem(19, pool.name))
        if pool.name in names:
            problems.add(f"{path}.name", f"duplicate pool name {pool.name!r} (also pools[{names[pool.name]}])")
        names.setdefault(pool.name, i)
        if pool.count < 0:
            problems.add(f"{path}.count", f"must be >= 0 (got {pool.count})")
        if pool.role == "master" and pool.count < 1:
            problems.add(f"{path}.count", f"a master pool needs at least one host (got {pool.count})")
        if pool.role != "worker":
            for key in ("min", "max"):
                if getattr(pool, key) is not None:
                    problems.add(f"{path}.{key}", f"only worker pools are resized; remove it from a {pool.role} pool")
        else:
            if pool.min is not None and pool.min < 0:
                problems.add(f"{path}.min", f"must be >= 0 (got {pool.min})")
            if pool.min_count > pool.count:
                problems.add(f"{path}.min", f"must be <= count (got {pool.min_count} > {pool.count})")
            if pool.max_count < pool.count:
                problems.add(f"{path}.max", f"must be >= count (got {pool.max_count} < {pool.count})")
        if pool.role == "etcd" and spec.etcd.placement != "dedicated":
            problems.add(f"{path}.role", "etcd pools need etcd.placement: dedicated")

    if not spec.pools:
        problems.add("pools", "at least one master pool is required (got an empty list)")
    elif not spec.master_pools:
        problems.add("pools", "at least one pool must have role: master")

    etcd = spec.etcd
    if etcd.count < 1 or etcd.count > 7 or etcd.count % 2 == 0:
        problems.add("etcd.count", f"must be odd and between 1 and 7 (got {etcd.count})")
    else:
        carriers = sum(p.count for p in spec.etcd_pools)
        kind = "masters" if etcd.placement == "masters" else "hosts in etcd pools"
        if etcd.count > carriers:
            problems.add("etcd.count", f"must be <= the number of {kind} (got {etcd.count} > {carriers})")
    if etcd.discovery == "token" and not etcd.discovery_url:
        problems.add("etcd.discovery_url", "required with etcd.discovery: token")
    if etcd.discovery_url and not etcd.discovery_url.startswith(("http://", "https://")):
        problems.add("etcd.discovery_url", f"must be an http(s) URL (got {etcd.discovery_url!r})")

    nets = [("network.pod_cidr", spec.network.pod_cidr), ("network.service_cidr", spec.network.service_cidr)]
    subnet_key = "subnet" if hasattr(spec.provider.options, "subnet") else "subnet_cidr"
    if spec.provider.subnet:
        nets.append((f"provider.{subnet_key}", spec.provider.subnet))
    for i, (path_a, net_a) in enumerate(nets):
        for path_b, net_b in nets[:i]:
            if ipaddress.ip_network(net_a).overlaps(ipaddress.ip_network(net_b)):
                problems.add(path_a, f"overlaps {path_b} ({net_a} and {net_b})")
    if ipaddress.ip_network(spec.network.service_cidr).num_addresses < 16:
        problems.add("network.service_cidr", "is too small (needs at least 16 addresses)")
    if spec.provider.name in ("local", "vagrant"):
        hosts = sum(p.max_count for p in spec.pools if p.provider is None)  # burst pools live elsewhere
        room = ipaddress.ip_network(str(spec.provider.subnet)).num_addresses - 3
        if hosts > room:
            problems.add(f"provider.{subnet_key}", f"has room for {room} hosts, the pools need up to {hosts}")

    if spec.headroom is not None:
        watched = next((p for p in spec.pools if p.name == spec.headroom.pool), None)
        workers = [p.name for p in spec.worker_pools]
        if watched is None:
            hint = f" (worker pools: {', '.join(workers)})" if workers else " (there is no worker pool)"
            problems.add("headroom.pool", f"names no pool {spec.headroom.pool!r}{hint}")
        elif watched.role != "worker":
            problems.add("headroom.pool", f"must name a worker pool ({watched.name!r} is a {watched.role} pool)")
        if spec.headroom.containers_per_host < 1:
            problems.add("headroom.containers_per_host", f"must be >= 1 (got {spec.headroom.containers_per_host})")
        headroom_limits(spec, problems)
    burst_rules(spec, problems)
    flannel_backend_rules(spec, problems)

    if spec.os.config == "cloud-config" and spec.os.family == "fedora-coreos":
        problems.add("os.config", "cloud-config needs an OS that runs coreos-cloudinit "
                                  "(flatcar or container-linux), not fedora-coreos")
    if spec.provider.name != "local" and not spec.ssh.authorized_keys:
        problems.add("ssh.authorized_keys", f"at least one public key is required with provider {spec.provider.name}")
    for i, key in enumerate(spec.ssh.authorized_keys):
        if not key.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
            problems.add(f"ssh.authorized_keys[{i}]", "is not an OpenSSH public key")

    st = spec.state
    if st.backend == "etcd" and not st.endpoints:
        problems.add("state.endpoints", "required with state.backend: etcd")
    if st.backend == "s3" and not st.bucket:
        problems.add("state.bucket", "required with state.backend: s3")
    if spec.artifacts.mirror and not spec.artifacts.mirror.startswith(("http://", "https://")):
        problems.add("artifacts.mirror", f"must be an http(s) URL (got {spec.artifacts.mirror!r})")
    if spec.pki.ca_days < 1 or spec.pki.leaf_days < 1 or spec.pki.leaf_days > spec.pki.ca_days:
        problems.add("pki.leaf_days", "must be >= 1 and <= pki.ca_days")
    _check_cluster_services(spec, problems)
    if not re.match(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$", spec.kubernetes.version):  # download URLs, skew checks
        problems.add("kubernetes.version", f"must be a Kubernetes release like 1.33.4 (got {spec.kubernetes.version!r})")


VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
# flannel moved to etcd's v3 client in 0.18.0 (flannel-io/flannel#1562): later releases cannot
# read a v2 keyspace.
FLANNEL_V3_ONLY_SINCE = (0, 18, 0)
# Ports a node already uses: etcd, kube-apiserver, kubelet, kube-proxy, controller-manager, scheduler.
RESERVED_PORTS = {2379, 2380, 6443, 10250, 10256, 10257, 10259}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_cluster_services(spec: Spec, problems: Problems) -> None:
    """Pod network, cluster DNS and the node-local API proxy: versions that land in URLs and
    image names, flannel's etcd API against its version, and the proxy's port."""
    flannel = spec.network.flannel
    for path, value in (("network.flannel.version", flannel.version),
                        ("network.cni_plugins_version", spec.network.cni_plugins_version),
                        ("kubernetes.coredns_version", spec.kubernetes.coredns_version)):
        if not VERSION_RE.match(value):
            problems.add(path, f"must be a release number like 1.2.3 (got {value!r})")
    # With cloud-config the OS's own flannel runs (CoreOS era, v2); otherwise the pinned release.
    if (spec.os.config != "cloud-config" and flannel.etcd_api == "v2" and VERSION_RE.match(flannel.version)
            and _version_tuple(flannel.version) >= FLANNEL_V3_ONLY_SINCE):
        problems.add("network.flannel.etcd_api", f"flannel {flannel.version} speaks only etcd's v3 API "
                                                 "(v2 was dropped in 0.18.0); use v3, or a flannel release "
                                                 "before 0.18.0")
    port = spec.kubernetes.api_proxy_port
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        problems.add("kubernetes.api_proxy_port", f"must be a port number in 1024..65535 (got {port!r})")
    elif port in RESERVED_PORTS:
        problems.add("kubernetes.api_proxy_port", f"{port} is already used on nodes (reserved: "
                                                  f"{', '.join(str(p) for p in sorted(RESERVED_PORTS))})")


def headroom_limits(spec: Spec, problems: Problems) -> None:
    """Limits headroom could never honour: a reserve of all capacity (the pool would sit at
    max), thresholds out of order (hosts removed as idle would be busy), and a min of 0 that
    a reserve of free slots makes unreachable."""
    h = spec.headroom
    if h is None:
        return
    if h.reserve.percent is not None and h.reserve.percent >= 100:
        problems.add("headroom.reserve", f"must be below 100% (got {h.reserve}: keeping all capacity free "
                                         "would hold the pool at its max)")
    for name in ("cpu_threshold", "memory_threshold"):
        if h.scale_down_utilization >= getattr(h, name):
            problems.add("headroom.scale_down_utilization",
                         f"must be below headroom.{name} (got {h.scale_down_utilization:g} >= "
                         f"{getattr(h, name):g}): a host counted idle would be busy enough to add one")
    # host agents publish every 10 s (render.AGENT_INTERVAL): a shorter lease lapses between
    # two publishes and a live host would read as silent
    if h.load_ttl < 20:
        problems.add("headroom.load_ttl", f"must be at least 20s, twice the agents' 10 s publish interval "
                                          f"(got {h.load_ttl:g}s)")
    for i, pool in enumerate(spec.pools):
        if pool.name == h.pool and pool.min == 0 and h.reserve.count:
            problems.add(f"pools[{i}].min", f"0 cannot be reached while headroom.reserve keeps {h.reserve.count} "
                                            "free slot(s); use reserve: 0 or a percentage like \"20%\"")


def burst_rules(spec: Spec, problems: Problems) -> None:
    """Cloud bursting: a pool's own provider is for worker pools; `headroom.burst_pool` names a
    worker pool with one, other than `headroom.pool`, which starts empty (headroom fills it)."""
    burst_network_rules(spec, problems)
    for i, pool in enumerate(spec.pools):
        if "provision.io/provider" in pool.labels:  # picks which kube-proxy runs on a node: provision's own
            problems.add(f"pools[{i}].labels", "provision.io/provider is set by provision on the nodes of a pool "
                                               "with a provider of its own; give it `provider:` instead")
        if pool.provider is None:
            continue
        if pool.role != "worker":
            problems.add(f"pools[{i}].provider", f"only worker pools may have a provider of their own "
                                                 f"({pool.name!r} is a {pool.role} pool)")
        if pool.provider.name != "local" and not spec.ssh.authorized_keys:
            problems.add("ssh.authorized_keys", f"at least one public key is required with provider "
                                                f"{pool.provider.name} (pool {pool.name})")
    burst = spec.headroom.burst_pool if spec.headroom is not None else None
    if burst is None:
        return
    target = next((p for p in spec.pools if p.name == burst), None)
    if target is None:
        problems.add("headroom.burst_pool", f"names no pool {burst!r}")
    elif spec.headroom is not None and burst == spec.headroom.pool:
        problems.add("headroom.burst_pool", f"must differ from headroom.pool ({burst!r} is both)")
    elif target.role != "worker":
        problems.add("headroom.burst_pool", f"must name a worker pool ({burst!r} is a {target.role} pool)")
    elif target.provider is None:
        problems.add("headroom.burst_pool", f"pool {burst!r} has no provider of its own: give it `provider:` "
                                            f"(e.g. {{name: aws, region: ...}}) to burst into another cloud")
    elif target.min_count != 0:
        problems.add("headroom.burst_pool", f"pool {burst!r} must be able to empty (min 0, got {target.min_count}): "
                                            f"headroom fills it only at peaks")


def burst_network_rules(spec: Spec, problems: Problems) -> None:
    """`headroom.burst_networks`: IPv4 networks (the rules provision makes are IPv4), host bits
    zero, none twice."""
    seen: set[str] = set()
    for i, text in enumerate(spec.headroom.burst_networks if spec.headroom is not None else ()):
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as err:
            problems.add(f"headroom.burst_networks[{i}]", f"must be an IPv4 CIDR like 198.51.100.0/24 ({err})")
            continue
        if network.version != 4:
            problems.add(f"headroom.burst_networks[{i}]", f"must be an IPv4 CIDR (got {text!r}): the security "
                                                          f"groups and firewalls provision makes are IPv4")
        elif str(network) in seen:
            problems.add(f"headroom.burst_networks[{i}]", f"{text!r} is listed twice")
        seen.add(str(network))


# Why flannel's host-gw cannot work on a provider's network: host-gw routes pod addresses
# unencapsulated via the other node's address, so every node must be on one L2 segment and the
# network must carry packets for addresses that are not the host's own. OpenStack does with
# the allowed address pairs provision sets; local and Vagrant hosts share one bridge.
HOST_GW_UNROUTABLE = {
    "aws": "EC2 drops packets for addresses not the instance's own (source/destination check) and a "
           "VPC routes between subnets and zones itself, so pod packets between hosts are lost",
    "libcloud": "the cloud's network filters addresses that are not the host's own, and libcloud has no "
                "call to turn that off or add routes for the pod network",
}


def flannel_backend_rules(spec: Spec, problems: Problems) -> None:
    """flannel's host-gw only where the hosts share an L2 segment that carries pod addresses:
    not on AWS or libcloud clouds, and never across clouds (a pool with a provider of its own)."""
    if spec.network.flannel.backend != "host-gw":
        return
    why = HOST_GW_UNROUTABLE.get(spec.provider.name)
    if why is not None:
        problems.add("network.flannel.backend", f"host-gw cannot work with provider {spec.provider.name}: {why}; "
                                                f"use vxlan")
    for i, pool in enumerate(spec.pools):
        if pool.provider is not None:
            problems.add("network.flannel.backend", f"host-gw cannot work with pools[{i}].provider "
                                                    f"{pool.provider.name} (pool {pool.name}): its hosts share no L2 "
                                                    f"segment with the {spec.provider.name} hosts; use vxlan")
