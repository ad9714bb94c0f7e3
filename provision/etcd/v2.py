"""etcd's v2 API with python-etcd: the keyspace CoreOS-era flannel and fleet speak, and the
`etcd` state backend's. Enabled on a cluster only when `spec.needs_etcd_v2`.
"""
from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlsplit

from ..errors import ActionError, UserError
from ..pki import TLSFiles
from .client import Etcd


def client(endpoints: Sequence[str], tls: TLSFiles | None = None, timeout: float = 5.0) -> Any:
    """A python-etcd (v2 API) client for `endpoints` (https://host:port ...), with the client
    certificate `tls` (CA, certificate and key paths) for https."""
    import etcd  # python-etcd
    if not endpoints:
        raise UserError("etcd: no endpoints to reach the cluster's etcd")
    parts = [urlsplit(e if "://" in e else f"https://{e}") for e in endpoints]
    schemes = {p.scheme for p in parts}
    if len(schemes) != 1 or not schemes <= {"http", "https"}:
        raise UserError(f"etcd endpoints: use one scheme, http or https (got {', '.join(endpoints)})")
    hosts = tuple((p.hostname, p.port or 2379) for p in parts)
    kwargs: dict[str, Any] = {"protocol": schemes.pop(), "read_timeout": timeout, "allow_reconnect": len(hosts) > 1}
    if kwargs["protocol"] == "https":
        if tls is None:
            raise UserError("etcd: https endpoints need the provisioner's client certificate")
        kwargs.update(cert=(str(tls.cert), str(tls.key)), ca_cert=str(tls.ca))
    try:
        return etcd.Client(host=hosts if len(hosts) > 1 else hosts[0][0],
                           **({} if len(hosts) > 1 else {"port": hosts[0][1]}), **kwargs)
    except etcd.EtcdException as err:
        raise ActionError(f"etcd: cannot connect to {', '.join(endpoints)}: {err}") from None


def client_of(cluster: Etcd) -> Any:
    """The v2 client for the endpoints and identity of `cluster`."""
    return client(cluster.endpoints, cluster.tls, cluster.timeout)


def get(cluster: Etcd, key: str) -> str | None:
    import etcd
    try:
        return client_of(cluster).read(key).value
    except etcd.EtcdKeyNotFound:
        return None
    except etcd.EtcdException as err:
        raise ActionError(f"etcd v2: reading {key} failed: {err}") from None


def create(cluster: Etcd, key: str, value: str) -> bool:
    """coreos-kubernetes: `PUT ...?prevExist=false`, "Key already exists" counts as done."""
    import etcd
    try:
        client_of(cluster).write(key, value, prevExist=False)
        return True
    except etcd.EtcdAlreadyExist:
        return False
    except etcd.EtcdException as err:
        raise ActionError(f"etcd v2: writing {key} failed: {err}") from None
