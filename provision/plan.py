"""Planning: which hosts the spec wants, against what state records. Pure functions, no I/O.

Host names are `<cluster>-<pool>-<n>`. A pool keeps the hosts it has (lowest indices first)
and new hosts take the lowest free indices, so the same spec and state always give the same
names. Hosts that carry etcd, masters, and every host of the local and vagrant providers get a
fixed address from the provider subnet at plan time (on AWS from the subnet of the zone
`provision.placement` spreads them to): etcd's static `--initial-cluster`, the API
server certificate (which must carry every master's address, dedicated etcd hosts or not) and the
rendered configs (the node-local API proxy's backends) need it before any machine exists.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from . import placement
if TYPE_CHECKING:  # annotations only: the CLI's start-up imports this module
    from .spec import Spec

# The first addresses of a subnet are left to the gateway/bridge and the cloud's own services.
FIRST_HOST_OFFSET = 10
PROVIDERS_WITH_FIXED_ADDRESSES = ("local", "vagrant")


@dataclass(frozen=True)
class HostPlan:
    name: str
    pool: str
    role: str
    index: int
    etcd: bool = False
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    create: tuple[HostPlan, ...]
    keep: tuple[HostPlan, ...]
    destroy: tuple[str, ...]
    sizes: Mapping[str, int]

    @property
    def desired(self) -> tuple[HostPlan, ...]:
        return tuple(sorted(self.create + self.keep, key=host_order_key))

    @property
    def changes(self) -> bool:
        return bool(self.create or self.destroy)

    def to_json(self) -> dict[str, Any]:
        return {"create": [h.name for h in self.create], "keep": [h.name for h in self.keep],
                "destroy": list(self.destroy), "sizes": dict(self.sizes),
                "hosts": {h.name: h.to_json() for h in self.desired}}


def host_name(cluster: str, pool: str, index: int) -> str:
    return f"{cluster}-{pool}-{index}"


def host_order_key(host: HostPlan) -> tuple[int, str, int]:
    role_rank = {"master": 0, "etcd": 1, "worker": 2}.get(host.role, 3)
    return (role_rank, host.pool, host.index)


def pool_sizes(spec: Spec, state: Mapping[str, Any]) -> dict[str, int]:
    """Each pool's target size.

    The spec's `count` is the starting size. While headroom manages a pool, the size it
    recorded stands (clamped to min..max), so cron and a later `up` do not fight; a change of
    `count` in the spec (against the count recorded with that size) is an explicit resize.
    """
    recorded = state.get("pools", {})
    sizes = {}
    for pool in spec.pools:
        entry = recorded.get(pool.name) or {}
        size = pool.count
        if pool.role == "worker" and entry.get("size") is not None and entry.get("spec_count") == pool.count:
            size = max(pool.min_count, min(pool.max_count, int(entry["size"])))
        sizes[pool.name] = size
    return sizes


def plan(spec: Spec, state: Mapping[str, Any], sizes: Mapping[str, int] | None = None) -> Plan:
    """Hosts to create, keep and destroy so the cluster matches `spec` at `sizes`."""
    sizes = dict(sizes) if sizes is not None else pool_sizes(spec, state)
    recorded: Mapping[str, Mapping[str, Any]] = state.get("hosts", {})
    by_pool: dict[str, list[tuple[int, str]]] = {}
    for name, host in recorded.items():
        by_pool.setdefault(host.get("pool", ""), []).append((int(host.get("index", 0)), name))

    wanted: list[tuple[str, str, str, int, bool]] = []  # (name, pool, role, index, exists)
    destroy: list[str] = []
    for pool in spec.pools:
        existing = sorted(by_pool.pop(pool.name, []))
        target = sizes[pool.name]
        kept = [(i, n) for i, n in existing if recorded[n].get("role") == pool.role][:target]
        destroy.extend(n for i, n in existing if (i, n) not in kept)
        used = {i for i, _ in kept}
        new_indices: list[int] = []
        candidate = 0
        while len(kept) + len(new_indices) < target:
            if candidate not in used and host_name(spec.name, pool.name, candidate) not in recorded:
                new_indices.append(candidate)
            candidate += 1
        for i, n in kept:
            wanted.append((n, pool.name, pool.role, i, True))
        for i in new_indices:
            wanted.append((host_name(spec.name, pool.name, i), pool.name, pool.role, i, False))
    for leftovers in by_pool.values():
        destroy.extend(n for _, n in leftovers)

    etcd_names = etcd_members(spec, [(n, p, r, i) for n, p, r, i, _ in wanted])
    addresses = assign_addresses(spec, recorded, [(n, p, r, i) for n, p, r, i, _ in wanted], etcd_names)
    create: list[HostPlan] = []
    keep: list[HostPlan] = []
    for name, pool_name, role, index, exists in wanted:
        planned = HostPlan(name=name, pool=pool_name, role=role, index=index, etcd=name in etcd_names,
                           address=addresses.get(name))
        (keep if exists else create).append(planned)
    return Plan(create=tuple(sorted(create, key=host_order_key)), keep=tuple(sorted(keep, key=host_order_key)),
                destroy=tuple(sorted(destroy)), sizes=sizes)


def etcd_members(spec: Spec, hosts: Iterable[tuple[str, str, str, int]]) -> set[str]:
    """Names of the hosts that carry etcd: the first `etcd.count` carriers in pool order."""
    carrier_pools = [p.name for p in spec.etcd_pools]
    carriers = sorted((carrier_pools.index(pool), index, name) for name, pool, role, index in hosts
                      if pool in carrier_pools)
    return {name for _, _, name in carriers[: spec.etcd.count]}


def assign_addresses(spec: Spec, recorded: Mapping[str, Mapping[str, Any]],
                     hosts: list[tuple[str, str, str, int]], etcd_names: set[str]) -> dict[str, str]:
    """Fixed addresses: recorded ones stay; new ones take the lowest free address."""
    subnet = spec.provider.subnet
    if not subnet:
        return {}
    every_host = spec.provider.name in PROVIDERS_WITH_FIXED_ADDRESSES
    # A pool with a provider of its own (cloud bursting) gets its addresses there.
    own = {p.name for p in spec.pools if p.provider is not None}
    needing = [h for h in hosts if (every_host or h[0] in etcd_names or h[2] == "master") and h[1] not in own]
    taken = {h.get("address") for h in recorded.values() if h.get("address")}
    out: dict[str, str] = {}
    for name, *_ in needing:
        address = recorded.get(name, {}).get("address")
        if address:
            out[name] = address
    ordered = sorted(needing, key=lambda h: (h[0] not in etcd_names, h[1], h[3]))
    zone_subnets = placement.zone_subnets(spec)
    if len(zone_subnets) > 1:
        # one subnet per zone: each new master and etcd member takes an address in the subnet
        # of the zone the spread gives it
        placed = {n: s for n, a in out.items() if (s := placement.slot_of_address(zone_subnets, a)) is not None}
        slots = placement.control_plane_slots(
            len(zone_subnets), [h[0] for h in ordered if h[0] in etcd_names],
            [h[0] for h in ordered if h[2] == "master"], placed)
        pools = [_free_addresses(s, taken) for s in zone_subnets]
        for name, *_ in ordered:
            if name not in out:
                out[name] = next(pools[slots.get(name, 0)])
        return out
    free = _free_addresses(subnet, taken)
    for name, *_ in ordered:
        if name not in out:
            out[name] = next(free)
    return out


def _free_addresses(subnet: str, taken: set) -> Iterator[str]:
    free = (str(a) for a in ipaddress.ip_network(subnet).hosts())
    return (a for i, a in enumerate(free) if i + 1 >= FIRST_HOST_OFFSET and a not in taken)
