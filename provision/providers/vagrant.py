"""Vagrant VMs on this machine (libvirt or VirtualBox): a local development cluster.

The provider keeps a Vagrant project in `<workdir>/vagrant/`: the project's fixed `Vagrantfile`
(from the package's `vagrant/` folder), `hosts.json` that the Vagrantfile reads (box, memory,
cpus, hypervisor hand-over key, and one entry per host with its private address from the plan),
and `ignition/<host>.ign`, each VM's config as the render wrote it. It drives
`vagrant up/status/destroy` in that project; `list_hosts` asks `vagrant status` which VMs exist.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from ..resources import data_dir
from ..state import secure_makedirs, write_file_atomic
from .base import HostRecord, Provider

STATE_MAP = {"running": "running", "poweroff": "stopped", "shutoff": "stopped", "saved": "stopped",
             "paused": "stopped", "aborted": "stopped", "suspended": "stopped", "preparing": "pending",
             "inaccessible": "unknown"}
# Where QEMU's fw_cfg hands the config to Ignition: Flatcar's own key, CoreOS's for the others.
FW_CFG_NAMES = {"flatcar": "opt/org.flatcar-linux/config", "fedora-coreos": "opt/com.coreos/config",
                "container-linux": "opt/com.coreos/config"}
TIMEOUT = 3600


class VagrantProvider(Provider):
    """One VM per host through the `vagrant` command (no user-data limit: configs are files)."""

    name = "vagrant"
    user_data_limit = None

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.spec.os.config != "ignition":
            problems.append(("os.config", "the vagrant provider hands over Ignition configs only"))
        if self.options.memory < 512:
            problems.append(("provider.memory", f"at least 512 MiB (got {self.options.memory})"))
        if self.options.cpus < 1:
            problems.append(("provider.cpus", f"at least 1 (got {self.options.cpus})"))
        return problems

    @property
    def project(self) -> Path:
        if self.workdir is None:
            raise ActionError("vagrant: no work directory for the cluster's Vagrant project")
        return Path(self.workdir) / "vagrant"

    # -- the generated project ---------------------------------------------------------------
    def _read_hosts(self) -> dict[str, dict[str, Any]]:
        path = self.project / "hosts.json"
        if not path.exists():
            return {}
        return {h["name"]: h for h in json.loads(path.read_text()).get("hosts", [])}

    def settings(self, hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The document the Vagrantfile reads (deterministic: hosts sorted by name)."""
        o = self.options
        return {"box": o.box, "box_url": o.box_url, "memory": o.memory, "cpus": o.cpus,
                "ssh_user": self.spec.ssh.user, "vm_provider": o.vm_provider,
                "fw_cfg_name": FW_CFG_NAMES[self.spec.os.family],
                "hosts": [dict(hosts[n]) for n in sorted(hosts)]}

    def write_project(self, hosts: Mapping[str, Mapping[str, Any]]) -> None:
        """Vagrantfile and hosts.json into the project (0700: the configs hold secrets)."""
        secure_makedirs(self.project)
        template = (data_dir("vagrant") / "Vagrantfile").read_bytes()
        write_file_atomic(self.project / "Vagrantfile", template, 0o644)
        data = json.dumps(self.settings(hosts), indent=2, sort_keys=True).encode() + b"\n"
        write_file_atomic(self.project / "hosts.json", data, 0o600)

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

    # -- hosts -------------------------------------------------------------------------------
    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        known = self._read_hosts()
        for host in hosts:
            if not host.address:
                raise UserError(f"provider.subnet: host {host.name} has no address from the plan")
            known[host.name] = {"name": host.name, "pool": host.pool, "role": host.role, "index": host.index,
                                "address": host.address, "ignition": f"ignition/{host.name}.ign"}
        secure_makedirs(self.project / "ignition")
        for host in hosts:
            write_file_atomic(self.project / "ignition" / f"{host.name}.ign", configs[host.name], 0o600)
        self.write_project(known)
        live = {r.name for r in self.list_hosts()}
        todo = [h.name for h in hosts if h.name not in live]
        if todo:
            self.log(f"vagrant up {len(todo)} VM(s) with {self.options.vm_provider}")
            self._vagrant("up", "--provider", self.options.vm_provider, *todo)
        records = {r.name: r for r in self.list_hosts()}
        missing = [h.name for h in hosts if h.name not in records]
        if missing:
            raise ActionError(f"vagrant up reported success but these VMs do not exist: {', '.join(missing)}")
        return [records[h.name] for h in hosts]

    def list_hosts(self) -> list[HostRecord]:
        known = self._read_hosts()
        if not known:
            return []
        proc = self._vagrant("status", "--machine-readable")
        states: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            parts = line.split(",")
            if len(parts) >= 4 and parts[2] == "state" and parts[1]:
                states[parts[1]] = parts[3]
        records = []
        for name, state in sorted(states.items()):
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
            (self.project / "ignition" / f"{name}.ign").unlink(missing_ok=True)
        self.write_project(known)

    def teardown(self) -> None:
        """With no VM left, the project goes too (Vagrant's own `.vagrant` bookkeeping included)."""
        if self.project.exists() and not self.list_hosts():
            shutil.rmtree(self.project)
