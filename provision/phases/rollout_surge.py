"""Workers replaced by surge (create before destroy), for the `rollout` phase.

A worker no other host's config names is replaced without ever running its pool short by more
than the batch being drained: the old workers are drained, new workers are made under new names
(the pool's lowest free indices) with configs rendered now, and once they run, answer SSH, take
provision's login and hold their keys, they are joined (`join`: the etcd identity of their
agent, and the roles the later phases give a node, recorded as converged so those phases skip
them) and their agents publish their load keys in etcd, and only then are the old ones
destroyed and dropped from state (their agents' etcd identities with them). The pool's size (the spec's, or the one headroom recorded) is the same afterwards.

Every stage is recorded in `state["rollout"]` (`hosts`: old worker -> stage, `surge`: old worker
-> its replacement) before the next begins, and each is idempotent, so a run killed anywhere
is finished by the next one before it changes anything else: a replacement made already is
adopted (the provider finds it by name), an old worker destroyed already is only forgotten.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import bootstrap, convergence, pki, rollout
from ..changes import BOOT, REPLACE, boot_record
from ..errors import ActionError
from ..etcd.client import Etcd
from ..plan import HostPlan, assign_addresses, host_name
from ..providers.base import Provider
from ..providers.pools import PoolProviders
from . import RunContext

PHASE = "rollout"


def _progress(ctx: RunContext) -> dict[str, Any]:
    progress = ctx.state.setdefault(rollout.STATE_KEY, {"action": REPLACE, "hosts": {}})
    progress.setdefault("hosts", {})
    progress.setdefault(rollout.SURGE_KEY, {})
    return progress


def _record(ctx: RunContext, old: str, stage: str, new: str) -> None:
    from ..faults import FIRST_WRITE, point
    progress = _progress(ctx)
    progress["hosts"][old] = stage
    progress[rollout.SURGE_KEY][old] = new
    ctx.save()
    point(FIRST_WRITE)


def replacement_names(ctx: RunContext, old: Sequence[str], live: Sequence[str]) -> dict[str, str]:
    """Each old worker's replacement: the one recorded by an earlier run, else the lowest free
    index of its pool (free of recorded hosts, of machines the provider lists and of the other
    replacements)."""
    spec, hosts = ctx.spec, ctx.state["hosts"]
    chosen = rollout.surging(ctx.state.get(rollout.STATE_KEY))
    out = {name: chosen[name] for name in old if name in chosen}
    for name in old:
        if name in out:
            continue
        pool = hosts[name]["pool"]
        names = set(hosts) | set(live) | set(chosen.values()) | set(out.values())
        taken = [i for i in range(len(names) + 1) if host_name(spec.name, pool, i) in names]
        index = rollout.replacement_indices(taken, 1)[0]
        out[name] = host_name(spec.name, pool, index)
    return out


def planned(ctx: RunContext, replacements: Mapping[str, str]) -> list[HostPlan]:
    """The new workers as the plan would make them (an address from the provider subnet where
    the provider fixes addresses; the taken ones are those state records)."""
    spec, hosts = ctx.spec, ctx.state["hosts"]
    bare = []
    for old, new in sorted(replacements.items()):
        pool = hosts[old]["pool"]
        bare.append((new, pool, "worker", int(new.rsplit("-", 1)[1])))
    recorded = {n: h for n, h in hosts.items() if n not in replacements.values()}
    addresses = assign_addresses(spec, recorded, bare, set())
    # a replacement recorded already keeps the address it was made with
    return [HostPlan(name=n, pool=p, role=r, index=i, address=(hosts.get(n) or {}).get("address") or addresses.get(n))
            for n, p, r, i in bare]


def configs_for(ctx: RunContext, provider: Provider | PoolProviders, new: list[HostPlan],
                desired: Sequence[HostPlan]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The new workers' configs as rendered now (for their boot records) and as the provider
    takes them (fitted to its user-data limit). Their certificates are made first if missing."""
    from ..render import render_cluster
    from .endpoint import spec_with_endpoint
    from .machines import fit_config, pool_provider
    from .render import artifact_view, served_artifacts
    from .. import faults
    phase = faults.current()
    # making the certificates is part of making the host: the stage records are its fault points
    faults.enter(None)
    try:
        pki.ensure_pki(spec_with_endpoint(ctx.spec, ctx.state), ctx.store, desired,
                       log=lambda m: ctx.ui.debug(PHASE, m))
    finally:
        faults.enter(phase)
    served = None if ctx.state.get("artifacts") else served_artifacts(ctx)
    result = render_cluster(ctx.spec, artifact_view(ctx.state, served), ctx.store, desired)
    rendered, fitted = {}, {}
    for host in new:
        file_name = result.index["hosts"][host.name]["config"]
        rendered[host.name] = result.files[file_name]
        fitted[host.name] = fit_config(pool_provider(provider, host.pool), rendered[host.name], file_name, lambda m: ctx.log(PHASE, m))
    return rendered, fitted


def surge_workers(ctx: RunContext, provider: Provider | PoolProviders, old: Sequence[str], desired: Sequence[HostPlan]) -> dict[str, str]:
    """Replace the workers `old` (one batch) create before destroy; returns old -> new."""
    from .machines import forget_joined, host_entry
    from .rollout import drain, forget_host_key
    log = lambda m: ctx.log(PHASE, m)  # noqa: E731
    state = ctx.state
    live = [r.name for r in provider.list_hosts()]
    names = replacement_names(ctx, old, live)
    for name in old:
        if not rollout.surge_stage_done(state.get(rollout.STATE_KEY), name, rollout.DRAINED):
            if name in live:
                log(f"replacing {name} by {names[name]} (create before destroy): draining {name}")
                drain(ctx, provider, name)
            _record(ctx, name, rollout.DRAINED, names[name])
    new = planned(ctx, names)
    by_new = {h.name: h for h in new}
    everyone = tuple(h for h in desired if h.name not in by_new) + tuple(new)
    making = [h for h in new if h.name not in state["hosts"]]
    if making:
        rendered, configs = configs_for(ctx, provider, making, everyone)
        provider.prepare()
        log(f"creating {', '.join(h.name for h in making)} (a single request)")
        records = {r.name: r for r in provider.create_hosts(making, configs)}
        for host in making:
            if host.name not in records:
                raise ActionError(f"rollout: the provider did not create {host.name}")
            convergence.forget(state, [host.name])  # a new machine converges from nothing
            entry = host_entry(host, records[host.name], None)
            entry[BOOT] = boot_record(ctx.spec, host, everyone, rendered[host.name])
            state["hosts"][host.name] = entry
        for old_name, new_name in names.items():
            if new_name in records:
                _record(ctx, old_name, rollout.SURGED, new_name)
    wait_healthy(ctx, provider, new, everyone)
    join(ctx, sorted(h.name for h in new))
    gone = sorted(names)
    log(f"destroying {', '.join(gone)}: {', '.join(names[n] for n in gone)} healthy in their place")
    provider.destroy_hosts(gone)
    for name in gone:
        forget_host_key(ctx, state["hosts"].get(name) or {})
        state["hosts"].pop(name, None)
    convergence.forget(state, gone)
    forget_joined(state, gone)
    progress = _progress(ctx)
    for name in gone:
        progress["hosts"].pop(name, None)
        progress[rollout.SURGE_KEY].pop(name, None)
    if not progress["hosts"]:
        state.pop(rollout.STATE_KEY, None)
    ctx.save()
    forget_identities(ctx, gone)
    for name in gone:
        log(f"replaced {name} by {names[name]}: running, answering SSH, keys delivered, joined; {name} destroyed")
    return names


def wait_healthy(ctx: RunContext, provider: Provider | PoolProviders, new: list[HostPlan], desired: Sequence[HostPlan]) -> None:
    """The new workers run and answer SSH (host keys pinned where the provider knows them),
    provision's key logs in, and their keys are delivered over SSH (never in a boot config),
    so their services can start; the old workers are still there until this returns."""
    from .rollout import HEALTH_TIMEOUT
    from .secrets import bundle_digest, deliverable, role_data
    from .wait import reachable
    reachable(ctx, provider, PHASE, HEALTH_TIMEOUT, running={h.name: h for h in new})
    names = sorted(h.name for h in new)
    hosts = {n: h for n, h in bootstrap.cluster_hosts(ctx.state).items() if n in names}
    missing = sorted(set(names) - set(hosts))
    if missing:
        raise ActionError(f"rollout: {', '.join(missing)} ran but the provider gave no address")
    key = pki.ssh_private_key_path(ctx.store)
    bootstrap.write_inventory(ctx.spec, ctx.store.workdir, bootstrap.cluster_hosts(ctx.state), key)
    secrets, _ = deliverable(ctx, tuple(desired), names)  # their agents' certificates issued first
    # apply_roles raises naming the hosts it could not log in to: the old workers then stay.
    bootstrap.apply_roles(ctx, "secrets", ("secrets",), hosts,
                          host_only={n: role_data(f) for n, f in secrets.items()},
                          record_extra={n: {"secrets": bundle_digest(f)} for n, f in secrets.items()})


AGENT_TIMEOUT = 120.0  # seconds a joined worker's agent has to publish its load key


def join(ctx: RunContext, names: Sequence[str]) -> None:
    """Bring the new workers `names` to the state the later phases of `up` would, before the old
    ones go: their agents' etcd identities (recorded in state, as the etcd phase records them),
    then the roles `hosts` (where the cloud assigns addresses), `flannel` and `workers` on them
    alone, recorded as converged (the phases then skip them); then, where headroom reads etcd,
    wait until each agent publishes its load key (what `status` shows). Each step is idempotent,
    so a run killed here does it again, the old workers still there."""
    from .. import faults
    from ..etcd import cluster, host_identity
    from .hosts import host_entries, needs_hosts_file
    from .masters import retired_removal
    from .rollout import root_access
    hosts = {n: h for n, h in bootstrap.cluster_hosts(ctx.state).items() if n in names}
    phase = faults.current()
    faults.enter(None)  # the rollout phase's fault points stay where they were
    try:
        made = host_identity.join_hosts(root_access(ctx), ctx.spec.name, ctx.state, sorted(hosts))
        ctx.save()
        ctx.log(PHASE, f"joining {', '.join(sorted(hosts))}: {', '.join(made)}")
        if needs_hosts_file(ctx.spec.provider.name):
            entries = host_entries(bootstrap.cluster_hosts(ctx.state))
            bootstrap.apply_roles(ctx, "hosts", ("hosts",), hosts, data={"etc_hosts": entries})
        bootstrap.apply_roles(ctx, "flannel", ("flannel",), hosts)
        data, extra = retired_removal(ctx, hosts)
        bootstrap.apply_roles(ctx, "workers", ("workers",), hosts, data=data, record_extra=extra)
    finally:
        faults.enter(phase)
    headroom = ctx.spec.headroom
    if headroom is None or headroom.source != "etcd":
        ctx.log(PHASE, f"{', '.join(sorted(hosts))} joined: roles converged and their units run")
        return
    etcd = cluster.connect(ctx.spec, ctx.store, ctx.state, log=lambda m: ctx.ui.debug(PHASE, m))
    waiting = agents_publishing(etcd, ctx.spec.name, sorted(hosts), AGENT_TIMEOUT)
    if waiting:
        raise ActionError(f"rollout: no load key from the agent of {', '.join(waiting)} after "
                          f"{AGENT_TIMEOUT:.0f}s; the old workers are kept (a re-run tries again)")
    ctx.log(PHASE, f"{', '.join(sorted(hosts))} joined: roles converged, their agents publish their load keys")


def agents_publishing(etcd: Etcd, cluster_name: str, names: Sequence[str], timeout: float,
                      pause: float = 1.0) -> list[str]:
    """Wait up to `timeout` until each host of `names` has a well-formed load key in etcd; the
    hosts still without one (none: all publish)."""
    import time
    from ..headroom.observe import parse_load, read_etcd_loads
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        loads = read_etcd_loads(etcd, cluster_name)
        waiting = [n for n in names if parse_load(loads.get(n), now) is None]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(pause)


def forget_identities(ctx: RunContext, gone: Sequence[str]) -> None:
    """The destroyed workers' agents lose their etcd users and roles, and state their record and
    certificates (what fails here the etcd phase finishes: it removes every identity of a host
    the plan no longer has)."""
    from ..etcd import host_identity
    from .rollout import root_access
    try:
        host_identity.forget_hosts(root_access(ctx), ctx.store, ctx.state, gone)
    except ActionError as err:
        ctx.ui.warn(f"rollout: {err} (the etcd phase removes them)")
    ctx.save()
