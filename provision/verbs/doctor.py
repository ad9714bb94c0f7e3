"""`provision doctor SPEC [--output json]`: machine and cluster checks, each finding with what
to do. Exit 0 when healthy, 1 with findings (the report still prints)."""
from __future__ import annotations

from rich.console import Group

from ..app import App
from ..doctor import Check, Finding, findings_of, run_checks
from ..preflight import check_provider


def run(app: App) -> int:
    spec, store, ui = app.spec, app.store, app.ui
    provider = check_provider(spec, store.workdir, preflight=False)
    state = store.read()
    checks = run_checks(spec, store, state, provider)
    if not store.exists():  # machine checks still help; the cluster ones had nothing to read
        checks.insert(0, Check("state", False, "no state", (Finding(
            "state", f"cluster {spec.name} has no state at {store.location}",
            f"create it with: {app.command('up', extra=('--yes',))}"),)))
    findings = findings_of(checks)
    data = {"healthy": not findings, "checks": [c.to_json() for c in checks],
            "findings": [{k: ui.rewrite(v) for k, v in f.to_json().items()} for f in findings]}
    if findings:
        data.update(exit_code=1, errors=[f"{f.check}: {f.problem}" for f in findings])
    rows = [[c.name, "skipped" if c.skipped else "ok" if c.ok else "FINDINGS", c.detail] for c in checks]
    parts = [ui.table(f"doctor for {spec.name}: " + (f"{len(findings)} finding(s)" if findings else "healthy"),
                      ["check", "result", "detail"], rows, ids=("check",))]
    if findings:
        parts.append(ui.table("findings", ["check", "problem", "what to do"],
                              [[f.check, ui.rewrite(f.problem), ui.rewrite(f.fix)] for f in findings], ids=("check",)))
    ui.result(data, Group(*parts), ok=not findings)
    return 1 if findings else 0
