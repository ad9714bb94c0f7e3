"""The local provider: every host is a network namespace on a bridge of this machine.

One module per job: `provider` (the provider contract), `net` (bridge, namespaces, veth
pairs), `procs` (process tools over /proc), `mirror` (the artifacts mirror and its hash cache;
`mirror_server` is the HTTP server it starts), `image` (the minimal OS image a host's root
starts from), `ignition` (the real Ignition engine applied to that root), `supervisor` (a
host's init and its units' launchers, from the provider's side), `units` (enabled units read
as systemd would) and `launch` (the init and unit launcher processes themselves).
"""
from __future__ import annotations

from .provider import LocalProvider

__all__ = ["LocalProvider"]
