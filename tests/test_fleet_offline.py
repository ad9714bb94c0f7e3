"""fleet on (the spec's default) with no network: no fleet release publishes a checksum, so an
offline `render` refuses with exit 2 naming `artifacts.hashes.fleetd` and writes nothing; handed
that hash, the same render succeeds offline and the fleet download carries it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from provision import artifacts
from tests.conftest import EXAMPLES, REPO

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
FLEET_TARBALL = "/fleet-v1.0.0-linux-amd64.tar.gz"


@pytest.fixture
def offline_ns():
    """A network namespace with only loopback (no route anywhere), removed after the test."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("network namespaces need root (CI runs as root)")
        pytest.skip("network namespaces need root")
    name = f"pvf{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def fleet_spec(tmp_path, **extra):
    data = yaml.safe_load((EXAMPLES / "aws.yaml").read_text())
    data.pop("fleet")  # the default: fleet.enabled true
    data.update(extra)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def render_offline(ns, spec, out, state):
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "provision", "render", str(spec),
                           "--out", str(out), "--state-dir", str(state)],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=dict(os.environ, **AWS_ENV))


@pytest.mark.root
def test_offline_render_with_fleet_on_refuses_naming_the_hash_field_and_writes_nothing(tmp_path, offline_ns):
    assert artifacts.CATALOGUE["fleetd"].known == {}  # no published hash of any fleet release is known
    out, state = tmp_path / "out", tmp_path / "state"
    proc = render_offline(offline_ns, fleet_spec(tmp_path), out, state)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "artifacts.hashes.fleetd" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    assert not state.exists() or not [p for p in state.rglob("*") if p.is_file()]


@pytest.mark.root
def test_offline_render_with_fleet_on_uses_the_hash_handed_in(tmp_path, offline_ns):
    given = "sha256-" + "5e" * 32  # whatever the operator supplies is what hosts verify against
    out = tmp_path / "out"
    proc = render_offline(offline_ns, fleet_spec(tmp_path, artifacts={"hashes": {"fleetd": given}}), out,
                          tmp_path / "state")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fleet_downloads = [f for name in sorted(os.listdir(out)) if name.endswith(".ign")
                       for f in json.loads((out / name).read_text())["storage"]["files"]
                       if f["contents"]["source"].endswith(FLEET_TARBALL)]
    assert fleet_downloads and {f["contents"]["verification"]["hash"] for f in fleet_downloads} == {given}
