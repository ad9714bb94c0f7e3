"""Fixtures for provider tests: moto's EC2 server behind a counting proxy, specs, and one
`ContractCase` fixture per provider for the shared contract suite (test_contract.py).

Adding a provider to the contract suite: write a fixture returning a `ContractCase` and add
one line to `CONTRACT_CASES` below.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from provision.spec import parse_spec

from .ec2_proxy import EC2Proxy

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA test@example.com"
# One of the AMIs moto serves in every region (accepted without AMI validation anyway).
MOTO_AMI = "ami-12c6146b"

# provider name -> fixture returning a ContractCase. One line per provider.
CONTRACT_CASES = {
    "aws": "aws_case",
    "openstack": "openstack_case",
    "libcloud-ec2": "libcloud_ec2_case",
    "libcloud-digitalocean": "libcloud_do_case",
    "vagrant": "vagrant_case",
    "local": "local_case",
}


def unique_name(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_spec(provider: dict[str, Any], workers: int = 3, masters: int = 1, name: str | None = None,
              **extra: Any):
    """A valid spec for `provider` with one master pool and one worker pool."""
    data = {"name": name or unique_name(), "provider": provider,
            "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
            "pools": [{"name": "masters", "role": "master", "count": masters},
                      {"name": "workers", "role": "worker", "count": workers, "min": 0,
                       "max": max(workers, 200)}]}
    data.update(extra)
    return parse_spec(data)


def ignition_for(host_name: str, shared: str | None = None) -> bytes:
    """A small, valid Ignition config; hosts with the same `shared` key get identical bytes."""
    doc = {"ignition": {"version": "3.3.0"},
           "storage": {"files": [{"path": "/etc/hostname-hint", "mode": 420,
                                  "contents": {"source": f"data:,{shared or host_name}"}}]}}
    return json.dumps(doc, sort_keys=True).encode()


def configs_for(hosts) -> dict[str, bytes]:
    """Per-host configs for masters, one shared config per worker pool (as the render does)."""
    return {h.name: ignition_for(h.name, h.pool if h.role == "worker" else None) for h in hosts}


@dataclass
class ContractCase:
    """What the contract suite needs from one provider.

    make():   a fresh provider object (new client, no memory of earlier calls)
    fail_next_create(): the next host-creating API call fails with a non-retryable error
    drop_next_create(): the next host-creating API call is done by the cloud but its answer is lost
    create_calls(): how many host-creating API calls reached the cloud so far
    created_names(): for a provider whose hosts are keyed by name (vagrant, local: a second
        host of one name cannot exist, so counting listed names proves nothing), every host name
        a host-creating step acted on, in order; None for clouds, where listed names can repeat
    """

    name: str
    spec: Any
    make: Callable[[], Any]
    fail_next_create: Callable[[], None]
    drop_next_create: Callable[[], None]
    create_calls: Callable[[], int]
    extra: dict[str, Any] = field(default_factory=dict)
    created_names: Callable[[], list[str]] | None = None


# ---- AWS: moto's EC2 server over HTTP -----------------------------------------------------

@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}", host, port
    server.stop()


def reset_moto(url: str) -> None:
    # a connection the previous test left half-read can garble one answer of the shared server:
    # the reset is idempotent, so it is tried again on a fresh connection
    import http.client
    for attempt in range(4):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")).read()
            return
        except (http.client.HTTPException, ConnectionError, urllib.error.URLError):
            if attempt == 3:
                raise
            time.sleep(0.5)


@pytest.fixture
def ec2_proxy(moto_server, monkeypatch) -> Iterator[EC2Proxy]:
    """A fresh moto behind a counting/faulting proxy; boto3 pointed at it through AWS_ENDPOINT_URL."""
    url, host, port = moto_server
    reset_moto(url)
    proxy = EC2Proxy(host, port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    yield proxy
    proxy.close()


def fast_backoff(provider):
    """Keep retries in tests quick (the schedule itself is tested in test_retry)."""
    from provision.providers.retry import Backoff
    provider.backoff = Backoff(attempts=6, base=0.01, cap=0.05)
    if hasattr(provider, "max_attempts"):  # botocore's own retries (aws): fewer tries, its own schedule
        provider.max_attempts = 3
    return provider


@pytest.fixture
def aws_case(ec2_proxy, tmp_path) -> ContractCase:
    from provision.providers.aws import AWSProvider
    spec = make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI})
    return ContractCase(
        name="aws", spec=spec, make=lambda: fast_backoff(AWSProvider(spec, tmp_path)),
        fail_next_create=lambda: ec2_proxy.inject("RunInstances", "fail:InsufficientInstanceCapacity"),
        drop_next_create=lambda: ec2_proxy.inject("RunInstances", "drop"),
        create_calls=lambda: ec2_proxy.calls["RunInstances"], extra={"proxy": ec2_proxy})


# ---- libcloud: its EC2 driver against the same moto server --------------------------------

@contextmanager
def libcloud_ec2_adjusted():
    """The two field-notes adjustments for libcloud's EC2 driver against moto 5.2 (test-only):
    moto's XML namespace lacks the trailing slash libcloud expects."""
    import libcloud.compute.drivers.ec2 as ec2_driver
    import libcloud.loadbalancer.drivers.elb as elb_driver
    saved = ec2_driver.NAMESPACE
    saved_root = elb_driver.ROOT
    ec2_driver.NAMESPACE = saved.rstrip("/")
    # libcloud's ELB driver sends its queries to `/2012-06-01/`; moto's server routes ELB only at `/`
    elb_driver.ROOT = "/"
    try:
        yield
    finally:
        ec2_driver.NAMESPACE = saved
        elb_driver.ROOT = saved_root


@pytest.fixture
def libcloud_ec2_env(ec2_proxy, monkeypatch):
    monkeypatch.setenv("LIBCLOUD_KEY", "testing")
    monkeypatch.setenv("LIBCLOUD_SECRET", "testing")
    monkeypatch.setenv("LIBCLOUD_HOST", "127.0.0.1")
    monkeypatch.setenv("LIBCLOUD_PORT", str(ec2_proxy.port))
    monkeypatch.setenv("LIBCLOUD_SECURE", "false")
    monkeypatch.setenv("LIBCLOUD_EXTRA", json.dumps({"signature_version": "4"}))
    with libcloud_ec2_adjusted():
        yield ec2_proxy


@pytest.fixture
def libcloud_ec2_case(libcloud_ec2_env, tmp_path) -> ContractCase:
    from provision.providers.libcloud_driver import LibcloudProvider
    proxy = libcloud_ec2_env
    spec = make_spec({"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI,
                      "size": "t2.micro"})
    return ContractCase(
        name="libcloud-ec2", spec=spec, make=lambda: fast_backoff(LibcloudProvider(spec, tmp_path)),
        fail_next_create=lambda: proxy.inject("RunInstances", "fail:InsufficientInstanceCapacity"),
        drop_next_create=lambda: proxy.inject("RunInstances", "drop"),
        create_calls=lambda: proxy.calls["RunInstances"], extra={"proxy": proxy})


# ---- libcloud: its DigitalOcean driver against the API v2 stand-in -------------------------

FLATCAR_DO_IMAGE = "flatcar-stable-4081.2.0"


@pytest.fixture
def do_api(monkeypatch):
    """The DigitalOcean API v2 stand-in (tests/fakes/digitalocean_api.py) with a Flatcar custom
    image, the real libcloud driver pointed at it by LIBCLOUD_HOST/PORT/SECURE. Two items a page,
    so every listing follows pagination links."""
    from tests.fakes.digitalocean_api import TOKEN, DigitalOceanAPI
    api = DigitalOceanAPI(max_per_page=2)
    api.add_custom_image(FLATCAR_DO_IMAGE)
    for var in ("LIBCLOUD_SECRET", "LIBCLOUD_EXTRA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIBCLOUD_KEY", TOKEN)
    monkeypatch.setenv("LIBCLOUD_HOST", api.host)
    monkeypatch.setenv("LIBCLOUD_PORT", str(api.port))
    monkeypatch.setenv("LIBCLOUD_SECURE", "false")
    yield api
    api.close()


def do_spec(**kwargs):
    options = {"name": "libcloud", "driver": "digitalocean", "image": FLATCAR_DO_IMAGE, "size": "s-2vcpu-4gb"}
    options.update(kwargs.pop("options", {}))
    return make_spec(options, **kwargs)


@pytest.fixture
def libcloud_do_case(do_api, tmp_path) -> ContractCase:
    from provision.providers.libcloud_driver import LibcloudProvider
    spec = do_spec()
    return ContractCase(
        name="libcloud-digitalocean", spec=spec, make=lambda: fast_backoff(LibcloudProvider(spec, tmp_path)),
        fail_next_create=lambda: do_api.inject("create_droplet", "fail"),
        drop_next_create=lambda: do_api.inject("create_droplet", "drop"),
        create_calls=lambda: do_api.calls["create_droplet"], extra={"api": do_api})


# ---- OpenStack: the HTTP stand-in driven by the real openstacksdk --------------------------

@pytest.fixture
def openstack_api(tmp_path, monkeypatch):
    from tests.fakes.openstack_api import OpenStackAPI
    api = OpenStackAPI()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(api.clouds_yaml("testcloud"))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    for var in [v for v in os.environ if v.startswith("OS_") and v != "OS_CLIENT_CONFIG_FILE"]:
        monkeypatch.delenv(var)
    yield api
    api.close()
    assert api.unknown == [], f"calls the stand-in does not know (answered 404): {api.unknown}"


@pytest.fixture
def openstack_case(openstack_api, tmp_path) -> ContractCase:
    from provision.providers.openstack import OpenStackProvider
    spec = make_spec({"name": "openstack", "cloud": "testcloud", "image": "flatcar-stable", "flavor": "m1.small"})
    return ContractCase(
        name="openstack", spec=spec, make=lambda: fast_backoff(OpenStackProvider(spec, tmp_path)),
        fail_next_create=lambda: openstack_api.inject("create_server", "fail"),
        drop_next_create=lambda: openstack_api.inject("create_server", "drop"),
        create_calls=lambda: openstack_api.calls["create_server"], extra={"api": openstack_api})


# ---- Vagrant: the real Vagrantfile, a recording stand-in for the hypervisor ----------------

FAKE_VAGRANT = Path(__file__).with_name("fake_vagrant.py")


@pytest.fixture
def fake_vagrant(tmp_path, monkeypatch):
    """`vagrant` on PATH that keeps VMs in a JSON file (no hypervisor runs here) and passes
    `validate` through to the real vagrant."""
    import sys
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "vagrant"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_VAGRANT} \"$@\"\n")
    shim.chmod(0o755)
    real = shutil.which("vagrant")
    monkeypatch.setenv("FAKE_VAGRANT_REAL", real or "")
    monkeypatch.setenv("FAKE_VAGRANT_DB", str(tmp_path / "vms.json"))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return tmp_path / "vms.json"


@pytest.fixture
def vagrant_case(fake_vagrant, tmp_path) -> ContractCase:
    from provision.providers.vagrant import VagrantProvider
    spec = make_spec({"name": "vagrant", "subnet": "192.168.61.0/24"})
    workdir = tmp_path / "work"

    def make():
        provider = VagrantProvider(spec, workdir)
        provider.config_address = "127.0.0.1"  # the fake's VMs fetch their configs on loopback
        return provider

    def faults(kind):
        path = tmp_path / "vms.json.faults"
        items = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(items + [kind]))

    def calls():
        path = tmp_path / "vms.json.calls"
        return int(path.read_text()) if path.exists() else 0

    def created():
        path = tmp_path / "vms.json.created"
        return json.loads(path.read_text()) if path.exists() else []
    return ContractCase(
        name="vagrant", spec=spec, make=make,
        fail_next_create=lambda: faults("fail"), drop_next_create=lambda: faults("drop"),
        create_calls=calls, extra={"db": fake_vagrant}, created_names=created)


# ---- local: network namespaces, the real Ignition engine and sshd (root only) ------------------

@pytest.fixture
def local_case(tmp_path):
    from provision.errors import ActionError
    from provision.providers.local import LocalProvider
    from tests.local.conftest import free_subnet
    from tests.real import require_local_host
    require_local_host()
    spec = make_spec({"name": "local", "subnet": free_subnet()}, workers=2)
    faults: list[str] = []
    calls = [0]
    ignited: list[str] = []

    class FaultyLocal(LocalProvider):
        """Faults at the host-creating step (applying Ignition: the host's first boot)."""

        def _ignite(self, name, ns, config):
            if faults and faults[0] == "fail":
                faults.pop(0)
                raise ActionError(f"injected failure creating {name}")
            calls[0] += 1
            ignited.append(name)
            super()._ignite(name, ns, config)
            if faults and faults[0] == "drop":
                faults.pop(0)
                raise ActionError(f"injected lost answer after creating {name}")

    workdir = tmp_path / "work"
    yield ContractCase(name="local", spec=spec, make=lambda: FaultyLocal(spec, workdir),
                       fail_next_create=lambda: faults.append("fail"),
                       drop_next_create=lambda: faults.append("drop"), create_calls=lambda: calls[0],
                       created_names=lambda: list(ignited))
    LocalProvider(spec, workdir).teardown()


@pytest.fixture(params=sorted(CONTRACT_CASES))
def contract_case(request) -> ContractCase:
    return request.getfixturevalue(CONTRACT_CASES[request.param])
