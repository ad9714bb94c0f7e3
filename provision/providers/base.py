"""The one interface every provider implements (libcloud style: one driver per module).

A provider creates, lists, waits for and destroys a cluster's hosts. Every resource it makes
carries tags (or metadata) naming cluster, pool, role and host, so `list_hosts` finds the
cluster from the cloud alone: lost state is recoverable and orphans are visible.

Providers are registered in `provision.providers.PROVIDERS` and checked by one shared
contract test (`tests/providers/test_contract.py`).
"""
from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..plan import HostPlan
if TYPE_CHECKING:  # annotations only: the CLI's start-up lists the providers
    from ..spec import Spec

# Tag keys every resource carries.
TAG_CLUSTER = "provision:cluster"
TAG_POOL = "provision:pool"
TAG_ROLE = "provision:role"
TAG_HOST = "provision:host"


@dataclass(frozen=True)
class HostRecord:
    """A host as the provider sees it."""

    name: str
    pool: str
    role: str
    provider_id: str
    state: str  # pending | running | stopped | terminated | failed (the cloud gave up on it) | unknown
    private_address: str | None = None
    public_address: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str | None:
        """The address provision reaches the host on."""
        return self.public_address or self.private_address

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data


@dataclass(frozen=True)
class UserDataLimit:
    """What a cloud accepts as user data: at most `max_bytes`, counted `raw` or after base64."""

    max_bytes: int
    counted: str = "raw"  # raw | base64

    def size_of(self, data: bytes) -> int:
        return len(data) if self.counted == "raw" else 4 * ((len(data) + 2) // 3)

    def fits(self, data: bytes) -> bool:
        return self.size_of(data) <= self.max_bytes


# Optional abilities a provider declares in `Provider.optional_capabilities`; each is a method of
# `Provider` with a no-op default, overridden by the providers that declare it.
START_HOSTS = "start_hosts"  # start hosts that exist but stopped, and units that died
HOST_KEYS = "host_keys"  # knows a host's SSH host key before anyone connects
UNIT_STATES = "unit_states"  # reports the state of each unit on a host
FILE_STATES = "file_states"  # reads mode, owner and sha256 of a host's files without SSH
CAPABILITIES = frozenset({START_HOSTS, HOST_KEYS, UNIT_STATES, FILE_STATES})


def network_inside(inner: str, outer: str) -> bool:
    """Whether CIDR `inner` lies inside CIDR `outer`; False across IPv4 and IPv6 (where
    `subnet_of` would raise TypeError)."""
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.subnet_of(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.subnet_of(b)
    return False


def host_tags(cluster: str, host: HostPlan) -> dict[str, str]:
    return {TAG_CLUSTER: cluster, TAG_POOL: host.pool, TAG_ROLE: host.role, TAG_HOST: host.name}


class Provider(ABC):
    """Base class of every provider. Methods are idempotent: calling one again after a failure
    repairs rather than duplicates."""

    name: str = "abstract"
    #: user-data limit, or None when configs are handed over another way (local, vagrant)
    user_data_limit: UserDataLimit | None = None
    #: first-boot config formats (`os.config`) the provider's hosts can boot from
    config_formats: tuple[str, ...] = ("ignition", "cloud-config")
    #: whether `ensure_api_endpoint` makes a cloud load balancer (else nodes use the node-local proxy)
    api_load_balancer: bool = False
    #: whether every host gets the address the plan chose for it (`HostPlan.address`) where the
    #: plan chooses one, so configs can name hosts by address. False when the cloud assigns every
    #: address itself (DigitalOcean): configs then name hosts by host name, and the `hosts`
    #: phase writes those names with the addresses the cloud gave into each host's /etc/hosts.
    plans_addresses: bool = True
    #: optional abilities (a subset of `CAPABILITIES`); callers ask this set, never the methods
    optional_capabilities: frozenset[str] = frozenset()

    def __init__(self, spec: Spec, workdir: Path | None = None, log: Callable[[str], None] | None = None):
        self.spec = spec
        self.options = spec.provider.options
        self.workdir = workdir  # local scratch directory for this cluster (a pathlib.Path)
        self.log = log or (lambda message: None)

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        """Provider-specific problems with the spec as (field path, message); empty when fine.
        Spec only: `validate` runs it on any machine."""
        return []

    def preflight(self) -> list[tuple[str, str]]:
        """Problems of this machine or account that would stop the provider acting (missing
        credentials, a network already in use), as (field path, message). Run before a verb
        acts, so it exits 2 with nothing created; not by `validate`, which checks the spec alone."""
        return []

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create or reuse shared resources (network, security group, key pair, bridge)."""

    @abstractmethod
    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        """Create `hosts`, each booting with `configs[host.name]`. Hosts sharing one config
        (a worker pool) are created in as few API calls as the cloud allows. A host that
        already exists (by tag or name) is returned, not created again."""

    @abstractmethod
    def list_hosts(self) -> list[HostRecord]:
        """Every live host tagged with this cluster, found from the cloud alone."""

    def wait_running(self, names: Sequence[str], timeout: float = 600.0) -> list[HostRecord]:
        """Block until every host in `names` runs; returns their records."""
        import time
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            records = {h.name: h for h in self.list_hosts()}
            if all(n in records and records[n].state == "running" for n in names):
                return [records[n] for n in names]
            if time.monotonic() > deadline:
                pending = sorted(n for n in names if records.get(n) is None or records[n].state != "running")
                from ..errors import ActionError
                raise ActionError(f"{self.name}: hosts not running after {timeout:.0f}s: {', '.join(pending)}")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    @abstractmethod
    def destroy_hosts(self, names: Sequence[str]) -> None:
        """Destroy the named hosts of this cluster; names that do not exist are ignored. A master
        leaves the API load balancer first (`deregister_api_targets`)."""

    def teardown(self) -> None:
        """After every host is gone: remove shared resources `prepare` made."""

    # -- optional ----------------------------------------------------------------------------
    def artifacts(self) -> dict[str, dict[str, str]] | None:
        """Binaries this provider serves itself, {name: {"url", "sha512"}}; None when hosts
        download from `artifacts.mirror` or upstream."""
        return None

    def ensure_api_endpoint(self) -> dict[str, str] | None:
        """Create or find the cloud load balancer in front of every master's kube-apiserver
        (TCP 6443), tagged like the hosts; returns {"dns_name", ...} for state, or None when the
        provider has none (nodes then reach the masters through the node-local proxy)."""
        return None

    def find_api_endpoint(self) -> dict[str, str] | None:
        """The load balancer `ensure_api_endpoint` made, found from the cloud alone (by name and
        tag), or None; never creates anything."""
        return None

    def register_api_targets(self, masters: Sequence[HostRecord]) -> None:
        """Put `masters` behind the load balancer `ensure_api_endpoint` made (idempotent)."""

    def deregister_api_targets(self, names: Sequence[str]) -> None:
        """Take the named hosts off the load balancer `ensure_api_endpoint` made, before they go:
        `destroy_hosts` calls it, so a master removed by scaling down, replaced, or taken down
        stops receiving API traffic; names not on it are ignored (idempotent). Default: nothing
        (no load balancer, or one that drops a destroyed host itself, as AWS's NLB target group
        drops a terminated instance)."""

    def config_url(self, name: str, config: bytes) -> str | None:
        """Where the full config `name` (too large for user data) will be served for hosts to
        fetch at first boot (an https or s3 URL for an Ignition pointer config), or None when
        this provider has nowhere to serve it. `serve_config` must be called before hosts boot."""
        return None

    def forget_served_configs(self) -> int:
        """Delete the configs `serve_config` stored once every host has booted (the `wait`
        phase calls it when all hosts answer SSH); returns how many went. Default: none served."""
        return 0

    def serve_config(self, name: str, config: bytes, full_config: bytes) -> None:
        """Store `full_config` (the fitted form of `config`) at `config_url(name, config)`."""
        raise NotImplementedError(f"{self.name} cannot serve configs")

    def stop_agent(self, name: str) -> None:
        """Stop the host's load agent before the host goes (a replaced host must not report
        load for its name while its replacement boots). Default: the machine's own shutdown
        stops it."""

    def restart_units(self, name: str, units: Sequence[str]) -> bool:
        """Restart `units` on a running host after their files changed in place; False when
        the provider has no way of its own, so they are restarted over SSH with systemctl."""
        return False

    def artifact_notes(self) -> dict[str, str]:
        """{artifact name: what is really served under it}, for providers that serve binaries
        of this machine (`artifacts`); empty otherwise."""
        return {}

    # -- optional, declared in `optional_capabilities` ----------------------------------------
    def start_hosts(self, names: Sequence[str]) -> dict[str, list[str]]:
        """START_HOSTS: start the named hosts that exist but do not run (as a console would), and
        on running ones the units that stopped or died; returns {host: what was started}.
        Default: starts nothing."""
        return {}

    def host_public_key(self, name: str) -> str | None:
        """HOST_KEYS: the host's SSH host key (`ssh-ed25519 AAAA...`) for known_hosts, known
        without connecting; None when unknown (default: host keys are learnt on first contact)."""
        return None

    def unit_states(self, name: str) -> dict[str, dict[str, Any]]:
        """UNIT_STATES: {unit: {"state": running|exited|skipped|failed|activating|dead,
        "reason"...}} of a host. Default: nothing known."""
        return {}

    def file_states(self, name: str, paths: Sequence[str]) -> dict[str, str | None]:
        """FILE_STATES: {path: "MODE:UID:GID SHA256"} of a host's regular files ("MODE:UID:GID
        dir" for a directory, None when absent), as the roles' PathStates fact reads them over
        SSH; lets `status` see a file changed by hand. Default: nothing known ({})."""
        return {}


def compare(recorded: Mapping[str, Mapping[str, Any]], listed: Sequence[HostRecord]) -> dict[str, list[str]]:
    """Hosts the cloud has that state lacks (orphans), and hosts state has that the cloud lacks."""
    live = {h.name for h in listed if h.state not in ("terminated",)}
    return {"orphans": sorted(live - set(recorded)), "missing": sorted(set(recorded) - live)}
