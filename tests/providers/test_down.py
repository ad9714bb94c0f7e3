"""`provision up examples/aws.yaml --yes --until machines` against moto, then `provision down`,
through the CLI in this process (the moto server runs here too)."""
from __future__ import annotations

import json

import boto3
import pytest
import yaml

from provision.providers.aws import FLATCAR_OWNER
from tests.helpers_render import http_server, make_tarball, stub_binary

from .conftest import MOTO_AMI, SSH_KEY


@pytest.fixture
def artifact_mirror(tmp_path):
    """A local mirror serving the flanneld and fleetd release files (the example's downloads all
    have shipped hashes, so nothing is fetched from it)."""
    www = tmp_path / "www"
    www.mkdir()
    make_tarball(www / "flannel-v0.27.4-linux-amd64.tar.gz", {"flanneld": stub_binary("flanneld")})
    make_tarball(www / "fleet-v1.0.0-linux-amd64.tar.gz",
                 {"fleet-v1.0.0-linux-amd64/fleetd": stub_binary("fleetd"),
                  "fleet-v1.0.0-linux-amd64/fleetctl": stub_binary("fleetctl")})
    with http_server(www) as url:
        yield url


def aws_example(example, tmp_path, mirror, name="prod"):
    """examples/aws.yaml downloading from `mirror` (etcd and kubelet keep their published hashes)."""
    data = yaml.safe_load(example("aws.yaml").read_text())
    data["name"] = name
    data.setdefault("artifacts", {})["mirror"] = mirror
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def publish_flatcar_ami(region):
    client = boto3.client("ec2", region_name=region)
    instance = client.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = client.create_image(InstanceId=instance, Name="Flatcar-stable-4081.2.0-hvm")["ImageId"]
    client.terminate_instances(InstanceIds=[instance])
    return image


def live_tagged(region, cluster):
    client = boto3.client("ec2", region_name=region)
    reservations = client.describe_instances(Filters=[{"Name": "tag:provision:cluster", "Values": [cluster]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")]


def test_up_until_machines_then_down(ec2_proxy, monkeypatch, tmp_path, cli, example, artifact_mirror):
    monkeypatch.setenv("MOTO_ACCOUNT_ID", FLATCAR_OWNER)  # moto answers as Flatcar's AMI account
    spec_path, data = aws_example(example, tmp_path, artifact_mirror)
    region = data["provider"]["region"]
    image = publish_flatcar_ami(region)
    state_dir = tmp_path / "state"
    wanted = sum(p["count"] for p in data["pools"])

    first = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert first.code == 0, first.err
    created = json.loads(first.out)["results"]["machines"]["created"]
    assert len(created) == wanted
    instances = live_tagged(region, "prod")
    assert len(instances) == wanted and {i["ImageId"] for i in instances} == {image}
    state = json.loads((state_dir / "prod" / "state.json").read_text())
    assert sorted(state["hosts"]) == sorted(created)
    assert not state.get("artifact_pins")  # every download of the example has a shipped hash: nothing pinned

    ec2_proxy.reset_counts()
    second = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert second.code == 0, second.err
    assert json.loads(second.out)["results"]["machines"]["created"] == []
    assert ec2_proxy.calls["RunInstances"] == 0 and len(live_tagged(region, "prod")) == wanted

    refused = cli("down", spec_path, "--state-dir", state_dir)  # no terminal: lists, exits 0 (issue 16)
    assert refused.code == 0 and "--yes" in refused.err and sorted(refused.out.split()) == sorted(created)
    assert len(live_tagged(region, "prod")) == wanted, "down without --yes destroyed something"

    down = cli("down", spec_path, "--yes", "--state-dir", state_dir, "-o", "json")
    assert down.code == 0, down.err
    assert sorted(json.loads(down.out)["destroyed"]) == sorted(created)
    assert live_tagged(region, "prod") == []
    assert json.loads((state_dir / "prod" / "state.json").read_text())["hosts"] == {}
    client = boto3.client("ec2", region_name=region)
    assert client.describe_vpcs(Filters=[{"Name": "tag:provision:cluster", "Values": ["prod"]}])["Vpcs"] == []
    assert SSH_KEY.split()[1] not in down.out + down.err + first.err


def test_down_finds_hosts_state_forgot(ec2_proxy, tmp_path, cli):
    from provision.plan import plan
    from provision.providers.aws import AWSProvider
    from provision.spec import load_spec

    from .conftest import configs_for
    spec_path = tmp_path / "c.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "forgot", "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "pools": [{"name": "masters", "role": "master", "count": 1},
                  {"name": "workers", "role": "worker", "count": 2}]}))
    spec = load_spec(spec_path)
    hosts = plan(spec, {}).create
    AWSProvider(spec).create_hosts(hosts, configs_for(hosts))  # state never heard of them
    down = cli("down", spec_path, "--yes", "--state-dir", tmp_path / "state")
    assert down.code == 0, down.err
    assert "not in state" in down.err
    assert live_tagged("us-east-1", "forgot") == []
