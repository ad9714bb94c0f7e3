"""Phase `kubeconfig`: write the admin kubeconfig (0600) for the cluster's API server.

The API server address is the first `kubernetes.api_server_names` entry, else the first
master's address; credentials are the `admin` client certificate (group system:masters).
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ActionError
from ..files import secure_makedirs, write_file_atomic
from .. import faults, pki_ca
from ..spec import Spec
from ..state import StateStore
from . import RunContext

FILE_NAME = "kubeconfig"


def api_server_url(spec: Spec, state: Mapping[str, Any]) -> str:
    endpoint = (state.get("api_endpoint") or {}).get("dns_name")
    if endpoint:  # the cloud load balancer in front of every master
        return f"https://{endpoint}:6443"
    if spec.kubernetes.api_server_names:
        return f"https://{spec.kubernetes.api_server_names[0]}:6443"
    masters = sorted((h.get("index", 0), n, h) for n, h in (state.get("hosts") or {}).items()
                     if h.get("role") == "master")
    if not masters:
        raise ActionError("kubeconfig: state records no master yet; run `provision up SPEC` first")
    _, name, host = masters[0]
    return f"https://{host.get('address') or name}:6443"


def admin_kubeconfig(spec: Spec, store: StateStore, state: Mapping[str, Any]) -> bytes:
    """The admin kubeconfig document (deterministic bytes)."""
    blobs = {}
    for name in ("pki/ca.crt", "pki/admin.crt", "pki/admin.key"):
        # the old and the new CA while a rotation has both trusted (provision.pki_ca)
        data = store.read_blob(pki_ca.trusted_blob(store, name))
        if data is None:
            raise ActionError(f"kubeconfig: state has no {name}; run `provision up SPEC --until pki` first")
        blobs[name] = base64.b64encode(data).decode()
    user = f"{spec.name}-admin"
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": spec.name, "cluster": {"server": api_server_url(spec, state),
                                                     "certificate-authority-data": blobs["pki/ca.crt"]}}],
        "users": [{"name": user, "user": {"client-certificate-data": blobs["pki/admin.crt"],
                                          "client-key-data": blobs["pki/admin.key"]}}],
        "contexts": [{"name": f"{user}@{spec.name}", "context": {"cluster": spec.name, "user": user}}],
        "current-context": f"{user}@{spec.name}",
    }
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).encode()


def default_path(store: StateStore) -> Path:
    return Path(store.workdir) / FILE_NAME


def write_admin_kubeconfig(spec: Spec, store: StateStore, state: Mapping[str, Any], path: Path | None = None) -> tuple[Path, bool]:
    """Write it 0600 (atomically); returns (path, whether the file changed)."""
    path = Path(path) if path is not None else default_path(store)
    data = admin_kubeconfig(spec, store, state)
    if path.is_file() and path.read_bytes() == data and (path.stat().st_mode & 0o777) == 0o600:
        return path, False
    if path.parent == Path(store.workdir):
        secure_makedirs(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, data, 0o600)
    return path, True


def run(ctx: RunContext) -> dict:
    path = default_path(ctx.store)
    if ctx.dry_run:
        ctx.log("kubeconfig", f"would write the admin kubeconfig to {path}")
        return {"dry_run": True, "path": str(path)}
    path, changed = write_admin_kubeconfig(ctx.spec, ctx.store, ctx.state, path)
    faults.point(faults.FIRST_WRITE)
    ctx.log("kubeconfig", f"admin kubeconfig {'written to' if changed else 'unchanged at'} {path} "
                          f"(server {api_server_url(ctx.spec, ctx.state)})")
    return {"path": str(path), "changed": changed}
