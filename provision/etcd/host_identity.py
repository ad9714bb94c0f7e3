"""Each host agent's own etcd identity: a client certificate from the etcd CA whose CN is
`etcd-agent-<host>` (`pki_agents`: issued by the secrets phase as the host is bootstrapped), an
etcd user of that name and a role of that name allowed only the host's load key `/provision/<cluster>/hosts/<host>/load`.
One host's key cannot write another host's load (nor /registry/, nor any other prefix).

Targeted: one `user list` says which hosts of the cluster have an identity in etcd (so an etcd
made again after `down` is seen as empty); a host counts as done when etcd has its user and
state's `etcd.agent_users` (written once a run succeeded) lists it. etcd is touched only for
hosts not done (user, role, grant, role to user: four requests per host, each idempotent) and
for hosts gone (user and role deleted, their certificate and key dropped from state).

Cost: the list and every host's requests go through one gRPC connection as `root`
(`auth_rpc.AuthSession`), many in flight at once, in two waves (users and roles, then grants):
no etcdctl process per step, so 100 new hosts are one connection, not 400 processes.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

from .. import pki
from . import auth_rpc
from .auth_rpc import AuthSession
from .client import Etcd
from .keys import load_key

if TYPE_CHECKING:
    from ..state import StateStore


def user(host: str) -> str:
    """The etcd user (and role) of `host`'s agent: its certificate's CN."""
    return pki.agent_identity(host)


def add(root: Etcd, cluster: str, hosts: Iterable[str], session: AuthSession | None = None) -> list[str]:
    """Create the user and role of each host's agent (as `root`); an existing one is left as is
    (a re-run after a failure repairs: adding tolerates "already exists", granting twice is a
    no-op in etcd). All hosts through one gRPC session in two waves, users and roles first,
    then the grants that need them: a constant number of connections and round-trip waits."""
    names = {host: user(host) for host in sorted(hosts)}
    if not names:
        return []
    with _session(root, session) as auth:
        auth.batch([(f"adding user {name}", auth_rpc.user_add(name)) for name in names.values()]
                   + [(f"adding role {name}", auth_rpc.role_add(name)) for name in names.values()],
                   tolerate="already exists")
        auth.batch([(f"granting {name} its load key", auth_rpc.role_grant_key(name, load_key(cluster, host)))
                    for host, name in names.items()]
                   + [(f"granting role {name} to user {name}", auth_rpc.user_grant_role(name, name))
                      for name in names.values()])
    return [f"agent identity {name}" for name in names.values()]


def remove(root: Etcd, hosts: Iterable[str], session: AuthSession | None = None) -> list[str]:
    """Delete the user and role of each host's agent (gone already: fine); one gRPC session."""
    names = [user(host) for host in sorted(hosts)]
    if not names:
        return []
    with _session(root, session) as auth:
        auth.batch([(f"deleting user {name}", auth_rpc.user_delete(name)) for name in names]
                   + [(f"deleting role {name}", auth_rpc.role_delete(name)) for name in names],
                   tolerate="not found")
    return [f"agent identity {name} deleted" for name in names]


@contextlib.contextmanager
def _session(root: Etcd, given: AuthSession | None) -> Iterator[AuthSession]:
    """`given` (left open for its owner), or a new session closed after use."""
    if given is not None:
        yield given
        return
    with AuthSession(root) as auth:
        yield auth


def forget_certificates(store: "StateStore", hosts: Iterable[str]) -> None:
    """Drop the certificates and keys of hosts that are gone from provision's state."""
    for host in hosts:
        for suffix in (".crt", ".key"):
            blob = f"{pki.PREFIX}{pki.agent_identity(host)}{suffix}"
            if store.read_blob(blob) is not None:
                store.delete_blob(blob)


def existing(root: Etcd, cluster: str, session: AuthSession | None = None) -> list[str]:
    """The hosts of `cluster` whose agent has a user in etcd (one request)."""
    with _session(root, session) as auth:
        users = auth.user_names()
    prefix = user(f"{cluster}-")  # host names start with the cluster's: another cluster's stay
    return sorted(u[len(user("")):] for u in users if u.startswith(prefix))


def converge(root: Etcd, cluster: str, wanted: Iterable[str],
             done: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """(hosts added, hosts removed, what changed): every host in `wanted` gets its identity,
    every other host of the cluster loses it. A host counts as having one when etcd has its user
    and `done` (state's record, written once a run succeeded) lists it: a run that failed half
    way through a host makes that host again (each step is idempotent)."""
    want = set(wanted)
    with AuthSession(root) as auth:  # list, adds and removals share one connection
        in_etcd = set(existing(root, cluster, auth))
        have = in_etcd & set(done)
        new, gone = sorted(want - have), sorted(in_etcd - want)
        changed = add(root, cluster, new, auth) + remove(root, gone, auth)
    return new, gone, changed


STATE_KEY = "agent_users"  # under state["etcd"]: the hosts whose agent identity exists in etcd


def recorded(state: Mapping[str, object]) -> list[str]:
    """Hosts whose agent identity state records as made."""
    etcd = state.get("etcd") or {}
    return list(etcd.get(STATE_KEY) or []) if isinstance(etcd, Mapping) else []


def join_hosts(root: Etcd, cluster: str, state: dict, hosts: Sequence[str]) -> list[str]:
    """Hosts added outside `up`'s etcd phase (a surged worker): their users and roles are made and
    state records them, as the etcd phase would (making them again is harmless)."""
    changed = add(root, cluster, hosts)
    state.setdefault("etcd", {})[STATE_KEY] = sorted(set(recorded(state)) | set(hosts))
    return changed


def forget_hosts(root: Etcd, store: "StateStore", state: dict, hosts: Sequence[str]) -> list[str]:
    """Hosts destroyed outside `up`'s etcd phase (headroom): their users and roles go, state's
    record and their certificates too. Whatever fails here the next etcd phase finishes (it
    removes every identity of a host the plan no longer has)."""
    state.setdefault("etcd", {})[STATE_KEY] = sorted(set(recorded(state)) - set(hosts))
    changed = remove(root, hosts)
    forget_certificates(store, hosts)
    return changed
