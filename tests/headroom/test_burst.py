"""Cloud bursting in the pure decision: a burst pool (another provider) is filled only once the
managed pool is at its max, and emptied first when load falls; the spec rules that make a
burst pool usable."""
from __future__ import annotations

from pathlib import Path

import pytest

from provision.headroom.policy import READY, HostLoad, Memory, Observation, Settings, decide, replay
from provision.spec import SpecError, load_spec, parse_spec
from provision.spec.model import Reserve

NOW = 1_700_000_000.0


def settings(**kw) -> Settings:
    base = dict(pool="workers", min_count=1, max_count=5, policies=("containers",), containers_per_host=8,
                reserve=Reserve(count=2), scale_up_cooldown=0.0, scale_down_cooldown=0.0,
                burst_pool="cloud", primary_max=3)
    base.update(kw)
    return Settings(**base)


def hosts(pool, *containers, start=0):
    return [HostLoad(f"c-{pool}-{start + i}", pool, "worker", READY, containers=c) for i, c in enumerate(containers)]


def master():
    return [HostLoad("c-masters-0", "masters", "master", READY, etcd=True)]


def observe(*groups, pending=0):
    return Observation(at=NOW, hosts=tuple(h for g in groups for h in g), pending=pending)


def test_growth_fills_the_managed_pool_to_its_max_before_the_burst_pool():
    # 2 of 3 primary hosts, full: 16 used + 20 pending + a reserve of 2 need 5 hosts
    d = decide(settings(), observe(master(), hosts("workers", 8, 8), pending=20), Memory())
    assert d.action == "add" and d.add == 3
    assert d.adds == {"workers": 1, "cloud": 2}
    assert d.record()["add_pools"] == {"workers": 1, "cloud": 2}


def test_growth_below_the_primary_max_stays_in_the_managed_pool():
    d = decide(settings(), observe(master(), hosts("workers", 8), pending=2), Memory())
    assert d.action == "add" and d.adds == {"workers": 1}


def test_a_full_primary_pool_sends_every_new_host_to_the_burst_pool():
    d = decide(settings(), observe(master(), hosts("workers", 8, 8, 8), pending=8), Memory())
    assert d.action == "add" and d.adds == {"cloud": d.add} and d.add >= 1


def test_falling_load_removes_burst_hosts_before_any_primary_host():
    # The primary hosts are emptier than the burst host: the burst host still goes first.
    obs = observe(master(), hosts("workers", 0, 1, 0), hosts("cloud", 2))
    d = decide(settings(), obs, Memory(wanted=((NOW - 1, 1),)))
    assert d.action == "remove" and d.remove == ("c-cloud-0",)
    assert d.spare and all(name.startswith("c-workers-") for name in d.spare)


def test_every_empty_burst_host_goes_together_before_primary_hosts():
    obs = observe(master(), hosts("workers", 0, 0, 0), hosts("cloud", 0, 0))
    d = decide(settings(), obs, Memory(wanted=((NOW - 1, 1),)))
    assert d.action == "remove" and set(d.remove) == {"c-cloud-0", "c-cloud-1"}


def test_without_a_burst_pool_its_hosts_are_not_managed():
    obs = observe(master(), hosts("workers", 0, 0, 0), hosts("cloud", 0, 0))
    d = decide(settings(burst_pool=None, primary_max=None), obs, Memory(wanted=((NOW - 1, 1),)))
    assert d.current == 3 and not any(n.startswith("c-cloud") for n in d.remove)


def test_a_burst_decision_replays_to_the_same_decision():
    d = decide(settings(), observe(master(), hosts("workers", 8, 8, 8), pending=8), Memory())
    again = replay(d.record())
    assert again.record() == d.record()


# ---- spec ------------------------------------------------------------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH9RHM5j7btih2cuR7GwAMwiJYdzAkk+VsprxwXEV9lc test@example"


def spec_text(burst_pool="cloud", pool_provider="{name: aws, region: eu-west-1}", count=0, min_="", role="worker"):
    return f"""\
name: bursty
provider: {{name: local, subnet: 10.251.7.0/24}}
etcd: {{count: 1}}
ssh: {{authorized_keys: ["{KEY}"]}}
pools:
  - {{name: masters, role: master, count: 1}}
  - {{name: workers, role: worker, count: 1, min: 1, max: 3}}
  - {{name: cloud, role: {role}, count: {count}, {min_} max: 4, provider: {pool_provider}}}
headroom: {{pool: workers, burst_pool: {burst_pool}}}
"""


def parse_text(text: str):
    import yaml
    return parse_spec(yaml.safe_load(text))


def load(tmp_path: Path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


def test_a_burst_pool_names_its_own_provider(tmp_path):
    spec = load(tmp_path, spec_text())
    cloud = spec.pool("cloud")
    assert cloud.provider.name == "aws" and cloud.provider.options.region == "eu-west-1"
    assert spec.pool("workers").provider is None
    s = Settings.from_spec(spec)
    assert (s.min_count, s.max_count, s.primary_max, s.burst_pool) == (1, 7, 3, "cloud")


@pytest.mark.parametrize("text, field", [
    (spec_text(pool_provider="{name: aws, regio: x}"), "pools[2].provider"),
    (spec_text(pool_provider="{name: nimbus}"), "pools[2].provider"),
    (spec_text(burst_pool="workers"), "headroom.burst_pool"),
    (spec_text(burst_pool="nowhere"), "headroom.burst_pool"),
    (spec_text(pool_provider="null"), "headroom.burst_pool"),
    (spec_text(count=2, min_="min: 1,"), "headroom.burst_pool"),
])
def test_bad_burst_settings_name_the_field(tmp_path, text, field):
    with pytest.raises(SpecError) as err:
        load(tmp_path, text)
    assert any(f": {field}" in line for line in err.value.lines), err.value.lines


def test_a_pool_provider_option_is_checked_against_its_grammar(tmp_path):
    with pytest.raises(SpecError) as err:
        load(tmp_path, spec_text(pool_provider='{name: aws, region: "eu-west-1|x y"}'))
    assert any(": pools[2].provider.region: must be an AWS region" in line for line in err.value.lines), err.value.lines


def test_validate_and_plan_state_what_the_burst_provider_needs(cli, tmp_path):
    import json
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())
    result = cli("validate", path)
    assert result.code == 0
    assert "pool cloud on aws (burst pool): needs" in result.out
    assert "cluster's API endpoint" in result.out and "SSH (port 22" in result.out and "VPN" in result.out
    result = cli("plan", path, "-o", "json", "--state-dir", tmp_path / "state")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    data = doc.get("result", doc)
    (entry,) = data["pool_providers"]
    assert entry["pool"] == "cloud" and entry["provider"] == "aws" and entry["burst"] is True
    assert any("2379" in need for need in entry["needs"])


def test_status_shows_a_burst_pool_apart():
    from rich.console import Console

    from provision.ui import UI
    from provision.verbs.status import status_tables
    spec = parse_text(spec_text())
    host = {"role": "worker", "etcd": False, "address": "10.0.0.9", "state": "running", "units": None}
    report = {"hosts": {"bursty-workers-0": {**host, "pool": "workers"}, "bursty-cloud-0": {**host, "pool": "cloud"}},
              "loads": {}, "etcd": {"members": [], "health": {}, "healthy": True, "error": None},
              "headroom": None, "orphans": [], "missing": [], "api_endpoint": {"kind": "node-local proxy",
                                                                               "address": "127.0.0.1:6444",
                                                                               "found": True},
              "artifacts": {}}
    console = Console(width=200, record=True)
    console.print(status_tables(UI(verbosity=-1), spec, report))
    text = console.export_text()
    primary, _, burst = text.partition("burst pool cloud (aws)")
    assert burst and "bursty-cloud-0" in burst and "bursty-cloud-0" not in primary
    assert "bursty-workers-0" in primary
