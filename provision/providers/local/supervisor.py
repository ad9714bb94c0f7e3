"""A local host's processes, from the provider's side: its init (holding the host's mount and
UTS namespaces), one launcher per enabled unit (see `launch`), the units' recorded states, and
stopping them. The launchers record each unit's state as JSON under the host's
`/run/provision/units/`; this module reads it and never guesses.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ...errors import ActionError
from ...files import write_file_atomic
from . import net
from .procs import alive, child_env, cmdline, kill_all, pids_with_arg, session_members
from .units import UnitLaunch, boot_order

ONESHOT_TIMEOUT = 120  # seconds boot waits for a oneshot (a download) that later units need

# The init and unit launchers run `launch.py` as a script in isolated mode without site-packages
# (`-I -S`): it needs the standard library only, and importing it as a module of `provision`
# imported the package's spec and provider modules first (pydantic among them), about five times
# the start-up of the launcher's own work, paid once per host and once per unit at every boot.
LAUNCH_COMMAND = (sys.executable, "-I", "-S", str(Path(__file__).with_name("launch.py")))
UNIT_STATE_DIR = "run/provision/units"
INIT_FILE = "run/provision/init.json"
STOP_ROUNDS = 3  # looks for a host's processes when stopping it (see stop_hosts)
RUNNING_STATES = ("running", "activating", "auto-restart", "exited")


class Supervisor:
    """The processes of a cluster's local hosts. `hosts_dir` holds `<host>/{root,jobs,...}`
    (None without a workdir: then only what is found by namespace is stopped); `netns` names a
    host's network namespace."""

    def __init__(self, hosts_dir: Path | None, netns: Callable[[str], str]):
        self.hosts_dir = hosts_dir
        self.netns = netns

    def host_dir(self, name: str) -> Path:
        if self.hosts_dir is None:
            raise ActionError("local: the provider needs the cluster's workdir")
        return self.hosts_dir / name

    def host_root(self, name: str) -> Path:
        return self.host_dir(name) / "root"

    # -- starting -----------------------------------------------------------------------------
    def boot(self, name: str) -> list[str]:
        """Start the host's init (its namespaces), then the root's enabled units (sshd among
        them, from the image) that are not running yet: on a running host, exactly those that
        stopped, failed or died. Returns the units it started."""
        root = self.host_root(name)
        init_pid = self.ensure_init(name)
        units_dir = root / UNIT_STATE_DIR
        units_dir.mkdir(parents=True, exist_ok=True)
        order, started = self._boot_pass(name, init_pid)
        # A unit ordered after a oneshot that just started (the install unit its Requires= pulls
        # in) can be resolved only once that has finished: its binary exists from then on.
        before_skipped = {dep for launch in order if launch.skip_reason for dep in launch.after}
        oneshots = [launch.name for launch in order
                    if launch.name in started and launch.type == "oneshot" and launch.name in before_skipped]
        if oneshots:
            self._wait_finished(name, oneshots)
            started += self._boot_pass(name, init_pid)[1]
        return started

    def _boot_pass(self, name: str, init_pid: int) -> tuple[list[UnitLaunch], list[str]]:
        root = self.host_root(name)
        units_dir = root / UNIT_STATE_DIR
        order, started = boot_order(root, name), []
        for launch in order:
            if launch.skip_reason:
                write_unit_state(units_dir, launch.name, {"state": "skipped", "reason": launch.skip_reason})
            elif self._start_unit(name, launch, init_pid):
                started.append(launch.name)
        return order, started

    def _wait_finished(self, name: str, units: Sequence[str], timeout: float = ONESHOT_TIMEOUT) -> None:
        """Until each oneshot unit has exited or failed (or `timeout` passed: then later units stay skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.unit_states(name)
            if all(states.get(u, {}).get("state") in ("exited", "failed", "dead") for u in units):
                return
            time.sleep(0.05)

    def init_pid(self, name: str) -> int | None:
        """The host's live init, if it runs inside the host's network namespace."""
        with contextlib.suppress(OSError, ValueError):
            pid = json.loads((self.host_root(name) / INIT_FILE).read_text())["pid"]
            if alive(pid) and pid in net.netns_pids(self.netns(name)):
                return pid
        return None

    def ensure_init(self, name: str) -> int:
        """The process holding the host's mount and UTS namespaces (its PID 1, in effect)."""
        pid = self.init_pid(name)
        if pid:
            return pid
        # Without its init, a host's processes live in a mount namespace nobody can join: restart all.
        self.stop_hosts([name])
        with contextlib.suppress(FileNotFoundError):
            (self.host_root(name) / INIT_FILE).unlink()
        job = self.host_dir(name) / "init.json"
        job.write_text(json.dumps({"root": str(self.host_root(name)), "hostname": name,
                                   "overlay_work": str(self.host_dir(name) / "etc-work")}, sort_keys=True))
        log = open(self.host_dir(name) / "launch.log", "ab")
        subprocess.Popen(["ip", "netns", "exec", self.netns(name), "unshare", "--mount", "--uts",
                          "--propagation", "private", *LAUNCH_COMMAND, "init", str(job)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
                         env=child_env())
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pid = self.init_pid(name)
            if pid:
                return pid
            time.sleep(0.02)
        raise ActionError(f"local: host {name} did not start (see {self.host_dir(name) / 'launch.log'})")

    def _start_unit(self, name: str, launch: UnitLaunch, init_pid: int) -> bool:
        """Start one unit unless it runs (or a oneshot finished); True when it started it."""
        current = self.read_unit_state(name, launch.name)
        if current and current.get("state") in RUNNING_STATES and alive(current.get("launcher_pid")):
            return False
        job = self.host_dir(name) / "jobs" / f"{launch.name}.json"
        with contextlib.suppress(OSError, ValueError):
            pid = int(job.with_suffix(".pid").read_text())
            if alive(pid) and str(job) in cmdline(pid):
                return False  # started by an earlier run that did not see it record itself
        if current and current.get("state") == "exited" and launch.type == "oneshot":
            return False
        job.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The unit's environment may carry secrets (tokens in EnvironmentFile=): owner only.
        write_file_atomic(job, json.dumps({"init_pid": init_pid, "unit": launch.to_json()}, sort_keys=True).encode(),
                          0o600)
        write_unit_state(self.host_root(name) / UNIT_STATE_DIR, launch.name, {"state": "activating"})
        log = open(self.host_dir(name) / "launch.log", "ab")
        child = subprocess.Popen([*LAUNCH_COMMAND, "unit", str(job)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
                                 env=child_env())
        log.close()
        # Until the launcher records itself, this says it exists (a re-run must not start a second).
        write_file_atomic(job.with_suffix(".pid"), str(child.pid).encode(), 0o600)
        return True

    # -- states -------------------------------------------------------------------------------
    def read_unit_state(self, name: str, unit: str) -> dict[str, Any] | None:
        path = self.host_root(name) / UNIT_STATE_DIR / f"{unit}.json"
        with contextlib.suppress(OSError, ValueError):
            doc: dict[str, Any] = json.loads(path.read_text())
            return doc
        return None

    def unit_states(self, name: str) -> dict[str, dict[str, Any]]:
        """{unit: {"state": running|exited|skipped|failed|activating|dead, "reason"...}} of a host."""
        out: dict[str, dict[str, Any]] = {}
        units_dir = self.host_root(name) / UNIT_STATE_DIR
        if not units_dir.is_dir():
            return out
        for path in sorted(units_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(path.read_text())
                if doc.get("state") in ("running", "activating", "auto-restart") and \
                        not alive(doc.get("launcher_pid")) and doc.get("launcher_pid"):
                    doc["state"] = "dead"
                out[doc.get("unit", path.stem)] = doc
        return out

    # -- stopping -----------------------------------------------------------------------------
    def stop_unit(self, name: str, unit: str, timeout: float = 10.0) -> bool:
        """Stop one unit of a host as `systemctl stop` would; False when it was not running."""
        current = self.read_unit_state(name, unit)
        pid = (current or {}).get("launcher_pid")
        if not pid or not alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)  # the launcher stops the unit's process and records "stopped"
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            kill_all([pid], grace=0)
        return True

    def stop_hosts(self, names: Sequence[str]) -> None:
        """Every process of the hosts: in their namespaces, launchers found by their job path,
        and whole sessions (a launcher's unit processes live in its session)."""
        sids: set[int] = set()
        # Again until none is left: a launcher stopped while it was starting its unit's process
        # leaves that process, which no earlier look saw, in its session (found by the session).
        for _ in range(STOP_ROUNDS):
            pids: set[int] = set()
            for name in names:
                pids.update(net.netns_pids(self.netns(name)))
                if self.hosts_dir is not None:
                    # Launchers whose namespace is already gone are found by their job path.
                    pids.update(pids_with_arg(str(self.host_dir(name) / "jobs") + "/"))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    sids.add(os.getsid(pid))
            sids.discard(os.getsid(0))
            pids.update(session_members(sids))
            if not pids:
                return
            kill_all(sorted(pids), grace=1.0)


def write_unit_state(units_dir: Path, unit: str, doc: dict[str, Any]) -> None:
    doc = {"unit": unit, **doc}
    tmp = units_dir / f".{unit}.json.tmp"
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, units_dir / f"{unit}.json")
