"""Deterministic crash points, for the fault tests only.

With `PROVISION_FAULT=PHASE:POINT` in its environment, `provision` kills itself with SIGKILL
(no clean-up, no `finally`, like a power cut or the OOM killer) the first time it reaches that
named point inside that phase of `up` (or of `scale` and `headroom`, which run the same
phases). Without the variable every call returns at once. Nothing but tests sets it.

Points (POINTS below):
- `first-write`: right after the phase's first lasting write (a state blob or document, the
  flannel key in etcd, the inventory of a role run, the kubeconfig file).
- `mid-hosts`: mid-way through the phase's per-host work (after half of its hosts, at least one,
  are done; for role phases, half of the role operations on all hosts).

With `PROVISION_FAULT_MARKER=FILE` the point's name is written to FILE (and fsynced) just before
the kill, so a test knows which point fired.
"""
from __future__ import annotations

import os
import signal

ENV = "PROVISION_FAULT"
MARKER_ENV = "PROVISION_FAULT_MARKER"
FIRST_WRITE, MID_HOSTS = "first-write", "mid-hosts"
# Per phase, in the order a fresh `up` reaches them.
POINTS: dict[str, tuple[str, ...]] = {
    "endpoint": (FIRST_WRITE,),
    "pki": (FIRST_WRITE, MID_HOSTS),
    "render": (FIRST_WRITE, MID_HOSTS),
    "rollout": (FIRST_WRITE, MID_HOSTS),
    "machines": (MID_HOSTS, FIRST_WRITE),
    "wait": (MID_HOSTS, FIRST_WRITE),
    "hosts": (FIRST_WRITE, MID_HOSTS),
    "secrets": (FIRST_WRITE, MID_HOSTS),
    "etcd": (FIRST_WRITE, MID_HOSTS),
    "flannel": (FIRST_WRITE, MID_HOSTS),
    "fleet": (FIRST_WRITE, MID_HOSTS),
    "masters": (FIRST_WRITE, MID_HOSTS),
    "workers": (FIRST_WRITE, MID_HOSTS),
    "kubeconfig": (FIRST_WRITE,),
}

_phase: str | None = None  # the phase running now (set by run_phases)


def enter(phase: str | None) -> None:
    global _phase
    _phase = phase


def current() -> str | None:
    return _phase


def point(name: str, phase: str | None = None) -> None:
    """Die here when the environment asks for `phase:name` (default: the running phase)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if wanted != f"{phase or _phase}:{name}":
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{wanted}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def hosts_done(done: int, total: int, phase: str | None = None) -> None:
    """Call after each unit of per-host work: `mid-hosts` fires once half of `total` is done."""
    if os.environ.get(ENV) and total > 0 and done == max(1, total // 2):
        point(MID_HOSTS, phase)


def count_operations(state) -> None:
    """For a pyinfra run about to start: `mid-hosts` fires once half of its operations (every
    operation on every host) have succeeded."""
    if not os.environ.get(ENV):
        return
    from pyinfra.api.state import BaseStateCallback

    total = len(state.get_op_order()) * len(state.activated_hosts)
    done = [0]

    class Counter(BaseStateCallback):
        @staticmethod
        def operation_host_success(state, host, op_hash, retry_count: int = 0):
            done[0] += 1
            hosts_done(done[0], total)

    state.add_callback_handler(Counter())
