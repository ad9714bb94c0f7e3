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


def _bad_ami_spec(tmp_path):
    text = (EXAMPLES / "aws.yaml").read_text()
    assert "\n  region:" in text
    path = tmp_path / "aws-bad-ami.yaml"
    path.write_text(text.replace("\n  region:", "\n  ami: xyz\n  region:", 1))
    return path


def test_validate_runs_the_providers_own_checks(cli, tmp_path, aws_credentials):
    path = _bad_ami_spec(tmp_path)
    result = cli("validate", path)
    assert result.code == 2
    assert result.err.strip() == f"{path}: provider.ami: must be an AMI id like ami-0123456789abcdef0 (got 'xyz')"
    doc = json.loads(cli("validate", path, "-o", "json").out)
    assert doc["valid"] is False and "provider.ami" in doc["errors"][0]


def test_validate_needs_no_aws_credentials(cli, monkeypatch):
    from .conftest import set_aws_credentials
    set_aws_credentials(monkeypatch, present=False)
    result = cli("validate", EXAMPLES / "aws.yaml")
    assert result.code == 0, result.err


@pytest.mark.parametrize("verb", [["up", "--yes"], ["up", "--dry-run"]])
def test_missing_aws_credentials_are_exit_2_before_anything_is_made(cli, tmp_path, monkeypatch, verb):
    from .conftest import set_aws_credentials
    set_aws_credentials(monkeypatch, present=False)
    state_dir = tmp_path / "state"
    result = cli(verb[0], EXAMPLES / "aws.yaml", *verb[1:], "--state-dir", state_dir)
    assert result.code == 2, result.err
    assert "provider: no AWS credentials found (AWS_ACCESS_KEY_ID" in result.err
    assert "Traceback" not in result.err
    assert not state_dir.exists()


@pytest.mark.parametrize("verb", [["up", "--yes"], ["up", "--dry-run"], ["scale", "workers", "2", "--yes"]])
def test_a_spec_the_provider_refuses_creates_nothing(cli, tmp_path, verb):
    path = _bad_ami_spec(tmp_path)
    state_dir = tmp_path / "state"
    args = [verb[0], path, *verb[1:]]
    result = cli(*args, "--state-dir", state_dir, "-o", "json")
    assert result.code == 2, result.err
    assert "provider.ami" in json.loads(result.out)["errors"][0]
    assert not state_dir.exists()


@pytest.mark.parametrize("verb", [["validate"], ["up", "--yes"], ["status"], ["down", "--yes"]])
def test_a_missing_cloud_library_is_named_exit_2(cli, tmp_path, monkeypatch, verb):
    import sys
    for name in [m for m in sys.modules if m == "libcloud" or m.startswith("libcloud.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "libcloud", None)  # makes `import libcloud...` fail
    state_dir = tmp_path / "state"
    result = cli(verb[0], EXAMPLES / "digitalocean.yaml", *verb[1:], "--state-dir", state_dir)
    assert result.code == 2, result.err
    assert "provider libcloud needs the Python module libcloud" in result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert not state_dir.exists()


def _record_a_master(state_dir):
    """State of the local example as if its first master existed (kubeconfig needs its address)."""
    from provision.spec import load_spec
    from provision.state import open_store
    store = open_store(load_spec(EXAMPLES / "local.yaml"), state_dir)
    with store.lock("test"):
        doc = store.read()
        doc["hosts"] = {"demo-masters-0": {"role": "master", "pool": "masters", "index": 0,
                                           "address": "10.250.0.10"}}
        store.write(doc)


def test_kubeconfig_out_that_cannot_be_written_is_exit_2(cli, tmp_path):
    state_dir = tmp_path / "state"
    assert cli("up", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--only", "pki", "--yes").code == 0
    _record_a_master(state_dir)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("kubeconfig", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--out", blocker / "kc",
                 "-o", "json")
    assert result.code == 2, result.err
    assert json.loads(result.out)["errors"][0].startswith(f"--out: cannot write {blocker / 'kc'}: ")
    assert "internal error" not in result.err


def test_render_out_under_a_file_is_refused_before_anything_is_made(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state_dir = tmp_path / "state"
    result = cli("render", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--out", blocker / "configs")
    assert result.code == 2
    assert result.err.strip() == f"--out: {blocker} is not a directory"
    assert not state_dir.exists()


def test_a_state_dir_that_cannot_be_made_is_a_clear_error(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("up", EXAMPLES / "local.yaml", "--state-dir", blocker / "state", "--yes", "--only", "pki",
                 "-o", "json")
    assert result.code == 1
    assert "internal error" not in result.err and "Traceback" not in result.err
    errors = json.loads(result.out)["errors"]
    assert len(errors) == 1 and str(blocker / "state" / "demo") in errors[0] and "Not a directory" in errors[0]


@pytest.mark.parametrize("flag, shown", [([], False), (["-v"], True), (["-vv"], True), (["--verbose"], True)])
def test_traceback_of_an_internal_error_only_when_verbose(cli, tmp_path, monkeypatch, flag, shown):
    import provision.verbs.plan as plan_verb

    def broken(app):
        raise RuntimeError("boom")
    monkeypatch.setattr(plan_verb, "run", broken)
    result = cli("plan", EXAMPLES / "local.yaml", "--state-dir", tmp_path, *flag)
    assert result.code == 1
    assert "internal error: RuntimeError: boom" in result.err
    assert ("Traceback" in result.err) is shown


def test_a_unit_waiting_to_restart_is_not_healthy_and_says_why():
    from provision.status import UNIT_OK, unit_reason
    assert "auto-restart" not in UNIT_OK and "running" in UNIT_OK
    assert unit_reason({"state": "auto-restart", "exit_code": 1, "restarts": 3}) == \
        "exited with code 1, restarted 3 time(s)"
    assert unit_reason({"state": "auto-restart", "exit_code": -15, "restarts": 0}) == "exited with code -15"
    assert unit_reason({"state": "skipped", "reason": "binary /opt/bin/kubelet is not present"}) == \
        "binary /opt/bin/kubelet is not present"
    assert unit_reason({"state": "running"}) is None


def test_up_ends_with_where_the_kubeconfig_is(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("up", EXAMPLES / "local.yaml", "--state-dir", "state", "--only", "pki", "--yes").code == 0
    _record_a_master(tmp_path / "state")
    result = cli("up", EXAMPLES / "local.yaml", "--state-dir", "state", "--only", "kubeconfig", "--yes")
    assert result.code == 0, result.err
    path = tmp_path / "state" / "demo" / "kubeconfig"
    assert f"export KUBECONFIG={path})" in result.out  # absolute: works from any directory
    assert "PRIVATE KEY" not in result.out + result.err
    dry = cli("up", EXAMPLES / "local.yaml", "--state-dir", "state", "--only", "kubeconfig", "--dry-run")
    assert dry.code == 0 and "KUBECONFIG" not in dry.out


def test_pki_rotate_does_not_claim_running_hosts_get_the_new_certificates(cli, tmp_path):
    state_dir = tmp_path / "state"
    assert cli("up", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--only", "pki", "--yes").code == 0
    result = cli("pki", "rotate", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--leaf", "admin")
    assert result.code == 0, result.err
    assert "roll them out" not in result.out
    assert "updates the running hosts in place" in result.out
    doc = json.loads(cli("pki", "rotate", EXAMPLES / "local.yaml", "--state-dir", state_dir, "-o", "json").out)
    assert doc["running_hosts_updated"] is False and "admin" in doc["renewed"]


# issue 16: unconfirmed (no --yes, no terminal) prints the plan and exits 0, like a dry run
@pytest.mark.parametrize("args, code", [(["--dry-run"], 0), (["--dry-run", "-o", "json"], 0), ([], 0),
                                        (["-o", "json"], 0)])
def test_up_dry_run_or_unconfirmed_creates_nothing_for_a_new_cluster(cli, tmp_path, args, code):
    state_dir = tmp_path / "state"
    result = cli("up", EXAMPLES / "local.yaml", "--state-dir", state_dir, *args)
    assert result.code == code, result.err
    assert "5 to create" in result.err
    assert not state_dir.exists()
    if "json" in args:
        json.loads(result.out)


def test_up_dry_run_of_a_recorded_cluster_still_holds_the_lock(cli, tmp_path):
    state_dir = tmp_path / "state"
    assert cli("up", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--only", "pki", "--yes").code == 0
    from provision.spec import load_spec
    from provision.state import open_store
    store = open_store(load_spec(EXAMPLES / "local.yaml"), state_dir)
    with store.lock("another provision"):
        result = cli("up", EXAMPLES / "local.yaml", "--state-dir", state_dir, "--dry-run", "--until", "render")
    assert result.code == 1 and "locked" in result.err


def test_scale_without_yes_refuses_before_creating_anything(cli, tmp_path):
    state_dir = tmp_path / "state"
    result = cli("scale", EXAMPLES / "local.yaml", "workers", "3", "--state-dir", state_dir, "-o", "json")
    assert result.code == 1
    assert "pool workers: 0 -> 3 hosts (6 to create" in result.err
    assert json.loads(result.out)["errors"] == [  # issue 16: the hint is the complete command
        f"nothing changed: to apply, run: provision scale {EXAMPLES / 'local.yaml'} --state-dir {state_dir} "
        "workers 3 --yes (or --dry-run)"]
    assert not state_dir.exists()


def test_a_phase_run_before_the_phase_it_needs_says_which_to_run_first(cli, tmp_path):
    """`up --only wait` on a fresh cluster: no SSH key yet, and nothing made on the machine."""
    import subprocess
    import yaml
    from .local.conftest import free_subnet, unique_name
    name = unique_name("qaw")
    doc = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    doc["name"], doc["provider"]["subnet"] = name, free_subnet()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    result = cli("up", spec, "--only", "wait", "--yes", "--state-dir", tmp_path / "state")
    assert result.code == 1, result.err
    # issue 16: the hint is the complete command, with the spec path and --state-dir as given
    assert (f"wait: state has no pki/ssh/id_ed25519: run `provision up {spec} --state-dir {tmp_path / 'state'} "
            "--until pki` first") in result.err
    assert subprocess.run(["ip", "link", "show", f"pv-{name}"[:15]], capture_output=True).returncode != 0


def test_missing_rendered_output_names_the_render_phase():
    from provision.phases import missing_output
    from provision.state import MissingBlob
    assert str(missing_output("machines", MissingBlob("rendered/index.json"))) == \
        "machines: state has no rendered/index.json: run `provision up SPEC --until render` first"
