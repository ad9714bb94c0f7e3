"""The libcloud provider on DigitalOcean: the real libcloud DigitalOcean driver against the API
v2 stand-in (tests/fakes/digitalocean_api.py), pointed at it by LIBCLOUD_HOST/PORT/SECURE.

What must hold on the real cloud: a droplet is ours only when tagged ours (a foreign one with
our host name is neither adopted nor destroyed), every create carries an SSH key (a custom
image is refused without one) and the cluster's tags, a firewall on the cluster tag opens only
what the cluster needs, and `down` leaves nothing of ours and everything of theirs."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from provision.errors import UserError
from provision.plan import plan
from provision.providers.libcloud_digitalocean import cluster_tag, key_fingerprint
from provision.providers.libcloud_driver import LibcloudProvider, version_key
from tests.fakes.digitalocean_api import TOKEN

from .conftest import SSH_KEY, configs_for, do_spec, fast_backoff
from .test_down import artifact_mirror  # noqa: F401 - fixture

GCE_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEw7o1m3vZ9Fq6cYl3uN0qk3V0bq3vJp6pQpCwqk5k1a someone@else"


def provider_for(spec, tmp_path):
    return fast_backoff(LibcloudProvider(spec, tmp_path))


def droplets_named(api, name):
    return [d for d in api.droplets.values() if d["name"] == name]


def test_driver_is_built_with_the_host_override_and_a_region(do_api, tmp_path):
    provider = provider_for(do_spec(options={"region": "ams3"}), tmp_path)
    conn = provider.driver.connection
    assert (conn.host, int(conn.port), conn.secure) == (do_api.host, do_api.port, 0)
    # Three sizes over two pages: the driver followed the stand-in's pagination links.
    assert [s.id for s in provider.driver.list_sizes()] == ["s-1vcpu-1gb", "s-2vcpu-4gb", "s-4vcpu-8gb"]


def test_a_wrong_token_is_refused_by_the_api(do_api, tmp_path, monkeypatch):
    monkeypatch.setenv("LIBCLOUD_KEY", "not-" + TOKEN)
    with pytest.raises(Exception, match="Unable to authenticate"):
        provider_for(do_spec(), tmp_path).driver.list_sizes()


def test_foreign_droplet_with_our_host_name_is_neither_adopted_nor_destroyed(do_api, tmp_path):
    spec = do_spec(workers=2)
    hosts = plan(spec, {}).create
    worker = f"{spec.name}-workers-0"
    untagged = do_api.add_droplet(worker)
    other_cluster = do_api.add_droplet(f"{spec.name}-masters-0", tags=["provision:cluster:someone-else"])
    provider = provider_for(spec, tmp_path)
    assert provider.list_hosts() == []

    records = {r.name: r for r in provider.create_hosts(hosts, configs_for(hosts))}
    assert sorted(records) == sorted(h.name for h in hosts)
    assert records[worker].provider_id != str(untagged), "the foreign droplet was adopted"
    assert len(droplets_named(do_api, worker)) == 2  # theirs and ours: DigitalOcean allows both
    assert do_api.calls["create_droplet"] == len(hosts)

    provider.destroy_hosts([h.name for h in hosts])
    provider.teardown()
    assert sorted(do_api.droplets) == sorted([untagged, other_cluster])
    assert provider.list_hosts() == []


def test_every_create_carries_an_ssh_key_and_the_cluster_tags(do_api, tmp_path):
    spec = do_spec(workers=2)
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    provider_for(spec, tmp_path).create_hosts(hosts, configs)
    assert len(do_api.created) == len(hosts)
    [key] = do_api.keys.values()
    assert key["public_key"] == SSH_KEY and key["fingerprint"] == key_fingerprint(SSH_KEY)
    by_name = {h.name: h for h in hosts}
    for body in do_api.created:
        host = by_name[body["name"]]
        assert body["ssh_keys"] == [key["id"]]
        assert sorted(body["tags"]) == sorted([cluster_tag(spec.name), f"provision:pool:{host.pool}",
                                               f"provision:role:{host.role}"])
        assert body["user_data"].encode() == configs[host.name]
        # libcloud sends image ids as strings; the API takes an id either way
        assert str(body["image"]) == str(next(i["id"] for i in do_api.images if i["name"] == "flatcar-stable-4081.2.0"))
        # location null: the first region offering the image and the size
        assert body["region"] == "nyc1" and body["size"] == "s-2vcpu-4gb"


def test_the_stand_in_refuses_a_custom_image_droplet_without_a_key(do_api, tmp_path):
    """The refusal the provider's keys avoid, from the same driver call without ssh_keys."""
    driver = provider_for(do_spec(), tmp_path).driver
    image = next(i for i in driver.list_images() if i.name == "flatcar-stable-4081.2.0")
    size = next(s for s in driver.list_sizes() if s.id == "s-1vcpu-1gb")
    region = next(r for r in driver.list_locations() if r.id == "ams3")
    with pytest.raises(Exception, match=r"must add an SSH key .* custom image\. \(code: 422\)"):
        driver.create_node("x-workers-0", size, image, region, ex_user_data="{}")
    assert do_api.droplets == {}


def test_a_key_already_in_the_account_is_used_and_kept(do_api, tmp_path):
    driver = provider_for(do_spec(), tmp_path).driver
    theirs = driver.create_key_pair("laptop", SSH_KEY)
    spec = do_spec(workers=1, ssh={"authorized_keys": [SSH_KEY, OTHER_KEY]})
    provider = provider_for(spec, tmp_path)
    hosts = plan(spec, {}).create
    provider.create_hosts(hosts, configs_for(hosts))
    ours = next(k for k in do_api.keys.values() if k["public_key"] == OTHER_KEY)
    assert ours["name"].startswith(f"provision-{spec.name}-")
    assert all(body["ssh_keys"] == [int(theirs.extra["id"]), ours["id"]] for body in do_api.created)
    provider.destroy_hosts([h.name for h in hosts])
    provider.teardown()
    assert list(do_api.keys) == [int(theirs.extra["id"])], "down removed a key it did not create, or kept its own"


# (host-gw is refused with the spec on libcloud clouds: tests/spec/test_flannel_backend.py)
@pytest.mark.parametrize("backend, overlay", [("vxlan", ("udp", "8472")), ("udp", ("udp", "8285"))])
def test_firewall_opens_only_what_the_cluster_needs(do_api, tmp_path, backend, overlay):
    spec = do_spec(workers=1, network={"flannel": {"backend": backend}})
    provider = provider_for(spec, tmp_path)
    provider.prepare()
    provider.prepare()  # idempotent: one firewall
    [firewall] = do_api.firewalls.values()
    tag = cluster_tag(spec.name)
    assert firewall["name"] == f"provision-{spec.name}" and firewall["tags"] == [tag]
    public = {(r["protocol"], r.get("ports")) for r in firewall["inbound_rules"]
              if r["sources"].get("addresses")}
    assert public == {("tcp", "22"), ("tcp", "6443")}
    members = {(r["protocol"], r.get("ports")) for r in firewall["inbound_rules"] if r["sources"].get("tags")}
    expected = {("tcp", "2379-2380"), ("tcp", "10250"), ("icmp", None)} | ({overlay} if overlay else set())
    assert members == expected
    assert all(r["sources"] == {"tags": [tag]} for r in firewall["inbound_rules"] if r["sources"].get("tags"))
    assert {r["protocol"] for r in firewall["outbound_rules"]} == {"tcp", "udp", "icmp"}


def test_rerun_adopts_our_droplets(do_api, tmp_path):
    spec = do_spec(workers=2)
    hosts = plan(spec, {}).create
    first = {r.name: r.provider_id for r in provider_for(spec, tmp_path).create_hosts(hosts, configs_for(hosts))}
    calls = dict(do_api.calls)
    again = {r.name: r.provider_id for r in provider_for(spec, tmp_path).create_hosts(hosts, configs_for(hosts))}
    assert again == first
    assert do_api.calls["create_droplet"] == calls["create_droplet"]
    assert do_api.calls["create_key"] == calls["create_key"] == 1
    assert do_api.calls["create_firewall"] == calls["create_firewall"] == 1


def test_hosts_have_addresses_once_active(do_api, tmp_path):
    spec = do_spec(workers=1)
    hosts = plan(spec, {}).create
    provider = provider_for(spec, tmp_path)
    created = provider.create_hosts(hosts, configs_for(hosts))
    assert {r.state for r in created} == {"pending"} and all(r.address is None for r in created)
    running = provider.wait_running([h.name for h in hosts], timeout=30)
    for record in running:
        assert record.private_address.startswith("10.110.") and record.public_address.startswith("203.0.113.")


def test_newest_flatcar_by_version_not_by_string(do_api, tmp_path):
    do_api.add_custom_image("flatcar-stable-999.1.0")
    do_api.add_custom_image("flatcar-beta-9999.0.0")
    spec = do_spec(options={"image": None})
    assert provider_for(spec, tmp_path)._image().name == "flatcar-stable-4081.2.0"
    assert version_key("flatcar-stable-999.1.0") < version_key("flatcar-stable-4081.2.0")


def test_an_unknown_location_names_the_field_and_creates_nothing(do_api, tmp_path):
    spec = do_spec(workers=1, options={"location": "mars1"})
    hosts = plan(spec, {}).create
    with pytest.raises(UserError, match=r"provider.location: driver digitalocean has no location 'mars1'"):
        provider_for(spec, tmp_path).create_hosts(hosts, configs_for(hosts))
    assert do_api.droplets == {} and do_api.calls["create_droplet"] == 0


def test_up_until_machines_then_down_through_the_cli(do_api, tmp_path, cli, example, artifact_mirror):  # noqa: F811
    """examples/digitalocean.yaml: up creates droplets, key and firewall; down removes exactly
    those, and a foreign droplet named like ours, someone's key and firewall stay."""
    data = yaml.safe_load(example("digitalocean.yaml").read_text())
    data.setdefault("artifacts", {})["mirror"] = artifact_mirror
    spec_path = tmp_path / "do.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    name = data["name"]
    theirs = do_api.add_droplet(f"{name}-workers-0")
    driver = provider_for(do_spec(), tmp_path).driver
    their_key = driver.create_key_pair("laptop", OTHER_KEY)
    their_firewall = driver.connection.request("/v2/firewalls", method="POST", data=json.dumps({
        "name": "web", "tags": ["web"], "inbound_rules": [{"protocol": "tcp", "ports": "443",
                                                            "sources": {"addresses": ["0.0.0.0/0"]}}]})).object
    state_dir = tmp_path / "state"
    wanted = sum(p["count"] for p in data["pools"])

    first = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert first.code == 0, first.err
    created = json.loads(first.out)["results"]["machines"]["created"]
    assert len(created) == wanted
    assert len(do_api.droplets) == wanted + 1 and len(do_api.keys) == 2 and len(do_api.firewalls) == 2
    state = json.loads((state_dir / name / "state.json").read_text())
    assert all(h["address"] for h in state["hosts"].values())

    second = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert second.code == 0, second.err
    assert json.loads(second.out)["results"]["machines"]["created"] == []
    assert len(do_api.droplets) == wanted + 1

    down = cli("down", spec_path, "--yes", "--state-dir", state_dir, "-o", "json")
    assert down.code == 0, down.err
    assert sorted(json.loads(down.out)["destroyed"]) == sorted(created)
    assert list(do_api.droplets) == [theirs]
    assert list(do_api.keys) == [int(their_key.extra["id"])]
    assert list(do_api.firewalls) == [their_firewall["firewall"]["id"]]


def test_region_names_the_location_on_digitalocean(do_api, tmp_path):
    spec = do_spec(workers=0, options={"region": "fra1"})
    hosts = plan(spec, {}).create
    provider_for(spec, tmp_path).create_hosts(hosts, configs_for(hosts))
    assert [b["region"] for b in do_api.created] == ["fra1"]
    bad = do_spec(workers=0, options={"region": "sfo1"})  # listed, but not available
    with pytest.raises(UserError, match=r"provider.region: driver digitalocean has no location 'sfo1'"):
        provider_for(bad, tmp_path).create_hosts(plan(bad, {}).create, configs_for(plan(bad, {}).create))


def test_gce_passes_user_data_as_metadata_and_tags_as_labels(tmp_path):
    """GCE's create_node has no user-data argument: Flatcar reads the `user-data` metadata key.
    Capabilities come from the real driver's signature (no GCE API is reached)."""
    from libcloud.compute.drivers.gce import GCENodeDriver

    from provision.providers.libcloud_driver import label_to_tag, tag_to_label
    provider = LibcloudProvider(do_spec(options={"driver": "gce", "image": None, "size": None}), tmp_path)
    provider._driver = GCENodeDriver.__new__(GCENodeDriver)
    assert provider.capabilities() == {"user_data": "ex_metadata", "tags": "ex_labels", "client_token": None}
    assert tag_to_label("provision:cluster") == "provision_cluster"
    assert label_to_tag(tag_to_label("provision:pool")) == "provision:pool"
    assert GCE_LABEL_KEY.fullmatch(tag_to_label("provision:host"))


def test_throttled_create_is_retried_without_duplicates(do_api, tmp_path):
    spec = do_spec(workers=1)
    hosts = plan(spec, {}).create
    do_api.inject("create_droplet", "throttle", "throttle")
    provider_for(spec, tmp_path).create_hosts(hosts, configs_for(hosts))
    assert do_api.calls["create_droplet"] == len(hosts) + 2
    assert sorted(d["name"] for d in do_api.droplets.values()) == sorted(h.name for h in hosts)


@pytest.mark.parametrize("env, field", [({"LIBCLOUD_KEY": ""}, "LIBCLOUD_KEY"),
                                        ({"LIBCLOUD_SECRET": "s"}, "LIBCLOUD_SECRET")])
def test_credentials_are_checked_before_anything_is_created(do_api, tmp_path, cli, monkeypatch, env, field):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    spec_path = tmp_path / "do.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "creds", "provider": {"name": "libcloud", "driver": "digitalocean"},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "pools": [{"name": "masters", "role": "master", "count": 1}]}))
    result = cli("down", spec_path, "--yes", "--state-dir", tmp_path / "state")
    assert result.code == 2 and field in result.err and "Traceback" not in result.err
    assert sum(do_api.calls.values()) == 0


def test_up_dry_run_includes_the_hosts_phase(do_api, tmp_path, cli, example, artifact_mirror):  # noqa: F811
    """DigitalOcean cannot plan addresses: `up` maps host names in /etc/hosts (phase `hosts`,
    right after `wait`); a dry run before any droplet exists names the hosts it will cover."""
    data = yaml.safe_load(example("digitalocean.yaml").read_text())
    data.setdefault("artifacts", {})["mirror"] = artifact_mirror
    spec_path = tmp_path / "do.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    dry = cli("up", spec_path, "--dry-run", "--state-dir", tmp_path / "state", "-o", "json")
    assert dry.code == 0, dry.err
    doc = json.loads(dry.out)
    assert doc["results"]["hosts"] == {"needed": True, "entries": {}, "hosts": {}, "changed": 0}
    names = [f"{data['name']}-{p['name']}-{i}" for p in data["pools"] for i in range(p["count"])]
    line = next(line for line in dry.err.splitlines() if "would check" in line and line.startswith("[hosts]"))
    assert all(name in line for name in names), line
    assert do_api.droplets == {} and do_api.calls["create_droplet"] == 0
