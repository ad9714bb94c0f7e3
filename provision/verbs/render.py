"""`provision render SPEC --out DIR [--pin]`: one config per distinct machine and DIR/index.json.

Creates the PKI first when state has none (idempotent, under the cluster lock), so a spec
renders on its own; the configs hold no private key or token (the secrets phase of `up` delivers
those over SSH) and are written 0600. Downloads use hashes
from the spec, the catalogue or pins recorded in state; without one, render fails (exit 2)
before touching anything, unless `--pin` asks it to pin them on first use (downloads them
once and records their sha512 in state, as `provision up` does in its render phase).
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import artifacts
from ..app import App
from ..errors import ActionError, UserError
from ..phases import RunContext
from ..phases import pki as pki_phase
from ..phases import render as render_phase
from ..plan import plan
from ..render import render_cluster, write_rendered
from ..state import command_line


def check_writable(out: Path, out_dir: str) -> None:
    """--out must be, or be creatable in, a writable directory: refuse before making anything."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out: cannot write into {out_dir} ({existing} is not writable)")


def run(app: App, out_dir: str, pin: bool = False) -> int:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out_dir} exists and is not a directory")
    check_writable(out, out_dir)
    spec = app.spec
    store = app.store
    state = store.read()
    ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui)
    served = None if state.get("artifacts") else render_phase.served_artifacts(ctx)
    if not pin:
        # a missing hash is the spec's problem: fail before making anything
        artifacts.check(spec, render_phase.artifact_view(state, served))
    with store.lock(command_line()):
        state = store.read()
        ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui)
        missing = artifacts.unpinned(spec, render_phase.artifact_view(state, served))
        if missing and not pin:  # another process changed state since the check above
            raise UserError(artifacts.missing_hash_message(missing))
        if missing:
            render_phase.pin_on_first_use(ctx, missing)
        artifacts.check(spec, render_phase.artifact_view(state, served))
        made = pki_phase.run(ctx).get("created") or []
        if made:  # said, not silent: render made secrets in state
            app.ui.log("render", ("created the cluster's CA and " if "ca" in made else "created ")
                       + f"{len(made)} certificates and keys in state (the configs carry them)")
        if spec.etcd.discovery == "token" and not (state.get("etcd") or {}).get("discovery_token_url"):
            state.setdefault("etcd", {})["discovery_token_url"] = render_phase.discovery_token(
                spec.etcd.discovery_url or "", spec.etcd.count)  # validation requires it with token
            store.write(state)
        hosts = plan(spec, state).desired
        rendered = render_cluster(spec, render_phase.artifact_view(state, served), store, hosts)
    try:
        written = write_rendered(rendered, out)
    except OSError as err:
        raise ActionError(f"--out: cannot write into {out_dir}: {err.strerror} ({err.filename})") from None
    app.ui.log("render", f"wrote {len(rendered.files)} configs for {len(hosts)} hosts to {out_dir}")
    app.ui.result({"out": str(out), "files": sorted(rendered.files), "index": rendered.index,
                   "pki_created": made},
                  "\n".join(str(p) for p in written))
    return 0
