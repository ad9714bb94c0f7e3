"""etcd's v3 keyspace through its JSON gateway (`/v3/kv/*`, `/v3/lease/*`), over TLS with a
client certificate: what headroom reads (load keys the host agents publish, each on a lease)
and writes (drain keys, the reconcile lock on a lease).

The gateway is what the host agent speaks with curl, so provision reads exactly what hosts
write, without a gRPC stack. Keys and values are base64 in JSON; int64 fields (lease IDs,
TTLs, revisions) arrive as strings. Endpoints are tried in order; an endpoint that cannot be
reached is skipped, an answer from etcd (even an error) is final.
"""
from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Sequence

from ..errors import ActionError, UserError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def prefix_end(prefix: str) -> str:
    """The range_end that makes a range of every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return base64.b64encode(bytes(raw[:i + 1])).decode()
    return base64.b64encode(b"\0").decode()


class EtcdV3Error(ActionError):
    """etcd answered with an error (e.g. a lease that no longer exists)."""


class EtcdV3:
    """A small client of etcd's v3 JSON gateway."""

    def __init__(self, endpoints: Sequence[str], tls: Any = None, timeout: float = 5.0):
        if not endpoints:
            raise UserError("etcd: no endpoints given")
        if any(e.startswith("https://") for e in endpoints) and tls is None:
            raise UserError("etcd: https endpoints need a CA and a client certificate")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.context = None
        if tls is not None:
            self.context = ssl.create_default_context(cafile=str(tls.ca))
            self.context.load_cert_chain(str(tls.cert), str(tls.key))

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        last = "no endpoint"
        for endpoint in self.endpoints:
            request = urllib.request.Request(f"{endpoint}{path}", data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as answer:
                    text = answer.read().decode()
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")
                try:
                    detail = json.loads(detail).get("message") or json.loads(detail).get("error") or detail
                except ValueError:
                    pass
                raise EtcdV3Error(f"etcd: {path} on {endpoint}: {err.code} {str(detail)[:200]}") from None
            except (urllib.error.URLError, OSError) as err:
                last = f"{endpoint}: {getattr(err, 'reason', err)}"
                continue
            # A streaming method (keepalive) answers one JSON object per line.
            first = text.strip().splitlines()[0] if text.strip() else "{}"
            doc = json.loads(first)
            if "error" in doc and "result" not in doc:
                raise EtcdV3Error(f"etcd: {path}: {doc.get('error')}")
            return doc.get("result", doc)
        raise ActionError(f"etcd: cannot reach any endpoint ({last})")

    # -- keys ---------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> dict[str, tuple[str, int]]:
        """{key: (value, lease id)} for every key under `prefix`."""
        doc = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)})
        return {unb64(kv.get("key")): (unb64(kv.get("value")), int(kv.get("lease") or 0))
                for kv in doc.get("kvs") or []}

    def get(self, key: str) -> str | None:
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return unb64(kvs[0].get("value")) if kvs else None

    def put(self, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("/v3/kv/put", body)

    def delete(self, key: str, prefix: bool = False) -> int:
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        return int(self.call("/v3/kv/deleterange", body).get("deleted") or 0)

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Put `key` only if it does not exist (one transaction); True when this call made it."""
        put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        doc = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": put}]})
        return bool(doc.get("succeeded"))

    def delete_if(self, key: str, value: str) -> bool:
        """Delete `key` only while it holds `value` (one transaction)."""
        doc = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}],
            "success": [{"request_delete_range": {"key": b64(key)}}]})
        return bool(doc.get("succeeded"))

    # -- leases -------------------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        doc = self.call("/v3/lease/grant", {"TTL": str(max(1, int(ttl)))})
        return int(doc["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh `lease`; its remaining TTL (0: the lease is gone)."""
        return int(self.call("/v3/lease/keepalive", {"ID": str(lease)}).get("TTL") or 0)

    def revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": str(lease)})
