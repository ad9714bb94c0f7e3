"""Any Apache Libcloud compute driver, picked by name (`provider.driver`: ec2, digitalocean, gce...).

What a driver can do is read from the driver itself: the keyword arguments its `create_node`
accepts (`ex_userdata`/`ex_user_data` for user data, or gce's `ex_metadata` `user-data` key;
`ex_metadata`/`ex_labels` for tags, `ex_clienttoken` for idempotency). A driver that cannot pass
user data is refused with a clear message before anything is created. When the driver can tag,
a node is this cluster's only if it carries the cluster's tag (a node merely named like one of
ours is someone else's); the name alone identifies hosts only on drivers that cannot tag.

DigitalOcean (`driver: digitalocean`) gets more (see `libcloud_digitalocean`): string tags on
every droplet and tag-filtered listings, the authorized keys as account SSH keys passed on every
create (a custom image such as Flatcar is refused without one), a cloud firewall on the cluster
tag, and a region picked where the image and sizes exist when `location` is null. `teardown`
removes the firewall and the keys it created.

The API endpoint (`provider.load_balancer`, see `libcloud_lb`): the cloud's load balancer where
libcloud has a load-balancer driver for the compute driver's cloud (ec2: ELB), made before the
hosts, holding every master, left by a master before it goes; elsewhere (digitalocean) the
node-local proxy.

Credentials and connection come from the environment: `LIBCLOUD_KEY`, `LIBCLOUD_SECRET`, and
optionally `LIBCLOUD_HOST`, `LIBCLOUD_PORT`, `LIBCLOUD_SECURE` (true/false) and
`LIBCLOUD_EXTRA` (a JSON object of further driver arguments, e.g. `{"project": "p"}` for gce).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..plan import HostPlan
from ..spec.model import LibcloudOptions
from . import libcloud_digitalocean as do
from .base import TAG_CLUSTER, TAG_POOL, TAG_ROLE, HostRecord, Provider, UserDataLimit, host_tags
from .libcloud_common import (CONNECTION_ARGS, STATE_MAP, USER_DATA_ARGS, USER_DATA_LIMITS, accepted_args,
                              construct_driver, label_to_tag, libcloud_retryable, pick_location, tag_to_label,
                              version_key)
from .libcloud_lb import LibcloudLoadBalancer, lb_driver_name, make_lb_driver
from .retry import Backoff, call_with_retry

if TYPE_CHECKING:
    from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize

__all__ = ["STATE_MAP", "USER_DATA_LIMITS", "LibcloudProvider", "accepted_args", "construct_driver", "label_to_tag",
           "libcloud_retryable", "pick_location", "tag_to_label", "version_key"]


class LibcloudProvider(Provider):
    """Nodes through one libcloud compute driver; per-node creation, identified by the cluster's
    tags (by name only on drivers that cannot tag)."""

    name = "libcloud"
    options: LibcloudOptions  # the spec's provider options, typed
    # No driver here is given a fixed private address (DigitalOcean cannot take one at all).
    plans_addresses = False

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()
        self._driver = None
        self._key_ids: list[int] | None = None  # DigitalOcean account keys, once ensured
        self._firewall: dict[str, Any] | None = None  # DigitalOcean firewall, once ensured
        self._api_lb: LibcloudLoadBalancer | None = None

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

    def preflight(self) -> list[tuple[str, str]]:
        """DigitalOcean's v2 API takes one token: LIBCLOUD_KEY set, LIBCLOUD_SECRET unset (the
        driver reads a secret as a request for the retired v1 API)."""
        if not self.on_digitalocean:
            return []
        problems = []
        if not os.environ.get("LIBCLOUD_KEY"):
            problems.append(("LIBCLOUD_KEY", "not set: a DigitalOcean personal access token with write scope"))
        if os.environ.get("LIBCLOUD_SECRET"):
            problems.append(("LIBCLOUD_SECRET", "must be unset for digitalocean (the v2 API takes only the token "
                                                "in LIBCLOUD_KEY)"))
        return problems

    def _driver_kwargs(self) -> tuple[str, dict[str, Any]]:
        """The key and keyword arguments a driver of this cloud is built with (from LIBCLOUD_*)."""
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
        return env.get("LIBCLOUD_KEY", ""), kwargs

    @property
    def driver(self):
        if self._driver is None:
            from libcloud.compute.providers import get_driver
            cls = get_driver(self.options.driver)
            key, kwargs = self._driver_kwargs()
            try:
                driver = construct_driver(cls, key, kwargs)
            except Exception as err:  # a driver's own complaint about its arguments
                raise UserError(f"provider.driver: cannot set up libcloud driver {self.options.driver!r}: {err}") from None
            self._override_connection(driver, kwargs)
            self._driver = driver
        return self._driver

    @staticmethod
    def _override_connection(driver: NodeDriver, kwargs: Mapping[str, Any]) -> None:
        """Apply LIBCLOUD_HOST/PORT/SECURE to the connection when the driver dropped them."""
        conn = getattr(driver, "connection", None)
        if conn is None or not any(k in kwargs for k in CONNECTION_ARGS):
            return
        if "secure" in kwargs:
            conn.secure = 1 if kwargs["secure"] else 0
        if "host" in kwargs:
            conn.host = kwargs["host"]
        if "port" in kwargs:
            conn.port = kwargs["port"]
        elif "secure" in kwargs and "host" in kwargs:
            conn.port = 443 if kwargs["secure"] else 80
        conn.connection = None  # connect again with the new address on the next request

    @property
    def on_digitalocean(self) -> bool:
        return self.options.driver == "digitalocean"

    def capabilities(self) -> dict[str, str | None]:
        """The create_node arguments this driver has for user data, tags and idempotency."""
        args = accepted_args(self.driver.create_node)
        user_data = next((a for a in USER_DATA_ARGS if a in args), None)
        if self.on_digitalocean:
            # tags ride in ex_create_attr as plain strings (see libcloud_digitalocean)
            return {"user_data": user_data, "tags": "ex_create_attr", "client_token": None}
        if user_data is None and self.options.driver == "gce" and "ex_metadata" in args:
            # GCE: user data is the instance metadata key `user-data`; tags become labels
            return {"user_data": "ex_metadata", "tags": "ex_labels" if "ex_labels" in args else None,
                    "client_token": None}
        tags = next((a for a in ("ex_metadata", "ex_labels") if a in args), None)
        return {"user_data": user_data, "tags": tags,
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

    def _tags_of(self, node: Node) -> dict[str, str]:
        extra = node.extra or {}
        if isinstance(extra.get("tags"), list):  # DigitalOcean: plain string tags
            return do.tags_as_mapping(extra["tags"])
        if isinstance(extra.get("labels"), dict) and self.options.driver == "gce":
            return {label_to_tag(k): str(v) for k, v in extra["labels"].items()}
        for key in ("tags", "metadata", "labels"):
            if isinstance(extra.get(key), dict):
                return {str(k): str(v) for k, v in extra[key].items()}
        return {}

    def _nodes(self) -> list[Any]:
        if self.on_digitalocean:
            return self._retry(lambda: do.list_tagged_droplets(self.driver, self.spec.name), "list droplets")
        prefix = f"{self.spec.name}-"
        can_tag = self.capabilities()["tags"] is not None
        nodes = self._retry(self.driver.list_nodes, "list nodes")
        out = []
        for node in nodes:
            tags = self._tags_of(node)
            if can_tag or TAG_CLUSTER in tags:
                # A driver that tags: ours only when tagged ours, whatever the name says.
                if tags.get(TAG_CLUSTER) == self.spec.name:
                    out.append(node)
            elif (node.name or "").startswith(prefix) and self._pool_of(node.name)[0]:
                # A driver without tags: the name must parse as one of this spec's pools, so
                # cluster "a" never claims "a-b-workers-0" of cluster "a-b".
                out.append(node)
        return out

    def _record(self, node: Node) -> HostRecord:
        tags = self._tags_of(node)
        pool, role = self._pool_of(node.name or "")
        state = STATE_MAP.get(str(node.state).lower(), "unknown")
        return HostRecord(name=node.name, pool=tags.get(TAG_POOL, pool), role=tags.get(TAG_ROLE, role),
                          provider_id=str(node.id), state=state,
                          private_address=node.private_ips[0] if node.private_ips else None,
                          public_address=node.public_ips[0] if node.public_ips else None)

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
                               and channel in (i.name or "").lower()), key=lambda i: version_key(i.name))
            if not matching:
                raise UserError(f"provider.image: driver {self.options.driver} lists no Flatcar {channel} image; set it")
            return matching[-1]
        return self._lookup("images", self.driver.list_images, wanted, "provider.image", newest_flatcar)

    # -- the API load balancer (provision.providers.libcloud_lb) ---------------------------------
    @property
    def api_load_balancer(self) -> bool:  # type: ignore[override]
        return self.options.load_balancer and lb_driver_name(self.options.driver) is not None

    @property
    def api_lb(self) -> LibcloudLoadBalancer:
        if self._api_lb is None:
            self._api_lb = LibcloudLoadBalancer(self.spec.name, lb_driver_name(self.options.driver) or "",
                                                functools.partial(make_lb_driver, self), self._retry, self._nodes,
                                                self.log)
        return self._api_lb

    def ensure_api_endpoint(self) -> dict[str, str] | None:
        return self.api_lb.ensure() if self.api_load_balancer else None

    def find_api_endpoint(self) -> dict[str, str] | None:
        found = self.api_lb.find() if self.api_load_balancer else None
        return self.api_lb.endpoint(found) if found is not None else None

    def register_api_targets(self, masters: Sequence[HostRecord]) -> None:
        if self.api_load_balancer and masters:
            self.api_lb.register(list(masters))

    def deregister_api_targets(self, names: Sequence[str]) -> None:
        if self.api_load_balancer and names:
            self.api_lb.deregister(names)

    # -- shared resources (DigitalOcean) ------------------------------------------------------
    def prepare(self) -> None:
        """DigitalOcean: the account SSH keys and the cloud firewall on the cluster tag."""
        if self.on_digitalocean:
            self._ssh_key_ids()
            if self._firewall is None:
                from .burst_reach import burst_networks
                self._firewall = self._retry(lambda: do.ensure_firewall(
                    self.driver, self.spec.name, self.spec.network.flannel.backend, self.log,
                    burst_networks(self.spec)), "create firewall")

    def _ssh_key_ids(self) -> list[int]:
        if self._key_ids is None:
            self._key_ids = self._retry(lambda: do.ensure_keys(self.driver, self.spec.name,
                                                               self.spec.ssh.authorized_keys, self.log),
                                        "add SSH keys")
        return self._key_ids

    def teardown(self) -> None:
        """The API load balancer, if any; DigitalOcean: the firewall and the SSH keys this
        cluster created (keys found        already in the account stay)."""
        if self.api_load_balancer:
            self.api_lb.remove()
        if self.on_digitalocean:
            self._retry(lambda: do.remove_firewall(self.driver, self.spec.name, self.log), "remove firewall")
            self._retry(lambda: do.remove_keys(self.driver, self.spec.name, self.log), "remove SSH keys")

    def _location(self, image: NodeImage, sizes: Sequence[NodeSize]) -> NodeLocation | None:
        """`provider.location`, or when null the driver's first location that has the image
        and the sizes (a driver whose create_node needs no location gets none). DigitalOcean
        takes no region at connection: there `provider.region` names the location."""
        if self.options.location:
            return self._lookup("locations", self.driver.list_locations, self.options.location,
                                "provider.location")
        if self.on_digitalocean and self.options.region:
            return self._lookup("locations", self.driver.list_locations, self.options.region, "provider.region")
        create = inspect.signature(self.driver.create_node).parameters.get("location")
        if create is None or create.default is not inspect.Parameter.empty:
            return None
        locations = self._retry(self.driver.list_locations, "list locations")
        location = pick_location(locations, image, sizes)
        if location is None:
            raise UserError(f"provider.location: driver {self.options.driver} has no location offering image "
                            f"{getattr(image, 'name', image)!r} and the sizes wanted; set it")
        self.log(f"provider.location is null: using {location.id}")
        return location

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
            self.register_api_targets([r for r in records if r.role == "master"])
            return records
        image = self._image()
        sizes: dict[str | None, Any] = {}
        for host in todo:
            wanted_size = self.spec.pool(host.pool).size or self.options.size
            if wanted_size not in sizes:
                sizes[wanted_size] = self._lookup("sizes", self.driver.list_sizes, wanted_size, "provider.size",
                                                  lambda items: min(items, key=lambda s: (s.ram or 0, s.price or 0)))
        location = self._location(image, list(sizes.values()))
        key_ids = self._ssh_key_ids() if self.on_digitalocean else []
        if self.on_digitalocean:
            self.prepare()  # the firewall is on the cluster tag before any droplet carries it
        for host in todo:
            wanted_size = self.spec.pool(host.pool).size or self.options.size
            config = configs[host.name].decode()
            kwargs: dict[str, Any] = {"name": host.name, "size": sizes[wanted_size], "image": image}
            if caps["user_data"] == "ex_metadata":
                kwargs["ex_metadata"] = {"user-data": config}
            else:
                kwargs[caps["user_data"]] = config
            if location is not None:
                kwargs["location"] = location
            if self.on_digitalocean:
                kwargs["ex_create_attr"] = {"tags": do.droplet_tags(self.spec.name, host.pool, host.role),
                                            "ssh_keys": key_ids, "private_networking": True}
            elif caps["tags"] == "ex_labels" and self.options.driver == "gce":
                kwargs["ex_labels"] = {tag_to_label(k): v for k, v in host_tags(self.spec.name, host).items()}
            elif caps["tags"]:
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
        self.register_api_targets([r for r in records if r.role == "master"])
        return records

    def destroy_hosts(self, names: Sequence[str]) -> None:
        self.deregister_api_targets(names)  # a balancer's member outlives its node on most clouds
        wanted = set(names)
        for node in self._nodes():
            if node.name in wanted and STATE_MAP.get(str(node.state).lower()) != "terminated":
                self.log(f"destroying node {node.name}")
                self._retry(functools.partial(self.driver.destroy_node, node), f"destroy node {node.name}")
