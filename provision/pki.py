"""The cluster's PKI: a CA, every certificate and key the hosts and provision need, a bootstrap
token and provision's own SSH key pair, kept as blobs under `pki/` in the state store.

Everything is idempotent: valid material is reused; missing or unfit material (other SANs,
another CA, close to expiry, another key type) is made again. Private keys and the token are
written as secrets (0600); nothing secret is returned, logged or printed.

Blob layout: `pki/<name>.crt` and `pki/<name>.key` for each certificate of `wanted_certs` (and
of each bootstrapped host's agent, `pki_agents`, issued when the host is, not here),
`pki/sa.key`/`pki/sa.pub` (service-account signing), `pki/bootstrap-token` with its expiry
`pki/bootstrap-token.expires` (RFC 3339, UTC), `pki/ssh/id_ed25519` and `pki/ssh/id_ed25519.pub`.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import faults
# one certificate's making and checking lives in `certs`; these names stay importable from here
from .certs import (BACKDATE, CA, CLIENT, PEER, RENEW_BEFORE_FRACTION, SERVER, USAGES,  # noqa: F401
                    CertSpec, _fresh, _load_cert, _load_key, _name, _now, _same_public_key,
                    cert_pem, cert_sans, cert_usages, key_matches, key_pem, leaf_fits, make_ca,
                    make_leaf, new_key, signing_ca, summarize, SigningKey)
from .errors import ActionError, UserError

if TYPE_CHECKING:
    from .plan import HostPlan
    from .spec import Spec
    from .state import StateStore

PREFIX = "pki/"
FRONT_PROXY_CA = "front-proxy-ca"
# etcd trusts only its own CA: a certificate from the Kubernetes CA (which signs every
# kubelet's CSR) never reaches etcd. Its client certificates' CNs are etcd user names.
ETCD_CA = "etcd-ca"
CAS = (CA, FRONT_PROXY_CA, ETCD_CA)
SA_KEY = "pki/sa.key"
SA_PUB = "pki/sa.pub"
BOOTSTRAP_TOKEN = "pki/bootstrap-token"
BOOTSTRAP_TOKEN_EXPIRES = "pki/bootstrap-token.expires"
# The worker bootstrap token lives a day (kubeadm's default TTL): kubelet needs it only to get
# its first certificate. The pki phase (run by up, scale and headroom before they add hosts)
# makes a new one when less than BOOTSTRAP_TOKEN_RENEW_BEFORE is left, so a host added now has
# that long at least to join.
BOOTSTRAP_TOKEN_TTL = dt.timedelta(hours=24)
BOOTSTRAP_TOKEN_RENEW_BEFORE = dt.timedelta(hours=2)
SSH_KEY = "pki/ssh/id_ed25519"
SSH_PUB = "pki/ssh/id_ed25519.pub"


class BlobSource(Protocol):
    """What reads PKI blobs: a state store, or render's read-once view of one."""

    def read_blob(self, name: str) -> bytes | None: ...


@dataclass(frozen=True)
class TLSFiles:
    """Local paths of a CA certificate, a client certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def _unique(items: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))  # first occurrences, in order


def _split_names(names: Iterable[str | None]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    dns, ips = [], []
    for name in _unique(names):
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return tuple(dns), tuple(ips)


def etcd_names(host: HostPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SANs of an etcd member: its name, its planned address, localhost and 127.0.0.1."""
    return _split_names([host.name, "localhost", host.address, "127.0.0.1"])


def apiserver_names(spec: Spec, hosts: Sequence[HostPlan]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    domain = spec.kubernetes.cluster_domain
    masters = [h for h in hosts if h.role == "master"]
    return _split_names([
        "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}",
        *spec.kubernetes.api_server_names, *(h.name for h in masters), "localhost",
        spec.network.api_service_ip, *(h.address for h in masters), "127.0.0.1"])


# `root` manages etcd's users and roles; its certificate never leaves provision's state.
ETCD_CLIENTS = ("apiserver", "flannel", "fleet", "provisioner", "root")


def etcd_user(client: str) -> str:
    """The etcd user name of a client certificate: etcd takes it from the CN."""
    return "root" if client == "root" else f"etcd-{client}"


# Leaves earlier versions issued and this one does not: their blobs are deleted. kube-proxy's was
# one client key shared by every node; kube-proxy now runs as a DaemonSet with its ServiceAccount.
# The agents' shared etcd identity gave every host every other host's load key: each host has its own.
RETIRED_LEAVES = ("kube-proxy", "etcd-client-agent")


def agent_identity(host: str) -> str:
    """The blob name, certificate CN and etcd user of `host`'s agent."""
    return f"etcd-agent-{host}"


def wanted_certs(spec: Spec, hosts: Sequence[HostPlan]) -> list[CertSpec]:
    """Every leaf certificate the cluster needs for `hosts` (the planned HostPlan list); the
    agents' own (`pki_agents`) are issued as each host is bootstrapped, not here."""
    certs: list[CertSpec] = []
    for host in hosts:
        if host.etcd:
            dns, ips = etcd_names(host)
            # client auth too: etcd's grpc-gateway (/v3 JSON) dials the member with this certificate
            certs.append(CertSpec(f"etcd-server-{host.name}", host.name, PEER, (), dns, ips, issuer=ETCD_CA))
            certs.append(CertSpec(f"etcd-peer-{host.name}", host.name, PEER, (), dns, ips, issuer=ETCD_CA))
    for client in ETCD_CLIENTS:
        certs.append(CertSpec(f"etcd-client-{client}", etcd_user(client), CLIENT, issuer=ETCD_CA))
    dns, ips = apiserver_names(spec, hosts)
    certs.append(CertSpec("apiserver", "kube-apiserver", SERVER, (), dns, ips))
    certs.append(CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", CLIENT,
                          ("system:masters",)))
    for host in hosts:
        if host.role == "master":
            certs.append(CertSpec(f"kubelet-{host.name}", f"system:node:{host.name}", CLIENT, ("system:nodes",)))
    certs.append(CertSpec("controller-manager", "system:kube-controller-manager", CLIENT))
    certs.append(CertSpec("scheduler", "system:kube-scheduler", CLIENT))
    certs.append(CertSpec("admin", "kubernetes-admin", CLIENT, ("system:masters",)))
    certs.append(CertSpec("front-proxy-client", "front-proxy-client", CLIENT, issuer=FRONT_PROXY_CA))
    return certs


# ---- the store -----------------------------------------------------------------------------

def _crt(name: str) -> str:
    return f"{PREFIX}{name}.crt"


def _key(name: str) -> str:
    return f"{PREFIX}{name}.key"


class _PKI:
    """One pass over the store: loads what exists, makes what is missing, counts both."""

    def __init__(self, spec: Spec, store: StateStore, log: Callable[[str], None] | None):
        self.spec = spec
        self.store = store
        self.log = log or (lambda message: None)
        self.created: list[str] = []
        self.reused: list[str] = []

    def ca(self, name: str, common_name: str) -> tuple[SigningKey, x509.Certificate]:
        cert_data = self.store.read_blob(_crt(name))
        # a CA key of another type (never made here) cannot sign leaves: made again like a missing one
        found = signing_ca(cert_data, self.store.read_blob(_key(name)))
        if found is not None:
            self.reused.append(name)
            return found
        if _load_cert(cert_data) is not None:
            self.log(f"{name}: stored CA is missing its key, expiring or unreadable; making a new CA "
                     "(every certificate it signed is renewed)")
        key, cert = make_ca(common_name, self.spec.pki.ca_days, self.spec.pki.algorithm)
        self._store_pair(name, key, cert)
        return key, cert

    def _store_pair(self, name: str, key: SigningKey, cert: x509.Certificate) -> None:
        # key first: a crash between the two writes leaves a pair that fails its check and is made again
        self.store.write_blob(_key(name), key_pem(key), secret=True)
        self.store.write_blob(_crt(name), cert_pem(cert), secret=False)
        self.created.append(name)

    def leaf(self, want: CertSpec, cas: dict[str, tuple[SigningKey, x509.Certificate]], force: bool = False) -> None:
        ca_key, ca_cert = cas[want.issuer]
        cert = _load_cert(self.store.read_blob(_crt(want.name)))
        key = _load_key(self.store.read_blob(_key(want.name)))
        if not force and leaf_fits(want, cert, key, ca_cert, self.spec.pki.algorithm):
            self.reused.append(want.name)
            return
        key, cert = make_leaf(want, ca_key, ca_cert, self.spec.pki.leaf_days, self.spec.pki.algorithm)
        self._store_pair(want.name, key, cert)

    def service_account(self) -> None:
        key = _load_key(self.store.read_blob(SA_KEY))
        if key is not None and key_matches(key.public_key(), self.spec.pki.algorithm) \
                and self.store.read_blob(SA_PUB):
            self.reused.append("sa")
            return
        key = new_key(self.spec.pki.algorithm)
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.store.write_blob(SA_KEY, key_pem(key), secret=True)
        self.store.write_blob(SA_PUB, pub, secret=False)
        self.created.append("sa")

    def bootstrap_token(self) -> None:
        expires = bootstrap_token_expiry(self.store)
        if parse_token(self.store.read_blob(BOOTSTRAP_TOKEN)) is not None and expires is not None \
                and expires - _now() > BOOTSTRAP_TOKEN_RENEW_BEFORE:
            self.reused.append("bootstrap-token")
            return
        alphabet = string.ascii_lowercase + string.digits
        token = "".join(secrets.choice(alphabet) for _ in range(6)) + "." + \
            "".join(secrets.choice(alphabet) for _ in range(16))
        until = (_now() + BOOTSTRAP_TOKEN_TTL).replace(microsecond=0)
        # the expiry first: a crash in between leaves an old token with a new date, renewed next run
        self.store.write_blob(BOOTSTRAP_TOKEN_EXPIRES, (format_expiry(until) + "\n").encode(), secret=True)
        self.store.write_blob(BOOTSTRAP_TOKEN, token.encode() + b"\n", secret=True)
        self.created.append("bootstrap-token")

    def ssh_key(self) -> None:
        key = None
        try:
            key = serialization.load_ssh_private_key(self.store.read_blob(SSH_KEY) or b"", password=None)
        except (ValueError, TypeError):
            pass
        if isinstance(key, ed25519.Ed25519PrivateKey) and self.store.read_blob(SSH_PUB):
            self.reused.append("ssh")
            return
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        self.store.write_blob(SSH_KEY, private, secret=True)
        self.store.write_blob(SSH_PUB, public + f" provision@{self.spec.name}\n".encode(), secret=False)
        self.created.append("ssh")


def parse_token(data: bytes | None) -> tuple[str, str] | None:
    """(id, secret) of a stored bootstrap token, or None when absent or malformed."""
    if not data:
        return None
    text = data.decode(errors="replace").strip()
    token_id, _, secret = text.partition(".")
    ok = (len(token_id) == 6 and len(secret) == 16
          and all(c in string.ascii_lowercase + string.digits for c in token_id + secret))
    return (token_id, secret) if ok else None


def _cas(pki: _PKI) -> dict[str, tuple[SigningKey, x509.Certificate]]:
    return {CA: pki.ca(CA, f"{pki.spec.name}-ca"),
            FRONT_PROXY_CA: pki.ca(FRONT_PROXY_CA, f"{pki.spec.name}-front-proxy-ca"),
            ETCD_CA: pki.ca(ETCD_CA, f"{pki.spec.name}-etcd-ca")}


def ensure_pki(spec: Spec, store: StateStore, hosts: Sequence[HostPlan], log: Callable[[str], None] | None = None) -> dict:
    """Create or reuse every certificate, key and token the cluster needs for `hosts`.

    Returns `{"created": [...], "reused": [...]}` (names only, no secrets).
    """
    pki = _PKI(spec, store, log)
    cas = _cas(pki)
    faults.point(faults.FIRST_WRITE)
    wanted = wanted_certs(spec, hosts)
    for done, want in enumerate(wanted, 1):
        pki.leaf(want, cas)  # a leaf of a replaced CA no longer verifies and is made again
        faults.hosts_done(done, len(wanted))
    pki.service_account()
    pki.bootstrap_token()
    pki.ssh_key()
    for name in RETIRED_LEAVES:  # made by earlier versions, no longer trusted by anything we render
        for blob in (_crt(name), _key(name)):
            if store.read_blob(blob) is not None:
                store.delete_blob(blob)
                pki.log(f"deleted retired {blob}")
    if pki.created:
        pki.log(summarize("created", pki.created))
    pki.log(f"reused {len(pki.reused)} existing items")
    return {"created": pki.created, "reused": pki.reused}


def rotate(spec: Spec, store: StateStore, hosts: Sequence[HostPlan], leaf: str | None = None,
           log: Callable[[str], None] | None = None) -> list[str]:
    """Renew every leaf certificate (or only `leaf`) with the same CAs; returns the names renewed.

    Hosts pick new certificates up when their configs are rendered and applied again.
    """
    from .pki_agents import agent_cert, issued
    wanted = wanted_certs(spec, hosts) + [agent_cert(host) for host in issued(store)]  # the bootstrapped hosts'
    names = [w.name for w in wanted]
    if leaf is not None and leaf not in names:
        hint = " (a CA is rotated by `pki rotate-ca`, in three phases)" if leaf in CAS else ""
        raise UserError(f"--leaf: no leaf certificate named {leaf!r}{hint}; known: {', '.join(names)}")
    if store.read_blob(_crt(CA)) is None:
        raise ActionError("no PKI yet: run `provision up SPEC --until pki` first")
    pki = _PKI(spec, store, log)
    cas = _cas(pki)
    renewed = []
    for want in wanted:
        if leaf is None or want.name == leaf:
            pki.leaf(want, cas, force=True)
            renewed.append(want.name)
    pki.log(summarize("renewed", renewed))
    return renewed


def show(spec: Spec, store: StateStore) -> list[dict]:
    """Every stored certificate: name, subject, issuer, SANs, validity and whether it verifies."""
    cas = {name: _load_cert(store.read_blob(_crt(name))) for name in CAS}
    out: list[dict] = []
    now = _now()
    for blob in store.list_blobs(PREFIX):
        if not blob.endswith(".crt"):
            continue
        cert = _load_cert(store.read_blob(blob))
        name = blob[len(PREFIX):-len(".crt")]
        if name.endswith((".next", ".trust")):  # a CA rotation's next CA and trust bundle (pki_ca)
            continue
        if cert is None:
            out.append({"name": name, "error": "unreadable certificate"})
            continue
        issuer = next((n for n, c in cas.items() if c is not None and c.subject == cert.issuer), None)
        issuer_cert = cas[issuer] if issuer is not None else None
        verified = False
        if issuer_cert is not None:
            try:
                cert.verify_directly_issued_by(issuer_cert)
                verified = True
            except (ValueError, TypeError, InvalidSignature):
                verified = False
        out.append({
            "name": name,
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "sans": cert_sans(cert),
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": (cert.not_valid_after_utc - now).days,
            "ca": name in CAS,
            "verified": verified,
        })
    return out


# ---- what other parts use ------------------------------------------------------------------

def client_tls(store: StateStore, name: str = "provisioner") -> TLSFiles:
    """Local files of the etcd client certificate `etcd-client-<name>` and the etcd CA (the old
    and the new one while a rotation has both trusted)."""
    from .pki_ca import trusted_blob
    return TLSFiles(ca=store.blob_path(trusted_blob(store, _crt(ETCD_CA))), cert=store.blob_path(_crt(f"etcd-client-{name}")),
                    key=store.blob_path(_key(f"etcd-client-{name}")))


def ssh_private_key_path(store: StateStore) -> Path:
    """Path of provision's own ed25519 private key (OpenSSH format, 0600)."""
    return store.blob_path(SSH_KEY)


def ssh_public_key(store: BlobSource) -> str:
    """provision's ed25519 public key, one authorized_keys line."""
    data = store.read_blob(SSH_PUB)
    if data is None:
        raise ActionError("no SSH key yet: run `provision up SPEC --until pki` first")
    return data.decode().strip()


def format_expiry(when: dt.datetime) -> str:
    """RFC 3339 in UTC, as a bootstrap token Secret's `expiration` takes it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bootstrap_token_expiry(store: BlobSource) -> dt.datetime | None:
    """When the stored bootstrap token expires (None: no date stored, or unreadable)."""
    data = store.read_blob(BOOTSTRAP_TOKEN_EXPIRES)
    if data is None:
        return None
    try:
        text = data.decode().strip()
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))  # not strptime: it loads _strptime, locale...
        return when if format_expiry(when) == text else None  # the one form format_expiry writes
    except (AttributeError, ValueError):
        return None


def bootstrap_token(store: BlobSource) -> tuple[str, str]:
    """(id, secret) of the worker bootstrap token."""
    token = parse_token(store.read_blob(BOOTSTRAP_TOKEN))
    if token is None:
        raise ActionError("no bootstrap token yet: run `provision up SPEC --until pki` first")
    return token
