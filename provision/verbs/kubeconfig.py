"""`provision kubeconfig SPEC [--out FILE|-]`: write the admin kubeconfig (0600), print its path.

`--out -` writes it to standard output. An --out whose directory does not exist is refused
(exit 2): nothing but the file itself is ever created."""
from __future__ import annotations

import sys
from pathlib import Path

from ..app import App
from ..errors import ActionError, UserError
from ..phases.kubeconfig import admin_kubeconfig, api_server_url, write_admin_kubeconfig


def run(app: App, out_file: str | None) -> int:
    if out_file and out_file != "-" and not Path(out_file).parent.absolute().is_dir():
        raise UserError(f"--out: cannot write {out_file}: directory {Path(out_file).parent} does not exist")
    app.require_state()
    state = app.store.read()
    if out_file == "-":
        data = admin_kubeconfig(app.spec, app.store, state)
        if app.ui.json:  # the envelope stays the one document on stdout; the secret is not in it
            raise UserError("--out: - (standard output) cannot be combined with --output json")
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return 0
    try:
        path, changed = write_admin_kubeconfig(app.spec, app.store, state, Path(out_file) if out_file else None)
    except OSError as err:
        where = err.filename or out_file
        if out_file:
            raise UserError(f"--out: cannot write {out_file}: {err.strerror}") from None
        raise ActionError(f"kubeconfig: cannot write {where}: {err.strerror}") from None
    app.ui.result({"path": str(path), "changed": changed, "server": api_server_url(app.spec, state)}, str(path))
    return 0
