"""The API endpoint on libcloud clouds: the cloud's load balancer through `libcloud.loadbalancer`.

`LB_DRIVERS` maps a libcloud compute driver to the load-balancer driver libcloud has for the same
cloud. A compute driver missing from it (DigitalOcean, Linode, ...) gets no load balancer: nodes
reach every master through the node-local proxy. The load balancer is made with libcloud's common
API: `create_balancer` (TCP 6443, round robin) named `<cluster>-api` (at most 32 characters, what
AWS allows), every master attached with `balancer_attach_compute_node`, found again by name (and,
where the driver lists tags, by the cluster's tag) so a second `up` makes nothing, removed with
`destroy_balancer` by `down`. A master that goes (scale down, replacement, `down` of a host) is
detached first with `balancer_detach_member`: most clouds keep a member whose node is gone.

Only the EC2 pairing (Elastic Load Balancing, classic) is exercised here (against moto's server);
for it, what libcloud's ELB driver has no method for goes through the driver's own signed
connection: a TCP health check on 6443 (`ConfigureHealthCheck`) and the cluster's tag (`AddTags`).
Other drivers get the balancer and its members, with their own default health check.
"""
from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ActionError, UserError
from .base import TAG_CLUSTER, HostRecord
from .libcloud_common import construct_driver

if TYPE_CHECKING:
    from libcloud.loadbalancer.base import LoadBalancer

    from .libcloud_driver import LibcloudProvider

API_PORT = 6443

# compute driver -> load-balancer driver (libcloud.compute.types.Provider -> libcloud.loadbalancer.types.Provider)
LB_DRIVERS = {
    "ec2": "elb",
    "gce": "gce",
    "cloudstack": "cloudstack",
    "rackspace": "rackspace",
    "brightbox": "brightbox",
    "dimensiondata": "dimensiondata",
    "nttcis": "nttcis",
    "aliyun_ecs": "aliyun_slb",
}
# ELB's health check: TCP connect to 6443 every 10 s, 2 answers to change a master's state
ELB_HEALTH_CHECK = {"Target": f"TCP:{API_PORT}", "Interval": "10", "Timeout": "5", "UnhealthyThreshold": "2",
                    "HealthyThreshold": "2"}


def lb_driver_name(compute_driver: str) -> str | None:
    """The load-balancer driver of a compute driver's cloud, or None when libcloud has none."""
    return LB_DRIVERS.get(compute_driver)


def balancer_name(cluster: str) -> str:
    """`<cluster>-api`, at most 32 characters (ELB's limit), unique per cluster."""
    name = f"{cluster}-api"
    if len(name) > 32:
        name = f"{cluster[:21]}-{hashlib.sha256(cluster.encode()).hexdigest()[:6]}-api"
    return name


def make_lb_driver(provider: LibcloudProvider) -> Any:
    """The load-balancer driver of the provider's cloud, with the compute driver's credentials and
    connection (its region: provider.region, else the compute driver's)."""
    from libcloud.loadbalancer.providers import get_driver
    cls = get_driver(lb_driver_name(provider.options.driver))
    key, kwargs = provider._driver_kwargs()
    kwargs.setdefault("region", getattr(provider.driver, "region_name", None))
    try:
        driver = construct_driver(cls, key, kwargs)
    except Exception as err:  # a driver's own complaint about its arguments
        raise UserError(f"provider.load_balancer: cannot set up libcloud load-balancer driver "
                        f"{lb_driver_name(provider.options.driver)!r}: {err}") from None
    provider._override_connection(driver, kwargs)
    return driver


class LibcloudLoadBalancer:
    """The API load balancer of one LibcloudProvider: `make_driver()` builds the load-balancer
    driver, `retry(call, what)` runs a call with the provider's backoff, `nodes()` lists the
    cluster's compute nodes."""

    def __init__(self, cluster: str, driver_name: str, make_driver: Callable[[], Any],
                 retry: Callable[[Callable[[], Any], str], Any], nodes: Callable[[], list[Any]],
                 log: Callable[[str], None]):
        self.cluster = cluster
        self.driver_name = driver_name
        self.make_driver = make_driver
        self.retry = retry
        self.nodes = nodes
        self.log = log
        self._driver: Any = None

    @property
    def name(self) -> str:
        return balancer_name(self.cluster)

    @property
    def kind(self) -> str:
        return f"libcloud-{self.driver_name}"

    @property
    def driver(self) -> Any:
        if self._driver is None:
            self._driver = self.make_driver()
        return self._driver

    @property
    def is_elb(self) -> bool:
        return self.driver_name == "elb"

    def _elb(self, action: str, params: dict[str, str]) -> Any:
        from libcloud.loadbalancer.drivers import elb  # its request path, as its own calls use it
        return self.driver.connection.request(elb.ROOT, params={"Action": action, **params}).object

    def _tags(self, balancer: LoadBalancer) -> dict[str, str] | None:
        """The balancer's tags where the driver lists them (ELB), else None."""
        if not self.is_elb:
            return None
        return dict(self.driver._ex_list_balancer_tags(balancer.id))

    def find(self) -> Any:
        """Ours: named `name`, and tagged with the cluster where the driver has tags."""
        for balancer in self.retry(self.driver.list_balancers, "list load balancers"):
            if balancer.name != self.name:
                continue
            tags = self.retry(functools.partial(self._tags, balancer), "list load balancer tags")
            if tags is None or tags.get(TAG_CLUSTER) == self.cluster:
                return balancer
            self.log(f"load balancer {self.name} exists but is not tagged {TAG_CLUSTER}={self.cluster}: "
                     "not ours, left alone")
        return None

    def endpoint(self, balancer: LoadBalancer) -> dict[str, str]:
        return {"kind": self.kind, "dns_name": str(balancer.ip), "load_balancer": str(balancer.id)}

    def ensure(self) -> dict[str, str]:
        from libcloud.loadbalancer.base import Algorithm

        def attempt() -> Any:
            found = self.find()
            if found is not None:
                return found
            self.log(f"creating API load balancer {self.name} ({self.driver_name}, TCP {API_PORT})")
            return self.driver.create_balancer(name=self.name, port=API_PORT, protocol="tcp",
                                               algorithm=Algorithm.ROUND_ROBIN, members=[])
        balancer = self.retry(attempt, "create API load balancer")
        if self.is_elb:
            self.retry(lambda: self._elb("AddTags", {"LoadBalancerNames.member.1": self.name,
                                                     "Tags.member.1.Key": TAG_CLUSTER,
                                                     "Tags.member.1.Value": self.cluster}),
                       "tag API load balancer")
            self.retry(lambda: self._elb("ConfigureHealthCheck", {
                "LoadBalancerName": self.name, **{f"HealthCheck.{k}": v for k, v in ELB_HEALTH_CHECK.items()}}),
                "set the API load balancer's health check")
        if not balancer.ip:  # libcloud's ELB create reads no DNSName from AWS's answer: list it again
            balancer = self.find() or balancer
        if not balancer.ip:
            raise ActionError(f"libcloud {self.driver_name}: load balancer {self.name} has no address yet; "
                              "run `provision up` again")
        return self.endpoint(balancer)

    def register(self, masters: list[HostRecord]) -> None:
        """Every master attached (by its node); idempotent."""
        balancer = self.find()
        if balancer is None:
            return
        members = self.retry(lambda: self.driver.balancer_list_members(balancer), "list load balancer members")
        have = {str(m.id) for m in members} | {str(m.ip) for m in members if m.ip}
        wanted = {m.provider_id for m in masters}
        for node in sorted(self.nodes(), key=lambda n: n.name):
            if (str(node.id) not in wanted or str(node.id) in have or set(node.private_ips or []) & have
                    or set(node.public_ips or []) & have):
                continue
            self.log(f"adding {node.name} to the API load balancer")
            self.retry(functools.partial(self.driver.balancer_attach_compute_node, balancer, node),
                       f"add {node.name} to the API load balancer")

    def deregister(self, names: Sequence[str]) -> None:
        """The named nodes' members detached (matched by node id or address); idempotent."""
        balancer = self.find()
        if balancer is None:
            return
        going = [n for n in self.nodes() if n.name in set(names)]
        by_key = {str(n.id): n.name for n in going}
        by_key.update({ip: n.name for n in going for ip in (n.private_ips or []) + (n.public_ips or [])})
        members = self.retry(lambda: self.driver.balancer_list_members(balancer), "list load balancer members")
        for member in sorted(members, key=lambda m: str(m.id)):
            name = by_key.get(str(member.id)) or (by_key.get(str(member.ip)) if member.ip else None)
            if name is None:
                continue
            self.log(f"taking {name} off the API load balancer")
            self.retry(functools.partial(self.driver.balancer_detach_member, balancer, member),
                       f"take {name} off the API load balancer")

    def remove(self) -> None:
        balancer = self.find()
        if balancer is not None:
            self.log(f"deleting API load balancer {self.name}")
            self.retry(lambda: self.driver.destroy_balancer(balancer), "delete API load balancer")
