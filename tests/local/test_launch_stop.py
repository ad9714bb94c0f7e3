"""A local unit stopped while its ExecStartPre= still waits (etcd waiting for its delivered
keys) stops at once and leaves no process, as systemd stops a unit's whole cgroup: the
launcher runs the real commands (sh, sleep) and is stopped with SIGTERM as the supervisor does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from provision.providers.local.procs import alive
from provision.providers.local.units import UnitLaunch

# The launcher's unit mode without the host's namespaces (unit() joins the host's init first).
RUN_UNIT = """
import json, signal, sys
from pathlib import Path
from provision.providers.local.launch import Unit
runner = Unit(json.loads(sys.argv[1]), Path(sys.argv[2]))
signal.signal(signal.SIGTERM, runner.terminate)
sys.exit(runner.run())
"""


def test_a_unit_stopped_in_its_waiting_start_leaves_no_process(tmp_path):
    pid_file = tmp_path / "pre.pid"
    waiting = f"echo $$ > {pid_file}; until test -s {tmp_path}/never.key; do sleep 0.2; done"
    launch = UnitLaunch(name="waits.service", exec_start_pre=(("/bin/sh", "-c", waiting),),
                        exec_start=(("/bin/sleep", "300"),), restart="always", restart_sec=5.0,
                        ignore_failure_pre=(False,), environment=(("PATH", "/usr/bin:/bin"),))
    state_file = tmp_path / "waits.service.json"
    repo = Path(__file__).resolve().parents[2]
    launcher = subprocess.Popen([sys.executable, "-c", RUN_UNIT, json.dumps(launch.to_json()), str(state_file)],
                                cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pre = int(pid_file.read_text())
        assert alive(pre) and launcher.poll() is None  # waiting in its start, not failed
        stopped_at = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=5) == 0
        assert time.monotonic() - stopped_at < 3.0
        assert json.loads(state_file.read_text())["state"] == "stopped"
        deadline = time.monotonic() + 2
        while alive(pre) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pre)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
