"""Each host agent's own etcd client certificate (`pki/etcd-agent-<host>.crt` and `.key`),
issued when the host is bootstrapped, not when the cluster's configs are rendered.

No boot config carries an agent certificate (workers of a pool share one config): the `secrets`
phase delivers it over SSH with the host's other keys. So it is made right before that delivery,
for the hosts being delivered to (`ensure`), and a `render` of a 1,000-worker spec makes only
the cluster's own certificates. Blob names are those `pki.wanted_certs` used to give these
certificates, so a state made before keeps its certificates and a re-run changes nothing.

A CA rotation's `reissue` issues again the agent certificates state holds (`issued`): those of
the hosts that were bootstrapped; `host_identity.forget_certificates` drops a gone host's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from cryptography import x509

from . import pki
from .certs import CLIENT, CertSpec, SigningKey, signing_ca, summarize
from .errors import ActionError

if TYPE_CHECKING:
    from .spec import Spec
    from .state import StateStore


def agent_cert(host: str) -> CertSpec:
    """What `host`'s agent certificate is: an etcd client whose CN is its etcd user."""
    name = pki.agent_identity(host)
    return CertSpec(name, name, CLIENT, issuer=pki.ETCD_CA)


def issued(store: "StateStore") -> list[str]:
    """The hosts whose agent certificate state holds, sorted."""
    prefix = f"{pki.PREFIX}{pki.agent_identity('')}"
    return sorted(blob[len(prefix):-len(".crt")] for blob in store.list_blobs(pki.PREFIX)
                  if blob.startswith(prefix) and blob.endswith(".crt"))


def _etcd_ca(store: "StateStore") -> tuple[SigningKey, x509.Certificate]:
    """The stored etcd CA; never made here (a new one would orphan every member's certificate)."""
    found = signing_ca(store.read_blob(f"{pki.PREFIX}{pki.ETCD_CA}.crt"),
                       store.read_blob(f"{pki.PREFIX}{pki.ETCD_CA}.key"))
    if found is None:
        raise ActionError("agent certificates: state has no usable etcd CA; the pki phase makes it "
                          "(`provision up SPEC --until pki`)")
    return found


def missing(store: "StateStore", hosts: Iterable[str]) -> list[str]:
    """Those of `hosts` with no agent certificate or key in state (what `ensure` would make)."""
    return [host for host in hosts
            if any(store.read_blob(f"{pki.PREFIX}{pki.agent_identity(host)}{suffix}") is None
                   for suffix in (".crt", ".key"))]


def ensure(spec: "Spec", store: "StateStore", hosts: Iterable[str], log: Callable[[str], None] | None = None,
           force: bool = False) -> dict[str, list[str]]:
    """Issue the agent certificate of each of `hosts` that has none fit for use (missing, another
    CA, close to expiry, another key type; every one with `force`), reuse the others.

    Returns `{"created": [...], "reused": [...]}` (blob names, no secrets). The caller batches the
    durable writes (`files.batched_sync`).
    """
    issuer = _etcd_ca(store)
    made = pki._PKI(spec, store, log)
    cas = {pki.ETCD_CA: issuer}
    for host in hosts:
        made.leaf(agent_cert(host), cas, force=force)
    if made.created:
        made.log(summarize("issued agent certificates", made.created))
    return {"created": made.created, "reused": made.reused}
