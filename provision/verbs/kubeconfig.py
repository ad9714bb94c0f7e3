"""`provision kubeconfig SPEC [--out FILE]`: write the admin kubeconfig (0600), print its path."""
from __future__ import annotations

from pathlib import Path

from ..errors import ActionError, UserError
from ..phases.kubeconfig import api_server_url, write_admin_kubeconfig


def run(app, out_file: str | None) -> int:
    state = app.store.read()
    try:
        path, changed = write_admin_kubeconfig(app.spec, app.store, state, Path(out_file) if out_file else None)
    except OSError as err:
        where = err.filename or out_file
        if out_file:
            raise UserError(f"--out: cannot write {out_file}: {err.strerror}") from None
        raise ActionError(f"kubeconfig: cannot write {where}: {err.strerror}") from None
    app.ui.result({"path": str(path), "changed": changed, "server": api_server_url(app.spec, state)}, str(path))
    return 0
