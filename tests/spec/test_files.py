"""Whatever a spec file holds, `provision validate` answers with a clear line and exit 2."""
from __future__ import annotations

import os

import pytest

from tests.conftest import EXAMPLES, run_cli

CASES = [
    ("empty", b"", "empty file"),
    ("only a comment", b"# nothing\n", "empty file"),
    ("a list", b"- a\n- b\n", "top level must be a mapping (got a list)"),
    ("a scalar", b"hello\n", "top level must be a mapping (got a string)"),
    ("binary junk", bytes(range(256)) * 8, "not UTF-8 text"),
    ("nul bytes", b"name: a\x00b\n", "NUL"),
    ("syntax error", b"name: demo\npools:\n  - name: x\n   role: master\n", "line 4, column 4"),
    ("tab indent", b"name: demo\n\tpools: []\n", "YAML syntax error: line 2"),
    ("duplicate key", b"name: a\nname: b\n", "line 2: duplicate key 'name'"),
    ("unhashable key", b"? [a, b]\n: 1\n", "mapping key must be a scalar"),
    ("python tag", b"name: !!python/object:os.system {}\n", "line 1: unsupported YAML tag"),
    ("python scalar tag", b"name: !!python/name:os.system x\n", "line 1"),
    ("alias bomb", b"a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                   b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
     "too many YAML nodes"),
]


@pytest.mark.parametrize("case,content,words", CASES, ids=[c[0] for c in CASES])
def test_bad_files(cli, tmp_path, case, content, words):
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content)
    result = cli("validate", path)
    assert result.code == 2, result
    assert words in result.err, result.err
    assert str(path) in result.err
    assert "Traceback" not in result.err + result.out


def test_missing_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.code == 2 and "no such file" in result.err


def test_directory(cli, tmp_path):
    result = cli("validate", tmp_path)
    assert result.code == 2 and "is a directory" in result.err


def test_huge_file_is_refused_without_reading_it_all(cli, tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(50 * 1024 * 1024)
    result = cli("validate", path)
    assert result.code == 2 and "too large (52428800 bytes" in result.err


def test_unreadable_file(tmp_path):
    """Root reads files whatever their mode: as root, the CLI runs without the capabilities
    that override file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as a user would."""
    import subprocess
    import sys
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    path.chmod(0)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    proc = subprocess.run([*drop, sys.executable, "-m", "provision", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=EXAMPLES.parent)
    assert proc.returncode == 2, proc.stderr
    assert f"'{path}' is not readable" in proc.stderr and "Traceback" not in proc.stderr


def test_problem_lines_in_a_subprocess_have_no_traceback(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text((EXAMPLES / "local.yaml").read_text().replace("min: 1", "min: 5"))
    result = run_cli("validate", path)
    assert result.code == 2
    assert f"{path}: pools[1].min: must be <= count (got 5 > 2)" in result.err.splitlines()
    assert "Traceback" not in result.err


def test_json_output_lists_errors(cli, tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("name: demo\nprovider: {name: local}\npools: []\n")
    result = cli("validate", path, "--output", "json")
    import json
    doc = json.loads(result.out)
    assert result.code == 2 and doc["valid"] is False
    assert any("pools:" in e for e in doc["errors"])
