"""Fixtures for local-provider tests: root only, unique cluster names and subnets, cleanup."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.real import needs_local

REPO = Path(__file__).resolve().parents[2]

# Root, the Ignition engine, sshd, etcd 3.5...: skipped with the reason outside CI, a failure
# naming what is missing under CI=true (tests/real.py).
needs_root = needs_local


def free_subnet() -> str:
    """A /24 in 10.0.0.0/8 that no route of this machine overlaps."""
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True).stdout or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    while True:
        net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)


def unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def example_spec(tmp_path: Path, name: str, subnet: str, **changes) -> Path:
    """examples/local.yaml with its own name and subnet."""
    doc = yaml.safe_load((REPO / "examples/local.yaml").read_text())
    doc["name"] = name
    doc["provider"]["subnet"] = subnet
    doc.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def provision(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`provision ARGS` as its own process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "provision", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def processes_mentioning(text: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def cluster_namespaces(cluster: str) -> list[str]:
    listing = json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]")
    return sorted(n["name"] for n in listing if n["name"].startswith(f"provision.{cluster}."))
