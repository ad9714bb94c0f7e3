"""The digest of what a control-plane static pod mounts from its host.

kubelet restarts a static pod only when its manifest file changes; a renewed certificate or key
under a hostPath the pod mounts changes no manifest. So each control-plane manifest carries an
annotation with a digest of the files of its machine config that it mounts (certificates, keys,
kubeconfigs): `pki rotate` then `up` rewrites the manifests, and kubelet restarts the pods with
the renewed files. The digest is over contents only, so rendering stays deterministic.
"""
from __future__ import annotations

import hashlib
import posixpath
from typing import Any, Callable, Iterable

ANNOTATION = "provision.io/mounted-digest"


def mounted_digest(items: list[dict[str, Any]], read_file: Callable[[dict[str, Any]], bytes | None]
                   ) -> Callable[[Iterable[str]], str]:
    """A template function: `mounted_digest(paths)` is "sha256:<hex>" over the path and content
    of every file item of the machine config that is one of `paths` or lies under one of them
    (a directory mount). `read_file` gives an item's bytes (template rendered, blob read)."""

    def digest(paths: Iterable[str]) -> str:
        roots = [p.rstrip("/") or "/" for p in paths]
        mounted = sorted(i for i in (item.get("file") for item in items) if isinstance(i, str)
                         and any(i == r or i.startswith(posixpath.join(r, "")) for r in roots))
        by_path = {item["file"]: item for item in items if "file" in item}
        h = hashlib.sha256()
        for path in mounted:
            h.update(path.encode() + b"\0")
            h.update(hashlib.sha256(read_file(by_path[path]) or b"").digest())
        return f"sha256:{h.hexdigest()}"

    return digest
