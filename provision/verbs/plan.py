"""`provision plan SPEC`: create / keep / destroy against what state records."""
from __future__ import annotations

from ..plan import plan


def run(app) -> None:
    spec = app.spec
    result = plan(spec, app.store.read())
    rows = [["create", h.name, h.pool, h.role, h.address or "", "yes" if h.etcd else ""] for h in result.create]
    rows += [["keep", h.name, h.pool, h.role, h.address or "", "yes" if h.etcd else ""] for h in result.keep]
    rows += [["destroy", n, "", "", "", ""] for n in result.destroy]
    table = app.ui.table(f"plan for {spec.name}: {len(result.create)} to create, {len(result.keep)} to keep, "
                         f"{len(result.destroy)} to destroy",
                         ["action", "host", "pool", "role", "address", "etcd"], rows)
    app.ui.result(result.to_json(), table)
