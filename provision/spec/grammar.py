"""Grammars of the places spec strings land: every string field is checked against one.

A spec string ends up in an Ignition file, a systemd unit, an environment file, a shell
script, a URL, a certificate SAN or a command line. Each field path below names the grammar of
its destination; a string field that has no entry gets `token`, the strictest grammar, so a new
field is checked even before someone gives it a better one. `check(spec, problems)` walks the
built spec and adds one problem per string that does not match, naming its field path.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from .schema import Problems, field_names, is_section, path_join

if TYPE_CHECKING:
    from .model import Spec

Validator = Callable[[str], "str | None"]  # returns why the value is refused, or None


def _shown(value: str) -> str:
    """The value as a message shows it: quoted, escaped, cut to 60 characters."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _pattern(regex: str, what: str, max_len: int) -> Validator:
    compiled = re.compile(regex)

    def check(value: str) -> str | None:
        if len(value) > max_len:
            return f"must be {what} of at most {max_len} characters (got {len(value)})"
        if not compiled.fullmatch(value):
            return f"must be {what} (got {_shown(value)})"
        return None
    check.__name__ = what
    return check


# ---- the grammars ---------------------------------------------------------------------

DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*")


def dns_name(value: str) -> str | None:
    """A lowercase DNS name (RFC 1123 labels), at most 253 characters."""
    if len(value) > 253 or not _DNS_NAME_RE.fullmatch(value):
        return f"must be a lowercase DNS name like k8s.example.com, at most 253 characters (got {_shown(value)})"
    return None


def dns_name_or_ip(value: str) -> str | None:
    """A certificate subject alternative name: a DNS name or an IP address."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if dns_name(value) is None:
        return None
    return f"must be a lowercase DNS name or an IP address (got {_shown(value)})"


_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


def label_key(value: str) -> str | None:
    """A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain, name at most 63."""
    prefix, _, name = value.rpartition("/")
    if (prefix and dns_name(prefix) is not None) or not _LABEL_NAME_RE.fullmatch(name):
        return ("must be a Kubernetes label key: an optional DNS prefix and '/', then at most 63 "
                f"letters, digits, '-', '_' or '.', starting and ending alphanumeric (got {_shown(value)})")
    return None


def label_value(value: str) -> str | None:
    """A Kubernetes label value: empty, or at most 63 characters like a label name."""
    if value and not _LABEL_NAME_RE.fullmatch(value):
        return ("must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
                f"starting and ending alphanumeric (got {_shown(value)})")
    return None


# Templates add the "v" where a destination wants one (image tags, download URLs).
version = _pattern(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?", "a release version like 1.33.4 (no leading v)", 64)
channel = _pattern(r"[a-z][a-z0-9-]*", "a release channel like stable (lowercase letters, digits, '-')", 32)
posix_user = _pattern(r"[a-z_][a-z0-9_-]*", "a POSIX user name (lowercase letters, digits, '_', '-')", 32)
interface_name = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a network interface name (letters, digits, '_', '.', '-')",
                          15)
aws_region = _pattern(r"[a-z]{2}(-[a-z]+)+-[0-9]+", "an AWS region like eu-west-1", 32)
aws_zone = _pattern(r"[a-z]{2}(-[a-z0-9]+)+", "an AWS availability zone like eu-west-1a", 40)
ami_id = _pattern(r"ami-[0-9a-f]{8,17}", "an AMI id like ami-0123456789abcdef0", 21)
instance_type = _pattern(r"[a-z0-9][a-z0-9-]*\.[a-z0-9-]+", "an instance type like t3.medium", 40)
identifier = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", "an identifier (letters, digits, '_', '.', ':', '-')", 64)
driver_name = _pattern(r"[a-z][a-z0-9_]*", "a libcloud driver name like digitalocean", 40)
# Cloud resource names (images, flavors, networks, sizes) only travel in API calls; spaces are
# common in them (Glance), quotes, shell characters and control characters are not allowed.
resource_name = _pattern(r"[A-Za-z0-9]([A-Za-z0-9_.:/+()-]| (?! ))*(?<! )",
                         "a cloud resource name or id (letters, digits, single spaces, '_.:/+()-')", 255)
vagrant_box = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?",
                       "a Vagrant box name like flatcar-stable or org/box", 128)
key_prefix = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*",
                      "a key prefix (letters, digits, '_', '.', '-' and '/' between parts)", 128)
s3_bucket = _pattern(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", "an S3 bucket name (lowercase letters, digits, '.', '-')", 63)
artifact_hash = _pattern(r"sha512-[0-9a-f]{128}|sha256-[0-9a-f]{64}", "sha512-<128 hex digits> or sha256-<64 hex digits>",
                         135)
token = _pattern(r"[A-Za-z0-9][A-Za-z0-9_.:/+-]*", "a plain token (letters, digits, '_.:/+-')", 128)

_URL_RE = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?"
                     r"(?P<path>/[A-Za-z0-9._~%/+-]*)?")


def url(value: str) -> str | None:
    """An http(s) URL: a host, an optional port and path; no user, query, fragment or quotes."""
    what = "an http(s) URL like https://host:port/path (no user, query or fragment)"
    if len(value) > 2048:
        return f"must be {what} of at most 2048 characters (got {len(value)})"
    m = _URL_RE.fullmatch(value)
    if not m:
        return f"must be {what} (got {_shown(value)})"
    host = m.group("host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"must be {what}; {host} is not an IPv6 address"
    elif dns_name(host.lower()) is not None:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"must be {what}; {host!r} is not a host name or address"
    if m.group("port") and not 0 < int(m.group("port")) < 65536:
        return f"must be {what}; port {m.group('port')} is out of range"
    return None


SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_KEY_COMMENT_RE = re.compile(r"[A-Za-z0-9@._+:=,/ -]*")


def ssh_public_key(value: str) -> str | None:
    """One OpenSSH public key line: type, base64 key blob naming the same type, optional comment."""
    if len(value) > 8192:
        return f"is too long for an OpenSSH public key ({len(value)} characters)"
    parts = value.split(" ", 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        return f"is not an OpenSSH public key (type one of {', '.join(SSH_KEY_TYPES[:3])}, ...; base64 key; comment)"
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return "is not an OpenSSH public key (the key is not valid base64 of a key blob)"
    if embedded != parts[0]:
        return f"is not an OpenSSH public key (its blob is a {embedded!r} key, not {parts[0]!r})"
    if len(parts) == 3 and not _KEY_COMMENT_RE.fullmatch(parts[2]):
        return "has a comment with characters a key file does not take (letters, digits, spaces and '@._+:=,/-' only)"
    return None


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def local_path(value: str) -> str | None:
    """A path on the operator's machine (never sent to a host): no control characters."""
    if len(value) > 4096:
        return f"must be a path of at most 4096 characters (got {len(value)})"
    if not value or _CONTROL_RE.search(value):
        return f"must be a non-empty path without control characters (got {_shown(value)})"
    return None


# ---- where each field lands --------------------------------------------------------------
# Keys are field paths with list indexes written `[]` and mapping keys `{}` (the key) or `{=}`
# (the value). Provider option paths are `provider.<name>.<field>`.

FIELD_GRAMMARS: Mapping[str, Validator] = {
    "name": token,                           # NAME_RE in rules.check_rules is stricter
    "provider.local.bridge": interface_name,
    "provider.aws.region": aws_region,
    "provider.aws.ami": ami_id,
    "provider.aws.instance_type": instance_type,
    "provider.aws.availability_zone": aws_zone,
    "provider.aws.zones[]": aws_zone,
    "provider.openstack.cloud": identifier,
    "provider.openstack.image": resource_name,
    "provider.openstack.flavor": resource_name,
    "provider.openstack.network": resource_name,
    "provider.libcloud.driver": driver_name,
    "provider.libcloud.location": identifier,
    "provider.libcloud.image": resource_name,
    "provider.libcloud.size": resource_name,
    "provider.libcloud.region": identifier,
    "provider.vagrant.box": vagrant_box,
    "provider.vagrant.box_url": url,
    "os.channel": channel,
    "ssh.user": posix_user,
    "ssh.authorized_keys[]": ssh_public_key,
    "etcd.version": version,
    "etcd.discovery_url": url,
    "network.flannel.version": version,
    "fleet.version": version,
    "kubernetes.version": version,
    "kubernetes.cluster_domain": dns_name,
    "kubernetes.api_server_names[]": dns_name_or_ip,
    "pools[].name": token,                   # POOL_NAME_RE in rules.check_rules is stricter
    "pools[].size": resource_name,
    "pools[].labels{}": label_key,
    "pools[].labels{=}": label_value,
    "headroom.pool": token,
    "headroom.kubeconfig": local_path,
    "state.path": local_path,
    "state.endpoints[]": url,
    "state.prefix": key_prefix,
    "state.bucket": s3_bucket,
    "state.region": aws_region,
    "artifacts.mirror": url,
    "artifacts.hashes{}": token,
    "artifacts.hashes{=}": artifact_hash,
}


def grammar_for(pattern: str) -> Validator:
    """The grammar of a field path pattern; `token` for a field nobody has described yet."""
    return FIELD_GRAMMARS.get(pattern, token)


def strings(value: object, path: str, pattern: str) -> Iterator[tuple[str, str, str]]:
    """Yield (path, pattern, string) for every string inside a built spec value."""
    if isinstance(value, str):
        yield path, pattern, value
    elif is_section(value):
        for name in field_names(value):
            yield from strings(getattr(value, name), path_join(path, name), path_join(pattern, name))
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from strings(item, path_join(path, i), pattern + "[]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield path, pattern + "{}", key  # a bad key is named by its mapping's path
            yield from strings(item, path_join(path, key), pattern + "{=}")


def check(spec: Spec, problems: Problems) -> None:
    """Add a problem for every string of `spec` outside its destination's grammar.

    A field that already has a problem (from the contract's own rules) gets no second one.
    """
    already = {path for path, _ in problems.items}
    for path, pattern, value in _spec_strings(spec):
        if path in already:
            continue
        why = grammar_for(pattern)(value)
        if why:
            problems.add(path, f"key {_shown(value)} {why}" if pattern.endswith("{}") else why)


def _spec_strings(spec: Spec) -> Iterator[tuple[str, str, str]]:
    for name in field_names(spec):
        value = getattr(spec, name)
        if name == "provider":
            if value is None:
                continue
            for option in field_names(value.options):
                yield from strings(getattr(value.options, option), f"provider.{option}",
                                   f"provider.{value.name}.{option}")
        elif name == "pools":
            for i, pool in enumerate(value):
                for key in field_names(pool):
                    item = getattr(pool, key)
                    if key == "provider" and item is not None:  # a pool's own provider: its keys' grammars
                        yield f"pools[{i}].provider.name", "provider.name", item.name
                        for option in field_names(item.options):
                            yield from strings(getattr(item.options, option), f"pools[{i}].provider.{option}",
                                               f"provider.{item.name}.{option}")
                    else:
                        yield from strings(item, f"pools[{i}].{key}", f"pools[].{key}")
        else:
            yield from strings(value, name, name)
