"""Rendering: one Ignition (or cloud-config) file per distinct machine config.

Per host for masters and dedicated etcd hosts, per pool for workers (a worker config carries
no per-host data: kubelet joins with the bootstrap token). Role templates live in
`ignition/` (`master.yaml`, `worker.yaml`, `etcd.yaml`, sharing `_*.yaml` fragments), the
files and units they name in `templates/`; both are jinja2 with StrictUndefined.

`render_cluster` is pure except for reading PKI blobs: the same spec, state and PKI give
byte-identical output (sorted keys, no timestamps).

No private key or token is in a config (what a host fetches at boot, Typhoon's model): role
templates mark those files `secret: true`; they are kept apart in `Rendered.secrets` and
`render_secrets` gives each host's, which the `secrets` phase delivers over SSH.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import jinja2

from .. import artifacts as artifacts_mod
from .. import pki, pki_ca
from ..errors import ActionError, UserError
from ..resources import data_dir
from . import cloudconfig, ignition, mounts, pool_provider
from .machine import File, Machine, Unit, _file, build_machine, parse_items, secret_items
from .userdata import FittedUserData, compress_ignition, fit_user_data, pointer_config

if TYPE_CHECKING:
    from ..pki import BlobSource
    from ..plan import HostPlan
    from ..spec import PoolSpec, Spec
    from ..state import StateStore

__all__ = ["Rendered", "render_cluster", "render_secrets", "render_files", "write_rendered", "fit_user_data", "FittedUserData",
           "compress_ignition", "pointer_config", "config_file_name", "INDEX"]

INDEX = "index.json"
ADDONS = ("index", "bootstrap-token.yaml", "kubelet-bootstrap.yaml", "node-autoapprove-bootstrap.yaml",
          "node-autoapprove-renewal.yaml")
# kube-proxy as a DaemonSet with its own ServiceAccount (no client key shared by every node).
KUBE_PROXY_ADDONS = ("kube-proxy-serviceaccount.yaml", "kube-proxy-clusterrolebinding.yaml",
                     "kube-proxy-configmap.yaml", "kube-proxy-daemonset.yaml")
# Cluster DNS: one API object per file, created in this order (see templates/addons/index).
COREDNS_ADDONS = ("coredns-serviceaccount.yaml", "coredns-clusterrole.yaml", "coredns-clusterrolebinding.yaml",
                  "coredns-configmap.yaml", "coredns-deployment.yaml", "coredns-service.yaml")
AGENT_INTERVAL = 10
# Providers whose hosts have more than one interface and a per-host private address that the
# node must use: every Vagrant VM's first interface is the same NAT address, so kubelet's node
# IP and flannel's interface and public IP name the host's private address, and workers get
# one config per host (elsewhere a worker config is per pool and carries no per-host data).
NODE_ADDRESS_PROVIDERS = ("vagrant",)
API_PROXY_IMAGE = "docker.io/library/haproxy:3.0-alpine"  # the image of the node-local API proxy


@dataclass
class Rendered:
    """`files`: config file name -> bytes; `index`: the spec contract's index.json document;
    `secrets`: config file name -> the secret files (path -> File) of the hosts of that config,
    which are not in it (delivered over SSH)."""

    files: dict[str, bytes] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, dict[str, File]] = field(default_factory=dict)

    def index_bytes(self) -> bytes:
        return (json.dumps(self.index, indent=2, sort_keys=True) + "\n").encode()

    def config_for(self, host: str) -> bytes:
        return self.files[self.index["hosts"][host]["config"]]

    def secrets_for(self, host: str) -> dict[str, File]:
        return self.secrets[self.index["hosts"][host]["config"]]


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """jinja2's compiled-template cache, in its private per-user temporary directory (0700,
    owner checked); an entry is used only while its template's source checksum matches. One
    that cannot be written costs only the compile again."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    # Compiling the role templates was a third of a cold render (P1, issue 11): like Python's
    # own __pycache__, compiled templates are kept between runs.
    try:
        return _BytecodeCache(pattern="provision-%s.cache")
    except (OSError, RuntimeError):  # no safe temporary directory: compile every run
        return None


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment per process, so templates are compiled (or loaded) once."""
    loader = jinja2.FileSystemLoader([str(data_dir("templates")), str(data_dir("ignition"))])
    # auto_reload off: the templates are the package's own and do not change while it runs, so
    # each use of a template is a dict lookup, not a stat of its file (some 400 per render).
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False, bytecode_cache=_bytecode_cache(), auto_reload=False)


def config_file_name(spec: Spec, role: str, pool: str, host: str | None) -> str:
    suffix = ".yaml" if spec.os.config == "cloud-config" else ".ign"
    return f"{host}{suffix}" if host else f"pool-{pool}{suffix}"


def _etcd_member(h: HostPlan) -> dict[str, str]:
    where = h.address or h.name
    return {
        "name": h.name,
        "client_url": f"https://{where}:2379",
        "peer_url": f"https://{where}:2380",
        # the planned address and loopback; without a planned address, every interface
        "listen_client_urls": (f"https://{h.address}:2379,https://127.0.0.1:2379" if h.address
                               else "https://0.0.0.0:2379"),
        "listen_peer_url": f"https://{h.address}:2380" if h.address else "https://0.0.0.0:2380",
    }


def _cluster_context(spec: Spec, state: Mapping[str, Any], store: BlobSource, hosts: Sequence[HostPlan]) -> dict[str, Any]:
    members = [_etcd_member(h) for h in hosts if h.etcd]
    if not members:
        raise UserError("etcd.count: the plan has no etcd member to render")
    masters = [h for h in hosts if h.role == "master"]
    if not masters:
        raise UserError("pools: the plan has no master to render")
    discovery = None
    if spec.etcd.discovery == "token":
        discovery = (state.get("etcd") or {}).get("discovery_token_url")
        if not discovery:
            raise ActionError("etcd.discovery: token, but state has no discovery token yet; the render phase "
                              "gets one from etcd.discovery_url (run `provision up SPEC --until render`)")
    token_id, token_secret = pki.bootstrap_token(store)
    token_expires = pki.bootstrap_token_expiry(store)
    flannel = json.dumps({"Backend": {"Type": spec.network.flannel.backend}, "Network": spec.network.pod_cidr},
                         sort_keys=True, separators=(",", ":"))
    return pool_provider.with_burst_kube_proxy(spec, state, {  # burst nodes' kube-proxy, when it differs
        "spec": spec, "cluster": spec.name,
        "etcd_members": members,
        "etcd_endpoints": ",".join(m["client_url"] for m in members),
        "apiserver_etcd_endpoints": ",".join(m["client_url"] for m in members),
        "etcd_initial_cluster": ",".join(f"{m['name']}={m['peer_url']}" for m in members),
        "discovery_token_url": discovery,
        # members that replaced one of a running etcd (`up`'s rollout: member remove, then add)
        "etcd_joined": tuple((state.get("etcd") or {}).get("joined") or ()),
        "local_api_url": "https://127.0.0.1:6443",
        "token_id": token_id, "token_secret": token_secret,
        "token_expiration": pki.format_expiry(token_expires) if token_expires else None,
        "flannel_config": flannel,
        "agent_interval": AGENT_INTERVAL,
        "agent_ttl": int(spec.headroom.load_ttl) if spec.headroom is not None else 60,
        "os_services": spec.os.config == "cloud-config",
        "bin_dir": artifacts_mod.BIN_DIR, "download_dir": artifacts_mod.DOWNLOAD_DIR,
        "addons": ADDONS + KUBE_PROXY_ADDONS + COREDNS_ADDONS,
        "first_master": masters[0].name if masters else None,
        "pod_network_plugins": artifacts_mod.POD_NETWORK_PLUGINS, "cni_bin_dir": artifacts_mod.CNI_BIN_DIR,
        **_api_endpoint(spec, masters, state),
        "outside": pool_provider.outside_view(state, masters),  # for pools of another provider
    })


def _api_endpoint(spec: Spec, masters: Sequence[HostPlan], state: Mapping[str, Any]) -> dict[str, Any]:
    """Where nodes reach the API: masters their own kube-apiserver; workers the cloud load
    balancer when state records one (phase endpoint), else the node-local proxy on 127.0.0.1
    (haproxy, kubespray's pattern), which forwards to every master's 6443. Either way the loss
    of any one master cuts off no worker."""
    port = spec.kubernetes.api_proxy_port
    load_balancer = (state.get("api_endpoint") or {}).get("dns_name")
    return {
        "api_proxy": not load_balancer,
        "worker_api_url": f"https://{load_balancer}:6443" if load_balancer else f"https://127.0.0.1:{port}",
        "api_proxy_port": port,
        "api_proxy_image": API_PROXY_IMAGE,
        "api_proxy_backends": [{"name": m.name, "address": m.address or m.name, "is_address": bool(m.address)}
                               for m in masters],
    }


def _machine_context(base: dict[str, Any], spec: Spec, role: str, pool: PoolSpec, host: HostPlan | None) -> dict[str, Any]:
    labels = {"provision.io/pool": pool.name, "provision.io/role": role, **dict(pool.labels)}
    ctx = dict(base)
    ctx.update({
        "role": role, "pool": pool, "host": host,
        "bootstrap": host is not None and host.name == base["first_master"],
        "etcd_self": next((m for m in base["etcd_members"] if host is not None and m["name"] == host.name), None),
        "node_api_url": base["local_api_url"] if role == "master" else base["worker_api_url"],
        "kubelet_kubeconfig": "/etc/kubernetes/kubelet.conf" if role == "master" else "/var/lib/kubelet/kubeconfig",
        "node_labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "fleet_metadata": f"role={role},pool={pool.name}",
        "install_unit": {},
        "node_address": (host.address if host is not None and pool_provider.provider_name(spec, pool)
                         in NODE_ADDRESS_PROVIDERS else None),
    })
    return pool_provider.shape(ctx, spec, pool) if role == "worker" else ctx


def _add_artifacts(machine: Machine, env: jinja2.Environment, ctx: dict[str, Any],
                   downloads: list[artifacts_mod.Artifact], cloud_config: bool) -> None:
    """Ignition fetches each download itself (verified); cloud-config hosts download in an
    install unit that checks the hash before anything runs. Tarballs are extracted by it."""
    template = env.get_template("units/provision-install.service")
    for art in downloads:
        needs_unit = cloud_config or art.is_tarball
        if not cloud_config:
            machine.add_file(File(path=art.download_path, mode=0o644 if art.is_tarball else 0o755,
                                  url=art.url, hash=art.hash))
        if needs_unit:
            unit = f"provision-install-{art.name}.service"
            machine.add_unit(Unit(unit, template.render(ctx, artifact=art, download=cloud_config)))
            for binary in art.binaries:
                ctx["install_unit"][binary] = unit


def _role_items(env: jinja2.Environment, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    role_template = f"{ctx['role']}.yaml"
    return parse_items(env.get_template(role_template).render(ctx), role_template)


def machine_secrets(env: jinja2.Environment, store: BlobSource, ctx: dict[str, Any]) -> dict[str, File]:
    """The secret files (private keys, tokens) of one machine config: path -> File."""
    items = secret_items(_role_items(env, ctx))
    return build_machine(items, lambda name: env.get_template(name).render(ctx), store.read_blob).secrets


def _with_mounted_digest(env: jinja2.Environment, store: BlobSource, ctx: dict[str, Any],
                         items: list[dict[str, Any]]) -> dict[str, Any]:
    """`ctx` with the template function the control-plane manifests name a digest of the files
    they mount with (see render.mounts)."""
    return dict(ctx, mounted_digest=mounts.mounted_digest(items, lambda item: _file(
        item, lambda name: env.get_template(name).render(ctx), store.read_blob).data))


def render_machine(env: jinja2.Environment, spec: Spec, state: Mapping[str, Any], store: BlobSource,
                   ctx: dict[str, Any]) -> tuple[bytes, dict[str, File]]:
    """(the boot config, its secret files kept out of it)."""
    items = _role_items(env, ctx)
    binaries = [i["binary"] for i in items if "binary" in i]
    downloads = artifacts_mod.resolve(spec, state, binaries)
    cloud_config = spec.os.config == "cloud-config"
    machine = Machine()
    _add_artifacts(machine, env, ctx, downloads, cloud_config)
    # the control-plane manifests name a digest of the files they mount (see render.mounts)
    ctx = _with_mounted_digest(env, store, ctx, items)
    built = build_machine(items, lambda name: env.get_template(name).render(ctx), store.read_blob)
    for f in built.files.values():
        machine.add_file(f)
    for u in built.units.values():
        machine.add_unit(u)
    machine.directories.update(built.directories)
    ssh_keys = list(spec.ssh.authorized_keys) + [pki.ssh_public_key(store)]
    if not cloud_config:
        return ignition.dumps(ignition.to_ignition(machine, spec.ssh.user, ssh_keys)), built.secrets
    fleet = flannel = None
    etcd_tls = {"etcd_cafile": "/etc/ssl/etcd/ca.crt"}
    if spec.fleet.enabled:
        fleet = {"etcd_servers": ctx["etcd_endpoints"], "metadata": ctx["fleet_metadata"], **etcd_tls,
                 "etcd_certfile": "/etc/ssl/etcd/fleet.crt", "etcd_keyfile": "/etc/ssl/etcd/fleet.key"}
        if ctx["host"] is not None and ctx["host"].address:
            fleet["public_ip"] = ctx["host"].address
    if ctx["role"] in ("master", "worker"):
        flannel = {"etcd_endpoints": ctx["etcd_endpoints"], "etcd_prefix": "/coreos.com/network", **etcd_tls,
                   "etcd_certfile": "/etc/ssl/etcd/flannel.crt", "etcd_keyfile": "/etc/ssl/etcd/flannel.key"}
    hostname = ctx["host"].name if ctx["host"] is not None else None
    return cloudconfig.dumps(cloudconfig.to_cloud_config(machine, ssh_keys, hostname, fleet, flannel)), built.secrets


class _BlobReads:
    """A store's `read_blob`, each blob read once: every machine embeds the same CA, keys and
    tokens, and a shared state backend (etcd, s3) answers each read over the network."""

    def __init__(self, store: StateStore):
        self._store = store
        self._read: dict[str, bytes | None] = {}

    def read_blob(self, name: str) -> bytes | None:
        if name not in self._read:
            # hosts trust the old and the new CA together during a CA rotation (provision.pki_ca)
            self._read[name] = self._store.read_blob(pki_ca.trusted_blob(self._store, name))
        return self._read[name]


def render_cluster(spec: Spec, state: Mapping[str, Any], pki_store: StateStore, hosts: Sequence[HostPlan]) -> Rendered:
    """Render every distinct machine config for `hosts` (the plan's desired HostPlans)."""
    env = _environment()
    blobs = _BlobReads(pki_store)
    base = _cluster_context(spec, state, blobs, hosts)
    rendered = Rendered(index={"hosts": {}})
    per_host = pool_provider.per_host_pools(spec, NODE_ADDRESS_PROVIDERS)  # by each pool's provider
    for host in hosts:
        if host.role == "worker" and host.pool not in per_host:
            continue
        name = config_file_name(spec, host.role, host.pool, host.name)
        ctx = _machine_context(base, spec, host.role, spec.pool(host.pool), host)
        rendered.files[name], rendered.secrets[name] = render_machine(env, spec, state, blobs, ctx)
    for pool in (p for p in spec.worker_pools if p.name not in per_host):
        name = config_file_name(spec, "worker", pool.name, None)
        ctx = _machine_context(base, spec, "worker", pool, None)
        rendered.files[name], rendered.secrets[name] = render_machine(env, spec, state, blobs, ctx)
    for host in hosts:
        shared = host.role == "worker" and host.pool not in per_host
        name = config_file_name(spec, host.role, host.pool, None if shared else host.name)
        rendered.index["hosts"][host.name] = {"pool": host.pool, "role": host.role, "config": name}
    return rendered


def render_secrets(spec: Spec, state: Mapping[str, Any], pki_store: StateStore, hosts: Sequence[HostPlan],
                   names: Sequence[str]) -> dict[str, dict[str, File]]:
    """The secret files each of `names` receives over SSH: {host: {path: File}}. `hosts` are the
    plan's desired HostPlans (the configs are made in their context); a worker of a pool that
    shares one config gets that config's secrets, the same on every host of the pool."""
    return _per_host(spec, state, pki_store, hosts, names, machine_secrets)


def machine_files(env: jinja2.Environment, store: BlobSource, ctx: dict[str, Any]) -> dict[str, File]:
    """The files one machine config writes with their contents, units (Ignition's
    /etc/systemd/system/NAME) included: path -> File. Downloads and secrets are not among them."""
    every = _role_items(env, ctx)
    ctx = _with_mounted_digest(env, store, ctx, every)  # the manifests name it, as in the boot config
    items = [i for i in every if not i.get("secret")]
    built = build_machine(items, lambda name: env.get_template(name).render(ctx), store.read_blob)
    out = dict(built.files)
    if ctx["spec"].os.config != "cloud-config":  # cloud-init places units elsewhere
        for unit in built.units.values():
            path = f"/etc/systemd/system/{unit.name}"
            out.setdefault(path, File(path=path, mode=0o644, data=unit.contents.encode()))
    return out


def render_files(spec: Spec, state: Mapping[str, Any], pki_store: StateStore, hosts: Sequence[HostPlan],
                 names: Sequence[str]) -> dict[str, dict[str, File]]:
    """What each of `names` has on disk from its boot config: {host: {path: File}} (see
    `machine_files`), for the roles to compare with the host's files (content drift)."""
    return _per_host(spec, state, pki_store, hosts, names, machine_files)


def _per_host(spec: Spec, state: Mapping[str, Any], pki_store: StateStore, hosts: Sequence[HostPlan], names: Sequence[str],
              pick: Callable[[jinja2.Environment, BlobSource, dict[str, Any]], dict[str, File]]
              ) -> dict[str, dict[str, File]]:
    """`pick(env, store, machine context)` for each of `names`, once per shared worker config."""
    env = _environment()
    blobs = _BlobReads(pki_store)
    base = _cluster_context(spec, state, blobs, hosts)
    per_host = pool_provider.per_host_pools(spec, NODE_ADDRESS_PROVIDERS)
    by_name = {h.name: h for h in hosts}
    pools: dict[str, dict[str, File]] = {}
    out: dict[str, dict[str, File]] = {}
    for name in names:
        host = by_name.get(name)
        if host is None:
            raise ActionError(f"render: host {name} is not in the plan")
        if host.role == "worker" and host.pool not in per_host:
            if host.pool not in pools:
                pools[host.pool] = pick(env, blobs, _machine_context(
                    base, spec, "worker", spec.pool(host.pool), None))
            out[name] = dict(pools[host.pool])
        else:
            out[name] = pick(env, blobs, _machine_context(base, spec, host.role, spec.pool(host.pool), host))
        if pick is machine_secrets:  # each host's own agent identity travels with its secrets only
            out[name].update(_agent_identity(blobs, name))
    return out


AGENT_CERT, AGENT_KEY = "/etc/ssl/etcd/agent.crt", "/etc/ssl/etcd/agent.key"


def _agent_identity(pki_store: _BlobReads, host: str) -> dict[str, File]:
    """`host`'s own etcd identity for its agent (pki_agents: issued as the host is bootstrapped,
    just before this delivery), certificate with key."""
    name = pki.agent_identity(host)
    cert, key = pki_store.read_blob(f"{pki.PREFIX}{name}.crt"), pki_store.read_blob(f"{pki.PREFIX}{name}.key")
    if cert is None or key is None:
        raise ActionError(f"secrets: state has no etcd identity for host {host}'s agent; it is issued as the host "
                          f"is bootstrapped (`provision up SPEC`, phase secrets)")
    return {AGENT_CERT: File(AGENT_CERT, 0o644, cert), AGENT_KEY: File(AGENT_KEY, 0o600, key)}


def write_rendered(rendered: Rendered, out_dir: str | Path) -> list[Path]:
    """Write every config and index.json into `out_dir` (0600: configs are a cluster's
    internals, though they hold no private key)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted(rendered.files.items()) + [(INDEX, rendered.index_bytes())]:
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(b"")
        tmp.chmod(0o600)
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(path)
    return written
