"""etcd authentication: one user per client certificate (etcd takes the user name from the CN),
one role per user granting only the keys that client needs, then `auth enable`.

What each identity may touch (v3 keyspace; the Kubernetes keyspace is v3 only):
- `etcd-apiserver`: every key (the API server owns /registry/ and may be given another prefix);
- `etcd-flannel`: flannel's network prefix /coreos.com/network/ (subnet leases);
- `etcd-agent-<host>`: that host's agent, its own load key /provision/<cluster>/hosts/<host>/load
  only (one identity per host, made and removed with the host: `etcd/host_identity.py`);
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
from typing import TYPE_CHECKING

from .. import pki
from ..errors import ActionError
from ..pki import TLSFiles
from .client import Etcd, last_line
from .keys import FLANNEL_KEY, FLANNEL_PREFIX, FLEET_PREFIX, provision_prefix

if TYPE_CHECKING:
    from ..spec import Spec
    from ..state import StateStore

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


def wanted_roles(spec: "Spec") -> dict[str, tuple[Permission, ...]]:
    """{user (= role) name: permissions} for every etcd client identity of the cluster."""
    own = provision_prefix(spec.name)
    roles = {
        pki.etcd_user("apiserver"): (Permission(ALL_KEYS, True),),
        pki.etcd_user("flannel"): (Permission(FLANNEL_PREFIX, True),),
        pki.etcd_user("provisioner"): (Permission(own, True), Permission(FLANNEL_KEY, False)),
    }
    if spec.fleet.enabled:
        roles[pki.etcd_user("fleet")] = (Permission(FLEET_PREFIX, True),)
    return roles


def _ok(proc, what: str) -> str:
    if proc.returncode != 0:
        raise ActionError(f"etcd auth: {what} failed: {last_line(proc.stderr, '?')}")
    return proc.stdout


def _current_permissions(access: Etcd, role: str) -> set[tuple[str, str, str]] | None:
    proc = access.etcdctl("role", "get", role, "-w", "json")
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


def auth_enabled(access: Etcd) -> bool:
    """Whether auth is on, asked as a client that is not root: listing users is then refused."""
    proc = access.etcdctl("user", "list")
    if proc.returncode == 0:
        return False
    if "permission denied" in proc.stderr or "user name is empty" in proc.stderr:
        return True
    _ok(proc, "asking whether auth is enabled")
    return False


def apply(root: Etcd, probe: Etcd, spec: "Spec") -> list[str]:
    """Make etcd's users, roles and auth match `wanted_roles(spec)`; returns what changed.

    `root` holds the `root` client certificate; `probe` is any other client identity
    (provisioner), used to see whether auth is already on.
    """
    changed: list[str] = []
    users = set(_ok(root.etcdctl("user", "list"), "listing users").split())
    roles = set(_ok(root.etcdctl("role", "list"), "listing roles").split())
    wanted = wanted_roles(spec)
    for name in ["root", *sorted(wanted)]:
        if name not in users:
            _ok(root.etcdctl("user", "add", name, "--no-password"), f"adding user {name}")
            changed.append(f"user {name}")
    if "root" not in roles:
        _ok(root.etcdctl("role", "add", "root"), "adding role root")
        changed.append("role root")
    for name, perms in sorted(wanted.items()):
        current = _current_permissions(root, name)
        if current is None:
            _ok(root.etcdctl("role", "add", name), f"adding role {name}")
            changed.append(f"role {name}")
            current = set()
        want = {(p.stored_key(), p.range_end(), p.access): p for p in perms}
        for key, end, access in sorted(current - set(want)):
            args = ["role", "revoke-permission", name, *_range_args(key, end)]
            _ok(root.etcdctl(*args), f"revoking {key!r} from role {name}")
            changed.append(f"role {name}: revoked {key!r}")
        for triple in sorted(set(want) - current):
            p = want[triple]
            args = ["role", "grant-permission", name, p.access, p.key] + (["--prefix"] if p.prefix else [])
            _ok(root.etcdctl(*args), f"granting {p.key!r} to role {name}")
            changed.append(f"role {name}: {p.access} {p.key or '(every key)'}{'*' if p.prefix else ''}")
    for name in ["root", *sorted(wanted)]:
        doc = _ok(root.etcdctl("user", "get", name, "-w", "json"), f"reading user {name}")
        has = set(json.loads(doc or "{}").get("roles") or [])
        if name not in has:
            _ok(root.etcdctl("user", "grant-role", name, name), f"granting role {name} to user {name}")
            changed.append(f"user {name}: role {name}")
    for name in sorted(users - {"root"} - set(wanted)):
        if name.startswith(pki.agent_identity("")):  # a host agent's own: etcd/host_identity.py keeps those
            continue
        if name.startswith("etcd-"):  # an identity of ours the spec no longer has (fleet turned off,
            # or the one agent identity every host shared before each got its own)
            _ok(root.etcdctl("user", "delete", name), f"deleting user {name}")
            changed.append(f"user {name} deleted")
    if not auth_enabled(probe):
        _ok(root.etcdctl("auth", "enable"), "enabling auth")
        changed.append("auth enabled")
    return changed


def identity(store: "StateStore", client: str) -> TLSFiles:
    """The etcd CA and the client certificate of etcd user `client` (root, provisioner, ...)."""
    return pki.client_tls(store, client)


# ---- the v2 keyspace (only when spec.needs_etcd_v2: fleet, v2 flannel, the v2 load keys) ----------
# etcd's v2 API has its own users and roles, also matched by certificate CN; with v2 auth on,
# the `guest` role (any request without a known user) starts with every key, so it is emptied.

def wanted_v2_roles(spec: "Spec") -> dict[str, tuple[str, ...]]:
    """{user (= role): v2 key patterns it may read and write} for clients that speak v2."""
    roles: dict[str, tuple[str, ...]] = {pki.etcd_user("provisioner"): (f"{provision_prefix(spec.name)}*", FLANNEL_KEY)}
    if spec.network.flannel.etcd_api == "v2":
        roles[pki.etcd_user("flannel")] = (f"{FLANNEL_PREFIX}*",)
    if spec.fleet.enabled:
        roles[pki.etcd_user("fleet")] = (f"{FLEET_PREFIX}*",)
    return roles


def _v2(root: Etcd, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    import ssl
    import urllib.error
    import urllib.request
    if root.tls is None:
        raise ActionError("etcd v2 auth: needs the root client certificate")
    ctx = ssl.create_default_context(cafile=str(root.tls.ca))
    ctx.load_cert_chain(str(root.tls.cert), str(root.tls.key))
    data = json.dumps(body).encode() if body is not None else None
    last = "no endpoint"
    for endpoint in root.endpoints:
        request = urllib.request.Request(f"{endpoint}/v2/auth/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=5) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")
        except OSError as err:
            last = str(err)
    raise ActionError(f"etcd v2 auth: {method} {path}: {last}")


def _v2_ok(root: Etcd, method: str, path: str, body: dict | None = None) -> dict:
    code, doc = _v2(root, method, path, body)
    if code >= 300:
        raise ActionError(f"etcd v2 auth: {method} {path} failed ({code}): {doc.get('message', doc)}")
    return doc


def apply_v2(root: Etcd, spec: "Spec") -> list[str]:
    """Converge the v2 users and roles and enable v2 auth; returns what changed."""
    import secrets
    changed: list[str] = []
    wanted = wanted_v2_roles(spec)
    listed = _v2_ok(root, "GET", "users").get("users") or []
    users = {u["user"] if isinstance(u, dict) else u for u in listed}
    for name in ["root", *sorted(wanted)]:
        if name not in users:
            # a password nobody keeps: these users authenticate by certificate only
            _v2_ok(root, "PUT", f"users/{name}", {"user": name, "password": secrets.token_urlsafe(24)})
            changed.append(f"v2 user {name}")
    roles = {r["role"]: r for r in (_v2_ok(root, "GET", "roles").get("roles") or [])}
    for name, keys in sorted(wanted.items()):
        want = sorted(keys)
        if name not in roles:
            _v2_ok(root, "PUT", f"roles/{name}", {"role": name, "permissions": {"kv": {"read": want, "write": want}}})
            changed.append(f"v2 role {name}")
        else:
            kv = (roles[name].get("permissions") or {}).get("kv") or {}
            have_read, have_write = set(kv.get("read") or []), set(kv.get("write") or [])
            grant = {"read": sorted(set(want) - have_read), "write": sorted(set(want) - have_write)}
            revoke = {"read": sorted(have_read - set(want)), "write": sorted(have_write - set(want))}
            if any(grant.values()) or any(revoke.values()):
                body: dict = {"role": name}
                if any(grant.values()):
                    body["grant"] = {"kv": grant}
                if any(revoke.values()):
                    body["revoke"] = {"kv": revoke}
                _v2_ok(root, "PUT", f"roles/{name}", body)
                changed.append(f"v2 role {name}: permissions")
        user = _v2_ok(root, "GET", f"users/{name}")
        has = {r["role"] if isinstance(r, dict) else r for r in user.get("roles") or []}
        if name not in has:
            _v2_ok(root, "PUT", f"users/{name}", {"user": name, "grant": [name]})
            changed.append(f"v2 user {name}: role {name}")
    if not _v2_ok(root, "GET", "enable").get("enabled"):
        _v2_ok(root, "PUT", "enable")
        changed.append("v2 auth enabled")
    guest = _v2(root, "GET", "roles/guest")
    kv = ((guest[1].get("permissions") or {}).get("kv") or {}) if guest[0] == 200 else {}
    if kv.get("read") or kv.get("write"):
        _v2_ok(root, "PUT", "roles/guest", {"role": "guest", "revoke": {"kv": {
            "read": kv.get("read") or [], "write": kv.get("write") or []}}})
        changed.append("v2 guest role emptied")
    return changed
