"""Real machines behind moto: every EC2 instance moto reports is booted as a local host.

moto answers the EC2 API but runs nothing. `MotoHosts` watches it (DescribeInstances through
boto3) and, for every instance in our subnet that is pending or running, boots a network
namespace host at the instance's private address from exactly the user data moto received
(DescribeInstanceAttribute userData), with the local provider's own machinery: its bridge,
the real Ignition engine (which follows a pointer config to the S3 object on moto by itself:
moto listens on the bridge address, so the pre-signed URL reaches it from inside a host), the
image's sshd and every enabled unit whose binary exists. An instance that moto reports
terminated (or no longer reports) is destroyed the same way. So `provision` with
`provider.name: aws` runs every phase against moto plus real hosts: SSH, etcd over TLS, the
flannel key, the host agents.

Hosts download their binaries from `artifacts.mirror`: the release files under their upstream
names, built here from this machine's binaries (etcd 3.5 and etcdctl, the CNI plugins).
Programs that exist in no registry these machines reach (kubelet, flanneld, fleetd) are
files that print that they are not the program and exit 1: their units fail visibly, as on a
machine whose download is broken, and nothing pretends they run.

The local provider is used through `provision.providers.get_provider` only (a local spec with
the VPC's subnet), so its module layout does not matter here.
"""
from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import shutil
import tarfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from provision import artifacts, etcd_binaries
from provision.plan import HostPlan
from provision.providers import get_provider
from provision.spec import parse_spec

CNI_DIR = Path("/usr/lib/cni")
NOT_HERE = ("#!/bin/sh\necho '{name}: not the real program: no {name} binary exists on this test machine' >&2\n"
            "exit 1\n")
LIVE = ("pending", "running")
# Release files by (file name, members): built once per test session (tens of MB to compress).
_RELEASES: dict[tuple, bytes] = {}


def ec2_host_name(address: str) -> str:
    """EC2's own host name for a private address (ip-10-0-0-5)."""
    return "ip-" + address.replace(".", "-")


class MotoHosts:
    """Boots moto's instances as local hosts (see the module doc); a background thread polls."""

    def __init__(self, cluster: str, subnet: str, workdir: Path, etcd_version: str = "3.5.17"):
        self.cluster = cluster
        self.subnet = subnet
        self.local_spec = parse_spec({
            "name": cluster, "provider": {"name": "local", "subnet": subnet},
            "etcd": {"count": 1, "version": etcd_version},
            "pools": [{"name": "masters", "role": "master", "count": 1}]})
        self.local = get_provider(self.local_spec, workdir, log=lambda m: None)
        self.booted: dict[str, str] = {}  # instance id -> host name
        self.user_data: dict[str, bytes] = {}  # instance id -> what moto received
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ec2: Any = None

    # -- the network and the mirror ------------------------------------------------------------
    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def prepare(self) -> None:
        """The bridge (at the subnet's first address) and the artifacts mirror on it."""
        self.local.prepare()

    @property
    def mirror_url(self) -> str:
        return self.local.mirror_url

    @property
    def mirror_dir(self) -> Path:
        return self.local.base / "mirror"

    def publish_releases(self, spec_doc: dict) -> dict[str, str]:
        """Release files of every download `spec_doc` needs, under their upstream names in the
        mirror; returns {artifact: "sha512-..."} for the spec's `artifacts.hashes`."""
        spec = parse_spec(dict(spec_doc, artifacts={"mirror": self.mirror_url}))
        needed = set(artifacts.required_binaries(spec))
        owners = sorted(n for n, r in artifacts.CATALOGUE.items() if n in needed or needed & set(r.members))
        hashes = {}
        for owner in owners:
            release = artifacts.CATALOGUE[owner]
            version = artifacts.spec_version(spec, owner)
            file_name = release.url.format(version=version).rsplit("/", 1)[-1]
            members = tuple(sorted((b, p.format(version=version)) for b, p in release.members.items()))
            key = (file_name, members)
            if key not in _RELEASES:
                _RELEASES[key] = self._tarball(dict(members)) if members else self._binary(owner)
            data = _RELEASES[key]
            target = self.mirror_dir / file_name
            target.write_bytes(data)
            target.chmod(0o644)
            hashes[owner] = "sha512-" + hashlib.sha512(data).hexdigest()
        return hashes

    @staticmethod
    def _source(binary: str) -> Path | None:
        if binary in etcd_binaries.NAMES:
            found = etcd_binaries.newest(binary, "3.5")
            return Path(found.path) if found else None
        if (CNI_DIR / binary).is_file():
            return CNI_DIR / binary
        return None

    def _binary(self, binary: str) -> bytes:
        source = self._source(binary)
        return source.read_bytes() if source else NOT_HERE.format(name=binary).encode()

    def _tarball(self, members: dict[str, str]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=1) as tar:
            for binary, path in sorted(members.items()):
                data = self._binary(binary)
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), 0o755, 0
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    # -- following moto ------------------------------------------------------------------------
    @property
    def ec2(self):
        if self._ec2 is None:
            import boto3
            self._ec2 = boto3.session.Session().client("ec2", region_name="us-east-1")
        return self._ec2

    def instances(self) -> list[dict]:
        reservations = self.ec2.describe_instances()["Reservations"]
        net = ipaddress.ip_network(self.subnet)
        return [i for r in reservations for i in r["Instances"]
                if i.get("PrivateIpAddress") and ipaddress.ip_address(i["PrivateIpAddress"]) in net]

    def sync(self) -> None:
        """One pass: boot every new live instance, destroy every host whose instance went."""
        with self._lock:
            live = {}
            for instance in self.instances():
                if instance["State"]["Name"] in LIVE:
                    live[instance["InstanceId"]] = instance
            for instance_id, instance in sorted(live.items()):
                if instance_id not in self.booted:
                    self._boot(instance)
            gone = sorted(set(self.booted) - set(live))
            if gone:
                self.local.destroy_hosts([self.booted.pop(i) for i in gone])

    def _boot(self, instance: dict) -> None:
        instance_id, address = instance["InstanceId"], instance["PrivateIpAddress"]
        answer = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        user_data = base64.b64decode(answer.get("UserData", {}).get("Value", ""))
        name = ec2_host_name(address)
        self.user_data[instance_id] = user_data
        host = HostPlan(name=name, pool="ec2", role="instance", index=0, address=address)
        self.local.create_hosts([host], {name: user_data})
        self.booted[instance_id] = name

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - recorded; the test asserts there were none
                self.errors.append(traceback.format_exc())
                time.sleep(1.0)
            self._stop.wait(0.3)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="moto-hosts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the hosts match moto's live instances (after `down` or a scale)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                live = {i["InstanceId"] for i in self.instances() if i["State"]["Name"] in LIVE}
                if live == set(self.booted):
                    return
            time.sleep(0.2)
        raise AssertionError(f"hosts did not follow moto within {timeout}s: live {sorted(live)}, "
                             f"booted {sorted(self.booted)}")

    def diagnostics(self) -> str:
        """Each host's unit states and the end of its failed units' logs, for assertion messages."""
        lines = []
        for instance_id, name in sorted(self.booted.items()):
            units = self.local.unit_states(name)
            lines.append(f"{name} ({instance_id}): " + ", ".join(f"{u}={d.get('state')}" for u, d in sorted(units.items())))
            for unit, doc in sorted(units.items()):
                log = self.local.host_root(name) / "run/provision/units" / f"{unit}.log"
                if doc.get("state") not in ("running", "exited", "skipped") and log.is_file():
                    lines += [f"  {unit}: {line}" for line in log.read_text(errors="replace").splitlines()[-8:]]
        return "\n".join(lines + self.errors)

    def teardown(self) -> None:
        self.stop()
        self.local.teardown()
        if self.local.base.exists():
            shutil.rmtree(self.local.base, ignore_errors=True)
