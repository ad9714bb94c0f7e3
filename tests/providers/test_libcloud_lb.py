"""The libcloud provider's API endpoint: libcloud's ELB (classic) driver beside its EC2 compute
driver, both against moto's HTTP server; what exists is read back through boto3's `elb` client."""
from __future__ import annotations

import collections
import json

import boto3
import yaml

from provision.plan import plan
from provision.providers.libcloud_driver import LibcloudProvider
from provision.providers.libcloud_lb import LB_DRIVERS, balancer_name

from .conftest import MOTO_AMI, SSH_KEY, configs_for, do_spec, fast_backoff, make_spec

EC2_OPTIONS = {"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI, "size": "t2.micro"}


def elb_client():
    return boto3.client("elb", region_name="us-east-1")


def test_elb_holds_every_master_is_made_once_and_removed(libcloud_ec2_env, tmp_path):
    proxy = libcloud_ec2_env
    spec = make_spec(EC2_OPTIONS, masters=3, workers=2)
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    assert provider.api_load_balancer
    endpoint = provider.ensure_api_endpoint()
    hosts = plan(spec, {}).desired
    records = provider.create_hosts(hosts, configs_for(hosts))

    [lb] = elb_client().describe_load_balancers(LoadBalancerNames=[balancer_name(spec.name)])["LoadBalancerDescriptions"]
    assert endpoint == {"kind": "libcloud-elb", "dns_name": lb["DNSName"], "load_balancer": lb["LoadBalancerName"]}
    [listener] = [d["Listener"] for d in lb["ListenerDescriptions"]]
    assert (listener["Protocol"], listener["LoadBalancerPort"], listener["InstancePort"]) == ("TCP", 6443, 6443)
    assert lb["HealthCheck"]["Target"] == "TCP:6443"
    tags = {t["Key"]: t["Value"] for t in elb_client().describe_tags(
        LoadBalancerNames=[lb["LoadBalancerName"]])["TagDescriptions"][0]["Tags"]}
    assert tags["provision:cluster"] == spec.name
    masters = {r.provider_id for r in records if r.role == "master"}
    assert len(masters) == 3 and {i["InstanceId"] for i in lb["Instances"]} == masters

    calls = collections.Counter(proxy.calls)
    again = fast_backoff(LibcloudProvider(spec, tmp_path))
    assert again.find_api_endpoint() == endpoint
    assert again.ensure_api_endpoint() == endpoint
    again.create_hosts(hosts, configs_for(hosts))
    assert proxy.calls["CreateLoadBalancer"] == calls["CreateLoadBalancer"] == 1
    assert proxy.calls["RunInstances"] == calls["RunInstances"]
    assert proxy.calls["RegisterInstancesWithLoadBalancer"] == calls["RegisterInstancesWithLoadBalancer"] == 3

    again.destroy_hosts([h.name for h in hosts])
    again.teardown()
    assert elb_client().describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert again.find_api_endpoint() is None
    again.teardown()  # a second down finds nothing and does not fail


def test_a_master_that_goes_is_detached_from_the_elb_first(libcloud_ec2_env, tmp_path):
    """Scale down, replacement and `down` of a host all destroy through `destroy_hosts`: the
    masters it destroys are deregistered from the ELB (libcloud's balancer_detach_member) before
    their instances terminate; a worker's going touches no member; a repeat detaches nothing; a
    replacement is registered again."""
    proxy = libcloud_ec2_env
    spec = make_spec(EC2_OPTIONS, masters=3, workers=1)
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    provider.ensure_api_endpoint()
    hosts = plan(spec, {}).desired
    records = {r.name: r.provider_id for r in provider.create_hosts(hosts, configs_for(hosts))}
    masters = sorted(h.name for h in hosts if h.role == "master")
    worker = next(h.name for h in hosts if h.role == "worker")

    def members():
        [lb] = elb_client().describe_load_balancers(
            LoadBalancerNames=[balancer_name(spec.name)])["LoadBalancerDescriptions"]
        return sorted(i["InstanceId"] for i in lb["Instances"])

    assert members() == sorted(records[m] for m in masters)
    provider.destroy_hosts(masters[1:])
    assert members() == [records[masters[0]]]
    assert proxy.calls["DeregisterInstancesFromLoadBalancer"] == 2

    again = fast_backoff(LibcloudProvider(spec, tmp_path))
    again.destroy_hosts(masters[1:] + [worker])  # the masters are off already; a worker is no member
    assert proxy.calls["DeregisterInstancesFromLoadBalancer"] == 2 and members() == [records[masters[0]]]
    replaced = [h for h in hosts if h.name in masters[1:]]
    made = {r.name: r.provider_id for r in again.create_hosts(replaced, configs_for(replaced))}
    assert members() == sorted([records[masters[0]]] + list(made.values()))
    again.destroy_hosts([h.name for h in hosts])
    again.teardown()


def test_a_balancer_named_like_ours_but_not_tagged_ours_is_left_alone(libcloud_ec2_env, tmp_path):
    spec = make_spec(EC2_OPTIONS, workers=0)
    elb_client().create_load_balancer(
        LoadBalancerName=balancer_name(spec.name), AvailabilityZones=["us-east-1a"],
        Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 6443, "InstancePort": 6443}])
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    assert provider.find_api_endpoint() is None
    provider.teardown()
    assert len(elb_client().describe_load_balancers()["LoadBalancerDescriptions"]) == 1


def test_no_load_balancer_where_libcloud_has_no_driver_or_it_is_turned_off(libcloud_ec2_env, tmp_path):
    assert "digitalocean" not in LB_DRIVERS and LB_DRIVERS["ec2"] == "elb"
    assert not LibcloudProvider(do_spec(), tmp_path).api_load_balancer
    off = make_spec({**EC2_OPTIONS, "load_balancer": False}, workers=0)
    provider = fast_backoff(LibcloudProvider(off, tmp_path))
    assert not provider.api_load_balancer
    assert provider.ensure_api_endpoint() is None and provider.find_api_endpoint() is None
    assert libcloud_ec2_env.calls["CreateLoadBalancer"] == 0


def test_up_puts_the_elb_in_the_certificate_and_the_worker_configs(libcloud_ec2_env, tmp_path, cli):
    """`up --until render`: the endpoint phase makes the ELB before the PKI, the API server
    certificate carries its DNS name and workers' kubeconfigs point at it (no node-local proxy);
    a second run creates nothing."""
    from cryptography import x509

    from provision.spec import load_spec
    from provision.state import open_store
    from tests.helpers_render import ignition_file
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lcelb", "provider": EC2_OPTIONS, "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "fleet": {"enabled": False},
        "pools": [{"name": "masters", "role": "master", "count": 1}, {"name": "workers", "role": "worker", "count": 1}]}))
    state_dir = tmp_path / "state"
    result = cli("up", path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert result.code == 0, result.err
    store = open_store(load_spec(path), state_dir)
    endpoint = store.read()["api_endpoint"]
    [lb] = elb_client().describe_load_balancers()["LoadBalancerDescriptions"]
    assert endpoint["kind"] == "libcloud-elb" and endpoint["dns_name"] == lb["DNSName"]
    cert = x509.load_pem_x509_certificate(store.read_blob("pki/apiserver.crt"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert lb["DNSName"] in sans.get_values_for_type(x509.DNSName)
    worker = json.loads(store.read_blob("rendered/pool-workers.ign"))
    # kube-proxy is a DaemonSet reading a ConfigMap (an addon a master's config carries)
    from provision.plan import plan
    master = next(h.name for h in plan(load_spec(path), store.read()).desired if h.role == "master")
    configmap = yaml.safe_load(ignition_file(json.loads(store.read_blob(f"rendered/{master}.ign")),
                                             "/etc/kubernetes/addons/kube-proxy-configmap.yaml"))
    conf = yaml.safe_load(configmap["data"]["kubeconfig.conf"])
    assert conf["clusters"][0]["cluster"]["server"] == f"https://{lb['DNSName']}:6443"
    assert not any(f["path"].startswith("/etc/provision/api-proxy") for f in worker["storage"]["files"])
    again = cli("up", path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert again.code == 0, again.err
    assert libcloud_ec2_env.calls["CreateLoadBalancer"] == 1
