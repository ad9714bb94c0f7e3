"""The openstack provider driven by the real openstacksdk against the local HTTP stand-in
(tests/fakes/openstack_api.py), configured through clouds.yaml. The stand-in builds servers
over several looks, fails boots with Nova's fault, deletes slowly and refuses what Nova and
Neutron refuse."""
from __future__ import annotations

import base64
import ipaddress

import pytest

from provision.errors import ActionError, UserError
from provision.plan import plan
from provision.providers import openstack as openstack_mod
from provision.providers.openstack import FIXED_ADDRESSES, OpenStackProvider

from .conftest import SSH_KEY, configs_for, fast_backoff, make_spec

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther0000000000000000000000000000000000000 old@example.com"


def os_spec(workers=2, masters=1, extra=None, **options):
    base = {"name": "openstack", "cloud": "testcloud", "image": "flatcar-stable", "flavor": "m1.small"}
    base.update(options)
    return make_spec(base, workers=workers, masters=masters, **(extra or {}))


def fast(provider):
    """Quick retries and polls (the stand-in moves on per look, not per second)."""
    fast_backoff(provider).sleep = lambda seconds: None
    return provider


def up(provider, spec):
    """What the machines phase does on a fresh cluster: prepare, create, wait."""
    hosts = plan(spec, {}).create
    provider.prepare()
    provider.create_hosts(hosts, configs_for(hosts))
    return hosts, provider.wait_running([h.name for h in hosts], timeout=60)


def down(provider):
    provider.destroy_hosts([h.name for h in provider.list_hosts()])
    provider.teardown()


def server_named(api, name):
    return next(s for s in api.servers.values() if s["name"] == name)


def fixed_ips(api, server_id):
    return [ip["ip_address"] for p in api.ports.values() if p["device_id"] == server_id for ip in p["fixed_ips"]]


def test_servers_get_user_data_config_drive_metadata_key_and_group_by_id(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    provider.create_hosts(hosts, configs)
    servers = {s["name"]: s for s in openstack_api.servers.values()}
    assert sorted(servers) == sorted(h.name for h in hosts)
    group_id = next(g["id"] for g in openstack_api.groups.values() if g["name"] == f"provision-{spec.name}")
    for host in hosts:
        sent = servers[host.name]["_requested"]
        assert base64.b64decode(sent["user_data"]) == configs[host.name]
        assert sent["config_drive"] is True
        assert sent["metadata"] == {"provision:cluster": spec.name, "provision:pool": host.pool,
                                    "provision:role": host.role, "provision:host": host.name}
        assert sent["key_name"] == f"provision-{spec.name}"
        assert sent["security_groups"] == [{"name": group_id}], "the group is named by id, not by its name"
        assert sent["flavorRef"] == "fl-m1.small" and sent["imageRef"] == "img-flatcar"
    master = next(h for h in hosts if h.role == "master")
    assert fixed_ips(openstack_api, servers[master.name]["id"]) == [master.address]


@pytest.mark.parametrize("backend, port", [("vxlan", 8472), ("udp", 8285), ("host-gw", None)])
def test_network_subnet_group_and_rules_made_once(openstack_api, tmp_path, backend, port):
    spec = os_spec(extra={"network": {"flannel": {"backend": backend}}})
    fast(OpenStackProvider(spec, tmp_path)).prepare()
    fast(OpenStackProvider(spec, tmp_path)).prepare()
    ours = openstack_api.ours()
    assert ours["networks"] == [f"provision-{spec.name}"] and len(ours["subnets"]) == 1
    subnet = next(s for s in openstack_api.subnets.values() if s["name"] == f"provision-{spec.name}")
    assert subnet["cidr"] == "10.241.0.0/24"
    assert subnet["dns_nameservers"] == ["1.1.1.1", "8.8.8.8"]
    assert subnet["allocation_pools"] == [{"start": f"10.241.0.{FIXED_ADDRESSES}", "end": "10.241.0.254"}]
    assert len(openstack_api.groups) == 1 and len(openstack_api.keypairs) == 1
    group_id = next(iter(openstack_api.groups))
    ingress = [r for r in openstack_api.rules.values() if r["direction"] == "ingress"]
    rules = {(r["protocol"], r["port_range_min"], r["port_range_max"], r.get("remote_ip_prefix") or
              ("members" if r.get("remote_group_id") == group_id else r.get("remote_group_id")))
             for r in ingress}
    assert rules >= {("tcp", 22, 22, "0.0.0.0/0"), ("tcp", 6443, 6443, "0.0.0.0/0"),
                     ("tcp", 2379, 2380, "members"), ("tcp", 10250, 10250, "members")}
    flannel_ports = {r[1] for r in rules if r[0] == "udp"}
    assert flannel_ports == ({port} if port else set()), f"{backend} opens the wrong flannel ports"
    if backend == "host-gw":  # pod packets travel unencapsulated: the pod network is let in
        assert (None, None, None, spec.network.pod_cidr) in rules
    assert len(ingress) == len(rules), "rules were added twice"


def test_a_server_in_error_is_reported_with_its_fault_and_replaced_on_the_next_run(openstack_api, tmp_path):
    spec = os_spec(workers=1)
    hosts = plan(spec, {}).create
    broken = next(h for h in hosts if h.role == "master")
    openstack_api.fail_boot(f"^{broken.name}$")
    logs = []
    provider = fast(OpenStackProvider(spec, tmp_path, log=logs.append))
    provider.create_hosts(hosts, configs_for(hosts))
    looks_before = openstack_api.calls["list_servers"]
    with pytest.raises(ActionError, match=rf"server {broken.name} failed to boot: No valid host was found\. "
                                          r"\(code 500\).*next `provision up` deletes and re-creates it"):
        provider.wait_running([h.name for h in hosts], timeout=3600)
    assert openstack_api.calls["list_servers"] - looks_before < 10, "the wait went on after the ERROR"
    old_id = server_named(openstack_api, broken.name)["id"]
    listed = {r.name: r for r in OpenStackProvider(spec, tmp_path).list_hosts()}
    assert listed[broken.name].state == "failed" and "No valid host" in listed[broken.name].extra["fault"]

    # The next run: the machines phase re-creates a failed host like a lost one.
    rerun = fast(OpenStackProvider(spec, tmp_path, log=logs.append))
    creates = openstack_api.calls["create_server"]
    rerun.create_hosts([broken], configs_for(hosts))
    running = rerun.wait_running([h.name for h in hosts], timeout=60)
    assert all(r.state == "running" for r in running)
    assert openstack_api.calls["create_server"] == creates + 1
    assert old_id not in openstack_api.servers and server_named(openstack_api, broken.name)["id"] != old_id
    assert fixed_ips(openstack_api, server_named(openstack_api, broken.name)["id"]) == [broken.address]
    assert any("is in ERROR: No valid host was found" in line for line in logs)


def test_router_floating_ips_and_server_groups_made_once_and_removed_by_down(openstack_api, tmp_path):
    openstack_api.soft_delete = True  # Nova with reclaim_instance_interval: deletes go SOFT_DELETED
    spec = os_spec(workers=2, masters=2, external_network="public",
                   extra={"etcd": {"count": 1, "placement": "dedicated"},
                          "pools": [{"name": "masters", "role": "master", "count": 2},
                                    {"name": "etcd", "role": "etcd", "count": 1},
                                    {"name": "workers", "role": "worker", "count": 2}]})
    hosts, running = up(fast(OpenStackProvider(spec, tmp_path)), spec)
    name = f"provision-{spec.name}"
    (router,) = [r for r in openstack_api.routers.values() if r["name"] == name]
    assert router["external_gateway_info"]["network_id"] == openstack_api.public["id"]
    our_subnet = next(s["id"] for s in openstack_api.subnets.values() if s["name"] == name)
    assert any(p["device_id"] == router["id"] and p["device_owner"] == "network:router_interface"
               and p["fixed_ips"][0]["subnet_id"] == our_subnet for p in openstack_api.ports.values())
    fips = list(openstack_api.floating_ips.values())
    assert len(fips) == len(hosts)
    public = ipaddress.ip_network("203.0.113.0/24")
    for record in running:
        assert record.public_address and ipaddress.ip_address(record.public_address) in public
        (fip,) = [f for f in fips if f["floating_ip_address"] == record.public_address]
        assert set(fip["tags"]) == {f"provision:cluster={spec.name}", f"provision:host={record.name}"}
    groups = {g["name"]: g for g in openstack_api.server_groups.values()}
    assert set(groups) == {f"{name}-masters", f"{name}-etcd"}
    assert all(g["policy"] == "soft-anti-affinity" for g in groups.values())
    members = {server["name"]: gname for gname, g in groups.items() for sid in g["members"]
               for server in [openstack_api.servers[sid]]}
    assert members == {h.name: f"{name}-masters" if h.role == "master" else f"{name}-etcd"
                       for h in hosts if h.role in ("master", "etcd")}

    # A re-run (fresh provider, no memory) makes nothing new.
    before = {op: openstack_api.calls[op] for op in ("create_router", "add_router_interface", "create_floating_ip",
                                                      "create_server_group", "create_server", "create_network")}
    again = fast(OpenStackProvider(spec, tmp_path))
    again.prepare()
    again.create_hosts(hosts, configs_for(hosts))
    again.wait_running([h.name for h in hosts], timeout=60)
    assert {op: openstack_api.calls[op] for op in before} == before

    # `down` leaves nothing of ours, and the cloud's external network alone.
    down(fast(OpenStackProvider(spec, tmp_path)))
    assert openstack_api.calls["server_action"] == len(hosts), "soft-deleted servers were not force-deleted"
    assert all(not v for v in openstack_api.ours().values()), openstack_api.ours()
    assert openstack_api.public["id"] in openstack_api.networks
    assert openstack_api.unknown == []


def test_teardown_retries_a_neutron_in_use_conflict(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    up(provider, spec)
    openstack_api.inject("delete_security_group", "in_use", "in_use")
    openstack_api.inject("delete_network", "in_use")
    down(provider)
    assert openstack_api.calls["delete_security_group"] == 3 and openstack_api.calls["delete_network"] == 2
    assert all(not v for v in openstack_api.ours().values()), openstack_api.ours()


def test_teardown_gives_up_on_a_lasting_conflict_with_a_clear_error(openstack_api, tmp_path, monkeypatch):
    import provision.providers.openstack_base as openstack_module
    monkeypatch.setattr(openstack_module, "IN_USE_TIMEOUT", 0.0)
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    provider.prepare()
    openstack_api.inject("delete_network", "in_use")
    with pytest.raises(ActionError, match=r"delete network: still in use .*run `provision down` again"):
        provider.teardown()
    provider.teardown()  # the re-run finishes it
    assert all(not v for v in openstack_api.ours().values()), openstack_api.ours()


def test_fixed_addresses_come_from_the_named_network(openstack_api, tmp_path):
    lab = openstack_api.add_network("lab-net", "192.168.50.0/24",
                                    allocation_pools=[{"start": "192.168.50.100", "end": "192.168.50.200"}])
    spec = os_spec(network="lab-net", subnet_cidr="192.168.50.0/24", external_network="public")
    logs = []
    provider = fast(OpenStackProvider(spec, tmp_path, log=logs.append))
    assert provider.preflight() == []
    hosts, running = up(provider, spec)
    assert not any("allocation pool" in line for line in logs), "its pool (from .100) keeps fixed addresses free"
    lab_subnet = ipaddress.ip_network("192.168.50.0/24")
    for host, record in zip(hosts, running):
        addresses = fixed_ips(openstack_api, record.provider_id)
        assert addresses and all(ipaddress.ip_address(a) in lab_subnet for a in addresses)
        if host.address:
            assert addresses == [host.address]
    assert any(h.address for h in hosts)
    down(fast(OpenStackProvider(spec, tmp_path)))
    assert lab["id"] in openstack_api.networks and len(lab["subnets"]) == 1, "down removed the user's network"
    left = openstack_api.ours()
    assert (left.pop("networks"), left.pop("subnets")) == (["lab-net"], ["lab-net-subnet"])
    assert all(not v for v in left.values()), left

    # The spec's CIDR outside the named network is refused before anything is made.
    wrong = os_spec(network="lab-net")
    problems = OpenStackProvider(wrong, tmp_path).preflight()
    assert problems and problems[0][0] == "provider.subnet_cidr" and "192.168.50.0/24" in problems[0][1]


def test_the_allocation_pool_keeps_fixed_addresses_free(openstack_api, tmp_path):
    spec = os_spec(workers=30, extra={"etcd": {"count": 3}}, masters=3)
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    fixed = {h.address for h in hosts if h.address}
    assert len(fixed) == 3
    workers = [h for h in hosts if h.role == "worker"]
    provider.create_hosts(workers, configs_for(workers))  # Neutron picks their addresses at random
    taken = {ip for s in openstack_api.servers.values() for ip in fixed_ips(openstack_api, s["id"])}
    assert not taken & fixed
    assert all(int(ipaddress.ip_address(a)) - int(ipaddress.ip_address("10.241.0.0")) >= FIXED_ADDRESSES
               for a in taken)
    masters = [h for h in hosts if h.role == "master"]
    provider.create_hosts(masters, configs_for(masters))  # the etcd members get their planned addresses
    assert {fixed_ips(openstack_api, server_named(openstack_api, h.name)["id"])[0] for h in masters} == fixed


def test_newest_of_images_with_one_name_and_a_stale_key_pair_replaced(openstack_api, tmp_path):
    openstack_api.add_image("img-newer", "flatcar-stable", "2026-06-01T00:00:00Z")
    openstack_api.add_image("img-older", "flatcar-stable", "2025-01-01T00:00:00Z")
    openstack_api.keypairs["provision-openstack-x"] = {}  # someone else's pair is left alone
    spec = os_spec(workers=0)
    name = f"provision-{spec.name}"
    openstack_api.keypairs[name] = {"name": name, "public_key": OTHER_KEY, "fingerprint": "old", "type": "ssh"}
    logs = []
    provider = fast(OpenStackProvider(spec, tmp_path, log=logs.append))
    up(provider, spec)
    assert {s["image"]["id"] for s in openstack_api.servers.values()} == {"img-newer"}
    assert any("3 images are named 'flatcar-stable'" in line for line in logs)
    assert openstack_api.keypairs[name]["public_key"] == SSH_KEY
    assert "provision-openstack-x" in openstack_api.keypairs


def test_availability_zones_spread_hosts_and_unknown_ones_are_refused(openstack_api, tmp_path):
    spec = os_spec(workers=3, availability_zones=["az-1", "az-2"])
    provider = fast(OpenStackProvider(spec, tmp_path))
    assert provider.preflight() == []
    hosts, _ = up(provider, spec)
    zones = {s["name"]: s["OS-EXT-AZ:availability_zone"] for s in openstack_api.servers.values()}
    assert zones == {h.name: ("az-1", "az-2")[h.index % 2] for h in hosts}
    problems = OpenStackProvider(os_spec(availability_zones=["az-9"]), tmp_path).preflight()
    assert problems == [("provider.availability_zones", "no available zone 'az-9' in this cloud "
                                                        "(zones: az-1, az-2, nova)")]


def test_external_network_must_exist_and_be_external(openstack_api, tmp_path):
    openstack_api.add_network("inside", "192.168.60.0/24")
    assert OpenStackProvider(os_spec(external_network="nowhere"), tmp_path).preflight() == [
        ("provider.external_network", "no network 'nowhere' in this cloud")]
    assert OpenStackProvider(os_spec(external_network="inside"), tmp_path).preflight() == [
        ("provider.external_network", "network 'inside' is not external (router:external is false)")]


def test_a_subnet_too_small_for_the_pool_is_a_spec_error(tmp_path):
    problems = OpenStackProvider(os_spec(subnet_cidr="10.241.0.0/27"), tmp_path).check()
    assert problems and problems[0][0] == "provider.subnet_cidr" and "too small" in problems[0][1]


def test_nova_refuses_user_data_over_its_budget(openstack_api, tmp_path):
    """The stand-in holds Nova's line (65,535 characters of base64), so the budget is real."""
    spec = os_spec(workers=0)
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    big = {h.name: b"x" * 49200 for h in hosts}  # 65,600 characters once base64-encoded
    with pytest.raises(ActionError, match=r"create server .*user_data.*too long"):
        provider.create_hosts(hosts, big)
    assert openstack_api.servers == {}


def test_throttling_is_retried_by_keystoneauth(openstack_api, tmp_path):
    """429 answers are repeated by keystoneauth under openstacksdk's retry settings (the
    answer says nothing was made); the server is made once."""
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    openstack_api.inject("create_server", "throttle")
    openstack_api.inject("list_servers", "throttle")
    provider.create_hosts(hosts, configs_for(hosts))
    assert openstack_api.calls["create_server"] == len(hosts) + 1
    assert sorted(s["name"] for s in openstack_api.servers.values()) == sorted(h.name for h in hosts)


def test_the_connection_carries_openstacksdks_retry_settings(openstack_api, tmp_path, monkeypatch):
    provider = OpenStackProvider(os_spec(), tmp_path)
    for service in (provider.conn.compute, provider.conn.network, provider.conn.image):
        assert service.status_code_retries == 7, service.service_type
        assert service.retriable_status_codes == [429, 503]
        assert service.connect_retries == 0  # a lost answer is retried by a look first, not blindly
    # keystoneauth's own schedule doubles from 0.5 s; a fixed short delay keeps the test quick
    monkeypatch.setitem(openstack_mod.OPENSTACK_RETRIES, "status_code_retry_delay", 0.01)
    provider = OpenStackProvider(os_spec(), tmp_path)
    openstack_api.inject("list_servers", *["throttle"] * 8)
    with pytest.raises(ActionError, match="list servers: injected throttle"):
        provider.list_hosts()
    assert openstack_api.calls["list_servers"] == 8  # the first try and keystoneauth's 7 retries


def test_unknown_cloud_and_missing_image_are_user_errors(openstack_api, tmp_path):
    with pytest.raises(UserError, match=r"provider.cloud: .*nosuchcloud"):
        OpenStackProvider(os_spec(cloud="nosuchcloud"), tmp_path).list_hosts()
    spec = os_spec(image="no-such-image")
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    with pytest.raises(UserError, match=r"provider.image: no image 'no-such-image'"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert all(not v for v in openstack_api.ours().values()), "a spec naming a missing image created something"


def test_refused_request_stops_with_the_cloud_message(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    openstack_api.inject("create_server", "fail")
    with pytest.raises(ActionError, match=r"openstack create server .*injected failure"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert openstack_api.calls["create_server"] == 1


def test_neutron_errors_come_in_neutrons_shape(openstack_api, tmp_path):
    """The provider reads Neutron's message out of its own error shape."""
    spec = os_spec(network="lab-net", subnet_cidr="192.168.70.0/24")
    openstack_api.add_network("lab-net", "192.168.70.0/24")
    provider = fast(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    etcd = next(h for h in hosts if h.address)
    squatter = openstack_api._make_port({"network_id": next(n["id"] for n in openstack_api.networks.values()
                                                            if n["name"] == "lab-net"),
                                         "fixed_ips": [{"ip_address": etcd.address}]})
    assert squatter["fixed_ips"][0]["ip_address"] == etcd.address
    with pytest.raises(ActionError, match=rf"IP address {etcd.address} already allocated"):
        provider.create_hosts([etcd], configs_for(hosts))


@pytest.mark.root
def test_a_master_config_near_novas_budget_falls_back_to_one_gzip_data_url(tmp_path):
    """A master config whose file-by-file gzip form no longer fits the budget is handed over as
    one gzip data URL that replaces the config: ignition-validate accepts it with no output and
    the real Ignition engine writes the master's files from it."""
    import json
    import subprocess

    from provision.providers.base import UserDataLimit
    from provision.render import compress_ignition, fit_user_data
    from tests.helpers_render import (SMALL_SPEC, apply_ignition, ignition_file, need_ignition_engine, render,
                                      served_artifacts, which_or_fail, write_spec)
    need_ignition_engine()
    validate = which_or_fail("ignition-validate")
    _, _, _, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                               served_artifacts("http://10.77.0.1:8080"))
    config = json.loads(rendered.files["small-masters-0.ign"])
    # Downloads would go to the (unreachable) mirror; the inline files are what is checked here.
    config["storage"]["files"] = [f for f in config["storage"]["files"] if f["contents"]["source"].startswith("data:")]
    master = json.dumps(config).encode()
    gzipped = compress_ignition(config)
    # Nova's budget as a master config nearing it sees it: file-by-file gzip no longer fits.
    budget = UserDataLimit(4 * ((len(gzipped) + 2) // 3) - 1, "base64")
    assert not budget.fits(gzipped)
    fitted = fit_user_data(master, budget)
    assert fitted.method == "embedded" and budget.fits(fitted.data)
    assert OpenStackProvider.user_data_limit.size_of(fitted.data) < 0.75 * OpenStackProvider.user_data_limit.size_of(gzipped)
    (tmp_path / "embedded.ign").write_bytes(fitted.data)
    proc = subprocess.run([validate, str(tmp_path / "embedded.ign")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    root, proc = apply_ignition(fitted.data, tmp_path / "engine")
    assert proc.returncode == 0, proc.stdout[-3000:]
    written = [f["path"] for f in config["storage"]["files"]]
    assert written and all((root / p.lstrip("/")).exists() for p in written)
    first = written[0]
    assert (root / first.lstrip("/")).read_bytes() == ignition_file(config, first)


def test_the_machines_phase_replaces_a_server_in_error_on_the_next_run(openstack_api, tmp_path):
    """Through `apply_plan` (what `up` runs): the first run records the hosts and stops with the
    fault; the next re-creates the failed host, keeps the others and gives every host the
    floating IP the first run never got to attach."""
    from provision.phases.machines import apply_plan

    from .test_machines import context, rendered_store
    spec = os_spec(workers=1, external_network="public")
    store = rendered_store(spec, tmp_path)
    master = f"{spec.name}-masters-0"
    openstack_api.fail_boot(f"^{master}$")
    ctx = context(spec, store)
    with pytest.raises(ActionError, match=rf"{master} failed to boot: No valid host was found"):
        apply_plan(ctx, plan(spec, ctx.state), provider=fast(OpenStackProvider(spec, tmp_path)))
    first = store.read()
    assert master in first["hosts"], "hosts are recorded before the wait"
    old_id = first["hosts"][master]["provider_id"]

    ctx = context(spec, store)
    result = apply_plan(ctx, plan(spec, ctx.state), provider=fast(OpenStackProvider(spec, tmp_path)))
    assert result["recreated"] == [master] and result["created"] == []
    state = store.read()
    assert state["hosts"][master]["provider_id"] != old_id and state["hosts"][master]["state"] == "running"
    assert old_id not in openstack_api.servers
    assert sorted(s["name"] for s in openstack_api.servers.values()) == sorted(state["hosts"])
    fips = {f["floating_ip_address"] for f in openstack_api.floating_ips.values()}
    assert len(fips) == len(state["hosts"])
    assert {h["ssh_address"] for h in state["hosts"].values()} == fips, "state still points at fixed addresses"


def test_host_gw_ports_carry_the_pod_network_as_an_allowed_address_pair(openstack_api, tmp_path):
    spec = os_spec(extra={"network": {"flannel": {"backend": "host-gw"}}})
    _, running = up(fast(OpenStackProvider(spec, tmp_path)), spec)
    for record in running:
        (port,) = [p for p in openstack_api.ports.values() if p["device_id"] == record.provider_id]
        assert port["allowed_address_pairs"] == [{"ip_address": spec.network.pod_cidr}]


def test_destroying_hosts_releases_their_floating_ips_only(openstack_api, tmp_path):
    spec = os_spec(workers=2, external_network="public")
    hosts, running = up(fast(OpenStackProvider(spec, tmp_path)), spec)
    gone = hosts[-1].name
    fast(OpenStackProvider(spec, tmp_path)).destroy_hosts([gone])
    left = {t.split("=", 1)[1] for f in openstack_api.floating_ips.values() for t in f["tags"]
            if t.startswith("provision:host=")}
    assert left == {h.name for h in hosts} - {gone}


def test_the_instance_quota_stops_with_novas_message(openstack_api, tmp_path):
    openstack_api.instance_quota = 2
    spec = os_spec(workers=2)
    hosts = plan(spec, {}).create
    with pytest.raises(ActionError, match=r"Quota exceeded for instances: Requested 1, but already used 2 of 2"):
        fast(OpenStackProvider(spec, tmp_path)).create_hosts(hosts, configs_for(hosts))
    assert len(openstack_api.servers) == 2


@pytest.mark.parametrize("call, status, message", [
    (lambda c, net: c.compute.create_server(name="x", image_id="img-flatcar", flavor_id="fl-m1.small",
                                            networks=[{"uuid": net}], user_data="not base64!"),
     400, "User data needs to be valid base 64"),
    (lambda c, net: c.compute.create_server(name="x", image_id="img-flatcar", flavor_id="fl-m1.small",
                                            networks=[{"uuid": net}], key_name="nobody"),
     400, "Invalid key_name provided"),
    (lambda c, net: c.compute.create_server(name="x", image_id="img-flatcar", flavor_id="fl-m1.small",
                                            networks=[{"uuid": net, "fixed_ip": "10.9.9.9"}]),
     400, "not a valid IP for any of the subnets"),
    (lambda c, net: c.compute.create_server_group(name="g", policy="spread-please"),
     400, "'spread-please' is not one of"),
    (lambda c, net: c.compute.create_keypair(name="k", public_key="ssh-ed25519 AAAA a\nssh-ed25519 BBBB b"),
     400, "Keypair data is invalid"),
    (lambda c, net: c.network.create_subnet(network_id=net, cidr="10.50.0.0/24", ip_version=4,
                                            allocation_pools=[{"start": "10.50.1.1", "end": "10.50.1.9"}]),
     400, "spans beyond the subnet cidr"),
])
def test_the_stand_in_refuses_what_nova_and_neutron_refuse(openstack_api, call, status, message):
    """Driven by the real openstacksdk: each refusal comes in its service's shape, and the SDK
    reads the message out of it."""
    import openstack
    from openstack import exceptions as os_exc
    conn = openstack.connect(cloud="testcloud")
    lab = openstack_api.add_network("lab-net", "192.168.80.0/24")
    with pytest.raises(os_exc.HttpException) as caught:
        call(conn, lab["id"])
    assert caught.value.status_code == status and message in str(caught.value.details)
    body = caught.value.response.json()
    if "/network/" in caught.value.response.url:
        assert set(body["NeutronError"]) == {"type", "message", "detail"}
    else:
        (shape,) = body.values()
        assert shape["code"] == status and set(shape) == {"code", "message"}
    assert openstack_api.servers == {}


def test_up_refuses_a_subnet_outside_the_named_network_before_creating_anything(openstack_api, tmp_path, cli):
    import yaml
    openstack_api.add_network("lab-net", "192.168.90.0/24")
    path = tmp_path / "os.yaml"
    path.write_text(yaml.safe_dump({
        "name": "named", "provider": {"name": "openstack", "cloud": "testcloud", "network": "lab-net"},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "pools": [{"name": "masters", "role": "master", "count": 1}]}))
    result = cli("up", path, "--yes", "--state-dir", tmp_path / "state")
    assert result.code == 2, result.err
    assert "provider.subnet_cidr: 10.241.0.0/24 is not inside a subnet of network 'lab-net' (its subnets: " \
           "192.168.90.0/24)" in result.err
    assert not (tmp_path / "state").exists()
    assert openstack_api.requests == [], "something was created"


def test_a_named_network_whose_pool_covers_fixed_addresses_is_pointed_out(openstack_api, tmp_path):
    openstack_api.add_network("flat-net", "192.168.51.0/24")  # Neutron's default pool: .2 to .254
    logs = []
    spec = os_spec(network="flat-net", subnet_cidr="192.168.51.0/24")
    fast(OpenStackProvider(spec, tmp_path, log=logs.append)).prepare()
    assert any("allocation pool 192.168.51.2-192.168.51.254 covers the fixed addresses" in line
               and "192.168.51.32" in line for line in logs), logs


def test_rules_follow_a_changed_flannel_backend(openstack_api, tmp_path):
    vxlan = os_spec(extra={"name": "flip"})
    fast(OpenStackProvider(vxlan, tmp_path)).prepare()
    udp = os_spec(extra={"name": "flip", "network": {"flannel": {"backend": "udp"}}})
    fast(OpenStackProvider(udp, tmp_path)).prepare()
    udp_ports = {r["port_range_min"] for r in openstack_api.rules.values()
                 if r["direction"] == "ingress" and r["protocol"] == "udp"}
    assert udp_ports == {8285}
    assert openstack_api.unknown == []


def test_a_named_network_already_routed_outside_gets_no_router_of_ours(openstack_api, tmp_path):
    lab = openstack_api.add_network("routed-net", "192.168.52.0/24")
    gateway = {"network_id": openstack_api.public["id"]}
    theirs = openstack_api._create_router({}, {"router": {"name": "their-router",
                                                          "external_gateway_info": gateway}})[1]["router"]
    openstack_api._add_interface({}, {"subnet_id": lab["subnets"][0]}, theirs["id"])
    spec = os_spec(network="routed-net", subnet_cidr="192.168.52.0/24", external_network="public", workers=1)
    _, running = up(fast(OpenStackProvider(spec, tmp_path)), spec)
    assert [r["name"] for r in openstack_api.routers.values()] == ["their-router"]
    assert all(r.public_address for r in running), "floating IPs go through their router"
    down(fast(OpenStackProvider(spec, tmp_path)))
    assert [r["name"] for r in openstack_api.routers.values()] == ["their-router"]
    assert openstack_api.floating_ips == {}


# ---- the API endpoint: an Octavia load balancer ---------------------------------------------

def test_octavia_load_balancer_holds_every_master_is_made_once_and_removed(openstack_api, tmp_path):
    """Through the real openstacksdk `load_balancer` proxy against the stand-in's Octavia
    (shaped like the Octavia v2 API reference, refusing changes while not ACTIVE): a load
    balancer on the cluster's subnet, TCP 6443 listener, TCP pool with a TCP health monitor, each
    master a member on 6443; with an external network its VIP gets a floating IP, which is the
    endpoint; a second run makes nothing; status finds it; down removes all of it."""
    openstack_api.octavia = True
    spec = os_spec(masters=3, external_network="public",
                   extra={"etcd": {"count": 3}})
    provider = fast(OpenStackProvider(spec, tmp_path))
    assert provider.api_load_balancer
    endpoint = provider.ensure_api_endpoint()
    [lb] = openstack_api.load_balancers.values()
    assert lb["name"] == f"provision-{spec.name}-api" and provider.cluster_tag in lb["tags"]
    assert lb["vip_subnet_id"] == provider.shared()["subnet"].subnet_id
    [fip] = [f for f in openstack_api.floating_ips.values() if f["port_id"] == lb["vip_port_id"]]
    assert endpoint == {"kind": "openstack-octavia", "dns_name": fip["floating_ip_address"],
                        "load_balancer": lb["id"], "vip_address": lb["vip_address"]}
    [listener] = openstack_api.listeners.values()
    assert (listener["protocol"], listener["protocol_port"]) == ("TCP", 6443)
    [pool] = openstack_api.pools.values()
    assert pool["protocol"] == "TCP" and listener["default_pool_id"] == pool["id"]
    [monitor] = openstack_api.health_monitors.values()
    assert monitor["type"] == "TCP" and monitor["pools"] == [{"id": pool["id"]}]

    hosts, records = up(provider, spec)
    masters = [h for h in hosts if h.role == "master"]
    members = {(m["address"], m["protocol_port"]) for m in openstack_api.members.values()}
    assert members == {(h.address, 6443) for h in masters} and len(members) == 3
    assert all(m["subnet_id"] == lb["vip_subnet_id"] for m in openstack_api.members.values())

    again = fast(OpenStackProvider(spec, tmp_path))
    made = [op for op, _, _ in openstack_api.requests]
    assert again.ensure_api_endpoint() == endpoint
    again.create_hosts(hosts, configs_for(hosts))
    after = [op for op, _, _ in openstack_api.requests]
    for creating in ("create_load_balancer", "create_listener", "create_pool", "create_health_monitor",
                     "create_member", "create_floating_ip"):
        assert after.count(creating) == made.count(creating), creating
    assert made.count("create_load_balancer") == 1 and made.count("create_member") == 3
    assert fast(OpenStackProvider(spec, tmp_path)).find_api_endpoint() == endpoint

    down(again)
    assert openstack_api.load_balancers == {} and openstack_api.listeners == {} and openstack_api.members == {}
    assert openstack_api.floating_ips == {} or all(f["project_id"] != "p1" for f in openstack_api.floating_ips.values())
    assert fast(OpenStackProvider(spec, tmp_path)).find_api_endpoint() is None
    down(fast(OpenStackProvider(spec, tmp_path)))  # a second down finds nothing and does not fail


def test_a_master_that_goes_leaves_the_octavia_pool_first(openstack_api, tmp_path):
    """Scale down, replacement and `down` of a host all destroy through `destroy_hosts`: the
    masters it destroys leave the pool (Octavia's DELETE member, each change waiting for ACTIVE)
    before their servers go, so no member is left pointing at an address nobody serves; a
    worker's going touches no member; a repeat deletes nothing; a replacement comes back in."""
    openstack_api.octavia = True
    spec = os_spec(masters=3, workers=1, extra={"etcd": {"count": 3}})
    provider = fast(OpenStackProvider(spec, tmp_path))
    provider.ensure_api_endpoint()
    hosts, _ = up(provider, spec)
    masters = sorted((h for h in hosts if h.role == "master"), key=lambda h: h.name)
    worker = next(h for h in hosts if h.role == "worker")

    def members():
        return sorted((m["name"], m["address"]) for m in openstack_api.members.values())

    def deletes():
        return [path for op, path, _ in openstack_api.requests if op == "delete_member"]

    assert members() == [(h.name, h.address) for h in masters]
    going = [h.name for h in masters[1:]]
    provider.destroy_hosts(going)
    assert members() == [(masters[0].name, masters[0].address)]
    assert len(deletes()) == 2
    ops = [op for op, _, _ in openstack_api.requests]
    assert max(i for i, op in enumerate(ops) if op == "delete_member") < ops.index("delete_server")

    again = fast(OpenStackProvider(spec, tmp_path))
    again.destroy_hosts(going + [worker.name])  # the masters are gone already; a worker is no member
    assert len(deletes()) == 2 and members() == [(masters[0].name, masters[0].address)]
    again._wait_gone()
    replaced = [h for h in hosts if h.name in going]
    again.create_hosts(replaced, configs_for(replaced))
    assert members() == [(h.name, h.address) for h in masters]
    down(again)


def test_a_cloud_without_octavia_gets_the_node_local_proxy(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast(OpenStackProvider(spec, tmp_path))
    assert provider.ensure_api_endpoint() is None and provider.find_api_endpoint() is None
    assert not any(op == "create_load_balancer" for op, _, _ in openstack_api.requests)
    off = os_spec(load_balancer=False)
    openstack_api.octavia = True
    assert not OpenStackProvider(off, tmp_path).api_load_balancer
    assert fast(OpenStackProvider(off, tmp_path)).ensure_api_endpoint() is None
    assert openstack_api.load_balancers == {}


def test_up_puts_the_octavia_endpoint_in_the_certificate_and_the_worker_configs(openstack_api, tmp_path, cli):
    """`up --until render` against the stand-in with Octavia: the endpoint phase makes the load
    balancer before the PKI, the API server certificate carries its floating IP, and workers'
    kubeconfigs point at it instead of the node-local proxy."""
    import json

    import yaml
    from cryptography import x509

    from provision.spec import load_spec
    from provision.state import open_store
    from tests.helpers_render import ignition_file
    openstack_api.octavia = True
    path = tmp_path / "os.yaml"
    path.write_text(yaml.safe_dump({
        "name": "octa", "provider": {"name": "openstack", "cloud": "testcloud", "external_network": "public"},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 3}, "fleet": {"enabled": False},
        "pools": [{"name": "masters", "role": "master", "count": 3}, {"name": "workers", "role": "worker", "count": 1}]}))
    state_dir = tmp_path / "state"
    result = cli("up", path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert result.code == 0, result.err
    store = open_store(load_spec(path), state_dir)
    endpoint = store.read()["api_endpoint"]
    [lb] = openstack_api.load_balancers.values()
    [fip] = [f for f in openstack_api.floating_ips.values() if f["port_id"] == lb["vip_port_id"]]
    assert endpoint["kind"] == "openstack-octavia" and endpoint["dns_name"] == fip["floating_ip_address"]
    cert = x509.load_pem_x509_certificate(store.read_blob("pki/apiserver.crt"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert fip["floating_ip_address"] in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    worker = json.loads(store.read_blob("rendered/pool-workers.ign"))
    first = json.loads(store.read_blob("rendered/octa-masters-0.ign"))
    # kube-proxy (a DaemonSet) reads its kubeconfig from a ConfigMap; the bootstrap kubeconfig goes over SSH
    configmap = yaml.safe_load(ignition_file(first, "/etc/kubernetes/addons/kube-proxy-configmap.yaml"))
    conf = yaml.safe_load(configmap["data"]["kubeconfig.conf"])
    assert conf["clusters"][0]["cluster"]["server"] == f"https://{fip['floating_ip_address']}:6443"
    assert not any(f["path"].startswith("/etc/provision/api-proxy") for f in worker["storage"]["files"])
    again = cli("up", path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert again.code == 0, again.err
    assert [op for op, _, _ in openstack_api.requests].count("create_load_balancer") == 1
