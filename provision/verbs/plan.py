"""`provision plan SPEC [--out FILE]`: create / keep / destroy against what state records, and
for each kept host whether the spec change keeps it, updates it in place or replaces it (and
which fields cause it). A Kubernetes version change the skew policy refuses is exit 2.

`--out FILE` saves the plan with fingerprints of the spec and the state it was made from;
`provision up SPEC --plan FILE` applies exactly that plan, or refuses (exit 2) when either
changed since (terraform's saved plans, kops' review-then-apply).
"""
from __future__ import annotations

from ..app import App
from ..changes import host_changes
from ..errors import UserError
from ..plan import plan
from ..saved_plan import saved_plan, write_plan_file
from ..version_skew import check_spec
from .plan_table import plan_table

def run(app: App, out_file: str | None = None) -> None:
    spec = app.spec
    state = app.store.read()
    result = plan(spec, state)
    skew = check_spec(spec, state, [(h.name, h.role) for h in result.create])
    if not skew.allowed:
        raise UserError(skew.reason)
    changes = host_changes(spec, state, result)
    data = result.to_json()
    data["changes"] = {name: change.to_json() for name, change in changes.items()}
    if skew.order:
        data["kubernetes_version_order"] = list(skew.order)
    if out_file:
        write_plan_file(out_file, saved_plan(spec, state, app.store.list_blobs(), result, changes))
        data["saved"] = str(out_file)
        app.ui.log("plan", f"saved to {out_file}; apply exactly this plan with: "
                           f"{app.command('up', extra=('--plan', out_file))}")
    table = plan_table(app, result, changes)
    options = spec.provider.options
    if hasattr(options, "ssh_cidrs") and hasattr(options, "api_cidrs"):
        # who may reach the hosts: the defaults are wide open, so plan says so before up
        data["access"] = {"ssh_cidrs": list(options.ssh_cidrs), "api_cidrs": list(options.api_cidrs)}
        table.caption = (f"access: SSH from {', '.join(options.ssh_cidrs)} (provider.ssh_cidrs); API 6443 from "
                         f"{', '.join(options.api_cidrs)} and the VPC (provider.api_cidrs)")
    from ..providers.pools import pool_providers_needs
    own = pool_providers_needs(spec, state)
    if own:  # cloud bursting: pools made by another provider, shown apart with what they need
        data["pool_providers"] = own
        lines = [f"pool {e['pool']} on {e['provider']}{' (burst pool)' if e['burst'] else ''}: "
                 + "; ".join(e["needs"]) for e in own]
        table.caption = "\n".join(([table.caption] if table.caption else []) + lines)
    app.ui.result(data, table)
