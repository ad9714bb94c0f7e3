"""`provision plan SPEC [--out FILE]`: create / keep / destroy against what state records, and
for each kept host whether the spec change keeps it, updates it in place or replaces it (and
which fields cause it). A Kubernetes version change the skew policy refuses is exit 2.

`--out FILE` saves the plan with fingerprints of the spec and the state it was made from;
`provision up SPEC --plan FILE` applies exactly that plan, or refuses (exit 2) when either
changed since (terraform's saved plans, kops' review-then-apply).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..changes import KEEP, host_changes
from ..errors import UserError
from ..plan import plan
from ..version_skew import check_spec

PLAN_FORMAT = "provision-plan/v1"


def spec_fingerprint(spec) -> str:
    """sha256 of the parsed spec (comments and key order do not count, values do)."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def state_fingerprint(state: dict, blobs: list[str]) -> str:
    """sha256 of the state document and the names of the stored files (PKI, rendered configs)."""
    names = [name for name in blobs if name not in ("lock", "state.json")]
    return hashlib.sha256(json.dumps([state, names], sort_keys=True, default=str).encode()).hexdigest()


def plan_table(app, result, changes=None):
    """The plan as a table; with `changes` (changes.host_changes), kept hosts show keep, update,
    replace or unknown, and the fields that cause it."""
    changes = changes or {}
    where = {p.name: f"{p.name} ({p.provider.name})" for p in app.spec.pools if p.provider is not None}
    rows = [["create", h.name, where.get(h.pool, h.pool), h.role, h.address or "", "yes" if h.etcd else "", ""]
            for h in result.create]
    rows += [[changes[h.name].action if h.name in changes else "keep", h.name, where.get(h.pool, h.pool), h.role,
              h.address or "",
              "yes" if h.etcd else "", changes[h.name].reason if h.name in changes else ""] for h in result.keep]
    rows += [["destroy", n, "", "", "", "", ""] for n in result.destroy]
    counts = change_counts(changes)
    title = (f"plan for {app.spec.name}: {len(result.create)} to create, {len(result.keep)} to keep, "
             f"{len(result.destroy)} to destroy")
    if counts:
        title += " (of those kept: " + ", ".join(f"{n} {action}" for action, n in counts.items()) + ")"
    return app.ui.table(title, ["action", "host", "pool", "role", "address", "etcd", "because"], rows,
                        ids=("action", "host", "pool", "address"))


def change_counts(changes) -> dict[str, int]:
    """How many kept hosts each action other than keep applies to (update, replace, unknown)."""
    counts: dict[str, int] = {}
    for change in changes.values():
        if change.action != KEEP:
            counts[change.action] = counts.get(change.action, 0) + 1
    return dict(sorted(counts.items()))


def saved_plan(spec, state: dict, blobs: list[str], result, changes=None) -> dict:
    """What `plan --out` saves: the hosts to create, keep and destroy, what the spec does to
    each kept host (keep, update, replace; `changes.host_changes`), and fingerprints of the
    spec and state it was made from (so `up --plan` refuses a stale plan)."""
    return {"format": PLAN_FORMAT, "cluster": spec.name, "spec_sha256": spec_fingerprint(spec),
            "state_serial": int(state.get("serial", 0)), "state_sha256": state_fingerprint(state, blobs),
            "plan": result.to_json(),
            "changes": {name: change.to_json() for name, change in (changes or {}).items()}}


def write_plan_file(out_file: str, doc: dict) -> None:
    """Write the saved plan; its directory must exist (nothing else is created)."""
    path = Path(out_file)
    if not path.parent.absolute().is_dir():
        raise UserError(f"--out: directory {path.parent} does not exist")
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"--out: cannot write {out_file}: {err.strerror}") from None


def run(app, out_file: str | None = None) -> None:
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
