"""provision/faults.py: a named point kills the process (SIGKILL) only when the environment
names it, after writing the marker; `mid-hosts` fires half-way through the hosts."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from provision import faults

SCRIPT = """
from provision import faults
faults.enter("machines")
faults.point("first-write")
print("after first-write", flush=True)
for done in range(1, 5):
    faults.hosts_done(done, 4)
    print(f"host {done} done", flush=True)
"""


def run(tmp_path, fault: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", faults.MARKER_ENV: str(tmp_path / "fired")}
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60,
                          cwd=str(Path(__file__).resolve().parents[1]))


def test_no_fault_runs_through(tmp_path):
    proc = run(tmp_path, None)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "host 4 done"
    assert not (tmp_path / "fired").exists()


@pytest.mark.parametrize("fault, printed", [
    ("machines:first-write", []),
    ("machines:mid-hosts", ["after first-write", "host 1 done"]),  # half of 4 hosts: in the 2nd
])
def test_the_named_point_kills_and_says_so(tmp_path, fault, printed):
    proc = run(tmp_path, fault)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.splitlines() == printed
    assert (tmp_path / "fired").read_text() == f"{fault}\n"


def test_a_point_of_another_phase_does_not_fire(tmp_path):
    proc = run(tmp_path, "render:first-write")
    assert proc.returncode == 0 and not (tmp_path / "fired").exists()
