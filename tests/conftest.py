"""Shared fixtures: run the CLI in-process or as a subprocess, find example specs."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# require(component): a missing real component skips outside CI and fails under CI=true.
pytest_plugins = ("tests.real",)
EXAMPLES = REPO / "examples"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `provision ARGS...` in this process; returns exit code, stdout, stderr."""
    from provision.cli import main

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120) -> Result:
    """Run `python -m provision ARGS...` as its own process."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "provision", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def set_aws_credentials(monkeypatch, present: bool) -> None:
    """Environment where boto3's credential chain finds fake keys (`present`) or nothing at all
    (no files, no profile, no instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if present:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake AWS credentials: the aws provider's checks refuse to go on without any."""
    set_aws_credentials(monkeypatch, present=True)


@pytest.fixture
def example():
    def path(name: str) -> Path:
        return EXAMPLES / name
    return path
