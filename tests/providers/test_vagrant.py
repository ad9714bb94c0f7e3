"""The vagrant provider: the generated project passes the real `vagrant validate` for libvirt
and VirtualBox; each VM's hypervisor holds only a small pointer config (under VirtualBox's
1 KiB guest-property cap, no secret in it) that the real Ignition engine follows to the full
config provision serves while `vagrant up` runs. (`vagrant up` needs a hypervisor, which these
machines lack: lifecycle calls go to the stand-in in fake_vagrant.py, which refuses what
Vagrant, VirtualBox and libvirt refuse; see conftest.)"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import shutil
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import pytest

from provision.errors import ActionError, UserError
from provision.phases import RunContext
from provision.phases.machines import apply_plan
from provision.plan import plan
from provision.providers import get_provider
from provision.providers.vagrant import BOOT_CONFIG_LIMIT, VagrantProvider
from provision.providers.vagrant_serve import ConfigServer
from provision.render import pointer_config
from provision.state import LocalStateStore
from provision.ui import UI

from tests.real import require

from ..helpers_render import (apply_ignition, env_file, http_server, make_tarball, need_ignition_engine, render,
                              stub_binary, which_or_fail, write_spec)
from .conftest import SSH_KEY, configs_for, make_spec

IN_CI = os.environ.get("CI") == "true"
# Flatcar's published VirtualBox box of the stable channel (its release server's layout).
FLATCAR_STABLE_BOX = "https://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_vagrant.box"


@pytest.fixture(autouse=True)
def real_vagrant():
    """`vagrant validate` runs the real vagrant: skipped without it outside CI, failing under CI=true."""
    require("vagrant")

# Evaluates a Vagrantfile with a recording stand-in for Vagrant's configuration DSL and prints
# every call as JSON: which settings each VM gets.
DSL_RECORDER = textwrap.dedent("""
    require "json"
    class Recorder
      def initialize(log, path); @log = log; @path = path; end
      def method_missing(name, *args, **kw, &blk)
        scope = [:define, :provider].include?(name) ? [name.to_s, args[0].to_s] : [name.to_s]
        @log << {"path" => @path + [name.to_s],
                 "args" => args.map { |a| a.is_a?(Array) ? a.map(&:to_s) : a.to_s },
                 "kw" => kw.to_h { |k, v| [k.to_s, v.to_s] }}
        child = Recorder.new(@log, @path + scope)
        blk.call(child) if blk
        child
      end
      def respond_to_missing?(*) = true
    end
    module Vagrant
      def self.configure(version)
        log = []
        yield Recorder.new(log, [])
        puts JSON.generate(log)
      end
    end
    load ARGV[0]
""")


def vagrant_env(tmp_path, provider="libvirt"):
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant-home"), VAGRANT_DEFAULT_PROVIDER=provider,
               VAGRANT_CHECKPOINT_DISABLE="1")
    if provider == "virtualbox":
        # The VirtualBox block is only checked when a VBoxManage that prints a version is on PATH.
        bindir = tmp_path / "vbox-bin"
        bindir.mkdir(exist_ok=True)
        vbox = bindir / "VBoxManage"
        vbox.write_text("#!/bin/sh\necho 7.0.20r163906\n")
        vbox.chmod(0o755)
        env["PATH"] = f"{bindir}:{env['PATH']}"
    return env


def vagrant_spec(hypervisor="virtualbox", workers=2, **options):
    provider = {"name": "vagrant", "vm_provider": hypervisor, "subnet": "192.168.61.0/24", **options}
    if hypervisor == "libvirt":
        provider.setdefault("box", "flatcar-stable-libvirt")
    return make_spec(provider, workers=workers)


def loopback_provider(spec, workdir):
    provider = VagrantProvider(spec, workdir)
    provider.config_address = "127.0.0.1"  # where the stand-in's VMs can reach this machine
    return provider


def project_for(spec, tmp_path):
    """The project as create_hosts writes it (boot configs included), without running vagrant."""
    provider = VagrantProvider(spec, tmp_path / "work")
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    entries = {}
    for h in hosts:
        url = f"http://{provider.host_address()}:8080/{hashlib.sha512(configs[h.name]).hexdigest()}.ign"
        entries[h.name] = {"name": h.name, "pool": h.pool, "role": h.role, "index": h.index, "address": h.address,
                           "boot_config": pointer_config(url, configs[h.name]).decode()}
    provider.write_project(entries)
    return provider


def validate(project, env):
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant is not installed (see .ci/debian-packages.txt)")
    return subprocess.run(["vagrant", "validate"], cwd=project, env=dict(env, VAGRANT_CWD=str(project)),
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("hypervisor", ["libvirt", "virtualbox"])
def test_generated_project_passes_vagrant_validate(tmp_path, hypervisor):
    spec = vagrant_spec(hypervisor)
    provider = project_for(spec, tmp_path)
    proc = validate(provider.project, vagrant_env(tmp_path, hypervisor))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_vagrant_validate_catches_a_broken_setting(tmp_path):
    spec = vagrant_spec("libvirt")
    provider = project_for(spec, tmp_path)
    settings = json.loads((provider.project / "hosts.json").read_text())
    settings["box"] = ""
    (provider.project / "hosts.json").write_text(json.dumps(settings))
    proc = validate(provider.project, vagrant_env(tmp_path))
    assert proc.returncode != 0 and "box" in (proc.stdout + proc.stderr).lower()


def recorded_calls(project):
    proc = subprocess.run(["ruby", "-e", DSL_RECORDER, str(project / "Vagrantfile")], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(proc.stdout)


def vm_settings(project):
    """Per VM: the fw_cfg string (unescaped), the guest property, address and host name the
    Vagrantfile gives it; and the box settings."""
    vms: dict[str, dict] = {}
    box = {}
    for call in recorded_calls(project):
        path = call["path"]
        if path in (["vm", "box="], ["vm", "box_url="]):
            box[path[-1].rstrip("=")] = call["args"][0]
        if "define" not in path[:-1]:
            continue
        vm = vms.setdefault(path[path.index("define") + 1], {})
        if path[-1] == "qemuargs" and call["kw"]["value"].startswith("name="):
            name, value = call["kw"]["value"].split(",", 1)
            assert value.startswith("string="), "QEMU must not read a file from the 0700 state directory"
            # vagrant-libvirt writes each qemuarg unescaped into `<qemu:arg value='...'/>`.
            element = ElementTree.fromstring(f"<arg value='{call['kw']['value']}'/>")
            assert element.get("value") == call["kw"]["value"]
            vm["fw_cfg"] = (name, value[len("string="):].replace(",,", ","))
        if path[-1] == "customize" and call["args"][0][:4] == ["guestproperty", "set", "id", "/Ignition/Config"]:
            vm["guest_property"] = call["args"][0][4]
        if path[-1] == "network":
            vm["address"] = call["kw"]["ip"]
        if path[-1] == "hostname=":
            vm["hostname"] = call["args"][0]
    return vms, box


@pytest.mark.parametrize("hypervisor", ["virtualbox", "libvirt"])
def test_each_vm_boots_a_pointer_to_the_config_the_render_wrote(tmp_path, fake_vagrant, hypervisor):
    """Through the machines phase: rendered blobs in the state store -> VMs. The hypervisor
    holds a pointer (under 1 KiB, no secret) whose hash is the rendered config's; the VM
    fetched exactly that config while `vagrant up` ran; the server is gone afterwards."""
    spec = vagrant_spec(hypervisor)
    if hypervisor == "libvirt":  # a box the user built and added (Flatcar publishes none for libvirt)
        Path(f"{fake_vagrant}.boxes").write_text(json.dumps(["flatcar-stable-libvirt"]))
    store = LocalStateStore(spec.name, tmp_path / "state")
    state = store.read()
    target = plan(spec, state)
    index = {}
    secret = b"-----BEGIN EC PRIVATE KEY----- not for the hypervisor"
    for host in target.create:
        index[host.name] = {"pool": host.pool, "role": host.role, "config": f"{host.name}.ign"}
        config = json.loads(configs_for([host])[host.name])
        config["storage"]["files"][0]["contents"]["source"] = "data:," + secret.hex() + host.name
        store.write_blob(f"rendered/{host.name}.ign", json.dumps(config).encode())
    store.write_blob("rendered/index.json", json.dumps({"hosts": index}).encode())
    ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
    result = apply_plan(ctx, target, provider=loopback_provider(spec, store.workdir))
    assert sorted(result["created"]) == sorted(h.name for h in target.create)

    project = store.workdir / "vagrant"
    vms, box = vm_settings(project)
    if hypervisor == "virtualbox":
        assert box == {"box": "flatcar-stable", "box_url": FLATCAR_STABLE_BOX}
    else:
        assert box == {"box": "flatcar-stable-libvirt"}
    booted = json.loads(fake_vagrant.read_text())[str(project)]
    urls = []
    for host in target.create:
        rendered = store.read_blob(f"rendered/{host.name}.ign")
        vm = vms[host.name]
        pointer = vm["guest_property"]
        assert vm["fw_cfg"] == ("name=opt/org.flatcar-linux/config", pointer)
        assert len(pointer.encode()) <= BOOT_CONFIG_LIMIT
        replace = json.loads(pointer)["ignition"]["config"]["replace"]
        assert replace["verification"]["hash"] == "sha512-" + hashlib.sha512(rendered).hexdigest()
        assert replace["source"].startswith("http://127.0.0.1:")
        urls.append(replace["source"])
        assert booted[host.name]["config_sha512"] == hashlib.sha512(rendered).hexdigest()
        assert booted[host.name]["hypervisor"] == hypervisor
        assert vm["hostname"] == host.name
        assert vm["address"] == host.address == ctx.state["hosts"][host.name]["address"]
    # The server only ran while vagrant up did.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(urls[0], timeout=2)
    # No full config (no secret) anywhere in the project the hypervisor reads.
    assert not (project / "ignition").exists()
    for path in project.rglob("*"):
        if path.is_file():
            assert secret.hex().encode() not in path.read_bytes(), path


def test_the_real_ignition_engine_follows_the_pointer_to_the_served_config(tmp_path, fake_vagrant, monkeypatch):
    """A rendered vagrant cluster brought up through the provider: each new VM's first boot
    runs the real Ignition engine on the pointer from hosts.json, which fetches the full
    config from provision's server over loopback and writes its files: per-host names and the
    private address for kubelet and flannel, workers included."""
    need_ignition_engine()
    validator = which_or_fail("ignition-validate")
    www = tmp_path / "www"
    www.mkdir()
    flannel_sha = make_tarball(www / "flannel-v0.27.4-linux-amd64.tar.gz", {"flanneld": stub_binary("flanneld")})
    fleet_sha = make_tarball(www / "fleet-v1.0.0-linux-amd64.tar.gz",
                             {"fleet-v1.0.0-linux-amd64/fleetd": stub_binary("fleetd"),
                              "fleet-v1.0.0-linux-amd64/fleetctl": stub_binary("fleetctl")})
    etcd_sha = make_tarball(www / "etcd-v3.5.17-linux-amd64.tar.gz",
                            {"etcd-v3.5.17-linux-amd64/etcd": stub_binary("etcd"),
                             "etcd-v3.5.17-linux-amd64/etcdctl": stub_binary("etcdctl")})
    cni_sha = make_tarball(www / "cni-plugins-linux-amd64-v1.6.2.tgz",
                           {f"./{p}": stub_binary(p) for p in ("bridge", "host-local", "loopback", "portmap")})
    (www / "kubelet").write_bytes(stub_binary("kubelet"))
    kubelet_sha = hashlib.sha512(stub_binary("kubelet")).hexdigest()
    roots = Path(tempfile.mkdtemp(prefix="pv-vagrant-vms-"))  # world-traversable: ssh keys are written as core
    roots.chmod(0o755)
    monkeypatch.setenv("FAKE_VAGRANT_IGNITION_ROOT", str(roots))
    try:
        with http_server(www) as url:
            text = textwrap.dedent(f"""\
                name: vm
                provider: {{name: vagrant, subnet: 192.168.62.0/24}}
                ssh: {{authorized_keys: ["{SSH_KEY}"]}}
                etcd: {{count: 1}}
                pools:
                  - {{name: masters, role: master, count: 1}}
                  - {{name: workers, role: worker, count: 2}}
                artifacts:
                  mirror: {url}
                  hashes: {{etcd: sha512-{etcd_sha}, flanneld: sha512-{flannel_sha}, fleetd: sha512-{fleet_sha},
                            kubelet: sha512-{kubelet_sha}, cni-plugins: sha512-{cni_sha}}}
                """)
            spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state")
            assert sorted(rendered.files) == ["vm-masters-0.ign", "vm-workers-0.ign", "vm-workers-1.ign"]
            assert all(len(data) > BOOT_CONFIG_LIMIT * 10 for data in rendered.files.values())
            provider = loopback_provider(spec, tmp_path / "work")
            provider.create_hosts(list(hosts), {h.name: rendered.config_for(h.name) for h in hosts})
        settings = json.loads((provider.project / "hosts.json").read_text())
        for entry in settings["hosts"]:
            pointer = entry["boot_config"].encode()
            assert len(pointer) < BOOT_CONFIG_LIMIT
            (tmp_path / "pointer.ign").write_bytes(pointer)
            checked = subprocess.run([validator, str(tmp_path / "pointer.ign")], capture_output=True, text=True)
            assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stderr
        booted = json.loads(fake_vagrant.read_text())[str(provider.project)]
        for host in hosts:
            logs = sorted((roots / f"{host.name}.ignition").glob("*.log"))
            assert booted[host.name]["ignition"] == "ok" and booted[host.name]["engine"] == "real", \
                [log.read_text()[-2000:] for log in logs]
            root = roots / host.name
            assert (root / "etc/hostname").read_text() == f"{host.name}\n"
            flannel = env_file((root / "etc/flannel/flanneld.env").read_text())
            assert flannel["FLANNELD_IFACE"] == flannel["FLANNELD_PUBLIC_IP"] == host.address
            kubelet = env_file((root / "etc/kubernetes/kubelet.env").read_text())["KUBELET_ARGS"].split()
            assert f"--node-ip={host.address}" in kubelet
            assert ("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubeconfig" in kubelet) == (host.role == "worker")
            assert (root / "opt/bin/kubelet").read_bytes() == stub_binary("kubelet")
            assert SSH_KEY.split()[1] in (root / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    finally:
        shutil.rmtree(roots, ignore_errors=True)


def test_a_pointer_with_a_wrong_hash_fails_in_the_real_engine(tmp_path):
    need_ignition_engine()
    full = configs_for(plan(vagrant_spec(), {}).create[:1])
    full_config = next(iter(full.values()))
    with ConfigServer("127.0.0.1", [full_config]) as server:
        good = pointer_config(server.url(full_config), full_config)
        root, proc = apply_ignition(good, tmp_path / "good")
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert (root / "etc/hostname-hint").exists()
        wrong = pointer_config(server.url(full_config), full_config + b" ")
        _, proc = apply_ignition(wrong, tmp_path / "wrong")
        assert proc.returncode != 0
        # Only the exact content-addressed path answers.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=2)


def test_the_server_binds_the_private_address_before_the_network_exists():
    """The host-only interface appears only while `vagrant up` creates it: binding its address
    must not need it to exist yet (IP_FREEBIND)."""
    with ConfigServer("192.168.63.254", [b"{}"]) as server:
        assert server.port > 0 and server.url(b"{}").startswith("http://192.168.63.254:")


def test_a_stopped_vm_is_started_again(tmp_path, fake_vagrant):
    spec = vagrant_spec(workers=1)
    provider = loopback_provider(spec, tmp_path / "work")
    hosts = plan(spec, {}).create
    provider.create_hosts(hosts, configs_for(hosts))
    subprocess.run(["vagrant", "halt", hosts[-1].name], env=dict(os.environ, VAGRANT_CWD=str(provider.project)),
                   check=True)
    assert {r.name: r.state for r in provider.list_hosts()}[hosts[-1].name] == "stopped"
    provider.start_hosts([h.name for h in hosts])  # what the wait phase does
    assert all(r.state == "running" for r in provider.list_hosts())
    subprocess.run(["vagrant", "halt"], env=dict(os.environ, VAGRANT_CWD=str(provider.project)), check=True)
    records = provider.create_hosts(hosts, configs_for(hosts))  # a re-run of up
    assert all(r.state == "running" for r in records)
    vms = json.loads(fake_vagrant.read_text())[str(provider.project)]
    assert vms[hosts[-1].name]["boots"] == 3 and vms[hosts[0].name]["boots"] == 2


def test_the_stand_in_refuses_what_vagrant_virtualbox_and_libvirt_refuse(tmp_path, fake_vagrant):
    hosts = lambda spec: plan(spec, {}).create  # noqa: E731
    # VirtualBox 6.1.28+: host-only networks only inside 192.168.56.0/21 (provider check bypassed).
    old_default = vagrant_spec(subnet="172.17.8.0/24")
    with pytest.raises(ActionError, match="not within the allowed ranges"):
        loopback_provider(old_default, tmp_path / "a").create_hosts(hosts(old_default), configs_for(hosts(old_default)))
    # libvirt: a private network on docker0's range (with the box installed).
    Path(f"{fake_vagrant}.boxes").write_text(json.dumps(["flatcar-stable-libvirt"]))
    on_docker = vagrant_spec("libvirt", subnet="172.17.8.0/24")
    with pytest.raises(ActionError, match="already in use"):
        loopback_provider(on_docker, tmp_path / "b").create_hosts(hosts(on_docker), configs_for(hosts(on_docker)))
    # A box that is neither installed nor downloadable.
    Path(f"{fake_vagrant}.boxes").write_text("[]")
    no_box = vagrant_spec("libvirt", box="flatcar-stable")
    with pytest.raises(ActionError, match="box 'flatcar-stable' could not be found"):
        loopback_provider(no_box, tmp_path / "c").create_hosts(hosts(no_box), configs_for(hosts(no_box)))
    # The whole config in the guest property (the old way) is refused by VirtualBox.
    spec = vagrant_spec(workers=0)
    provider = loopback_provider(spec, tmp_path / "d")
    host = hosts(spec)[0]
    provider.write_project({host.name: {"name": host.name, "pool": host.pool, "role": host.role, "index": 0,
                                        "address": host.address, "boot_config": json.dumps({"x": "y" * 2048})}})
    with pytest.raises(ActionError, match="VERR_TOO_MUCH_DATA"):
        provider._vagrant("up", "--provider", "virtualbox", host.name)


@pytest.mark.parametrize("options, field, words", [
    ({"subnet": "172.17.8.0/24"}, "provider.subnet", "192.168.56.0/21"),
    ({"vm_provider": "libvirt"}, "provider.box", "Flatcar publishes no libvirt box"),
    ({"box": "bad box"}, "provider.box", "box name"),
    ({"box_url": "https://x/y.box; rm -rf /"}, "provider.box_url", "URL"),
])
def test_validate_refuses_what_vagrant_cannot_boot(cli, tmp_path, options, field, words):
    path = tmp_path / "vm.yaml"
    path.write_text(json.dumps({"name": "vm", "provider": {"name": "vagrant", **options},
                                "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
                                "pools": [{"name": "masters", "role": "master", "count": 1}]}))
    result = cli("validate", path)
    assert result.code == 2
    assert f"{field}:" in result.err and words in result.err
    assert "Traceback" not in result.err


def test_the_defaults_boot_flatcar_on_virtualbox(cli, tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text(json.dumps({"name": "vm", "provider": {"name": "vagrant"}, "ssh": {"authorized_keys": [SSH_KEY]},
                                "etcd": {"count": 1}, "pools": [{"name": "masters", "role": "master", "count": 1}]}))
    assert cli("validate", path).code == 0
    spec = make_spec({"name": "vagrant"})
    assert VagrantProvider(spec).box() == ("flatcar-stable", FLATCAR_STABLE_BOX)
    assert spec.provider.options.vm_provider == "virtualbox"


def test_preflight_refuses_a_subnet_this_machine_already_uses(tmp_path):
    """Checked against this machine's real interfaces (`ip addr`): loopback holds 127.0.0.0/8."""
    which_or_fail("ip")
    clash = vagrant_spec("libvirt", subnet="127.1.0.0/24")
    with pytest.raises(UserError, match=r"provider.subnet: 127.1.0.0/24 overlaps a network of this machine \(lo "):
        get_provider(clash, tmp_path, preflight=True)
    get_provider(vagrant_spec("libvirt", subnet="192.168.63.0/24"), tmp_path, preflight=True)


def test_vagrant_refuses_cloud_config(tmp_path):
    spec = make_spec({"name": "vagrant"}, os={"family": "flatcar", "config": "cloud-config"})
    with pytest.raises(UserError, match="os.config: the vagrant provider hands over Ignition configs only"):
        get_provider(spec, tmp_path)
