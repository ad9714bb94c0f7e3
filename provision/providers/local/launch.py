"""The processes of a local host: its init, and one launcher per unit, run as systemd would.

`init JOB`: started by the local provider as
`ip netns exec NS unshare --mount --uts --propagation private PYTHON -I -S .../launch.py init JOB`,
so it is inside the host's network namespace with a new mount and UTS namespace. It names the
host and makes the host's root visible where its programs look: the root's `etc` is the
writable upper layer of an overlay over the machine's `/etc`, and its `opt`, `home`, `var`,
`run`, `tmp`, `root` and `srv` replace the machine's. Then it waits, holding the namespaces.

`unit JOB`: joins the init's namespaces (setns) and supervises one unit's commands with the
unit's environment, user and Restart= policy; its state is JSON under the host's
`/run/provision/units/`. Every module is imported before any namespace change: after it, the
paths this program came from may be hidden.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import grp
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BIND_DIRS = ("opt", "home", "var", "run", "tmp", "root", "srv")
STATE_DIR = "/run/provision/units"
INIT_FILE = "/run/provision/init.json"
MS_BIND = 4096
MS_REC = 16384
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {source} on {target}")


def _escape(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def enter_root(root: Path, overlay_work: Path) -> None:
    """Make the host's root visible where its programs look (this mount namespace only)."""
    # Open every source first: a later mount may hide the path the root lives under (e.g. /tmp).
    sources = {d: os.open(root / d, os.O_RDONLY | os.O_DIRECTORY) for d in BIND_DIRS
               if (root / d).is_dir() and os.path.isdir(f"/{d}") and not os.path.islink(f"/{d}")}
    if (root / "etc").is_dir():
        overlay_work.mkdir(parents=True, exist_ok=True)
        mount("overlay", "/etc", "overlay", 0,
              f"lowerdir=/etc,upperdir={_escape(root / 'etc')},workdir={_escape(overlay_work)}")
    for d, fd in sources.items():
        mount(f"/proc/self/fd/{fd}", f"/{d}", None, MS_BIND | MS_REC, None)
        os.close(fd)


def join(pid: int) -> None:
    """Enter the mount, UTS and network namespaces of the host's init."""
    fds = [(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY), flag)
           for ns, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))]
    for fd, flag in fds:
        _check(_libc.setns(fd, flag), f"setns {flag:#x} of pid {pid}")
        os.close(fd)
    os.chdir("/")


def init(job: dict) -> int:
    socket.sethostname(job["hostname"])
    enter_root(Path(job["root"]), Path(job["overlay_work"]))
    Path(INIT_FILE).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(INIT_FILE + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}))
    os.replace(tmp, INIT_FILE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


class Unit:
    def __init__(self, spec: dict, state_file: Path):
        self.spec = spec
        self.state_file = state_file
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.restarts = 0
        self.log = open(state_file.with_suffix(".log"), "ab", buffering=0)

    def write_state(self, state: str, **extra) -> None:
        doc = {"unit": self.spec["name"], "state": state, "launcher_pid": os.getpid(),
               "restarts": self.restarts, "since": time.time(), **extra}
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True))
        os.replace(tmp, self.state_file)

    def demote(self):
        user, group = self.spec.get("user"), self.spec.get("group")
        if not user and not group:
            return None
        entry = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else os.getgid())

        def preexec() -> None:
            os.setgid(gid)
            if entry:
                os.initgroups(entry.pw_name, gid)
                os.setuid(entry.pw_uid)
        return preexec

    def env(self) -> dict[str, str]:
        env = dict(self.spec["environment"])
        if self.spec.get("user"):
            with_user = pwd.getpwnam(self.spec["user"])
            env.setdefault("HOME", with_user.pw_dir)
            env.setdefault("USER", with_user.pw_name)
        return env

    def start(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, env=self.env(), cwd=self.spec.get("working_directory") or "/",
                                stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                preexec_fn=self.demote(), close_fds=True)

    def run_command(self, argv: list[str], label: str = "") -> int:
        """Run one command to its end: its exit code, 127 when it cannot start (as a shell
        says). `terminate` stops the command running, as systemd stops a unit's whole cgroup
        (an ExecStartPre= still waiting for a key too)."""
        try:
            child = self.start(argv)
        except OSError as err:
            self.log.write(f"provision: {label}{argv[0]}: {err}\n".encode())
            return 127
        self.child = child
        if self.stopping:  # stopped while the command started: terminate() missed it
            self.terminate()
        return child.wait()

    def run_pre(self) -> bool:
        for argv, ignore in zip(self.spec["exec_start_pre"], self.spec["ignore_failure_pre"]):
            if self.run_command(argv, "ExecStartPre ") != 0 and not ignore:
                return False
        return True

    def run_each(self, commands: list[list[str]]) -> int:
        for argv in commands:
            code = self.run_command(argv)
            if code != 0:
                return code
        return 0

    def should_restart(self, code: int) -> bool:
        policy = self.spec["restart"]
        return not self.stopping and (policy == "always" or (policy in ("on-failure", "on-abnormal")
                                                             and code != 0))

    def make_runtime_directories(self) -> None:
        """RuntimeDirectory=: /run/<name>, made before the unit starts (owned by its User=)."""
        mode = int(self.spec.get("runtime_directory_mode", "0755"), 8)
        for name in self.spec.get("runtime_directories", []):
            path = Path("/run") / name
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
            if self.spec.get("user"):
                entry = pwd.getpwnam(self.spec["user"])
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(self) -> int:
        try:
            self.demote()
            self.env()
        except KeyError as err:  # the unit names a user or group the host lacks
            self.write_state("failed", reason=f"unknown user or group {err}")
            return 0
        # Recorded with this launcher's pid at once: while an ExecStartPre= waits for its keys
        # (minutes, bounded) a re-run must see the unit's launcher alive, not only its pid file,
        # which an `up` killed between starting the launcher and writing the file never wrote.
        self.write_state("activating")
        if self.spec["type"] == "oneshot":
            return self.run_oneshot()
        self.make_runtime_directories()
        while True:
            code = 1
            if self.run_pre():
                try:
                    self.child = self.start(self.spec["exec_start"][0])
                    if self.stopping:  # stopped while the process started: terminate() missed it
                        self.terminate()
                    else:
                        self.write_state("running", pid=self.child.pid)
                        self.run_each(self.spec.get("exec_start_post", []))
                    code = self.child.wait()
                except OSError as err:
                    self.log.write(f"provision: ExecStart: {err}\n".encode())
                    code = 127
            if self.stopping:
                self.write_state("stopped", exit_code=code)
                return 0
            if not self.should_restart(code):
                self.write_state("failed" if code != 0 else "exited", exit_code=code)
                return 0
            self.restarts += 1
            self.write_state("auto-restart", exit_code=code)
            time.sleep(max(self.spec["restart_sec"], 0.2))

    def run_oneshot(self) -> int:
        """Type=oneshot: every command in turn; a failure restarts the whole unit when its
        Restart= says so (a loop: a unit that keeps failing must not grow the stack)."""
        while True:
            self.make_runtime_directories()
            self.write_state("activating")
            # A command that cannot start fails the unit (127) instead of killing the launcher.
            code = self.run_each(self.spec["exec_start"]) if self.run_pre() else 1
            if code == 0:
                code = self.run_each(self.spec.get("exec_start_post", []))
            if code != 0 and self.should_restart(code):
                self.restarts += 1
                self.write_state("auto-restart", exit_code=code)
                time.sleep(max(self.spec["restart_sec"], 0.2))
                continue
            self.write_state("exited" if code == 0 else "failed", exit_code=code)
            return 0

    def terminate(self, *_):
        """SIGTERM the running command, SIGKILL it if it still runs 5 s later. Called as the
        SIGTERM handler, usually while the main thread blocks in the command's wait(): waiting
        here too would spin on that wait's lock for the whole 5 s, so a thread kills late."""
        self.stopping = True
        child = self.child
        if child and child.poll() is None:
            child.terminate()
            late = threading.Timer(5.0, lambda: child.returncode is None and child.kill())
            late.daemon = True
            late.start()


def unit(job: dict) -> int:
    join(job["init_pid"])
    state_dir = Path(STATE_DIR)
    state_dir.mkdir(parents=True, exist_ok=True)
    runner = Unit(job["unit"], state_dir / f"{job['unit']['name']}.json")
    signal.signal(signal.SIGTERM, runner.terminate)
    signal.signal(signal.SIGINT, runner.terminate)
    return runner.run()


def main(mode: str, job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    return init(job) if mode == "init" else unit(job)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
