"""`provision status SPEC [--output json]`: hosts, addresses, etcd members and health, unit
states (running / skipped / failed), orphans and missing hosts, headroom figures
(`provision.api.Cluster.status`, formatted).

Exit 0 when everything answers healthy, 1 when something is unhealthy (the report still
prints), so scripts can wait on it.
"""
from __future__ import annotations

from rich.console import Group

from ..app import App


def unit_summary(units: dict | None) -> str:
    if units is None:
        return "?"
    counts: dict[str, int] = {}
    for doc in units.values():
        counts[doc["state"]] = counts.get(doc["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def run(app: App) -> int:
    spec, ui = app.spec, app.ui
    status = app.cluster().status()  # ActionError (exit 1) for a cluster with no state
    report, healthy = status.report, status.healthy
    data = report if healthy else {**report, "exit_code": 1, "errors": unhealthy_reasons(spec, report)}
    ui.result(data, status_tables(ui, spec, report, command=app.command), ok=healthy)
    return 0 if healthy else 1


def unhealthy_reasons(spec, report) -> list[str]:
    """Why the cluster is not healthy, one line each (the envelope's errors)."""
    reasons = []
    etcd = report.get("etcd") or {}
    if not etcd.get("healthy"):
        reasons.append(f"cluster {spec.name}: etcd is not healthy" + (f" ({etcd['error']})" if etcd.get("error") else ""))
    for unit in report.get("failed_units") or []:
        reasons.append(f"cluster {spec.name}: unit not running: {unit}")
    if report.get("missing"):
        reasons.append(f"cluster {spec.name}: hosts gone from the provider: {', '.join(report['missing'])}")
    return reasons or [f"cluster {spec.name} is not healthy"]


def status_tables(ui, spec, report, command=None) -> Group:
    """The status report as tables for people (identifiers never cut). `command(*words,
    extra=...)` makes the complete commands of hints (the CLI's, with the user's spec path)."""
    command = command or (lambda *words, extra=(): " ".join(("provision", *words, "SPEC", *extra)))
    etcd = report["etcd"]
    loads = report["loads"] or {}
    host_rows = []
    for name, host in report["hosts"].items():
        load = loads.get(name)
        host_rows.append([name, host["role"] + ("+etcd" if host["etcd"] else ""), host["address"],
                          host["state"], unit_summary(host["units"]),
                          f"{load['containers']}/{load['cpu']:.2f}/{load['memory']:.2f}" if load else "-"])
    # Pools with a provider of their own (cloud bursting) are shown apart, under their provider.
    own = {p.name: p.provider.name for p in spec.pools if p.provider is not None}
    pools = [host.get("pool") for host in report["hosts"].values()]
    columns = ["host", "role", "address", "state", "units", "ctr/cpu/mem"]
    hosts_table = ui.table(f"cluster {spec.name} ({spec.provider.name})", columns,
                           [row for row, pool in zip(host_rows, pools) if pool not in own],
                           ids=("host", "role", "address", "state"))
    parts = [hosts_table]
    for pool, provider in own.items():
        kind = "burst pool" if spec.headroom is not None and spec.headroom.burst_pool == pool else "pool"
        parts.append(ui.table(f"{kind} {pool} ({provider})", columns, [row for row, p in zip(host_rows, pools) if p == pool],
                              ids=("host", "role", "address", "state")))
    unit_rows = [[name, unit.removesuffix(".service"), doc["state"], doc["reason"] or ""]
                 for name, host in report["hosts"].items()
                 for unit, doc in (host["units"] or {}).items() if doc["state"] != "running"]
    if unit_rows:
        units_table = ui.table("units not running", ["host", "unit", "state", "reason"], unit_rows,
                               ids=("host", "unit", "state"))
        parts.append(units_table)
    member_rows = [[m["name"] or "(not started)", m["id"], ", ".join(m["client_urls"])] for m in etcd["members"]]
    versions = etcd.get("versions") or {}
    health_rows = [[e, ("healthy" if h["healthy"] else f"UNHEALTHY: {h['error']}")
                    + (f" (etcd {versions[e]})" if versions.get(e) else "")] for e, h in etcd["health"].items()]
    parts.append(ui.table(f"etcd: {'healthy' if etcd['healthy'] else 'NOT healthy'}"
                          + (f" ({etcd['error']})" if etcd["error"] else ""), ["member", "id", "client URLs"],
                          member_rows, ids=("member", "id")))
    parts.append(ui.table(None, ["endpoint", "health"], health_rows, ids=("endpoint",)))
    if report["headroom"]:
        h = report["headroom"]
        parts.append(ui.table("headroom", ["pool", "hosts", "reporting", "possible", "used", "available", "reserve"],
                              [[h["pool"], h["hosts"], h["reporting"], h["possible"], h["used"], h["available"],
                                h["reserve"]]], ids=("pool",)))
    extra = []
    if report["orphans"]:
        extra.append(f"orphans (in the provider, not in state): {', '.join(report['orphans'])}")
    if report["missing"]:
        extra.append(f"missing (in state, gone from the provider): {', '.join(report['missing'])}")
    endpoint = report["api_endpoint"]
    if endpoint["kind"] == "load balancer":
        extra.append(f"API load balancer: {endpoint['dns_name']}:6443" if endpoint["found"] else
                     "API load balancer: MISSING (run `provision up` to make it again)")
    else:
        extra.append(f"API: workers use the node-local proxy on {endpoint['address']}")
    for name in report.get("drifted") or []:
        drift = report["hosts"][name]["convergence"]
        why = ([f"{', '.join(drift['units'])} not running"] if drift.get("units") else []) + \
              ([f"changed on the host: {', '.join(drift['files'])}"] if drift.get("files") else [])
        extra.append(f"drifted since it converged: {name} ({'; '.join(why)}); repair with: "
                     f"{command('up', extra=('--yes', '--verify'))}")
    stale = sorted(n for n, h in report["hosts"].items() if (h.get("convergence") or {}).get("state") == "stale")
    if stale:
        extra.append(f"not converged as recorded: {', '.join(stale)}; bootstrap them with: "
                     f"{command('up', extra=('--yes',))}")
    for name, note in sorted(report["artifacts"].items()):
        extra.append(f"artifact {name}: this machine's {note}")
    if report.get("ca_rotation"):
        extra.append(report["ca_rotation"])
    if extra:
        parts.append(ui.table(None, ["notes"], [[line] for line in extra]))
    return Group(*parts)
