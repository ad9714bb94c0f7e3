"""PROVISION_AWS_SSH_ADDRESS: where provision reaches EC2 hosts (public by default, private from
inside the VPC), and a value it does not know is refused before anything is made."""
from __future__ import annotations

import yaml

from provision.providers.aws import AWSProvider

from tests.conftest import run_cli

from .conftest import MOTO_AMI, make_spec

INSTANCE = {"InstanceId": "i-0123456789abcdef0", "PrivateIpAddress": "10.240.0.10", "PublicIpAddress": "54.1.2.3",
            "State": {"Name": "running"}, "Tags": [{"Key": "provision:host", "Value": "c-masters-0"},
                                                   {"Key": "provision:pool", "Value": "masters"},
                                                   {"Key": "provision:role", "Value": "master"}]}


def provider():
    return AWSProvider(make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}))


def test_hosts_are_reached_at_their_public_address_by_default(monkeypatch):
    monkeypatch.delenv("PROVISION_AWS_SSH_ADDRESS", raising=False)
    record = provider()._record(INSTANCE)
    assert record.address == "54.1.2.3" and record.private_address == "10.240.0.10"


def test_private_reaches_hosts_at_their_private_address(monkeypatch):
    monkeypatch.setenv("PROVISION_AWS_SSH_ADDRESS", "private")
    record = provider()._record(INSTANCE)
    assert record.address == "10.240.0.10" and record.public_address is None
    assert record.extra["public_ip"] == "54.1.2.3"  # the host keeps it; provision does not use it


def test_an_unknown_value_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    spec = make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI})
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump({"name": spec.name, "provider": {"name": "aws", "region": "us-east-1",
                                                                     "ami": MOTO_AMI},
                                    "ssh": {"authorized_keys": list(spec.ssh.authorized_keys)},
                                    "etcd": {"count": 1},
                                    "pools": [{"name": "masters", "role": "master", "count": 1}]}))
    env = {"PROVISION_AWS_SSH_ADDRESS": "vpn", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true"}
    result = run_cli("up", path, "--yes", "--state-dir", tmp_path / "state", env=env)
    assert result.code == 2, result.err
    assert "PROVISION_AWS_SSH_ADDRESS" in result.err and "'vpn'" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "state" / spec.name / "state.json").exists()
