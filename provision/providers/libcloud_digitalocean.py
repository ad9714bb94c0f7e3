"""What the libcloud provider does on DigitalOcean beyond libcloud's common node API.

DigitalOcean tags are plain strings (letters, digits, `_`, `-`, `:`), so the cluster's tags are
`provision:cluster:<cluster>`, `provision:pool:<pool>` and `provision:role:<role>`. Droplets are
listed with the API's `tag_name` filter on the cluster tag: a droplet is this cluster's only
when it carries that tag, whatever its name.

libcloud has no API for cloud firewalls and no tag filter on `list_nodes`, so those calls go
through the driver's own authenticated connection (`driver.connection.request`) to the API v2
paths (`/v2/droplets?tag_name=`, `/v2/firewalls`). SSH keys use libcloud's key-pair calls.

A key provision created is named `provision-<cluster>-<8 hex of its fingerprint>` (keys have no
tags on DigitalOcean; the name is the mark). A key found already in the account by fingerprint
is used but never removed. The firewall is named `provision-<cluster>` and applies to the
cluster tag; it is changed through the add and remove rules calls
(`POST`/`DELETE /v2/firewalls/{id}/rules`) for the difference only, so rules added by hand stay.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..errors import UserError

if TYPE_CHECKING:
    from libcloud.compute.base import Node
    from libcloud.compute.drivers.digitalocean import DigitalOcean_v2_NodeDriver

ANYWHERE = {"addresses": ["0.0.0.0/0", "::/0"]}
FLANNEL_PORTS = {"vxlan": ("udp", "8472"), "udp": ("udp", "8285")}


def cluster_tag(cluster: str) -> str:
    return f"provision:cluster:{cluster}"


def droplet_tags(cluster: str, pool: str, role: str) -> list[str]:
    return [cluster_tag(cluster), f"provision:pool:{pool}", f"provision:role:{role}"]


def tags_as_mapping(tags: Sequence[str]) -> dict[str, str]:
    """`["provision:cluster:edge", ...]` as `{"provision:cluster": "edge", ...}` (other tags kept
    under their own name with an empty value)."""
    out: dict[str, str] = {}
    for tag in tags:
        key, sep, value = str(tag).rpartition(":")
        if sep and key.startswith("provision:"):
            out[key] = value
        else:
            out[str(tag)] = ""
    return out


def key_fingerprint(public_key: str) -> str:
    """The fingerprint DigitalOcean shows for an OpenSSH public key: MD5 of the key blob."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        raise UserError("ssh.authorized_keys: an entry is not an OpenSSH public key ('type base64 [comment]')") from None
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - DigitalOcean's fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def key_name(cluster: str, fingerprint: str) -> str:
    return f"provision-{cluster}-{fingerprint.replace(':', '')[:8]}"


def is_our_key_name(cluster: str, name: str) -> bool:
    return re.fullmatch(rf"provision-{re.escape(cluster)}-[0-9a-f]{{8}}", name or "") is not None


def firewall_name(cluster: str) -> str:
    return f"provision-{cluster}"


def firewall_rules(cluster: str, flannel_backend: str, burst: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """Inbound: SSH and the Kubernetes API from anywhere; etcd, kubelet, the flannel overlay and
    ICMP only from droplets with the cluster tag. Outbound: everything (hosts download binaries,
    images and reach the API). A firewall with no outbound rule would block all egress."""
    members = {"tags": [cluster_tag(cluster)]}
    inbound = [
        {"protocol": "tcp", "ports": "22", "sources": ANYWHERE},
        {"protocol": "tcp", "ports": "6443", "sources": ANYWHERE},
        {"protocol": "tcp", "ports": "2379-2380", "sources": members},
        {"protocol": "tcp", "ports": "10250", "sources": members},
        {"protocol": "icmp", "sources": members},
    ]
    if flannel_backend in FLANNEL_PORTS:
        protocol, ports = FLANNEL_PORTS[flannel_backend]
        inbound.append({"protocol": protocol, "ports": ports, "sources": members})
    if burst:  # headroom.burst_networks: hosts on the other side of a burst, on the ports it needs
        across = [("tcp", "2379"), ("tcp", "6443"), ("tcp", "10250")] + (
            [FLANNEL_PORTS[flannel_backend]] if flannel_backend in FLANNEL_PORTS else [])
        inbound += [{"protocol": protocol, "ports": ports, "sources": {"addresses": list(burst)}}
                    for protocol, ports in across]
    everywhere = {"addresses": ["0.0.0.0/0", "::/0"]}
    outbound = [{"protocol": "tcp", "ports": "all", "destinations": everywhere},
                {"protocol": "udp", "ports": "all", "destinations": everywhere},
                {"protocol": "icmp", "destinations": everywhere}]
    return {"inbound_rules": inbound, "outbound_rules": outbound}


def paginated(driver: DigitalOcean_v2_NodeDriver, path: str, key: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every item of a listing, following `links.pages.next` page by page."""
    page = 1
    while True:
        answer = driver.connection.request(path, params={**(params or {}), "page": page}).object
        yield from answer.get(key) or []
        if not ((answer.get("links") or {}).get("pages") or {}).get("next"):
            return
        page += 1


def list_tagged_droplets(driver: DigitalOcean_v2_NodeDriver, cluster: str) -> list[Node]:
    """The droplets carrying the cluster tag, as libcloud nodes (checked again on our side)."""
    tag = cluster_tag(cluster)
    return [driver._to_node(d) for d in paginated(driver, "/v2/droplets", "droplets", {"tag_name": tag})
            if tag in (d.get("tags") or [])]


def ensure_keys(driver: DigitalOcean_v2_NodeDriver, cluster: str, public_keys: Sequence[str], log) -> list[int]:
    """The account key id of each authorized key: found by fingerprint, or created and named
    for the cluster."""
    existing = {k.fingerprint: k for k in driver.list_key_pairs()}
    ids = []
    for public_key in public_keys:
        fingerprint = key_fingerprint(public_key)
        key = existing.get(fingerprint)
        if key is None:
            log(f"adding SSH key {key_name(cluster, fingerprint)} ({fingerprint}) to the account")
            key = driver.create_key_pair(key_name(cluster, fingerprint), public_key.strip())
            existing[fingerprint] = key
        ids.append(int(key.extra["id"]))
    return ids


def remove_keys(driver: DigitalOcean_v2_NodeDriver, cluster: str, log) -> None:
    """Delete the keys this cluster created (by their name), and no other."""
    for key in driver.list_key_pairs():
        if is_our_key_name(cluster, key.name):
            log(f"removing SSH key {key.name}")
            driver.delete_key_pair(key)


def find_firewall(driver: DigitalOcean_v2_NodeDriver, cluster: str) -> dict[str, Any] | None:
    name = firewall_name(cluster)
    return next((f for f in paginated(driver, "/v2/firewalls", "firewalls")
                 if f.get("name") == name and cluster_tag(cluster) in (f.get("tags") or [])), None)


def rule_key(rule: dict[str, Any], where: str) -> tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """A rule as DigitalOcean compares them: protocol, ports ("all" for a tcp/udp rule without
    ports or with "0", none for icmp) and its non-empty sources (or destinations), sorted."""
    protocol = str(rule.get("protocol"))
    ports = "" if protocol == "icmp" else str(rule.get("ports") or "all")
    ports = "all" if ports == "0" else ports
    target = rule.get(where) or {}
    return protocol, ports, tuple(sorted((k, tuple(sorted(str(v) for v in vs))) for k, vs in target.items() if vs))


BURST_TCP_PORTS = ("2379", "6443", "10250")


def earlier_burst_rules(inbound: Sequence[dict[str, Any]]) -> set[tuple]:
    """The keys (rule_key) of the rules in `inbound` that an earlier headroom.burst_networks
    made: for an address list that has provision's whole burst set (tcp 2379, 6443 and 10250
    from exactly those addresses), those and the overlay port of either backend from them. A
    hand-made rule on one of those ports alone is never taken for one of provision's."""
    keys = {rule_key(r, "sources") for r in inbound}
    lists = {tuple(r["sources"]["addresses"]) for r in inbound
             if (r.get("sources") or {}).get("addresses") and r["sources"]["addresses"] != ANYWHERE["addresses"]}
    ours: set[tuple] = set()
    for addresses in lists:
        def key(protocol: str, ports: str) -> tuple:
            return rule_key({"protocol": protocol, "ports": ports, "sources": {"addresses": list(addresses)}}, "sources")
        if all(key("tcp", port) in keys for port in BURST_TCP_PORTS):
            ours |= {key("tcp", port) for port in BURST_TCP_PORTS}
            ours |= {key(protocol, port) for protocol, port in FLANNEL_PORTS.values()} & keys
    return ours


def ensure_firewall(driver: DigitalOcean_v2_NodeDriver, cluster: str, flannel_backend: str, log,
                    burst: Sequence[str] = ()) -> dict[str, Any]:
    """The cluster's firewall, made, or brought to the rules provision wants through the API's
    add and remove rules calls for the difference only: rules someone added by hand stay (a PUT
    of the whole rule set would drop them). Provision's rules are those `firewall_rules` makes;
    of an earlier headroom.burst_networks, only a whole burst rule set counts as provision's."""
    found = find_firewall(driver, cluster)
    rules = firewall_rules(cluster, flannel_backend, burst)
    if found is None:
        log(f"creating cloud firewall {firewall_name(cluster)} on tag {cluster_tag(cluster)}")
        body = {"name": firewall_name(cluster), "tags": [cluster_tag(cluster)], **rules}
        return driver.connection.request("/v2/firewalls", method="POST", data=json.dumps(body)).object["firewall"]
    add: dict[str, list[dict[str, Any]]] = {}
    remove: dict[str, list[dict[str, Any]]] = {}
    for direction, where in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
        have = [dict(r) for r in found.get(direction) or []]
        wanted = {rule_key(r, where) for r in rules[direction]}
        have_keys = {rule_key(r, where) for r in have}
        missing = [r for r in rules[direction] if rule_key(r, where) not in have_keys]
        stale: list[dict[str, Any]] = []
        if direction == "inbound_rules":
            earlier = earlier_burst_rules(have) - wanted
            stale = [r for r in have if rule_key(r, where) in earlier]
        if missing:
            add[direction] = missing
        if stale:
            remove[direction] = stale
    if not add and not remove:
        return found
    path = f"/v2/firewalls/{found['id']}/rules"
    log(f"updating cloud firewall {firewall_name(cluster)}: {sum(map(len, add.values()))} rules added, "
        f"{sum(map(len, remove.values()))} removed to match the spec (headroom.burst_networks); "
        f"rules provision did not make are kept")
    # added first: never a moment admitting less than both the old and the new rule set
    if add:
        driver.connection.request(path, method="POST", data=json.dumps(add))
    if remove:
        driver.connection.request(path, method="DELETE", data=json.dumps(remove))
    return dict(driver.connection.request(f"/v2/firewalls/{found['id']}").object["firewall"])


def remove_firewall(driver: DigitalOcean_v2_NodeDriver, cluster: str, log) -> None:
    found = find_firewall(driver, cluster)
    if found is not None:
        log(f"removing cloud firewall {found['name']}")
        driver.connection.request(f"/v2/firewalls/{found['id']}", method="DELETE")

