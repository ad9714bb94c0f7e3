"""Each host agent's own etcd identity: a client certificate from the etcd CA whose CN is
`etcd-agent-<host>` (made by the pki phase, `pki.agent_identity`), an etcd user of that name
and a role of that name allowed only the host's load key `/provision/<cluster>/hosts/<host>/load`.
One host's key cannot write another host's load (nor /registry/, nor any other prefix).

Targeted: one `user list` says which hosts of the cluster have an identity in etcd (so an etcd
made again after `down` is seen as empty); a host counts as done when etcd has its user and
state's `etcd.agent_users` (written once a run succeeded) lists it. etcd is touched only for
hosts not done (user, role, grant, role to user: four calls per host, each idempotent) and for
hosts gone (user and role deleted, their certificate and key dropped from state).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from .. import pki
from ..errors import ActionError
from .client import Etcd, last_line
from .keys import load_key

if TYPE_CHECKING:
    from ..state import StateStore


def user(host: str) -> str:
    """The etcd user (and role) of `host`'s agent: its certificate's CN."""
    return pki.agent_identity(host)


def _run(root: Etcd, what: str, *args: str, tolerate: str = "") -> None:
    proc = root.etcdctl(*args)
    if proc.returncode != 0 and not (tolerate and tolerate in proc.stderr):
        raise ActionError(f"etcd auth: {what} failed: {last_line(proc.stderr, '?')}")


def add(root: Etcd, cluster: str, hosts: Iterable[str]) -> list[str]:
    """Create the user and role of each host's agent (as `root`); an existing one is left as is
    (a re-run after a failure repairs: each step tolerates "already exists")."""
    changed = []
    for host in sorted(hosts):
        name = user(host)
        _run(root, f"adding user {name}", "user", "add", name, "--no-password", tolerate="already exists")
        _run(root, f"adding role {name}", "role", "add", name, tolerate="already exists")
        _run(root, f"granting {name} its load key", "role", "grant-permission", name, "readwrite",
             load_key(cluster, host))
        _run(root, f"granting role {name} to user {name}", "user", "grant-role", name, name)
        changed.append(f"agent identity {name}")
    return changed


def remove(root: Etcd, hosts: Iterable[str]) -> list[str]:
    """Delete the user and role of each host's agent (gone already: fine)."""
    changed = []
    for host in sorted(hosts):
        name = user(host)
        _run(root, f"deleting user {name}", "user", "delete", name, tolerate="not found")
        _run(root, f"deleting role {name}", "role", "delete", name, tolerate="not found")
        changed.append(f"agent identity {name} deleted")
    return changed


def forget_certificates(store: "StateStore", hosts: Iterable[str]) -> None:
    """Drop the certificates and keys of hosts that are gone from provision's state."""
    for host in hosts:
        for suffix in (".crt", ".key"):
            blob = f"{pki.PREFIX}{pki.agent_identity(host)}{suffix}"
            if store.read_blob(blob) is not None:
                store.delete_blob(blob)


def existing(root: Etcd, cluster: str) -> list[str]:
    """The hosts of `cluster` whose agent has a user in etcd (one call)."""
    proc = root.etcdctl("user", "list")
    if proc.returncode != 0:
        raise ActionError(f"etcd auth: listing users failed: {last_line(proc.stderr, '?')}")
    prefix = user(f"{cluster}-")  # host names start with the cluster's: another cluster's stay
    return sorted(u[len(user("")):] for u in proc.stdout.split() if u.startswith(prefix))


def converge(root: Etcd, cluster: str, wanted: Iterable[str],
             done: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """(hosts added, hosts removed, what changed): every host in `wanted` gets its identity,
    every other host of the cluster loses it. A host counts as having one when etcd has its user
    and `done` (state's record, written once a run succeeded) lists it: a run that failed half
    way through a host makes that host again (each step is idempotent)."""
    want = set(wanted)
    in_etcd = set(existing(root, cluster))
    have = in_etcd & set(done)
    new, gone = sorted(want - have), sorted(in_etcd - want)
    changed = add(root, cluster, new) + remove(root, gone)
    return new, gone, changed


STATE_KEY = "agent_users"  # under state["etcd"]: the hosts whose agent identity exists in etcd


def recorded(state: Mapping[str, object]) -> list[str]:
    """Hosts whose agent identity state records as made."""
    etcd = state.get("etcd") or {}
    return list(etcd.get(STATE_KEY) or []) if isinstance(etcd, Mapping) else []


def forget_hosts(root: Etcd, store: "StateStore", state: dict, hosts: Sequence[str]) -> list[str]:
    """Hosts destroyed outside `up`'s etcd phase (headroom): their users and roles go, state's
    record and their certificates too. Whatever fails here the next etcd phase finishes (it
    removes every identity of a host the plan no longer has)."""
    state.setdefault("etcd", {})[STATE_KEY] = sorted(set(recorded(state)) - set(hosts))
    changed = remove(root, hosts)
    forget_certificates(store, hosts)
    return changed
