"""Every validation rule of the spec contract, as a table of good and bad specs."""
from __future__ import annotations

import copy

import pytest
import yaml

from provision.spec import Reserve, SpecError, parse_spec

BASE = {
    "name": "demo",
    "provider": {"name": "local", "subnet": "10.250.0.0/24"},
    "pools": [
        {"name": "masters", "role": "master", "count": 3},
        {"name": "workers", "role": "worker", "count": 2, "min": 1, "max": 5},
    ],
    "headroom": {"pool": "workers"},
}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA a@b"


def mutate(changes: dict) -> dict:
    """A copy of BASE with dotted paths set (None deletes); `pools[1].min` style paths."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        target = data
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            part = int(part) if part.isdigit() else part
            if isinstance(part, str) and part not in target:
                target[part] = {}
            target = target[part]
        last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return data


DELETE = object()

GOOD = [
    ("base", {}),
    ("one master, etcd of one", {"pools[0].count": 1, "etcd": {"count": 1}}),
    ("dedicated etcd pool", {"etcd": {"count": 3, "placement": "dedicated"},
                             "pools": BASE["pools"] + [{"name": "etcd", "role": "etcd", "count": 3}]}),
    ("no headroom", {"headroom": DELETE}),
    ("percentage reserve", {"headroom.reserve": "20%"}),
    ("durations", {"headroom.scale_up_cooldown": "1h", "headroom.scale_down_cooldown": 0}),
    ("cloud-config on container-linux", {"os": {"family": "container-linux", "config": "cloud-config"}}),
    ("token discovery", {"etcd": {"discovery": "token", "discovery_url": "http://127.0.0.1:8087"}}),
    ("aws with a key", {"provider": {"name": "aws", "region": "eu-west-1"}, "ssh": {"authorized_keys": [KEY]}}),
    ("min equals count equals max", {"pools[1].min": 2, "pools[1].max": 2}),
    ("labels", {"pools[1].labels": {"tier": "web", "gpu": False}}),
]

# (case, changes, field path expected at the start of a problem, words expected in it)
BAD = [
    ("no master pool", {"pools": [{"name": "workers", "role": "worker", "count": 2}], "headroom": DELETE},
     "pools", "role: master"),
    ("empty pools", {"pools": [], "headroom": DELETE}, "pools", "at least one master pool"),
    ("master count zero", {"pools[0].count": 0}, "pools[0].count", "at least one host"),
    ("etcd count even", {"etcd": {"count": 2}}, "etcd.count", "must be odd"),
    ("etcd count over 7", {"etcd": {"count": 9}, "pools[0].count": 9}, "etcd.count", "between 1 and 7"),
    ("etcd count over masters", {"pools[0].count": 1}, "etcd.count", "number of masters (got 3 > 1)"),
    ("etcd count over etcd pools", {"etcd": {"count": 3, "placement": "dedicated"},
                                    "pools": BASE["pools"] + [{"name": "etcd", "role": "etcd", "count": 1}]},
     "etcd.count", "hosts in etcd pools (got 3 > 1)"),
    ("etcd pool without dedicated", {"pools": BASE["pools"] + [{"name": "etcd", "role": "etcd", "count": 3}]},
     "pools[2].role", "placement: dedicated"),
    ("token without url", {"etcd": {"discovery": "token"}}, "etcd.discovery_url", "required"),
    ("bad pod cidr", {"network": {"pod_cidr": "10.2.0.0/33"}}, "network.pod_cidr", "CIDR"),
    ("host bits set", {"network": {"service_cidr": "10.3.0.1/24"}}, "network.service_cidr", "CIDR"),
    ("pod overlaps service", {"network": {"pod_cidr": "10.0.0.0/8", "service_cidr": "10.3.0.0/24"}},
     "network.service_cidr", "overlaps network.pod_cidr"),
    ("subnet overlaps pods", {"provider.subnet": "10.2.5.0/24"}, "provider.subnet", "overlaps network.pod_cidr"),
    ("aws subnet overlaps", {"provider": {"name": "aws", "subnet_cidr": "10.3.0.0/24"},
                             "ssh": {"authorized_keys": [KEY]}}, "provider.subnet_cidr", "overlaps"),
    ("min above count", {"pools[1].min": 5, "pools[1].max": 6, "pools[1].count": 3}, "pools[1].min",
     "must be <= count (got 5 > 3)"),
    ("max below count", {"pools[1].max": 1}, "pools[1].max", "must be >= count (got 1 < 2)"),
    ("min on a master pool", {"pools[0].min": 1}, "pools[0].min", "only worker pools"),
    ("headroom names no pool", {"headroom.pool": "wrokers"}, "headroom.pool", "names no pool 'wrokers'"),
    ("headroom names a master pool", {"headroom.pool": "masters"}, "headroom.pool", "must name a worker pool"),
    ("cloud-config on fedora-coreos", {"os": {"family": "fedora-coreos", "config": "cloud-config"}},
     "os.config", "coreos-cloudinit"),
    ("bad duration", {"headroom.scale_up_cooldown": "30 secs"}, "headroom.scale_up_cooldown", "duration"),
    ("negative duration", {"headroom.scale_down_cooldown": -1}, "headroom.scale_down_cooldown", "negative"),
    ("bad reserve", {"headroom.reserve": "lots"}, "headroom.reserve", "percentage"),
    ("unknown policy", {"headroom.policies": ["containers", "magic"]}, "headroom.policies", "unknown policy"),
    ("bad name", {"name": "Demo_1"}, "name", "must be 1 to 31 characters: lowercase letters"),  # in words (issue 16)
    ("long name", {"name": "a" * 32}, "name", "must be 1 to 31 characters"),
    ("duplicate pool", {"pools": BASE["pools"] + [{"name": "workers", "role": "worker", "count": 1}]},
     "pools[2].name", "duplicate"),
    ("unknown provider", {"provider": {"name": "azure"}}, "provider.name", "must be one of"),
    ("unknown provider key", {"provider.subnetz": "10.9.0.0/24"}, "provider.subnetz", "did you mean 'subnet'"),
    ("unknown top key", {"heardroom": {}}, "heardroom", "did you mean 'headroom'"),
    ("unknown nested key", {"etcd": {"cuont": 3}}, "etcd.cuont", "did you mean 'count'"),
    ("wrong type", {"pools[0].count": "three"}, "pools[0].count", "must be an integer"),
    ("bool is not an int", {"pools[0].count": True}, "pools[0].count", "must be an integer"),
    ("bad choice", {"os": {"family": "ubuntu"}}, "os.family", "flatcar | fedora-coreos | container-linux"),
    ("version as a number", {"kubernetes": {"version": 1.33}}, "kubernetes.version", "quote it"),
    ("version not a release", {"kubernetes": {"version": "latest"}}, "kubernetes.version", "release like 1.33.4"),
    ("missing name", {"name": DELETE}, "name", "required"),
    ("missing pool count", {"pools[1].count": DELETE}, "pools[1].count", "required"),
    ("no ssh key for aws", {"provider": {"name": "aws"}}, "ssh.authorized_keys", "at least one public key"),
    ("not a public key", {"ssh": {"authorized_keys": ["hello"]}}, "ssh.authorized_keys[0]", "OpenSSH"),
    ("etcd state without endpoints", {"state": {"backend": "etcd"}}, "state.endpoints", "required"),
    ("s3 state without bucket", {"state": {"backend": "s3"}}, "state.bucket", "required"),
    ("subnet too small", {"provider.subnet": "10.250.0.0/29"}, "provider.subnet", "room for"),
    ("threshold out of range", {"headroom.cpu_threshold": 1.5}, "headroom.cpu_threshold", "(0, 1]"),
    ("pools not a list", {"pools": {"name": "x"}}, "pools", "must be a list"),
]


@pytest.mark.parametrize("case,changes", GOOD, ids=[c[0] for c in GOOD])
def test_good_specs_validate(case, changes):
    spec = parse_spec(mutate(changes))
    assert spec.name == mutate(changes)["name"]


@pytest.mark.parametrize("case,changes,path,words", BAD, ids=[c[0] for c in BAD])
def test_bad_specs_name_the_field(case, changes, path, words):
    with pytest.raises(SpecError) as info:
        parse_spec(mutate(changes), "cluster.yaml")
    lines = info.value.lines
    assert all(line.startswith("cluster.yaml: ") for line in lines), lines
    matching = [line for line in lines if line.startswith(f"cluster.yaml: {path}: ")]
    assert matching, f"no problem for {path} in {lines}"
    assert any(words in line for line in matching), matching


def test_every_problem_is_reported_at_once():
    data = mutate({"pools[1].min": 9, "etcd": {"count": 4}, "heardroom": 1})
    with pytest.raises(SpecError) as info:
        parse_spec(data, "s.yaml")
    text = "\n".join(info.value.lines)
    assert "pools[1].min" in text and "etcd.count" in text and "heardroom" in text


def test_defaults_of_the_contract():
    spec = parse_spec(BASE)
    assert spec.os.family == "flatcar" and spec.os.channel == "stable" and spec.os.config == "ignition"
    assert spec.ssh.user == "core" and spec.ssh.authorized_keys == ()
    assert (spec.etcd.count, spec.etcd.placement, spec.etcd.version, spec.etcd.discovery) == \
        (3, "masters", "3.5.17", "static")
    assert spec.network.pod_cidr == "10.2.0.0/16" and spec.network.service_cidr == "10.3.0.0/24"
    assert spec.network.flannel.backend == "vxlan" and spec.network.flannel.etcd_api == "v3"
    assert spec.fleet.enabled is True
    assert spec.kubernetes.version == "1.33.4" and spec.kubernetes.cluster_domain == "cluster.local"
    h = spec.headroom
    assert h.source == "etcd" and h.policies == ("containers",) and h.containers_per_host == 8
    assert h.reserve == Reserve(count=1)
    assert (h.cpu_threshold, h.memory_threshold, h.scale_down_utilization) == (0.7, 0.8, 0.5)
    assert (h.scale_up_cooldown, h.scale_down_cooldown) == (30.0, 600.0)
    assert spec.state.backend == "local" and spec.state.path == ".provision"
    assert spec.artifacts.mirror is None
    assert spec.provider.options.subnet == "10.250.0.0/24"
    workers = spec.pool("workers")
    assert (workers.min_count, workers.max_count) == (1, 5)
    assert spec.pool("masters").min_count == 3  # min and max default to count


def test_spec_objects_are_immutable():
    spec = parse_spec(BASE)
    with pytest.raises(Exception):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.pool("workers").labels["x"] = "y"


def test_percentage_reserve_rounds_up_like_clocker():
    assert Reserve(percent=20).slots(16) == 4  # ceil(3.2)
    assert Reserve(percent=25).slots(16) == 4
    assert Reserve(count=3).slots(100) == 3


def test_needs_etcd_v2_only_when_something_speaks_v2():
    plain = mutate({"fleet": {"enabled": False}, "headroom": DELETE})
    assert parse_spec(plain).needs_etcd_v2 is False
    assert parse_spec(mutate({"fleet": {"enabled": False}})).needs_etcd_v2 is False  # headroom's etcd source is v3
    assert parse_spec(mutate({})).needs_etcd_v2 is True


def test_yaml_round_trip_of_base_is_valid(tmp_path):
    from provision.spec import load_spec
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path).pool("workers").count == 2
