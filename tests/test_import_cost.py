"""What a command loads decides what it costs to start (P1, issue 11): `render` makes the PKI and
writes configs, so it has no use for the cloud SDKs, pyinfra or the Kubernetes client; they are
imported by the provider or phase that calls them. Each check runs the real command line in a new
Python process and reads that process's `sys.modules` after the command finished."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO

# Packages no part of `render` (nor start-up) may import: the cloud SDKs and their HTTP stacks,
# pyinfra (and its SSH client), the Kubernetes client and matplotlib.
HEAVY = ("boto3", "botocore", "openstack", "keystoneauth1", "libcloud", "requests", "pyinfra", "paramiko",
         "kubernetes", "matplotlib")

# Runs the command line as `python -m provision` would, then writes the top-level names of every
# module loaded (whatever the exit code) to the file named by the first argument.
_PROBE = """
import json, sys
from provision.cli import main
out, args = sys.argv[1], sys.argv[2:]
code = main(args)
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""


def loaded_by(tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    """(exit code, top-level modules loaded, stderr) of `provision ARGS...` in a new process."""
    report = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(report), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert report.exists(), proc.stderr[-2000:]
    found = json.loads(report.read_text())
    return found["code"], set(found["modules"]), proc.stderr


@pytest.mark.parametrize("example", ["aws", "openstack", "digitalocean"])
def test_render_imports_no_cloud_sdk_nor_pyinfra(tmp_path, example):
    out = tmp_path / "out"
    code, modules, err = loaded_by(tmp_path, "render", str(EXAMPLES / f"{example}.yaml"), "--out", str(out),
                                   "--state-dir", str(tmp_path / "state"), "-q")
    assert code == 0, err
    assert (out / "index.json").is_file() and len(list(out.iterdir())) > 1  # the whole path ran
    assert {"provision", "cryptography", "jinja2"} <= modules  # the probe sees what render did use
    assert not modules & set(HEAVY), f"render of {example}.yaml imported {sorted(modules & set(HEAVY))}"


def test_version_and_help_import_no_cloud_sdk_nor_pyinfra(tmp_path):
    for args in (["--version"], ["--help"], ["render", "--help"]):
        code, modules, err = loaded_by(tmp_path, *args)
        assert code == 0, err
        assert not modules & set(HEAVY), f"provision {' '.join(args)} imported {sorted(modules & set(HEAVY))}"
        # start-up parses no spec, makes no certificate, renders nothing and prints through click
        assert not modules & {"pydantic", "yaml", "cryptography", "jinja2", "rich"}, \
            f"provision {' '.join(args)} imported {sorted(modules & {'pydantic', 'yaml', 'cryptography', 'jinja2', 'rich'})}"


def test_a_quiet_render_loads_no_rich_nor_the_error_path(tmp_path):
    out = tmp_path / "out"
    code, modules, err = loaded_by(tmp_path, "render", str(EXAMPLES / "aws.yaml"), "--out", str(out),
                                   "--state-dir", str(tmp_path / "state"), "-q")
    assert code == 0, err
    assert (out / "index.json").is_file()
    # its result (the paths written) is plain text rich would print unchanged; tracebacks are
    # printed only on request, a config is gzipped only when too large, no date is parsed by strptime
    unused = {"rich", "traceback", "gzip", "_strptime"}
    assert not modules & unused, f"render imported {sorted(modules & unused)}"


def test_a_plain_result_is_printed_as_rich_prints_it(capsys):
    from provision.ui import UI
    ui = UI()
    ui.result({"files": 2}, "out/pool-a.ign\nout/index.json")
    assert capsys.readouterr().out == "out/pool-a.ign\nout/index.json\n"
    ui.result({}, "with\ta tab and an :emoji: code")  # not verbatim: rich prints it, as before
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and "with" in printed and "\t" not in printed
