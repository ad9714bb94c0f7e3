"""The OpenStack provider's footing: the openstacksdk connection with its retry settings, the
retry of requests whose outcome is unknown, and Neutron's "in use" answers while ports go away.
`openstack_network`, `openstack_servers` and `openstack` build on `OpenStackBase`."""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import ActionError, UserError
from ..spec.model import OpenStackOptions
from .base import TAG_CLUSTER, Provider, UserDataLimit
from .retry import Backoff, call_with_retry

DELETE_TIMEOUT = 600.0  # seconds for servers to go
IN_USE_TIMEOUT = 120.0  # seconds a Neutron "in use" (409) is retried while ports go away
WAIT_POLL_CAP = 10.0


# openstacksdk's retry settings (passed to openstack.connect; they reach every service's
# keystoneauth adapter): refused answers are repeated by keystoneauth, connections never.
# openstacksdk's defaults give Glance its own count (image_status_code_retries: 5), so it is named too.
OPENSTACK_RETRIES: dict[str, Any] = {"status_code_retries": 7, "image_status_code_retries": 7, "retriable_status_codes": [429, 503],
                     "connect_retries": 0}


def openstack_retryable(err: BaseException) -> str | None:
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as os_exc
    if isinstance(err, os_exc.HttpException):
        status = err.status_code or 0
        if status in OPENSTACK_RETRIES["retriable_status_codes"]:
            return None  # keystoneauth tried it OPENSTACK_RETRIES times already
        if status >= 500:
            return f"server error {status}"
        return None
    if isinstance(err, (ks.connection.ConnectFailure, ks.connection.ConnectTimeout, ks.http.InternalServerError,
                        ks.connection.UnknownConnectionError)):
        return f"connection problem ({type(err).__name__})"
    import requests
    if isinstance(err, requests.exceptions.ConnectionError):
        return f"connection problem ({type(err).__name__})"
    return None


def in_use(err: BaseException) -> bool:
    """Neutron's 409 for a network, subnet, router or security group that ports still use."""
    from openstack import exceptions as os_exc
    if not isinstance(err, os_exc.ConflictException):
        return False
    kind = ""
    try:
        kind = ((err.response.json() if err.response is not None else {}).get("NeutronError") or {}).get("type", "")
    except Exception:  # not JSON: fall back on the message
        pass
    return kind.endswith("InUse") or "in use" in str(getattr(err, "details", "") or err).lower()


class OpenStackBase(Provider):
    """Connection, names and retries shared by the OpenStack provider's parts."""

    name = "openstack"
    options: OpenStackOptions  # the spec's provider options, typed
    user_data_limit = UserDataLimit(65535, "base64")  # Nova: 65,535 characters of base64

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()
        self._conn = None
        self._shared: dict[str, Any] | None = None
        self._lookups: dict[str | None, tuple[str, str]] = {}
        self._image: Any = None
        self._octavia: Any = None
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def resource_name(self) -> str:
        return f"provision-{self.spec.name}"

    @property
    def cluster_tag(self) -> str:
        return f"{TAG_CLUSTER}={self.spec.name}"

    @property
    def conn(self):
        if self._conn is None:
            import openstack
            from openstack import exceptions as os_exc
            try:
                cloud = self.options.cloud
                self._conn = (openstack.connect(cloud=cloud, **OPENSTACK_RETRIES) if cloud
                              else openstack.connect(**OPENSTACK_RETRIES))
            except os_exc.ConfigException as err:
                raise UserError(f"provider.cloud: {err}") from None
        return self._conn

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        from keystoneauth1 import exceptions as ks
        from openstack import exceptions as os_exc
        try:
            return call_with_retry(call, retryable=openstack_retryable, what=f"openstack {what}", log=self.log,
                                   backoff=self.backoff)
        except os_exc.ConfigException as err:
            raise UserError(f"provider.cloud: {err}") from None
        except (os_exc.SDKException, ks.ClientException) as err:
            detail = getattr(err, "details", None) or str(err)
            raise ActionError(f"openstack {what}: {detail}") from None

    def _delete_when_free(self, call: Callable[[], Any], what: str) -> None:
        """A delete Neutron refuses while ports still use the resource (servers going away):
        tried again for IN_USE_TIMEOUT seconds, then an error saying a re-run finishes it."""
        timeout = IN_USE_TIMEOUT
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            try:
                self._retry(lambda: self._raise_in_use(call), what)
                return
            except _InUse as err:
                if time.monotonic() > deadline:
                    raise ActionError(f"openstack {what}: still in use after {timeout:.0f}s ({err}); "
                                      "run `provision down` again") from None
                self.sleep(delay)
                delay = min(delay * 2, WAIT_POLL_CAP)

    @staticmethod
    def _raise_in_use(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as err:
            if in_use(err):
                raise _InUse(getattr(err, "details", None) or str(err)) from None
            raise


class _InUse(Exception):
    """A Neutron resource still used by ports (409 ...InUse)."""
