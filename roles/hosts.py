"""Role hosts: every host resolves every cluster host name to its private address.

For providers that cannot give a host a planned address (DigitalOcean), configs are rendered
before the machines exist, so they name etcd members and the first master by host name, which
the cloud's DNS does not resolve. This role keeps one block in `/etc/hosts`, between a begin
and an end line naming the cluster, mapping each host name of the cluster to its private
address. Lines outside the block are left as they are; a block with the same entries is not
rewritten. The entries come from the host data `etc_hosts` ([address, name] pairs) that the
`hosts` phase passes.
"""
from __future__ import annotations

import io
import ipaddress
import re
from typing import Iterable, Sequence

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

PATH = "/etc/hosts"
# One DNS label (RFC 1123): host names are `<cluster>-<pool>-<n>`, never dotted.
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # whole string: fullmatch
# What a host without /etc/hosts gets besides the block (the usual loopback names).
LOOPBACK_LINES = ("127.0.0.1\tlocalhost", "::1\tlocalhost")


def begin_line(cluster: str) -> str:
    return f"# BEGIN provision cluster {cluster} (written by provision; edits are replaced)"


def end_line(cluster: str) -> str:
    return f"# END provision cluster {cluster}"


def check_entries(cluster: str, entries: Iterable[Sequence[str]]) -> list[str]:
    """Problems with the cluster name and the (address, host name) entries, each naming the
    offending value; empty when every one may land in /etc/hosts."""
    problems = []
    if not isinstance(cluster, str) or not LABEL_RE.fullmatch(cluster):
        problems.append(f"cluster name {cluster!r} is not a DNS label (a-z, 0-9 and '-', at most 63)")
    seen: set[str] = set()
    for address, name in entries:
        if not isinstance(name, str) or not LABEL_RE.fullmatch(name):
            problems.append(f"host name {name!r} is not a DNS label (a-z, 0-9 and '-', at most 63)")
        elif name in seen:
            problems.append(f"host name {name!r} appears twice")
        else:
            seen.add(name)
        try:
            ipaddress.ip_address(address)
        except (TypeError, ValueError):
            problems.append(f"address {address!r} of host {name!r} is not an IP address")
    return problems


def block_lines(cluster: str, entries: Iterable[Sequence[str]]) -> list[str]:
    """The cluster's block, entries sorted by host name (same entries give the same bytes)."""
    entries = list(entries)
    problems = check_entries(cluster, entries)
    if problems:
        raise ValueError("; ".join(problems))
    body = [f"{ipaddress.ip_address(address)}\t{name}" for address, name in sorted(entries, key=lambda e: e[1])]
    return [begin_line(cluster), *body, end_line(cluster)]


def with_block(current: Sequence[str] | None, cluster: str, entries: Iterable[Sequence[str]]) -> list[str]:
    """The lines of /etc/hosts (`current`: its lines, None when absent) with the cluster's block
    in place: an existing block (even a stale or unterminated one) is replaced where it stands,
    else the block is appended; every other line is kept."""
    lines = list(current) if current is not None else list(LOOPBACK_LINES)
    block = block_lines(cluster, entries)
    marker = f"# BEGIN provision cluster {cluster}"
    begin = next((i for i, line in enumerate(lines) if line.strip() == marker or line.startswith(marker + " ")),
                 None)
    if begin is None:
        return lines + block
    end = next((i for i in range(begin + 1, len(lines)) if lines[i].strip() == block[-1]), len(lines) - 1)
    return lines[:begin] + block + lines[end + 1:]


@deploy("hosts")
def apply(report: dict) -> None:
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    entries = host.data.get("etc_hosts")
    if entries is None:
        # Run without the phase's data (e.g. from the pyinfra CLI): an empty block would unmap
        # every host, so the file is left alone.
        entry["notes"].append(f"{PATH}: no etc_hosts data given, left alone")
        return
    current = host.get_fact(FileContents, path=PATH)
    wanted = with_block(current, host.data.get("cluster"), entries)
    if current is not None and list(current) == wanted:
        entry["notes"].append(f"{PATH}: cluster block already current")
        return
    entry["notes"].append(f"{PATH}: cluster block differs, replaced" if current is not None
                          else f"{PATH}: absent, created with the cluster block")
    files.put(name=f"cluster host names in {PATH}", src=io.StringIO("\n".join(wanted) + "\n"), dest=PATH,
              user="root", group="root", mode="644", _sudo=True)
