"""The vagrant provider: the generated project passes the real `vagrant validate` for libvirt
and VirtualBox, and each VM is handed exactly the Ignition config the render wrote for it.
(`vagrant up` needs a hypervisor, which these machines lack: lifecycle calls go to the
recording stand-in in fake_vagrant.py, see conftest.)"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from provision.errors import UserError
from provision.phases import RunContext
from provision.phases.machines import apply_plan
from provision.plan import plan
from provision.providers import get_provider
from provision.providers.vagrant import VagrantProvider
from provision.state import LocalStateStore
from provision.ui import UI

from tests.real import require

from .conftest import configs_for, make_spec

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


def project_for(spec, tmp_path, hosts=None):
    provider = VagrantProvider(spec, tmp_path / "work")
    hosts = hosts if hosts is not None else plan(spec, {}).create
    configs = configs_for(hosts)
    (provider.project / "ignition").mkdir(parents=True)
    entries = {}
    for h in hosts:
        (provider.project / "ignition" / f"{h.name}.ign").write_bytes(configs[h.name])
        entries[h.name] = {"name": h.name, "pool": h.pool, "role": h.role, "index": h.index, "address": h.address,
                           "ignition": f"ignition/{h.name}.ign"}
    provider.write_project(entries)
    return provider


def validate(project, env):
    return subprocess.run(["vagrant", "validate"], cwd=project, env=dict(env, VAGRANT_CWD=str(project)),
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("hypervisor", ["libvirt", "virtualbox"])
def test_generated_project_passes_vagrant_validate(tmp_path, hypervisor):
    spec = make_spec({"name": "vagrant", "vm_provider": hypervisor})
    provider = project_for(spec, tmp_path)
    proc = validate(provider.project, vagrant_env(tmp_path, hypervisor))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_vagrant_validate_catches_a_broken_setting(tmp_path):
    spec = make_spec({"name": "vagrant", "box": "flatcar-stable"})
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


def test_each_vm_gets_the_config_the_render_wrote(tmp_path, fake_vagrant):
    """Through the machines phase: rendered blobs in the state store -> VMs -> the file each VM
    boots with, for libvirt (fw_cfg) and VirtualBox (guest property)."""
    spec = make_spec({"name": "vagrant", "subnet": "172.31.9.0/24"}, workers=2)
    store = LocalStateStore(spec.name, tmp_path / "state")
    state = store.read()
    target = plan(spec, state)
    index = {}
    for host in target.create:
        file_name = f"{host.name}.ign" if host.role != "worker" else "workers.ign"
        index[host.name] = {"pool": host.pool, "role": host.role, "config": file_name}
        store.write_blob(f"rendered/{file_name}", configs_for([host])[host.name])
    store.write_blob("rendered/index.json", json.dumps({"hosts": index}).encode())
    ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
    result = apply_plan(ctx, target)
    assert sorted(result["created"]) == sorted(h.name for h in target.create)

    project = store.workdir / "vagrant"
    calls = recorded_calls(project)
    fw_cfg, guest_property, addresses = {}, {}, {}
    for call in calls:
        path = call["path"]
        if "define" not in path[:-1]:
            continue
        vm = path[path.index("define") + 1]
        if path[-1] == "qemuargs" and call["kw"]["value"].startswith("name="):
            fw_cfg[vm] = call["kw"]["value"]
        if path[-1] == "customize" and call["args"][0][:4] == ["guestproperty", "set", "id", "/Ignition/Config"]:
            guest_property[vm] = call["args"][0][4]
        if path[-1] == "network":
            addresses[vm] = call["kw"]["ip"]
    for host in target.create:
        rendered = store.read_blob(f"rendered/{index[host.name]['config']}")
        name, file_arg = fw_cfg[host.name].split(",", 1)
        assert name == "name=opt/org.flatcar-linux/config"
        with open(file_arg[len("file="):], "rb") as handed_over:
            assert handed_over.read() == rendered
        assert guest_property[host.name] == rendered.decode()
        assert addresses[host.name] == host.address == ctx.state["hosts"][host.name]["address"]
    # Configs hold secrets: readable by the owner only.
    assert all((p.stat().st_mode & 0o077) == 0 for p in (project / "ignition").iterdir())


def test_vagrant_refuses_cloud_config(tmp_path):
    spec = make_spec({"name": "vagrant"}, os={"family": "flatcar", "config": "cloud-config"})
    with pytest.raises(UserError, match="os.config: the vagrant provider hands over Ignition configs only"):
        get_provider(spec, tmp_path)
