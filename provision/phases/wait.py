"""Phase `wait`: every host runs and answers SSH, and provision can log in with its key."""
from __future__ import annotations

from .. import bootstrap, convergence, pki
from ..errors import ActionError
from ..providers import get_provider
from ..providers.base import HOST_KEYS, START_HOSTS, UNIT_STATES
from .. import faults
from . import RunContext

SSH_TIMEOUT = 120.0
# Unit states of a host that needs nothing started (what `status` counts as fine).
UNITS_FINE = ("running", "exited", "activating", "auto-restart", "skipped")


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state)
    if ctx.dry_run:
        ctx.log("wait", f"would wait for {len(hosts) or len(bootstrap.planned_names(ctx))} hosts to answer SSH")
        return {"dry_run": True, "hosts": sorted(hosts)}
    provider = get_provider(ctx.spec, ctx.store.workdir, log=lambda m: ctx.log("wait", m))
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
    # Pin host keys the provider knows (local hosts); others are remembered on first contact.
    changed = False
    for name in hosts:
        key = provider.host_public_key(name) if HOST_KEYS in provider.optional_capabilities else None
        if key and ctx.state["hosts"][name].get("host_key") != key:
            ctx.state["hosts"][name]["host_key"] = key
            hosts[name]["host_key"] = key
            changed = True
    if changed:
        ctx.save()
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
    late = bootstrap.wait_for_ssh({n: bootstrap.ssh_address(h) for n, h in targets.items()}, SSH_TIMEOUT,
                                  log=lambda m: ctx.ui.debug("wait", m))
    if late:
        raise ActionError(f"wait: no SSH answer after {SSH_TIMEOUT:.0f}s from {', '.join(late)}")
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
