"""Kubernetes version changes against the version-skew policy. Pure functions, no I/O.

The policy (kubernetes.io "Version Skew Policy"), as it applies to one `kubernetes.version`
for every host:

- the API servers move one minor version at a time, and stay within one minor of each other;
- the control plane moves before the kubelets on an upgrade, the kubelets first on a
  downgrade, so no kubelet is ever newer than an API server;
- a kubelet may be at most three minor versions older than the API server;
- a downgrade goes back at most one minor version.

What each host runs is what state recorded when it was made (`boot.fields` of its entry);
a host with no record is not counted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .spec import Spec

FIELD = "kubernetes.version"
KUBELET_MAX_MINORS_BEHIND = 3
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?$")


def parse_version(text: object) -> tuple[int, int, int] | None:
    """`1.33.4` (or `v1.33.4`, with a pre-release or build suffix) as (major, minor, patch)."""
    match = VERSION_RE.match(text) if isinstance(text, str) else None
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def minor(version: tuple[int, int, int]) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class SkewCheck:
    """`allowed`, and if not, why (naming kubernetes.version); `order` when hosts move."""

    allowed: bool
    reason: str = ""
    order: tuple[str, ...] = field(default=())  # "control plane", "kubelets" in the order they move

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "order": list(self.order)}


def check_version_change(api_servers: list[str], kubelets: list[str], wanted: str) -> SkewCheck:
    """Whether every host may move to `wanted`, given the versions the API servers (masters)
    and the kubelets (every host) run now."""
    target = parse_version(wanted)
    if target is None:
        return SkewCheck(False, f"{FIELD}: {wanted!r} is not a Kubernetes release like 1.33.4")
    apis = [v for v in (parse_version(a) for a in api_servers) if v is not None]
    nodes = [v for v in (parse_version(k) for k in kubelets) if v is not None]
    if not apis and not nodes:
        return SkewCheck(True)
    running = apis or nodes
    if any(v[0] != target[0] for v in running + nodes):
        return SkewCheck(False, f"{FIELD}: {wanted} is another major version than the cluster runs "
                                f"({', '.join(sorted({minor(v) for v in running}))}); not supported")
    oldest_api, newest_api = min(running), max(running)
    if target > oldest_api:  # an upgrade (or finishing one)
        if target[1] > oldest_api[1] + 1:
            return SkewCheck(False, f"{FIELD}: {wanted} is more than one minor version above the API "
                                    f"server's {'.'.join(map(str, oldest_api))}; upgrade one minor version at a "
                                    f"time: first to {oldest_api[0]}.{oldest_api[1] + 1}.x")
        oldest_kubelet = min(nodes) if nodes else oldest_api
        if target[1] - oldest_kubelet[1] > KUBELET_MAX_MINORS_BEHIND:
            return SkewCheck(False, f"{FIELD}: {wanted} would leave kubelets at "
                                    f"{'.'.join(map(str, oldest_kubelet))} more than "
                                    f"{KUBELET_MAX_MINORS_BEHIND} minor versions behind the API server")
        return SkewCheck(True, order=("control plane", "kubelets"))
    if target < newest_api:  # a downgrade (or undoing a partial upgrade)
        if target[1] < newest_api[1] - 1:
            return SkewCheck(False, f"{FIELD}: {wanted} goes back more than one minor version from "
                                    f"{'.'.join(map(str, newest_api))}; a downgrade goes back at most one minor "
                                    f"version (to {newest_api[0]}.{newest_api[1] - 1}.x)")
        return SkewCheck(True, order=("kubelets", "control plane"))
    return SkewCheck(True, order=("kubelets",) if any(v != target for v in nodes) else ())


def recorded_versions(state: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(API server versions, kubelet versions) as state recorded them for the hosts it has."""
    apis, kubelets = [], []
    for entry in (state.get("hosts") or {}).values():
        fields = ((entry or {}).get("boot") or {}).get("fields") or {}
        version = fields.get(FIELD)
        if not isinstance(version, str):
            continue
        kubelets.append(version)  # masters run a kubelet too
        if entry.get("role") == "master":
            apis.append(version)
    return apis, kubelets


def check_new_kubelets(api_servers: list[str], wanted: str, new_workers: list[str]) -> SkewCheck:
    """New non-master hosts start their kubelet at `wanted` while the running API servers stay
    at what they run (`up` does not upgrade hosts in place yet): refused when that kubelet
    would be a newer minor version than an API server."""
    target = parse_version(wanted)
    apis = [v for v in (parse_version(a) for a in api_servers) if v is not None]
    if target is None or not apis or not new_workers or target[:2] <= min(apis)[:2]:
        return SkewCheck(True)
    oldest = ".".join(map(str, min(apis)))
    return SkewCheck(False, f"{FIELD}: {wanted} would start kubelets on new hosts ({', '.join(new_workers)}) "
                            f"newer than the running API server ({oldest}); `up` does not upgrade running "
                            f"hosts yet, so keep kubernetes.version at {oldest} while adding hosts")


def check_spec(spec: Spec, state: Mapping[str, Any], creating: Sequence[tuple[str, str]] = ()) -> SkewCheck:
    """The version change the spec asks for, and the hosts about to be created as (name, role)."""
    apis, kubelets = recorded_versions(state)
    check = check_version_change(apis, kubelets, spec.kubernetes.version)
    if not check.allowed:
        return check
    new = check_new_kubelets(apis, spec.kubernetes.version, [n for n, role in creating if role != "master"])
    return check if new.allowed else new
