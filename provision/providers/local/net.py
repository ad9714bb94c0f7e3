"""Network plumbing of the local provider: a bridge, and per host a network namespace joined to
it by a veth pair. Everything is named so that `down` finds it again after a crash:
namespaces `provision.<cluster>.<host>` (cluster names cannot hold dots), the host ends of veth
pairs carry the alias `provision:<cluster>:<host>`.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess

from ...errors import ActionError

NETNS_PREFIX = "provision."
ALIAS_PREFIX = "provision:"
INNER_IFACE = "eth0"


def ip(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ActionError(f"local: `{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip_json(*args: str, netns: str | None = None) -> list:
    proc = ip("-j", *args, check=False, netns=netns)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def netns_name(cluster: str, host: str) -> str:
    return f"{NETNS_PREFIX}{cluster}.{host}"


def cluster_netns(cluster: str) -> dict[str, str]:
    """{host name: namespace} for every namespace of the cluster, found by name."""
    prefix = f"{NETNS_PREFIX}{cluster}."
    out = {}
    for entry in ip_json("netns", "list"):
        name = entry.get("name", "")
        if name.startswith(prefix):
            out[name[len(prefix):]] = name
    return out


def netns_pids(ns: str) -> list[int]:
    proc = ip("netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def veth_names(cluster: str, host: str) -> tuple[str, str]:
    """Host-side and (temporary) namespace-side names, within the 15-character limit."""
    digest = hashlib.sha1(f"{cluster}/{host}".encode()).hexdigest()[:10]
    return f"pvh{digest}", f"pvn{digest}"


def link_alias(cluster: str, host: str) -> str:
    return f"{ALIAS_PREFIX}{cluster}:{host}"


def links_by_alias(cluster: str) -> dict[str, str]:
    """{link name: host} of root-namespace links carrying this cluster's alias."""
    prefix = f"{ALIAS_PREFIX}{cluster}:"
    return {link["ifname"]: link["ifalias"][len(prefix):] for link in ip_json("link", "show")
            if str(link.get("ifalias", "")).startswith(prefix)}


def link_exists(name: str, netns: str | None = None) -> bool:
    return ip("link", "show", name, check=False, netns=netns).returncode == 0


def gateway(subnet: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    net = ipaddress.ip_network(subnet)
    return ipaddress.ip_interface(f"{next(net.hosts())}/{net.prefixlen}")


def subnet_users(subnet: str, except_link: str) -> list[str]:
    """`link address` of root-namespace interfaces other than `except_link` inside `subnet`."""
    net = ipaddress.ip_network(subnet)
    out = []
    for link in ip_json("addr", "show"):
        if link.get("ifname") == except_link:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False).overlaps(net):
                out.append(f"{link.get('ifname')} {a['local']}/{a['prefixlen']}")
    return out


def ensure_bridge(name: str, subnet: str, cluster: str) -> None:
    clash = subnet_users(subnet, name)
    if clash:
        raise ActionError(f"provider.subnet {subnet} is already used on this machine ({', '.join(clash)}); "
                          "choose another subnet (another cluster or network owns it)")
    gw = gateway(subnet)
    if not link_exists(name):
        ip("link", "add", name, "type", "bridge")
        ip("link", "set", name, "alias", f"{ALIAS_PREFIX}{cluster}:bridge")
    addrs = [a["local"] for link in ip_json("addr", "show", "dev", name) for a in link.get("addr_info", [])]
    if str(gw.ip) not in addrs:
        ip("addr", "add", str(gw), "dev", name)
    ip("link", "set", name, "up")


def delete_link(name: str) -> None:
    if link_exists(name):
        ip("link", "del", name, check=False)


def ensure_host_network(cluster: str, host: str, address: str, subnet: str, bridge: str) -> str:
    """The host's namespace, wired to the bridge with `address`; repairs a half-made one."""
    ns = netns_name(cluster, host)
    outer, inner = veth_names(cluster, host)
    prefix = ipaddress.ip_network(subnet).prefixlen
    if ns in cluster_netns(cluster).values() and _wired(ns, address, outer):
        ip("link", "set", outer, "master", bridge, "up")
        return ns
    delete_namespace(ns)
    delete_link(outer)
    ip("netns", "add", ns)
    ip("link", "add", outer, "type", "veth", "peer", "name", inner)
    ip("link", "set", outer, "alias", link_alias(cluster, host))
    ip("link", "set", outer, "master", bridge, "up")
    ip("link", "set", inner, "netns", ns)
    ip("link", "set", inner, "name", INNER_IFACE, netns=ns)
    ip("addr", "add", f"{address}/{prefix}", "dev", INNER_IFACE, netns=ns)
    ip("link", "set", INNER_IFACE, "up", netns=ns)
    ip("link", "set", "lo", "up", netns=ns)
    ip("route", "add", "default", "via", str(gateway(subnet).ip), netns=ns)
    return ns


def _wired(ns: str, address: str, outer: str) -> bool:
    if not link_exists(outer):
        return False
    addrs = [a["local"] for link in ip_json("addr", "show", "dev", INNER_IFACE, netns=ns)
             for a in link.get("addr_info", [])]
    return address in addrs


def delete_namespace(ns: str) -> None:
    if any(e.get("name") == ns for e in ip_json("netns", "list")):
        ip("netns", "del", ns, check=False)


def set_link(cluster: str, host: str, up: bool) -> None:
    """Cut (or restore) a host's link to the bridge: the partition a pulled cable makes."""
    outer, _ = veth_names(cluster, host)
    ip("link", "set", outer, "up" if up else "down")
