"""pyinfra roles that bootstrap and check a cluster's hosts over SSH (loaded by provision.bootstrap).

Each role module defines `apply(report)`, a pyinfra deploy: it reads facts, yields only the
operations that close a gap, and records what it checked in `report[host.name]`
(`missing` files, `units` states, `notes`). The caller turns missing pieces into errors.
"""
