"""etcd's v3 keyspace as headroom uses it: load keys the host agents publish (each on a lease),
drain keys, and the reconcile lock on a lease.

provision speaks gRPC through the real `etcdctl` (ETCDCTL_API=3), as `cluster_etcd` does,
with its `provisioner` client certificate: etcd's auth maps a certificate's Common Name to a
user over gRPC, which its JSON gateway does not do. (Host agents use the JSON gateway with
curl: `templates/scripts/host-agent.sh`.) Lease IDs are decimal in etcdctl's JSON and
hexadecimal on its command line.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from typing import Any, Sequence

from ..errors import ActionError, UserError


class EtcdV3Error(ActionError):
    """etcdctl failed (etcd refused, or no endpoint answered)."""


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def quoted(text: str) -> str:
    """A double-quoted argument of etcdctl's txn (Go-unquoted: JSON string escaping fits)."""
    return json.dumps(text)


class EtcdV3:
    """The keys and leases headroom needs, through etcdctl."""

    def __init__(self, endpoints: Sequence[str], tls: Any = None, timeout: float = 5.0):
        if not endpoints:
            raise UserError("etcd: no endpoints given")
        if any(e.startswith("https://") for e in endpoints) and tls is None:
            raise UserError("etcd: https endpoints need a CA and a client certificate")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.tls = tls
        self.timeout = timeout

    def run(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        binary = shutil.which("etcdctl")
        if binary is None:
            raise ActionError("etcdctl is not installed (Debian package etcd-client)")
        cmd = [binary, f"--endpoints={','.join(self.endpoints)}", f"--dial-timeout={self.timeout:g}s",
               f"--command-timeout={self.timeout:g}s", "-w", "json"]
        if self.tls is not None:
            cmd += [f"--cacert={self.tls.ca}", f"--cert={self.tls.cert}", f"--key={self.tls.key}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
        try:
            done = subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, env=env,
                                  timeout=self.timeout * 3)
        except subprocess.TimeoutExpired:
            raise EtcdV3Error(f"etcd: {args[0]} timed out after {self.timeout * 3:g}s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no answer"])[-1][:300]
            raise EtcdV3Error(f"etcd: {' '.join(args[:2])}: {last}")
        return json.loads(done.stdout or "{}")

    # -- keys ---------------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> dict[str, tuple[str, int]]:
        """{key: (value, lease id)} for every key under `prefix`."""
        doc = self.run("get", prefix, "--prefix")
        return {unb64(kv.get("key")): (unb64(kv.get("value")), int(kv.get("lease") or 0))
                for kv in doc.get("kvs") or []}

    def get(self, key: str) -> str | None:
        kvs = self.run("get", key).get("kvs") or []
        return unb64(kvs[0].get("value")) if kvs else None

    def put(self, key: str, value: str, lease: int = 0) -> None:
        args = ["put", key] + ([f"--lease={lease:x}"] if lease else [])
        self.run(*args, stdin=value)  # the value from stdin: never parsed as a flag

    def delete(self, key: str, prefix: bool = False) -> int:
        return int(self.run("del", key, *(["--prefix"] if prefix else [])).get("deleted") or 0)

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Put `key` only if it does not exist (one transaction); True when this call made it."""
        lease_flag = f" --lease={lease:x}" if lease else ""
        # compares, blank line, success requests, blank line, failure requests, blank line
        script = f"create({quoted(key)}) = \"0\"\n\nput{lease_flag} {quoted(key)} {quoted(value)}\n\n\n"
        return bool(self.run("txn", stdin=script).get("succeeded"))

    def delete_if(self, key: str, value: str) -> bool:
        """Delete `key` only while it holds `value` (one transaction)."""
        script = f"value({quoted(key)}) = {quoted(value)}\n\ndel {quoted(key)}\n\n\n"
        return bool(self.run("txn", stdin=script).get("succeeded"))

    # -- leases -------------------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        return int(self.run("lease", "grant", str(max(1, int(ttl))))["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh `lease`; its remaining TTL (0: the lease is gone)."""
        try:
            return int(self.run("lease", "keep-alive", "--once", f"{lease:x}").get("TTL") or 0)
        except EtcdV3Error:
            return 0

    def revoke(self, lease: int) -> None:
        self.run("lease", "revoke", f"{lease:x}")
