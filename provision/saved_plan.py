"""A saved plan (`provision plan SPEC --out FILE`): the plan with fingerprints of the spec and
state it was made from, so `up --plan FILE` applies exactly it or refuses a stale one
(terraform's saved plans, kops' review-then-apply).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .spec import Spec

PLAN_FORMAT = "provision-plan/v1"


def spec_fingerprint(spec) -> str:
    """sha256 of the parsed spec (comments and key order do not count, values do)."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def state_fingerprint(state: dict, blobs: list[str]) -> str:
    """sha256 of the state document and the names of the stored files (PKI, rendered configs)."""
    names = [name for name in blobs if name not in ("lock", "state.json")]
    return hashlib.sha256(json.dumps([state, names], sort_keys=True, default=str).encode()).hexdigest()


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


Hint = Callable[..., str]  # makes the complete command a message names: hint(*words, extra=(...))


def load_saved_plan(spec: Spec, plan_file: str, hint: Hint) -> dict[str, Any]:
    """The plan `provision plan SPEC --out FILE` saved; UserError (exit 2) if it is not one for
    this cluster or the spec changed since."""
    try:
        doc = json.loads(Path(plan_file).read_text())
    except FileNotFoundError:
        raise UserError(f"--plan: {plan_file}: no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"--plan: {plan_file}: not a saved plan ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        raise UserError(f"--plan: {plan_file}: not a saved plan (written by `provision plan SPEC --out FILE`)")
    if doc.get("cluster") != spec.name:
        raise UserError(f"--plan: {plan_file} is a plan for cluster {doc.get('cluster')!r}, "
                        f"not {spec.name!r}")
    if doc.get("spec_sha256") != spec_fingerprint(spec):
        raise UserError(f"--plan: the spec changed since {plan_file} was saved; review a new plan: "
                        f"{hint('plan', extra=('--out', plan_file))}")
    return doc


def check_saved_state(doc: dict[str, Any], state: dict[str, Any], blobs: list[str], plan_file: str,
                      hint: Hint) -> None:
    """UserError (exit 2) when the state changed since the plan was saved."""
    if doc.get("state_sha256") != state_fingerprint(state, blobs):
        raise UserError(f"--plan: the state changed since {plan_file} was saved (serial "
                        f"{doc.get('state_serial')} then, {state.get('serial', 0)} now); review a new plan: "
                        f"{hint('plan', extra=('--out', plan_file))}")
