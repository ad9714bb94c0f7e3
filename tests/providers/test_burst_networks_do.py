"""headroom.burst_networks on DigitalOcean: the cluster's cloud firewall, as the real libcloud
driver makes it against the DigitalOcean API v2 stand-in, admits the networks on the ports a
burst needs; a firewall made before the field was set is updated in place through the add and
remove rules calls (the difference only), one that already matches is left alone, and rules an
operator added by hand survive every update."""
from __future__ import annotations

from provision.providers.libcloud_digitalocean import cluster_tag
from provision.providers.libcloud_driver import LibcloudProvider
from provision.spec.model import HeadroomSpec

from .conftest import do_spec, fast_backoff

NETWORKS = ["198.51.100.0/24", "203.0.113.64/26"]


def with_networks(spec, networks):
    return spec.model_copy(update={"headroom": HeadroomSpec(pool="workers", burst_networks=networks)})


def across(firewall) -> set[tuple]:
    return {(r["protocol"], r["ports"], tuple(r["sources"]["addresses"])) for r in firewall["inbound_rules"]
            if r["sources"].get("addresses") and "0.0.0.0/0" not in r["sources"]["addresses"]}


def test_the_firewall_admits_the_burst_networks_and_is_updated_when_they_change(do_api, tmp_path):
    spec = do_spec(workers=1)
    fast_backoff(LibcloudProvider(spec, tmp_path)).prepare()
    [firewall] = do_api.firewalls.values()
    before = [dict(r) for r in firewall["inbound_rules"]]
    assert across(firewall) == set()
    fast_backoff(LibcloudProvider(with_networks(spec, NETWORKS), tmp_path)).prepare()
    assert do_api.calls["add_firewall_rules"] == 1 and do_api.calls["create_firewall"] == 1
    assert do_api.calls["update_firewall"] == 0 and do_api.calls["remove_firewall_rules"] == 0
    [firewall] = do_api.firewalls.values()
    assert across(firewall) == {(proto, port, tuple(NETWORKS)) for proto, port in
                                (("tcp", "2379"), ("tcp", "6443"), ("tcp", "10250"), ("udp", "8472"))}
    assert firewall["inbound_rules"][:len(before)] == before and firewall["tags"] == [cluster_tag(spec.name)]
    fast_backoff(LibcloudProvider(with_networks(spec, NETWORKS), tmp_path)).prepare()
    assert do_api.calls["add_firewall_rules"] == 1  # already admits them: no call
    fast_backoff(LibcloudProvider(spec, tmp_path)).prepare()  # the field emptied: back to the cluster's own
    [firewall] = do_api.firewalls.values()
    assert do_api.calls["remove_firewall_rules"] == 1 and firewall["inbound_rules"] == before
    assert do_api.calls["update_firewall"] == 0


def test_rules_added_by_hand_survive_a_change_of_the_burst_networks(do_api, tmp_path):
    """An operator's own rules on the cluster's firewall (an office network on 6443, a monitoring
    port, an outbound rule) stay when provision changes its burst rules; a hand rule on one of
    the burst ports alone is never taken for an old burst rule."""
    import json

    spec = do_spec(workers=1)
    fast_backoff(LibcloudProvider(with_networks(spec, NETWORKS), tmp_path)).prepare()
    [firewall] = do_api.firewalls.values()
    theirs_in = [{"protocol": "tcp", "ports": "6443", "sources": {"addresses": ["192.0.2.0/24"]}},
                 {"protocol": "tcp", "ports": "9100", "sources": {"addresses": ["192.0.2.7/32"]}}]
    theirs_out = [{"protocol": "tcp", "ports": "25", "destinations": {"addresses": ["192.0.2.25/32"]}}]
    driver = LibcloudProvider(spec, tmp_path).driver  # the real libcloud driver, pointed at the stand-in
    driver.connection.request(f"/v2/firewalls/{firewall['id']}/rules", method="POST",
                              data=json.dumps({"inbound_rules": theirs_in, "outbound_rules": theirs_out}))
    moved = ["198.51.100.0/24"]
    fast_backoff(LibcloudProvider(with_networks(spec, moved), tmp_path)).prepare()
    [firewall] = do_api.firewalls.values()
    assert all(r in firewall["inbound_rules"] for r in theirs_in)
    assert all(r in firewall["outbound_rules"] for r in theirs_out)
    assert across(firewall) == {(proto, port, tuple(moved)) for proto, port in
                                (("tcp", "2379"), ("tcp", "6443"), ("tcp", "10250"), ("udp", "8472"))} | {
        ("tcp", "6443", ("192.0.2.0/24",)), ("tcp", "9100", ("192.0.2.7/32",))}
    fast_backoff(LibcloudProvider(spec, tmp_path)).prepare()  # no burst networks at all any more
    [firewall] = do_api.firewalls.values()
    assert across(firewall) == {("tcp", "6443", ("192.0.2.0/24",)), ("tcp", "9100", ("192.0.2.7/32",))}
    assert all(r in firewall["outbound_rules"] for r in theirs_out)
    assert do_api.calls["update_firewall"] == 0  # never a PUT of the whole rule set


def test_only_a_whole_burst_rule_set_is_taken_for_provisions():
    """Of an earlier headroom.burst_networks (made with either overlay backend), provision's rules
    are a whole set from one address list; the same ports opened by hand one at a time are not."""
    from provision.providers.libcloud_digitalocean import earlier_burst_rules, firewall_rules, rule_key
    old = firewall_rules("bursty", "udp", ["198.51.100.0/24"])["inbound_rules"]
    hand = [{"protocol": "tcp", "ports": "6443", "sources": {"addresses": ["192.0.2.0/24"]}},
            {"protocol": "udp", "ports": "8472", "sources": {"addresses": ["192.0.2.0/24"]}}]
    found = earlier_burst_rules(old + hand)
    assert found == {rule_key(r, "sources") for r in old if r["sources"].get("addresses") == ["198.51.100.0/24"]}
    assert ("udp", "8285", (("addresses", ("198.51.100.0/24",)),)) in found
    assert not found & {rule_key(r, "sources") for r in hand}
