"""README's "Spec fields added since spec-v1" table says what the code has: every field it
lists exists in the spec model with the default the table gives, and `provision init`'s
starter spec documents it; the phases it names are phases of `up`."""
from __future__ import annotations

import json
import re
from pathlib import Path

from provision.phases import PHASE_NAMES
from provision.spec import model

README = Path(__file__).resolve().parents[1] / "README.md"
# (field path, provider) -> the model class holding the field
OWNERS = {
    ("provider.zones", "aws"): model.AWSOptions,
    ("provider.load_balancer", "openstack"): model.OpenStackOptions,
    ("provider.load_balancer", "libcloud"): model.LibcloudOptions,
    ("pools[].provider", None): model.PoolSpec,
    ("headroom.burst_pool", None): model.HeadroomSpec,
    ("headroom.burst_networks", None): model.HeadroomSpec,
    ("network.flannel.version", None): model.FlannelSpec,
    ("fleet.enabled", None): model.FleetSpec,
}


def section() -> str:
    return README.read_text().split("\n### Spec fields added since spec-v1\n", 1)[1].split("\n## ", 1)[0]


def rows() -> dict[tuple[str, str | None], dict[str, str]]:
    found = {}
    for line in section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`(?: \((\w+)\))?", cells[0]) if len(cells) == 4 else None
        if match:
            found[(match[1], match[2])] = {"type": cells[1], "default": cells[2], "checked": cells[3]}
    return found


def yaml_form(value: object) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def test_the_table_lists_every_field_the_brief_named_with_the_models_default():
    table = rows()
    assert set(table) == set(OWNERS)
    for (path, provider), owner in OWNERS.items():
        name = path.rsplit(".", 1)[1]
        default = owner.model_fields[name].default
        assert table[(path, provider)]["default"] == f"`{yaml_form(default)}`", (path, provider)
        assert table[(path, provider)]["checked"], (path, provider)


def test_the_phases_it_names_are_phases_of_up_in_that_order():
    text = section()
    assert "Phases `secrets` and `rollout`" in text
    assert PHASE_NAMES.index("render") < PHASE_NAMES.index("rollout") < PHASE_NAMES.index("machines")
    assert PHASE_NAMES.index("hosts") < PHASE_NAMES.index("secrets")
    assert "`rollout` runs after `render` and before\n  `machines`" in text
    assert "`secrets` runs after `hosts`" in text


def test_the_flannel_releases_it_says_ship_with_hashes_do():
    from provision.artifacts import CATALOGUE
    shipped = sorted(CATALOGUE["flanneld"].known, reverse=True)
    assert f"{', '.join(shipped[:-1])} and {shipped[-1]} ship with their published hashes" in \
        section().replace("\n  ", " ")
    assert CATALOGUE["fleetd"].known == {}  # hence the paragraph on fleetd's hash
