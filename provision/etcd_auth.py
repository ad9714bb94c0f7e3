"""etcd authentication: one user per client certificate (etcd takes the user name from the CN),
one role per user granting only the keys that client needs, then `auth enable`.

What each identity may touch (v3 keyspace; the Kubernetes keyspace is v3 only):
- `etcd-apiserver`: every key (the API server owns /registry/ and may be given another prefix);
- `etcd-flannel`: flannel's network prefix /coreos.com/network/ (subnet leases);
- `etcd-agent`: the load keys /provision/<cluster>/hosts/ that host agents publish;
- `etcd-provisioner`: provision's own prefix /provision/<cluster>/, and the flannel network
  config key, which the `flannel` phase creates;
- `etcd-fleet` (when fleet is on): fleet's prefix /_coreos.com/fleet/;
- `root`: etcd's administrator, needed to change users and roles once auth is on; its
  certificate stays in provision's state and is never sent to a host.

`apply()` converges (adds what is missing, revokes what is extra) and reports what it changed,
so running it again changes nothing.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from . import pki
from .cluster_etcd import EtcdAccess, FLANNEL_KEY, etcdctl
from .errors import ActionError

ALL_KEYS = ""  # with --prefix: the whole keyspace


@dataclass(frozen=True, order=True)
class Permission:
    key: str
    prefix: bool
    access: str = "readwrite"  # read | write | readwrite

    def stored_key(self) -> str:
        """The key as etcd stores it: etcdctl turns the whole keyspace into "\\0".."\\0"."""
        return "\0" if self.prefix and self.key == ALL_KEYS else self.key

    def range_end(self) -> str:
        """The key range etcd stores for this permission (what `role get -w json` shows)."""
        if not self.prefix:
            return ""
        if self.key == ALL_KEYS:
            return "\0"
        raw = bytearray(self.key.encode())
        raw[-1] += 1
        return raw.decode()


def wanted_roles(spec: Any) -> dict[str, tuple[Permission, ...]]:
    """{user (= role) name: permissions} for every etcd client identity of the cluster."""
    own = f"/provision/{spec.name}/"
    roles = {
        pki.etcd_user("apiserver"): (Permission(ALL_KEYS, True),),
        pki.etcd_user("flannel"): (Permission("/coreos.com/network/", True),),
        pki.etcd_user("agent"): (Permission(f"{own}hosts/", True),),
        pki.etcd_user("provisioner"): (Permission(own, True), Permission(FLANNEL_KEY, False)),
    }
    if spec.fleet.enabled:
        roles[pki.etcd_user("fleet")] = (Permission("/_coreos.com/fleet/", True),)
    return roles


def _ok(proc, what: str) -> str:
    if proc.returncode != 0:
        raise ActionError(f"etcd auth: {what} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return proc.stdout


def _current_permissions(access: EtcdAccess, role: str) -> set[tuple[str, str, str]] | None:
    proc = etcdctl(access, "role", "get", role, "-w", "json")
    if proc.returncode != 0:
        if "role name not found" in proc.stderr:
            return None
        _ok(proc, f"reading role {role}")
    doc = json.loads(proc.stdout or "{}")
    names = {0: "read", 1: "write", 2: "readwrite"}
    out = set()
    for perm in doc.get("perm") or []:
        key = base64.b64decode(perm.get("key", "")).decode()
        end = base64.b64decode(perm.get("range_end", "")).decode()
        out.add((key, end, names.get(perm.get("permType", 0), "read")))
    return out


def _range_args(key: str, end: str) -> list[str]:
    """etcdctl arguments naming a stored permission range (a NUL cannot be an argument)."""
    if not end:
        return [key]
    if end == "\0":
        return ["--prefix", ""] if key == "\0" else ["--from-key", key]
    if end == Permission(key, True).range_end():
        return ["--prefix", key]
    return [key, end]


def auth_enabled(access: EtcdAccess) -> bool:
    """Whether auth is on, asked as a client that is not root: listing users is then refused."""
    proc = etcdctl(access, "user", "list")
    if proc.returncode == 0:
        return False
    if "permission denied" in proc.stderr or "user name is empty" in proc.stderr:
        return True
    _ok(proc, "asking whether auth is enabled")
    return False


def apply(root: EtcdAccess, probe: EtcdAccess, spec: Any) -> list[str]:
    """Make etcd's users, roles and auth match `wanted_roles(spec)`; returns what changed.

    `root` holds the `root` client certificate; `probe` is any other client identity
    (provisioner), used to see whether auth is already on.
    """
    changed: list[str] = []
    users = set(_ok(etcdctl(root, "user", "list"), "listing users").split())
    roles = set(_ok(etcdctl(root, "role", "list"), "listing roles").split())
    wanted = wanted_roles(spec)
    for name in ["root", *sorted(wanted)]:
        if name not in users:
            _ok(etcdctl(root, "user", "add", name, "--no-password"), f"adding user {name}")
            changed.append(f"user {name}")
    if "root" not in roles:
        _ok(etcdctl(root, "role", "add", "root"), "adding role root")
        changed.append("role root")
    for name, perms in sorted(wanted.items()):
        current = _current_permissions(root, name)
        if current is None:
            _ok(etcdctl(root, "role", "add", name), f"adding role {name}")
            changed.append(f"role {name}")
            current = set()
        want = {(p.stored_key(), p.range_end(), p.access): p for p in perms}
        for key, end, access in sorted(current - set(want)):
            args = ["role", "revoke-permission", name, *_range_args(key, end)]
            _ok(etcdctl(root, *args), f"revoking {key!r} from role {name}")
            changed.append(f"role {name}: revoked {key!r}")
        for triple in sorted(set(want) - current):
            p = want[triple]
            args = ["role", "grant-permission", name, p.access, p.key] + (["--prefix"] if p.prefix else [])
            _ok(etcdctl(root, *args), f"granting {p.key!r} to role {name}")
            changed.append(f"role {name}: {p.access} {p.key or '(every key)'}{'*' if p.prefix else ''}")
    for name in ["root", *sorted(wanted)]:
        doc = _ok(etcdctl(root, "user", "get", name, "-w", "json"), f"reading user {name}")
        has = set(json.loads(doc or "{}").get("roles") or [])
        if name not in has:
            _ok(etcdctl(root, "user", "grant-role", name, name), f"granting role {name} to user {name}")
            changed.append(f"user {name}: role {name}")
    for name in sorted(users - {"root"} - set(wanted)):
        if name.startswith("etcd-"):  # an identity of ours the spec no longer has (fleet turned off)
            _ok(etcdctl(root, "user", "delete", name), f"deleting user {name}")
            changed.append(f"user {name} deleted")
    if not auth_enabled(probe):
        _ok(etcdctl(root, "auth", "enable"), "enabling auth")
        changed.append("auth enabled")
    return changed


def access_as(store: Any, endpoints: tuple[str, ...], client: str) -> EtcdAccess:
    tls = pki.client_tls(store, client)
    return EtcdAccess(endpoints, ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key))
