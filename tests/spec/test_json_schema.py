"""The spec's JSON Schema (`provision schema`) agrees with `validate`, and the models are frozen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml

from provision.spec import SpecError, parse_spec
from provision.spec.json_schema import MODELINE, spec_json_schema
from provision.spec.model import PROVIDER_OPTIONS
from provision.spec.starter import starter_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
VALIDATOR = jsonschema.Draft202012Validator(spec_json_schema())


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(spec_json_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_both_the_schema_and_validate(path):
    data = yaml.safe_load(path.read_text())
    assert [e.message for e in VALIDATOR.iter_errors(data)] == []
    parse_spec(data)


@pytest.mark.parametrize("provider", list(PROVIDER_OPTIONS))
def test_every_starter_spec_passes_both(provider):
    text = starter_spec(provider)
    assert text.splitlines()[0] == MODELINE
    data = yaml.safe_load(text)
    assert [e.message for e in VALIDATOR.iter_errors(data)] == []
    if provider != "local":  # init says a key is needed; validate insists on it
        data["ssh"]["authorized_keys"] = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA a@b"]
    parse_spec(data)


BASE = {"name": "demo", "provider": {"name": "local"},
        "pools": [{"name": "masters", "role": "master", "count": 1}], "etcd": {"count": 1}}


@pytest.mark.parametrize("change, path", [
    ({"pools": [{"name": "masters", "role": "master", "count": "3"}]}, "pools[0].count"),
    ({"pools": [{"name": "masters", "role": "boss", "count": 1}]}, "pools[0].role"),
    ({"etcd": {"cuont": 3}}, "etcd.cuont"),
    ({"provider": {"name": "aws", "subnet": "10.0.0.0/24"}}, "provider.subnet"),
    ({"provider": {"name": "gcp"}}, "provider.name"),
    ({"os": {"family": "ubuntu"}}, "os.family"),
    ({"fleet": {"enabled": "yes"}}, "fleet.enabled"),
    ({"kubernetes": {"version": 1.33}}, "kubernetes.version"),
])
def test_what_the_schema_refuses_validate_refuses_at_the_same_field(change, path):
    data = {**BASE, **change}
    assert list(VALIDATOR.iter_errors(data)), "the schema accepted it"
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert any(line.startswith(f"SPEC: {path}:") for line in err.value.lines), err.value.lines


def _properties(node):
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            yield name, value
        for value in node.values():
            yield from _properties(value)
    elif isinstance(node, list):
        for value in node:
            yield from _properties(value)


def test_every_field_carries_its_description():
    missing = [name for name, prop in _properties(spec_json_schema()) if not prop.get("description")]
    assert missing == []


def test_models_are_frozen():
    spec = parse_spec(BASE)
    with pytest.raises(pydantic.ValidationError):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.pools[0].labels["a"] = "b"  # labels stay read-only


def test_schema_verb_prints_it_and_is_deterministic():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-m", "provision", "schema"], capture_output=True, text=True,
                           env=env, cwd=ROOT, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    assert json.loads(runs[0]) == json.loads(json.dumps(spec_json_schema()))
    wrapped = subprocess.run([sys.executable, "-m", "provision", "schema", "-o", "json"], capture_output=True,
                             text=True, env=env, cwd=ROOT, check=True).stdout
    assert json.loads(wrapped)["schema"]["title"] == "provision cluster spec (version 1)"
