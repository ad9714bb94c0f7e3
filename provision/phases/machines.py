"""Phase `machines`: make the cloud hold exactly the hosts the plan wants.

Destroys the hosts the plan drops, re-creates recorded hosts the cloud lost, creates new ones
with their rendered config as user data (fitted to the provider's user-data limit), and records
each host in state right after the cloud answers for its pool, so a crash leaves state that a
re-run repairs (the provider finds what exists by tag and never creates it twice).

`apply_plan(ctx, plan)` is the same work for any plan (a changed pool size included: `scale`
and `headroom` record the size in state and re-run the phases).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .. import convergence
from ..changes import BOOT, boot_record
from ..errors import ActionError
from ..plan import HostPlan, Plan
from ..render import INDEX, fit_user_data
from .. import faults
from . import RunContext
from .render import PREFIX as RENDERED

if TYPE_CHECKING:
    from ..providers.base import HostRecord, Provider
    from ..providers.pools import PoolProviders

PHASE = "machines"
INDEX_BLOB = RENDERED + INDEX


def run(ctx: RunContext) -> dict[str, Any]:
    return apply_plan(ctx, ctx.plan())


def load_configs(ctx: RunContext, hosts: Sequence[HostPlan], provider: Provider) -> dict[str, bytes]:
    """Each host's user data: its rendered config (render phase blobs), fitted to the provider's
    user-data limit. Fails before any host is created when a config is missing or cannot fit."""
    if not hosts:
        return {}
    raw_index = ctx.store.read_blob(INDEX_BLOB)
    if raw_index is None:
        raise ActionError(f"state has no {INDEX_BLOB}: run the render phase first (provision up SPEC --only render)")
    try:
        index = json.loads(raw_index)["hosts"]
    except (ValueError, KeyError, TypeError):
        raise ActionError(f"state's {INDEX_BLOB} is not a render index; run the render phase again") from None
    fitted: dict[str, bytes] = {}
    out: dict[str, bytes] = {}
    for host in hosts:
        entry = index.get(host.name)
        if not entry or not entry.get("config"):
            raise ActionError(f"no rendered config for host {host.name}: run the render phase again "
                              "(provision up SPEC --only render)")
        file_name = entry["config"]
        if file_name not in fitted:
            data = ctx.store.read_blob(RENDERED + file_name)
            if data is None:
                raise ActionError(f"state has no {RENDERED}{file_name} (config of {host.name}); run the render phase again")
            fitted[file_name] = fit_config(provider, data, file_name, lambda m: ctx.log(PHASE, m))
        out[host.name] = fitted[file_name]
    return out


def rendered_configs(ctx: RunContext, hosts: Sequence[HostPlan]) -> dict[str, bytes | None]:
    """The configs `hosts` are created with, as rendered (before fitting), for their boot
    records; each stored file read once (workers of a pool share one)."""
    try:
        index = json.loads(ctx.store.read_blob(INDEX_BLOB) or b"{}").get("hosts", {})
    except (ValueError, AttributeError):
        return {}
    files: dict[str, bytes | None] = {}
    out: dict[str, bytes | None] = {}
    for host in hosts:
        name = (index.get(host.name) or {}).get("config")
        if name and name not in files:
            files[name] = ctx.store.read_blob(RENDERED + name)
        out[host.name] = files.get(name) if name else None
    return out


def fit_config(provider: Provider, data: bytes, name: str, log: Callable[[str], None]) -> bytes:
    """`data` as the provider can hand it over: as is, compressed, or (when the provider can
    serve files) a pointer config to the full config it serves. Refuses naming the sizes."""
    limit = provider.user_data_limit
    if limit is None or limit.fits(data):
        return data
    try:
        return fit_user_data(data, limit, None, name).data
    except ActionError:
        url = provider.config_url(name, data)
        if url is None:
            raise
    fitted = fit_user_data(data, limit, url, name)
    assert fitted.full_config is not None, "only a pointer is left once the config did not fit without a URL"
    provider.serve_config(name, data, fitted.full_config)
    log(f"{name}: {limit.size_of(data)} bytes is over the user-data limit; hosts fetch it from "
        f"{url.split('?')[0]} (pinned by sha512)")
    return fitted.data


def host_entry(host: HostPlan, record: HostRecord, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What state records about a host. `address` is the plan's fixed address when it has one
    (etcd members: the configs name it, and the plan keeps it stable), else the provider's;
    `ssh_address` is where provision reaches the host from outside (public when there is one)."""
    entry = dict(previous or {})
    entry.update({"pool": host.pool, "role": host.role, "index": host.index, "etcd": host.etcd,
                  "address": host.address or record.address, "provider_id": record.provider_id,
                  "state": record.state, "private_address": record.private_address,
                  "public_address": record.public_address,
                  "ssh_address": record.address or host.address})
    return entry


def forget_joined(state: dict[str, Any], names: Sequence[str]) -> None:
    """A destroyed host no longer joins etcd as a replacement (`rollout` recorded it): a host made
    later under its name is a new member of whatever cluster it is planned into."""
    joined = (state.get("etcd") or {}).get("joined")
    if joined:
        state["etcd"]["joined"] = [n for n in joined if n not in set(names)]


def pool_provider(provider: Provider | PoolProviders, pool: str) -> Provider:
    """The provider that makes `pool`'s hosts: its own (cloud bursting) or the cluster's."""
    return provider.for_pool(pool) if hasattr(provider, "for_pool") else provider


def apply_plan(ctx: RunContext, target: Plan, provider: Provider | PoolProviders | None = None, wait: bool = True) -> dict[str, Any]:
    """Destroy `target.destroy`, create `target.create` (and any kept host the cloud lost),
    record hosts and pool sizes in `ctx.state`. With `ctx.dry_run` it only says what it would do.
    Returns a summary for --output json."""
    spec, state = ctx.spec, ctx.state
    log = lambda message: ctx.log(PHASE, message)  # noqa: E731
    if ctx.dry_run:
        for name in target.destroy:
            log(f"would destroy {name}")
        for host in target.create:
            log(f"would create {host.name} ({host.pool}, {host.role}{', etcd' if host.etcd else ''})")
        return {"dry_run": True, "create": [h.name for h in target.create], "destroy": list(target.destroy)}

    if provider is None:
        from ..providers import get_provider
        from ..providers.pools import PoolProviders, has_pool_providers
        # A pool with a provider of its own (cloud bursting) is made there.
        provider = (PoolProviders(spec, ctx.store.workdir, log=log) if has_pool_providers(spec)
                    else get_provider(spec, ctx.store.workdir, log=log))
    hosts = state.setdefault("hosts", {})
    result: dict[str, Any] = {"created": [], "recreated": [], "destroyed": [], "orphans": []}

    if target.destroy:
        log(f"destroying {len(target.destroy)} host(s): {', '.join(target.destroy)}")
        provider.destroy_hosts(list(target.destroy))
        for name in target.destroy:
            hosts.pop(name, None)
        convergence.forget(state, target.destroy)
        forget_joined(state, target.destroy)
        result["destroyed"] = list(target.destroy)
        ctx.save()

    live = {h.name: h for h in provider.list_hosts()} if (target.keep or target.create) else {}
    # A host the cloud gave up on (state "failed", e.g. Nova's ERROR) is re-created like a lost one.
    lost = [h for h in target.keep if h.name not in live or live[h.name].state == "failed"]
    if lost:
        log(f"{len(lost)} recorded host(s) no longer exist in the cloud or failed there; re-creating: "
            f"{', '.join(h.name for h in lost)}")
    wanted = {h.name for h in target.desired}
    result["orphans"] = sorted(n for n, h in live.items() if n not in wanted and h.state != "terminated")
    if result["orphans"]:
        log(f"hosts tagged with this cluster that the plan does not want (remove with `provision down`): "
            f"{', '.join(result['orphans'])}")

    to_create = list(target.create) + lost
    by_pool: dict[str, list[HostPlan]] = {}
    for host in to_create:
        by_pool.setdefault(host.pool, []).append(host)
    configs: dict[str, bytes] = {}
    for pool_name, pool_hosts in by_pool.items():  # fitted to the user-data limit of the pool's provider
        configs.update(load_configs(ctx, pool_hosts, pool_provider(provider, pool_name)))
    convergence.forget(state, [h.name for h in to_create])  # a new machine converges from nothing
    prepared: list[Any] = []
    for pool_name in by_pool:
        own = pool_provider(provider, pool_name)
        if all(own is not p for p in prepared):
            own.prepare()
            prepared.append(own)
    for pool_name, pool_hosts in by_pool.items():
        adopted = [h.name for h in pool_hosts if h.name in live]
        log(f"creating {len(pool_hosts) - len(adopted)} host(s) in pool {pool_name}"
            + (f" (found {len(adopted)} already in the cloud)" if adopted else ""))
        records = {r.name: r for r in pool_provider(provider, pool_name).create_hosts(pool_hosts, configs)}
        booted_with = rendered_configs(ctx, pool_hosts)
        for host in pool_hosts:
            if host.name in records:
                hosts[host.name] = host_entry(host, records[host.name], hosts.get(host.name))
                hosts[host.name][BOOT] = boot_record(spec, host, target.desired, booted_with.get(host.name))
        ctx.save()  # right after the cloud answered for this pool
        faults.point(faults.FIRST_WRITE)
        result["created"].extend(h.name for h in pool_hosts if h not in lost)
        result["recreated"].extend(h.name for h in pool_hosts if h in lost)

    if wait and to_create:
        log(f"waiting for {len(to_create)} host(s) to run")
        by_name = {h.name: h for h in to_create}
        for record in provider.wait_running(list(by_name)):
            hosts[record.name] = host_entry(by_name[record.name], record, hosts.get(record.name))
        # A kept host may have gained an address while the provider waited (a floating IP that an
        # earlier, failed run never attached): state follows the cloud so later phases reach it.
        kept = {h.name: h for h in target.keep if h not in lost}
        for record in provider.list_hosts() if kept else ():
            entry = hosts.get(record.name)
            if record.name in kept and entry and record.address and entry.get("ssh_address") != record.address:
                hosts[record.name] = host_entry(kept[record.name], record, entry)

    pools = state.setdefault("pools", {})
    for pool in spec.pools:
        entry = pools.setdefault(pool.name, {})
        entry.update({"size": target.sizes.get(pool.name, pool.count), "spec_count": pool.count})
    ctx.save()
    log(f"{len(result['created'])} created, {len(result['recreated'])} re-created, "
        f"{len(result['destroyed'])} destroyed, {len(target.keep) - len(lost)} kept")
    return result
