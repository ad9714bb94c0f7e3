"""`provision pki rotate SPEC [--leaf NAME]`: renew leaf certificates with the same CAs."""
from __future__ import annotations

from .. import pki
from ..plan import plan
from ..state import command_line


def run(app, leaf: str | None) -> int:
    spec = app.spec
    store = app.store
    with store.lock(command_line()):
        hosts = plan(spec, store.read()).desired
        renewed = pki.rotate(spec, store, hosts, leaf=leaf, log=lambda message: app.ui.log("pki", message))
    app.ui.result({"cluster": spec.name, "renewed": renewed},
                  f"renewed {len(renewed)} certificates; run `provision up SPEC` to roll them out")
    return 0
