"""The cluster's API endpoint on AWS: a Network Load Balancer (elbv2) in every zone's subnet,
TCP 6443 to a target group holding every master, named `<cluster>-api` (at most 32 characters)
and tagged with the cluster; found by name before anything is made, removed by `down`.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .base import HostRecord

if TYPE_CHECKING:
    from botocore.client import BaseClient

Retry = Callable[[Callable[[], Any], str], Any]
FindOrCreate = Callable[[str, Callable[[], "str | None"], Callable[[], str]], str]


class APILoadBalancer:
    """The load balancer of cluster `cluster` in `region`. `client()` answers the ELBv2 client
    (the provider's: adaptive retries, one attempt while a creating call looks first);
    `retry(call, what)` runs a call with the provider's backoff; `find_or_create(what, find,
    create)` looks before every creating try; `tags` are the resources' tags as an AWS TagSet."""

    def __init__(self, cluster: str, region: str, client: Callable[[], BaseClient], retry: Retry,
                 find_or_create: FindOrCreate, log: Callable[[str], None], tags: list[dict[str, str]]):
        self.cluster = cluster
        self.region = region
        self.client = client
        self.retry = retry
        self.find_or_create = find_or_create
        self.log = log
        self.tags = tags

    @property
    def elbv2(self) -> BaseClient:
        return self.client()

    @property
    def name(self) -> str:
        """Load balancer and target group name: at most 32 characters, unique per cluster."""
        name = f"{self.cluster}-api"
        if len(name) > 32:
            digest = hashlib.sha256(self.cluster.encode()).hexdigest()[:6]
            name = f"{self.cluster[:21]}-{digest}-api"
        return name

    def _find(self, operation: str, key: str, **params: object) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError
        try:
            found = getattr(self.elbv2, operation)(**params)[key]
        except ClientError as err:
            if "NotFound" in err.response.get("Error", {}).get("Code", ""):
                return None
            raise
        return found[0] if found else None

    def ensure(self, network: Mapping[str, Any]) -> dict[str, str]:
        """A Network Load Balancer in every zone's subnet (`network["subnets"]`), TCP 6443 to a
        target group holding every master (TCP health check on 6443); found by name before
        anything is created."""
        name = self.name
        tags = self.tags

        def find_lb():
            lb = self._find("describe_load_balancers", "LoadBalancers", Names=[name])
            return lb["LoadBalancerArn"] if lb else None

        def create_lb():
            return self.elbv2.create_load_balancer(Name=name, Subnets=list(network["subnets"]), Scheme="internet-facing",
                                                   Type="network", Tags=tags)["LoadBalancers"][0]["LoadBalancerArn"]
        lb_arn = self.find_or_create("API load balancer", find_lb, create_lb)

        def find_tg():
            tg = self._find("describe_target_groups", "TargetGroups", Names=[name])
            return tg["TargetGroupArn"] if tg else None

        def create_tg():
            return self.elbv2.create_target_group(
                Name=name, Protocol="TCP", Port=6443, VpcId=network["vpc"], TargetType="instance",
                HealthCheckProtocol="TCP", HealthCheckPort="6443", HealthCheckIntervalSeconds=10,
                HealthyThresholdCount=3, UnhealthyThresholdCount=3, Tags=tags)["TargetGroups"][0]["TargetGroupArn"]
        tg_arn = self.find_or_create("API target group", find_tg, create_tg)

        def find_listener():
            listeners = self.elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
            return next((x["ListenerArn"] for x in listeners if x["Port"] == 6443), None)

        def create_listener():
            return self.elbv2.create_listener(LoadBalancerArn=lb_arn, Protocol="TCP", Port=6443,
                                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
                                              )["Listeners"][0]["ListenerArn"]
        self.find_or_create("API listener", find_listener, create_listener)
        lb = self.retry(lambda: self.elbv2.describe_load_balancers(LoadBalancerArns=[lb_arn]),
                        "describe load balancer")["LoadBalancers"][0]
        return {"kind": "aws-nlb", "dns_name": lb["DNSName"], "load_balancer": lb_arn, "target_group": tg_arn}

    def find(self) -> dict[str, str] | None:
        lb = self.retry(lambda: self._find("describe_load_balancers", "LoadBalancers", Names=[self.name]),
                        "describe API load balancer")
        return {"kind": "aws-nlb", "dns_name": lb["DNSName"], "load_balancer": lb["LoadBalancerArn"]} if lb else None

    def register(self, masters: Sequence[HostRecord]) -> None:
        tg = self._find("describe_target_groups", "TargetGroups", Names=[self.name])
        if tg is None or not masters:
            return
        health = self.retry(lambda: self.elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"]),
                            "describe targets")["TargetHealthDescriptions"]
        registered = {t["Target"]["Id"] for t in health}
        missing = sorted(m.provider_id for m in masters if m.provider_id not in registered)
        if missing:
            self.log(f"registering {len(missing)} master(s) with the API load balancer")
            self.retry(lambda: self.elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"],
                                                          Targets=[{"Id": i, "Port": 6443} for i in missing]),
                       "register API targets")

    def remove(self) -> None:
        name = self.name
        lb = self._find("describe_load_balancers", "LoadBalancers", Names=[name])
        if lb is not None:
            for listener in self.elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
                self._delete_listener(listener["ListenerArn"])
            self.retry(lambda: self.elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"]),
                       "delete API load balancer")
        tg = self._find("describe_target_groups", "TargetGroups", Names=[name])
        if tg is not None:
            self.retry(lambda: self.elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"]),
                       "delete API target group")
        if lb is not None or tg is not None:
            self.log("removed the API load balancer")

    def _delete_listener(self, arn: str) -> None:
        self.retry(lambda: self.elbv2.delete_listener(ListenerArn=arn), "delete API listener")
