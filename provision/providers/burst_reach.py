"""What a pool of another provider (cloud bursting, `pools[].provider`) must reach, and whether
the firewall rules provision makes let it: pure, from the spec (and the addresses state records).

A burst pool's hosts must reach the cluster's API endpoint (6443), the client port (2379) of
every etcd member (flannel, fleet and the host agent read etcd) and flannel's overlay between
them and the cluster's hosts; the masters must reach their kubelets (10250); provision must
reach them over SSH. Each need gets a status:

- `open`: the rules provision makes for the spec admit it from anywhere (and the target has an
  address outside its network);
- `blocked`: a rule provision makes admits it only from hosts the burst pool's are never among
  (a security group's own members, a tag), or the overlay cannot cross clouds at all; the
  field that decides is named;
- `not checked`: it depends on what this function cannot see (the burst hosts' addresses, a
  VPN, where provision runs, a cloud whose firewall provision does not manage); what must hold
  is said instead of a claim of reach.

The rules are read from the providers' own rule functions (`aws_network.wanted_permissions`,
`openstack_network.wanted_rules`, `libcloud_digitalocean.firewall_rules`), so they cannot drift.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from ..spec import PoolSpec, Spec
from ..spec.model import ProviderSpec

OPEN, BLOCKED, NOT_CHECKED = "open", "blocked", "not checked"
_RANK = {OPEN: 0, NOT_CHECKED: 1, BLOCKED: 2}
EVERYWHERE = "0.0.0.0/0"
OVERLAY_PORTS = {"vxlan": ("udp", 8472), "udp": ("udp", 8285)}


@dataclass(frozen=True)
class Verdict:
    status: str
    why: str
    field: str | None = None  # the spec field the rule comes from, when the spec has one


@dataclass(frozen=True)
class Reach:
    need: str  # api | etcd | overlay | kubelet | ssh
    what: str  # what must reach what
    status: str
    why: str
    field: str | None

    def line(self) -> str:
        return f"{self.what}: {self.status} ({self.why})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def burst_networks(spec: Spec) -> tuple[str, ...]:
    """`headroom.burst_networks`, each in canonical form: what every firewall provision makes
    admits on the ports a burst needs (BURST_PORTS, the overlay's by backend)."""
    import ipaddress
    return tuple(str(ipaddress.ip_network(c)) for c in (spec.headroom.burst_networks if spec.headroom else ()))


def worst(*verdicts: Verdict) -> Verdict:
    return max(verdicts, key=lambda v: _RANK[v.status])


# ---- the firewall of a provider, as its rule functions make it --------------------------------

def inbound(spec: Spec, provider: ProviderSpec, proto: str, port: int, source: ProviderSpec | None,
            cidr_field: str | None = None) -> Verdict:
    """Whether the rules `provider` makes for the cluster admit `proto`/`port` from a host of
    `source` (another provider: a burst pool's; None: where provision runs)."""
    name = provider.name
    if name == "aws":
        return _aws(spec, provider, proto, port, source, cidr_field)
    if name == "openstack":
        return _openstack(spec, proto, port)
    if name == "libcloud" and provider.options.driver == "digitalocean":
        return _digitalocean(spec, proto, port, source)
    if name in ("local", "vagrant"):
        return Verdict(OPEN, f"no firewall of provision's on {name}'s hosts")
    return Verdict(NOT_CHECKED, f"provision manages no firewall of libcloud driver {provider.options.driver}: "
                                f"the cloud's own rules decide")


def _aws(spec: Spec, provider: ProviderSpec, proto: str, port: int, source: ProviderSpec | None,
         cidr_field: str | None) -> Verdict:
    from .aws_network import wanted_permissions
    kind = {6443: "masters", 2379: "etcd"}.get(port, "nodes")
    burst = burst_networks(spec)
    perms = [p for p in wanted_permissions(kind, {k: k for k in ("nodes", "masters", "etcd")}, provider.options,
                                           burst, OVERLAY_PORTS.get(spec.network.flannel.backend))
             if p["IpProtocol"] == proto and p["FromPort"] <= port <= p["ToPort"]]
    vpc = provider.options.vpc_cidr
    cidrs = [r["CidrIp"] for p in perms for r in p.get("IpRanges", []) if r["CidrIp"] != vpc]
    groups = sorted({g["GroupId"] for p in perms for g in p.get("UserIdGroupPairs", [])})
    group = f"provision-{spec.name}" + ("" if kind == "nodes" else f"-{kind}") + f" ({provider.options.region})"
    if EVERYWHERE in cidrs:
        return Verdict(OPEN, f"security group {group} admits {proto} {port} from {EVERYWHERE}", cidr_field)
    if source is not None and burst and set(burst) <= set(cidrs):
        return _from_burst_networks(f"security group {group}", proto, port, burst)
    if cidrs:
        return Verdict(NOT_CHECKED, f"security group {group} admits {proto} {port} only from {', '.join(cidrs)} "
                                    f"({cidr_field}): the hosts' addresses must be inside", cidr_field)
    from_vpc = ["the VPC"] if any(r["CidrIp"] == vpc for p in perms for r in p.get("IpRanges", [])) else []
    sources = ", ".join(from_vpc + [f"group provision-{spec.name}" + ("" if g == "nodes" else f"-{g}") for g in groups])
    return Verdict(BLOCKED, f"missing rule: security group {group} admits {proto} {port} only from "
                            f"{sources or 'nowhere'}; {SET_FIELD}", BURST_FIELD)


def _openstack(spec: Spec, proto: str, port: int) -> Verdict:
    from .openstack_network import wanted_rules
    group = f"provision-{spec.name}"
    burst = burst_networks(spec)
    rules = [r for r in wanted_rules(spec.network.flannel.backend, spec.network.pod_cidr, burst)
             if r["protocol"] == proto and r["port_range_min"] is not None
             and r["port_range_min"] <= port <= r["port_range_max"]]
    if any(r.get("remote_ip_prefix") == EVERYWHERE for r in rules):
        return Verdict(OPEN, f"security group {group} admits {proto} {port} from {EVERYWHERE}")
    if burst and set(burst) <= {r.get("remote_ip_prefix") for r in rules}:
        return _from_burst_networks(f"security group {group}", proto, port, burst)
    return Verdict(BLOCKED, f"missing rule: security group {group} admits {proto} {port} only from its own "
                            f"members; {SET_FIELD}", BURST_FIELD)


def _digitalocean(spec: Spec, proto: str, port: int, source: ProviderSpec | None) -> Verdict:
    from .libcloud_digitalocean import ANYWHERE, cluster_tag, firewall_name, firewall_rules

    def covers(ports: str) -> bool:
        low, _, high = ports.partition("-")
        return int(low) <= port <= int(high or low)
    burst = burst_networks(spec)
    rules = [r for r in firewall_rules(spec.name, spec.network.flannel.backend, burst)["inbound_rules"]
             if r["protocol"] == proto and covers(str(r.get("ports", "0")))]
    firewall = firewall_name(spec.name)
    if any(r["sources"] == ANYWHERE for r in rules):
        return Verdict(OPEN, f"firewall {firewall} admits {proto} {port} from anywhere")
    if source is not None and burst and any(r["sources"].get("addresses") == list(burst) for r in rules):
        return _from_burst_networks(f"firewall {firewall}", proto, port, burst)
    tagged = source is not None and source.name == "libcloud" and source.options.driver == "digitalocean"
    if rules and tagged:
        return Verdict(OPEN, f"firewall {firewall} admits {proto} {port} from droplets tagged {cluster_tag(spec.name)}, "
                             f"as the pool's are")
    return Verdict(BLOCKED, f"missing rule: firewall {firewall} admits {proto} {port} only from droplets tagged "
                            f"{cluster_tag(spec.name)}; {SET_FIELD}", BURST_FIELD)


BURST_FIELD = "headroom.burst_networks"
SET_FIELD = (f"set {BURST_FIELD} to the networks the other cloud's hosts come from (as this firewall sees them) "
             f"to admit them")


def _from_burst_networks(what: str, proto: str, port: int, burst: Sequence[str]) -> Verdict:
    return Verdict(OPEN, f"{what} admits {proto} {port} from {', '.join(burst)} ({BURST_FIELD}): the other "
                         f"cloud's hosts must come from these", BURST_FIELD)


# ---- whether a provider's hosts have an address outside its network ---------------------------

def outside_address(provider: ProviderSpec, field: str, what: str) -> Verdict:
    """Whether hosts of `provider` can be reached from outside their network at all."""
    options = provider.options
    if provider.name in ("local", "vagrant"):
        return Verdict(NOT_CHECKED, f"{what} live on a network of the machine provision runs on "
                                    f"({provider.subnet}): another cloud reaches it only through a VPN or tunnel "
                                    f"you provide")
    if provider.name == "openstack" and options.external_network is None:
        return Verdict(NOT_CHECKED, f"{field}.external_network is null: {what} have no public address, and only "
                                    f"a VPN or routing you provide reaches their fixed addresses",
                       f"{field}.external_network")
    if provider.name == "openstack" and not options.floating_ips:
        return Verdict(NOT_CHECKED, f"{field}.floating_ips is false: {what} have no public address, and only "
                                    f"a VPN or routing you provide reaches their fixed addresses", f"{field}.floating_ips")
    return Verdict(OPEN, f"{what} have public addresses")


# ---- the needs of one pool --------------------------------------------------------------------

def pool_reach(spec: Spec, index: int, pool: PoolSpec, api: str, etcd: Sequence[str]) -> list[Reach]:
    """What pool `index` (with a provider of its own) must reach, each with its verdict. `api`
    is the endpoint its hosts are configured with, `etcd` the members' client URLs (or words)."""
    assert pool.provider is not None
    primary, own, field = spec.provider, pool.provider, f"pools[{index}].provider"
    cluster = outside_address(primary, "provider", "the cluster's hosts")
    out: list[Reach] = []

    def add(need: str, what: str, verdict: Verdict, blocked_field: str) -> None:
        named = verdict.field or (blocked_field if verdict.status == BLOCKED else None)
        out.append(Reach(need, what, verdict.status, verdict.why, named))

    api_rule = inbound(spec, primary, "tcp", 6443, own, "provider.api_cidrs")
    add("api", f"its hosts reach the cluster's API endpoint ({api})", worst(api_rule, cluster), field)
    add("etcd", f"its hosts reach etcd's client port 2379 on every member ({', '.join(etcd)})",
        worst(inbound(spec, primary, "tcp", 2379, own), cluster), field)
    backend = spec.network.flannel.backend
    if backend in OVERLAY_PORTS:
        proto, port = OVERLAY_PORTS[backend]
        overlay = worst(inbound(spec, primary, proto, port, own), inbound(spec, own, proto, port, primary),
                        cluster, outside_address(own, field, f"pool {pool.name}'s hosts"))
        add("overlay", f"flannel's {backend} overlay ({proto} {port}) between its hosts and the {primary.name} hosts",
            overlay, field)
    else:
        add("overlay", f"flannel's {backend} overlay between its hosts and the {primary.name} hosts",
            Verdict(BLOCKED, f"{backend} routes pod packets unencapsulated between hosts of one network: hosts of "
                             f"another cloud cannot take part; use vxlan", "network.flannel.backend"), field)
    kubelet = worst(inbound(spec, own, "tcp", 10250, primary), outside_address(own, field, "its hosts"))
    add("kubelet", "the masters reach its kubelets' port 10250 (logs, exec, port-forward)", kubelet, field)
    ssh_field = f"{field}.ssh_cidrs" if hasattr(own.options, "ssh_cidrs") else None
    ssh = inbound(spec, own, "tcp", 22, None, ssh_field)
    if own.name in ("local", "vagrant"):
        ssh = Verdict(OPEN, f"{own.name}'s hosts are on this machine")
    elif own.name == "openstack":
        ssh = worst(ssh, outside_address(own, field, "its hosts"))
    add("ssh", f"provision reaches its hosts over SSH (port 22, user {spec.ssh.user}) from where it runs", ssh, field)
    return out


def burst_network_warnings(spec: Spec) -> list[str]:
    """What `validate` says of a `headroom.burst_networks` wider than a user may mean."""
    if EVERYWHERE not in burst_networks(spec):
        return []
    return [f"{BURST_FIELD} has {EVERYWHERE}: etcd's client port 2379 (and 6443, 10250 and the overlay port) is open "
            f"to the internet on every firewall provision makes; etcd still demands a client certificate of its "
            f"CA (mTLS) and its auth roles, but narrow it to the other cloud's networks when you can"]


def blocked_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """`FIELD: message` for every blocked need of `pool_providers_needs` entries."""
    return [f"{r['field']}: pool {e['pool']} on {e['provider']}: {r['what']}: {r['why']}"
            for e in entries for r in e.get("reach", ()) if r["status"] == BLOCKED]


def refuse_blocked(entries: Sequence[Mapping[str, Any]]) -> None:
    """A blocked need is a UserError (exit 2) naming its field, before anything is asked or made."""
    from ..errors import UserError
    blocked = blocked_lines(entries)
    if blocked:
        raise UserError(blocked)
