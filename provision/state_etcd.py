"""State backend `etcd`: one cluster's state in an etcd's v2 keyspace (python-etcd), shared by
every operator and cron host that reaches it.

Keys under `/<state.prefix>/<cluster>/`: `state` (the JSON document) and `blobs/<name>`
(base64). The lock is provision's one etcd lock (`etcd/lock.py`: a v3 key on a lease, naming
its holder, kept alive while held), on the same key name `lock` in the v3 keyspace. Until
every provision that shares a state etcd runs this code, the v2 `lock` key older ones take
(a TTL key naming the holder) is taken too, after the lease lock, so an old and a new
provision never both hold the cluster: the v2 key goes in release `V2_LOCK_DROPPED_IN` (README,
State). Writes are compare-and-swap on
the key's modifiedIndex, so a writer that read an older document fails instead of
overwriting. The client certificate comes from the etcdctl variables ETCDCTL_CACERT,
ETCDCTL_CERT and ETCDCTL_KEY when the endpoints are https.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from .errors import LockHeld
from .etcd import v2
from .etcd.client import Etcd
from .etcd.lock import EtcdLock
from .pki import TLSFiles
from .spec import Spec
from .state import (StateError, StateStore, check_blob_name, describe_holder, empty_state, encode_state, kept_alive,
                    next_document, parse_document)

if TYPE_CHECKING:
    import etcd  # python-etcd: untyped, so its client is Any to mypy

_T = TypeVar("_T")
LOCK_TTL = 60  # seconds; refreshed every LOCK_TTL/3 while held, so a crashed holder frees it soon


# The release that stops taking the v2 `lock` key (see the module's doc and README, State);
# tests/headroom/test_state_backends.py fails once the version reaches it with the key still taken.
V2_LOCK_DROPPED_IN = (0, 2, 0)

class EtcdStateStore(StateStore):
    """StateStore in etcd (v2 API) with compare-and-swap writes and etcd's lease lock."""

    backend = "etcd"

    def __init__(self, spec: Spec, state_dir: Path, client: etcd.Client | None = None):
        super().__init__(spec.name, Path(state_dir) / spec.name)
        self.base = f"/{spec.state.prefix.strip('/')}/{spec.name}"
        self._client = client
        self._endpoints = tuple(spec.state.endpoints)
        self._index: int | None = None  # modifiedIndex of the state key as last read

    @property
    def location(self) -> str:
        return f"etcd {','.join(self._endpoints)} key {self.base}"

    def _tls(self) -> TLSFiles | None:
        if not os.environ.get("ETCDCTL_CERT"):
            return None
        return TLSFiles(ca=Path(os.environ.get("ETCDCTL_CACERT", "")), cert=Path(os.environ["ETCDCTL_CERT"]),
                        key=Path(os.environ.get("ETCDCTL_KEY", "")))

    @property
    def client(self) -> etcd.Client:
        if self._client is None:
            self._client = v2.client(self._endpoints, self._tls())
        return self._client

    def lease_client(self) -> Etcd:
        """The same etcd through etcdctl (v3 API, same client certificate): for the lock."""
        return Etcd(self._endpoints, self._tls())

    def _call(self, what: str, fn: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        import etcd
        try:
            return fn(*args, **kwargs)
        except (etcd.EtcdKeyNotFound, etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed):
            raise
        except (etcd.EtcdException, OSError) as err:
            raise StateError(f"state in etcd ({', '.join(self._endpoints) or 'client'}): cannot {what}: {err}") from None

    # -- the document --------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        import etcd
        try:
            node = self._call("read the state", self.client.read, f"{self.base}/state")
        except etcd.EtcdKeyNotFound:
            self._index = None
            return empty_state(self.cluster)
        doc = parse_document(node.value, f"etcd key {self.base}/state", self.cluster)
        self._index = node.modifiedIndex
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        import etcd
        current = self.read()  # refuses a corrupt or newer document
        new = next_document(doc, current, self.cluster, where=f"etcd key {self.base}/state")
        data = encode_state(new)
        try:
            if self._index is None:
                self._call("write the state", self.client.write, f"{self.base}/state", data, prevExist=False)
            else:
                self._call("write the state", self.client.write, f"{self.base}/state", data, prevIndex=self._index)
        except (etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed):
            raise StateError(f"etcd key {self.base}/state changed while it was being written (another writer); "
                             "nothing was overwritten: re-run") from None
        doc["serial"] = new["serial"]

    # -- the lock ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        key = f"{self.base}/lock"
        lease_lock = EtcdLock(self.lease_client(), key, command, ttl=LOCK_TTL)
        if not lease_lock.acquire():
            raise self._held(lease_lock.holder())
        try:
            with self._v2_lock(key, lease_lock.owner):  # what an older provision takes: see the module's doc
                def refresh() -> None:
                    lease_lock.refresh()
                    self.client.write(key, lease_lock.owner, prevValue=lease_lock.owner, ttl=LOCK_TTL)
                with kept_alive(LOCK_TTL / 3, refresh):
                    yield
        finally:
            lease_lock.release()

    @contextlib.contextmanager
    def _v2_lock(self, key: str, holder: str) -> Iterator[None]:
        """The v2 TTL key older provisions take as the lock (the transition: taken after the
        lease lock, released before it)."""
        import etcd
        try:
            self._call("take the lock", self.client.write, key, holder, prevExist=False, ttl=LOCK_TTL)
        except etcd.EtcdAlreadyExist:
            try:
                other = self._call("read the lock", self.client.read, key).value
            except etcd.EtcdKeyNotFound:
                other = ""
            raise self._held(other) from None
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self.client.delete(key, prevValue=holder)

    def _held(self, holder_json: str) -> LockHeld:
        try:
            other = json.loads(holder_json) if holder_json else {}
        except (ValueError, TypeError):
            other = {}
        if not isinstance(other, dict):
            other = {}
        return LockHeld(f"cluster {self.cluster!r} is locked by {describe_holder(other)}; "
                        "try again when it has finished", other)

    # -- blobs ---------------------------------------------------------------------------
    def _blob_key(self, name: str) -> str:
        return f"{self.base}/blobs/{check_blob_name(name)}"

    def read_blob(self, name: str) -> bytes | None:
        import etcd
        try:
            node = self._call(f"read {name}", self.client.read, self._blob_key(name))
        except etcd.EtcdKeyNotFound:
            return None
        return base64.b64decode(node.value)

    def write_blob(self, name: str, data: bytes, secret: bool = True) -> None:
        # etcd has no per-key modes: access to the state etcd is by client certificate.
        self._call(f"write {name}", self.client.write, self._blob_key(name), base64.b64encode(data).decode())

    def delete_blob(self, name: str) -> None:
        import etcd
        with contextlib.suppress(etcd.EtcdKeyNotFound):
            self._call(f"delete {name}", self.client.delete, self._blob_key(name))

    def list_blobs(self, prefix: str = "") -> list[str]:
        import etcd
        base = f"{self.base}/blobs"
        try:
            result = self._call("list blobs", self.client.read, base, recursive=True)
        except etcd.EtcdKeyNotFound:
            return []
        names = [n.key[len(base) + 1:] for n in result.leaves if n.key and not n.dir and n.key != base]
        return sorted(n for n in names if n.startswith(prefix))
