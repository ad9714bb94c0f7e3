"""QA regressions for the CLI surface: exit codes, one JSON document under --output json,
nothing created on bad input, no secrets in any output."""
from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES


@pytest.mark.parametrize("args", [
    ["bogus"],
    ["up"],
    ["init", "--provider", "nope"],
    ["scale", str(EXAMPLES / "local.yaml"), "workers", "abc"],
    ["headroom", str(EXAMPLES / "local.yaml"), "extra"],
])
@pytest.mark.parametrize("json_flag", [["-o", "json"], ["--output=json"], ["-ojson"]])
def test_usage_errors_give_one_json_document(cli, args, json_flag):
    result = cli(*json_flag, *args)
    assert result.code == 2
    doc = json.loads(result.out)
    assert doc["ok"] is False and doc["exit_code"] == 2
    assert doc["errors"] and "Traceback" not in result.err
    assert "Error:" in result.err  # the usage line still goes to stderr


def test_usage_error_in_text_mode_prints_nothing_on_stdout(cli):
    result = cli("bogus")
    assert result.code == 2
    assert result.out == ""


@pytest.mark.parametrize("extra, code", [(["--leaf", "nope"], 2), (["--leaf", "ca"], 2), ([], 1)])
def test_pki_rotate_refusal_creates_no_state_dir(cli, tmp_path, extra, code):
    state_dir = tmp_path / "state"
    result = cli("pki", "rotate", EXAMPLES / "local.yaml", "--state-dir", state_dir, *extra)
    assert result.code == code, result.err
    assert ("--leaf" in result.err) if extra else ("no PKI yet" in result.err)
    assert not state_dir.exists()
