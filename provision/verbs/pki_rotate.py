"""`provision pki rotate SPEC [--leaf NAME]`: renew leaf certificates with the same CAs."""
from __future__ import annotations

from .. import pki
from ..pki_agents import issued
from ..app import App
from ..errors import ActionError, UserError
from ..plan import plan
from ..state import command_line


def check_request(spec, store, leaf: str | None, hint: str = "provision up SPEC --until pki") -> None:
    """Refuse a bad --leaf or a cluster without PKI before taking the lock, so nothing is created."""
    known = [w.name for w in pki.wanted_certs(spec, plan(spec, store.read()).desired)] + \
        [pki.agent_identity(host) for host in issued(store)]  # the agents' of the hosts bootstrapped
    if leaf is not None and leaf not in known:
        hint = " (a CA is rotated by `pki rotate-ca`, in three phases)" if leaf in pki.CAS else ""
        raise UserError(f"--leaf: no leaf certificate named {leaf!r}{hint}; known: {', '.join(known)}")
    if store.read_blob(f"{pki.PREFIX}{pki.CA}.crt") is None:
        raise ActionError(f"no PKI yet: run `{hint}` first")


def run(app: App, leaf: str | None) -> int:
    spec = app.spec
    store = app.store
    check_request(spec, store, leaf, app.command("up", extra=("--until", "pki", "--yes")))
    with store.lock(command_line()):
        hosts = plan(spec, store.read()).desired
        renewed = pki.rotate(spec, store, hosts, leaf=leaf, log=lambda message: app.ui.log("pki", message))
    # Said as it is: this changes state only; `up` re-renders the configs and its rollout phase
    # updates the running hosts whose config changed.
    app.ui.result({"renewed": renewed, "running_hosts_updated": False},
                  f"renewed {len(renewed)} certificates in state; `{app.command('up', extra=('--yes',))}` puts them into the "
                  "configs and the admin kubeconfig and updates the running hosts in place (one master at a "
                  "time); new hosts boot with them")
    return 0
