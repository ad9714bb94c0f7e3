"""Cloud bursting: the cluster's provider and each pool's own provider, picked by pool.

A worker pool may name a provider of its own (`pools[].provider`); its hosts are made, listed
and destroyed there, everything else (API endpoint, served configs, the network of the
cluster) stays with the cluster's provider. Each pool provider is the provider class of its
`name` built from the spec with that pool's `provider:` in place of the cluster's, so it tags
and finds hosts of the cluster as usual; what it lists counts only for the pools it owns (two
providers in one account must not claim each other's hosts).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..spec import Spec
from .base import HOST_KEYS, START_HOSTS, UNIT_STATES, HostRecord, Provider

if TYPE_CHECKING:
    from ..plan import HostPlan


class PoolProviders:
    """Every provider of a spec: `primary` (the cluster's) and one per pool with its own.
    Calls that are about hosts pick the provider by pool; anything else is the primary's."""

    def __init__(self, spec: Spec, workdir: Path | None = None, log: Callable[[str], None] | None = None,
                 primary: Provider | None = None, own: dict[str, Provider] | None = None,
                 preflight: bool = False):
        from . import get_provider
        self.spec = spec
        self.primary = primary or get_provider(spec, workdir, log=log, preflight=preflight)
        self.own: dict[str, Provider] = dict(own or {})
        from ..errors import UserError
        for i, pool in enumerate(spec.pools):
            if pool.provider is not None and pool.name not in self.own:
                try:
                    self.own[pool.name] = get_provider(pool_spec(spec, pool.name), workdir, log=log,
                                                       preflight=preflight)
                except UserError as err:  # the pool's provider, not the cluster's, is at fault
                    raise UserError([line.replace("provider.", f"pools[{i}].provider.", 1)
                                     if line.startswith("provider.") else line for line in err.lines]) from None

    def __getattr__(self, name: str) -> Any:  # API endpoint, served configs, limits: the cluster's provider
        return getattr(self.primary, name)

    @property
    def providers(self) -> list[Provider]:
        """Each distinct provider once, the cluster's first."""
        out = [self.primary]
        for provider in self.own.values():
            if all(provider is not p for p in out):
                out.append(provider)
        return out

    def for_pool(self, pool: str) -> Provider:
        return self.own.get(pool, self.primary)

    def owns(self, provider: Provider, record: HostRecord) -> bool:
        """Whether `record` listed by `provider` is one of that provider's pools."""
        if provider is self.primary:
            return record.pool not in self.own
        return self.own.get(record.pool) is provider

    def list_hosts(self) -> list[HostRecord]:
        records = [r for p in self.providers for r in p.list_hosts() if self.owns(p, r)]
        return sorted(records, key=lambda r: r.name)

    def wait_running(self, names: Sequence[str], timeout: float = 600.0) -> list[HostRecord]:
        out: list[HostRecord] = []
        for provider, group in self.group(names).items():
            out.extend(provider.wait_running(group, timeout))
        return out

    def group(self, names: Sequence[str]) -> dict[Provider, list[str]]:
        """`names` by the provider that holds them (listed there); unlisted names go to the pool
        their state record or name says, else the cluster's provider."""
        if not self.own:
            return {self.primary: list(names)} if names else {}
        wanted = set(names)
        out: dict[Provider, list[str]] = {}
        placed: set[str] = set()
        for provider in self.providers:
            for record in provider.list_hosts():
                if record.name in wanted and record.name not in placed and self.owns(provider, record):
                    out.setdefault(provider, []).append(record.name)
                    placed.add(record.name)
        for name in names:
            if name not in placed:
                out.setdefault(self.for_pool(pool_of_name(self.spec, name)), []).append(name)
        return out

    def destroy_hosts(self, names: Sequence[str]) -> None:
        for provider, group in self.group(names).items():
            provider.destroy_hosts(group)

    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        """Each pool's hosts made by its provider, one batch per provider; a pool's own provider
        is prepared first (the caller prepares the cluster's, as for a single provider)."""
        groups: list[tuple[Provider, list[HostPlan]]] = []
        for host in hosts:
            provider = self.for_pool(host.pool)
            group = next((g for p, g in groups if p is provider), None)
            if group is None:
                groups.append((provider, group := []))
            group.append(host)
        records: list[HostRecord] = []
        for provider, group in groups:
            if provider is not self.primary:
                provider.prepare()
            records.extend(provider.create_hosts(group, configs))
        return records

    def stop_agent(self, name: str) -> None:
        self.for_host(name).stop_agent(name)

    def restart_units(self, name: str, units: Sequence[str]) -> bool:
        return self.for_host(name).restart_units(name, units)

    # What the `wait` phase asks of a host goes to the provider of its pool; an ability (see
    # providers.base) is there when any provider has it, and is used only on the hosts of those.
    @property
    def optional_capabilities(self) -> frozenset[str]:
        return frozenset().union(*(p.optional_capabilities for p in self.providers))

    def for_host(self, name: str) -> Provider:
        return self.for_pool(pool_of_name(self.spec, name))

    def start_hosts(self, names: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for provider, group in self.group(names).items():
            if START_HOSTS in provider.optional_capabilities:
                out.update(provider.start_hosts(group))
        return out

    def host_public_key(self, name: str) -> str | None:
        provider = self.for_host(name)
        return provider.host_public_key(name) if HOST_KEYS in provider.optional_capabilities else None

    def unit_states(self, name: str) -> dict[str, dict[str, Any]]:
        provider = self.for_host(name)
        return provider.unit_states(name) if UNIT_STATES in provider.optional_capabilities else {}

    def forget_served_configs(self) -> int:
        """Each provider deletes the configs it served (a burst pool's live with its own cloud)."""
        return sum(provider.forget_served_configs() for provider in self.providers)

    def teardown(self) -> None:
        for provider in reversed(self.providers):
            provider.teardown()


def pool_spec(spec: Spec, pool: str) -> Spec:
    """The spec as the provider of `pool` sees it: the pool's own `provider:` in place of the
    cluster's (the spec itself when the pool has none)."""
    own = spec.pool(pool).provider
    return spec if own is None else spec.model_copy(update={"provider": own})


def pool_of_name(spec: Spec, host: str) -> str:
    """The pool a host name `<cluster>-<pool>-<n>` belongs to ('' when none matches)."""
    for pool in sorted(spec.pools, key=lambda p: -len(p.name)):
        prefix = f"{spec.name}-{pool.name}-"
        if host.startswith(prefix) and host[len(prefix):].isdigit():
            return pool.name
    return ""


def has_pool_providers(spec: Spec) -> bool:
    return any(p.provider is not None for p in spec.pools)


def providers_of(spec: Spec, workdir: Path | None = None,
                 log: Callable[[str], None] | None = None) -> Provider | PoolProviders:
    """What acts on a spec's hosts: the cluster's provider, or PoolProviders when a pool has a
    provider of its own (cloud bursting)."""
    if has_pool_providers(spec):
        return PoolProviders(spec, workdir, log=log)
    from . import get_provider
    return get_provider(spec, workdir, log=log)


def pool_providers_needs(spec: Spec, state: dict | None = None) -> list[dict]:
    """What each pool with a provider of its own needs to work (validate, plan and status say
    it): its hosts must reach the cluster, and provision must reach them; each need with what
    the rules provision makes say of it (`burst_reach`). Pure: from the spec (and the masters'
    and etcd members' recorded addresses when `state` has them)."""
    out = []
    hosts = (state or {}).get("hosts") or {}
    # the endpoint a burst host's config names (render.pool_provider): a public load balancer,
    # else every master at its public address (its own address when it has none)
    endpoint = (state or {}).get("api_endpoint") or {}
    masters = sorted(h.get("public_address") or h["address"] for h in hosts.values()
                     if h.get("role") == "master" and h.get("address"))
    if endpoint.get("dns_name") and endpoint.get("dns_name") != endpoint.get("vip_address"):
        masters = [endpoint["dns_name"]]
    api = ", ".join(f"https://{a}:6443" for a in masters) or f"the masters' port 6443 on {spec.provider.name}"
    etcd = sorted(f"https://{h.get('public_address') or h['address']}:2379" for h in hosts.values()
                  if h.get("etcd") and h.get("address")) or [f"{spec.etcd.count} member(s), addresses known once made"]
    from .burst_reach import pool_reach  # what each need's rules say: open, blocked or not checked
    for i, pool in enumerate(spec.pools):
        if pool.provider is None:
            continue
        reach = pool_reach(spec, i, pool, api, etcd)
        burst = spec.headroom is not None and spec.headroom.burst_pool == pool.name
        out.append({"pool": pool.name, "provider": pool.provider.name, "burst": burst,
                    "needs": [r.line() for r in reach], "reach": [r.to_json() for r in reach]})
    return out
