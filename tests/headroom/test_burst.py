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
    # Vagrant VMs beside a local cluster: no firewall of provision's blocks either (an AWS pool's
    # security group would: tests/test_burst_reach.py), so validate passes and says what it
    # cannot check.
    import json
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(pool_provider="{name: vagrant, subnet: 192.168.60.0/24}"))
    result = cli("validate", path)
    assert result.code == 0, result.err
    assert "pool cloud on vagrant (burst pool): needs" in result.out
    assert "cluster's API endpoint" in result.out and "SSH (port 22" in result.out and "VPN" in result.out
    assert "2379: not checked" not in result.out and "port 2379 on every member" in result.out
    result = cli("plan", path, "--state-dir", tmp_path / "state")
    assert result.code == 0, result.err
    assert "pool cloud on vagrant (burst pool)" in result.out and "2379" in result.out
    result = cli("plan", path, "-o", "json", "--state-dir", tmp_path / "state")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    data = doc.get("result", doc)
    (entry,) = data["pool_providers"]
    assert entry["pool"] == "cloud" and entry["provider"] == "vagrant" and entry["burst"] is True
    assert any("2379" in need for need in entry["needs"])
    assert {r["need"]: r["status"] for r in entry["reach"]} == {
        "api": "not checked", "etcd": "not checked", "overlay": "not checked", "kubelet": "not checked",
        "ssh": "open"}


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


# ---- one add, one run ------------------------------------------------------------------------

def burst_cluster_state(spec, workers=2):
    """What a first `up` leaves: the master and `workers` primary hosts, no burst host."""
    hosts = {f"{spec.name}-masters-0": {"pool": "masters", "role": "master", "index": 0, "etcd": True}}
    hosts.update({f"{spec.name}-workers-{i}": {"pool": "workers", "role": "worker", "index": i, "etcd": False}
                  for i in range(workers)})
    return {"hosts": hosts, "pools": {"workers": {"size": workers, "spec_count": 1}}}


def full_observation(spec, pending):
    def observe(state, now):
        names = sorted(n for n, h in state["hosts"].items() if h["pool"] in ("workers", "cloud"))
        workers = [HostLoad(n, state["hosts"][n]["pool"], "worker", READY, containers=8) for n in names]
        return Observation(at=now, hosts=(*master_of(spec), *workers), pending=pending)
    return observe


def master_of(spec):
    return (HostLoad(f"{spec.name}-masters-0", "masters", "master", READY, etcd=True),)


def test_one_add_grows_every_pool_in_one_call_after_recording_their_sizes(tmp_path):
    from provision.headroom.reconcile import reconcile
    from provision.state import LocalStateStore
    spec = parse_text(spec_text())
    store = LocalStateStore(spec.name, tmp_path / "state")
    store.write(burst_cluster_state(spec, workers=2))
    calls = []

    class Recorder:
        def add(self, state, sizes):
            # the sizes of every pool that grows are in the store before anything is made
            calls.append((dict(sizes), {p: e["size"] for p, e in store.read()["pools"].items()}))
            return []

    # 2 of 3 primary hosts full, 20 pending, reserve 2: one more primary host and two burst hosts
    out = reconcile(spec, store, full_observation(spec, pending=20), Recorder(), clock=lambda: NOW,
                    sleep=lambda s: None)
    assert out.decision.adds == {"workers": 1, "cloud": 2}
    assert calls == [({"workers": 3, "cloud": 2}, {"workers": 3, "cloud": 2})]


def test_cluster_edges_converge_once_for_an_add_to_both_pools(tmp_path, monkeypatch):
    """`ClusterEdges.add` is `up`'s phases: one run makes the new hosts of both pools (each pool's
    in one batch, by its own provider: the machines phase), not one whole run per pool."""
    import provision.phases as phases
    from provision.headroom.edges import ClusterEdges
    from provision.headroom.reconcile import reconcile
    from provision.plan import plan
    from provision.state import LocalStateStore
    spec = parse_text(spec_text())
    store = LocalStateStore(spec.name, tmp_path / "state")
    store.write(burst_cluster_state(spec, workers=2))
    runs = []

    def converge(ctx):  # what the machines phase would be asked to make in this run
        runs.append(sorted(h.name for h in plan(ctx.spec, ctx.state).create))
        for h in plan(ctx.spec, ctx.state).create:
            ctx.state["hosts"][h.name] = h.to_json()
    monkeypatch.setattr(phases, "converge", converge)
    edges = ClusterEdges(spec, store, provider=object())
    out = reconcile(spec, store, full_observation(spec, pending=20), edges, clock=lambda: NOW,
                    sleep=lambda s: None)
    new = [f"{spec.name}-cloud-0", f"{spec.name}-cloud-1", f"{spec.name}-workers-2"]
    assert runs == [new]
    assert sorted(out.added) == new


# ---- a burst pool's config is its own provider's ---------------------------------------------

def burst_render(tmp_path, provider: str, state_extra=None, pool_provider="{name: aws, region: eu-west-1}",
                 burst_pool="cloud"):
    """(spec, rendered) of a cluster on `provider` with an AWS burst pool (PKI made for real)."""
    import yaml

    from provision import pki
    from provision.plan import plan
    from provision.render import render_cluster
    from provision.state import LocalStateStore
    doc = yaml.safe_load(spec_text(burst_pool=burst_pool, pool_provider=pool_provider, count=1, min_="min: 0,"))
    doc["provider"] = yaml.safe_load(provider)
    spec = parse_spec(doc)
    store = LocalStateStore(spec.name, tmp_path / "state")
    from tests.helpers_render import served_artifacts
    # binaries as a provider serving its own mirror records them (hashes known, nothing fetched)
    state = dict(store.read(), artifacts=served_artifacts("http://127.0.0.1:9"), **(state_extra or {}))
    hosts = plan(spec, state).desired
    pki.ensure_pki(spec, store, hosts)
    return spec, hosts, render_cluster(spec, state, store, hosts)


def ignition_of(rendered, host):
    import json
    return json.loads(rendered.config_for(host))


def kubelet_args(config):
    from tests.helpers_render import env_file, ignition_file
    return env_file(ignition_file(config, "/etc/kubernetes/kubelet.env").decode())["KUBELET_ARGS"].split()


def validate_ignition(tmp_path, rendered):
    import subprocess

    from tests.helpers_render import which_or_fail
    tool = which_or_fail("ignition-validate")
    for name, data in rendered.files.items():
        path = tmp_path / name
        path.write_bytes(data)
        proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == proc.stderr == "", (name, proc.stdout, proc.stderr)


def test_an_aws_pool_beside_a_vagrant_cluster_shares_one_config_without_node_addresses(tmp_path):
    from tests.helpers_render import env_file, ignition_file
    spec, hosts, rendered = burst_render(tmp_path, "{name: vagrant, subnet: 192.168.60.0/24}")
    # Vagrant's own workers: a config each, naming the node's private address
    assert "bursty-workers-0.ign" in rendered.files and "pool-workers.ign" not in rendered.files
    # the AWS pool: one config for the pool, no per-host address (EC2 gives each its own)
    assert rendered.index["hosts"]["bursty-cloud-0"]["config"] == "pool-cloud.ign"
    assert "bursty-cloud-0.ign" not in rendered.files
    config = ignition_of(rendered, "bursty-cloud-0")
    flannel = env_file(ignition_file(config, "/etc/flannel/flanneld.env").decode())
    assert "FLANNELD_IFACE" not in flannel and "FLANNELD_PUBLIC_IP" not in flannel
    assert not any(a.startswith("--node-ip=") for a in kubelet_args(config))
    validate_ignition(tmp_path, rendered)


def test_a_burst_node_says_which_provider_it_runs_on_and_primary_configs_do_not_change(tmp_path):
    spec, hosts, rendered = burst_render(tmp_path, "{name: local, subnet: 10.251.7.0/24}")
    labels = next(a for a in kubelet_args(ignition_of(rendered, "bursty-cloud-0")) if a.startswith("--node-labels="))
    assert "provision.io/provider=aws" in labels.split("=", 1)[1].split(",")
    primary = next(a for a in kubelet_args(ignition_of(rendered, "bursty-workers-0")) if a.startswith("--node-labels="))
    assert "provision.io/provider" not in primary
    # The primary pool's config is byte for byte what it is without a burst pool (same PKI).
    _, _, alone = burst_render(tmp_path, "{name: local, subnet: 10.251.7.0/24}", pool_provider="null",
                             burst_pool="null")
    assert alone.config_for("bursty-workers-0") == rendered.config_for("bursty-workers-0")
    assert alone.config_for("bursty-masters-0") == rendered.config_for("bursty-masters-0")


def test_a_burst_pool_reaches_the_api_at_the_masters_public_addresses_when_the_lb_is_private(tmp_path):
    """An OpenStack cluster whose API load balancer has only its private VIP: its own workers use
    the load balancer, the AWS pool the node-local proxy to the masters' floating IPs."""
    from tests.helpers_render import ignition_file
    state = {"api_endpoint": {"kind": "openstack-octavia", "dns_name": "10.0.0.50", "vip_address": "10.0.0.50"},
             "hosts": {"bursty-masters-0": {"pool": "masters", "role": "master", "index": 0, "etcd": True,
                                            "address": "10.0.0.11", "public_address": "203.0.113.11"}}}
    openstack = "{name: openstack, cloud: lab, image: flatcar, flavor: m1.large, external_network: public}"
    spec, hosts, rendered = burst_render(tmp_path, openstack, state)
    assert b"https://10.0.0.50:6443" in bootstrap_kubeconfig(rendered, "bursty-workers-0")
    with pytest.raises(KeyError):  # the cluster's workers use the load balancer: no proxy
        ignition_file(ignition_of(rendered, "bursty-workers-0"), "/etc/provision/api-proxy/haproxy.cfg")
    burst = ignition_of(rendered, "bursty-cloud-0")
    assert b"https://127.0.0.1:" in bootstrap_kubeconfig(rendered, "bursty-cloud-0")
    haproxy = ignition_file(burst, "/etc/provision/api-proxy/haproxy.cfg").decode()
    assert "server bursty-masters-0 203.0.113.11:6443 check" in haproxy
    validate_ignition(tmp_path, rendered)
    # A load balancer with a public address is the burst pool's endpoint too.
    state["api_endpoint"] = {"kind": "openstack-octavia", "dns_name": "198.51.100.7", "vip_address": "10.0.0.50"}
    _, _, public = burst_render(tmp_path / "public", openstack, state)
    assert b"https://198.51.100.7:6443" in bootstrap_kubeconfig(public, "bursty-cloud-0")


def bootstrap_kubeconfig(rendered, host):
    """The kubelet's bootstrap kubeconfig (a secret: delivered over SSH, not in the config)."""
    return rendered.secrets_for(host)["/etc/kubernetes/bootstrap-kubeconfig"].data


def test_validate_and_plan_name_the_api_endpoint_a_burst_host_is_configured_with():
    from provision.providers.pools import pool_providers_needs
    spec = parse_text(spec_text())
    masters = {"bursty-masters-0": {"role": "master", "address": "10.0.0.11", "public_address": "203.0.113.11"}}
    private_lb = {"dns_name": "10.0.0.50", "vip_address": "10.0.0.50"}
    (entry,) = pool_providers_needs(spec, {"hosts": masters, "api_endpoint": private_lb})
    assert "(https://203.0.113.11:6443)" in entry["needs"][0]
    public_lb = {"dns_name": "198.51.100.7", "vip_address": "10.0.0.50"}
    (entry,) = pool_providers_needs(spec, {"hosts": masters, "api_endpoint": public_lb})
    assert "(https://198.51.100.7:6443)" in entry["needs"][0]
    (entry,) = pool_providers_needs(spec, {"hosts": {"bursty-masters-0": {"role": "master", "address": "10.0.0.11"}}})
    assert "(https://10.0.0.11:6443)" in entry["needs"][0]
