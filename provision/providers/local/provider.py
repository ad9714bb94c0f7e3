"""The local provider: every host is a network namespace on a bridge of this machine.

A host gets its own address on the bridge (planned from `provider.subnet`), its own UTS name,
and a root directory under the cluster's workdir into which the real Ignition engine applies
the host's rendered config (fetch and files stages, exactly as first boot would) on top of a
minimal image (base users, Flatcar's `core` in sudo/docker, the image's sshd unit). "Booting" a
host starts its init (holding its namespaces), then every enabled unit of its root whose
binaries exist here, sshd included (its own host key, the authorized keys Ignition wrote), each
inside the host's namespaces with the root visible at the paths the unit names (see
launch and units). Units whose binaries are absent are recorded as skipped, never
faked.

Binaries the configs fetch come from a mirror the provider serves on the bridge address.
This module is the provider contract; each job it relies on has its module in this package.
Everything is found by name (namespaces, link aliases, launcher command lines), so `down`
removes it all even after `up` crashed.

Layout under `<workdir>/local/`: `hosts/<host>/{root,ignition,jobs,config.ign,host.json}`,
`mirror/` (links to the served binaries), `bin/setfiles` (the SELinux relabel shim Ignition
insists on running).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping, Sequence

from ... import etcd_binaries, faults
from ...errors import ActionError
from ...plan import HostPlan
from ...spec.model import LocalOptions
from ..base import FILE_STATES, HOST_KEYS, START_HOSTS, UNIT_STATES, HostRecord, Provider, host_tags
from . import ignition, net
from .image import SSHD_UNIT
from .ignition import IGNITION
from .mirror import ArtifactMirror
from .procs import alive, kill_all, pids_with_arg
from .supervisor import Supervisor

AGENT_UNIT = "provision-host-agent.service"
CREATE_PARALLEL = 4  # hosts created at once


class LocalProvider(Provider):
    """Hosts as network namespaces of this machine, booted from their Ignition configs."""

    name = "local"
    user_data_limit = None
    # The real Ignition engine applies each config; nothing here runs coreos-cloudinit.
    config_formats = ("ignition",)
    optional_capabilities = frozenset({START_HOSTS, HOST_KEYS, UNIT_STATES, FILE_STATES})
    options: LocalOptions  # the spec's provider options, typed

    # -- names and places ---------------------------------------------------------------------
    @property
    def cluster(self) -> str:
        return self.spec.name

    @property
    def base(self) -> Path:
        if self.workdir is None:
            raise ActionError("local: the provider needs the cluster's workdir")
        return Path(self.workdir).resolve() / "local"  # absolute: processes start in /

    @property
    def bridge(self) -> str:
        return (self.options.bridge or f"pv-{self.cluster}")[:15]

    @property
    def gateway(self) -> str:
        return str(net.gateway(self.options.subnet).ip)

    @property
    def mirror(self) -> ArtifactMirror:
        """The artifacts mirror this cluster's hosts fetch binaries from."""
        return ArtifactMirror(self.spec, self.base if self.workdir is not None else None, self.gateway, self.log)

    @property
    def mirror_url(self) -> str:
        return self.mirror.url

    @property
    def supervisor(self) -> Supervisor:
        """The processes of this cluster's hosts (init, unit launchers)."""
        return Supervisor(self.base / "hosts" if self.workdir is not None else None, self.netns)

    def host_dir(self, name: str) -> Path:
        return self.base / "hosts" / name

    def host_root(self, name: str) -> Path:
        """The directory Ignition wrote the host's files into (its `/`)."""
        return self.host_dir(name) / "root"

    def netns(self, name: str) -> str:
        return net.netns_name(self.cluster, name)

    # -- checks -------------------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.options.bridge and len(self.options.bridge) > 15:
            problems.append(("provider.bridge", f"at most 15 characters (got {len(self.options.bridge)})"))
        return problems

    def preflight(self) -> list[tuple[str, str]]:
        # Before anything is made: another interface in the subnet would clash with the bridge.
        # Once the cluster's own bridge exists this is a re-run (or down); prepare() still checks.
        if self.check() or not shutil.which("ip") or net.link_exists(self.bridge):
            return []
        problems = self._etcd_problems()
        clash = net.subnet_users(self.options.subnet, self.bridge)
        if clash:
            problems.append(("provider.subnet", f"{self.options.subnet} is already used on this machine "
                                                f"({', '.join(clash)}); choose another subnet"))
        return problems

    def _etcd_problems(self) -> list[tuple[str, str]]:
        """Hosts run this machine's etcd: one of the spec's series must be here (never another
        series served under the spec's version)."""
        series = etcd_binaries.series_of(self.spec.etcd.version)
        if etcd_binaries.newest("etcd", series) is None:
            return [("etcd.version", f"{self.spec.etcd.version}: the local provider serves this machine's etcd, "
                                     f"and {etcd_binaries.missing_series_message('etcd', series)}")]
        return []

    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise ActionError("local: network namespaces and Ignition need root; run provision as root")
        for tool in ("ip", "unshare", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise ActionError(f"local: {tool} is not installed (see README set-up)")
        if not os.access(IGNITION, os.X_OK):
            raise ActionError(f"local: the Ignition engine {IGNITION} is missing (Debian package ignition)")


    # -- artifacts ----------------------------------------------------------------------------
    def artifact_sources(self) -> dict[str, str]:
        """{artifact name: binary on this machine} for the names configs fetch."""
        return self.mirror.sources()

    def artifacts(self) -> dict[str, dict[str, str]]:
        return self.mirror.artifacts()

    def artifact_notes(self) -> dict[str, str]:
        return self.mirror.notes()

    # -- shared resources ---------------------------------------------------------------------
    def prepare(self) -> None:
        """The bridge with the gateway address, and the artifacts mirror on it."""
        self._require_root()
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        net.ensure_bridge(self.bridge, self.options.subnet, self.cluster)
        self.mirror.ensure()

    # -- hosts --------------------------------------------------------------------------------
    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        self.prepare()
        for host in hosts:
            if not host.address:
                raise ActionError(f"local: host {host.name} has no planned address")
            if host.name not in configs:
                raise ActionError(f"local: no rendered config for host {host.name}")
        # Side by side, a few at a time: a host's creation is mostly waiting on the programs it
        # runs (ip, the Ignition engine, its first units). Every host is tried; the first error
        # is raised once all are done (a re-run completes a host left half made).
        errors: list[ActionError] = []
        with ThreadPoolExecutor(max_workers=max(1, min(CREATE_PARALLEL, len(hosts)))) as pool:
            futures = [pool.submit(self._create_one, host, configs[host.name]) for host in hosts]
            for done, future in enumerate(as_completed(futures), 1):
                try:
                    future.result()
                except ActionError as err:
                    errors.append(err)
                faults.hosts_done(done, len(hosts))
        if errors:
            raise errors[0]
        records = {r.name: r for r in self.list_hosts()}
        return [records[h.name] for h in hosts if h.name in records]

    def _create_one(self, host: HostPlan, config: bytes) -> None:
        assert host.address  # create_hosts refused hosts without one
        hdir = self.host_dir(host.name)
        hdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ns = net.ensure_host_network(self.cluster, host.name, host.address, self.options.subnet, self.bridge)
        info = {"name": host.name, "pool": host.pool, "role": host.role, "address": host.address,
                "netns": ns, "tags": host_tags(self.cluster, host)}
        (hdir / "host.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        digest = hashlib.sha256(config).hexdigest()
        marker = hdir / "ignited"
        if not marker.is_file() and ignition.completed(hdir, self.host_root(host.name), config):
            marker.write_text(digest)  # a crash after Ignition finished: that first boot stands
        if not marker.is_file():
            self._ignite(host.name, ns, config)
            marker.write_text(digest)
            self.log(f"{host.name}: Ignition applied ({host.address})")
        elif marker.read_text() != digest:
            # Like a real machine: Ignition runs on first boot only; a new config needs a new host.
            self.log(f"{host.name}: keeps the config it first booted with (config changed since)")
        self.boot(host.name)

    def _ignite(self, name: str, ns: str, config: bytes) -> None:
        """A host's first boot: a fresh image root, then Ignition's stages of its config."""
        ignition.apply(name, ns, self.host_dir(name), self.host_root(name), self.base / "bin", config)

    # -- boot ---------------------------------------------------------------------------------
    def boot(self, name: str) -> list[str]:
        """Start the host's init, then its enabled units not running yet; returns those started."""
        return self.supervisor.boot(name)

    def unit_states(self, name: str) -> dict[str, dict[str, Any]]:
        """{unit: {"state": running|exited|skipped|failed|activating|dead, "reason"...}} of a host."""
        return self.supervisor.unit_states(name)

    def file_states(self, name: str, paths: Sequence[str]) -> dict[str, str | None]:
        """Read from the host's root directory; a symlink is never followed (it could point
        out of the root), and counts as absent, as anything else that is no file or directory."""
        root = self.host_root(name)
        out: dict[str, str | None] = {}
        for path in paths:
            target = root / path.lstrip("/")
            try:
                if ".." in Path(path).parts or any(p.is_symlink() for p in [target, *target.parents]
                                                   if p != root and root in p.parents):
                    raise FileNotFoundError(path)
                st = target.lstat()
                owner = f"{st.st_mode & 0o7777:o}:{st.st_uid}:{st.st_gid}"
                if stat.S_ISDIR(st.st_mode):
                    out[path] = f"{owner} dir"
                elif stat.S_ISREG(st.st_mode):
                    out[path] = f"{owner} {hashlib.sha256(target.read_bytes()).hexdigest()}"
                else:
                    out[path] = None
            except OSError:
                out[path] = None
        return out

    def _host_info(self, name: str) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.host_dir(name) / "host.json").read_text())
        return {}

    def host_public_key(self, name: str) -> str | None:
        """The host's SSH host key (`ssh-ed25519 AAAA...`), for a known_hosts file."""
        path = self.host_root(name) / "etc/ssh/ssh_host_ed25519_key.pub"
        with contextlib.suppress(OSError):
            return " ".join(path.read_text().split()[:2])
        return None


    def wait_running(self, names: Sequence[str], timeout: float = 600.0) -> list[HostRecord]:
        """Block until every host in `names` runs (its sshd's launcher runs it). A local host is
        up within a second or so of its boot: its own files are read every 50 ms, where the base
        class lists every host with a back-off that starts at half a second."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            pending = [n for n in pending if not self._sshd_running(n)]
            if pending and time.monotonic() > deadline:
                raise ActionError(f"local: hosts not running after {timeout:.0f}s: {', '.join(sorted(pending))}")
            if pending:
                time.sleep(0.05)
        records = {r.name: r for r in self.list_hosts()}
        return [records[n] for n in names if n in records]

    def _sshd_running(self, name: str) -> bool:
        sshd = self.unit_states(name).get(SSHD_UNIT, {})
        return sshd.get("state") == "running" and alive(sshd.get("launcher_pid"))

    def list_hosts(self) -> list[HostRecord]:
        records = []
        for host, ns in sorted(net.cluster_netns(self.cluster).items()):
            info = self._host_info(host) if self.workdir is not None else {}
            state = "unknown"
            if info:
                if self._sshd_running(host):
                    state = "running"
                elif (self.host_dir(host) / "ignited").is_file() and not self.supervisor.init_pid(host):
                    state = "stopped"  # booted once, its processes are gone (killed, machine rebooted)
                else:
                    state = "pending"
            records.append(HostRecord(name=host, pool=info.get("pool", ""), role=info.get("role", ""),
                                      provider_id=ns, state=state, private_address=info.get("address"),
                                      extra={"netns": ns, "tags": info.get("tags", {})}))
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        self.supervisor.stop_hosts(names)
        for name in names:
            net.delete_namespace(self.netns(name))
            net.delete_link(net.veth_names(self.cluster, name)[0])
            if self.workdir is not None and self.host_dir(name).exists():
                shutil.rmtree(self.host_dir(name))
            self.log(f"{name}: destroyed")

    def start_hosts(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Boot hosts from their roots: a stopped host starts whole (what starting a stopped VM
        does); a running one starts every enabled unit that is neither running nor skipped,
        leaving running units alone. Returns {host: units started}."""
        self.prepare()
        started = {}
        for done, name in enumerate(names, 1):
            started[name] = self.boot(name)
            if started[name]:
                self.log(f"{name}: started {', '.join(started[name])}")
            faults.hosts_done(done, len(names))
        return started

    def stop_unit(self, name: str, unit: str, timeout: float = 10.0) -> bool:
        """Stop one unit of a host as `systemctl stop` would; False when it was not running."""
        return self.supervisor.stop_unit(name, unit, timeout)

    def stop_agent(self, name: str) -> None:
        """Stop a host's load agent (headroom drains a host before removing it)."""
        self.stop_unit(name, AGENT_UNIT)

    def restart_units(self, name: str, units: Sequence[str]) -> bool:
        """Stop each unit, then boot starts every enabled unit that is not running (with the
        unit files and environment files as they are now): what `systemctl restart` does."""
        for unit in units:
            self.stop_unit(name, unit)
        self.boot(name)
        return True

    def set_link(self, name: str, up: bool) -> None:
        """Cut or restore a host's link to the bridge (partition tests, maintenance)."""
        net.set_link(self.cluster, name, up)

    def teardown(self) -> None:
        leftover = sorted(net.cluster_netns(self.cluster))
        if leftover:
            self.destroy_hosts(leftover)
        self.mirror.stop()
        if self.workdir is not None:
            kill_all(pids_with_arg(str(self.base / "hosts") + "/"), grace=1.0)
        for link in net.links_by_alias(self.cluster):
            net.delete_link(link)
        net.delete_link(self.bridge)
        if self.workdir is not None and self.base.exists():
            shutil.rmtree(self.base)
