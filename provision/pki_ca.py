"""CA rotation with a trust overlap, one explicit phase at a time (`provision pki rotate-ca`).

A CA cannot be swapped in one step: a host that trusts only the new CA refuses every peer still
presenting a certificate of the old one. So the rotation goes through three phases, each rolled
onto every running host by `provision up` (its rollout phase updates the hosts whose config
changed, one master at a time) before the next may start:

1. `trust`: a new CA is made (`pki/<ca>.next.crt` and `.key`) and hosts are given a bundle of
   the old and the new CA (`pki/<ca>.trust.crt`) wherever they trust the CA; leaves stay
   signed by the old CA.
2. `reissue`: the new CA becomes the signing CA (`pki/<ca>.crt` and `.key`) and every leaf it
   signs is issued again; hosts still trust both, so members with old and new leaves talk.
3. `drop`: the bundle goes; hosts trust the new CA alone.

`state["ca_rotation"]` records the CA, the phase and whether `up` has rolled it onto every host
(`rolled`, set by the rollout phase), so a killed run resumes and `status`/`pki show` say
where a cluster is.

The etcd, Kubernetes and front-proxy CAs rotate this way. Every file a host trusts a CA with
(`/etc/ssl/etcd/ca.crt`, `/etc/kubernetes/pki/ca.crt`, `.../front-proxy-ca.crt`: kube-apiserver's
`--client-ca-file` and `--requestheader-client-ca-file`, the kubeconfigs' `certificate-authority`,
kubelet's `clientCAFile`, controller-manager's `--root-ca-file`, which service-account tokens and
so kube-proxy's ConfigMap trust) is rendered from the CA's blob, which `trusted_blob` turns into
the bundle during the overlap. The one place that must carry the Kubernetes CA alone is what the
controller-manager signs kubelets' CSRs with (`--cluster-signing-cert-file`, whose first
certificate must match the key): it reads `signing_blob`, the signing CA itself, old until
`reissue` and new from then on. Kubelet client certificates the old CA signed stay trusted through
the bundle until `drop`; `reissue` changes the signing CA every node holds, and kubelet's unit
then drops a client certificate the signing CA did not issue so that kubelet bootstraps a new one
(signed by the new CA) before the old CA leaves the bundle.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Callable, Mapping, MutableMapping, Sequence

from . import pki, pki_agents
from .certs import cert_pem, key_pem, make_ca
from .errors import ActionError, UserError

if TYPE_CHECKING:
    from .plan import HostPlan
    from .spec import Spec
    from .state import StateStore

STATE_KEY = "ca_rotation"
TRUST, REISSUE, DROP = "trust", "reissue", "drop"
PHASES = (TRUST, REISSUE, DROP)
# `--ca` values and the CA each names
ROTATABLE = {"etcd": pki.ETCD_CA, "kubernetes": pki.CA, "front-proxy": pki.FRONT_PROXY_CA}
# what a config names to get a CA alone, never the bundle (see signing_blob)
SIGNING_SUFFIX = ".signing.crt"


def next_crt(ca: str) -> str:
    return f"{pki.PREFIX}{ca}.next.crt"


def next_key(ca: str) -> str:
    return f"{pki.PREFIX}{ca}.next.key"


def bundle(ca: str) -> str:
    return f"{pki.PREFIX}{ca}.trust.crt"


def signing_blob(ca: str) -> str:
    """The name a config uses for CA `ca`'s certificate alone (what signs with its key), even
    while a rotation has a bundle: `trusted_blob` maps it to `pki/<ca>.crt`."""
    return f"{pki.PREFIX}{ca}{SIGNING_SUFFIX}"


def trusted_blob(store: "StateStore", name: str) -> str:
    """The blob to trust for CA certificate blob `name`: the old-and-new bundle while a CA
    rotation has one, else `name` itself; `signing_blob(ca)` names the CA alone."""
    if name.startswith(pki.PREFIX) and name.endswith(SIGNING_SUFFIX) \
            and name[len(pki.PREFIX):-len(SIGNING_SUFFIX)] in pki.CAS:
        return name[:-len(SIGNING_SUFFIX)] + ".crt"
    ca = name[len(pki.PREFIX):-len(".crt")] if name.startswith(pki.PREFIX) and name.endswith(".crt") else None
    if ca in pki.CAS and store.read_blob(bundle(ca)) is not None:
        return bundle(ca)
    return name


def progress(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recorded rotation ({"ca", "phase", "rolled"}), or None when none is under way."""
    value = state.get(STATE_KEY)
    return dict(value) if isinstance(value, Mapping) and value.get("phase") in PHASES else None


def describe(state: Mapping[str, Any]) -> str | None:
    """One line on where a CA rotation stands (None: none under way)."""
    now = progress(state)
    if now is None:
        return None
    step = PHASES.index(now["phase"]) + 1
    rolled = "rolled onto every host" if now.get("rolled") else "not yet rolled onto every host (`provision up`)"
    return f"CA rotation of {now['ca']}: phase {step} of 3 ({now['phase']}), {rolled}"


def mark_rolled(state: MutableMapping[str, Any]) -> bool:
    """The rollout phase finished with every running host on the current configs: the phase
    under way is rolled. Whether anything changed."""
    now = state.get(STATE_KEY)
    if isinstance(now, MutableMapping) and now.get("phase") in PHASES and not now.get("rolled"):
        now["rolled"] = True
        return True
    return False


def check_request(state: Mapping[str, Any], store: "StateStore", ca: str) -> str:
    """The CA's blob name for `--ca`; UserError naming `--ca` for one not rotatable, another
    rotation under way, or a phase not rolled out yet (nothing is changed)."""
    if ca not in ROTATABLE:
        raise UserError(f"--ca: {ca!r} cannot be rotated (yet); choose one of: {', '.join(sorted(ROTATABLE))}")
    name = ROTATABLE[ca]
    if store.read_blob(f"{pki.PREFIX}{name}.crt") is None:
        raise ActionError("no PKI yet: run `provision up SPEC --until pki` first")
    now = progress(state)
    if now is not None and now["ca"] != name:
        raise UserError(f"--ca: a rotation of {now['ca']} is under way; finish it first")
    if now is not None and not now.get("rolled"):
        raise UserError(f"--ca: phase {now['phase']} of the {name} rotation is not rolled onto every host yet: "
                        "run `provision up SPEC` first")
    return name


def advance(spec: "Spec", store: "StateStore", state: MutableMapping[str, Any], hosts: Sequence["HostPlan"], ca: str,
            log: Callable[[str], None] = lambda m: None) -> str:
    """Start the next phase of `ca`'s rotation (check_request first); returns it ("done" once
    the last phase was rolled). Each step is idempotent, so a run killed part way is repeated."""
    now = progress(state)
    if now is None:
        old = store.read_blob(f"{pki.PREFIX}{ca}.crt") or b""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
        # another subject than the old CA: a verifier picks the issuer by name
        key, cert = make_ca(f"{spec.name}-{ca}-{stamp}", spec.pki.ca_days, spec.pki.algorithm)
        store.write_blob(next_key(ca), key_pem(key), secret=True)
        store.write_blob(next_crt(ca), cert_pem(cert), secret=False)
        store.write_blob(bundle(ca), old.rstrip(b"\n") + b"\n" + cert_pem(cert), secret=False)
        state[STATE_KEY] = {"ca": ca, "phase": TRUST, "rolled": False}
        log(f"{ca}: new CA made; hosts trust the old and the new CA once `up` rolls phase 1 out")
        return TRUST
    if now["phase"] == TRUST:
        next_key_pem, next_cert_pem = store.read_blob(next_key(ca)), store.read_blob(next_crt(ca))
        if next_key_pem is not None and next_cert_pem is not None:  # absent: promoted already by a killed run
            store.write_blob(f"{pki.PREFIX}{ca}.key", next_key_pem, secret=True)
            store.write_blob(f"{pki.PREFIX}{ca}.crt", next_cert_pem, secret=False)
        state[STATE_KEY] = {"ca": ca, "phase": REISSUE, "rolled": False}
        result = pki.ensure_pki(spec, store, hosts, log=log)  # leaves of the old CA no longer verify
        if ca == pki.ETCD_CA:  # and the agents' of the hosts bootstrapped so far (pki_agents)
            result["created"] += pki_agents.ensure(spec, store, pki_agents.issued(store), log=log)["created"]
        for blob in (next_key(ca), next_crt(ca)):
            store.delete_blob(blob)
        log(f"{ca}: the new CA signs; {len(result['created'])} certificates issued again")
        return REISSUE
    if now["phase"] == REISSUE:
        store.delete_blob(bundle(ca))
        state[STATE_KEY] = {"ca": ca, "phase": DROP, "rolled": False}
        log(f"{ca}: the old CA is dropped from what hosts trust once `up` rolls phase 3 out")
        return DROP
    state.pop(STATE_KEY, None)
    log(f"{ca}: rotation finished")
    return "done"
