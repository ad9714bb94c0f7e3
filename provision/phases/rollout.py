"""Phase `rollout`: running hosts that the spec changed are updated in place or replaced, a few
at a time (provision.rollout says in what order and how many).

- update in place (the change reaches a host as files and restarts): the host's files and units
  from its newly rendered config are written over SSH (only those that differ), and the units
  those files belong to are restarted (provision.inplace);
- replace a master or etcd member (the boot config must change: Ignition runs once): drained
  (Kubernetes: cordon and evictions that honour PodDisruptionBudgets, or the etcd drain key, as
  headroom drains; its load agent stopped), an etcd member is removed from etcd (only when every member
  is healthy), the machine destroyed, the member added back under the same name and peer URL,
  the host created with its new config (etcd joining the running cluster), and the next host
  waits until this one runs, answers SSH and etcd is healthy with every member;
- replace a worker that carries no etcd: create before destroy (provision.phases.rollout_surge):
  drained, a new worker made under a new name in its pool and waited for until it is joined
  (its agent's etcd identity, its node roles converged, its agent publishing its load key),
  then the old one destroyed; a killed run's surge is finished before anything else.

Runs after `render` (the new configs) and before `machines`, so a re-run after a crash finishes
the host it was changing before anything else: each stage is recorded in `state["rollout"]`,
and every stage is idempotent (a member already removed or added, a host already gone or made).
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

import dataclasses

from .. import bootstrap, convergence, faults, pki_ca, rollout
from ..etcd import cluster as etcd_cluster
from ..etcd.client import Etcd
from ..changes import BOOT, REPLACE, boot_record, config_digest, host_changes
from ..errors import ActionError
from ..plan import HostPlan, Plan
from ..providers.base import Provider
from ..providers.pools import PoolProviders, providers_of
from . import RunContext

PHASE = "rollout"
HEALTH_TIMEOUT = 180.0  # seconds a changed host has to run, answer SSH and (etcd) be healthy
RECONFIG_WAIT = 30.0  # seconds a member removal etcd refuses as "unhealthy cluster" is tried again


def run(ctx: RunContext) -> dict[str, Any]:
    spec, state = ctx.spec, ctx.state
    result: dict[str, Any] = {"updated": [], "replaced": [], "surged": {}}
    unfinished = rollout.surging(state.get(rollout.STATE_KEY))
    if unfinished and not ctx.dry_run:  # a killed run's surge first: its old workers go only now
        from .rollout_surge import surge_workers
        ctx.log(PHASE, f"finishing the replacement of {', '.join(sorted(unfinished))} a previous run began")
        provider = providers_of(spec, ctx.store.workdir, log=lambda m: ctx.log(PHASE, m))
        result["surged"].update(surge_workers(ctx, provider, sorted(unfinished), ctx.plan().desired))
        result["replaced"].extend(sorted(unfinished))
    current = ctx.plan()
    changes = host_changes(spec, state, current)
    from ..version_skew import check_spec
    skew = check_spec(spec, state)  # refused changes never get here (up checks them first)
    todo = rollout.steps(changes, current.desired, workers_first=skew.order[:1] == ("kubelets",),
                         configs_changed=configs_changed(ctx, current.keep))
    progress = state.get(rollout.STATE_KEY)
    todo = resume_first(todo, progress, current)
    max_unavailable = int(ctx.options.get("max_unavailable") or 1)
    result["steps"] = [s.to_json() for s in todo]
    if not todo:
        # every running host carries its config: a CA rotation's phase under way is rolled out
        if not ctx.dry_run and (pki_ca.mark_rolled(state) or progress):
            state.pop(rollout.STATE_KEY, None)
            ctx.save()
        if not unfinished:
            ctx.log(PHASE, "no running host needs a change")
        result["changed"] = result["replaced"]
        return result
    groups = rollout.batches(todo, max_unavailable)
    if ctx.dry_run:
        for group in groups:
            ctx.log(PHASE, "would " + "; ".join(f"{'replace' if s.action == REPLACE else 'update in place'} "
                                                 f"{s.host} ({s.because}"
                                                 + ("; create before destroy" if s.surges else "") + ")"
                                                 for s in group))
        return {**result, "dry_run": True}
    # a burst pool's hosts are replaced by its own provider, as `wait` asks it of them
    provider = providers_of(spec, ctx.store.workdir, log=lambda m: ctx.log(PHASE, m))
    desired = {h.name: h for h in current.desired}
    done = 0
    for group in groups:
        surging = [s for s in group if s.surges]
        replacing = [s for s in group if s.action == REPLACE and not s.surges]
        updating = [s for s in group if s.action != REPLACE]
        if surging:
            from .rollout_surge import surge_workers
            result["surged"].update(surge_workers(ctx, provider, [s.host for s in surging], ctx.plan().desired))
            result["replaced"].extend(s.host for s in surging)
        if replacing:
            replace_hosts(ctx, provider, [desired[s.host] for s in replacing], current.desired)
            result["replaced"].extend(s.host for s in replacing)
        if updating:
            from .. import inplace
            inplace.update_hosts(ctx, provider, [desired[s.host] for s in updating], current.desired)
            result["updated"].extend(s.host for s in updating)
        done += len(group)
        faults.hosts_done(done, len(todo))
    state.pop(rollout.STATE_KEY, None)
    pki_ca.mark_rolled(state)  # a CA rotation's phase under way is on every running host now
    ctx.save()
    ctx.log(PHASE, f"{len(result['replaced'])} replaced, {len(result['updated'])} updated in place")
    result["changed"] = result["replaced"] + result["updated"]
    return result


def configs_changed(ctx: RunContext, kept: Sequence[HostPlan]) -> list[str]:
    """Kept hosts whose config as the render phase just stored it differs from the one they
    carry (their boot record's digest): `pki rotate` changes no spec field, only configs."""
    from .machines import rendered_configs
    rendered = {name: config_digest(config) if config else None
                for name, config in rendered_configs(ctx, kept).items()}
    recorded = {h.name: ((ctx.state["hosts"].get(h.name) or {}).get(BOOT) or {}).get("config_sha256") for h in kept}
    return rollout.config_changed(recorded, rendered)


def resume_first(todo: list[rollout.Step], progress: Mapping[str, Any] | None, current: Plan) -> list[rollout.Step]:
    """The hosts a killed run was replacing come first; one whose new machine was made already
    (its boot record says keep now) is still waited for until healthy."""
    kept = {h.name: h for h in current.keep}
    names = [n for n in rollout.in_progress(progress) if n in kept]
    if not names:
        return todo
    first = []
    for name in names:
        step = next((s for s in todo if s.host == name), None)
        first.append(step or rollout.Step(name, REPLACE, kept[name].role, bool(kept[name].etcd),
                                          "finishing the replacement a previous run began"))
    return first + [s for s in todo if s.host not in names]


def _record(ctx: RunContext, host: str, stage: str) -> None:
    progress = ctx.state.setdefault(rollout.STATE_KEY, {"action": REPLACE, "hosts": {}})
    progress.setdefault("hosts", {})[host] = stage
    ctx.save()
    faults.point(faults.FIRST_WRITE)


def replace_hosts(ctx: RunContext, provider: Provider | PoolProviders, hosts: list[HostPlan], desired: tuple[HostPlan, ...]) -> None:
    """Replace `hosts` (one etcd member or master, or up to max_unavailable workers) and wait
    until they are healthy."""
    log = lambda m: ctx.log(PHASE, m)  # noqa: E731
    progress = ctx.state.get(rollout.STATE_KEY)
    members = [h for h in hosts if h.etcd]
    if members and ctx.spec.etcd.discovery == "token":
        raise ActionError(f"rollout: {members[0].name} carries etcd, which was bootstrapped through a discovery "
                          "token; a member is replaced only with etcd.discovery: static")
    live = {r.name for r in provider.list_hosts()}
    for host in hosts:
        stage_done = lambda stage, h=host: rollout.next_stage_done(progress, h.name, stage)  # noqa: E731
        if host.name not in live and not stage_done(rollout.DRAINED):  # gone already: nothing runs there
            _record(ctx, host.name, rollout.DRAINED)
        if not stage_done(rollout.DRAINED) and host.name in live:
            log(f"replacing {host.name}: draining it")
            drain(ctx, provider, host.name)
            _record(ctx, host.name, rollout.DRAINED)
        if host.etcd and not stage_done(rollout.MEMBER_REMOVED):
            remove_member(ctx, host)
            _record(ctx, host.name, rollout.MEMBER_REMOVED)
        if not stage_done(rollout.DESTROYED):
            provider.destroy_hosts([host.name])
            convergence.forget(ctx.state, [host.name])
            entry = ctx.state["hosts"].get(host.name) or {}
            forget_host_key(ctx, entry)
            entry.pop("host_key", None)
            _record(ctx, host.name, rollout.DESTROYED)
        if host.etcd and not stage_done(rollout.MEMBER_ADDED):
            add_member(ctx, host)
            _record(ctx, host.name, rollout.MEMBER_ADDED)
    # The new machines boot with configs rendered now: an etcd member that joins a running
    # cluster says so in its config (ETCD_INITIAL_CLUSTER_STATE=existing).
    from . import render
    from .machines import host_entry, load_configs, pool_provider, rendered_configs
    render.run(ctx)
    configs: dict[str, bytes] = {}
    for host in hosts:  # fitted to the user-data limit of the host's pool's provider
        configs.update(load_configs(ctx, [host], pool_provider(provider, host.pool)))
    provider.prepare()
    records = {r.name: r for r in provider.create_hosts(hosts, configs)}
    booted_with = rendered_configs(ctx, hosts)
    for host in hosts:
        if host.name not in records:
            raise ActionError(f"rollout: the provider did not create {host.name}")
        entry = host_entry(host, records[host.name], ctx.state["hosts"].get(host.name))
        entry[BOOT] = boot_record(ctx.spec, host, desired, booted_with.get(host.name))
        ctx.state["hosts"][host.name] = entry
        _record(ctx, host.name, rollout.CREATED)
    wait_healthy(ctx, provider, hosts)
    for host in hosts:  # the replacement has the old one's name: lift the drain (drain key, cordon)
        edges = workload_edges(ctx, provider, host.name)
        if edges is not None:
            edges.resume_work(host.name)
    ctx.state.pop(rollout.STATE_KEY, None)
    ctx.save()
    log(f"replaced {', '.join(h.name for h in hosts)}: running, answering SSH"
        + (", etcd healthy with every member" if members else ""))


def workload_edges(ctx: RunContext, provider: Provider | PoolProviders, name: str):
    """Headroom's view of the host's workload (None when headroom does not watch its pool)."""
    spec = ctx.spec
    entry = ctx.state["hosts"].get(name) or {}
    if spec.headroom is None or entry.get("role") != "worker" or spec.headroom.pool != entry.get("pool"):
        return None
    from ..headroom.reconcile import ClusterEdges
    edges = ClusterEdges(spec, ctx.store, log=lambda m: ctx.log(PHASE, m), provider=provider, ui=ctx.ui)
    if spec.headroom.source == "etcd":
        edges.etcd(ctx.state)  # the drain key and load reports live in the cluster's etcd
    return edges


def drain(ctx: RunContext, provider: Provider | PoolProviders, name: str) -> None:
    """Move work off a host before it goes, as headroom does when it removes one: through the
    workload source headroom watches (Kubernetes evictions honour PodDisruptionBudgets; the etcd
    source's drain key stops fleet units taking work), then its load agent is stopped. A host
    that does not drain within headroom.drain_timeout is left in place, taking work again."""
    spec = ctx.spec
    edges = workload_edges(ctx, provider, name)
    if edges is not None and spec.headroom is not None:  # edges exist only for headroom's pool
        from ..headroom.reconcile import drain as drain_host
        if not drain_host(spec, edges, name, lambda m: ctx.log(PHASE, m), time.monotonic, time.sleep):
            raise ActionError(f"rollout: {name} did not drain within headroom.drain_timeout "
                              f"({spec.headroom.drain_timeout:g}s); it stays and takes work again; nothing was "
                              "replaced. Re-run `provision up` once its work can move")
    provider.stop_agent(name)


def root_access(ctx: RunContext) -> Etcd:
    return etcd_cluster.connect(ctx.spec, ctx.store, ctx.state, client="root",
                                log=lambda m: ctx.ui.debug(PHASE, m))


def without(access: Etcd, host: HostPlan) -> Etcd:
    """The same client without the host's own member (it is being removed or is not there)."""
    url = f"https://{host.address}:2379"
    kept = [(e, n) for e, n in zip(access.endpoints, access.names) if n != url]
    return dataclasses.replace(access, endpoints=tuple(e for e, _ in kept), names=tuple(n for _, n in kept))


def _members_by_peer(access: Etcd) -> dict[str, dict[str, Any]]:
    return {url: m for m in access.members() for url in m["peer_urls"]}


def peer_url(host: HostPlan) -> str:
    return f"https://{host.address}:2380"


def remove_member(ctx: RunContext, host: HostPlan) -> None:
    """`etcdctl member remove` of the host's member, only when every member is healthy and the
    rest keep quorum while its replacement joins."""
    access = root_access(ctx)
    members = _members_by_peer(access)
    mine = members.get(peer_url(host))
    if mine is None:
        ctx.log(PHASE, f"{host.name}: no etcd member with peer URL {peer_url(host)} (removed already)")
        return
    total = len({m["id"] for m in members.values()})
    health = access.health()
    healthy = sum(1 for h in health.values() if h["healthy"])
    refusal = rollout.member_removal_refusal(total, healthy)
    if refusal:
        raise ActionError(f"rollout: not replacing {host.name}: {refusal}; nothing was removed")
    move_leadership_off(ctx, access, mine["id"], [m["id"] for m in members.values() if m["id"] != mine["id"]])
    proc = without(access, host).etcdctl("member", "remove", mine["id"])
    # etcd refuses a removal ("unhealthy cluster") until the members left have been connected to
    # the leader some 5 s (its strict reconfiguration check): a replacement that just joined and
    # answered healthy is waited for, bounded.
    deadline = time.monotonic() + RECONFIG_WAIT
    while proc.returncode != 0 and "unhealthy cluster" in proc.stderr and time.monotonic() < deadline:
        time.sleep(1.0)
        proc = without(access, host).etcdctl("member", "remove", mine["id"])
    if proc.returncode != 0:
        raise ActionError(f"rollout: etcd member remove {host.name} failed: "
                          f"{(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    ctx.log(PHASE, f"{host.name}: etcd member {mine['id']} removed ({total - 1} members left, all healthy)")


def leader_id(access: Etcd) -> str | None:
    """The hex id of the member etcd's endpoints name as leader (None when none answers)."""
    proc = access.etcdctl("endpoint", "status", "-w", "json")
    try:
        for entry in json.loads(proc.stdout or "[]"):
            leader = (entry.get("Status") or {}).get("leader")
            if leader:
                return f"{leader:x}"
    except (ValueError, AttributeError, TypeError):
        pass
    return None


def move_leadership_off(ctx: RunContext, access: Etcd, member: str, others: list[str]) -> None:
    """Hand leadership to another member before the leader is removed: a removed leader leaves
    the cluster without one for an election timeout; a transfer takes a heartbeat or two."""
    if leader_id(access) != member or not others:
        return
    proc = access.etcdctl("move-leader", sorted(others)[0])
    if proc.returncode != 0:  # the removal still works, with an election instead of a transfer
        ctx.ui.debug(PHASE, f"move-leader failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    else:
        ctx.log(PHASE, f"etcd leadership moved from {member} to {sorted(others)[0]} before its removal")


def add_member(ctx: RunContext, host: HostPlan) -> None:
    """`etcdctl member add` under the same name and peer URL (once: a listed peer URL is done),
    and note in state that this member joins a running cluster (its config says `existing`)."""
    joined = ctx.state.setdefault("etcd", {}).setdefault(rollout.JOINED_KEY, [])
    if host.name not in joined:
        joined.append(host.name)
        joined.sort()
        ctx.save()
    access = root_access(ctx)
    if peer_url(host) in _members_by_peer(access):
        return
    proc = without(access, host).etcdctl("member", "add", host.name, f"--peer-urls={peer_url(host)}")
    if proc.returncode != 0:
        raise ActionError(f"rollout: etcd member add {host.name} failed: "
                          f"{(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    ctx.log(PHASE, f"{host.name}: added back to etcd as a new member ({peer_url(host)})")


def forget_host_key(ctx: RunContext, entry: dict[str, Any]) -> None:
    """The destroyed machine's SSH host key is forgotten: its replacement has its own."""
    path = bootstrap.inventory_dir(ctx.store.workdir) / "known_hosts"
    address = entry.get("ssh_address") or entry.get("address")
    if not address or not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.split(" ", 1)[0] != address]
    path.write_text("".join(f"{line}\n" for line in lines))


def wait_healthy(ctx: RunContext, provider: Provider | PoolProviders, hosts: list[HostPlan]) -> None:
    """The hosts run and answer SSH (their host keys pinned where the provider knows them), and
    etcd lists every planned member healthy when one of them carries etcd."""
    from .wait import reachable
    reachable(ctx, provider, PHASE, HEALTH_TIMEOUT, running={h.name: h for h in hosts})
    # The new machines' keys come over SSH (never in their boot configs): deliver them now, so
    # etcd and the other services on them can start (targeted: only hosts whose record differs).
    from . import secrets
    secrets.run(ctx)
    if any(h.etcd for h in hosts):
        expected = len(bootstrap.cluster_hosts(ctx.state, etcd=True))
        root_access(ctx).wait_healthy(expected, HEALTH_TIMEOUT, log=lambda m: ctx.ui.debug(PHASE, m))
