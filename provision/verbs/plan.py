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
    doc = result.to_json()
    options = spec.provider.options
    if hasattr(options, "ssh_cidrs") and hasattr(options, "api_cidrs"):
        # who may reach the hosts: the defaults are wide open, so plan says so before up
        doc["access"] = {"ssh_cidrs": list(options.ssh_cidrs), "api_cidrs": list(options.api_cidrs)}
        table.caption = (f"access: SSH from {', '.join(options.ssh_cidrs)} (provider.ssh_cidrs); API 6443 from "
                  f"{', '.join(options.api_cidrs)} and the VPC (provider.api_cidrs)")
    app.ui.result(doc, table)
