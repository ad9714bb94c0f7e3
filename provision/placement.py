"""Failure domains: which zone each host lands in. Pure functions, no I/O.

On AWS the cluster's `provider.subnet_cidr` is cut into one subnet per zone slot (equal parts,
in order), and slot k lives in the k-th zone: `provider.zones` when given, else
`provider.availability_zone` alone, else the region's first DEFAULT_ZONE_SLOTS available zones
by name (a region with fewer zones reuses them in turn). etcd members are spread over the slots
first, then masters, each new host into the slot its group uses least, so losing one zone of
three loses at most one etcd member of three. Hosts with a fixed address stay in the slot whose
subnet holds it; other hosts (workers) take slot `index % slots`, so every pool spans the zones.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from .spec import Spec

DEFAULT_ZONE_SLOTS = 3
# The smallest per-zone subnet: AWS reserves five addresses of each, plan leaves the first ten.
MAX_ZONE_PREFIX = 26


def zone_slot_count(spec: Spec) -> int:
    """How many zone slots (subnets) the spec's provider spreads hosts over; 0 without zones."""
    if spec.provider.name != "aws":
        return 0
    options = spec.provider.options
    if options.zones:
        return len(options.zones)
    if options.availability_zone:
        return 1
    return DEFAULT_ZONE_SLOTS


def zone_subnets(spec: Spec) -> list[str]:
    """The CIDR of each zone slot's subnet, slot order (one slot keeps the whole subnet)."""
    slots = zone_slot_count(spec)
    if not slots:
        return []
    network = ipaddress.ip_network(str(spec.provider.subnet))  # aws: subnet_cidr always set
    if slots == 1:
        return [str(network)]
    bits = (slots - 1).bit_length()
    return [str(s) for s in network.subnets(prefixlen_diff=bits)][:slots]


def split_problem(spec: Spec) -> str | None:
    """Why provider.subnet_cidr cannot be cut into the zone slots' subnets, else None."""
    slots = zone_slot_count(spec)
    if slots <= 1:
        return None
    network = ipaddress.ip_network(str(spec.provider.subnet))  # aws: subnet_cidr always set
    prefix = network.prefixlen + (slots - 1).bit_length()
    if prefix > MAX_ZONE_PREFIX:
        return (f"{network} is too small for {slots} zones: each zone's subnet would be a /{prefix} "
                f"(at most /{MAX_ZONE_PREFIX}; use a /{MAX_ZONE_PREFIX - (slots - 1).bit_length()} or larger)")
    return None


def slot_of_address(subnets: Sequence[str], address: str | None) -> int | None:
    if not address:
        return None
    ip = ipaddress.ip_address(address)
    return next((k for k, s in enumerate(subnets) if ip in ipaddress.ip_network(s)), None)


def spread(slots: int, members: Sequence[str], placed: Mapping[str, int]) -> dict[str, int]:
    """Slots for `members` (in order): those already `placed` keep theirs; each other one takes
    the slot with fewest members so far (the lowest on a tie)."""
    counts = [0] * slots
    out: dict[str, int] = {}
    for name in members:
        if name in placed:
            out[name] = placed[name]
            counts[placed[name]] += 1
    for name in members:
        if name not in out:
            slot = min(range(slots), key=lambda k: (counts[k], k))
            out[name] = slot
            counts[slot] += 1
    return out


def control_plane_slots(slots: int, etcd_members: Sequence[str], masters: Sequence[str],
                        placed: Mapping[str, int]) -> dict[str, int]:
    """Slots of etcd members (spread first) and masters (spread next, counting the members
    that are masters too). `placed`: hosts whose slot is already fixed (their address)."""
    if slots <= 0:
        return {}
    out = spread(slots, etcd_members, placed)
    out.update(spread(slots, masters, {**placed, **{n: s for n, s in out.items() if n in masters}}))
    return out


def host_slot(spec: Spec, name: str, index: int, address: str | None) -> int:
    """The slot of a planned host: its address's subnet when it has one, else index % slots."""
    subnets = zone_subnets(spec)
    slot = slot_of_address(subnets, address)
    return slot if slot is not None else index % max(1, len(subnets))


def slot_zones(slots: int, zones: Iterable[str]) -> list[str]:
    """The zone name of each slot: zones in turn."""
    zones = list(zones)
    return [zones[k % len(zones)] for k in range(slots)] if zones else []
