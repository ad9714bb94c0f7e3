"""Phase `wait`: every host runs and answers SSH, and provision can log in with its key."""
from __future__ import annotations

from typing import Collection, Mapping

from .. import bootstrap, convergence, pki
from ..errors import ActionError
from ..providers.pools import PoolProviders, providers_of
from ..providers.base import HOST_KEYS, START_HOSTS, UNIT_STATES, Provider
from .. import faults
from ..plan import HostPlan
from . import RunContext

SSH_TIMEOUT = 120.0
# Unit states of a host that needs nothing started (what `status` counts as fine).
UNITS_FINE = ("running", "exited", "activating", "auto-restart", "skipped")


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state)
    if ctx.dry_run:
        ctx.log("wait", f"would wait for {len(hosts) or len(bootstrap.planned_names(ctx))} hosts to answer SSH")
        return {"dry_run": True, "hosts": sorted(hosts)}
    # each host is asked of its pool's provider (a burst pool's of its own cloud)
    provider = providers_of(ctx.spec, ctx.store.workdir, log=lambda m: ctx.log("wait", m))
    # Hosts that exist but stopped (killed, machine rebooted) are started, as a console would.
    # On running hosts, enabled units that stopped or died are started again (running ones are
    # left alone), so a re-run repairs them: on every host with `--verify`, else only on the
    # hosts a bootstrap phase will act on (new, replaced, changed): a converged host costs
    # nothing here, so a no-op `up` or an added worker does not grow with the cluster.
    existing = {r.name: r.state for r in provider.list_hosts() if r.name in hosts and r.state != "unknown"}
    can_start = START_HOSTS in provider.optional_capabilities
    if can_start:
        stopped = sorted(n for n, s in existing.items() if s == "stopped")
        if stopped:
            ctx.log("wait", f"starting {len(stopped)} stopped host(s): {', '.join(stopped)}")
    pin_host_keys(ctx, provider, hosts)
    for name in hosts:  # the inventory below is written from these copies
        if ctx.state["hosts"][name].get("host_key"):
            hosts[name]["host_key"] = ctx.state["hosts"][name]["host_key"]
    faults.point(faults.FIRST_WRITE)
    if bootstrap.verifying(ctx):
        targets = dict(hosts)
    else:
        acting = set(convergence.hosts_to_bootstrap(ctx.spec, ctx.store, ctx.state, hosts))
        # A provider that reports unit states without SSH (local) shows a stopped unit on a
        # converged host, as `status` does: that host is started again too.
        knows_units = UNIT_STATES in provider.optional_capabilities
        targets = {n: h for n, h in hosts.items() if n in acting or existing.get(n, "running") != "running"
                   or (knows_units and n in existing
                       and any(d.get("state") not in UNITS_FINE for d in provider.unit_states(n).values()))}
    if can_start and targets:
        boot = sorted(n for n in targets if n in existing)
        if boot:
            provider.start_hosts(boot)
    reachable(ctx, provider, "wait", SSH_TIMEOUT, answer=targets)
    # Logging in is proven already on hosts a phase converged at the same address and key.
    login = hosts if bootstrap.verifying(ctx) else \
        {n: hosts[n] for n in convergence.never_converged(ctx.state, hosts)}
    bootstrap.write_inventory(ctx.spec, ctx.store.workdir, hosts, pki.ssh_private_key_path(ctx.store))
    outcomes = bootstrap.run_roles(ctx.spec, ctx.store.workdir, login, (), pki.ssh_private_key_path(ctx.store))
    failed = sorted(n for n, o in outcomes.items() if o.error)
    if failed:
        raise ActionError(f"wait: cannot log in over SSH as {ctx.spec.ssh.user} on {', '.join(failed)}")
    ctx.log("wait", f"{len(targets)} of {len(hosts)} hosts checked and answer SSH; {len(login)} logged into with "
                    "provision's key" + (" (the others converged as state records; `up --verify` checks every host)"
                                         if len(targets) < len(hosts) else ""))
    # Every host has run its first boot: configs a provider served for it are no longer needed.
    if provider.forget_served_configs():
        ctx.log("wait", "deleted the configs served to booted hosts")
    return {"hosts": sorted(hosts), "checked": sorted(targets), "logged_in": sorted(login)}


def pin_host_keys(ctx: RunContext, provider: Provider | PoolProviders, names: Collection[str]) -> None:
    """The SSH host keys the provider knows (local hosts) go into state, so the first login
    checks them; others are remembered on first contact. State is saved when one changed."""
    if HOST_KEYS not in provider.optional_capabilities:
        return
    changed = False
    for name in names:
        key = provider.host_public_key(name)
        if key and ctx.state["hosts"][name].get("host_key") != key:
            ctx.state["hosts"][name]["host_key"] = key
            changed = True
    if changed:
        ctx.save()


def reachable(ctx: RunContext, provider: Provider | PoolProviders, phase: str, timeout: float,
              answer: Collection[str] = (), running: Mapping[str, HostPlan] | None = None) -> None:
    """What `wait` does for every host and `rollout` for the hosts it just made: the hosts of
    `running` run (their state entries take the addresses the provider reports) and have their
    host keys pinned, and every host of `answer` and `running` answers SSH within `timeout`;
    an ActionError of `phase` names those that do not."""
    from .machines import host_entry
    running = dict(running or {})
    if running:
        for record in provider.wait_running(list(running), timeout=timeout):
            ctx.state["hosts"][record.name] = host_entry(running[record.name], record,
                                                         ctx.state["hosts"][record.name])
        ctx.save()
        pin_host_keys(ctx, provider, running)
    names = sorted(set(answer) | set(running))
    late = bootstrap.wait_for_ssh({n: bootstrap.ssh_address(ctx.state["hosts"][n]) for n in names}, timeout,
                                  log=lambda m: ctx.ui.debug(phase, m))
    if late:
        raise ActionError(f"{phase}: no SSH answer after {timeout:.0f}s from {', '.join(late)}")
