"""The CLI surface: init, examples, plan output, exit codes for bad arguments."""
from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES, run_cli

PROVIDERS = ["local", "aws", "openstack", "libcloud", "vagrant"]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_validates(cli, example, monkeypatch):
    from tests.conftest import set_aws_credentials
    set_aws_credentials(monkeypatch, present=False)  # validate checks the spec, not this machine
    result = cli("validate", EXAMPLES / example)
    assert result.code == 0, result.err
    assert "OK" in result.out


def test_examples_cover_the_contract():
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"local.yaml", "aws.yaml", "openstack.yaml", "digitalocean.yaml", "vagrant.yaml",
            "container-linux-cloud-config.yaml"} <= names


@pytest.mark.parametrize("provider", PROVIDERS)
def test_init_prints_a_commented_spec_for_each_provider(cli, tmp_path, provider):
    result = cli("init", "--provider", provider)
    assert result.code == 0
    assert result.out.count("#") > 40  # every field carries its description
    path = tmp_path / "cluster.yaml"
    path.write_text(result.out)
    checked = cli("validate", path)
    if provider == "local":
        assert checked.code == 0, checked.err
    else:  # only the public key a user must add is missing
        assert checked.code == 2
        assert checked.err.strip().splitlines() == [
            f"{path}: ssh.authorized_keys: at least one public key is required with provider {provider}"]


def test_init_json_and_bad_name(cli):
    doc = json.loads(cli("init", "--output", "json").out)
    assert doc["provider"] == "local" and doc["spec"].startswith("#")
    bad = cli("init", "--name", "Not_Valid")
    assert bad.code == 2 and "--name" in bad.err


def test_plan_json_shape(cli, tmp_path):
    result = cli("plan", EXAMPLES / "local.yaml", "--output", "json", "--state-dir", tmp_path)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["create"] == ["demo-masters-0", "demo-masters-1", "demo-masters-2",
                             "demo-workers-0", "demo-workers-1"]
    assert doc["keep"] == [] and doc["destroy"] == []


def test_plan_against_recorded_state(cli, tmp_path):
    from provision.state import LocalStateStore
    store = LocalStateStore("demo", tmp_path)
    store.update(lambda d: d["hosts"].update({
        "demo-masters-0": {"pool": "masters", "role": "master", "index": 0, "address": "10.250.0.10"},
        "demo-gone-0": {"pool": "gone", "role": "worker", "index": 0}}))
    doc = json.loads(cli("plan", EXAMPLES / "local.yaml", "-o", "json", "--state-dir", tmp_path).out)
    assert doc["keep"] == ["demo-masters-0"] and doc["destroy"] == ["demo-gone-0"]
    assert len(doc["create"]) == 4
    text = cli("plan", EXAMPLES / "local.yaml", "--state-dir", tmp_path)
    assert "destroy" in text.out and "demo-gone-0" in text.out


def test_global_options_before_the_verb(cli, tmp_path):
    result = cli("--output", "json", "--state-dir", tmp_path, "plan", EXAMPLES / "local.yaml")
    assert result.code == 0 and "create" in json.loads(result.out)


@pytest.mark.parametrize("args,words", [
    (["up", "examples/local.yaml", "--until", "nosuch"], "--until: unknown phase 'nosuch'"),
    (["scale", "examples/local.yaml", "workers", "-3"], "COUNT"),
    (["frobnicate"], "No such command"),
    (["plan"], "Missing argument 'SPEC'"),
    (["plan", "examples/local.yaml", "--output", "xml"], "'xml' is not one of"),
])
def test_bad_arguments_exit_2_naming_the_argument(cli, args, words):
    args = [str(EXAMPLES / a[9:]) if a.startswith("examples/") else a for a in args]
    result = cli(*args)
    assert result.code == 2, result
    assert words in result.err
    assert "Traceback" not in result.err


def test_help_lists_every_verb_of_the_contract():
    result = run_cli("--help")
    assert result.code == 0
    for verb in ("validate", "plan", "render", "up", "status", "scale", "headroom", "kubeconfig", "down",
                 "init", "pki"):
        assert verb in result.out


def test_dry_run_changes_nothing(cli, tmp_path):
    result = cli("up", EXAMPLES / "local.yaml", "--dry-run", "--until", "validate", "--state-dir", tmp_path)
    assert result.code == 0, result.err
    assert not (tmp_path / "demo" / "state.json").exists()


def test_up_without_yes_does_nothing(cli, tmp_path):
    # issue 16: without --yes and without a terminal, up prints the plan and exits 0 (kops)
    result = cli("up", EXAMPLES / "local.yaml", "--until", "validate", "--state-dir", tmp_path)
    assert result.code == 0 and "--yes" in result.err
    assert not (tmp_path / "demo" / "state.json").exists()


def test_plan_says_who_may_reach_ssh_and_the_api(cli, tmp_path, monkeypatch):
    from tests.conftest import set_aws_credentials
    set_aws_credentials(monkeypatch, present=True)
    result = cli("plan", EXAMPLES / "aws.yaml", "--state-dir", tmp_path / "s", "--output", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["access"] == {"ssh_cidrs": ["0.0.0.0/0"], "api_cidrs": ["0.0.0.0/0"]}
    spec = tmp_path / "narrow.yaml"
    spec.write_text((EXAMPLES / "aws.yaml").read_text().replace(
        "  region: eu-west-1\n", "  region: eu-west-1\n  ssh_cidrs: [198.51.100.0/24]\n  api_cidrs: [203.0.113.0/24]\n"))
    text = cli("plan", spec, "--state-dir", tmp_path / "s")
    assert text.code == 0, text.err
    assert "SSH from 198.51.100.0/24" in text.out and "API 6443 from 203.0.113.0/24 and the VPC" in text.out
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("198.51.100.0/24", "198.51.100.1/24"))
    refused = cli("validate", bad)
    assert refused.code == 2 and "provider.ssh_cidrs: [0] must be a CIDR" in refused.err
