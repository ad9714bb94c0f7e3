"""State backend `etcd`: one cluster's state in an etcd's v2 keyspace (python-etcd), shared by
every operator and cron host that reaches it.

Keys under `/<state.prefix>/<cluster>/`: `state` (the JSON document), `lock` (TTL key naming
its holder, refreshed while held) and `blobs/<name>` (base64). Writes are compare-and-swap on
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
from typing import Any, Iterator, Sequence

from .errors import LockHeld
from .etcd import v2
from .pki import TLSFiles
from .state import (StateError, StateStore, check_blob_name, describe_holder, empty_state, kept_alive,
                    lock_holder, next_document, parse_document)

LOCK_TTL = 60  # seconds; refreshed every LOCK_TTL/3 while held, so a crashed holder frees it soon


class EtcdStateStore(StateStore):
    """StateStore in etcd (v2 API) with compare-and-swap writes and a TTL lock."""

    backend = "etcd"

    def __init__(self, spec: Any, state_dir: Path, client: Any = None):
        super().__init__(spec.name, Path(state_dir) / spec.name)
        self.base = f"/{spec.state.prefix.strip('/')}/{spec.name}"
        self._client = client
        self._endpoints = tuple(spec.state.endpoints)
        self._index: int | None = None  # modifiedIndex of the state key as last read

    @property
    def location(self) -> str:
        return f"etcd {','.join(self._endpoints)} key {self.base}"

    @property
    def client(self):
        if self._client is None:
            tls = None
            if os.environ.get("ETCDCTL_CERT"):
                tls = TLSFiles(ca=Path(os.environ.get("ETCDCTL_CACERT", "")), cert=Path(os.environ["ETCDCTL_CERT"]),
                               key=Path(os.environ.get("ETCDCTL_KEY", "")))
            self._client = v2.client(self._endpoints, tls)
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
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
        data = json.dumps(new, indent=2, sort_keys=True)
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
        import etcd
        key = f"{self.base}/lock"
        holder = json.dumps(lock_holder(command), sort_keys=True)
        try:
            self._call("take the lock", self.client.write, key, holder, prevExist=False, ttl=LOCK_TTL)
        except etcd.EtcdAlreadyExist:
            try:
                other = json.loads(self._call("read the lock", self.client.read, key).value)
            except (etcd.EtcdKeyNotFound, ValueError, TypeError):
                other = {}
            raise LockHeld(f"cluster {self.cluster!r} is locked by {describe_holder(other)}; "
                           "try again when it has finished", other) from None
        try:
            with kept_alive(LOCK_TTL / 3, lambda: self.client.write(key, holder, prevValue=holder, ttl=LOCK_TTL)):
                yield
        finally:
            with contextlib.suppress(Exception):
                self.client.delete(key, prevValue=holder)

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
