"""Read a spec file into a `Spec`, or fail with every problem named by field path.

Whatever the file holds (nothing, a list, binary junk, a huge file, a directory) the result is
a `SpecError` with readable lines, never a traceback.
"""
from __future__ import annotations

import ipaddress
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from . import grammar, schema
from .model import (NAME_RE, POOL_NAME_RE, PROVIDER_OPTIONS, ProviderSpec, Spec)
from .schema import Problems, did_you_mean, name_problem

MAX_SPEC_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
API_VERSION = "provision/v1"  # the contract a spec follows (`apiVersion:`, optional)
STDIN = "-"


class SpecError(UserError):
    """The spec is invalid; `lines` holds one `SPEC: path: message` line per problem."""


def read_yaml(path: str | os.PathLike, label: str | None = None) -> Any:
    """Parse a YAML file defensively; errors name the file, and line and column for syntax."""
    label = label or str(path)
    if str(path) == STDIN:
        label = "<stdin>" if label == STDIN else label
        raw = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"{label}: too large (a spec is at most {MAX_SPEC_BYTES} bytes)")
        return _parse_text(raw, label)
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
    return _parse_text(raw, label)


def _parse_text(raw: bytes, label: str) -> Any:
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
    if "apiVersion" in data:
        version = data.pop("apiVersion")
        if version != API_VERSION:
            problems.add("apiVersion", f"must be {API_VERSION} (the spec contract this provision reads; "
                                       f"got {version!r})")
    provider_raw = data.pop("provider", None)
    provider = _parse_provider(provider_raw, problems)
    failed: set[str] = set() if provider is not None else {"provider"}
    index_map: list[int] = []
    spec = _build_spec(data, provider, problems, failed, index_map)
    if spec is None:  # nothing could stand in: the problems say why
        raise SpecError([f"{label}: {line}" for line in problems.lines()] or [f"{label}: invalid"])
    if failed:  # check the rest too (one pass), but not rules that read what failed
        rules = Problems()
        check_rules(spec, rules)
        for path, message in rules.items:
            if not _depends_on(path, message, failed):
                problems.add(_file_index(path, index_map), message)
    else:
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
    if not isinstance(name, str) or name not in PROVIDER_OPTIONS:
        problems.add("provider.name", f"must be one of {' | '.join(PROVIDER_OPTIONS)} (got {name!r})")
        return None
    options_raw = {k: v for k, v in raw.items() if k != "name"}
    options_cls = PROVIDER_OPTIONS[name]
    options = schema.build(options_cls, options_raw, "provider", problems)
    if options is schema.MISSING:
        return None
    return ProviderSpec(name=name, options=options)


# What a field that failed to build is replaced with, so the rules about the other fields still
# run in the same pass (their problems about the failed field are then left out).
_STAND_INS = {"name": "x", "pools": ()}
# Rules that count or look up pools: left out when a pool failed (what they see is short). Their
# messages speak of pools or of a number of hosts; the same fields' other rules still run.
_POOL_RULES = ("pools", "etcd.count", "headroom.pool", "headroom.burst_pool", "provider.subnet", "provider.subnet_cidr")


def _depends_on(path: str, message: str, failed: set[str]) -> bool:
    top = path.split(".", 1)[0]  # pools[2].name stays: that pool did build
    if top in failed or any(f"{key}." in message or f"{key}:" in message for key in failed):
        return True
    return "pools" in failed and path in _POOL_RULES and ("pool" in message or "number of" in message)


def _build_spec(rest: dict, provider: ProviderSpec | None, problems: Problems,
                failed: set[str] | None = None, index_map: list[int] | None = None) -> Spec | None:
    """Build every field but `provider` (parsed apart: its keys depend on its name). A field
    that fails is recorded in `failed` and stood in for (its default; the pools that did build),
    so the rules still check everything else; None when nothing sensible can stand in."""
    failed = set() if failed is None else failed
    index_map = [] if index_map is None else index_map
    fields = Spec.model_fields
    for key in rest:
        if key not in fields:
            problems.add(str(key), did_you_mean(str(key), sorted(fields)))
    values: dict[str, Any] = {}
    for name, info in fields.items():
        if name == "provider":
            continue
        if name not in rest:
            if info.is_required():
                problems.add(name, "required")
                failed.add(name)
                values[name] = _STAND_INS[name]
            continue
        if name == "pools" and isinstance(rest[name], list):
            value, index_map[:] = _build_pools(rest[name], info.annotation, problems, failed)
        else:
            value = schema.convert(info.annotation, rest[name], name, problems)
        if value is schema.MISSING:
            failed.add(name)
            if name in _STAND_INS:
                values[name] = _STAND_INS[name]
        else:
            values[name] = value
    stand_in = provider or ProviderSpec(name="local", options=PROVIDER_OPTIONS["local"]())
    try:
        return Spec(provider=stand_in, **values)
    except (TypeError, ValueError):
        return None


def _build_pools(items: list, hint: Any, problems: Problems, failed: set[str]) -> tuple[tuple, list[int]]:
    """Each pool on its own: the pools that build are kept (a bad one does not hide the rest),
    with the index each had in the file."""
    item_type = typing.get_args(hint)[0]
    built, indices = [], []
    for i, item in enumerate(items):
        value = schema.convert(item_type, item, f"pools[{i}]", problems)
        if value is schema.MISSING:
            failed.add("pools")
        else:
            built.append(value)
            indices.append(i)
    return tuple(built), indices


def _file_index(path: str, index_map: list[int]) -> str:
    """`pools[j]...` of the pools that built, as `pools[i]...` of the file."""
    if not path.startswith("pools[") or not index_map:
        return path
    j, rest = path[6:].split("]", 1)
    return f"pools[{index_map[int(j)]}]{rest}" if j.isdigit() and int(j) < len(index_map) else path


def check_rules(spec: Spec, problems: Problems) -> None:
    """The cross-field rules of the contract, each naming the field it blames."""
    if not NAME_RE.match(spec.name):
        problems.add("name", name_problem(30, spec.name))

    names: dict[str, int] = {}
    for i, pool in enumerate(spec.pools):
        path = f"pools[{i}]"
        if not POOL_NAME_RE.match(pool.name):
            problems.add(f"{path}.name", name_problem(19, pool.name))
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
        hosts = sum(p.max_count for p in spec.pools if p.provider is None)  # burst pools live elsewhere
        room = ipaddress.ip_network(str(spec.provider.subnet)).num_addresses - 3
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
        headroom_limits(spec, problems)
    burst_rules(spec, problems)

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
    _check_cluster_services(spec, problems)
    if not re.match(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$", spec.kubernetes.version):  # download URLs, skew checks
        problems.add("kubernetes.version", f"must be a Kubernetes release like 1.33.4 (got {spec.kubernetes.version!r})")


VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
# flannel moved to etcd's v3 client in 0.18.0 (flannel-io/flannel#1562): later releases cannot
# read a v2 keyspace.
FLANNEL_V3_ONLY_SINCE = (0, 18, 0)
# Ports a node already uses: etcd, kube-apiserver, kubelet, kube-proxy, controller-manager, scheduler.
RESERVED_PORTS = {2379, 2380, 6443, 10250, 10256, 10257, 10259}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_cluster_services(spec: Spec, problems: Problems) -> None:
    """Pod network, cluster DNS and the node-local API proxy: versions that land in URLs and
    image names, flannel's etcd API against its version, and the proxy's port."""
    flannel = spec.network.flannel
    for path, value in (("network.flannel.version", flannel.version),
                        ("network.cni_plugins_version", spec.network.cni_plugins_version),
                        ("kubernetes.coredns_version", spec.kubernetes.coredns_version)):
        if not VERSION_RE.match(value):
            problems.add(path, f"must be a release number like 1.2.3 (got {value!r})")
    # With cloud-config the OS's own flannel runs (CoreOS era, v2); otherwise the pinned release.
    if (spec.os.config != "cloud-config" and flannel.etcd_api == "v2" and VERSION_RE.match(flannel.version)
            and _version_tuple(flannel.version) >= FLANNEL_V3_ONLY_SINCE):
        problems.add("network.flannel.etcd_api", f"flannel {flannel.version} speaks only etcd's v3 API "
                                                 "(v2 was dropped in 0.18.0); use v3, or a flannel release "
                                                 "before 0.18.0")
    port = spec.kubernetes.api_proxy_port
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        problems.add("kubernetes.api_proxy_port", f"must be a port number in 1024..65535 (got {port!r})")
    elif port in RESERVED_PORTS:
        problems.add("kubernetes.api_proxy_port", f"{port} is already used on nodes (reserved: "
                                                  f"{', '.join(str(p) for p in sorted(RESERVED_PORTS))})")


def load_spec(path: str | os.PathLike, label: str | None = None) -> Spec:
    """Read, parse and validate the spec at `path` (`-`: standard input, named <stdin>)."""
    label = label or ("<stdin>" if str(path) == STDIN else str(path))
    return parse_spec(read_yaml(path, label), label)


def headroom_limits(spec, problems) -> None:
    """Limits headroom could never honour: a reserve of all capacity (the pool would sit at
    max), thresholds out of order (hosts removed as idle would be busy), and a min of 0 that
    a reserve of free slots makes unreachable."""
    h = spec.headroom
    if h.reserve.percent is not None and h.reserve.percent >= 100:
        problems.add("headroom.reserve", f"must be below 100% (got {h.reserve}: keeping all capacity free "
                                         "would hold the pool at its max)")
    for name in ("cpu_threshold", "memory_threshold"):
        if h.scale_down_utilization >= getattr(h, name):
            problems.add("headroom.scale_down_utilization",
                         f"must be below headroom.{name} (got {h.scale_down_utilization:g} >= "
                         f"{getattr(h, name):g}): a host counted idle would be busy enough to add one")
    # host agents publish every 10 s (render.AGENT_INTERVAL): a shorter lease lapses between
    # two publishes and a live host would read as silent
    if h.load_ttl < 20:
        problems.add("headroom.load_ttl", f"must be at least 20s, twice the agents' 10 s publish interval "
                                          f"(got {h.load_ttl:g}s)")
    for i, pool in enumerate(spec.pools):
        if pool.name == h.pool and pool.min == 0 and h.reserve.count:
            problems.add(f"pools[{i}].min", f"0 cannot be reached while headroom.reserve keeps {h.reserve.count} "
                                            "free slot(s); use reserve: 0 or a percentage like \"20%\"")


def burst_rules(spec, problems) -> None:
    """Cloud bursting: a pool's own provider is for worker pools; `headroom.burst_pool` names a
    worker pool with one, other than `headroom.pool`, which starts empty (headroom fills it)."""
    for i, pool in enumerate(spec.pools):
        if pool.provider is None:
            continue
        if pool.role != "worker":
            problems.add(f"pools[{i}].provider", f"only worker pools may have a provider of their own "
                                                 f"({pool.name!r} is a {pool.role} pool)")
        if pool.provider.name != "local" and not spec.ssh.authorized_keys:
            problems.add("ssh.authorized_keys", f"at least one public key is required with provider "
                                                f"{pool.provider.name} (pool {pool.name})")
    burst = spec.headroom.burst_pool if spec.headroom is not None else None
    if burst is None:
        return
    pool = next((p for p in spec.pools if p.name == burst), None)
    if pool is None:
        problems.add("headroom.burst_pool", f"names no pool {burst!r}")
    elif burst == spec.headroom.pool:
        problems.add("headroom.burst_pool", f"must differ from headroom.pool ({burst!r} is both)")
    elif pool.role != "worker":
        problems.add("headroom.burst_pool", f"must name a worker pool ({burst!r} is a {pool.role} pool)")
    elif pool.provider is None:
        problems.add("headroom.burst_pool", f"pool {burst!r} has no provider of its own: give it `provider:` "
                                            f"(e.g. {{name: aws, region: ...}}) to burst into another cloud")
    elif pool.min_count != 0:
        problems.add("headroom.burst_pool", f"pool {burst!r} must be able to empty (min 0, got {pool.min_count}): "
                                            f"headroom fills it only at peaks")
