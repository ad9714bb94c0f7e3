"""`provision render SPEC --out DIR`: one config per distinct machine and DIR/index.json.

Creates the PKI first when state has none (idempotent, under the cluster lock), so a spec
renders on its own; the configs hold private keys and are written 0600.
"""
from __future__ import annotations

from pathlib import Path

from .. import artifacts
from ..errors import UserError
from ..phases import RunContext
from ..phases import pki as pki_phase
from ..phases import render as render_phase
from ..plan import plan
from ..render import render_cluster, write_rendered
from ..state import command_line


def run(app, out_dir: str) -> int:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out_dir} exists and is not a directory")
    spec = app.spec
    store = app.store
    state = store.read()
    ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui)
    view = state
    if not state.get("artifacts"):
        served = render_phase.served_artifacts(ctx)
        if served:
            view = dict(state, artifacts=served)
    artifacts.check(spec, view)  # a missing hash is the spec's problem: fail before making anything
    with store.lock(command_line()):
        state = store.read()
        view = dict(view, **{k: v for k, v in state.items() if k != "artifacts"})
        ctx = RunContext(spec=spec, store=store, state=state, ui=app.ui)
        pki_phase.run(ctx)
        if spec.etcd.discovery == "token" and not (state.get("etcd") or {}).get("discovery_token_url"):
            state.setdefault("etcd", {})["discovery_token_url"] = render_phase.discovery_token(
                spec.etcd.discovery_url, spec.etcd.count)
            store.write(state)
        hosts = plan(spec, state).desired
        rendered = render_cluster(spec, view, store, hosts)
    written = write_rendered(rendered, out)
    app.ui.log("render", f"wrote {len(rendered.files)} configs for {len(hosts)} hosts to {out_dir}")
    app.ui.result({"out": str(out), "files": sorted(rendered.files), "index": rendered.index},
                  "\n".join(str(p) for p in written))
    return 0
