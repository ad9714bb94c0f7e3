"""Stopping a local host leaves none of its processes, even one a launcher started while it was
being stopped (seen as host agents living on after their host was destroyed)."""
from __future__ import annotations

import subprocess
import sys
import time

from provision.providers.local.procs import alive
from provision.providers.local.supervisor import Supervisor

# A launcher stand-in: its own session (as a unit launcher is), found by its job path; asked to
# stop, it starts one more process (the race of a unit launcher starting its process just then)
# and does not stop, so it ends by SIGKILL and that process is left in its session.
LATE_STARTER = """
import signal, subprocess, sys, time
def late(*_):
    child = subprocess.Popen(["sleep", "300"])
    open(sys.argv[2], "w").write(str(child.pid))
signal.signal(signal.SIGTERM, late)
open(sys.argv[3], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def test_stopping_a_host_also_ends_what_its_launcher_started_while_being_stopped(tmp_path):
    hosts = tmp_path / "hosts"
    jobs = hosts / "h1" / "jobs"
    jobs.mkdir(parents=True)
    script = tmp_path / "late.py"
    script.write_text(LATE_STARTER)
    child_pid, ready = tmp_path / "child.pid", tmp_path / "ready"
    launcher = subprocess.Popen([sys.executable, str(script), str(jobs / "agent.json"), str(child_pid), str(ready)],
                                start_new_session=True)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    supervisor = Supervisor(hosts, lambda name: f"provision-test-absent-{name}")  # no namespace: job path only
    try:
        supervisor.stop_hosts(["h1"])
        launcher.wait(timeout=10)
        late = int(child_pid.read_text())
        deadline = time.monotonic() + 5
        while alive(late) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(late), "a process the launcher started while being stopped outlived its host"
    finally:
        launcher.kill()
        if child_pid.exists():
            subprocess.run(["kill", "-9", child_pid.read_text()], capture_output=True)
