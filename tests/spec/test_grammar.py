"""Strings that reach hosts: every string field of the spec is checked against its grammar.

The fields are enumerated from the model (Spec and every provider's options class), so a new
string field is in the table the moment it exists; each gets injection-shaped values and the CLI
must refuse them with exit 2, name the field, and create nothing.
"""
from __future__ import annotations

import copy
import types
import typing

import pytest

from provision.spec import SpecError, parse_spec
from provision.spec import grammar
from provision.spec.model import PROVIDER_OPTIONS, Spec
from provision.spec.schema import field_names, is_model

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA ops@example.com"


def base(provider: str) -> dict:
    return {
        "name": "demo",
        "provider": {"name": provider},
        "ssh": {"authorized_keys": [KEY]},
        "pools": [{"name": "masters", "role": "master", "count": 3},
                  {"name": "workers", "role": "worker", "count": 2, "labels": {"tier": "web"}}],
        "headroom": {"pool": "workers"},
    }


def _is_string(tp) -> str | None:
    """'str', 'list', 'map' for annotations that hold user strings; None otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _is_string(inner[0]) if len(inner) == 1 else None
    if tp is str or origin is typing.Literal:
        return "str"
    if origin is tuple and args and _is_string(args[0]) == "str":
        return "list"
    if origin in (dict, typing.Mapping) or str(origin) == "<class 'collections.abc.Mapping'>":
        return "map"
    return None


def string_fields():
    """(provider, dotted path in the YAML, kind) for every string field of the model."""
    out = []

    def walk(cls, prefix, provider):
        hints = typing.get_type_hints(cls)
        for name in field_names(cls):
            tp = hints[name]
            path = f"{prefix}.{name}" if prefix else name
            if name == "provider" and cls is Spec:
                continue
            inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if is_model(inner[0]) and len(inner) == 1:
                walk(inner[0], path, provider)
            elif typing.get_origin(tp) is tuple and is_model(typing.get_args(tp)[0]):
                walk(typing.get_args(tp)[0], f"{path}[1]", provider)  # pools[1]: the worker pool
            else:
                kind = _is_string(tp)
                if kind:
                    out.append((provider, path, kind))

    walk(Spec, "", "local")
    for name, cls in PROVIDER_OPTIONS.items():
        for f in field_names(cls):
            tp = typing.get_type_hints(cls)[f]
            kind = _is_string(tp)
            if kind:
                out.append((name, f"provider.{f}", kind))
    return out


FIELDS = string_fields()

INJECTIONS = {
    "newline": "ok\nExecStartPre=/bin/sh -c id",
    "carriage return": "ok\rx",
    "semicolon": "ok;reboot",
    "command substitution": "$(id)",
    "backtick": "`id`",
    "single quote": "ok'x",
    "double quote": 'ok"x',
    "pipe": "ok|x",
    "space": "ok x",
    "over-long": "a" * 5000,
}
# Paths on the operator's machine never reach a host: they refuse control characters only.
# Cloud resource names (Glance images, flavors, networks) travel only in API calls and may hold
# single spaces, as real images are named.
ACCEPTS = {
    "headroom.kubeconfig": {"semicolon", "command substitution", "backtick", "single quote", "double quote",
                            "pipe", "space"},
    "state.path": {"semicolon", "command substitution", "backtick", "single quote", "double quote",
                   "pipe", "space"},
    "provider.image": {"space"}, "provider.flavor": {"space"}, "provider.network": {"space"},
    "provider.size": {"space"}, "pools[1].size": {"space"},
}


def place(data: dict, path: str, kind: str, value: str, where: str) -> dict:
    """Put `value` at `path` (a string, one item of a list, a mapping's key or value)."""
    data = copy.deepcopy(data)
    parts = path.replace("]", "").replace("[", ".").split(".")
    target = data
    for part in parts[:-1]:
        part = int(part) if part.isdigit() else part
        if isinstance(part, str):
            target = target.setdefault(part, {})
        else:
            target = target[part]
    last = parts[-1]
    if kind == "str":
        target[last] = value
    elif kind == "list":
        target[last] = [value]
    elif where == "key":
        target[last] = {value: "x"}
    else:
        target[last] = {"key": value}
    return data


CASES = []
for provider, path, kind in FIELDS:
    for where in (("key", "value") if kind == "map" else ("",)):
        for label, value in INJECTIONS.items():
            if label in ACCEPTS.get(path, set()):
                continue
            CASES.append(pytest.param(provider, path, kind, where, value,
                                      id=f"{provider}:{path}{'{' + where + '}' if where else ''}:{label}"))


def test_the_table_covers_every_string_field_of_the_model():
    paths = {p for _, p, _ in FIELDS}
    # a sample that must be there: spec fields, nested, lists, mappings, every provider's options
    assert {"name", "os.channel", "ssh.user", "ssh.authorized_keys", "etcd.version", "network.flannel.version",
            "kubernetes.api_server_names", "pools[1].labels", "pools[1].size", "state.endpoints",
            "artifacts.mirror", "provider.region", "provider.box", "provider.driver", "provider.bridge"} <= paths
    assert len(FIELDS) >= 45


@pytest.mark.parametrize("provider,path,kind,where,value", CASES)
def test_an_injection_shaped_value_in_any_string_field_is_refused(cli, tmp_path, provider, path, kind, where,
                                                                  value, monkeypatch):
    from tests.conftest import set_aws_credentials
    set_aws_credentials(monkeypatch, present=True)
    data = place(base(provider), path, kind, value, where)
    spec_file = tmp_path / "spec.yaml"
    import yaml
    spec_file.write_text(yaml.safe_dump(data))
    state, out = tmp_path / "state", tmp_path / "out"
    result = cli("render", spec_file, "--out", out, "--state-dir", state)
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    named = (f"{spec_file}: {path}:", f"{spec_file}: {path}[0]:", f"{spec_file}: {path}.")  # list item, map value
    assert any(n in result.err for n in named), result.err
    assert not state.exists() and not out.exists()


@pytest.mark.parametrize("path,value", [
    ("headroom.kubeconfig", "/home/me/my configs/admin.conf"),
    ("provider.image", "Fedora CoreOS 40"),
])
def test_values_their_destination_allows_are_accepted(path, value):
    provider = "openstack" if path.startswith("provider.") else "local"
    data = place(base(provider), path, "str", value, "")
    parse_spec(data)


GOOD_VALUES = [
    (grammar.dns_name, "k8s.example.com"), (grammar.dns_name_or_ip, "10.0.0.1"),
    (grammar.dns_name_or_ip, "fd00::1"), (grammar.label_key, "node.example.com/gpu"),
    (grammar.label_key, "tier"), (grammar.label_value, ""), (grammar.label_value, "v1.2_x-y"),
    (grammar.version, "1.33.4"), (grammar.version, "3.6.0-rc.1"), (grammar.channel, "stable"),
    (grammar.posix_user, "core"), (grammar.posix_user, "_svc-1"), (grammar.aws_region, "us-gov-west-1"),
    (grammar.aws_zone, "us-west-2-lax-1a"), (grammar.ami_id, "ami-0123456789abcdef0"),
    (grammar.instance_type, "u-6tb1.metal"), (grammar.url, "https://mirror.example.com:8443/flatcar/"),
    (grammar.url, "http://[fd00::1]:2379"), (grammar.url, "http://10.250.0.1:8080"),
    (grammar.ssh_public_key, KEY), (grammar.ssh_public_key, KEY.rsplit(" ", 1)[0]),
    (grammar.vagrant_box, "flatcar/flatcar-stable"), (grammar.s3_bucket, "my.state-bucket"),
    (grammar.interface_name, "pv-demo"),
]
BAD_VALUES = [
    (grammar.dns_name, "K8S.example.com"), (grammar.dns_name, "-a.example.com"), (grammar.dns_name, "a" * 64),
    (grammar.dns_name_or_ip, "1.2.3.4 evil"), (grammar.label_key, "a/b/c"), (grammar.label_key, "x" * 64),
    (grammar.label_key, "Bad_/x"), (grammar.label_value, "-x"), (grammar.version, "latest"), (grammar.version, "v1.33.4"),
    (grammar.channel, "Stable"), (grammar.posix_user, "Root"), (grammar.posix_user, "a" * 33),
    (grammar.url, "https://user:pw@host/"), (grammar.url, "https://host/?a=b&c=d"), (grammar.url, "ftp://host/"),
    (grammar.url, "http://host:99999/"), (grammar.url, "http://bad_host/"),
    (grammar.ssh_public_key, "ssh-ed25519 AAAAC3NzaC1yc2E="),            # blob names another type
    (grammar.ssh_public_key, "ssh-ed25519 !!!"), (grammar.ssh_public_key, KEY + " $(id)"),
    (grammar.interface_name, "a-very-long-bridge-name"), (grammar.s3_bucket, "UPPER"),
]


@pytest.mark.parametrize("check,value", GOOD_VALUES)
def test_grammar_accepts(check, value):
    assert check(value) is None


@pytest.mark.parametrize("check,value", BAD_VALUES)
def test_grammar_refuses(check, value):
    assert check(value)


def test_a_bad_label_key_is_named_by_its_pool_and_every_problem_is_listed():
    data = place(base("local"), "pools[1].labels", "map", "a b", "key")
    data["ssh"]["user"] = "ro ot"
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    text = "\n".join(err.value.lines) if hasattr(err.value, "lines") else str(err.value)
    assert "pools[1].labels: key 'a b' must be a Kubernetes label key" in text
    assert "ssh.user: must be a POSIX user name" in text


def test_a_field_without_a_described_grammar_gets_the_strictest_one():
    assert grammar.grammar_for("some.new.field") is grammar.token
    assert grammar.token("ok\nx") and grammar.token("a b") and grammar.token("$(id)")
