"""Read a spec file into a `Spec`, or fail with every problem named by field path.

Whatever the file holds (nothing, a list, binary junk, a huge file, a directory) the result is
a `SpecError` with readable lines, never a traceback.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from . import grammar, schema
from .model import (NAME_RE, POOL_NAME_RE, PROVIDER_OPTIONS, ProviderSpec, Spec)
from .schema import Problems, did_you_mean

MAX_SPEC_BYTES = 1 << 20
MAX_YAML_NODES = 100_000


class SpecError(UserError):
    """The spec is invalid; `lines` holds one `SPEC: path: message` line per problem."""


def read_yaml(path: str | os.PathLike, label: str | None = None) -> Any:
    """Parse a YAML file defensively; errors name the file, and line and column for syntax."""
    label = label or str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise SpecError(f"{label}: is a directory, not a spec file")
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{label}: file is too large ({size} bytes; a spec is at most {MAX_SPEC_BYTES} bytes)")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{label}: no such file") from None
    except PermissionError:
        raise SpecError(f"{label}: permission denied") from None
    except OSError as err:
        raise SpecError(f"{label}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{label}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    if "\x00" in text:
        raise SpecError(f"{label}: not a text file (contains NUL bytes)")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{label}: YAML syntax error: {where}{err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{label}: YAML syntax error: {err}") from None
    if node is None:
        raise SpecError(f"{label}: empty file; a spec is a mapping with at least `name`, `provider` and `pools`")
    counter = [0]
    return _to_python(node, counter, label)


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _to_python(node: yaml.Node, counter: list[int], label: str) -> Any:
    counter[0] += 1
    if counter[0] > MAX_YAML_NODES:
        raise SpecError(f"{label}: too many YAML nodes (more than {MAX_YAML_NODES}; aliases expand too)")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        line = node.start_mark.line + 1
        raise SpecError(f"{label}: line {line}: unsupported YAML tag {node.tag!r}")
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, counter, label)
            if isinstance(key, (dict, list)):
                line = key_node.start_mark.line + 1
                raise SpecError(f"{label}: line {line}: a mapping key must be a scalar")
            if key in out:
                line = key_node.start_mark.line + 1
                raise SpecError(f"{label}: line {line}: duplicate key {key!r}")
            out[key] = _to_python(value_node, counter, label)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, counter, label) for n in node.value]
    try:
        return _SCALARS.construct_object(node)
    except yaml.constructor.ConstructorError as err:
        line = node.start_mark.line + 1
        raise SpecError(f"{label}: line {line}: {err.problem}") from None


class _ScalarConstructor(yaml.SafeLoader):
    def __init__(self) -> None:  # constructs scalars only; no stream
        yaml.constructor.SafeConstructor.__init__(self)


_SCALARS = _ScalarConstructor()


def parse_spec(data: Any, label: str = "SPEC") -> Spec:
    """Build and check a `Spec` from parsed YAML; raise SpecError listing every problem."""
    problems = Problems()
    if not isinstance(data, dict):
        raise SpecError(f"{label}: the top level must be a mapping (got {schema.describe(data)})")
    data = dict(data)
    provider_raw = data.pop("provider", None)
    provider = _parse_provider(provider_raw, problems)
    spec = _build_spec(data, provider, problems)
    if spec is not None:
        check_rules(spec, problems)
        grammar.check(spec, problems)  # every string against the grammar of where it lands
    if problems:
        raise SpecError([f"{label}: {line}" for line in problems.lines()])
    return spec


def _parse_provider(raw: Any, problems: Problems) -> ProviderSpec | None:
    if raw is None:
        problems.add("provider", "required (a mapping with at least `name`)")
        return None
    if not isinstance(raw, dict):
        problems.add("provider", f"must be a mapping (got {schema.describe(raw)})")
        return None
    name = raw.get("name")
    if name not in PROVIDER_OPTIONS:
        problems.add("provider.name", f"must be one of {' | '.join(PROVIDER_OPTIONS)} (got {name!r})")
        return None
    options_raw = {k: v for k, v in raw.items() if k != "name"}
    options_cls = PROVIDER_OPTIONS[name]
    options = schema.build(options_cls, options_raw, "provider", problems)
    if options is schema.MISSING:
        return None
    return ProviderSpec(name=name, options=options)


def _build_spec(rest: dict, provider: ProviderSpec | None, problems: Problems) -> Spec | None:
    """Build every field but `provider` (parsed apart: its keys depend on its name)."""
    fields = {f.name for f in dataclasses.fields(Spec)}
    for key in rest:
        if key not in fields:
            problems.add(str(key), did_you_mean(str(key), sorted(fields)))
    values: dict[str, Any] = {}
    ok = provider is not None
    hints = typing.get_type_hints(Spec)
    for f in dataclasses.fields(Spec):
        if f.name == "provider":
            continue
        if f.name not in rest:
            if f.default is schema.MISSING and f.default_factory is schema.MISSING:
                problems.add(f.name, "required")
                ok = False
            continue
        value = schema._convert(hints[f.name], rest[f.name], f.name, problems)
        if value is schema.MISSING:
            ok = False
        else:
            values[f.name] = value
    if not ok:
        return None
    return Spec(provider=provider, **values)


def check_rules(spec: Spec, problems: Problems) -> None:
    """The cross-field rules of the contract, each naming the field it blames."""
    if not NAME_RE.match(spec.name):
        problems.add("name", f"must match ^[a-z][a-z0-9-]{{0,30}}$ (got {spec.name!r})")

    names: dict[str, int] = {}
    for i, pool in enumerate(spec.pools):
        path = f"pools[{i}]"
        if not POOL_NAME_RE.match(pool.name):
            problems.add(f"{path}.name", f"must match ^[a-z][a-z0-9-]{{0,19}}$ (got {pool.name!r})")
        if pool.name in names:
            problems.add(f"{path}.name", f"duplicate pool name {pool.name!r} (also pools[{names[pool.name]}])")
        names.setdefault(pool.name, i)
        if pool.count < 0:
            problems.add(f"{path}.count", f"must be >= 0 (got {pool.count})")
        if pool.role == "master" and pool.count < 1:
            problems.add(f"{path}.count", f"a master pool needs at least one host (got {pool.count})")
        if pool.role != "worker":
            for key in ("min", "max"):
                if getattr(pool, key) is not None:
                    problems.add(f"{path}.{key}", f"only worker pools are resized; remove it from a {pool.role} pool")
        else:
            if pool.min is not None and pool.min < 0:
                problems.add(f"{path}.min", f"must be >= 0 (got {pool.min})")
            if pool.min_count > pool.count:
                problems.add(f"{path}.min", f"must be <= count (got {pool.min_count} > {pool.count})")
            if pool.max_count < pool.count:
                problems.add(f"{path}.max", f"must be >= count (got {pool.max_count} < {pool.count})")
        if pool.role == "etcd" and spec.etcd.placement != "dedicated":
            problems.add(f"{path}.role", "etcd pools need etcd.placement: dedicated")

    if not spec.pools:
        problems.add("pools", "at least one master pool is required (got an empty list)")
    elif not spec.master_pools:
        problems.add("pools", "at least one pool must have role: master")

    etcd = spec.etcd
    if etcd.count < 1 or etcd.count > 7 or etcd.count % 2 == 0:
        problems.add("etcd.count", f"must be odd and between 1 and 7 (got {etcd.count})")
    else:
        carriers = sum(p.count for p in spec.etcd_pools)
        kind = "masters" if etcd.placement == "masters" else "hosts in etcd pools"
        if etcd.count > carriers:
            problems.add("etcd.count", f"must be <= the number of {kind} (got {etcd.count} > {carriers})")
    if etcd.discovery == "token" and not etcd.discovery_url:
        problems.add("etcd.discovery_url", "required with etcd.discovery: token")
    if etcd.discovery_url and not etcd.discovery_url.startswith(("http://", "https://")):
        problems.add("etcd.discovery_url", f"must be an http(s) URL (got {etcd.discovery_url!r})")

    nets = [("network.pod_cidr", spec.network.pod_cidr), ("network.service_cidr", spec.network.service_cidr)]
    subnet_key = "subnet" if hasattr(spec.provider.options, "subnet") else "subnet_cidr"
    if spec.provider.subnet:
        nets.append((f"provider.{subnet_key}", spec.provider.subnet))
    for i, (path_a, net_a) in enumerate(nets):
        for path_b, net_b in nets[:i]:
            if ipaddress.ip_network(net_a).overlaps(ipaddress.ip_network(net_b)):
                problems.add(path_a, f"overlaps {path_b} ({net_a} and {net_b})")
    if ipaddress.ip_network(spec.network.service_cidr).num_addresses < 16:
        problems.add("network.service_cidr", "is too small (needs at least 16 addresses)")
    if spec.provider.name in ("local", "vagrant"):
        hosts = sum(p.max_count for p in spec.pools)
        room = ipaddress.ip_network(spec.provider.subnet).num_addresses - 3
        if hosts > room:
            problems.add(f"provider.{subnet_key}", f"has room for {room} hosts, the pools need up to {hosts}")

    if spec.headroom is not None:
        pool = next((p for p in spec.pools if p.name == spec.headroom.pool), None)
        workers = [p.name for p in spec.worker_pools]
        if pool is None:
            hint = f" (worker pools: {', '.join(workers)})" if workers else " (there is no worker pool)"
            problems.add("headroom.pool", f"names no pool {spec.headroom.pool!r}{hint}")
        elif pool.role != "worker":
            problems.add("headroom.pool", f"must name a worker pool ({pool.name!r} is a {pool.role} pool)")
        if spec.headroom.containers_per_host < 1:
            problems.add("headroom.containers_per_host", f"must be >= 1 (got {spec.headroom.containers_per_host})")

    if spec.os.config == "cloud-config" and spec.os.family == "fedora-coreos":
        problems.add("os.config", "cloud-config needs an OS that runs coreos-cloudinit "
                                  "(flatcar or container-linux), not fedora-coreos")
    if spec.provider.name != "local" and not spec.ssh.authorized_keys:
        problems.add("ssh.authorized_keys", f"at least one public key is required with provider {spec.provider.name}")
    for i, key in enumerate(spec.ssh.authorized_keys):
        if not key.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
            problems.add(f"ssh.authorized_keys[{i}]", "is not an OpenSSH public key")

    st = spec.state
    if st.backend == "etcd" and not st.endpoints:
        problems.add("state.endpoints", "required with state.backend: etcd")
    if st.backend == "s3" and not st.bucket:
        problems.add("state.bucket", "required with state.backend: s3")
    if spec.artifacts.mirror and not spec.artifacts.mirror.startswith(("http://", "https://")):
        problems.add("artifacts.mirror", f"must be an http(s) URL (got {spec.artifacts.mirror!r})")
    if spec.pki.ca_days < 1 or spec.pki.leaf_days < 1 or spec.pki.leaf_days > spec.pki.ca_days:
        problems.add("pki.leaf_days", "must be >= 1 and <= pki.ca_days")


def load_spec(path: str | os.PathLike, label: str | None = None) -> Spec:
    """Read, parse and validate the spec at `path`."""
    label = label or str(path)
    return parse_spec(read_yaml(path, label), label)
