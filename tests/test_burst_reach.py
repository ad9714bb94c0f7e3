"""What a burst pool's hosts must reach, checked against the rules provision makes
(`providers.burst_reach`): the cluster's API endpoint, etcd's client port on every member,
flannel's overlay and SSH from provision. A need those rules certainly refuse stops `validate`,
`plan` and `up` with exit 2 naming the field and the missing rule, before anything is made; a
need that depends on what provision cannot see says "not checked", never "open".

The verdicts come from the providers' own rule functions; that those are the rules the cloud
gets is tests/providers/test_aws.py's (and test_burst_reach_aws.py checks the verdicts against
the security groups made on moto's EC2)."""
from __future__ import annotations

import json

import pytest
import yaml

from provision.providers import aws_network
from provision.providers.burst_reach import BLOCKED, NOT_CHECKED, OPEN
from provision.providers.pools import pool_providers_needs
from provision.spec import parse_spec
from tests.conftest import set_aws_credentials
from tests.headroom.test_burst import spec_text

LOCAL = "{name: local, subnet: 10.251.7.0/24}"
AWS_BURST = "{name: aws, region: eu-west-1}"
VAGRANT_BURST = "{name: vagrant, subnet: 192.168.60.0/24}"


def spec_of(primary=LOCAL, burst=AWS_BURST, backend=None):
    doc = yaml.safe_load(spec_text(pool_provider=burst))
    doc["provider"] = yaml.safe_load(primary)
    if backend:
        doc["network"] = {"flannel": {"backend": backend}}
    return parse_spec(doc)


def reach(spec, state=None) -> dict[str, dict]:
    (entry,) = pool_providers_needs(spec, state)
    return {r["need"]: r for r in entry["reach"]}


def test_an_aws_cluster_admits_a_burst_pool_to_its_api_but_never_to_etcd():
    r = reach(spec_of("{name: aws, region: us-east-1}"))
    assert r["api"]["status"] == OPEN and r["api"]["field"] == "provider.api_cidrs"
    assert "provision-bursty-masters (us-east-1) admits tcp 6443 from 0.0.0.0/0" in r["api"]["why"]
    assert r["etcd"]["status"] == BLOCKED and r["etcd"]["field"] == "headroom.burst_networks"
    assert r["etcd"]["why"] == ("missing rule: security group provision-bursty-etcd (us-east-1) admits tcp 2379 only "
                                "from group provision-bursty; set headroom.burst_networks to the networks the other "
                                "cloud's hosts come from (as this firewall sees them) to admit them")
    assert r["overlay"]["status"] == BLOCKED and "udp 8472 only from group provision-bursty" in r["overlay"]["why"]
    assert r["ssh"]["status"] == OPEN and r["ssh"]["field"] == "pools[2].provider.ssh_cidrs"


def test_narrowed_cidrs_are_not_checked_and_name_their_field():
    """Burst hosts' and provision's public addresses are not known here: a narrowed api_cidrs or
    ssh_cidrs is neither open nor blocked; the field and the networks are said."""
    spec = spec_of('{name: aws, region: us-east-1, api_cidrs: ["203.0.113.0/24"]}',
                   '{name: aws, region: eu-west-1, ssh_cidrs: ["198.51.100.7/32"]}')
    r = reach(spec)
    assert r["api"]["status"] == NOT_CHECKED and r["api"]["field"] == "provider.api_cidrs"
    assert "only from 203.0.113.0/24 (provider.api_cidrs): the hosts' addresses must be inside" in r["api"]["why"]
    assert r["ssh"]["status"] == NOT_CHECKED and r["ssh"]["field"] == "pools[2].provider.ssh_cidrs"
    assert "198.51.100.7/32" in r["ssh"]["why"]


def test_the_verdict_follows_the_providers_own_rules(monkeypatch):
    """Were the etcd group to admit 2379 from anywhere, etcd would be open: the verdict is read
    from aws_network.wanted_permissions, not a copy of it."""
    real = aws_network.wanted_permissions

    def wider(kind, groups, options, *burst):
        extra = [{"IpProtocol": "tcp", "FromPort": 2379, "ToPort": 2379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        return real(kind, groups, options, *burst) + (extra if kind == "etcd" else [])
    spec = spec_of("{name: aws, region: us-east-1}")
    assert reach(spec)["etcd"]["status"] == BLOCKED
    monkeypatch.setattr(aws_network, "wanted_permissions", wider)
    assert reach(spec)["etcd"]["status"] == OPEN


def test_an_openstack_cluster_without_public_addresses_is_not_checked_and_its_etcd_is_blocked():
    isolated = reach(spec_of("{name: openstack, cloud: lab}"))
    assert isolated["api"]["status"] == NOT_CHECKED and isolated["api"]["field"] == "provider.external_network"
    assert "no public address" in isolated["api"]["why"] and "VPN" in isolated["api"]["why"]
    routed = reach(spec_of("{name: openstack, cloud: lab, external_network: public}"))
    assert routed["api"]["status"] == OPEN
    assert routed["etcd"]["status"] == BLOCKED  # the group admits 2379 only from its own members
    assert "security group provision-bursty admits tcp 2379 only from its own members" in routed["etcd"]["why"]
    no_floating = reach(spec_of("{name: openstack, cloud: lab, external_network: public, floating_ips: false}"))
    assert no_floating["etcd"]["status"] == BLOCKED and no_floating["api"]["field"] == "provider.floating_ips"


def test_digitalocean_admits_tagged_droplets_only():
    same_cloud = reach(spec_of("{name: libcloud, driver: digitalocean}", "{name: libcloud, driver: digitalocean}"))
    assert same_cloud["etcd"]["status"] == OPEN and "tagged provision:cluster:bursty, as the pool's are" in same_cloud["etcd"]["why"]
    other = reach(spec_of("{name: libcloud, driver: digitalocean}"))
    assert other["etcd"]["status"] == BLOCKED and "firewall provision-bursty" in other["etcd"]["why"]
    unmanaged = reach(spec_of("{name: libcloud, driver: linode}", VAGRANT_BURST))
    assert unmanaged["etcd"]["status"] == NOT_CHECKED and "linode" in unmanaged["etcd"]["why"]


def test_host_gw_cannot_cross_clouds():
    """Refused with the spec itself (spec.rules.flannel_backend_rules), so no verb gets as far as
    judging the overlay's reach."""
    from provision.spec import SpecError
    with pytest.raises(SpecError) as err:
        spec_of(burst=VAGRANT_BURST, backend="host-gw")
    assert any("network.flannel.backend: host-gw cannot work with pools[2].provider vagrant" in line
               for line in err.value.lines), err.value.lines


def test_a_cluster_on_this_machine_is_reached_only_through_a_vpn_never_claimed_open():
    r = reach(spec_of(burst=VAGRANT_BURST))
    assert {k: v["status"] for k, v in r.items()} == {"api": NOT_CHECKED, "etcd": NOT_CHECKED,
                                                       "overlay": NOT_CHECKED, "kubelet": NOT_CHECKED, "ssh": OPEN}
    assert all("VPN or tunnel you provide" in r[k]["why"] for k in ("api", "etcd", "overlay"))


def test_every_etcd_member_is_named_once_state_records_it():
    spec = spec_of("{name: aws, region: us-east-1}")
    state = {"hosts": {"bursty-masters-0": {"role": "master", "etcd": True, "address": "10.240.0.10",
                                            "public_address": "203.0.113.10"},
                       "bursty-etcd-1": {"role": "etcd", "etcd": True, "address": "10.240.0.11"}}}
    what = reach(spec, state)["etcd"]["what"]
    assert "(https://10.240.0.11:2379, https://203.0.113.10:2379)" in what
    assert "1 member(s), addresses known once made" in reach(spec)["etcd"]["what"]


def test_validate_and_plan_refuse_a_blocked_need_naming_the_field_and_make_nothing(cli, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())  # a local cluster with an AWS burst pool: its group drops vxlan from outside
    result = cli("validate", path)
    assert result.code == 2 and result.out == ""
    assert f"{path}: headroom.burst_networks: pool cloud on aws: flannel's vxlan overlay (udp 8472)" in result.err
    assert "missing rule: security group provision-bursty (eu-west-1) admits udp 8472 only from group" in result.err
    assert "Traceback" not in result.err
    result = cli("validate", path, "-o", "json")
    assert result.code == 2
    doc = json.loads(result.out)
    assert any("headroom.burst_networks: pool cloud" in line for line in doc.get("result", doc)["errors"])
    state_dir = tmp_path / "state"
    result = cli("plan", path, "--state-dir", state_dir, "--out", tmp_path / "plan.json")
    assert result.code == 2 and "headroom.burst_networks: pool cloud" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "plan.json").exists() and not state_dir.exists()


def test_ups_validate_phase_refuses_before_any_phase_acts(tmp_path):
    """`up` runs `validate` first: the blocked need stops it with a UserError (exit 2)."""
    from provision.errors import UserError
    from provision.phases import RunContext, validate
    from provision.state import LocalStateStore
    from provision.ui import UI
    spec = spec_of()
    store = LocalStateStore(spec.name, tmp_path / "state")
    ctx = RunContext(spec=spec, store=store, state={}, ui=UI(verbosity=-1))
    with pytest.raises(UserError) as err:
        validate.run(ctx)
    assert err.value.exit_code == 2 and err.value.lines[0].startswith("headroom.burst_networks: pool cloud on aws: ")
    ok = RunContext(spec=spec_of(burst=VAGRANT_BURST), store=store, state={}, ui=UI(verbosity=-1))
    assert validate.run(ok)["pool_providers"] == [{"pool": "cloud", "reach": {
        "api": NOT_CHECKED, "etcd": NOT_CHECKED, "overlay": NOT_CHECKED, "kubelet": NOT_CHECKED, "ssh": OPEN}}]


def test_the_masters_must_reach_a_burst_pools_kubelets():
    """kubectl logs and exec go from kube-apiserver to the node's kubelet: an AWS pool's group
    admits 10250 only from its own region's masters group, never the cluster's masters."""
    r = reach(spec_of())
    assert r["kubelet"]["status"] == BLOCKED and r["kubelet"]["field"] == "headroom.burst_networks"
    assert "provision-bursty (eu-west-1) admits tcp 10250 only from group provision-bursty-masters" in r["kubelet"]["why"]
    tagged = reach(spec_of("{name: libcloud, driver: digitalocean}", "{name: libcloud, driver: digitalocean}"))
    assert tagged["kubelet"]["status"] == OPEN


# ---- headroom.burst_networks: the firewalls admit the other cloud's networks ------------------

BURST_NETWORKS = ["198.51.100.0/24", "203.0.113.64/26"]


def with_networks(spec_yaml: str, networks) -> str:
    doc = yaml.safe_load(spec_yaml)
    doc["headroom"]["burst_networks"] = networks
    return yaml.safe_dump(doc)


def spec_with_networks(primary=LOCAL, burst=AWS_BURST, networks=BURST_NETWORKS, backend=None):
    doc = yaml.safe_load(with_networks(spec_text(pool_provider=burst), networks))
    doc["provider"] = yaml.safe_load(primary)
    if backend:
        doc["network"] = {"flannel": {"backend": backend}}
    return parse_spec(doc)


def test_burst_networks_open_what_an_aws_cluster_and_an_aws_pool_refused():
    r = reach(spec_with_networks("{name: aws, region: us-east-1, api_cidrs: [192.0.2.0/24]}"))
    for need in ("api", "etcd", "overlay", "kubelet"):
        assert r[need]["status"] == OPEN, (need, r[need])
        assert r[need]["field"] == "headroom.burst_networks", need
        assert "from 198.51.100.0/24, 203.0.113.64/26 (headroom.burst_networks)" in r[need]["why"], need
    assert r["ssh"]["status"] == OPEN and "headroom.burst_networks" not in r["ssh"]["why"]  # SSH stays ssh_cidrs


def test_burst_networks_open_openstack_and_digitalocean_clusters():
    openstack = reach(spec_with_networks("{name: openstack, cloud: lab, external_network: public}"))
    assert openstack["etcd"]["status"] == OPEN and "security group provision-bursty admits tcp 2379 from" \
        in openstack["etcd"]["why"]
    digitalocean = reach(spec_with_networks("{name: libcloud, driver: digitalocean}"))
    assert digitalocean["etcd"]["status"] == OPEN and "firewall provision-bursty admits tcp 2379 from" \
        in digitalocean["etcd"]["why"]


def openstack_burst_rules(backend, networks):
    from provision.providers.openstack_network import wanted_rules
    without = wanted_rules(backend, "10.2.0.0/16")
    rules = wanted_rules(backend, "10.2.0.0/16", tuple(networks))
    assert rules[:len(without)] == without  # the cluster's own rules unchanged, first
    return {(r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) for r in rules[len(without):]}


@pytest.mark.parametrize("backend, overlay", [("vxlan", ("udp", 8472)), ("udp", ("udp", 8285)), ("host-gw", None)])
def test_openstack_rules_admit_the_burst_networks_on_exactly_the_burst_ports(backend, overlay):
    ports = [("tcp", 2379), ("tcp", 6443), ("tcp", 10250)] + ([overlay] if overlay else [])
    assert openstack_burst_rules(backend, BURST_NETWORKS) == {
        (proto, port, port, cidr) for cidr in BURST_NETWORKS for proto, port in ports}
    assert openstack_burst_rules(backend, []) == set()


@pytest.mark.parametrize("backend, overlay", [("vxlan", ("udp", "8472")), ("host-gw", None)])
def test_digitalocean_firewall_admits_the_burst_networks_on_exactly_the_burst_ports(backend, overlay):
    from provision.providers.libcloud_digitalocean import firewall_rules
    without = firewall_rules("bursty", backend)
    rules = firewall_rules("bursty", backend, BURST_NETWORKS)
    assert rules["outbound_rules"] == without["outbound_rules"]
    assert rules["inbound_rules"][:len(without["inbound_rules"])] == without["inbound_rules"]
    added = rules["inbound_rules"][len(without["inbound_rules"]):]
    ports = [("tcp", "2379"), ("tcp", "6443"), ("tcp", "10250")] + ([overlay] if overlay else [])
    assert [(r["protocol"], r["ports"]) for r in added] == ports
    assert all(r["sources"] == {"addresses": BURST_NETWORKS} for r in added)
    assert firewall_rules("bursty", backend, ()) == without


def test_aws_rules_admit_the_burst_networks_on_exactly_the_burst_ports():
    spec = spec_with_networks("{name: aws, region: us-east-1}")
    groups = {k: k for k in aws_network.GROUP_KINDS}
    options = spec.provider.options
    for kind in aws_network.GROUP_KINDS:
        assert aws_network.wanted_permissions(kind, groups, options, ()) == \
            aws_network.wanted_permissions(kind, groups, options)
    added = {(kind, p["IpProtocol"], p["FromPort"], r["CidrIp"]) for kind in aws_network.GROUP_KINDS
             for p in aws_network.wanted_permissions(kind, groups, options, tuple(BURST_NETWORKS))
             for r in p.get("IpRanges", []) if r["CidrIp"] in BURST_NETWORKS}
    assert added == {(kind, proto, port, cidr) for cidr in BURST_NETWORKS for kind, proto, port in
                     (("etcd", "tcp", 2379), ("masters", "tcp", 6443), ("nodes", "tcp", 10250), ("nodes", "udp", 8472))}


def test_readme_example_passes_validate_with_burst_networks(cli, tmp_path):
    """The README's example (an AWS pool beside a local or an OpenStack cluster) is refused
    without the field and passes with it."""
    for primary in (LOCAL, "{name: openstack, cloud: lab, external_network: public}"):
        doc = yaml.safe_load(spec_text())
        doc["provider"] = yaml.safe_load(primary)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(doc))
        refused = cli("validate", path)
        assert refused.code == 2 and "set headroom.burst_networks to the networks" in refused.err, primary
        path.write_text(with_networks(yaml.safe_dump(doc), BURST_NETWORKS))
        result = cli("validate", path)
        assert result.code == 0, (primary, result.err)
        assert "(headroom.burst_networks)" in result.out and "warning" not in result.out
        doc_json = json.loads(cli("validate", path, "-o", "json").out)
        assert "warnings" not in doc_json.get("result", doc_json)


def test_the_readme_snippet_beside_an_openstack_cluster_passes_validate(cli, tmp_path):
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("an AWS pool beside an OpenStack cluster:\n\n  ```yaml\n", 1)[1].split("  ```", 1)[0]
    snippet = yaml.safe_load(block)
    doc = yaml.safe_load(spec_text())
    doc["provider"] = {"name": "openstack", "cloud": "lab", "external_network": "public"}
    doc["pools"][2] = snippet["pools"][0]
    doc["headroom"] = snippet["headroom"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli("validate", path)
    assert result.code == 0, result.err
    assert "pool cloud on aws (burst pool)" in result.out and "blocked" not in result.out


def test_validate_warns_that_everywhere_opens_etcds_client_port(cli, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(with_networks(spec_text(), ["0.0.0.0/0"]))
    result = cli("validate", path)
    assert result.code == 0, result.err
    assert "warning: headroom.burst_networks has 0.0.0.0/0: etcd's client port 2379" in result.out
    assert "client certificate of its CA (mTLS)" in result.out


def test_bad_burst_networks_exit_2_naming_the_item_and_make_nothing(cli, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(with_networks(spec_text(), ["198.51.100.0/24", "198.51.100.1/24", "fd00::/8", "nope",
                                                "198.51.100.0/24"]))
    state_dir = tmp_path / "state"
    for args in (("validate", path), ("plan", path, "--state-dir", state_dir), ("up", path, "--state-dir", state_dir)):
        result = cli(*args)
        assert result.code == 2 and "Traceback" not in result.err, args
        assert "headroom.burst_networks[1]: must be an IPv4 CIDR like 198.51.100.0/24 (198.51.100.1/24 has host bits set)" \
            in result.err
        assert "headroom.burst_networks[2]: must be an IPv4 CIDR (got 'fd00::/8')" in result.err
        assert "headroom.burst_networks[3]:" in result.err and "headroom.burst_networks[4]: '198.51.100.0/24' is listed twice" \
            in result.err
    assert not state_dir.exists()


def test_up_without_yes_shows_the_refusal_as_plan_does(cli, tmp_path, monkeypatch):
    """No --yes and no terminal: up's preview refuses the blocked need with plan's words, exit 2,
    nothing made."""
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text())
    state_dir = tmp_path / "state"
    planned = cli("plan", path, "--state-dir", state_dir)
    result = cli("up", path, "--state-dir", state_dir)
    assert result.code == planned.code == 2 and "Traceback" not in result.err
    blocked = [line for line in planned.err.splitlines() if "headroom.burst_networks: pool cloud on aws" in line]
    assert blocked and all(line in result.err for line in blocked)
    assert not state_dir.exists()
    set_aws_credentials(monkeypatch, True)  # the preview checks the pool's provider next
    path.write_text(with_networks(spec_text(), BURST_NETWORKS))
    ok = cli("up", path, "--state-dir", state_dir)
    assert ok.code == 0 and "nothing changed (no --yes" in ok.err + ok.out, ok.err
    assert not state_dir.exists()
