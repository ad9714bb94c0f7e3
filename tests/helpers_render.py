"""Helpers for the PKI and render tests: specs, stores, stub binaries, an artifact server,
and the real Ignition engine."""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

from provision import pki, pki_agents
from tests.real import COMPONENTS, require
from provision.plan import plan
from provision.render import render_cluster
from provision.spec import load_spec
from provision.state import open_store

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
BINARIES = ("etcd", "etcdctl", "flanneld", "fleetd", "kubelet")

SMALL_SPEC = """\
name: small
provider:
  name: local
  subnet: 10.77.0.0/24
etcd:
  count: 1
pools:
  - name: masters
    role: master
    count: 1
  - name: workers
    role: worker
    count: 2
    labels: {tier: general}
headroom:
  pool: workers
  source: etcd
"""


def write_spec(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def stub_binary(name: str) -> bytes:
    return f"#!/bin/sh\n# stub {name}\nexit 0\n".encode()


def served_artifacts(base_url: str, names=BINARIES) -> dict:
    """What a provider serving its own mirror records in state["artifacts"]."""
    return {n: {"url": f"{base_url}/{n}", "sha512": hashlib.sha512(stub_binary(n)).hexdigest()} for n in names}


def prepared(spec_path: Path, state_dir: Path, artifacts: dict | None = None):
    """(spec, store, state, hosts) with the PKI made, every host's agent certificate issued (as
    bootstrapping each would) and optional served artifacts."""
    spec = load_spec(spec_path)
    store = open_store(spec, state_dir)
    state = store.read()
    if artifacts is not None:
        state["artifacts"] = artifacts
    hosts = plan(spec, state).desired
    pki.ensure_pki(spec, store, hosts)
    pki_agents.ensure(spec, store, [h.name for h in hosts])
    return spec, store, state, hosts


def render(spec_path: Path, state_dir: Path, artifacts: dict | None = None):
    spec, store, state, hosts = prepared(spec_path, state_dir, artifacts)
    return spec, store, hosts, render_cluster(spec, state, store, hosts)


def ignition_units(config: dict) -> dict[str, str]:
    return {u["name"]: u.get("contents", "") for u in config["systemd"]["units"]}


def ignition_file(config: dict, path: str) -> bytes:
    import base64
    import gzip
    for f in config["storage"]["files"]:
        if f["path"] == path:
            source = f["contents"]["source"]
            data = base64.b64decode(source.split(",", 1)[1])
            return gzip.decompress(data) if f["contents"].get("compression") == "gzip" else data
    raise KeyError(path)


def env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


# ---- an HTTP server for artifacts and configs ----------------------------------------------

@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def make_tarball(path: Path, members: dict[str, bytes]) -> str:
    """A deterministic .tar.gz with `members` (path in tar -> bytes); returns its sha512."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    import gzip
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return hashlib.sha512(path.read_bytes()).hexdigest()


# ---- the real Ignition engine --------------------------------------------------------------

def need_ignition_engine() -> None:
    """The engine creates users with useradd --root: root and the engine (tests/real.py)."""
    require("root", "ignition")


def apply_ignition(config: bytes, work: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the fetch and files stages on `config` into a scratch root; returns (root, last run).

    The root lives in a world-traversable scratch directory (removed at exit): Ignition writes
    a user's authorized keys as that user, who cannot enter pytest's 0700 tmp directories.
    """
    work.mkdir(parents=True, exist_ok=True)
    scratch_root = Path(tempfile.mkdtemp(prefix="pv-ignition-"))
    scratch_root.chmod(0o755)
    atexit.register(shutil.rmtree, scratch_root, True)
    root, scratch, shim = scratch_root / "root", work / "state", work / "shim"
    for d in (root / "etc" / "selinux", scratch, shim):
        d.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "selinux" / "config").write_text("SELINUXTYPE=targeted\n")
    # this build always relabels: a no-op setfiles that reads its patterns is enough
    (shim / "setfiles").write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
    (shim / "setfiles").chmod(0o755)
    cfg = work / "config.ign"
    cfg.write_bytes(config)
    env = dict(os.environ, IGNITION_CONFIG_FILE=str(cfg), PATH=f"{shim}:{os.environ.get('PATH', '')}")
    proc = None
    for stage in ("fetch", "files"):
        proc = subprocess.run([str(IGNITION), "-platform", "file", "-stage", stage, "-root", str(root),
                               "-log-to-stdout", "-config-cache", str(scratch / "cache.json"),
                               "-state-file", str(scratch / "state")],
                              env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            break
    return root, proc


def which_or_fail(tool: str) -> str:
    if tool in COMPONENTS:  # etcd: the 3.5 the local provider serves, not whatever PATH has first
        return require(tool)
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed (see .ci/debian-packages.txt)")
    return path


def load_json(data: bytes) -> dict:
    return json.loads(data)



def api_pems(store, directory: Path) -> dict[str, Path]:
    """The cluster's CA, API server certificate and key, and admin client certificate and key,
    written to `directory` for an HTTPS stand-in of the API server and its client."""
    pem = {}
    for blob in ("ca.crt", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key"):
        pem[blob] = directory / blob
        pem[blob].write_bytes(store.read_blob(f"pki/{blob}"))
    return pem


def bootstrap_api_env(config: dict, pem: dict[str, Path], api_port: int, addons: Path) -> dict[str, str]:
    """What `bootstrap.sh` on a master runs with against a stand-in of the API server on
    `api_port`: the bootstrap.env of its `config`, pointed at the stand-in, as the admin."""
    env = env_file(ignition_file(config, "/etc/provision/bootstrap.env").decode())
    env.update({"BOOTSTRAP_API": f"https://127.0.0.1:{api_port}", "BOOTSTRAP_KUBE_CA": str(pem["ca.crt"]),
                "BOOTSTRAP_KUBE_CERT": str(pem["admin.crt"]), "BOOTSTRAP_KUBE_KEY": str(pem["admin.key"]),
                "BOOTSTRAP_ADDONS": str(addons), "PATH": "/usr/bin:/bin"})
    return env
