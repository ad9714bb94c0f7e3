"""On moto's EC2 and S3 servers (real boto3): after the pki, render and machines phases as `up`
runs them, no instance's user data, and nothing it points to (the S3 copy of a config too large
for user data), holds a private key or the bootstrap token (issue 10)."""
from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.request

import boto3

from provision import pki
from provision.phases import RunContext
from provision.phases import machines as machines_phase
from provision.phases import pki as pki_phase
from provision.phases import render as render_phase
from provision.providers.aws import AWSProvider
from provision.state import LocalStateStore
from provision.ui import UI

from .conftest import MOTO_AMI, make_spec

FAKE_HASHES = {"flanneld": "sha512-" + "a" * 128, "fleetd": "sha512-" + "b" * 128}


def expanded(data: bytes) -> list[bytes]:
    """The bytes and everything encoded inside them: data URLs, gzip."""
    views = [data]
    for match in re.finditer(rb"data:[^,\"]*;base64,([A-Za-z0-9+/=]+)", data):
        raw = base64.b64decode(match.group(1))
        views.extend(expanded(gzip.decompress(raw)) if raw[:2] == b"\x1f\x8b" else [raw])
    return views


def key_material(store) -> dict[str, bytes]:
    out = {}
    for name in store.list_blobs("pki/"):
        data = store.read_blob(name)
        if data and b"PRIVATE KEY" in data:
            body = data.strip().splitlines()[1:-1]
            out[name] = body[len(body) // 2]
    out["bootstrap token"] = pki.bootstrap_token(store)[1].encode()
    return out


def test_no_user_data_nor_what_it_points_to_holds_key_material(ec2_proxy, tmp_path):
    spec = make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}, workers=2, masters=3,
                     etcd={"count": 3}, fleet={"enabled": True},
                     artifacts={"mirror": "http://mirror.example.test/a", "hashes": FAKE_HASHES})
    store = LocalStateStore(spec.name, tmp_path / "state")
    ctx = RunContext(spec=spec, store=store, state=store.read(), ui=UI(verbosity=-1))
    pki_phase.run(ctx)
    render_phase.run(ctx)
    served_seen = []
    machines_phase.run(ctx)  # the wait phase would delete the S3 copies: read them right after this
    secrets = key_material(store)
    assert len(secrets) >= 15
    client = boto3.client("ec2", region_name="us-east-1")
    pages = client.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:provision:cluster", "Values": [spec.name]}])
    instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    assert len(instances) == 5
    for instance in instances:
        raw = client.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        user_data = base64.b64decode(raw["UserData"]["Value"])
        views = expanded(user_data)
        doc = json.loads(gzip.decompress(user_data) if user_data[:2] == b"\x1f\x8b" else user_data)
        pointer = ((doc.get("ignition") or {}).get("config") or {}).get("replace")
        if pointer:  # a config over the user-data limit: its full copy on S3
            with urllib.request.urlopen(pointer["source"]) as response:
                served = response.read()
            served_seen.append(instance["InstanceId"])
            views += expanded(served)
        for view in views:
            assert b"PRIVATE KEY" not in view, instance["InstanceId"]
            flat = view.replace(b"\n", b"").replace(b"\\n", b"")
            for what, secret in secrets.items():
                assert secret not in flat, (instance["InstanceId"], what)
        # every instance requires IMDSv2, one hop: a pod cannot read the (key-free) user data either
        options = instance["MetadataOptions"]
        assert options["HttpTokens"] == "required" and options["HttpPutResponseHopLimit"] == 1
    # a master's config (three etcd members, fleet) is over EC2's 16 KB: its user data is a pointer
    assert served_seen, "no config went through S3: the pointer path is not checked"
    # every object in the config bucket, whatever points to it
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = AWSProvider(spec).config_bucket()
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed
    for obj in listed:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for view in expanded(body):
            assert b"PRIVATE KEY" not in view, obj["Key"]
