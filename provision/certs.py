"""One X.509 certificate or key: making a CA or a leaf, and checking whether a stored leaf still
fits what it must say. The cluster's inventory of certificates and the state store live in `pki`."""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA = "ca"  # the Kubernetes CA's name; a CertSpec's issuer unless it says otherwise
# Reissue a leaf when less than this part of its validity is left (kubespray#5464: no silent expiry).
RENEW_BEFORE_FRACTION = 0.2
BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between provision and hosts

SERVER = "server"
CLIENT = "client"
PEER = "peer"  # server and client: etcd peers, etcd members talking to each other


@dataclass(frozen=True)
class CertSpec:
    """What one certificate must say. `name` is its blob name without `pki/` and suffix."""

    name: str
    common_name: str
    usage: str  # server | client | peer
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    issuer: str = CA

    @property
    def sans(self) -> tuple[str, ...]:
        return tuple(f"DNS:{d}" for d in self.dns_names) + tuple(f"IP:{i}" for i in self.ip_addresses)

# The keys provision makes and signs with (pki.algorithm: rsa-2048 or ecdsa-p256).
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# ---- keys and certificates -----------------------------------------------------------------

def new_key(algorithm: str) -> SigningKey:
    if algorithm == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_matches(key: PublicKeyTypes, algorithm: str) -> bool:
    if algorithm == "rsa-2048":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(common_name: str, days: int, algorithm: str) -> tuple[SigningKey, x509.Certificate]:
    key = new_key(algorithm)
    now = _now()
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


USAGES = {SERVER: [ExtendedKeyUsageOID.SERVER_AUTH], CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
          PEER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]}


def cert_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


@functools.lru_cache(maxsize=8)
def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI of the leaves `ca_cert` signs (the hash of its public key, the CA's key's: the
    callers check they match), worked out once per CA, not once per leaf."""
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def make_leaf(want: CertSpec, ca_key: SigningKey, ca_cert: x509.Certificate, days: int,
              algorithm: str) -> tuple[SigningKey, x509.Certificate]:
    key = new_key(algorithm)
    now = _now()
    usages = USAGES[want.usage]
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (x509.CertificateBuilder().subject_name(_name(want.common_name, want.organizations))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=is_rsa,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(_authority_key_id(ca_cert), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in want.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in want.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)]
            + [f"IP:{i}" for i in ext.get_values_for_type(x509.IPAddress)])


def _load_cert(data: bytes | None) -> x509.Certificate | None:
    if not data:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return None


def _load_key(data: bytes | None) -> PrivateKeyTypes | None:
    if not data:
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return None


def _fresh(cert: x509.Certificate) -> bool:
    """Not expired, and more than RENEW_BEFORE_FRACTION of its lifetime left."""
    now = _now()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now > lifetime * RENEW_BEFORE_FRACTION


def _same_public_key(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def signing_ca(cert_data: bytes | None, key_data: bytes | None) -> tuple[SigningKey, x509.Certificate] | None:
    """The CA stored as these PEM bytes when it can sign leaves now: both readable, a key of a
    type provision signs with, matching the certificate, and more than RENEW_BEFORE_FRACTION of
    its lifetime left. None otherwise (missing, unreadable, another key, expiring)."""
    cert = _load_cert(cert_data)
    key = _load_key(key_data)
    if cert is None or not isinstance(key, SigningKey) or not _same_public_key(key, cert) or not _fresh(cert):
        return None
    return key, cert


def leaf_fits(want: CertSpec, cert: x509.Certificate | None, key: PrivateKeyTypes | None, ca_cert: x509.Certificate,
              algorithm: str) -> bool:
    """Whether a stored leaf can be reused as `want` under `ca_cert`."""
    if cert is None or key is None or not _same_public_key(key, cert):
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.subject != _name(want.common_name, want.organizations):
        return False
    if sorted(cert_sans(cert)) != sorted(want.sans):
        return False
    if set(cert_usages(cert)) != set(USAGES[want.usage]):
        return False
    return _fresh(cert) and key_matches(cert.public_key(), algorithm)


SHOWN_NAMES = 5  # a log line names this many; `-o json` has every name


def summarize(what: str, names: Sequence[str]) -> str:
    """`what N: a, b, c, d, e and N-5 more`: one short line however many certificates a run made."""
    shown = ", ".join(names[:SHOWN_NAMES])
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return f"{what} {len(names)}: {shown}{more}"
