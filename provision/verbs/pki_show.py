"""`provision pki show SPEC`: every certificate with subject, SANs and expiry; no secrets."""
from __future__ import annotations

from .. import pki
from ..app import App


def run(app: App) -> int:
    app.require_state()
    certs = pki.show(app.spec, app.store)
    if not certs:
        app.ui.warn(f"cluster {app.spec.name} has no certificates yet: "
                    f"`{app.command('up', extra=('--until', 'pki', '--yes'))}` makes them")
    rows = [[c["name"], c.get("subject", ""), ", ".join(c.get("sans", [])), c.get("not_after", c.get("error")),
             c.get("days_left", ""), "yes" if c.get("verified") else "NO"] for c in certs]
    table = app.ui.table(f"certificates of {app.spec.name}", ["name", "subject", "SANs", "expires", "days",
                                                              "verifies"], rows, ids=("name",))
    from .. import pki_ca
    rotation = pki_ca.describe(app.store.read())
    if rotation:
        app.ui.log("pki", rotation)
    app.ui.result({"certificates": certs, "ca_rotation": rotation}, table)
    return 0
