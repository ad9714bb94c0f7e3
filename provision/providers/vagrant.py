"""Vagrant VMs on this machine (VirtualBox or libvirt): a local development cluster.

The provider keeps a Vagrant project in `<workdir>/vagrant/`: the project's fixed `Vagrantfile`
(from the package's `vagrant/` folder) and `hosts.json` that the Vagrantfile reads (box,
memory, cpus, and one entry per host with its private address from the plan and its boot
config). It drives `vagrant up/status/destroy` in that project; `list_hosts` asks `vagrant
status` which VMs exist.

Boot configs: a VM's hypervisor gets a small pointer config (`ignition.config.replace` with a
URL and sha512, well under VirtualBox's 1 KiB guest-property cap, and no secret in it), and the
full config (no private key: those come over SSH in the secrets phase) is served over HTTP from this machine's address on the
private network only while `vagrant up` runs (see `vagrant_serve`). So no secret is in the
hypervisor's configuration, and QEMU under `qemu:///system` reads nothing from the 0700 state
directory: libvirt hands the pointer over as an fw_cfg string, not a file.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from ..spec.model import VagrantOptions
from ..render import pointer_config
from ..resources import data_dir
from ..files import secure_makedirs, write_file_atomic
from .base import START_HOSTS, HostRecord, Provider, network_inside
from .vagrant_serve import ConfigServer

STATE_MAP = {"running": "running", "poweroff": "stopped", "shutoff": "stopped", "saved": "stopped",
             "paused": "stopped", "aborted": "stopped", "suspended": "stopped", "preparing": "pending",
             "inaccessible": "unknown"}
# Where QEMU's fw_cfg hands the config to Ignition: Flatcar's own key, CoreOS's for the others.
FW_CFG_NAMES = {"flatcar": "opt/org.flatcar-linux/config", "fedora-coreos": "opt/com.coreos/config",
                "container-linux": "opt/com.coreos/config"}
TIMEOUT = 3600
# VirtualBox 6.1.28+ creates host-only networks only inside this range (unless the host's
# /etc/vbox/networks.conf allows more).
VIRTUALBOX_HOST_ONLY = ipaddress.ip_network("192.168.56.0/21")
# VirtualBox caps a guest property value (the `/Ignition/Config` boot config) at 1 KiB.
BOOT_CONFIG_LIMIT = 1024
# Flatcar publishes a VirtualBox box per channel next to each release's images.
FLATCAR_BOX_URL = "https://{channel}.release.flatcar-linux.net/amd64-usr/current/flatcar_production_vagrant.box"
BOX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
BOX_URL_RE = re.compile(r"^(https?|file)://[^\s\"'\\`$]+$")
CHANNEL_RE = re.compile(r"^[a-z]+$")


class VagrantProvider(Provider):
    """One VM per host through the `vagrant` command (no user-data limit: the full config is
    served to each VM at first boot, the hypervisor only holds a pointer to it)."""

    name = "vagrant"
    options: VagrantOptions  # the spec's provider options, typed
    optional_capabilities = frozenset({START_HOSTS})
    user_data_limit = None
    #: address the config server binds and the pointer configs name; None: the host's address
    #: on the private network (the first address of provider.subnet)
    config_address: str | None = None

    def check(self) -> list[tuple[str, str]]:
        o = self.options
        problems = []
        if self.spec.os.config != "ignition":
            problems.append(("os.config", "the vagrant provider hands over Ignition configs only"))
        if o.memory < 512:
            problems.append(("provider.memory", f"at least 512 MiB (got {o.memory})"))
        if o.cpus < 1:
            problems.append(("provider.cpus", f"at least 1 (got {o.cpus})"))
        if o.vm_provider == "virtualbox" and not network_inside(o.subnet, str(VIRTUALBOX_HOST_ONLY)):
            problems.append(("provider.subnet", f"VirtualBox (6.1.28 and later) allows host-only networks only "
                                                f"inside {VIRTUALBOX_HOST_ONLY} (192.168.56.0 to 192.168.63.255); "
                                                f"got {o.subnet}, pick e.g. 192.168.60.0/24"))
        if o.box is None:
            if o.vm_provider == "libvirt":
                problems.append(("provider.box", "required with vm_provider libvirt: Flatcar publishes no libvirt "
                                                 "box; build one, add it with `vagrant box add NAME FILE` and name "
                                                 "it here (or give box_url)"))
            elif self.spec.os.family != "flatcar":
                problems.append(("provider.box", f"required with os.family {self.spec.os.family}: only Flatcar "
                                                 "publishes a VirtualBox box"))
            elif not CHANNEL_RE.match(self.spec.os.channel):
                problems.append(("os.channel", f"not a Flatcar channel name (got {self.spec.os.channel!r})"))
        elif not BOX_NAME_RE.match(o.box):
            problems.append(("provider.box", f"a Vagrant box name: letters, digits and ._/- (got {o.box!r})"))
        if o.box_url is not None and not BOX_URL_RE.match(o.box_url):
            problems.append(("provider.box_url", f"an https://, http:// or file:// URL without spaces or quotes "
                                                 f"(got {o.box_url!r})"))
        return problems

    def preflight(self) -> list[tuple[str, str]]:
        """The private network must not overlap a network of this machine (docker0's
        172.17.0.0/16, a VPN...): VirtualBox and libvirt refuse it, or the VMs become
        unreachable. The hypervisor's own interface for this very network (the host at the
        subnet's first address, made by an earlier `up` or shared with another project) is fine."""
        if self.check() or shutil.which("ip") is None:
            return []
        from .local.net import ip_json
        subnet = ipaddress.ip_network(self.options.subnet)
        ours = ipaddress.ip_interface(f"{next(subnet.hosts())}/{subnet.prefixlen}")
        clash = []
        for link in ip_json("addr", "show"):
            name = link.get("ifname", "")
            for a in link.get("addr_info", []):
                if a.get("family") != "inet":
                    continue
                address = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
                if not address.network.overlaps(subnet):
                    continue
                if address == ours and name.startswith(("vboxnet", "virbr")):
                    continue
                clash.append(f"{name} {address}")
        if clash:
            return [("provider.subnet", f"{self.options.subnet} overlaps a network of this machine "
                                        f"({', '.join(clash)}); choose another subnet")]
        return []

    @property
    def project(self) -> Path:
        if self.workdir is None:
            raise ActionError("vagrant: no work directory for the cluster's Vagrant project")
        return Path(self.workdir) / "vagrant"

    def box(self) -> tuple[str, str | None]:
        """(box name, box URL or None): the spec's, or Flatcar's VirtualBox box of the channel."""
        o = self.options
        if o.box:
            return o.box, o.box_url
        channel = self.spec.os.channel
        return f"flatcar-{channel}", o.box_url or FLATCAR_BOX_URL.format(channel=channel)

    def host_address(self) -> str:
        """This machine's address on the VMs' private network: where VMs fetch their configs."""
        if self.config_address:
            return self.config_address
        return str(next(ipaddress.ip_network(self.options.subnet).hosts()))

    # -- the generated project ---------------------------------------------------------------
    def _read_hosts(self) -> dict[str, dict[str, Any]]:
        path = self.project / "hosts.json"
        if not path.exists():
            return {}
        return {h["name"]: h for h in json.loads(path.read_text()).get("hosts", [])}

    def settings(self, hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The document the Vagrantfile reads (deterministic: hosts sorted by name)."""
        o = self.options
        box, box_url = self.box()
        return {"box": box, "box_url": box_url, "memory": o.memory, "cpus": o.cpus,
                "ssh_user": self.spec.ssh.user, "vm_provider": o.vm_provider,
                "fw_cfg_name": FW_CFG_NAMES[self.spec.os.family],
                "hosts": [dict(hosts[n]) for n in sorted(hosts)]}

    def write_project(self, hosts: Mapping[str, Mapping[str, Any]]) -> None:
        """Vagrantfile and hosts.json into the project (0700 directory)."""
        secure_makedirs(self.project)
        template = (data_dir("vagrant") / "Vagrantfile").read_bytes()
        write_file_atomic(self.project / "Vagrantfile", template, 0o644)
        data = json.dumps(self.settings(hosts), indent=2, sort_keys=True).encode() + b"\n"
        write_file_atomic(self.project / "hosts.json", data, 0o600)
        # Earlier versions kept full configs (private keys) here for the hypervisor to read.
        shutil.rmtree(self.project / "ignition", ignore_errors=True)

    def _vagrant(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        if shutil.which("vagrant") is None:
            raise ActionError("vagrant: the `vagrant` command is not installed")
        env = dict(os.environ, VAGRANT_CWD=str(self.project), VAGRANT_DEFAULT_PROVIDER=self.options.vm_provider)
        try:
            proc = subprocess.run(["vagrant", *args], cwd=self.project, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ActionError(f"vagrant {args[0]} did not finish within {TIMEOUT}s; run the command again "
                              "(hosts that exist are kept)") from None
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise ActionError(f"vagrant {args[0]} failed (exit {proc.returncode}): " + " | ".join(tail))
        return proc

    def _states(self) -> dict[str, str]:
        """Vagrant's own state of every VM the project defines (running, poweroff, not_created...)."""
        if not self._read_hosts():
            return {}
        proc = self._vagrant("status", "--machine-readable")
        states: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            parts = line.split(",")
            if len(parts) >= 4 and parts[2] == "state" and parts[1]:
                states[parts[1]] = parts[3]
        return states

    # -- hosts -------------------------------------------------------------------------------
    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        """Bring up every host of `hosts` that is not running: new VMs boot with a pointer to
        their config, served while `vagrant up` runs; stopped ones are started again."""
        known = self._read_hosts()
        for host in hosts:
            if not host.address:
                raise UserError(f"provider.subnet: host {host.name} has no address from the plan")
            entry = dict(known.get(host.name, {}))
            entry.update({"name": host.name, "pool": host.pool, "role": host.role, "index": host.index,
                          "address": host.address})
            known[host.name] = entry
        states = self._states()
        todo = [h for h in hosts if states.get(h.name, "not_created") != "running"]
        if todo:
            try:
                server = ConfigServer(self.host_address(), [configs[h.name] for h in todo])
            except OSError as err:
                raise ActionError(f"vagrant: cannot serve the VMs' configs on {self.host_address()} "
                                  f"(provider.subnet's first address): {err}") from None
            try:
                for host in todo:
                    boot = pointer_config(server.url(configs[host.name]), configs[host.name])
                    # It lands in a libvirt domain XML attribute (vagrant-libvirt does not escape)
                    # and a VBoxManage argument: JSON of a URL and a hex digest holds none of these.
                    if any(c in boot for c in b"'<>&\n"):
                        raise ActionError(f"vagrant: the pointer config of {host.name} holds a character "
                                          "that cannot reach the hypervisor unescaped")
                    if len(boot) > BOOT_CONFIG_LIMIT:
                        raise ActionError(f"vagrant: the pointer config of {host.name} is {len(boot)} bytes, over "
                                          f"VirtualBox's guest property limit of {BOOT_CONFIG_LIMIT}")
                    known[host.name]["boot_config"] = boot.decode()
                self.write_project(known)
                with server:
                    self.log(f"vagrant up {len(todo)} VM(s) with {self.options.vm_provider}; configs served on "
                             f"http://{server.address}:{server.port} until it returns")
                    self._vagrant("up", "--provider", self.options.vm_provider, *[h.name for h in todo])
            finally:
                server.close()
        else:
            self.write_project(known)
        records = {r.name: r for r in self.list_hosts()}
        missing = [h.name for h in hosts if h.name not in records]
        if missing:
            raise ActionError(f"vagrant up reported success but these VMs do not exist: {', '.join(missing)}")
        return [records[h.name] for h in hosts]

    def start_hosts(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Start the named VMs that exist but do not run (halted, aborted, saved): `vagrant up`
        boots them again (not a first boot: Ignition does not run, no config is served)."""
        states = self._states()
        stopped = sorted(n for n in names if states.get(n, "not_created") not in ("running", "not_created"))
        if stopped:
            self.log(f"vagrant up {len(stopped)} stopped VM(s): {', '.join(stopped)}")
            self._vagrant("up", "--provider", self.options.vm_provider, *stopped)
        return {n: (["vm"] if n in stopped else []) for n in names}

    def list_hosts(self) -> list[HostRecord]:
        known = self._read_hosts()
        records = []
        for name, state in sorted(self._states().items()):
            if state == "not_created":
                continue
            host = known.get(name, {})
            records.append(HostRecord(name=name, pool=host.get("pool", ""), role=host.get("role", ""),
                                      provider_id=name, state=STATE_MAP.get(state, "unknown"),
                                      private_address=host.get("address")))
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        known = self._read_hosts()
        names = [n for n in names if n in known]
        if not names:
            return
        self.log(f"vagrant destroy {len(names)} VM(s)")
        self._vagrant("destroy", "--force", *names)
        for name in names:
            known.pop(name, None)
        self.write_project(known)

    def teardown(self) -> None:
        """With no VM left, the project goes too (Vagrant's own `.vagrant` bookkeeping included)."""
        if self.project.exists() and not self.list_hosts():
            shutil.rmtree(self.project)
