"""The aws provider against moto's EC2 server over HTTP, driven by real boto3 (through a
counting, fault-injecting proxy)."""
from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import urllib.error
import urllib.request

import boto3
import pytest

from provision.errors import ActionError, UserError
from provision.plan import plan
from provision.providers import get_provider
from provision.spec import parse_spec
from provision.providers.aws import FLATCAR_OWNER, AWSProvider, compress_indices, expand_indices

from .conftest import MOTO_AMI, configs_for, fast_backoff, make_spec


def ec2():
    return boto3.client("ec2", region_name="us-east-1")


def aws_spec(**kwargs):
    options = {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}
    options.update(kwargs.pop("options", {}))
    return make_spec(options, **kwargs)


def run_instances_calls(proxy):
    """(pool, subnet, count, tag keys) for each RunInstances that reached the proxy."""
    out = []
    for action, query in proxy.log:
        if action != "RunInstances":
            continue
        tags = {}
        for key, value in query.items():
            if key.startswith("TagSpecification.1.Tag.") and key.endswith(".Key"):
                tags[value[0]] = query[key[:-4] + ".Value"][0]
        out.append((tags.get("provision:pool"), query.get("NetworkInterface.1.SubnetId", [None])[0],
                    int(query["MaxCount"][0]), tags, query))
    return out


def test_hundred_workers_in_one_run_instances_call_per_pool_and_subnet(ec2_proxy):
    spec = aws_spec(workers=100)
    provider = fast_backoff(AWSProvider(spec))
    hosts = plan(spec, {}).create
    records = provider.create_hosts(hosts, configs_for(hosts))
    assert len(records) == 101 and len({r.provider_id for r in records}) == 101
    # One mutating call per pool and batch: no per-host CreateTags for names.
    assert ec2_proxy.calls["CreateTags"] == 0

    calls = run_instances_calls(ec2_proxy)
    per_pool_subnet = collections.Counter((pool, subnet) for pool, subnet, *_ in calls)
    subnets = provider.network()["subnets"]  # one per zone: the pool is spread over three
    assert len(set(subnets)) == 3
    assert [per_pool_subnet[("workers", s)] for s in subnets] == [1, 1, 1]
    assert all(n == 1 for n in per_pool_subnet.values())
    workers_calls = sorted((c for c in calls if c[0] == "workers"), key=lambda c: subnets.index(c[1]))
    assert [c[2] for c in workers_calls] == [34, 33, 33]
    # Tags ride in the same call: cluster, pool, role and the batch's host indices.
    for slot, workers_call in enumerate(workers_calls):
        assert workers_call[3]["provision:cluster"] == spec.name and workers_call[3]["provision:role"] == "worker"
        assert expand_indices(workers_call[3]["provision:indices"]) == list(range(slot, 100, 3))
    # Waiting is one filtered, paginated listing, not one call per host.
    ec2_proxy.reset_counts()
    provider.wait_running([h.name for h in hosts], timeout=30)
    assert ec2_proxy.calls["DescribeInstances"] == 1
    described = ec2_proxy.log[0][1]
    assert described["Filter.1.Name"] == ["tag:provision:cluster"]

    # No call per host: each name is found again from the cloud alone (batch indices tag plus
    # launch index).
    assert sorted(r.name for r in provider.list_hosts()) == sorted(h.name for h in hosts)


def test_user_data_and_fixed_address_reach_the_instance(ec2_proxy):
    spec = aws_spec(workers=2)
    provider = fast_backoff(AWSProvider(spec))
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    records = {r.name: r for r in provider.create_hosts(hosts, configs)}
    master = next(h for h in hosts if h.role == "master")
    assert master.address and records[master.name].private_address == master.address
    for host in hosts:
        attr = ec2().describe_instance_attribute(InstanceId=records[host.name].provider_id, Attribute="userData")
        assert base64.b64decode(attr["UserData"]["Value"]) == configs[host.name]


def test_throttling_is_retried_with_backoff(ec2_proxy):
    spec = aws_spec(workers=3)
    logs = []
    provider = fast_backoff(AWSProvider(spec, log=logs.append))
    hosts = plan(spec, {}).create
    provider.prepare()
    ec2_proxy.inject("RunInstances", "throttle", "throttle")
    ec2_proxy.inject("DescribeInstances", "throttle")
    records = provider.create_hosts(hosts, configs_for(hosts))
    assert sorted(r.name for r in records) == sorted(h.name for h in hosts)
    assert sum("throttled (RequestLimitExceeded)" in line for line in logs) >= 3
    ec2_proxy.reset_counts()
    ec2_proxy.inject("DescribeInstances", "throttle")  # a plain listing: botocore retries it
    live = provider.list_hosts()
    assert len(live) == len(hosts)
    assert ec2_proxy.calls["DescribeInstances"] == 2
    assert any("DescribeInstances: throttled (RequestLimitExceeded); botocore retries" in line for line in logs)


def test_other_errors_stop_with_a_clear_message(ec2_proxy):
    spec = aws_spec(workers=1)
    provider = fast_backoff(AWSProvider(spec))
    hosts = plan(spec, {}).create
    provider.prepare()
    ec2_proxy.reset_counts()
    ec2_proxy.inject("RunInstances", "fail:InvalidParameterValue")
    with pytest.raises(ActionError, match=r"aws RunInstances: InvalidParameterValue"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert ec2_proxy.calls["RunInstances"] == 1, "a non-retryable error was retried"


def test_retries_give_up_after_the_budget(ec2_proxy):
    provider = fast_backoff(AWSProvider(aws_spec()))
    ec2_proxy.inject("DescribeInstances", *["throttle"] * 10)
    with pytest.raises(ActionError, match="RequestLimitExceeded"):
        provider.list_hosts()
    assert ec2_proxy.calls["DescribeInstances"] == provider.max_attempts


def test_every_client_uses_botocores_adaptive_retry_mode(ec2_proxy):
    """Retries and pacing come from botocore: `adaptive` mode (standard retries plus its
    client-side token bucket) on the EC2, ELBv2 and S3 clients, with the provider's budget;
    the creating calls that look first are made once per try by botocore."""
    provider = AWSProvider(aws_spec())
    for client in (provider.ec2, provider.endpoint.elbv2, provider.configs.s3):
        retries = client.meta.config.retries
        assert retries["mode"] == "adaptive", client.meta.service_model.service_name
        assert retries["total_max_attempts"] == provider.max_attempts == 8
    provider._looking_first = True
    assert provider.ec2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 1}
    assert provider.ec2 is not provider._client


def test_the_s3_sts_and_elbv2_clients_come_from_the_providers_factory(ec2_proxy):
    """One way to make a client: the config server's S3 and STS clients and the load balancer's
    ELBv2 client are the provider's (its attempt budget, its retry log), not configs of their own."""
    provider = AWSProvider(aws_spec())
    provider.max_attempts = 3
    made: list[str] = []
    make = provider._make_client
    provider._make_client = lambda service, attempts, **kw: made.append(service) or make(service, attempts, **kw)
    s3 = provider.configs.s3
    assert s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert s3.meta.config.signature_version == "s3v4"
    assert provider.endpoint.elbv2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert provider.configs.bucket().startswith(f"provision-{provider.spec.name}-")  # GetCallerIdentity
    assert made == ["s3", "elbv2", "sts"]
    provider._looking_first = True  # a creating call looking first: one attempt per try, no fallback client
    assert provider.endpoint.elbv2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 1}


def test_shared_resources_are_tagged_and_reused(ec2_proxy):
    spec = aws_spec()
    first = AWSProvider(spec)
    first.prepare()
    again = AWSProvider(spec)
    again.prepare()
    assert first.network() == again.network()
    client = ec2()
    cluster = [{"Name": "tag:provision:cluster", "Values": [spec.name]}]
    assert len(client.describe_vpcs(Filters=cluster)["Vpcs"]) == 1
    subnets = client.describe_subnets(Filters=cluster)["Subnets"]  # one per zone, made once
    assert len(subnets) == 3 and len({s["AvailabilityZone"] for s in subnets}) == 3
    assert len(client.describe_key_pairs(Filters=cluster)["KeyPairs"]) == 1
    assert len(client.describe_internet_gateways(Filters=cluster)["InternetGateways"]) == 1
    group = client.describe_security_groups(GroupIds=[first.network()["security_group"]])["SecurityGroups"][0]
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["provision:cluster"] == spec.name
    assert len(client.describe_security_groups(Filters=cluster)["SecurityGroups"]) == 3

    first.teardown()
    assert client.describe_vpcs(Filters=cluster)["Vpcs"] == []
    assert client.describe_key_pairs(Filters=cluster)["KeyPairs"] == []
    first.teardown()  # a second down finds nothing and does not fail


def test_flatcar_ami_looked_up_by_channel(ec2_proxy, monkeypatch):
    monkeypatch.setenv("MOTO_ACCOUNT_ID", FLATCAR_OWNER)  # images owned by Flatcar's account
    client = ec2()
    instance = client.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    images = {name: client.create_image(InstanceId=instance, Name=name)["ImageId"]
              for name in ("Flatcar-stable-4000.0.0-hvm", "Flatcar-stable-4081.2.0-hvm", "Flatcar-beta-4116.1.0-hvm")}
    spec = make_spec({"name": "aws", "region": "us-east-1"})
    assert AWSProvider(spec).image() == images["Flatcar-stable-4081.2.0-hvm"]
    beta = make_spec({"name": "aws", "region": "us-east-1"}, os={"channel": "beta"})
    assert AWSProvider(beta).image() == images["Flatcar-beta-4116.1.0-hvm"]
    alpha = make_spec({"name": "aws", "region": "us-east-1"}, os={"channel": "alpha"})
    with pytest.raises(ActionError, match="no Flatcar alpha AMI.*set provider.ami"):
        AWSProvider(alpha).image()


def test_spec_problems_are_user_errors_naming_the_field():
    with pytest.raises(UserError, match=r"provider.ami: must be an AMI id"):
        get_provider(aws_spec(options={"ami": "flatcar"}))
    with pytest.raises(UserError, match=r"provider.ami: required with os.family fedora-coreos"):
        get_provider(make_spec({"name": "aws"}, os={"family": "fedora-coreos"}))
    with pytest.raises(UserError, match=r"provider.subnet_cidr: .* is not inside provider.vpc_cidr"):
        get_provider(aws_spec(options={"subnet_cidr": "10.9.0.0/24"}))
    # an IPv6 subnet in an IPv4 VPC is the same problem, not an internal error
    with pytest.raises(UserError, match=r"provider.subnet_cidr: fd00::/64 is not inside provider.vpc_cidr"):
        get_provider(aws_spec(options={"subnet_cidr": "fd00::/64"}))


def test_config_over_the_limit_is_served_from_s3_and_pinned(ec2_proxy, tmp_path):
    from provision.phases.machines import fit_config
    provider = AWSProvider(aws_spec())
    noise = base64.b64encode(os.urandom(30000)).decode()  # does not compress below 16 KB
    config = json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/etc/big", "contents": {"source": "data:;base64," + base64.b64encode(noise.encode()).decode()}}]}},
        sort_keys=True).encode()
    assert len(config) > 16384
    logs = []
    data = fit_config(provider, config, "big.ign", logs.append)
    assert len(data) <= 16384
    pointer = json.loads(data)["ignition"]["config"]["replace"]
    # The pre-signed URL serves the full config, and the sha512 pins exactly those bytes.
    with urllib.request.urlopen(pointer["source"]) as response:
        served = response.read()
    assert pointer["verification"]["hash"] == "sha512-" + hashlib.sha512(served).hexdigest()
    assert json.loads(served)["storage"]["files"][0]["path"] == "/etc/big"
    assert "pre-signed" not in " ".join(logs) and "?" not in " ".join(logs), "the URL's signature was logged"
    # The bucket is private.
    s3 = boto3.client("s3", region_name="us-east-1")
    block = s3.get_public_access_block(Bucket=provider.config_bucket())["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_indices_round_trip():
    for indices in ([0, 1, 2, 5, 7, 8], [3], list(range(1000)), [9, 4, 5, 6]):
        assert expand_indices(compress_indices(indices)) == indices
    assert len(compress_indices(list(range(1000)))) < 256


def test_api_load_balancer_holds_every_master_is_made_once_and_removed(ec2_proxy):
    """A Network Load Balancer on moto's elbv2: TCP 6443 listener, a target group with a TCP
    health check on 6443 holding every master; a second run creates nothing; down removes it."""
    spec = aws_spec(masters=3, workers=2)
    provider = fast_backoff(AWSProvider(spec))
    endpoint = provider.ensure_api_endpoint()
    assert endpoint["kind"] == "aws-nlb" and endpoint["dns_name"]
    hosts = plan(spec, {}).desired
    records = provider.create_hosts(hosts, configs_for(hosts))
    elb = boto3.client("elbv2", region_name="us-east-1")
    [lb] = elb.describe_load_balancers(Names=[provider.api_lb_name])["LoadBalancers"]
    assert lb["Type"] == "network" and lb["DNSName"] == endpoint["dns_name"]
    tags = {t["Key"]: t["Value"] for t in
            elb.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]}
    assert tags["provision:cluster"] == spec.name
    [listener] = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert listener["Port"] == 6443 and listener["Protocol"] == "TCP"
    [tg] = elb.describe_target_groups(Names=[provider.api_lb_name])["TargetGroups"]
    assert tg["Protocol"] == "TCP" and tg["Port"] == 6443
    assert tg["HealthCheckProtocol"] == "TCP" and str(tg["HealthCheckPort"]) == "6443"
    assert listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    targets = {t["Target"]["Id"] for t in elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
               ["TargetHealthDescriptions"]}
    masters = {r.provider_id for r in records if r.role == "master"}
    assert len(masters) == 3 and targets == masters
    # failure domains: a subnet per zone, the masters (carrying etcd) one per zone, the workers
    # across zones, and the load balancer in every zone's subnet
    subnets = provider.network()["subnets"]
    zone_of_subnet = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2().describe_subnets(SubnetIds=list(subnets))["Subnets"]}
    assert len(set(zone_of_subnet.values())) == 3
    master_zones = [r.extra["zone"] for r in records if r.role == "master"]
    assert sorted(master_zones) == sorted(zone_of_subnet.values())
    assert len({r.extra["zone"] for r in records if r.role == "worker"}) == 2
    assert {z["SubnetId"] for z in lb["AvailabilityZones"]} == set(subnets)

    assert fast_backoff(AWSProvider(spec)).find_api_endpoint()["dns_name"] == endpoint["dns_name"]
    calls = collections.Counter(a for a, _ in ec2_proxy.log)
    again = fast_backoff(AWSProvider(spec))
    assert again.ensure_api_endpoint() == endpoint
    again.create_hosts(hosts, configs_for(hosts))
    after = collections.Counter(a for a, _ in ec2_proxy.log)
    assert calls["CreateLoadBalancer"] == calls["CreateTargetGroup"] == calls["CreateListener"] == 1
    assert calls["CreateSubnet"] == 3
    for creating in ("CreateLoadBalancer", "CreateTargetGroup", "CreateListener", "RunInstances", "CreateSubnet"):
        assert after[creating] == calls[creating], creating
    assert after["RegisterTargets"] == calls["RegisterTargets"]  # every master is already a target

    again.destroy_hosts([h.name for h in hosts])
    again.teardown()
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert again.find_api_endpoint() is None
    assert not {s["SubnetId"] for s in ec2().describe_subnets()["Subnets"]} & set(subnets)
    again.teardown()  # a second down finds nothing and does not fail


def test_a_master_that_goes_leaves_the_nlb_target_group(ec2_proxy):
    """The AWS side of the promise the libcloud and OpenStack load balancers keep by detaching
    (`deregister_api_targets`): a terminated instance leaves its target group by itself (moto
    models it: the target drains), so `destroy_hosts` needs no call of its own."""
    spec = aws_spec(masters=3, workers=0)
    provider = fast_backoff(AWSProvider(spec))
    provider.ensure_api_endpoint()
    hosts = plan(spec, {}).desired
    ids = {r.name: r.provider_id for r in provider.create_hosts(hosts, configs_for(hosts))}
    elb = boto3.client("elbv2", region_name="us-east-1")
    [tg] = elb.describe_target_groups(Names=[provider.api_lb_name])["TargetGroups"]

    def targets():
        return {t["Target"]["Id"] for t in elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
                ["TargetHealthDescriptions"] if t["TargetHealth"]["State"] not in ("draining", "unused")}

    assert targets() == set(ids.values())
    going = sorted(ids)[-1]
    provider.destroy_hosts([going])
    assert targets() == {i for name, i in ids.items() if name != going}
    assert ec2_proxy.calls["DeregisterTargets"] == 0
    provider.destroy_hosts([h.name for h in hosts])
    assert targets() == set()
    provider.teardown()


def test_up_puts_the_load_balancer_in_the_certificate_and_the_worker_configs(ec2_proxy, tmp_path, cli):
    """`up` (phases endpoint, pki, render) against moto: the API certificate carries the load
    balancer's DNS name, workers' kubeconfigs point at it (no node-local proxy), a second run
    creates nothing, `down` removes it."""
    import yaml
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from provision.state import open_store
    from tests.helpers_render import ignition_file
    name = f"nlb{os.getpid() % 10000}"
    text = (f"name: {name}\nprovider:\n  name: aws\n  region: us-east-1\n  ami: {MOTO_AMI}\n"
            "ssh:\n  authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA a@b']\n"
            "etcd:\n  count: 3\npools:\n  - {name: masters, role: master, count: 3}\n"
            "  - {name: workers, role: worker, count: 2}\n"
            "artifacts:\n  hashes:\n    flanneld: sha512-" + "a" * 128 + "\n    fleetd: sha512-" + "b" * 128 + "\n")
    spec_path = tmp_path / "c.yaml"
    spec_path.write_text(text)
    state_dir = tmp_path / "state"
    first = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert first.code == 0, first.err
    from provision.spec import load_spec
    store = open_store(load_spec(spec_path), state_dir)
    endpoint = store.read()["api_endpoint"]
    dns = endpoint["dns_name"]
    [lb] = boto3.client("elbv2", region_name="us-east-1").describe_load_balancers(Names=[f"{name}-api"])["LoadBalancers"]
    assert lb["DNSName"] == dns
    cert = x509.load_pem_x509_certificate(store.read_blob("pki/apiserver.crt"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert dns in sans.get_values_for_type(x509.DNSName)
    worker = json.loads(store.read_blob("rendered/pool-workers.ign"))
    # the bootstrap kubeconfig (token) is what the secrets phase delivers over SSH, not in the config
    from provision.plan import plan
    from provision import pki_agents
    from provision.render import render_secrets
    state = store.read()
    desired = plan(load_spec(spec_path), state).desired
    worker_name = next(h.name for h in desired if h.role == "worker")
    pki_agents.ensure(load_spec(spec_path), store, [worker_name])  # as the secrets phase does first
    delivered = render_secrets(load_spec(spec_path), state, store, desired, [worker_name])[worker_name]
    first = json.loads(store.read_blob(f"rendered/{next(h.name for h in desired if h.role == 'master')}.ign"))
    kube_proxy = yaml.safe_load(ignition_file(first, "/etc/kubernetes/addons/kube-proxy-configmap.yaml"))
    for conf in (yaml.safe_load(delivered["/etc/kubernetes/bootstrap-kubeconfig"].data),
                 yaml.safe_load(kube_proxy["data"]["kubeconfig.conf"])):  # kube-proxy: a DaemonSet's ConfigMap
        assert conf["clusters"][0]["cluster"]["server"] == f"https://{dns}:6443"
    assert not any(f["path"].startswith("/etc/provision/api-proxy") for f in worker["storage"]["files"])

    before = collections.Counter(a for a, _ in ec2_proxy.log)
    second = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert second.code == 0, second.err
    after = collections.Counter(a for a, _ in ec2_proxy.log)
    assert before["CreateLoadBalancer"] == 1 and after["CreateLoadBalancer"] == 1
    assert store.read_blob("pki/apiserver.crt") == cert.public_bytes(Encoding.PEM)  # reused, not remade

    down = cli("down", spec_path, "--yes", "--state-dir", state_dir)
    assert down.code == 0, down.err
    assert boto3.client("elbv2", region_name="us-east-1").describe_load_balancers()["LoadBalancers"] == []


def test_status_finds_the_load_balancer_again_from_the_cloud(ec2_proxy, tmp_path):
    from provision.providers.local import LocalProvider
    from provision.status import api_endpoint_status
    spec = aws_spec()
    provider = fast_backoff(AWSProvider(spec))
    missing = api_endpoint_status(spec, {}, provider)
    assert missing["kind"] == "load balancer" and missing["found"] is False
    endpoint = provider.ensure_api_endpoint()
    found = api_endpoint_status(spec, {"api_endpoint": endpoint}, fast_backoff(AWSProvider(spec)))
    assert found["found"] and found["dns_name"] == found["recorded"] == endpoint["dns_name"]
    local_spec = make_spec({"name": "local", "subnet": "10.83.0.0/24"})
    local = api_endpoint_status(local_spec, {}, LocalProvider(local_spec, tmp_path))
    assert local == {"kind": "node-local proxy", "address": "127.0.0.1:6444", "found": True}
    provider.teardown()


# ---- trust boundaries (issue 10) ------------------------------------------------------------

def group_rules(network) -> dict[str, set[tuple]]:
    """{kind: {(proto, from, to, source)}} with group sources named by kind."""
    names = {network["security_group"]: "nodes", network["security_group_masters"]: "masters",
             network["security_group_etcd"]: "etcd"}
    out = {}
    for group_id, kind in names.items():
        group = ec2().describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        rules = set()
        for p in group["IpPermissions"]:
            for r in p.get("IpRanges", []):
                rules.add((p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"]))
            for g in p.get("UserIdGroupPairs", []):
                rules.add((p["IpProtocol"], p["FromPort"], p["ToPort"], names[g["GroupId"]]))
        out[kind] = rules
    return out


def admitted_ports(group, source_groups) -> set[int]:
    """The TCP ports of 2379/2380 that `group`'s ingress (as EC2 reports it) admits from a host in
    `source_groups`, by a group pair."""
    return {port for p in group["IpPermissions"] if p["IpProtocol"] == "tcp"
            for port in (2379, 2380) if p["FromPort"] <= port <= p["ToPort"]
            and any(g["GroupId"] in source_groups for g in p.get("UserIdGroupPairs", []))}


def test_security_groups_open_each_port_only_to_who_needs_it(ec2_proxy):
    spec = aws_spec(options={"api_cidrs": ["203.0.113.0/24"], "ssh_cidrs": ["198.51.100.7/32"]})
    provider = AWSProvider(spec)
    provider.prepare()
    rules = group_rules(provider.network())
    assert rules == {
        "nodes": {("tcp", 22, 22, "198.51.100.7/32"), ("tcp", 10250, 10250, "masters"), ("udp", 8472, 8472, "nodes")},
        "masters": {("tcp", 6443, 6443, "203.0.113.0/24"), ("tcp", 6443, 6443, spec.provider.options.vpc_cidr)},
        "etcd": {("tcp", 2379, 2379, "nodes"), ("tcp", 2380, 2380, "etcd")},
    }
    # hosts get the groups of their role: a worker is only in the nodes group, which etcd's client
    # port admits (its flanneld, fleetd and host agent read etcd) and its peer port does not
    hosts = plan(spec, {}).create
    records = {r.name: r for r in fast_backoff(provider).create_hosts(hosts, configs_for(hosts))}
    net = provider.network()
    for host in hosts:
        instance = ec2().describe_instances(InstanceIds=[records[host.name].provider_id])["Reservations"][0]["Instances"][0]
        groups = {g["GroupId"] for g in instance["SecurityGroups"]} | {
            g["GroupId"] for ni in instance.get("NetworkInterfaces", []) for g in ni.get("Groups", [])}
        if host.role == "master":
            assert groups == {net["security_group"], net["security_group_masters"], net["security_group_etcd"]}
        else:
            assert groups == {net["security_group"]}, host.name
            etcd = ec2().describe_security_groups(GroupIds=[net["security_group_etcd"]])["SecurityGroups"][0]
            assert admitted_ports(etcd, groups) == {2379}, host.name
    # a host made when one group served all (before the split) gets its role's groups back
    master = next(h for h in hosts if h.role == "master")
    ec2().modify_instance_attribute(InstanceId=records[master.name].provider_id, Groups=[net["security_group"]])
    fast_backoff(AWSProvider(spec)).create_hosts(hosts, configs_for(hosts))
    instance = ec2().describe_instances(InstanceIds=[records[master.name].provider_id])["Reservations"][0]["Instances"][0]
    assert {g["GroupId"] for g in instance["SecurityGroups"]} == {
        net["security_group"], net["security_group_masters"], net["security_group_etcd"]}
    # a cluster made when etcd's group admitted 2379-2380 from members and 2379 from masters only
    # (workers cut off from etcd) gets the rules above on the next prepare
    etcd_group = net["security_group_etcd"]
    ec2().revoke_security_group_ingress(GroupId=etcd_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 2379, "ToPort": 2379, "UserIdGroupPairs": [{"GroupId": net["security_group"]}]},
        {"IpProtocol": "tcp", "FromPort": 2380, "ToPort": 2380, "UserIdGroupPairs": [{"GroupId": etcd_group}]}])
    ec2().authorize_security_group_ingress(GroupId=etcd_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 2379, "ToPort": 2380, "UserIdGroupPairs": [{"GroupId": etcd_group}]},
        {"IpProtocol": "tcp", "FromPort": 2379, "ToPort": 2379, "UserIdGroupPairs": [{"GroupId": net["security_group_masters"]}]}])
    AWSProvider(spec).prepare()
    assert group_rules(net)["etcd"] == {("tcp", 2379, 2379, "nodes"), ("tcp", 2380, 2380, "etcd")}
    # narrowing ssh_cidrs revokes the old rule; the defaults are anywhere
    narrowed = parse_spec({**spec_data(spec), "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI,
                                                           "ssh_cidrs": ["192.0.2.0/24"]}})
    again = AWSProvider(narrowed)
    again.prepare()
    rules = group_rules(again.network())
    assert {r for r in rules["nodes"] if r[1] == 22} == {("tcp", 22, 22, "192.0.2.0/24")}
    assert ("tcp", 6443, 6443, "0.0.0.0/0") in rules["masters"]
    provider.destroy_hosts(list(records))
    provider.teardown()
    assert ec2().describe_vpcs(Filters=[{"Name": "tag:provision:cluster", "Values": [spec.name]}])["Vpcs"] == []


def spec_data(spec) -> dict:
    return {"name": spec.name, "ssh": {"authorized_keys": list(spec.ssh.authorized_keys)}, "etcd": {"count": 1},
            "pools": [{"name": p.name, "role": p.role, "count": p.count} for p in spec.pools]}


def test_the_nodes_group_admits_the_overlay_port_of_flannels_backend(ec2_proxy):
    """flannel's udp backend talks on 8285, not vxlan's 8472: the group made on EC2 opens the
    backend's port between nodes, and nothing for vxlan."""
    spec = aws_spec(workers=1, network={"flannel": {"backend": "udp"}})
    provider = AWSProvider(spec)
    provider.prepare()
    try:
        overlay = {r for r in group_rules(provider.network())["nodes"] if r[0] == "udp"}
        assert overlay == {("udp", 8285, 8285, "nodes")}
    finally:
        provider.teardown()


def test_dedicated_etcd_hosts_get_the_etcd_group_and_masters_do_not(ec2_proxy):
    spec = parse_spec({**spec_data(aws_spec()), "etcd": {"count": 1, "placement": "dedicated"},
                       "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI},
                       "pools": [{"name": "masters", "role": "master", "count": 1},
                                 {"name": "etcd", "role": "etcd", "count": 1}]})
    provider = AWSProvider(spec)
    net = provider.network()
    assert provider.security_groups_for("etcd", net) == [net["security_group"], net["security_group_etcd"]]
    assert provider.security_groups_for("master", net) == [net["security_group"], net["security_group_masters"]]
    assert provider.security_groups_for("worker", net) == [net["security_group"]]


def test_every_instance_requires_imdsv2_with_hop_limit_one(ec2_proxy):
    spec = aws_spec(workers=3)
    provider = fast_backoff(AWSProvider(spec))
    hosts = plan(spec, {}).create
    records = provider.create_hosts(hosts, configs_for(hosts))
    ids = [r.provider_id for r in records]
    instances = [i for r in ec2().describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    assert len(instances) == len(hosts) == 4
    for instance in instances:
        options = instance["MetadataOptions"]
        assert options["HttpTokens"] == "required" and options["HttpPutResponseHopLimit"] == 1, options


def test_config_url_is_regional_and_short_lived(moto_server, monkeypatch):
    """No custom S3 endpoint: the URL names the bucket's regional endpoint (the global one
    redirects new buckets outside us-east-1 and the signature then fails) and expires in an hour.
    Pre-signing is local; only the account id is asked (of moto's STS)."""
    import urllib.parse
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    provider = AWSProvider(aws_spec(options={"region": "eu-west-1"}))
    url = urllib.parse.urlsplit(provider.config_url("m.ign", b"{}"))
    assert url.scheme == "https"
    assert url.hostname == f"{provider.config_bucket()}.s3.eu-west-1.amazonaws.com", url.hostname
    query = urllib.parse.parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Credential"][0].split("/")[2] == "eu-west-1"


def test_served_configs_are_deleted_once_hosts_have_booted(ec2_proxy):
    from provision.phases.machines import fit_config
    provider = AWSProvider(aws_spec())
    assert provider.forget_served_configs() == 0  # no bucket yet: nothing to do, no error
    noise = base64.b64encode(os.urandom(30000)).decode()
    config = json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/etc/big", "contents": {"source": "data:," + noise}}]}}, sort_keys=True).encode()
    pointer = json.loads(fit_config(provider, config, "big.ign", lambda m: None))["ignition"]["config"]["replace"]
    with urllib.request.urlopen(pointer["source"]) as response:
        assert response.status == 200
    assert provider.forget_served_configs() == 1
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.list_objects_v2(Bucket=provider.config_bucket()).get("KeyCount", 0) == 0
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(pointer["source"])
    assert provider.forget_served_configs() == 0
