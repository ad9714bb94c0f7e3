"""What makes the rendered cluster work: the pod network, cluster DNS, the node-local API proxy,
Flatcar specifics, and rendering with no network at all.

Real components run here: the Debian CNI plugins (`/usr/lib/cni`) in network namespaces,
haproxy with the rendered proxy config, `kubernetes-validate --strict`. What cannot run here
(flanneld, kubelet, kube-apiserver, flannel's own CNI plugin) is checked through what it
consumes: flannel's subnet.env, TCP listeners standing in for API servers.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from provision import artifacts
from tests.conftest import EXAMPLES, REPO, run_cli
from tests.helpers_render import (SMALL_SPEC, env_file, ignition_file, render, served_artifacts,
                                  which_or_fail, write_spec)

CNI_DIR = Path("/usr/lib/cni")
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
THREE_MASTERS = """\
name: trio
provider:
  name: local
  subnet: 10.78.0.0/24
network:
  pod_cidr: 10.60.0.0/16
  service_cidr: 10.61.0.0/24
kubernetes:
  cluster_domain: trio.example
pools:
  - {name: masters, role: master, count: 3}
  - {name: workers, role: worker, count: 2}
"""


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("network namespaces need root (CI runs as root)")
        pytest.skip("network namespaces need root")


def data_file(config: bytes, path: str) -> bytes:
    return ignition_file(json.loads(config), path)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trio")
    spec, store, hosts, rendered = render(write_spec(tmp, THREE_MASTERS), tmp / "state",
                                          served_artifacts("http://10.78.0.1:8080"))
    return spec, hosts, rendered


@pytest.fixture
def netns():
    """Network namespaces made for one test (removed after it), unique to this process."""
    made = []

    def make(label: str) -> str:
        name = f"pvt{os.getpid() % 100000}{label}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name
    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


# ---- pod network ---------------------------------------------------------------------------

def _cni_config(rendered, tmp: Path, subnet_env: str) -> dict:
    """Run the rendered cni-config script on a subnet.env as flanneld writes it."""
    script = tmp / "provision-cni-config"
    script.write_bytes(data_file(rendered.files["pool-workers.ign"], "/opt/bin/provision-cni-config"))
    script.chmod(0o755)
    (tmp / "subnet.env").write_text(subnet_env)
    env = dict(os.environ, SUBNET_ENV=str(tmp / "subnet.env"), CNI_CONF_DIR=str(tmp / "net.d"), WAIT_SECONDS="2")
    proc = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp / "net.d" / "10-provision-pods.conflist").read_text())


def _run_plugin(plugin: str, command: str, conf: dict, host_ns: str, pod_ns: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID="pvtest0001", CNI_NETNS=f"/run/netns/{pod_ns}",
               CNI_IFNAME="eth0", CNI_PATH=str(CNI_DIR))
    return subprocess.run(["ip", "netns", "exec", host_ns, str(CNI_DIR / plugin)], input=json.dumps(conf),
                          env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.root
def test_pod_network_config_gives_pods_addresses_from_the_flannel_subnet(trio, tmp_path, netns):
    """The rendered script turns flannel's lease into a CNI config; the real bridge and
    host-local plugins give a pod an address in that lease with routes, and DEL removes it.
    flannel's own CNI plugin is not packaged here: the config is what it would hand them."""
    need_root()
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not (CNI_DIR / plugin).exists():
            pytest.fail(f"{CNI_DIR / plugin} missing: install containernetworking-plugins")
    spec, hosts, rendered = trio
    conflist = _cni_config(rendered, tmp_path, "FLANNEL_NETWORK=10.60.0.0/16\nFLANNEL_SUBNET=10.60.34.1/24\n"
                                               "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert conflist["cniVersion"] == "1.0.0" and [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap"]
    bridge = conflist["plugins"][0]
    ranges = bridge["ipam"]["ranges"][0][0]
    assert ranges == {"subnet": "10.60.34.0/24", "gateway": "10.60.34.1"}
    assert bridge["ipam"]["routes"] == [{"dst": spec.network.pod_cidr}]
    assert bridge["ipMasq"] is False and bridge["mtu"] == 1450  # flanneld masquerades itself

    # the delegate as libcni runs it: the network's name and version, host-local's state in tmp
    conf = dict(bridge, cniVersion=conflist["cniVersion"], name=conflist["name"])
    conf["ipam"] = dict(bridge["ipam"], dataDir=str(tmp_path / "ipam"))
    host_ns, pod_ns = netns("h"), netns("p")
    added = _run_plugin("bridge", "ADD", conf, host_ns, pod_ns)
    assert added.returncode == 0, added.stdout + added.stderr
    result = json.loads(added.stdout)
    address = ipaddress.ip_interface(result["ips"][0]["address"])
    assert address.ip in ipaddress.ip_network("10.60.34.0/24") and str(address.ip) != "10.60.34.1"
    assert result["ips"][0]["gateway"] == "10.60.34.1"
    shown = subprocess.run(["ip", "-n", pod_ns, "-4", "addr", "show", "eth0"], capture_output=True, text=True)
    assert str(address) in shown.stdout
    routes = subprocess.run(["ip", "-n", pod_ns, "-4", "route"], capture_output=True, text=True).stdout
    assert "default via 10.60.34.1" in routes and "10.60.0.0/16 via 10.60.34.1" in routes
    host_side = subprocess.run(["ip", "-n", host_ns, "-4", "addr", "show", "cni0"], capture_output=True, text=True)
    assert "10.60.34.1/24" in host_side.stdout
    assert any((tmp_path / "ipam").rglob(str(address.ip)))

    # the chain's second plugin: portmap takes the bridge's result and maps a hostPort
    portmap = dict(conflist["plugins"][1], cniVersion=conflist["cniVersion"], name=conflist["name"],
                   prevResult=result, runtimeConfig={"portMappings": [
                       {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]})
    mapped = _run_plugin("portmap", "ADD", portmap, host_ns, pod_ns)
    assert mapped.returncode == 0, mapped.stdout + mapped.stderr
    nat = subprocess.run(["ip", "netns", "exec", host_ns, "iptables", "-t", "nat", "-S"],
                         capture_output=True, text=True).stdout
    assert "18080" in nat and f"{address.ip}:80" in nat
    unmapped = _run_plugin("portmap", "DEL", portmap, host_ns, pod_ns)
    assert unmapped.returncode == 0, unmapped.stderr
    deleted = _run_plugin("bridge", "DEL", conf, host_ns, pod_ns)
    assert deleted.returncode == 0, deleted.stderr
    gone = subprocess.run(["ip", "-n", pod_ns, "link", "show", "eth0"], capture_output=True, text=True)
    assert gone.returncode != 0
    assert not any((tmp_path / "ipam").rglob(str(address.ip)))


def test_the_cni_config_script_waits_for_flannel_then_fails_clearly(trio, tmp_path):
    spec, hosts, rendered = trio
    script = tmp_path / "s"
    script.write_bytes(data_file(rendered.files["pool-workers.ign"], "/opt/bin/provision-cni-config"))
    env = dict(os.environ, SUBNET_ENV=str(tmp_path / "absent.env"), CNI_CONF_DIR=str(tmp_path / "d"),
               WAIT_SECONDS="1")
    proc = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "absent.env" in proc.stderr
    assert not (tmp_path / "d" / "10-provision-pods.conflist").exists()


def test_cni_plugins_are_hash_verified_downloads_and_flannel_owns_pod_cidrs(tmp_path):
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC + "artifacts:\n  hashes:\n"
                                                     "    flanneld: sha512-" + "a" * 128 + "\n"
                                                     "    fleetd: sha512-" + "b" * 128 + "\n"), tmp_path / "state")
    worker = json.loads(rendered.files["pool-workers.ign"])
    files = {f["path"]: f for f in worker["storage"]["files"]}
    tarball = files["/opt/downloads/cni-plugins-linux-amd64-v1.6.2.tgz"]["contents"]
    # the published sha256 of the release tarball, shipped in the package
    assert tarball["verification"]["hash"] == artifacts.CATALOGUE["cni-plugins"].known["1.6.2"]
    assert tarball["source"].startswith("https://github.com/containernetworking/plugins/releases/download/v1.6.2/")
    units = {u["name"]: u["contents"] for u in worker["systemd"]["units"]}
    install = units["provision-install-cni-plugins.service"]
    assert "-C /opt/cni/bin " in install and "./bridge ./host-local ./loopback ./portmap" in install
    assert "After=provision-install-cni-plugins.service" in units["provision-cni-config.service"]
    master = json.loads(rendered.files["small-masters-0.ign"])
    kcm = yaml.safe_load(ignition_file(master, "/etc/kubernetes/manifests/kube-controller-manager.yaml"))
    command = kcm["spec"]["containers"][0]["command"]
    assert not any(a.startswith(("--allocate-node-cidrs", "--cluster-cidr")) for a in command)


# ---- cluster DNS ---------------------------------------------------------------------------

def test_coredns_serves_the_address_kubelet_hands_to_pods(trio, tmp_path):
    spec, hosts, rendered = trio
    master = rendered.files["trio-masters-0.ign"]
    docs = {}
    for name in ("serviceaccount", "clusterrole", "clusterrolebinding", "configmap", "deployment", "service"):
        docs[name] = yaml.safe_load(data_file(master, f"/etc/kubernetes/addons/coredns-{name}.yaml"))
    kubelet = yaml.safe_load(data_file(rendered.files["pool-workers.ign"], "/etc/kubernetes/kubelet-config.yaml"))
    assert docs["service"]["spec"]["clusterIP"] == kubelet["clusterDNS"][0] == "10.61.0.10"
    assert ipaddress.ip_address(kubelet["clusterDNS"][0]) in ipaddress.ip_network(spec.network.service_cidr)
    corefile = docs["configmap"]["data"]["Corefile"]
    assert "kubernetes trio.example in-addr.arpa ip6.arpa" in corefile
    assert kubelet["clusterDomain"] == "trio.example"
    pod = docs["deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"registry.k8s.io/coredns/coredns:v{spec.kubernetes.coredns_version}"
    assert pod["serviceAccountName"] == docs["serviceaccount"]["metadata"]["name"]
    assert docs["clusterrolebinding"]["roleRef"]["name"] == docs["clusterrole"]["metadata"]["name"]
    # applied with the other addons: every file is in the bootstrap's index, in creation order
    index = data_file(master, "/etc/kubernetes/addons/index").decode().split("\n")
    listed = [line.split()[1] for line in index if line.strip()]
    assert listed[-6:] == [f"coredns-{n}.yaml" for n in docs]
    paths = []
    for name, doc in docs.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", "1.33.0", *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- kube-proxy ----------------------------------------------------------------------------

KUBE_PROXY_ADDONS = ("serviceaccount", "clusterrolebinding", "configmap", "daemonset")


def test_kube_proxy_addons_are_valid_kubernetes_objects_created_before_dns(trio, tmp_path):
    spec, hosts, rendered = trio
    master = rendered.files["trio-masters-0.ign"]
    index = [line.split() for line in data_file(master, "/etc/kubernetes/addons/index").decode().split("\n")
             if line.strip()]
    listed = [file for _, file in index]
    wanted = [f"kube-proxy-{n}.yaml" for n in KUBE_PROXY_ADDONS]
    at = listed.index(wanted[0])
    # in dependency order (the account before what names it), and before cluster DNS, whose
    # Service needs kube-proxy to be reached
    assert listed[at:at + 4] == wanted and at < listed.index("coredns-serviceaccount.yaml")
    paths, docs = [], {}
    for (collection, file) in index[at:at + 4]:
        doc = yaml.safe_load(data_file(master, f"/etc/kubernetes/addons/{file}"))
        docs[file] = doc
        # each is POSTed to its own kind's collection (bootstrap.sh's addons step)
        assert collection.endswith("/" + doc["kind"].lower() + "s"), (collection, doc["kind"])
        if doc["metadata"].get("namespace"):
            assert f"/namespaces/{doc['metadata']['namespace']}/" in collection
        path = tmp_path / file
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    daemonset = docs["kube-proxy-daemonset.yaml"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= \
        daemonset["spec"]["template"]["metadata"]["labels"].items()
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.k8s.io/kube-proxy:v{spec.kubernetes.version}"
    # only the first master carries the addons
    assert all(b"kube-proxy" not in config for name, config in rendered.files.items() if name != "trio-masters-0.ign")
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", "1.33.0", *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- the node-local API proxy ---------------------------------------------------------------

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 6443)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
data = b""
while True:
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
print(data.decode())
"""


def _ask(ns: str, port: int) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, str(port)],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


@pytest.mark.root
def test_the_node_local_proxy_reaches_a_live_master_with_any_one_down(trio, tmp_path, netns):
    """Real haproxy with the rendered config; a TCP listener on each master's API address
    stands in for kube-apiserver (no binary exists here)."""
    need_root()
    haproxy = which_or_fail("haproxy")
    spec, hosts, rendered = trio
    worker = rendered.files["pool-workers.ign"]
    port = spec.kubernetes.api_proxy_port
    delivered = rendered.secrets["pool-workers.ign"]  # the bootstrap kubeconfig comes over SSH (secrets phase)
    kubelet = yaml.safe_load(delivered["/etc/kubernetes/bootstrap-kubeconfig"].data)
    # kube-proxy's kubeconfig is in its ConfigMap (a DaemonSet on every node, masters too)
    configmap = yaml.safe_load(data_file(rendered.files["trio-masters-0.ign"],
                                         "/etc/kubernetes/addons/kube-proxy-configmap.yaml"))
    for kubeconfig in (kubelet, yaml.safe_load(configmap["data"]["kubeconfig.conf"])):
        assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"
    pod = yaml.safe_load(data_file(worker, "/etc/kubernetes/manifests/api-proxy.yaml"))
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/provision/api-proxy/haproxy.cfg"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(data_file(worker, "/etc/provision/api-proxy/haproxy.cfg"))
    masters = {h.name: h.address for h in hosts if h.role == "master"}
    assert len(masters) == 3 and all(masters.values())

    ns = netns("x")
    for address in masters.values():  # the masters' API addresses, local to the namespace
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    listeners: dict[str, subprocess.Popen] = {}
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    def start(address: str) -> None:
        listeners[address] = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, address])

    for address in masters.values():
        start(address)
    proxy = subprocess.Popen(["ip", "netns", "exec", ns, haproxy, "-f", str(cfg), "-db"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        seen: set[str] = set()
        while time.monotonic() < deadline and seen != set(masters.values()):
            answer = _ask(ns, port)  # empty until haproxy and the listeners are up
            if answer:
                seen.add(answer)
            time.sleep(0.1)
        assert seen == set(masters.values())  # round robin over every master
        for down in masters.values():
            listeners[down].send_signal(signal.SIGKILL)
            listeners[down].wait()
            answers = [_ask(ns, port) for _ in range(9)]
            # every connection still reaches a live master (refused ones are redispatched)
            assert all(a in masters.values() and a != down for a in answers), (down, answers)
            start(down)
            time.sleep(0.3)
    finally:
        proxy.kill()
        proxy.wait()
        for p in listeners.values():
            p.kill()
            p.wait()


# ---- Flatcar specifics ---------------------------------------------------------------------

def test_flatcar_specifics_on_every_node(trio):
    spec, hosts, rendered = trio
    for name, config in rendered.files.items():
        assert data_file(config, "/etc/flatcar/update.conf") == b"REBOOT_STRATEGY=off\n"
    worker = rendered.files["pool-workers.ign"]
    kubelet = yaml.safe_load(data_file(worker, "/etc/kubernetes/kubelet-config.yaml"))
    assert kubelet["resolvConf"] == "/run/systemd/resolve/resolv.conf"
    args = env_file(data_file(worker, "/etc/kubernetes/kubelet.env").decode())["KUBELET_ARGS"]
    assert "--volume-plugin-dir=/var/lib/kubelet/volumeplugins" in args  # /usr is read-only
    daemonset = yaml.safe_load(data_file(rendered.files["trio-masters-0.ign"],
                                         "/etc/kubernetes/addons/kube-proxy-daemonset.yaml"))
    proxy = daemonset["spec"]["template"]
    mounts = {m["mountPath"]: m for m in proxy["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v.get("hostPath") for v in proxy["spec"]["volumes"]}
    assert not mounts["/run/xtables.lock"].get("readOnly") and mounts["/lib/modules"]["readOnly"]
    assert volumes["xtables-lock"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert volumes["lib-modules"]["path"] == "/lib/modules"


# ---- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra, field, words", [
    ("network:\n  flannel:\n    etcd_api: v2\n", "network.flannel.etcd_api", "speaks only etcd's v3"),
    ("kubernetes:\n  api_proxy_port: 6443\n", "kubernetes.api_proxy_port", "already used"),
    ("kubernetes:\n  api_proxy_port: 80\n", "kubernetes.api_proxy_port", "1024..65535"),
    ("kubernetes:\n  coredns_version: 'v1.12; rm -rf /'\n", "kubernetes.coredns_version", "release number"),
    ("network:\n  cni_plugins_version: latest\n", "network.cni_plugins_version", "release number"),
])
def test_validate_refuses_bad_cluster_service_settings(tmp_path, cli, extra, field, words):
    result = cli("validate", write_spec(tmp_path, SMALL_SPEC + extra))
    assert result.code == 2 and field in result.err and words in result.err, result.err
    assert "Traceback" not in result.err


def test_flannel_v2_is_accepted_for_a_flannel_that_speaks_it(tmp_path, cli):
    result = cli("validate", write_spec(tmp_path, SMALL_SPEC + "network:\n  flannel:\n    etcd_api: v2\n"
                                                              "    version: 0.17.0\n"))
    assert result.code == 0, result.err


def test_local_provider_refuses_cloud_config_at_validate(tmp_path):
    text = SMALL_SPEC + "os:\n  family: container-linux\n  config: cloud-config\n"
    state = tmp_path / "state"
    result = run_cli("validate", write_spec(tmp_path, text), "--state-dir", state)
    assert result.code == 2 and "os.config" in result.err and "Traceback" not in result.err, result.err
    up = run_cli("up", write_spec(tmp_path, text), "--yes", "--state-dir", state)
    assert up.code == 2 and "os.config" in up.err
    assert not state.exists() or not any(state.rglob("*"))


# ---- offline, deterministic render of every example ----------------------------------------

@pytest.mark.root
def test_every_example_renders_offline_and_identically_twice(tmp_path, netns):
    """Inside a network namespace with no route, every example as shipped renders: only hashes
    shipped in the package are used and nothing is downloaded."""
    need_root()
    ns = netns("o")
    routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
    assert routes.strip() == ""
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert len(examples) >= 6
    flannel_hashes = set()
    for example in examples:
        assert "\nartifacts:" not in example.read_text(), example.name  # no hash handed in by the example
        spec_path = example
        outs = []
        for attempt in ("a", "b"):
            out = tmp_path / f"{example.stem}-{attempt}"
            proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "provision", "render",
                                   str(spec_path), "--out", str(out), "--state-dir", str(tmp_path / example.stem)],
                                  cwd=REPO, capture_output=True, text=True, timeout=180,
                                  env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                                           AWS_EC2_METADATA_DISABLED="true"))
            assert proc.returncode == 0, (example.name, proc.stderr[-2000:])
            outs.append(out)
        names = sorted(p.name for p in outs[0].iterdir())
        assert names == sorted(p.name for p in outs[1].iterdir()) and "index.json" in names
        for name in names:
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), (example.name, name)
        # every download the configs name carries a hash
        for name in names:
            data = (outs[0] / name).read_bytes()
            if name.endswith(".ign"):
                for f in json.loads(data)["storage"]["files"]:
                    if not f["contents"]["source"].startswith("data:"):
                        assert f["contents"]["verification"]["hash"], (example.name, f["path"])
                    if f["contents"]["source"].endswith("/flannel-v0.27.4-linux-amd64.tar.gz"):
                        flannel_hashes.add(f["contents"]["verification"]["hash"])
    # the cloud examples download flanneld verified by the hash the package ships
    assert flannel_hashes == {artifacts.CATALOGUE["flanneld"].known["0.27.4"]}


def test_known_hashes_cover_every_default_version_but_fleetd(tmp_path):
    """The package ships published hashes for the default etcd, kubelet, CNI plugins and
    flanneld; no fleet release publishes one, so fleetd (when enabled) stays pin-on-first-use."""
    from provision.spec import load_spec
    defaults = load_spec(write_spec(tmp_path, SMALL_SPEC))
    for owner in ("etcd", "kubelet", "cni-plugins", "flanneld"):
        digest = artifacts.CATALOGUE[owner].known.get(artifacts.spec_version(defaults, owner))
        assert digest and re.fullmatch(r"sha256-[0-9a-f]{64}|sha512-[0-9a-f]{128}", digest), owner
    assert {m.name for m in artifacts.unpinned(defaults, {})} == ({"fleetd"} if defaults.fleet.enabled else set())
    for example in sorted(EXAMPLES.glob("*.yaml")):
        spec = load_spec(example)
        if spec.provider.name != "local":  # the local provider serves its own binaries
            assert artifacts.unpinned(spec, {}) == [], example.name
    # a release nobody published a hash for is pinned, and says so
    chosen = load_spec(write_spec(tmp_path, SMALL_SPEC + "network:\n  flannel:\n    version: 0.26.7\n"))
    assert "flanneld" in {m.name for m in artifacts.unpinned(chosen, {})}


def test_up_of_the_openstack_examples_without_a_cloud_stops_in_preflight(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(HOME=str(tmp_path), OS_CLIENT_CONFIG_FILE=str(tmp_path / "absent.yaml"))
    for example in ("openstack.yaml", "container-linux-cloud-config.yaml"):
        state = tmp_path / f"state-{example}"
        proc = subprocess.run([sys.executable, "-m", "provision", "up", str(EXAMPLES / example), "--yes",
                               "--state-dir", str(state)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "provider.cloud" in proc.stderr and "clouds.yaml" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not state.exists() or not any(state.rglob("*")), sorted(state.rglob("*"))


def test_masters_without_a_planned_address_are_proxied_by_name(tmp_path):
    """libcloud clouds plan no address: haproxy starts anyway and finds each master through
    the node's resolver once its name resolves."""
    haproxy = which_or_fail("haproxy")
    text = (EXAMPLES / "digitalocean.yaml").read_text() + ("artifacts:\n  hashes:\n    flanneld: sha512-" + "a" * 128
                                                          + "\n    fleetd: sha512-" + "b" * 128 + "\n")
    spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(data_file(rendered.files["pool-workers.ign"], "/etc/provision/api-proxy/haproxy.cfg"))
    text = cfg.read_text()
    for master in ("edge-masters-0",):
        assert f"server {master} {master}:6443 check resolvers node init-addr last,libc,none" in text
    proc = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_with_dedicated_etcd_hosts_masters_have_planned_addresses_in_the_certificate(tmp_path):
    """The openstack example puts etcd on its own hosts: masters still get fixed addresses, so
    the API server certificate carries them and the proxy and admin kubeconfig use them."""
    from provision import pki
    from provision.phases.kubeconfig import api_server_url
    from provision.phases.machines import host_entry
    text = (EXAMPLES / "openstack.yaml").read_text() + ("artifacts:\n  hashes:\n    flanneld: sha512-" + "a" * 128
                                                          + "\n    fleetd: sha512-" + "b" * 128 + "\n")
    spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state")
    masters = [h for h in hosts if h.role == "master"]
    assert len(masters) == 2 and all(h.address and not h.etcd for h in masters)
    _, ips = pki.apiserver_names(spec, hosts)
    assert {h.address for h in masters} <= set(ips)
    proxy = data_file(rendered.files["pool-workers.ign"], "/etc/provision/api-proxy/haproxy.cfg").decode()
    for h in masters:
        assert f"server {h.name} {h.address}:6443 check\n" in proxy
    from provision.providers.base import HostRecord
    # what the provider answers (a public address); state records the plan's fixed address
    state = {"hosts": {h.name: host_entry(h, HostRecord(h.name, h.pool, h.role, "id", "running",
                                                        public_address="203.0.113.9")) for h in hosts}}
    assert api_server_url(spec, state) in {f"https://{h.address}:6443" for h in masters}
