"""The lock provision takes in a cluster's etcd: a key created only if absent (one transaction)
on a lease of `ttl` seconds, naming its holder, so a crashed holder frees it when the lease
runs out; deleted only by its owner (a transaction comparing the value)."""
from __future__ import annotations

import contextlib
import json

from ..errors import ActionError
from ..state import lock_holder
from .client import Etcd


class EtcdLock:
    """One holder at a time of `key` in `client`'s etcd (v3 keyspace)."""

    def __init__(self, client: Etcd, key: str, command: str, ttl: float):
        self.client, self.key, self.ttl = client, key, max(1, int(ttl))
        self.owner = json.dumps(lock_holder(command), sort_keys=True)
        self.lease = 0

    def acquire(self) -> bool:
        """True when this call took the lock; False when another holds it."""
        try:
            self.lease = self.client.grant(self.ttl)
            if self.client.create(self.key, self.owner, self.lease):
                return True
            self.client.revoke(self.lease)
            self.lease = 0
            return False
        except ActionError as err:
            raise ActionError(f"etcd: cannot take the lock {self.key}: {err}") from None

    def refresh(self) -> bool:
        """Keep the lease alive; False when it is gone (the lock was lost)."""
        return bool(self.lease) and self.client.keepalive(self.lease) > 0

    def holder(self) -> str:
        """The holder's JSON document as stored ("" when nobody holds it or etcd is silent)."""
        with contextlib.suppress(ActionError):
            return self.client.get(self.key) or ""
        return ""

    def release(self) -> None:
        with contextlib.suppress(ActionError):  # expired or taken over: the lease already freed it
            self.client.delete_if(self.key, self.owner)
            if self.lease:
                self.client.revoke(self.lease)
        self.lease = 0
