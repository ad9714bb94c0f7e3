"""What a cluster looks like from outside (`provision status`): hosts with their provider
state and units, orphans and missing hosts, etcd membership and health, the flannel key and
headroom figures.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ActionError
from .etcd import cluster

if TYPE_CHECKING:
    from .providers.base import Provider
    from .providers.pools import PoolProviders
    from .spec import Spec
    from .state import StateStore

# ---- the whole picture (provision status) -------------------------------------------------------

# "auto-restart" is not among them: the unit's process exited and waits to be restarted, which a
# crash loop repeats forever; status names it with its exit code and restart count.
UNIT_OK = ("running", "exited", "activating")


def unit_reason(doc: Mapping[str, Any]) -> str | None:
    """The provider's reason, or for a unit waiting to restart: its last exit code and restarts."""
    if doc.get("reason") or doc.get("state") != "auto-restart":
        return doc.get("reason")
    parts = [f"exited with code {doc['exit_code']}" if doc.get("exit_code") is not None else "exited"]
    if doc.get("restarts"):
        parts.append(f"restarted {doc['restarts']} time(s)")
    return ", ".join(parts)


def etcd_picture(spec: Spec, store: StateStore, state: Mapping[str, Any]) -> dict[str, Any]:
    """Members, per-endpoint health and overall health; errors are reported, not raised."""
    out: dict[str, Any] = {"endpoints": list(cluster.member_urls(state)), "members": [], "health": {},
                           "versions": {}, "healthy": False, "error": None}
    if not out["endpoints"]:
        out["error"] = "no etcd member recorded in state"
        return out
    ssh_trouble: list[str] = []  # why provision connects directly (no host took SSH), if it does
    try:
        etcd = cluster.connect(spec, store, state, log=ssh_trouble.append)
    except ActionError as err:
        out["error"] = str(err)
        return out
    out["health"] = etcd.health()
    out["versions"] = etcd.versions()  # what each member says it serves
    try:
        out["members"] = etcd.members()
    except (ActionError, ValueError) as err:
        out["error"] = str(err)
    out["healthy"] = bool(out["health"]) and all(h["healthy"] for h in out["health"].values()) \
        and len(out["members"]) == len(out["endpoints"])
    if ssh_trouble and not out["healthy"]:
        out["error"] = "; ".join(filter(None, [out["error"], *ssh_trouble]))
    return out


def host_loads(spec: Spec, store: StateStore, state: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """Fresh load figures host agents published (headroom source etcd), by host; None when the
    spec has no etcd headroom source or etcd cannot be read."""
    if spec.headroom is None or spec.headroom.source != "etcd":
        return None
    from .headroom.observe import parse_load, read_etcd_loads
    try:
        raw = read_etcd_loads(cluster.connect(spec, store, state), spec.name)
    except Exception:  # noqa: BLE001 - status reports what it can; etcd trouble shows under etcd
        return None
    now = time.time() if now is None else now
    return {name: parse_load(value, now) for name, value in sorted(raw.items())}  # a live key is fresh


def headroom_figures(spec: Spec, hosts: Mapping[str, Mapping[str, Any]], loads: Mapping[str, Any] | None) -> dict | None:
    """Clocker's figures for the headroom pool: possible, used and available container slots."""
    if spec.headroom is None or loads is None:
        return None
    pool = spec.headroom.pool
    members = [n for n, h in hosts.items() if h.get("pool") == pool]
    known = {n: loads[n] for n in members if loads.get(n)}
    possible = spec.headroom.containers_per_host * len(members)
    used = sum(int(doc["containers"]) for doc in known.values())
    return {"pool": pool, "hosts": len(members), "reporting": len(known),
            "unknown": sorted(set(members) - set(known)), "possible": possible, "used": used,
            "available": possible - used, "reserve": spec.headroom.reserve.slots(possible)}


def api_endpoint_status(spec: Spec, state: Mapping[str, Any], provider: Provider | PoolProviders) -> dict[str, Any]:
    """Where nodes reach the API: the cloud load balancer (found again from the cloud) or the
    node-local proxy every worker runs."""
    if provider.api_load_balancer:
        found = provider.find_api_endpoint()
        return {"kind": "load balancer", "dns_name": found["dns_name"] if found else None, "found": found is not None,
                "recorded": (state.get("api_endpoint") or {}).get("dns_name")}
    return {"kind": "node-local proxy", "address": f"127.0.0.1:{spec.kubernetes.api_proxy_port}", "found": True}


def cluster_status(spec: Spec, store: StateStore, state: Mapping[str, Any], provider: Provider | PoolProviders) -> dict[str, Any]:
    """Hosts with address, provider state and unit states; orphans and missing; etcd; headroom."""
    from . import pki_ca
    from .providers.base import UNIT_STATES, compare
    recorded = state.get("hosts") or {}
    listed = provider.list_hosts()
    live = {h.name: h for h in listed}
    knows_units = UNIT_STATES in provider.optional_capabilities
    hosts = {}
    own = {p.name: p.provider.name for p in spec.pools if p.provider is not None}  # cloud bursting
    for name, host in sorted(recorded.items()):
        record = live.get(name)
        units = provider.unit_states(name) if knows_units and record and host.get("pool") not in own else None
        hosts[name] = {"pool": host.get("pool"), "role": host.get("role"), "etcd": bool(host.get("etcd")),
                       "provider": own.get(host.get("pool"), spec.provider.name),
                       "address": host.get("address"), "node": host.get("node"),
                       "state": record.state if record else "missing",
                       "units": {u: {"state": d.get("state"), "reason": unit_reason(d)}
                                 for u, d in sorted((units or {}).items())} if units is not None else None}
    etcd = etcd_picture(spec, store, state) if recorded else {"endpoints": [], "members": [], "health": {},
                                                         "healthy": False, "error": "no hosts"}
    loads = host_loads(spec, store, state) if etcd.get("members") else None
    notes = provider.artifact_notes()
    endpoint = api_endpoint_status(spec, state, provider)
    failed_units = sorted(f"{n}: {u}" for n, h in hosts.items() for u, d in (h["units"] or {}).items()
                          if d["state"] not in UNIT_OK + ("skipped",))
    from .convergence import changed_files
    changed = changed_files(spec, store, state, provider, [n for n, h in hosts.items() if h["state"] == "running"])
    for name, entry in convergence_report(spec, store, state, hosts, changed).items():
        hosts[name]["convergence"] = entry
    return {"cluster": spec.name, "provider": spec.provider.name, "hosts": hosts, **compare(recorded, listed),
            "etcd": etcd, "loads": loads, "headroom": headroom_figures(spec, recorded, loads),
            "artifacts": notes, "failed_units": failed_units, "api_endpoint": endpoint,
            "ca_rotation": pki_ca.describe(state),  # None when no CA rotation is under way
            "drifted": sorted(n for n, h in hosts.items() if h.get("convergence", {}).get("state") == "drifted"),
            "healthy": bool(recorded) and etcd["healthy"] and not failed_units and endpoint["found"]
            and all(h["state"] == "running" for h in hosts.values())}


def convergence_report(spec: Spec, store: StateStore, state: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]],
                       changed_files: Mapping[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per host, what its convergence records say against what is seen now (no SSH):

    - `converged`: every bootstrap phase of the host recorded what it would record now;
    - `stale`: some phase has no record or a different one (`phases`): the next `up` runs them;
    - `drifted`: recorded as converged, but a unit is not running (stopped, failed, died), or
      a file the roles check differs from the boot config (`changed_files`, {host: [paths]}:
      seen where the provider reads files without SSH, as the local one does; elsewhere only
      the roles see it): the record no longer holds; `up --verify` re-checks all and repairs.
    """
    from . import bootstrap, convergence
    live = bootstrap.cluster_hosts(state)
    wanted = convergence.wanted_records(spec, store, live)
    out: dict[str, dict[str, Any]] = {}
    for name, host in live.items():
        phases = [p for p in convergence.bootstrap_phases(spec, host)
                  if convergence.recorded(state, name, p) != convergence.phase_record(state, wanted[name], p)]
        down = sorted(u for u, d in ((hosts.get(name) or {}).get("units") or {}).items()
                      if d["state"] not in UNIT_OK + ("skipped",))
        if phases:
            out[name] = {"state": "stale", "phases": phases}
        elif down or (changed_files or {}).get(name):
            out[name] = {"state": "drifted", "units": down}
            if (changed_files or {}).get(name):
                out[name]["files"] = list((changed_files or {})[name])
        else:
            out[name] = {"state": "converged"}
    return out
