"""`provision plan SPEC [--out FILE]`: create / keep / destroy against what state records, and
for each kept host whether the spec change keeps it, updates it in place or replaces it (and
which fields cause it). A Kubernetes version change the skew policy refuses is exit 2.

`--out FILE` saves the plan with fingerprints of the spec and the state it was made from;
`provision up SPEC --plan FILE` applies exactly that plan, or refuses (exit 2) when either
changed since (terraform's saved plans, kops' review-then-apply). The work is
`provision.api.Cluster.review`; this verb writes the file and formats.
"""
from __future__ import annotations

from ..app import App
from ..providers.burst_reach import refuse_blocked
from ..saved_plan import write_plan_file
from .plan_table import plan_table


def run(app: App, out_file: str | None = None) -> None:
    spec = app.spec
    review = app.cluster().review(save=bool(out_file))
    result, changes = review.plan, review.changes
    refuse_blocked(review.pool_providers)  # cloud bursting: a need the rules refuse, before any plan file
    data = result.to_json()
    data["changes"] = {name: change.to_json() for name, change in changes.items()}
    if review.kubernetes_version_order:
        data["kubernetes_version_order"] = list(review.kubernetes_version_order)
    if out_file and review.saved is not None:
        write_plan_file(out_file, review.saved)
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
    own = review.pool_providers
    if own:  # cloud bursting: pools made by another provider, shown apart with what they need
        data["pool_providers"] = own
        lines = [f"pool {e['pool']} on {e['provider']}{' (burst pool)' if e['burst'] else ''}: "
                 + "; ".join(e["needs"]) for e in own]
        table.caption = "\n".join(([table.caption] if table.caption else []) + lines)
    app.ui.result(data, table)
