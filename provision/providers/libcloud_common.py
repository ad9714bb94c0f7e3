"""What the libcloud provider knows of drivers in general: which errors are worth another try,
how a driver is constructed, the user-data arguments and limits, tag keys as GCE labels, image
versions and the location picked when none is named."""
from __future__ import annotations

import inspect
import re
import socket
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .base import UserDataLimit

if TYPE_CHECKING:
    from libcloud.compute.base import NodeImage, NodeLocation, NodeSize

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


def tag_to_label(key: str) -> str:
    """GCE label keys allow only lowercase letters, digits, `_` and `-`: `provision:pool` is
    `provision_pool` there."""
    return key.replace(":", "_")


def label_to_tag(key: str) -> str:
    return key.replace("provision_", "provision:", 1) if key.startswith("provision_") else key


def accepted_args(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def version_key(name: str) -> tuple:
    """Sort key of an image name by the last dotted version in it (`... 4081.2.0` after
    `... 999.1.0`, which string order gets wrong); names without one sort first."""
    found = re.findall(r"\d+(?:\.\d+)+", name or "")
    return (tuple(int(p) for p in found[-1].split(".")) if found else (), name or "")


def construct_driver(cls: type, key: str, kwargs: dict[str, Any]) -> Any:
    """`cls(key, **kwargs)`, for drivers that cannot take every argument at construction.

    Some drivers (DigitalOcean) define a `__new__` that hands unknown keywords on to
    `object.__new__`, which refuses them ("object.__new__() takes exactly one argument"): those
    are built with only the keywords their `__new__` names, and the caller applies the
    connection override (host, port, secure) to the connection itself."""
    accepted = accepted_args(getattr(cls, "__init__"))
    if "kwargs" not in accepted:  # e.g. the Dummy driver takes only `creds`
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        return cls(key, **kwargs)
    except TypeError as err:
        if cls.__new__ is object.__new__ or "object.__new__" not in str(err):
            raise
    named = accepted_args(cls.__new__) - {"cls", "key", "kwargs"}
    return cls(key, **{k: v for k, v in kwargs.items() if k in named})


CONNECTION_ARGS = ("host", "port", "secure")


def pick_location(locations: Sequence[NodeLocation], image: NodeImage, sizes: Sequence[NodeSize]) -> NodeLocation | None:
    """The first location that has the image and every size wanted (where the driver says
    which regions an image or size is in, as DigitalOcean's does)."""
    image_regions = set((getattr(image, "extra", None) or {}).get("regions") or [])
    for location in locations:
        if image_regions and location.id not in image_regions:
            continue
        if all(location.id in ((s.extra or {}).get("regions") or [location.id]) for s in sizes):
            return location
    return None
