"""`provision init`'s starter spec: a pool key whose null default means "not set" is left out."""
from __future__ import annotations

import pytest
import yaml

from provision.spec.model import PROVIDER_OPTIONS
from provision.spec.starter import starter_spec


@pytest.mark.parametrize("provider", list(PROVIDER_OPTIONS))
def test_pools_carry_no_provider_key_unless_set(provider):
    text = starter_spec(provider)
    assert "provider: null" not in text
    pools = yaml.safe_load(text)["pools"]
    assert [p["name"] for p in pools] == ["masters", "workers"]
    assert all("provider" not in pool for pool in pools)
    # the field stays discoverable: named in a comment under the worker pool
    assert "    # provider: ..." in text.split("- name: workers", 1)[1]
