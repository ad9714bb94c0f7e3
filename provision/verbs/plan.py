"""`provision plan SPEC [--out FILE]`: create / keep / destroy against what state records.

`--out FILE` saves the plan with fingerprints of the spec and the state it was made from;
`provision up SPEC --plan FILE` applies exactly that plan, or refuses (exit 2) when either
changed since (terraform's saved plans, kops' review-then-apply).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserError
from ..plan import plan

PLAN_FORMAT = "provision-plan/v1"


def spec_fingerprint(spec) -> str:
    """sha256 of the parsed spec (comments and key order do not count, values do)."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def state_fingerprint(state: dict, blobs: list[str]) -> str:
    """sha256 of the state document and the names of the stored files (PKI, rendered configs)."""
    names = [name for name in blobs if name not in ("lock", "state.json")]
    return hashlib.sha256(json.dumps([state, names], sort_keys=True, default=str).encode()).hexdigest()


def plan_table(app, result):
    rows = [["create", h.name, h.pool, h.role, h.address or "", "yes" if h.etcd else ""] for h in result.create]
    rows += [["keep", h.name, h.pool, h.role, h.address or "", "yes" if h.etcd else ""] for h in result.keep]
    rows += [["destroy", n, "", "", "", ""] for n in result.destroy]
    return app.ui.table(f"plan for {app.spec.name}: {len(result.create)} to create, {len(result.keep)} to keep, "
                        f"{len(result.destroy)} to destroy",
                        ["action", "host", "pool", "role", "address", "etcd"], rows,
                        ids=("action", "host", "pool", "address"))


def saved_plan(spec, state: dict, blobs: list[str], result) -> dict:
    return {"format": PLAN_FORMAT, "cluster": spec.name, "spec_sha256": spec_fingerprint(spec),
            "state_serial": int(state.get("serial", 0)), "state_sha256": state_fingerprint(state, blobs),
            "plan": result.to_json()}


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
    data = result.to_json()
    if out_file:
        write_plan_file(out_file, saved_plan(spec, state, app.store.list_blobs(), result))
        data["saved"] = str(out_file)
        app.ui.log("plan", f"saved to {out_file}; apply exactly this plan with: "
                           f"{app.command('up', extra=('--plan', out_file))}")
    app.ui.result(data, plan_table(app, result))
