"""Any Apache Libcloud compute driver, picked by name (`provider.driver`: ec2, digitalocean, gce...).

What a driver can do is read from the driver itself: the keyword arguments its `create_node`
accepts (`ex_userdata`/`ex_user_data` for user data, `ex_metadata`/`ex_labels`/`ex_tags` for
tags, `ex_clienttoken` for idempotency). A driver that cannot pass user data is refused with a
clear message before anything is created; tags are used when the driver takes them, and the
node name (`<cluster>-<pool>-<n>`) identifies hosts either way.

Credentials and connection come from the environment: `LIBCLOUD_KEY`, `LIBCLOUD_SECRET`, and
optionally `LIBCLOUD_HOST`, `LIBCLOUD_PORT`, `LIBCLOUD_SECURE` (true/false) and
`LIBCLOUD_EXTRA` (a JSON object of further driver arguments, e.g. `{"project": "p"}` for gce).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
from typing import Any, Callable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from .base import TAG_CLUSTER, TAG_POOL, TAG_ROLE, HostRecord, Provider, UserDataLimit, host_tags
from .retry import Backoff, call_with_retry

USER_DATA_ARGS = ("ex_userdata", "ex_user_data")
# Published user-data limits of the clouds behind some drivers; others are not enforced here.
USER_DATA_LIMITS = {"ec2": UserDataLimit(16 * 1024, "raw"), "openstack": UserDataLimit(65535, "base64"),
                    "digitalocean": UserDataLimit(64 * 1024, "raw"), "gce": UserDataLimit(256 * 1024, "raw")}
STATE_MAP = {"running": "running", "pending": "pending", "starting": "pending", "rebooting": "pending",
             "stopped": "stopped", "stopping": "stopped", "suspended": "stopped", "paused": "stopped",
             "terminated": "terminated", "error": "unknown", "unknown": "unknown"}


def libcloud_retryable(err: BaseException) -> str | None:
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    if isinstance(err, RateLimitReachedError):
        return "throttled"
    code = getattr(err, "code", None)
    if isinstance(err, BaseHTTPError) and isinstance(code, int):
        if code == 429:
            return "throttled (429)"
        if code >= 500:
            return f"server error {code}"
        return None
    text = str(err)
    if any(word in text for word in ("RequestLimitExceeded", "Throttling", "ServiceUnavailable", "InternalError")):
        return "throttled or server error"
    import requests
    if isinstance(err, (requests.exceptions.ConnectionError, socket.timeout, ConnectionError)):
        return f"connection problem ({type(err).__name__})"
    return None


def accepted_args(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


class LibcloudProvider(Provider):
    """Nodes through one libcloud compute driver; per-node creation, identified by name and tags."""

    name = "libcloud"

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()
        self._driver = None

    @property
    def user_data_limit(self) -> UserDataLimit | None:  # type: ignore[override]
        return USER_DATA_LIMITS.get(self.options.driver)

    # -- driver ------------------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        from libcloud.compute.providers import get_driver
        try:
            get_driver(self.options.driver)
        except AttributeError:
            return [("provider.driver", f"libcloud has no compute driver {self.options.driver!r}")]
        if os.environ.get("LIBCLOUD_EXTRA"):
            try:
                if not isinstance(json.loads(os.environ["LIBCLOUD_EXTRA"]), dict):
                    raise ValueError
            except ValueError:
                return [("LIBCLOUD_EXTRA", "must be a JSON object of driver arguments")]
        return []

    @property
    def driver(self):
        if self._driver is None:
            from libcloud.compute.providers import get_driver
            cls = get_driver(self.options.driver)
            env = os.environ
            kwargs: dict[str, Any] = {}
            if env.get("LIBCLOUD_SECRET") is not None:
                kwargs["secret"] = env["LIBCLOUD_SECRET"]
            if env.get("LIBCLOUD_HOST"):
                kwargs["host"] = env["LIBCLOUD_HOST"]
            if env.get("LIBCLOUD_PORT"):
                kwargs["port"] = int(env["LIBCLOUD_PORT"])
            if env.get("LIBCLOUD_SECURE"):
                kwargs["secure"] = env["LIBCLOUD_SECURE"].lower() not in ("0", "false", "no")
            if self.options.region:
                kwargs["region"] = self.options.region
            kwargs.update(json.loads(env.get("LIBCLOUD_EXTRA") or "{}"))
            key = env.get("LIBCLOUD_KEY", "")
            accepted = accepted_args(cls.__init__)
            if "kwargs" not in accepted:  # e.g. the Dummy driver takes only `creds`
                kwargs = {k: v for k, v in kwargs.items() if k in accepted}
            try:
                self._driver = cls(key, **kwargs)
            except Exception as err:  # a driver's own complaint about its arguments
                raise UserError(f"provider.driver: cannot set up libcloud driver {self.options.driver!r}: {err}") from None
        return self._driver

    def capabilities(self) -> dict[str, str | None]:
        """The create_node arguments this driver has for user data, tags and idempotency."""
        args = accepted_args(self.driver.create_node)
        tags = next((a for a in ("ex_metadata", "ex_labels") if a in args), None)
        return {"user_data": next((a for a in USER_DATA_ARGS if a in args), None), "tags": tags,
                "client_token": "ex_clienttoken" if "ex_clienttoken" in args else None}

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        try:
            return call_with_retry(call, retryable=libcloud_retryable, what=f"libcloud {what}", log=self.log,
                                   backoff=self.backoff)
        except (UserError, ActionError):
            raise
        except Exception as err:  # libcloud raises plain and driver-specific exceptions
            raise ActionError(f"libcloud {self.options.driver} {what}: {err}") from None

    # -- hosts -------------------------------------------------------------------------------
    def _pool_of(self, name: str) -> tuple[str, str]:
        """Pool and role from a node name `<cluster>-<pool>-<n>` (longest pool name wins)."""
        rest = name[len(self.spec.name) + 1:]
        for pool in sorted(self.spec.pools, key=lambda p: -len(p.name)):
            if rest.startswith(pool.name + "-") and rest[len(pool.name) + 1:].isdigit():
                return pool.name, pool.role
        return "", ""

    def _tags_of(self, node: Any) -> dict[str, str]:
        extra = node.extra or {}
        for key in ("tags", "metadata", "labels"):
            if isinstance(extra.get(key), dict):
                return {str(k): str(v) for k, v in extra[key].items()}
        return {}

    def _nodes(self) -> list[Any]:
        prefix = f"{self.spec.name}-"
        nodes = self._retry(self.driver.list_nodes, "list nodes")
        out = []
        for node in nodes:
            tags = self._tags_of(node)
            if TAG_CLUSTER in tags:
                if tags[TAG_CLUSTER] == self.spec.name:
                    out.append(node)
            elif (node.name or "").startswith(prefix) and self._pool_of(node.name)[0]:
                # A driver without tags: the name must parse as one of this spec's pools, so
                # cluster "a" never claims "a-b-workers-0" of cluster "a-b".
                out.append(node)
        return out

    def _record(self, node: Any) -> HostRecord:
        tags = self._tags_of(node)
        pool, role = self._pool_of(node.name or "")
        state = STATE_MAP.get(str(node.state).lower(), "unknown")
        return HostRecord(name=node.name, pool=tags.get(TAG_POOL, pool), role=tags.get(TAG_ROLE, role),
                          provider_id=str(node.id), state=state,
                          private_address=(node.private_ips or [None])[0],
                          public_address=(node.public_ips or [None])[0])

    def list_hosts(self) -> list[HostRecord]:
        records = [self._record(n) for n in self._nodes()]
        return sorted((r for r in records if r.state != "terminated"), key=lambda r: r.name)

    def _lookup(self, what: str, listing: Callable[[], list], wanted: str | None, field_path: str,
                pick_default: Callable[[list], Any] | None = None) -> Any:
        items = self._retry(listing, f"list {what}")
        if wanted is None:
            if pick_default is None or not items:
                raise UserError(f"{field_path}: required with driver {self.options.driver} (no default found)")
            return pick_default(items)
        for item in items:
            if str(item.id) == wanted or getattr(item, "name", None) == wanted:
                return item
        raise UserError(f"{field_path}: driver {self.options.driver} has no {what[:-1]} {wanted!r}")

    def _image(self) -> Any:
        wanted = self.options.image
        if wanted and hasattr(self.driver, "get_image"):
            try:
                return self.driver.get_image(wanted)
            except Exception:  # not an id this driver resolves directly: search the listing
                pass
        channel = self.spec.os.channel

        def newest_flatcar(items: list) -> Any:
            matching = sorted((i for i in items if "flatcar" in (i.name or "").lower()
                               and channel in (i.name or "").lower()), key=lambda i: i.name or "")
            if not matching:
                raise UserError(f"provider.image: driver {self.options.driver} lists no Flatcar {channel} image; set it")
            return matching[-1]
        return self._lookup("images", self.driver.list_images, wanted, "provider.image", newest_flatcar)

    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        caps = self.capabilities()
        if caps["user_data"] is None:
            raise UserError(f"provider.driver: libcloud driver {self.options.driver!r} cannot pass user data "
                            "to new nodes (its create_node takes no user-data argument), so hosts could "
                            "not receive their config; pick another driver or provider")
        existing = {r.name: r for r in self.list_hosts()}
        todo = [h for h in hosts if h.name not in existing]
        records = [existing[h.name] for h in hosts if h.name in existing]
        if not todo:
            return records
        image = self._image()
        location = None
        if self.options.location:
            location = self._lookup("locations", self.driver.list_locations, self.options.location,
                                    "provider.location")
        sizes: dict[str | None, Any] = {}
        for host in todo:
            wanted_size = self.spec.pool(host.pool).size or self.options.size
            if wanted_size not in sizes:
                sizes[wanted_size] = self._lookup("sizes", self.driver.list_sizes, wanted_size, "provider.size",
                                                  lambda items: min(items, key=lambda s: (s.ram or 0, s.price or 0)))
            kwargs: dict[str, Any] = {"name": host.name, "size": sizes[wanted_size], "image": image,
                                      caps["user_data"]: configs[host.name].decode()}
            if location is not None:
                kwargs["location"] = location
            if caps["tags"]:
                kwargs[caps["tags"]] = host_tags(self.spec.name, host)
            if caps["client_token"]:
                kwargs["ex_clienttoken"] = "pv-" + hashlib.sha256(
                    f"{self.spec.name}\0{host.name}\0".encode() + hashlib.sha256(configs[host.name]).digest()
                ).hexdigest()[:40]

            def attempt(host=host, kwargs=kwargs):
                found = [n for n in self._nodes() if n.name == host.name
                         and STATE_MAP.get(str(n.state).lower()) != "terminated"]
                return found[0] if found else self.driver.create_node(**kwargs)
            self.log(f"creating node {host.name}")
            records.append(self._record(self._retry(attempt, f"create node {host.name}")))
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        wanted = set(names)
        for node in self._nodes():
            if node.name in wanted and STATE_MAP.get(str(node.state).lower()) != "terminated":
                self.log(f"destroying node {node.name}")
                self._retry(lambda n=node: self.driver.destroy_node(n), f"destroy node {node.name}")
