"""Phase `hosts`: where the cloud assigns every address itself, each host resolves every cluster
host name to its private address through /etc/hosts (role `hosts`).

Configs are rendered before the machines exist; on a provider that cannot give a host a
planned address (`Provider.plans_addresses` is False, e.g. DigitalOcean) they name etcd
members and the first master by host name, and nothing else resolves those names. This phase
runs right after `wait` (the addresses are known and every host answers SSH) and before
`etcd`. On every other provider it does nothing. A re-run with the same addresses changes
nothing; after a scale, every host's block lists the hosts state has then.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import bootstrap
from ..errors import UserError
from ..providers import provider_class
from . import RunContext


def needs_hosts_file(provider_name: str) -> bool:
    """Whether hosts of this provider learn cluster host names from /etc/hosts."""
    return not provider_class(provider_name).plans_addresses


def host_entries(hosts: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(address, name) for each host of state: its private address (the cluster talks over the
    private network), its recorded address when the cloud reported no private one."""
    return [(host.get("private_address") or host["address"], name) for name, host in sorted(hosts.items())]


def run(ctx: RunContext) -> dict:
    if not needs_hosts_file(ctx.spec.provider.name):
        ctx.log("hosts", f"{ctx.spec.provider.name} gives hosts their planned addresses: nothing to write")
        return {"needed": False}
    hosts = bootstrap.cluster_hosts(ctx.state)
    entries = host_entries(hosts)
    for name, host in hosts.items():
        if not host.get("private_address"):
            ctx.ui.warn(f"hosts: {name} has no private address; its names map to {host['address']}")
    problems = bootstrap.load_role("hosts").check_entries(ctx.spec.name, entries)
    if problems:  # names come from the spec's `name` and `pools[].name`, addresses from the cloud
        raise UserError([f"hosts: {problem} (from the spec's name and pools[].name, or state)"
                         for problem in problems])
    if ctx.dry_run and hosts:
        ctx.log("hosts", f"would map {len(entries)} host names in /etc/hosts of {len(hosts)} hosts")
    result = bootstrap.apply_roles(ctx, "hosts", ("hosts",), hosts, data={"etc_hosts": entries})
    return {"needed": True, "entries": {name: address for address, name in entries}, **result}
