"""The operator's CLI (issue 16): state named by every verb, one answer for a missing cluster,
one JSON envelope, tables that never cut identifiers, plans saved and applied, kops-style
answers without --yes, complete hints, shell completion, help, and spec writing."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import EXAMPLES, run_cli

LOCAL = EXAMPLES / "local.yaml"
ROOT = Path(__file__).resolve().parent.parent


def state_line(err: str) -> str:
    return err.splitlines()[0]


def make_pki(cli, state_dir, spec=LOCAL) -> None:
    result = cli("up", spec, "--state-dir", state_dir, "--only", "pki", "--yes")
    assert result.code == 0, result.err


def long_spec(tmp_path) -> Path:
    """The local example with long cluster and pool names: host names of 45+ characters."""
    doc = yaml.safe_load(LOCAL.read_text())
    doc["name"] = "production-eu-west-cluster"
    for pool in doc["pools"]:
        if pool["name"] == "workers":
            pool["name"] = "workers-long-name"
    doc["headroom"]["pool"] = "workers-long-name"
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# ---- 1. state made explicit -------------------------------------------------------------------

@pytest.mark.parametrize("verb", [["plan"], ["up", "--dry-run"], ["status"], ["kubeconfig"], ["pki", "show"],
                                  ["pki", "rotate"], ["pki", "rotate-ca", "--ca", "etcd"], ["down"],
                                  ["headroom", "--explain"]])
def test_every_verb_that_reads_state_names_it_first(cli, tmp_path, verb):
    state_dir = tmp_path / "st"
    words, options = (verb[:2], verb[2:]) if verb[0] == "pki" else (verb[:1], verb[1:])
    result = cli(*words, LOCAL, *options, "--state-dir", state_dir)
    assert state_line(result.err) == f"[state] {state_dir / 'demo'} (local backend)", result.err
    doc = json.loads(cli(*words, LOCAL, *options, "--state-dir", state_dir, "-o", "json").out)
    assert doc["state"] == str(state_dir / "demo")


def test_provision_state_dir_sets_the_state_directory(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_STATE_DIR", str(tmp_path / "from-env"))
    doc = json.loads(cli("plan", LOCAL, "-o", "json").out)
    assert doc["state"] == str(tmp_path / "from-env" / "demo")
    override = json.loads(cli("plan", LOCAL, "-o", "json", "--state-dir", tmp_path / "opt").out)
    assert override["state"] == str(tmp_path / "opt" / "demo")  # the option wins over the variable


def test_state_location_does_not_depend_on_the_working_directory_when_given(cli, tmp_path, monkeypatch):
    make_pki(cli, tmp_path / "st")
    monkeypatch.chdir(tmp_path)
    here = json.loads(cli("pki", "show", LOCAL, "--state-dir", tmp_path / "st", "-o", "json").out)
    monkeypatch.chdir(ROOT)
    there = json.loads(cli("pki", "show", LOCAL, "--state-dir", tmp_path / "st", "-o", "json").out)
    assert here["state"] == there["state"] and len(here["certificates"]) == len(there["certificates"]) > 20


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_empty_state_dir_is_refused(cli, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    if how == "env":
        monkeypatch.setenv("PROVISION_STATE_DIR", "")
        result = cli("up", LOCAL, "--only", "pki", "--yes")
    else:
        result = cli("up", LOCAL, "--only", "pki", "--yes", "--state-dir", "")
    assert result.code == 2
    assert ("PROVISION_STATE_DIR" if how == "env" else "--state-dir") + ": must not be empty" in result.err
    assert list(tmp_path.iterdir()) == []  # no .provision/ fallback


def test_state_dir_with_a_shared_backend_is_refused(cli, tmp_path):
    doc = yaml.safe_load(LOCAL.read_text())
    doc["state"] = {"backend": "s3", "bucket": "clusters"}
    spec = tmp_path / "s3.yaml"
    spec.write_text(yaml.safe_dump(doc))
    result = cli("plan", spec, "--state-dir", tmp_path / "st", "-o", "json")
    assert result.code == 2
    error = json.loads(result.out)["errors"][0]
    assert error.startswith("--state-dir: the spec keeps state in s3")
    assert not (tmp_path / "st").exists()


# ---- 2. one answer for a cluster with no state -------------------------------------------------

@pytest.mark.parametrize("verb", [["status"], ["kubeconfig"], ["pki", "show"]])
def test_read_verbs_of_a_cluster_with_no_state_give_one_answer(cli, tmp_path, verb):
    state_dir = tmp_path / "st"
    result = cli(*verb, LOCAL, "--state-dir", state_dir)
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        f"error: cluster demo has no state at {state_dir / 'demo'}; "
        f"create it with: provision up {LOCAL} --state-dir {state_dir} --yes")
    assert not state_dir.exists()


@pytest.mark.parametrize("yes", [[], ["--yes"]])
def test_down_of_nothing_exits_0_and_writes_nothing(cli, tmp_path, yes):
    state_dir = tmp_path / "st"
    result = cli("down", LOCAL, "--state-dir", state_dir, *yes)
    assert result.code == 0, result.err
    assert "nothing to destroy" in result.out
    assert not state_dir.exists()  # no lock file, no state.json


# ---- 3. one JSON envelope ----------------------------------------------------------------------

ENVELOPE = {
    "type": "object",
    "required": ["cluster", "state", "ok"],
    "properties": {
        "cluster": {"type": ["string", "null"]},
        "state": {"type": ["string", "null"]},
        "ok": {"type": "boolean"},
        "exit_code": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "string"}},
    },
    "if": {"properties": {"ok": {"const": False}}},
    "then": {"required": ["exit_code", "errors"]},
}


def _verbs(spec, state_dir, out):
    s = ["--state-dir", state_dir]
    return [
        ["init"], ["schema"], ["validate", spec], ["validate", EXAMPLES / "aws.yaml", "--state-dir", state_dir],
        ["plan", spec, *s], ["plan", spec, *s, "--out", out / "p.plan"],
        ["render", spec, *s, "--out", out / "r"], ["up", spec, *s, "--dry-run"], ["up", spec, *s],
        ["up", spec, *s, "--only", "pki", "--yes"], ["status", spec, "--state-dir", out / "none"],
        ["kubeconfig", spec, *s], ["pki", "show", spec, *s], ["pki", "rotate", spec, *s, "--leaf", "admin"],
        ["pki", "rotate-ca", spec, *s, "--ca", "etcd"],
        ["scale", spec, "workers", "3", *s], ["headroom", spec, *s, "--explain"],
        ["headroom", "install", spec, *s], ["headroom", "history", spec, *s],
        ["down", spec, "--state-dir", out / "none"],
        ["completion", "bash"], ["up", spec, *s, "--until", "nosuch"], ["bogus"],
        ["status", spec, *s], ["doctor", spec, *s], ["down", spec, *s],
    ]


def test_every_verb_answers_json_in_one_envelope(cli, tmp_path):
    state_dir, out = tmp_path / "st", tmp_path / "out"
    out.mkdir()
    seen, seen_pki = set(), set()
    for args in _verbs(LOCAL, state_dir, out):
        result = cli("-o", "json", *args)
        doc = json.loads(result.out)
        jsonschema.validate(doc, ENVELOPE)
        assert list(doc)[:3] == ["cluster", "state", "ok"], args
        assert doc["ok"] is (result.code == 0), (args, result.err)
        if args[0] not in ("init", "schema", "bogus", "completion") and "aws.yaml" not in str(args[1]):
            assert doc["cluster"] == "demo", args
        if doc["ok"] and args[0] not in ("init", "schema", "validate", "completion"):
            assert doc["state"], args  # (a refusal before state is read may have none)
        seen.add(args[0])
        if args[0] == "pki":
            seen_pki.add(args[1])
    from provision.cli import cli as group
    assert seen >= set(group.commands)  # every verb of the CLI
    assert seen_pki >= set(group.commands["pki"].commands)  # and every pki subcommand


def test_headroom_install_says_files_either_way(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_CRON_DIR", str(tmp_path / "cron"))
    printed = json.loads(cli("headroom", "install", LOCAL, "--state-dir", tmp_path, "-o", "json").out)
    written = json.loads(cli("headroom", "install", LOCAL, "--state-dir", tmp_path, "-o", "json",
                             "--write").out)
    assert printed["written"] is False and written["written"] is True
    assert list(printed["files"].values()) == list(written["files"].values())


# ---- 4. tables never cut identifiers -----------------------------------------------------------

WIDTHS = ["40", "200", None]  # None: a pipe, no COLUMNS (rich assumes 80)


def _set_width(monkeypatch, width):
    if width is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", width)


def _whole(text: str, names) -> None:
    lines = text.splitlines()
    for name in names:
        assert any(re.search(rf"(^|\s){re.escape(name)}(\s|$)", line) for line in lines), (name, text)
    assert "…" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_and_up_tables_keep_every_host_and_pool_whole(cli, tmp_path, monkeypatch, width):
    spec = long_spec(tmp_path)
    _set_width(monkeypatch, width)
    hosts = [f"production-eu-west-cluster-masters-{i}" for i in range(3)] + \
        [f"production-eu-west-cluster-workers-long-name-{i}" for i in range(2)]
    plan = cli("plan", spec, "--state-dir", tmp_path / "st")
    _whole(plan.out, hosts + ["workers-long-name", "10.250.0.14"])
    unconfirmed = cli("up", spec, "--state-dir", tmp_path / "st")
    _whole(unconfirmed.out, hosts)
    from provision.state import LocalStateStore
    (tmp_path / "st").mkdir(exist_ok=True)
    LocalStateStore("production-eu-west-cluster", tmp_path / "st").update(lambda d: d["hosts"].update(
        {h: {"pool": "workers-long-name", "role": "worker", "index": i, "address": f"10.250.0.{20 + i}",
             "state": "running"} for i, h in enumerate(hosts)}))
    summary = cli("up", spec, "--state-dir", tmp_path / "st", "--dry-run", "--only", "validate")
    assert summary.code == 0, summary.err
    _whole(summary.out, hosts + ["workers-long-name", "10.250.0.24"])


@pytest.mark.parametrize("width", WIDTHS)
def test_pki_show_keeps_every_certificate_name_whole(cli, tmp_path, monkeypatch, width):
    spec = long_spec(tmp_path)
    make_pki(cli, tmp_path / "st", spec)
    names = [c["name"] for c in json.loads(cli("pki", "show", spec, "--state-dir", tmp_path / "st",
                                               "-o", "json").out)["certificates"]]
    assert "etcd-peer-production-eu-west-cluster-masters-2" in names
    _set_width(monkeypatch, width)
    _whole(cli("pki", "show", spec, "--state-dir", tmp_path / "st").out, names)


@pytest.mark.parametrize("width", WIDTHS)
def test_status_tables_keep_hosts_units_and_members_whole(monkeypatch, width, capsys):
    """Every table status prints, from a report shaped like cluster_status's."""
    from provision.spec import load_spec
    from provision.ui import UI
    from provision.verbs.status import status_tables
    _set_width(monkeypatch, width)
    spec = load_spec(LOCAL)
    host = "production-eu-west-cluster-workers-long-name-1"
    report = {
        "hosts": {host: {"role": "worker", "etcd": False, "address": "10.250.0.14", "state": "running",
                         "units": {"kubelet-with-a-long-unit-name.service": {"state": "failed",
                                                                             "reason": "exited with code 1"}}}},
        "loads": {host: {"containers": 3, "cpu": 0.5, "memory": 0.25}},
        "etcd": {"healthy": False, "error": None,
                 "members": [{"name": "production-eu-west-cluster-masters-0", "id": "8e9e05c52164694d",
                              "client_urls": ["https://10.250.0.10:2379"]}],
                 "health": {"https://10.250.0.10:2379": {"healthy": False, "error": "connection refused"}}},
        "headroom": {"pool": "workers-long-name", "hosts": 2, "reporting": 2, "possible": 16, "used": 3,
                     "available": 13, "reserve": 1},
        "orphans": ["production-eu-west-cluster-orphan-9"], "missing": [], "artifacts": {},
        "api_endpoint": {"kind": "node-local proxy", "address": "127.0.0.1:6444", "found": True},
    }
    ui = UI()
    ui.result(report, status_tables(ui, spec, report))
    _whole(capsys.readouterr().out, [host, "kubelet-with-a-long-unit-name", "production-eu-west-cluster-masters-0",
                                     "8e9e05c52164694d", "https://10.250.0.10:2379", "workers-long-name",
                                     "10.250.0.14"])


# ---- 5. plans to review, then apply ------------------------------------------------------------

def test_a_saved_plan_is_applied(cli, tmp_path):
    state_dir, saved = tmp_path / "st", tmp_path / "cluster.plan"
    result = cli("plan", LOCAL, "--state-dir", state_dir, "--out", saved)
    assert result.code == 0 and not state_dir.exists()
    assert f"provision up {LOCAL} --state-dir {state_dir} --plan {saved}" in result.err
    doc = json.loads(saved.read_text())
    assert doc["plan"]["create"][0] == "demo-masters-0" and doc["state_serial"] == 0
    assert doc["changes"] == {}  # per kept host (day 2); a new cluster keeps none
    applied = cli("up", LOCAL, "--state-dir", state_dir, "--plan", saved, "--only", "pki", "-o", "json")
    assert applied.code == 0, applied.err
    assert json.loads(applied.out)["applied"] is True
    assert (state_dir / "demo" / "pki" / "ca.crt").exists()


def test_a_saved_plan_is_refused_after_the_state_changed(cli, tmp_path):
    state_dir, saved = tmp_path / "st", tmp_path / "cluster.plan"
    assert cli("plan", LOCAL, "--state-dir", state_dir, "--out", saved).code == 0
    make_pki(cli, state_dir)
    before = sorted(p.name for p in (state_dir / "demo").rglob("*"))
    result = cli("up", LOCAL, "--state-dir", state_dir, "--plan", saved, "--only", "pki")
    assert result.code == 2
    assert "--plan: the state changed since" in result.err
    assert f"provision plan {LOCAL} --state-dir {state_dir} --out {saved}" in result.err
    assert sorted(p.name for p in (state_dir / "demo").rglob("*")) == before


def test_a_saved_plan_is_refused_after_the_spec_changed(cli, tmp_path):
    state_dir, saved = tmp_path / "st", tmp_path / "cluster.plan"
    spec = tmp_path / "cluster.yaml"
    spec.write_text(LOCAL.read_text())
    assert cli("plan", spec, "--state-dir", state_dir, "--out", saved).code == 0
    spec.write_text(LOCAL.read_text().replace("count: 2", "count: 3", 1))
    result = cli("up", spec, "--state-dir", state_dir, "--plan", saved, "--only", "pki")
    assert result.code == 2 and "--plan: the spec changed since" in result.err
    assert not state_dir.exists()
    other = cli("up", spec, "--state-dir", state_dir, "--plan", LOCAL, "--only", "pki")
    assert other.code == 2 and "not a saved plan" in other.err


def test_plan_out_into_a_missing_directory_is_refused(cli, tmp_path):
    result = cli("plan", LOCAL, "--state-dir", tmp_path / "st", "--out", tmp_path / "no" / "p.plan")
    assert result.code == 2 and "--out" in result.err
    assert not (tmp_path / "no").exists()


def test_up_without_yes_and_without_a_terminal_prints_the_plan_and_exits_0(cli, tmp_path):
    state_dir = tmp_path / "st"
    result = cli("up", LOCAL, "--state-dir", state_dir)
    assert result.code == 0
    assert "demo-workers-1" in result.out and "5 to create" in result.out
    assert f"to apply: provision up {LOCAL} --state-dir {state_dir} --yes" in result.err
    assert not state_dir.exists()


def test_down_without_yes_lists_what_would_go_and_exits_0(cli, tmp_path):
    state_dir = tmp_path / "st"
    make_pki(cli, state_dir)
    before = sorted(p.name for p in (state_dir / "demo").rglob("*"))
    result = cli("down", LOCAL, "--state-dir", state_dir, "-o", "json")
    assert result.code == 0
    doc = json.loads(result.out)
    assert doc["destroyed"] == [] and doc["confirmed"] is False
    assert doc["apply"] == f"provision down {LOCAL} --state-dir {state_dir} --yes"
    assert sorted(p.name for p in (state_dir / "demo").rglob("*")) == before


def test_a_destroy_on_a_terminal_asks_for_the_cluster_name(cli, tmp_path, monkeypatch):
    from tests.local.conftest import free_subnet, unique_name
    from provision.ui import UI
    name = unique_name("opd")
    doc = yaml.safe_load(LOCAL.read_text())
    doc["name"], doc["provider"]["subnet"] = name, free_subnet()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    state_dir = tmp_path / "st"
    make_pki(cli, state_dir, spec)
    monkeypatch.setattr(UI, "can_ask", lambda self: True)  # as on a terminal
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    refused = cli("down", spec, "--state-dir", state_dir)
    assert refused.code == 1 and f"Type the cluster's name to confirm" in refused.err
    assert f"the answer was not '{name}'" in refused.err
    assert (state_dir / name / "pki" / "ca.crt").exists()
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{name}\n"))
    confirmed = cli("down", spec, "--state-dir", state_dir)
    assert confirmed.code == 0, confirmed.err
    assert json.loads((state_dir / name / "state.json").read_text())["hosts"] == {}


# ---- hints are complete commands ---------------------------------------------------------------

def test_hints_from_below_the_cli_carry_the_spec_path_and_state_dir(cli, tmp_path):
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    from provision.state import LocalStateStore
    LocalStateStore("demo", state_dir).update(lambda d: d["hosts"].update(
        {"demo-masters-0": {"pool": "masters", "role": "master", "index": 0, "address": "10.250.0.10"}}))
    result = cli("kubeconfig", LOCAL, "--state-dir", state_dir)
    assert result.code == 1
    assert f"run `provision up {LOCAL} --state-dir {state_dir} --until pki` first" in result.err
    assert " SPEC" not in result.err


# ---- 6. completion -----------------------------------------------------------------------------

def _bash_complete(tmp_path, words: list[str]) -> list[str]:
    """Source `provision completion bash` into bash and call its function as bash would."""
    script = run_cli("completion", "bash")
    assert script.code == 0
    wrapper = tmp_path / "bin" / "provision"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m provision \"$@\"\n")
    wrapper.chmod(0o755)
    (tmp_path / "completion.bash").write_text(script.out)
    words_literal = " ".join(f"'{w}'" for w in words)
    program = (f"source {tmp_path / 'completion.bash'}\n"
               f"COMP_WORDS=({words_literal}); COMP_CWORD={len(words) - 1}\n"
               "_provision_completion provision\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=f"{wrapper.parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_completes_verbs_options_pools_and_phases(tmp_path):
    assert _bash_complete(tmp_path, ["provision", "sc"]) == ["schema", "scale"]
    assert _bash_complete(tmp_path, ["provision", "sca"]) == ["scale"]
    assert "--until" in _bash_complete(tmp_path, ["provision", "up", str(LOCAL), "--un"])
    assert _bash_complete(tmp_path, ["provision", "scale", str(LOCAL), ""]) == ["workers"]
    assert _bash_complete(tmp_path, ["provision", "up", str(LOCAL), "--until", "ma"]) == ["machines", "masters"]


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef provision"), ("fish", "complete --no-files --command provision")])
def test_zsh_and_fish_scripts(cli, shell, marker):
    result = cli("completion", shell)
    assert result.code == 0 and marker in result.out and "_PROVISION_COMPLETE" in result.out


# ---- 7. help -----------------------------------------------------------------------------------

def test_help_lists_verbs_in_workflow_order_with_whole_summaries():
    result = run_cli("--help")
    commands = result.out.split("Commands:")[1].split("Examples:")[0]
    verbs = [line.split()[0] for line in commands.splitlines() if line.strip()]
    assert verbs == ["init", "schema", "validate", "plan", "render", "up", "status", "doctor", "kubeconfig", "pki",
                     "scale", "headroom", "down", "completion"]
    assert "..." not in commands


def test_every_verb_has_examples_and_up_lists_the_phases(cli):
    from provision.cli import cli as group
    from provision.phases import PHASE_NAMES
    pki_verbs = [["pki", "show"], ["pki", "rotate"], ["pki", "rotate-ca"]]
    assert {v[1] for v in pki_verbs} == set(group.commands["pki"].commands)  # no pki subcommand left out
    verbs = [[v] for v in group.commands] + pki_verbs
    for verb in verbs:
        result = cli(*verb, "--help")
        assert result.code == 0 and "Examples:" in result.out, verb
        assert f"provision {' '.join(verb)} " in result.out.split("Examples:")[1], verb
    text = " ".join(cli("up", "--help").out.split())
    assert ", ".join(PHASE_NAMES) in text


# ---- 8. writing a spec -------------------------------------------------------------------------

def test_init_comments_every_field_pool_fields_included(cli):
    text = cli("init").out
    for line in text.splitlines():
        if re.match(r"^\s*(- )?[a-zA-Z_]+:", line):
            assert "#" in line, line
    for key in ("size", "labels", "min", "max", "count", "role"):
        assert re.search(rf"^\s+{key}: .*# ", text, re.M), key
    assert text.splitlines()[0].startswith("# yaml-language-server: $schema=")  # editors check it as typed
    assert text.splitlines()[4].startswith("apiVersion: provision/v1")


def test_messages_say_in_words_what_is_allowed(cli, tmp_path):
    doc = yaml.safe_load(LOCAL.read_text())
    doc["name"] = "Bad_Name"
    doc["pools"][0]["name"] = "Masters!"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli("validate", path)
    assert result.code == 2
    assert f"{path}: name: must be 1 to 31 characters: lowercase letters (a-z), digits and hyphens, " \
           "starting with a letter (got 'Bad_Name')" in result.err
    assert "pools[0].name: must be 1 to 20 characters" in result.err
    assert "^[" not in result.err and "{0," not in result.err
    assert "must match" not in cli("init", "--name", "Bad_Name").err


def test_every_problem_in_one_pass(cli, tmp_path):
    doc = yaml.safe_load(LOCAL.read_text())
    doc["name"] = "Bad_Name"
    doc["etcd"] = {"count": "three"}
    doc["pools"][1]["count"] = "two"  # a type error in one pool...
    doc["pools"][0]["name"] = "Masters!"  # ...does not hide a problem of another
    doc["network"] = {"pod_cidr": "10.2.0.0/16", "service_cidr": "10.2.0.0/24"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    lines = [line.split(": ", 2)[1] for line in cli("validate", path).err.splitlines()]
    assert sorted(lines) == sorted(["etcd.count", "pools[1].count", "name", "pools[0].name",
                                    "network.service_cidr"]), lines


def test_api_version(cli, tmp_path):
    text = cli("init").out
    path = tmp_path / "a.yaml"
    path.write_text(text)
    assert cli("validate", path).code == 0
    path.write_text(text.replace("apiVersion: provision/v1", "apiVersion: provision/v2"))
    result = cli("validate", path)
    assert result.code == 2 and "apiVersion: must be provision/v1" in result.err


def test_dash_reads_the_spec_from_standard_input():
    spec = run_cli("init").out
    proc = subprocess.run([sys.executable, "-m", "provision", "validate", "-"], input=spec, text=True,
                          capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OK (cluster demo" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "provision", "validate", "-"], input="name: 3\n", text=True,
                         capture_output=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("<stdin>: ")


# ---- 9. smaller points -------------------------------------------------------------------------

def test_kubeconfig_out_into_a_missing_directory_creates_nothing(cli, tmp_path):
    state_dir = tmp_path / "st"
    make_pki(cli, state_dir)
    result = cli("kubeconfig", LOCAL, "--state-dir", state_dir, "--out", tmp_path / "nonexistent" / "dir" / "kc")
    assert result.code == 2 and "--out" in result.err
    assert not (tmp_path / "nonexistent").exists()


def test_kubeconfig_out_dash_writes_standard_output(cli, tmp_path, monkeypatch):
    from tests.test_cli_qa import _record_a_master
    state_dir = tmp_path / "st"
    make_pki(cli, state_dir)
    _record_a_master(state_dir)
    monkeypatch.chdir(tmp_path)
    result = cli("kubeconfig", LOCAL, "--state-dir", state_dir, "--out", "-")
    assert result.code == 0, result.err
    assert yaml.safe_load(result.out)["kind"] == "Config"
    assert not (tmp_path / "-").exists()


def test_quiet_silences_warnings(cli, tmp_path):
    state_dir = tmp_path / "st"
    state_dir.mkdir()
    from provision.state import LocalStateStore
    LocalStateStore("demo", state_dir).update(lambda d: None)  # state, no certificates
    loud = cli("pki", "show", LOCAL, "--state-dir", state_dir)
    assert "warning: cluster demo has no certificates yet" in loud.err
    quiet = cli("pki", "show", LOCAL, "--state-dir", state_dir, "-q")
    assert quiet.code == 0 and quiet.err == ""


def test_render_says_it_creates_a_ca(cli, tmp_path):
    result = cli("render", LOCAL, "--state-dir", tmp_path / "st", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    import re
    said = re.search(r"\[render\] created the cluster's CA and (\d+) certificates and keys in state", result.err)
    assert said and int(said.group(1)) > 20, result.err
    again = cli("render", LOCAL, "--state-dir", tmp_path / "st", "--out", tmp_path / "out")
    assert "created the cluster's CA" not in again.err


def test_previous_state_is_kept_and_named_when_the_state_is_corrupt(cli, tmp_path):
    from provision.state import BACKUP_GENERATIONS, LocalStateStore
    store = LocalStateStore("demo", tmp_path)
    for i in range(BACKUP_GENERATIONS + 2):
        store.update(lambda d, i=i: d["hosts"].update({f"h{i}": {}}))
    kept = store.backups()
    assert len(kept) == BACKUP_GENERATIONS and kept[0].name == f".state.json.{BACKUP_GENERATIONS + 1}"
    assert "h3" in json.loads(kept[0].read_text())["hosts"] and "h4" not in json.loads(kept[0].read_text())["hosts"]
    assert "state.json" not in " ".join(store.list_blobs("pki"))
    store.state_file.write_text("{ not json")
    result = cli("plan", LOCAL, "--state-dir", tmp_path)
    assert result.code == 1
    assert f"restore it with `cp {kept[0]} {store.state_file}`" in result.err
    shutil.copy(kept[0], store.state_file)
    assert cli("plan", LOCAL, "--state-dir", tmp_path).code == 0


# ---- the README's usage section says what the commands do ---------------------------------------

def test_readme_usage_matches_the_cli(cli, tmp_path):
    from provision.cli import cli as group
    readme = (ROOT / "README.md").read_text()
    usage = readme.split("## Use", 1)[1].split("## State", 1)[0]
    block = usage.split("```sh", 1)[1].split("```", 1)[0]
    shown = {line.split()[1] for line in block.splitlines() if line.startswith("provision ")}
    assert shown == set(group.commands)
    for key in ENVELOPE["required"] + ["exit_code", "errors"]:
        assert f"`{key}`" in usage.split("**JSON.**", 1)[1], key
    state_dir = tmp_path / "st"
    first = cli("plan", LOCAL, "--state-dir", state_dir).err.splitlines()[0]
    assert first == f"[state] {state_dir / 'demo'} (local backend)"
    assert "`[state] /abs/path/.provision/demo (local backend)`" in usage
    missing = cli("status", LOCAL, "--state-dir", state_dir).err.splitlines()[-1]
    assert missing.startswith("error: cluster demo has no state at ")
    assert "`error: cluster NAME has no state at LOCATION; create it with: provision up SPEC --yes`" in usage
    assert cli("down", LOCAL, "--state-dir", state_dir).out.startswith("cluster demo: nothing to destroy (")
    assert "`cluster NAME: nothing to\ndestroy (...)`" in usage
    assert "prints the plan and exits 0" in usage and "PROVISION_STATE_DIR" in usage


def test_a_bad_pool_does_not_hide_rules_that_do_not_count_pools():
    from provision.spec import SpecError, parse_spec
    doc = yaml.safe_load(LOCAL.read_text())
    doc["pools"][1]["count"] = "x"
    doc["etcd"] = {"count": 2}
    with pytest.raises(SpecError) as info:
        parse_spec(doc, "c.yaml")
    assert info.value.lines == ["c.yaml: pools[1].count: must be an integer (got a string)",
                                "c.yaml: etcd.count: must be odd and between 1 and 7 (got 2)"]


def test_on_a_real_terminal_down_asks_for_the_name_and_a_y_is_not_enough(cli, tmp_path):
    """stdin is a pseudo-terminal, as when a person runs it."""
    import pty
    state_dir = tmp_path / "st"
    make_pki(cli, state_dir)
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "provision", "down", str(LOCAL), "--state-dir", str(state_dir)],
                                stdin=child_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
        os.write(main_fd, b"y\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(main_fd)
        os.close(child_fd)
    assert proc.returncode == 1, err
    assert "Type the cluster's name to confirm" in err and "the answer was not 'demo'" in err
    assert (state_dir / "demo" / "pki" / "ca.crt").exists()
