"""`provision pki rotate-ca SPEC --ca etcd|kubernetes|front-proxy`: start the next phase of a CA
rotation with a trust overlap (provision.pki_ca); `provision up SPEC` rolls each phase onto the
running hosts."""
from __future__ import annotations

from .. import pki_ca
from ..app import App
from ..plan import plan
from ..state import command_line

NEXT_STEP = {
    pki_ca.TRUST: "phase 1 of 3: hosts will trust the old and the new CA; leaves stay signed by the old one",
    pki_ca.REISSUE: "phase 2 of 3: the new CA signs; every certificate it signs was issued again",
    pki_ca.DROP: "phase 3 of 3: hosts will trust the new CA alone",
}


def run(app: App, ca: str) -> int:
    spec, store = app.spec, app.store
    app.require_state()
    name = pki_ca.check_request(store.read(), store, ca)  # before the lock: a refusal changes nothing
    with store.lock(command_line()):
        state = store.read()
        pki_ca.check_request(state, store, ca)
        phase = pki_ca.advance(spec, store, state, plan(spec, state).desired, name,
                               log=lambda message: app.ui.log("pki", message))
        store.write(state)
    up = app.command("up", extra=("--yes",))
    again = app.command("pki", "rotate-ca", extra=("--ca", ca))
    if phase == "done":
        app.ui.result({"ca": name, "phase": None, "done": True},
                      f"the rotation of {name} is finished: every host trusts the new CA alone")
        return 0
    follow = f"`{up}` rolls it onto every running host; then `{again}`" + (
        " finishes the rotation" if phase == pki_ca.DROP else " starts the next phase")
    app.ui.result({"ca": name, "phase": phase, "done": False}, f"{name}: {NEXT_STEP[phase]}. {follow}")
    return 0
