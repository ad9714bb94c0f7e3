"""Hash pinning on first use: the render phase downloads a download without a known hash once
from the mirror (a real HTTP server here), records its sha512 in state, and the real Ignition
engine then refuses other bytes at that URL."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import socket
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import pytest

from provision import artifacts
from provision.errors import ActionError
from provision.phases import render as render_phase
from provision.spec import load_spec
from tests.helpers_render import (apply_ignition, make_tarball, need_ignition_engine, stub_binary,
                                  which_or_fail, write_spec)

FLANNEL = "flannel-v0.26.7-linux-amd64.tar.gz"
FLEET = "fleet-v1.0.0-linux-amd64.tar.gz"

SPEC = """\
name: {name}
provider:
  name: openstack
  subnet_cidr: 10.81.0.0/24
  load_balancer: false  # these runs never reach a cloud: no Octavia to look for
ssh:
  authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA ops@example.com"]
etcd:
  count: 1
network:
  flannel:
    version: "0.26.7"  # a release whose hash nobody published: pinned on first use
pools:
  - {{name: masters, role: master, count: 1}}
  - {{name: workers, role: worker, count: 1}}
artifacts:
  mirror: {mirror}
  hashes:
    etcd: sha512-{etcd}
    kubelet: sha512-{kubelet}
    cni-plugins: sha512-{cni}
"""


class Mirror:
    """A directory served over HTTP on 127.0.0.1 (port 0) that counts requests per path and
    can answer 404 for chosen paths."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.requests: dict[str, int] = {}
        self.missing: set[str] = set()
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(mirror.directory), **kwargs)

            def do_GET(self):
                mirror.requests[self.path] = mirror.requests.get(self.path, 0) + 1
                if self.path in mirror.missing:
                    self.send_error(404)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, file_name: str) -> int:
        return self.requests.get("/" + file_name, 0)

    def total(self) -> int:
        return sum(self.requests.values())


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[Mirror]:
    mirror = Mirror(directory)
    mirror.thread.start()
    try:
        yield mirror
    finally:
        mirror.server.shutdown()
        mirror.server.server_close()


def mirror_files(www: Path) -> dict[str, str]:
    """Release files as the catalogue names them; returns the sha512 of each."""
    www.mkdir(parents=True, exist_ok=True)
    shas = {
        "etcd": make_tarball(www / "etcd-v3.5.17-linux-amd64.tar.gz",
                             {"etcd-v3.5.17-linux-amd64/etcd": stub_binary("etcd"),
                              "etcd-v3.5.17-linux-amd64/etcdctl": stub_binary("etcdctl")}),
        "flanneld": make_tarball(www / FLANNEL, {"flanneld": stub_binary("flanneld")}),
        "fleetd": make_tarball(www / FLEET, {"fleet-v1.0.0-linux-amd64/fleetd": stub_binary("fleetd"),
                                             "fleet-v1.0.0-linux-amd64/fleetctl": stub_binary("fleetctl")}),
    }
    shas["cni-plugins"] = make_tarball(www / "cni-plugins-linux-amd64-v1.6.2.tgz",
                                       {f"./{p}": stub_binary(p) for p in ("bridge", "host-local", "loopback", "portmap")})
    (www / "kubelet").write_bytes(stub_binary("kubelet"))
    shas["kubelet"] = hashlib.sha512(stub_binary("kubelet")).hexdigest()
    return shas


@pytest.fixture(autouse=True)
def openstack_cloud(monkeypatch, tmp_path):
    """The openstack provider's preflight wants a cloud configuration (OS_* variables); these
    runs stop before the machines phase, so nothing ever contacts it."""
    import os
    for key in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "no-clouds.yaml"))
    for key, value in {"OS_AUTH_URL": "http://127.0.0.1:9/v3", "OS_USERNAME": "pin", "OS_PASSWORD": "pin",
                       "OS_PROJECT_NAME": "pin", "OS_USER_DOMAIN_NAME": "Default",
                       "OS_PROJECT_DOMAIN_NAME": "Default"}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def cluster(tmp_path):
    """(spec path, state dir, mirror, sha512 of each file) for a spec whose flanneld and fleetd
    have no hash anywhere; the mirror serves all four release files."""
    www = tmp_path / "www"
    shas = mirror_files(www)
    with serving(www) as mirror:
        name = f"pin{tmp_path.name[-8:].replace('_', '').lower()}"
        spec_path = write_spec(tmp_path, SPEC.format(name=name, mirror=mirror.url, etcd=shas["etcd"],
                                                     kubelet=shas["kubelet"], cni=shas["cni-plugins"]))
        yield spec_path, tmp_path / "state", mirror, shas


def state_doc(state_dir: Path) -> dict:
    [path] = state_dir.glob("*/state.json")
    return json.loads(path.read_text())


def snapshot(state_dir: Path) -> dict[str, bytes]:
    """Every file of the state directory but the lock."""
    return {str(p.relative_to(state_dir)): p.read_bytes() for p in sorted(state_dir.rglob("*"))
            if p.is_file() and p.name != "lock"}


def rendered_blobs(state_dir: Path) -> dict[str, bytes]:
    [cluster_dir] = [p for p in state_dir.iterdir() if p.is_dir()]
    return {str(p.relative_to(cluster_dir)): p.read_bytes()
            for p in sorted(cluster_dir.rglob("*")) if p.is_file() and "rendered" in p.parts}


def remote_hashes(config: bytes) -> dict[str, str]:
    doc = json.loads(config)
    return {f["contents"]["source"].rsplit("/", 1)[-1]: f["contents"]["verification"]["hash"]
            for f in doc["storage"]["files"] if f["contents"]["source"].startswith("http")}


# ---- the render phase pins on first use ----------------------------------------------------

def test_up_pins_each_download_once_and_the_render_carries_the_pin(cluster, cli, tmp_path):
    spec_path, state_dir, mirror, shas = cluster
    first = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir, "-o", "json")
    assert first.code == 0, first.err
    assert mirror.count(FLANNEL) == 1 and mirror.count(FLEET) == 1
    assert mirror.count("kubelet") == 0, "a download whose hash the spec gives was fetched"
    # sha512 of the exact bytes served, computed here independently
    flannel_sha = hashlib.sha512((tmp_path / "www" / FLANNEL).read_bytes()).hexdigest()
    assert flannel_sha == shas["flanneld"]
    pins = state_doc(state_dir)["artifact_pins"]
    assert set(pins) == {"flanneld", "fleetd"}
    assert pins["flanneld"]["sha512"] == flannel_sha
    assert pins["flanneld"]["url"] == f"{mirror.url}/{FLANNEL}" and pins["flanneld"]["version"] == "0.26.7"
    assert pins["fleetd"]["sha512"] == shas["fleetd"] and pins["fleetd"]["version"] == "1.0.0"
    assert time.strptime(pins["flanneld"]["pinned_at"], "%Y-%m-%dT%H:%M:%SZ")
    logged = [ln for ln in first.err.splitlines() if "pinned on first use" in ln]
    assert len(logged) == 2 and any(f"sha512-{flannel_sha}" in ln and "flanneld" in ln for ln in logged)
    assert all("artifacts.hashes." in ln for ln in logged), "the log says how to check and keep the pin"
    assert json.loads(first.out)["results"]["render"]["pinned"] == ["flanneld", "fleetd"]

    blobs = rendered_blobs(state_dir)
    configs = {k: v for k, v in blobs.items() if k.endswith(".ign")}
    assert len(configs) == 2
    tool = which_or_fail("ignition-validate")
    for name, data in configs.items():
        hashes = remote_hashes(data)
        assert hashes[FLANNEL] == f"sha512-{flannel_sha}" and hashes[FLEET] == f"sha512-{shas['fleetd']}"
        path = tmp_path / Path(name).name
        path.write_bytes(data)
        proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", (name, proc.stdout, proc.stderr)
    assert "pinned_at" not in b"".join(blobs.values()).decode(errors="replace")

    before = dict(mirror.requests)
    second = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert second.code == 0, second.err
    assert mirror.requests == before, "the second render downloaded again"
    assert "pinned on first use" not in second.err
    assert rendered_blobs(state_dir) == blobs
    assert state_doc(state_dir)["artifact_pins"] == pins


@pytest.mark.root
def test_the_ignition_engine_refuses_other_bytes_than_the_pinned_ones(cluster, cli, tmp_path):
    need_ignition_engine()
    spec_path, state_dir, mirror, shas = cluster
    result = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert result.code == 0, result.err
    [master] = [v for k, v in rendered_blobs(state_dir).items() if "masters-0" in k]
    root, proc = apply_ignition(master, tmp_path / "good")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (root / "opt/downloads" / FLANNEL).read_bytes() == (tmp_path / "www" / FLANNEL).read_bytes()
    # the mirror now serves other bytes under the pinned name
    make_tarball(tmp_path / "www" / FLANNEL, {"flanneld": b"#!/bin/sh\n# not the pinned build\n"})
    _, proc = apply_ignition(master, tmp_path / "swapped")
    assert proc.returncode != 0
    refusal = [ln for ln in proc.stdout.splitlines() if "hash verification failed" in ln and FLANNEL in ln]
    assert refusal and f"expected {shas['flanneld']}" in refusal[-1], proc.stdout[-3000:]


# ---- render alone --------------------------------------------------------------------------

def test_render_without_pins_exits_2_naming_the_ways_out_and_touches_nothing(cluster, cli, tmp_path):
    spec_path, state_dir, mirror, _ = cluster
    result = cli("render", spec_path, "--out", tmp_path / "out", "--state-dir", state_dir)
    assert result.code == 2
    assert "artifacts.hashes.flanneld" in result.err and "artifacts.hashes.fleetd" in result.err
    assert f"{mirror.url}/{FLANNEL}" in result.err
    assert "--until render" in result.err and "artifacts.mirror" in result.err and "--pin" in result.err
    assert "Traceback" not in result.err
    assert mirror.total() == 0
    assert not state_dir.exists() and not (tmp_path / "out").exists()


def test_render_pin_pins_then_plain_render_uses_the_pins(cluster, cli, tmp_path):
    spec_path, state_dir, mirror, shas = cluster
    pinned = cli("render", spec_path, "--out", tmp_path / "a", "--pin", "--state-dir", state_dir)
    assert pinned.code == 0, pinned.err
    assert mirror.count(FLANNEL) == 1 and mirror.count(FLEET) == 1
    assert state_doc(state_dir)["artifact_pins"]["flanneld"]["sha512"] == shas["flanneld"]
    assert sum("pinned on first use" in ln for ln in pinned.err.splitlines()) == 2
    plain = cli("render", spec_path, "--out", tmp_path / "b", "--state-dir", state_dir)
    assert plain.code == 0, plain.err
    assert mirror.count(FLANNEL) == 1 and mirror.count(FLEET) == 1
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    master = next(n for n in files if "masters-0" in n)
    assert remote_hashes((tmp_path / "b" / master).read_bytes())[FLANNEL] == f"sha512-{shas['flanneld']}"


# ---- failures and dry-run ------------------------------------------------------------------

def test_a_failed_download_is_exit_1_naming_artifact_and_url_and_state_is_unchanged(cluster, cli):
    spec_path, state_dir, mirror, _ = cluster
    assert cli("up", spec_path, "--yes", "--until", "pki", "--state-dir", state_dir).code == 0
    before = snapshot(state_dir)
    assert before, "the pki phase stored nothing"
    mirror.missing.add("/" + FLANNEL)  # fleetd downloads fine, flanneld answers 404
    result = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert result.code == 1
    assert "flanneld" in result.err and f"{mirror.url}/{FLANNEL}" in result.err and "404" in result.err
    assert "Traceback" not in result.err
    assert snapshot(state_dir) == before, "a failed pin changed state"
    assert not rendered_blobs(state_dir)

    mirror.server.shutdown()
    mirror.server.server_close()  # now the port refuses connections
    refused = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert refused.code == 1
    assert "fleetd" in refused.err or "flanneld" in refused.err
    assert mirror.url in refused.err and "refused" in refused.err.lower()
    assert snapshot(state_dir) == before


def test_dry_run_pins_nothing(cluster, cli):
    spec_path, state_dir, mirror, _ = cluster
    result = cli("up", spec_path, "--dry-run", "--until", "render", "--state-dir", state_dir, "-o", "json")
    assert result.code == 0, result.err
    assert f"would pin flanneld 0.26.7 on first use: download {mirror.url}/{FLANNEL}" in result.err
    assert json.loads(result.out)["results"]["render"]["would_pin"] == ["flanneld", "fleetd"]
    assert mirror.total() == 0
    assert not list(state_dir.glob("*/state.json")) or "artifact_pins" not in state_doc(state_dir)


# ---- which pin applies (pure) --------------------------------------------------------------

def test_a_pin_applies_only_to_its_version_and_url(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC.format(name="pure", mirror="http://m.example.test/a",
                                                      etcd="1" * 128, kubelet="2" * 128, cni="3" * 128)))
    assert [u.name for u in artifacts.unpinned(spec, {})] == ["flanneld", "fleetd"]
    url = f"http://m.example.test/a/{FLANNEL}"
    pin = {"version": "0.26.7", "url": url, "sha512": "c" * 128, "pinned_at": "2026-01-01T00:00:00Z"}
    state = {"artifact_pins": {"flanneld": pin}}
    assert [u.name for u in artifacts.unpinned(spec, state)] == ["fleetd"]
    assert artifacts.pinned_hash(state, "flanneld", "0.26.7", url) == "sha512-" + "c" * 128
    for other in ({"version": "0.26.6"}, {"url": f"https://github.com/flannel-io/{FLANNEL}"}, {"sha512": "zz"}):
        stale = {"artifact_pins": {"flanneld": dict(pin, **other)}}
        assert [u.name for u in artifacts.unpinned(spec, stale)] == ["flanneld", "fleetd"], other
    state["artifact_pins"]["fleetd"] = dict(pin, version="1.0.0", url=f"http://m.example.test/a/{FLEET}",
                                            sha512="d" * 128)
    downloads = {a.name: a for a in artifacts.check(spec, state)}
    assert downloads["flanneld"].hash == "sha512-" + "c" * 128 and downloads["flanneld"].url == url
    assert downloads["etcd"].hash == "sha512-" + "1" * 128  # the spec's hash, never a pin
    # a provider serving its own binaries needs no pin
    assert artifacts.unpinned(spec, {"artifacts": {"etcd": {"url": "http://x/etcd", "sha512": "e" * 128}}}) == []


# ---- the download itself -------------------------------------------------------------------

def test_the_download_is_streamed_not_held_in_memory():
    size, block = 48 << 20, bytes(range(256)) * 256  # 48 MiB in 64 KiB blocks

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for _ in range(size // len(block)):
                self.wfile.write(block)

        def log_message(self, *args):
            pass

    expected = hashlib.sha512()
    for _ in range(size // len(block)):
        expected.update(block)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracemalloc.start()
        digest = render_phase.download_sha512(f"http://127.0.0.1:{server.server_address[1]}/big")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        server.shutdown()
        server.server_close()
    assert digest == expected.hexdigest()
    assert peak < 8 << 20, f"peak {peak} bytes while hashing {size}"


def test_a_silent_server_times_out_quickly():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        started = time.monotonic()
        with pytest.raises(OSError):
            render_phase.download_sha512(f"http://127.0.0.1:{listener.getsockname()[1]}/x", timeout=0.5)
        assert time.monotonic() - started < 10
    finally:
        listener.close()


def test_a_timeout_while_pinning_is_an_action_error_naming_artifact_and_url(tmp_path, monkeypatch):
    from provision.phases import RunContext
    from provision.state import open_store
    from provision.ui import UI
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    monkeypatch.setattr(render_phase, "DOWNLOAD_TIMEOUT", 0.5)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        spec = load_spec(write_spec(tmp_path, SPEC.format(name="slow", mirror=url, etcd="1" * 128,
                                                          kubelet="2" * 128, cni="3" * 128)))
        store = open_store(spec, tmp_path / "state")
        ctx = RunContext(spec=spec, store=store, state=store.read(), ui=UI(verbosity=-1))
        with pytest.raises(ActionError) as err:
            render_phase.pin_on_first_use(ctx, artifacts.unpinned(spec, ctx.state))
    finally:
        listener.close()
    assert "flanneld" in str(err.value) and f"{url}/{FLANNEL}" in str(err.value)
    assert "artifact_pins" not in ctx.state and not (tmp_path / "state").exists()
