"""Binaries hosts download: versioned URLs, each with a hash, never an unverified download.

Where a URL and hash come from, first match wins:
1. `state["artifacts"][name]` = {"url", "sha512"}: a provider serving its own mirror (local);
   these are plain binaries, and when present they are the whole set: binaries the provider
   does not serve are left out of the configs.
2. the upstream release file of the catalogue below, under `artifacts.mirror` when set
   (same file name), with the hash from `artifacts.hashes` in the spec, else the published
   hash the catalogue knows, else the pin recorded in `state["artifact_pins"][name]` =
   {"version", "url", "sha512", "pinned_at"} when the render phase downloaded that very URL
   once and pinned its sha512 on first use (like a lock file; a pin for another version or
   URL is not reused).
No hash, no artifact: `resolve` raises a UserError naming the artifact and the ways out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import UserError

if TYPE_CHECKING:
    from .spec import Spec

BIN_DIR = "/opt/bin"
CNI_BIN_DIR = "/opt/cni/bin"  # where containerd's CRI plugin looks for CNI plugins (its default)
DOWNLOAD_DIR = "/opt/downloads"
PINS = "artifact_pins"  # state key: hashes pinned on first use
SHA512_RE = re.compile(r"^[0-9a-f]{128}$")


@dataclass(frozen=True)
class Release:
    """An upstream release file. `members` maps binary name -> path inside the tarball
    (empty for a plain binary)."""

    url: str
    members: Mapping[str, str]
    # Published hashes by version (from the projects' release checksums, as collected by
    # kubespray's checksums.yml for linux/amd64): facts, not code.
    known: Mapping[str, str]
    install_dir: str = BIN_DIR  # where the members are extracted


# Which spec version each artifact follows, and its release layout (linux/amd64).
CATALOGUE: dict[str, Release] = {
    "etcd": Release(
        url="https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-amd64.tar.gz",
        members={"etcd": "etcd-v{version}-linux-amd64/etcd", "etcdctl": "etcd-v{version}-linux-amd64/etcdctl"},
        known={"3.5.17": "sha256-eff6ac621d41711085d0f38fab17d8fa3705f6326c3ff11301a1f5a71fc94edd"}),
    "kubelet": Release(
        url="https://dl.k8s.io/release/v{version}/bin/linux/amd64/kubelet",
        members={},
        known={"1.33.4": "sha256-109bd2607b054a477ede31c55ae814eae8e75543126dc4cea40b04424d843489"}),
    "flanneld": Release(
        url="https://github.com/flannel-io/flannel/releases/download/v{version}/flannel-v{version}-linux-amd64.tar.gz",
        members={"flanneld": "flanneld"},
        # flannel's releases carry no checksum file; these sha256 of the linux-amd64 tarballs
        # are the ones a public Salt formula for Kubernetes (sysoperator/kubernetes-formula)
        # pins. No hash of 0.26.7 was published anywhere, hence the default 0.27.4.
        known={"0.27.4": "sha256-fc1233aac3ad2707d14c9ae42016b5402753f755f0d07cc5c41dc4190e95d299",
               "0.26.3": "sha256-0b91a37b676ae93e9a2a36aa9dd81d1f2d01464287afbb4eece6fe2831dd9afa",
               "0.25.7": "sha256-5901b213bd94f5797eb852f8c9b68c885b46bc2f9fe32f96dc113351b7ee378a"}),
    "fleetd": Release(
        url="https://github.com/coreos/fleet/releases/download/v{version}/fleet-v{version}-linux-amd64.tar.gz",
        members={"fleetd": "fleet-v{version}-linux-amd64/fleetd", "fleetctl": "fleet-v{version}-linux-amd64/fleetctl"},
        known={}),
    # No published hash exists for any fleet release (its releases carry only GPG signatures;
    # a search of public Dockerfiles, scripts and formulas that download fleet found none that
    # checks one): fleetd stays pinned on first use or supplied in artifacts.hashes, and a
    # render that has neither is refused (exit 2 naming artifacts.hashes.fleetd).
    "cni-plugins": Release(
        url="https://github.com/containernetworking/plugins/releases/download/v{version}/cni-plugins-linux-amd64-v{version}.tgz",
        members={name: f"./{name}" for name in ("bridge", "host-local", "loopback", "portmap")},
        known={"1.6.2": "sha256-b8e811578fb66023f90d2e238d80cec3bdfca4b44049af74c374d4fae0f9c090"},
        install_dir=CNI_BIN_DIR),
}


def spec_version(spec: Spec, name: str) -> str:
    return {"etcd": spec.etcd.version, "kubelet": spec.kubernetes.version,
            "flanneld": spec.network.flannel.version, "fleetd": spec.fleet.version,
            "cni-plugins": spec.network.cni_plugins_version}[name]


@dataclass(frozen=True)
class Artifact:
    """One download: `url` verified by `hash` ("sha512-<hex>" or "sha256-<hex>"). A tarball
    (`members` non-empty) lands in DOWNLOAD_DIR and an install unit extracts `members` into
    BIN_DIR; a plain binary lands at BIN_DIR/<name>."""

    name: str
    url: str
    hash: str
    members: Mapping[str, str]
    install_dir: str = BIN_DIR

    @property
    def is_tarball(self) -> bool:
        return bool(self.members)

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def download_path(self) -> str:
        return f"{DOWNLOAD_DIR}/{self.file_name}" if self.is_tarball else f"{BIN_DIR}/{self.name}"

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(sorted(self.members)) if self.is_tarball else (self.name,)

    @property
    def algorithm(self) -> str:
        return self.hash.split("-", 1)[0]

    @property
    def digest(self) -> str:
        return self.hash.split("-", 1)[1]


def _from_state(name: str, entry: object) -> Artifact:
    if not isinstance(entry, dict) or not entry.get("url") or not entry.get("sha512"):
        raise UserError(f"state artifacts.{name}: needs url and sha512 (the provider that serves it "
                        "records both)")
    return Artifact(name=name, url=str(entry["url"]), hash=f"sha512-{str(entry['sha512']).lower()}", members={})


@dataclass(frozen=True)
class Unpinned:
    """A catalogue download with no hash from the spec, the catalogue or a pin: what pinning on
    first use fetches (`url`, the mirror's when `artifacts.mirror` is set)."""

    name: str
    version: str
    url: str

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def release_url(spec: Spec, owner: str) -> str:
    """Where hosts download `owner`'s release file: upstream, or the same file name under
    `artifacts.mirror`."""
    url = CATALOGUE[owner].url.format(version=spec_version(spec, owner))
    if spec.artifacts.mirror:
        url = spec.artifacts.mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    return url


def pinned_hash(state: Mapping[str, Any], name: str, version: str, url: str) -> str | None:
    """The hash pinned on first use for exactly this version and URL, else None."""
    pin = (state.get(PINS) or {}).get(name)
    if not isinstance(pin, dict) or pin.get("version") != version or pin.get("url") != url:
        return None
    digest = str(pin.get("sha512", "")).lower()
    return f"sha512-{digest}" if SHA512_RE.match(digest) else None


def pin_record(item: Unpinned, sha512_hex: str, pinned_at: str) -> dict[str, str]:
    """What `state["artifact_pins"][name]` holds for a download pinned on first use."""
    return {"version": item.version, "url": item.url, "sha512": sha512_hex.lower(), "pinned_at": pinned_at}


def _owner(binary: str) -> str:
    owner = next((n for n, r in CATALOGUE.items() if binary == n or binary in r.members), None)
    if owner is None:
        raise UserError(f"artifact {binary!r} is unknown (known: {', '.join(sorted(CATALOGUE))})")
    return owner


def _catalogue_hash(spec: Spec, state: Mapping[str, Any], owner: str) -> tuple[str, str, str | None]:
    """(version, url, hash or None) of a catalogue download: spec, published list, pin."""
    version = spec_version(spec, owner)
    url = release_url(spec, owner)
    digest = (spec.artifacts.hashes.get(owner) or CATALOGUE[owner].known.get(version)
              or pinned_hash(state, owner, version, url))
    return version, url, digest


def missing_hash_message(missing: Sequence[Unpinned]) -> list[str]:
    """The error for downloads without a hash: each one by name, then the three ways out."""
    lines = [f"artifacts.hashes.{m.name}: no hash is known for {m.file_name} ({m.name} {m.version}, "
             f"{m.url}) and none was pinned in state" for m in missing]
    names = ", ".join(m.name for m in missing)
    example = missing[0].name
    lines += [
        f"provision never emits an unverified download; to supply a hash for {names}, either:",
        f"  - add its sha512 (or sha256) to the spec as artifacts.hashes.{example}: \"sha512-<hex>\", "
        "from the release's checksums or `sha512sum` of a trusted copy;",
        "  - pin it on first use: `provision up SPEC --until render` (or `provision render SPEC "
        "--out DIR --pin`) downloads it once and records its sha512 in state;",
        "  - or set artifacts.mirror to a server holding copies you trust, and pin from there "
        "(or use a provider that serves its own binaries)."]
    return lines


def _served(state: Mapping[str, Any]) -> Mapping[str, Any]:
    return state.get("artifacts") or {}


def unpinned(spec: Spec, state: Mapping[str, Any], binaries: Sequence[str] | None = None) -> list[Unpinned]:
    """The catalogue downloads `binaries` (default: every one the spec needs) still lack a hash.
    Empty when a provider serves its own binaries (`state["artifacts"]`)."""
    if _served(state):
        return []
    owners = sorted({_owner(b) for b in (required_binaries(spec) if binaries is None else binaries)})
    out = []
    for owner in owners:
        version, url, digest = _catalogue_hash(spec, state, owner)
        if not digest:
            out.append(Unpinned(name=owner, version=version, url=url))
    return out


def resolve(spec: Spec, state: Mapping[str, Any], binaries: Sequence[str]) -> list[Artifact]:
    """The downloads that provide every binary in `binaries` (e.g. etcd, etcdctl, kubelet).

    Raises UserError naming the artifacts when no hash is known for them.
    """
    served = _served(state)
    out: dict[str, Artifact] = {}
    for binary in binaries:
        if binary in served:
            out[binary] = _from_state(binary, served[binary])
            continue
        if served:
            # A provider serving its own mirror knows what its hosts can run: what it does not
            # serve is left out (never fetched unverified from elsewhere).
            continue
        owner = _owner(binary)
        if owner in out:
            continue
        version, url, digest = _catalogue_hash(spec, state, owner)
        if not digest:
            raise UserError(missing_hash_message(unpinned(spec, state, binaries)))
        members = {b: p.format(version=version) for b, p in CATALOGUE[owner].members.items()}
        out[owner] = Artifact(name=owner, url=url, hash=digest, members=members,
                              install_dir=CATALOGUE[owner].install_dir)
    return sorted(out.values(), key=lambda a: a.name)


# The CNI plugins every node runs pods with (the pod network config delegates to them).
POD_NETWORK_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def required_binaries(spec: Spec) -> list[str]:
    """Every binary some host of `spec` runs from a download. With cloud-config the OS's own
    fleet and flanneld are configured instead (coreos-cloudinit)."""
    binaries = ["etcd", "etcdctl", "kubelet", *POD_NETWORK_PLUGINS]
    if spec.os.config != "cloud-config":
        binaries.append("flanneld")
        if spec.fleet.enabled:
            binaries.append("fleetd")
    return binaries


def check(spec: Spec, state: Mapping[str, Any]) -> list[Artifact]:
    """Resolve every download the spec needs, so a missing hash fails before anything is made."""
    return resolve(spec, state, required_binaries(spec))
