"""Each host agent's own etcd identity: a client certificate from the etcd CA whose CN is
`etcd-agent-<host>` (made by the pki phase, `pki.agent_identity`), an etcd user of that name
and a role of that name allowed only the host's load key `/provision/<cluster>/hosts/<host>/load`.
One host's key cannot write another host's load (nor /registry/, nor any other prefix).

Targeted: state's `etcd.agent_users` lists the hosts whose user and role exist, so a run
touches etcd only for hosts added since (a user, a role, a grant: constant per host) and for
hosts gone (their user and role deleted, their certificate and key dropped from state); a
run with nothing new costs no etcd call.
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


def converge(root: Etcd, cluster: str, existing: Sequence[str], wanted: Iterable[str]) -> tuple[list[str], list[str],
                                                                                                 list[str]]:
    """(hosts to add, hosts to remove, what changed): `existing` are the hosts state records as
    having an identity, `wanted` the hosts that should have one."""
    want = set(wanted)
    have = set(existing)
    new, gone = sorted(want - have), sorted(have - want)
    changed = add(root, cluster, new) + remove(root, gone)
    return new, gone, changed


STATE_KEY = "agent_users"  # under state["etcd"]: the hosts whose agent identity exists in etcd


def recorded(state: Mapping[str, object]) -> list[str]:
    """Hosts whose agent identity state records as made."""
    etcd = state.get("etcd") or {}
    return list(etcd.get(STATE_KEY) or []) if isinstance(etcd, Mapping) else []


def forget_hosts(root: Etcd, store: "StateStore", state: dict, hosts: Sequence[str]) -> list[str]:
    """Hosts destroyed outside `up`'s etcd phase (headroom): their users and roles go, state's
    record and their certificates too. Whatever fails here the next etcd phase finishes (state
    still lists what was not removed)."""
    recorded_hosts = recorded(state)
    gone = [h for h in hosts if h in recorded_hosts]
    changed = remove(root, gone)
    state.setdefault("etcd", {})[STATE_KEY] = sorted(set(recorded_hosts) - set(gone))
    forget_certificates(store, gone)
    return changed
