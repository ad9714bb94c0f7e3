"""Run the pyinfra roles of `roles/` on a cluster's hosts over SSH, through pyinfra's Python API.

The inventory comes from state (`state["hosts"]`: name, pool, role, address) and is also
written as a pyinfra inventory file (`ssh_inventory`) to `<workdir>/inventories/<cluster>.py` for the pyinfra
CLI. Host keys are pinned: the provider's known host keys when it has them (local), else the
first key seen is remembered (`accept-new`) in `<workdir>/inventories/known_hosts`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping

from . import faults, ssh_sessions
from .errors import ActionError
from .resources import data_dir
# The inventory files moved to ssh_inventory; callers still import them from here.
from .ssh_inventory import (host_data, inventory_dir, inventory_text, known_hosts_for_run,  # noqa: F401
                            known_hosts_text, ssh_address, write_inventory)

if TYPE_CHECKING:
    from .phases import RunContext
    from .spec import Spec

ROLES_PACKAGE = "provision_roles"
# How many hosts pyinfra works on at once (connections, facts, operations); a bound keeps a
# large cluster from opening thousands of SSH sessions and file handles at the same time.
SSH_PARALLEL = 20
# Which host roles each role-running phase covers (for messages about planned hosts).
ROLE_HOSTS = {"masters": ("master",), "workers": ("worker",), "flannel": ("master", "worker")}


@dataclass
class RoleOutcome:
    """What a role found and did on one host."""

    host: str
    changed: int = 0
    operations: int = 0
    missing: list[str] = field(default_factory=list)
    units: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "operations": self.operations, "missing": self.missing,
                "units": self.units, "notes": self.notes, "error": self.error, **self.extra}


def load_role(name: str):
    """The role module `roles/<name>.py` (the folder is data, imported as `provision_roles`)."""
    if ROLES_PACKAGE not in sys.modules:
        folder = data_dir("roles")
        spec = importlib.util.spec_from_file_location(ROLES_PACKAGE, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        assert spec is not None and spec.loader is not None, folder  # a path with .py always gives one
        module = importlib.util.module_from_spec(spec)
        sys.modules[ROLES_PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{ROLES_PACKAGE}.{name}")




def ssh_reachable(address: str, timeout: float = 2.0) -> bool:
    """Whether an SSH server answers on `address`:22 (reads its banner)."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(addresses: Mapping[str, str], timeout: float,
                 log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Wait until every host answers SSH; returns the names that did not in time."""
    pending = dict(addresses)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=SSH_PARALLEL) as pool:  # hosts checked side by side
        while pending and time.monotonic() < deadline:
            names = list(pending)
            for name, answered in zip(names, pool.map(ssh_reachable, [pending[n] for n in names])):
                if answered:
                    log(f"{name} answers SSH on {pending[name]}")
                    del pending[name]
            if pending:
                time.sleep(0.2)
    return sorted(pending)


def forget_loaded_host_keys() -> None:
    """Make pyinfra re-read known_hosts files on its next connection.

    pyinfra memoizes each known_hosts file's keys for the life of the process, so a second
    run in one process (a dry run's masters then workers, a scale's new hosts) would check
    hosts against the keys the first run loaded and refuse every host it did not know.
    """
    from pyinfra.connectors.sshuserclient import client as ssh_client
    cache = getattr(ssh_client.get_host_keys, "cache", None)
    if cache is not None:
        cache.clear()


def run_roles(spec: Spec, workdir: Path, hosts: Mapping[str, Mapping[str, Any]], roles: Iterable[str],
              key_path: Path, dry_run: bool = False, timeout: int = 10,
              cluster: Mapping[str, Mapping[str, Any]] | None = None,
              data: Mapping[str, Any] | None = None,
              host_only: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, RoleOutcome]:
    """Apply `roles` (in order) to `hosts` ({name: state host}); one outcome per host.

    `cluster` is every host of the cluster (default: `hosts`), for the inventory files.
    `data` is added to every host's pyinfra data for this run only (not to the inventory file);
    `host_only` ({name: data}) to that one host's only (e.g. its own keys).
    A dry run gathers facts and counts the operations that would change, running none,
    and writes nothing.
    """
    logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
    if not hosts:
        return {}
    everyone = {**(cluster or {}), **hosts}
    with known_hosts_for_run(spec, workdir, everyone, key_path, dry_run) as known_hosts:
        forget_loaded_host_keys()
        # connections kept from earlier runs of this process to hosts gone from the cluster close
        ssh_sessions.drop_absent({ssh_address(h) for h in everyone.values()}, spec.ssh.user, str(key_path))
        return _run_roles(spec, hosts, tuple(roles), key_path, known_hosts, dry_run, timeout, data or {},
                          host_only or {})


def remember_connectors() -> None:
    """pyinfra finds its connectors in every installed package's entry points, twice per
    Inventory (once per role run); they do not change while a process runs: found once."""
    from pyinfra.api import inventory
    if not hasattr(inventory.get_all_connectors, "cache_info"):
        inventory.get_all_connectors = functools.cache(inventory.get_all_connectors)
        inventory.get_execution_connectors = functools.cache(inventory.get_execution_connectors)


def _run_roles(spec, hosts, roles, key_path, known_hosts, dry_run, timeout, data,
               host_only) -> dict[str, RoleOutcome]:
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.operations import run_ops

    remember_connectors()
    inventory = Inventory(([(name, {**host_data(spec, name, host, key_path, known_hosts), **data,
                                   **host_only.get(name, {})})
                            for name, host in sorted(hosts.items())], {}))
    state = State(inventory, Config(CONNECT_TIMEOUT=timeout, FAIL_PERCENT=100,
                                    PARALLEL=max(1, min(SSH_PARALLEL, len(hosts)))))
    outcomes = {name: RoleOutcome(host=name) for name in hosts}
    # the connections earlier runs of this process made, where still good, instead of new ones
    ssh_sessions.adopt_all(inventory, SSH_PARALLEL)
    connect_all(state)
    for host in state.activated_hosts:
        ssh_sessions.keep(host)
    try:
        for host in inventory:
            if host not in state.activated_hosts:
                outcomes[host.name].error = "cannot connect over SSH"
        report: dict[str, dict] = {}
        for role in roles:
            module = load_role(role)
            add_deploy(state, module.apply, report)
        if not dry_run:
            faults.count_operations(state)
            run_ops(state)
        for done, host in enumerate(state.activated_hosts, 1):
            faults.hosts_done(done, len(state.activated_hosts))  # a role of facts only: no operations
            outcome = outcomes[host.name]
            meta = state.get_meta_for_host(host)
            outcome.changed, outcome.operations = meta.ops_change, meta.ops
            entry = report.get(host.name, {})
            outcome.missing = sorted(set(entry.get("missing", [])))
            outcome.units = entry.get("units", {})
            outcome.notes = entry.get("notes", [])
            outcome.extra = {k: v for k, v in entry.items() if k not in ("missing", "units", "notes")}
            if not dry_run and state.get_results_for_host(host).error_ops:
                outcome.error = "an operation failed"
        for host in inventory:
            if host not in state.activated_hosts and outcomes[host.name].error is None:
                outcomes[host.name].error = "failed while running the role"
    finally:
        ssh_sessions.end_run()
        disconnect_all(state)  # forgets the hosts; their connections stay kept for the next run
    return outcomes


def summarize(outcomes: Mapping[str, RoleOutcome], dry_run: bool) -> tuple[int, list[str]]:
    """(hosts changed, problems) of a role run; problems name host and missing piece."""
    problems = []
    changed = 0
    for name, outcome in sorted(outcomes.items()):
        if outcome.error:
            problems.append(f"{name}: {outcome.error}")
        for path in outcome.missing:
            problems.append(f"{name}: missing {path}")
        for unit, doc in sorted(outcome.units.items()):
            if doc.get("state") in ("failed", "dead"):
                problems.append(f"{name}: unit {unit} is {doc['state']}")
        if outcome.changed:
            changed += 1
    return changed, problems


def raise_problems(phase: str, problems: list[str]) -> None:
    if problems:
        raise ActionError([f"{phase}: {p}" for p in problems])


# ---- what the bootstrap phases share ---------------------------------------------------------

def _selected(role: str | None, carries_etcd: object, roles: Collection[str] | None, etcd: bool | None) -> bool:
    return (roles is None or role in roles) and (etcd is None or bool(carries_etcd) == etcd)


def cluster_hosts(state: Mapping[str, Any], roles: Iterable[str] | None = None,
                  etcd: bool | None = None) -> dict[str, dict[str, Any]]:
    """Hosts state records, filtered by role and by carrying etcd; only those with an address."""
    roles = set(roles) if roles is not None else None
    return {name: dict(host) for name, host in sorted((state.get("hosts") or {}).items())
            if _selected(host.get("role"), host.get("etcd"), roles, etcd) and host.get("address")}


def planned_names(ctx: RunContext, roles: Iterable[str] | None = None, etcd: bool | None = None) -> list[str]:
    """Names of the hosts the plan wants (for dry runs, before hosts exist)."""
    roles = set(roles) if roles is not None else None
    return [h.name for h in ctx.plan().desired if _selected(h.role, h.etcd, roles, etcd)]


def apply_roles(ctx: RunContext, phase: str, roles: Iterable[str], hosts: Mapping[str, Mapping[str, Any]],
                data: Mapping[str, Any] | None = None,
                host_only: Mapping[str, Mapping[str, Any]] | None = None,
                record_extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Run `roles` on `hosts` for a phase: log per host, fail on missing pieces, say when
    nothing changed. Returns the phase result for --output json. `host_only` is per-host role
    data (see run_roles); `record_extra` ({name: fields}) is added to each host's convergence
    record, so a change in it makes the host stale."""
    from . import pki
    roles = tuple(roles)
    if not hosts:
        if ctx.dry_run:
            names = planned_names(ctx, roles=ROLE_HOSTS.get(phase))
            ctx.log(phase, f"would check {len(names)} planned hosts once they exist: {', '.join(names)}")
        else:
            ctx.log(phase, "no hosts for this phase")
        return {"hosts": {}, "changed": 0}
    every = hosts
    wanted, hosts = convergence_targets(ctx, phase, hosts, record_extra)
    if not hosts:
        ctx.log(phase, f"{len(every)} hosts already converged: no change (as recorded in state)")
        return {"hosts": {}, "changed": 0, "converged": len(every), "verify": False}
    per_host = {n: dict(v) for n, v in (host_only or {}).items() if n in hosts}
    config_files: dict[str, list[list[Any]]] = {}
    if phase in CONTENT_CHECKED_PHASES:  # the roles compare the files they check with these
        config_files = config_file_data(ctx, hosts)
        for name, files in config_files.items():
            per_host.setdefault(name, {})["config_files"] = files
    outcomes = run_roles(ctx.spec, ctx.store.workdir, hosts, roles, pki.ssh_private_key_path(ctx.store),
                         dry_run=ctx.dry_run, cluster=cluster_hosts(ctx.state), data=data,
                         host_only=per_host)
    if not ctx.dry_run:
        restart_readers(ctx, phase, hosts, outcomes, config_files)
    changed, problems = summarize(outcomes, ctx.dry_run)
    if not ctx.dry_run:  # before failing: the hosts that did converge keep their record
        record_converged(ctx, phase, wanted, outcomes)
    for name, outcome in sorted(outcomes.items()):
        units = ", ".join(f"{u} {d.get('state')}" for u, d in sorted(outcome.units.items()))
        verb = "would change" if ctx.dry_run else "changed"
        ctx.log(phase, f"{name}: {verb} {outcome.changed} of {outcome.operations} operations"
                       + (f"; {units}" if units else ""))
        for note in outcome.notes:
            ctx.log(phase, f"{name}: {note}")
    if ctx.dry_run:
        for problem in problems:
            ctx.ui.warn(f"{phase}: {problem}")
    else:
        raise_problems(phase, problems)
    if changed == 0:
        ctx.log(phase, f"{len(hosts)} hosts already converged: no change")
    return {"hosts": {n: o.to_json() for n, o in sorted(outcomes.items())}, "changed": changed,
            "converged": len(every) - len(hosts), "verify": verifying(ctx)}


# Phases whose roles check files a host's boot config wrote (roles/_common.check): they get each
# host's config files as host data, and put back the contents of one changed on the host.
CONTENT_CHECKED_PHASES = ("etcd", "flannel", "fleet", "masters", "workers")


def config_file_data(ctx: RunContext, hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, list[list[Any]]]:
    """{host: [[path, mode, bytes], ...]}: the files each host's boot config gives, with their
    contents (rendered now, as the render phase stored them), for hosts of the plan."""
    from .render import render_files
    desired = ctx.plan().desired
    names = sorted(set(hosts) & {h.name for h in desired})
    if not names:
        return {}
    rendered = render_files(ctx.spec, ctx.state, ctx.store, desired, names)
    return {name: [[path, f.mode, f.data] for path, f in sorted(files.items()) if f.data is not None]
            for name, files in rendered.items()}


def restart_readers(ctx: RunContext, phase: str, hosts: Mapping[str, Mapping[str, Any]],
                    outcomes: Mapping[str, RoleOutcome], config_files: Mapping[str, list[list[Any]]]) -> None:
    """Restart the units that read the files a role put back (`restored`: changed on the host),
    so what runs is what the boot config says, not only what is on disk. Which units read a
    path is `provision.inplace`'s rule (the unit's own file, or the path named in the unit or in
    an environment file it reads); the provider restarts them when it can, else systemctl over
    SSH. Each outcome gets `restarted`; a restart that fails is the host's error (its record is
    dropped, so the next run acts on it again)."""
    from . import inplace
    from .providers.pools import providers_of
    provider = None
    for name, outcome in sorted(outcomes.items()):
        restored = outcome.extra.get("restored") or []
        if not restored or outcome.error:
            continue
        files = {str(path): (int(mode), bytes(data)) for path, mode, data in config_files.get(name, ())}
        units = {path.rsplit("/", 1)[1]: data.decode(errors="replace") for path, (_, data) in files.items()
                 if path.startswith(inplace.UNIT_DIR + "/")}
        readers = inplace.units_to_restart(inplace.Payload(files=files, units=units), restored)
        outcome.extra["restarted"] = readers
        if not readers:
            continue
        ctx.log(phase, f"{name}: restarting {', '.join(readers)} (they read {', '.join(restored)})")
        # a burst pool's host restarts through its own pool's provider
        provider = provider or providers_of(ctx.spec, ctx.store.workdir, log=lambda m: ctx.log(phase, m))
        try:
            if not provider.restart_units(name, readers):
                inplace.restart_over_ssh(ctx, hosts[name], name, readers)
        except ActionError as err:
            outcome.error = f"restarting {', '.join(readers)} after restoring their files: {err}"


def verifying(ctx: RunContext) -> bool:
    """`up --verify` and dry runs check every host, whatever its record says."""
    return bool(ctx.dry_run or ctx.options.get("verify"))


def convergence_targets(ctx: RunContext, phase: str, hosts: Mapping[str, Mapping[str, Any]],
                        extra: Mapping[str, Mapping[str, Any]] | None = None):
    """(the record each host gets, the hosts the phase runs its roles on): every host when
    verifying, else those whose recorded convergence for `phase` is missing or differs.
    `extra` ({name: fields}) is added to each host's record."""
    from . import convergence
    wanted = convergence.wanted_records(ctx.spec, ctx.store, hosts)
    for name, fields in (extra or {}).items():
        if name in wanted:
            wanted[name].update(fields)
    stale = convergence.stale_hosts(ctx.state, phase, wanted)
    if stale:
        ctx.log(phase, f"{len(stale)} of {len(hosts)} hosts new or changed since they last converged: "
                       f"{', '.join(stale)}")
    if verifying(ctx):
        return wanted, dict(hosts)
    return wanted, {name: hosts[name] for name in stale}


def record_converged(ctx: RunContext, phase: str, wanted: Mapping[str, dict[str, Any]], outcomes: Mapping[str, RoleOutcome]) -> None:
    """Record `phase` as converged on each host it ran on without a problem, and drop the
    record of each host it found a problem on (the next run acts on it again); save state."""
    from . import convergence
    ok = {name: not summarize({name: outcome}, False)[1] for name, outcome in outcomes.items()}
    convergence.record(ctx.state, phase, {name: wanted[name] for name, good in ok.items() if good})
    convergence.forget_phase(ctx.state, phase, [name for name, good in ok.items() if not good])
    ctx.save()
