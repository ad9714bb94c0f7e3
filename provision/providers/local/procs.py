"""Process tools over /proc for the local provider: is a pid alive, what is its command line,
which processes mention a string, stopping a set of processes, the members of sessions.

Everything the provider starts is found again this way (by name, by argument), so `down`
stops it even after `up` crashed and the workdir is gone.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Iterable, Sequence

# The directory holding the `provision` package: children started with `python -m` import it.
PACKAGE_PARENT = Path(__file__).resolve().parents[3]


def alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> list[str]:
    """The arguments of `pid`; empty when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def pids_with_arg(needle: str) -> list[int]:
    """Processes (but this one) with an argument containing `needle`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if any(needle in a for a in cmdline(int(entry))):
                out.append(int(entry))
    return out


def kill_all(pids: Sequence[int], grace: float) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        if not any(alive(p) for p in pids):
            return


def session_members(sids: Iterable[int]) -> list[int]:
    """Processes in any of the sessions `sids` (one pass over /proc)."""
    wanted = set(sids)
    out: list[int] = []
    if not wanted:
        return out
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry)) in wanted:
                    out.append(int(entry))
    return out


def child_env() -> dict[str, str]:
    """The environment of the provider's `python -m` children (mirror, init, launchers): a
    plain PATH and locale, and this `provision` importable whatever the working directory."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
    env["PYTHONPATH"] = str(PACKAGE_PARENT)
    return env
