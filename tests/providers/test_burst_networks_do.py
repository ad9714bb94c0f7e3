"""headroom.burst_networks on DigitalOcean: the cluster's cloud firewall, as the real libcloud
driver makes it against the DigitalOcean API v2 stand-in, admits the networks on the ports a
burst needs; a firewall made before the field was set is updated in place (PUT), and one that
already matches is left alone."""
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
    assert do_api.calls["update_firewall"] == 1 and do_api.calls["create_firewall"] == 1
    [firewall] = do_api.firewalls.values()
    assert across(firewall) == {(proto, port, tuple(NETWORKS)) for proto, port in
                                (("tcp", "2379"), ("tcp", "6443"), ("tcp", "10250"), ("udp", "8472"))}
    assert firewall["inbound_rules"][:len(before)] == before and firewall["tags"] == [cluster_tag(spec.name)]
    fast_backoff(LibcloudProvider(with_networks(spec, NETWORKS), tmp_path)).prepare()
    assert do_api.calls["update_firewall"] == 1  # already admits them: no call
    fast_backoff(LibcloudProvider(spec, tmp_path)).prepare()  # the field emptied: back to the cluster's own
    [firewall] = do_api.firewalls.values()
    assert do_api.calls["update_firewall"] == 2 and firewall["inbound_rules"] == before
