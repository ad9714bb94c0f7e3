"""Headroom limits that could never be honoured are refused at validate (exit 2, the field
named) instead of pinning or stalling the pool."""
from __future__ import annotations

import pytest

from provision.spec import SpecError, parse_spec
from provision.spec.model import Reserve


def spec(headroom=None, workers=None):
    pool = {"name": "workers", "role": "worker", "count": 2, "min": 1, "max": 5}
    pool.update(workers or {})
    h = {"pool": "workers"}
    h.update(headroom or {})
    return {"name": "lim", "provider": {"name": "local"}, "etcd": {"count": 1},
            "pools": [{"name": "masters", "role": "master", "count": 1}, pool], "headroom": h}


@pytest.mark.parametrize("headroom, workers, path, words", [
    ({"reserve": "100%"}, None, "headroom.reserve", "below 100%"),
    ({"scale_down_utilization": 0.7, "cpu_threshold": 0.7}, None, "headroom.scale_down_utilization",
     "below headroom.cpu_threshold"),
    ({"scale_down_utilization": 0.9, "cpu_threshold": 0.95, "memory_threshold": 0.8}, None,
     "headroom.scale_down_utilization", "below headroom.memory_threshold"),
    ({"reserve": 2}, {"min": 0}, "pools[1].min", "cannot be reached"),
    ({"load_ttl": "15s"}, None, "headroom.load_ttl", "at least 20s"),
])
def test_unreachable_limits_are_refused_naming_the_field(headroom, workers, path, words):
    with pytest.raises(SpecError) as info:
        parse_spec(spec(headroom, workers), "c.yaml")
    assert any(line.startswith(f"c.yaml: {path}: ") and words in line for line in info.value.lines), \
        info.value.lines


@pytest.mark.parametrize("headroom", [{"reserve": 0}, {"reserve": "20%"}, {"reserve": "99.5%"}])
def test_reachable_limits_validate(headroom):
    parsed = parse_spec(spec(headroom, {"min": 0}))
    assert parsed.headroom.reserve in (Reserve(count=0), Reserve(percent=20.0), Reserve(percent=99.5))
    assert parsed.pool("workers").min_count == 0
