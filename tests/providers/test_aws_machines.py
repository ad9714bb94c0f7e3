"""The AWS path end to end on real machines: moto's EC2, ELBv2 and S3 over HTTP, driven by the
real boto3 inside `provision`, with every instance moto reports booted as a local host at its
private address from exactly the user data moto received (tests/providers/moto_hosts.py).

One spec with `provider.name: aws` runs every phase of `up` (endpoint, machines, wait, etcd,
flannel, fleet, masters, workers over SSH), then `status`, `scale` +1, `headroom --once` and
`down`, with each state backend through the CLI: local (a directory), s3 (a bucket on the same
moto) and etcd (a real etcd over TLS). kube-apiserver, kubelet, flanneld and fleetd exist in no
registry here: what they consume (their files, units, certificates, etcd keys) is checked, and
their units are never reported as running.

The harness reaches hosts at their private addresses through `PROVISION_AWS_SSH_ADDRESS=private`
(provision inside the VPC); moto listens on the bridge's address, so hosts reach it like S3.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.local.conftest import cluster_namespaces, free_subnet, processes_mentioning
from tests.real import needs_local, require

from .conftest import MOTO_AMI, SSH_KEY
from .moto_hosts import MotoHosts, ec2_host_name

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.root, needs_local]


class World:
    """moto on the bridge, the hosts following it, and `provision` pointed at both."""

    def __init__(self, tmp: Path, backend: str):
        self.tmp = tmp
        self.backend = backend
        self.name = f"aw{uuid.uuid4().hex[:6]}"
        self.subnet = free_subnet()
        self.hosts = MotoHosts(self.name, self.subnet, tmp / "machines")
        self.server = None
        self.env: dict[str, str] = {}
        self.state_dir = tmp / "state"
        self.spec = tmp / f"{self.name}.yaml"

    def start(self, monkeypatch) -> None:
        import logging
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.hosts.prepare()
        self.server = ThreadedMotoServer(ip_address=self.hosts.gateway, port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "AWS_EC2_METADATA_DISABLED": "true", "PROVISION_AWS_SSH_ADDRESS": "private"}
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        self.hosts.start()

    def write_spec(self, state: dict) -> dict:
        doc = {"name": self.name,
               "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI, "vpc_cidr": self.subnet,
                            "subnet_cidr": self.subnet},
               "ssh": {"authorized_keys": [SSH_KEY]},
               "etcd": {"count": 1, "placement": "masters"},
               "pools": [{"name": "masters", "role": "master", "count": 1},
                         {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 3}],
               "headroom": {"pool": "workers", "source": "etcd", "policies": ["containers", "utilization"],
                            "containers_per_host": 8, "reserve": 2},
               "state": state}
        doc["artifacts"] = {"mirror": self.hosts.mirror_url, "hashes": self.hosts.publish_releases(doc)}
        self.spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        return doc

    def provision(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        extra = ["--state-dir", str(self.state_dir)] if self.backend == "local" else []
        return subprocess.run([sys.executable, "-m", "provision", *args[:1], str(self.spec), *args[1:], *extra],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ, **self.env))

    def json(self, *args: str) -> tuple[int, dict]:
        proc = self.provision(*args, "-o", "json")
        try:
            return proc.returncode, json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"provision {args}: not JSON: {proc.stdout[-2000:]} {proc.stderr[-3000:]}") from None

    def live_instances(self) -> list[dict]:
        return [i for i in self.hosts.instances() if i["State"]["Name"] in ("pending", "running")]

    def stop(self) -> None:
        self.hosts.teardown()
        if self.server is not None:
            self.server.stop()


@pytest.fixture(params=["local", "s3", "etcd"])
def world(request, tmp_path, monkeypatch):
    require("curl", "ssh")
    w = World(tmp_path, request.param)
    try:
        w.start(monkeypatch)
        if request.param == "local":
            state = {"backend": "local"}
        elif request.param == "s3":
            import boto3
            bucket = f"state-{w.name}"
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
            state = {"backend": "s3", "bucket": bucket, "region": "us-east-1", "prefix": "e2e"}
        else:
            from tests.headroom.conftest import serve_etcd
            serving = serve_etcd(request.getfixturevalue("tmp_path_factory"), v2=True)
            server = next(serving)
            request.addfinalizer(lambda: next(serving, None))
            for key, path in (("ETCDCTL_CACERT", server.client_tls.ca), ("ETCDCTL_CERT", server.client_tls.cert),
                              ("ETCDCTL_KEY", server.client_tls.key)):
                w.env[key] = str(path)
            state = {"backend": "etcd", "endpoints": [server.endpoint], "prefix": "e2e"}
        w.write_spec(state)
        yield w
    finally:
        try:
            if w.server is not None:
                w.provision("down", "--yes")
        finally:
            w.stop()


def test_aws_spec_runs_every_phase_then_status_scale_headroom_and_down(world):
    w = world
    # -- up: every phase, against moto plus the hosts booted from what moto received ----------
    code, up = w.json("up", "--yes")
    assert code == 0 and up["ok"], (up, w.hosts.diagnostics())
    results = up["results"]
    for phase in ("validate", "endpoint", "pki", "render", "machines", "wait", "hosts", "etcd", "flannel", "fleet",
                  "masters", "workers", "kubeconfig"):
        assert phase in up["phases"] and phase in results, (phase, up["phases"])
    hosts = sorted(f"{w.name}-{h}" for h in ("masters-0", "workers-0"))
    assert sorted(results["machines"]["created"]) == hosts
    assert sorted(results["wait"]["logged_in"]) == hosts  # over SSH, at the private addresses
    assert results["etcd"]["members"] and sorted(results["workers"]["hosts"]) == [f"{w.name}-workers-0"]
    assert w.hosts.errors == []
    instances = w.live_instances()
    assert len(instances) == 2
    for instance in instances:
        name = w.hosts.booted[instance["InstanceId"]]
        assert name == ec2_host_name(instance["PrivateIpAddress"])
        # the host booted from exactly the bytes moto holds as the instance's user data
        applied = (w.hosts.local.host_dir(name) / "config.ign").read_bytes()
        assert applied == w.hosts.user_data[instance["InstanceId"]] and applied.startswith(b"{")
        result = json.loads((w.hosts.local.host_root(name) / "etc/.ignition-result.json").read_text())
        assert result.get("provisioningDate")

    # the master's config is over EC2's 16 KB: moto holds a pointer to the full config on its S3,
    # which Ignition fetched from inside the host (pinned by sha512); wait then deleted it
    master = next(i for i in instances if {"Key": "provision:role", "Value": "master"} in i.get("Tags", []))
    pointer = json.loads(w.hosts.user_data[master["InstanceId"]])
    source = pointer["ignition"]["config"]["replace"]
    assert source["source"].startswith(w.env["AWS_ENDPOINT_URL"] + "/") and source["verification"]["hash"]
    master_root = w.hosts.local.host_root(w.hosts.booted[master["InstanceId"]])
    assert (master_root / "etc/etcd/etcd.env").is_file()  # only the full config carries it
    import boto3
    bucket = source["source"][len(w.env["AWS_ENDPOINT_URL"]) + 1:].split("/", 1)[0]
    assert boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    # -- status: hosts running in moto, etcd healthy over TLS, the load balancer found ----------
    code, status = w.json("status")
    assert code == 0 and status["healthy"], status
    assert status["orphans"] == [] and status["missing"] == []
    assert status["api_endpoint"]["found"] and status["api_endpoint"]["kind"] == "load balancer"
    versions = set(status["etcd"]["versions"].values())
    assert versions and all(v.startswith("3.5.") for v in versions), status["etcd"]
    masters = [n for n, h in status["hosts"].items() if h["role"] == "master"]
    assert len(masters) == 1 and status["hosts"][masters[0]]["etcd"]

    # -- scale +1: one more instance, booted and bootstrapped; nothing else touched -------------
    code, scaled = w.json("scale", "workers", "2", "--yes")
    assert code == 0 and scaled["ok"], scaled
    w.hosts.settle()
    assert len(w.live_instances()) == 3 and len(w.hosts.booted) == 3 and w.hosts.errors == []
    code, status = w.json("status")
    assert code == 0 and status["healthy"], status
    workers = sorted(n for n, h in status["hosts"].items() if h["pool"] == "workers")
    assert len(workers) == 2

    # -- headroom --once: reads the host agents' loads from etcd and decides ---------------------
    code, once = w.json("headroom", "--once")
    assert code == 0 and once["ok"], once
    assert once.get("decision") is not None or once.get("message"), once

    # -- down: every instance terminated, every host gone, nothing tagged left in moto ------------
    down = w.provision("down", "--yes")
    assert down.returncode == 0, down.stderr[-3000:]
    w.hosts.settle()
    assert w.live_instances() == [] and w.hosts.booted == {}
    assert cluster_namespaces(w.name) == []
    ec2 = w.hosts.ec2
    tagged = [{"Name": "tag:provision:cluster", "Values": [w.name]}]
    assert ec2.describe_vpcs(Filters=tagged)["Vpcs"] == []
    assert ec2.describe_key_pairs(Filters=tagged)["KeyPairs"] == []
    assert processes_mentioning(str(w.hosts.local.base / "hosts")) == []
