"""Amazon EC2 through boto3.

Shared resources (VPC with an internet gateway, a subnet per zone, security groups, one key pair)
are found by the cluster tag or created with it. Hosts sharing one config (a worker pool) are
made by one RunInstances per pool and subnet with MinCount = MaxCount = N and the tags in the
same call; each batch carries a deterministic ClientToken and a `provision:batch` tag, and before
any (re)try the cloud is asked whether the batch already exists, so a retried or re-run call never
makes a second host. Hosts are listed with one filtered, paginated DescribeInstances.

Credentials come from the standard AWS chain; `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_EC2`)
point boto3 at another endpoint. Every client (EC2, ELBv2, S3) runs botocore's `adaptive` retry
mode: throttling, 5xx answers and dropped connections are retried by botocore, and its
client-side token bucket slows the calls down to the rate the service answers without
throttling (EC2 meters mutating calls in a bucket of 50 that refills at 5 a second). The one
exception is a creating call that is not idempotent by itself (no token EC2 dedupes, or an
endpoint that ignores it): botocore makes it once, and `_look_first` retries it after looking
whether the first try made the resource after all, so a lost answer never makes two.

provision reaches hosts over SSH at their public addresses. With `PROVISION_AWS_SSH_ADDRESS=private`
it reaches them at their private addresses instead: for a provision that runs inside the VPC (a
bastion, a CI runner) or reaches it over a VPN or Direct Connect, as it already does for etcd's
client port. Hosts keep their public addresses either way.
"""
from __future__ import annotations

from typing import Sequence

from .. import placement
from ..errors import ActionError
from .aws_calls import (FLATCAR_OWNER, LIVE_STATES, MAX_BATCH, SSH_ADDRESS_ENV, TAG_BATCH, TAG_INDICES,  # noqa: F401
                        TAG_ZONE_SLOT, aws_retryable, client_config, compress_indices, credentials_problem,
                        expand_indices, ssh_address_choice, ssh_over_private_addresses, tag_list, tags_of)
from .aws_configs import S3ConfigServer
from .aws_endpoint import APILoadBalancer
from .aws_instances import AWSInstances
from .aws_network import GROUP_KINDS, rule_key, split_permissions, wanted_permissions  # noqa: F401
from .base import TAG_CLUSTER, TAG_ROLE, HostRecord, UserDataLimit, network_inside
from .retry import Backoff, call_with_retry


class AWSProvider(AWSInstances):
    """EC2 hosts in a VPC the provider creates and tags (or reuses by tag). The parts: aws_calls
    (clients, retries), aws_network (VPC, subnets, groups, key, image), aws_instances (hosts),
    aws_endpoint (the API load balancer), aws_configs (configs served from S3)."""

    name = "aws"
    user_data_limit = UserDataLimit(16 * 1024, "raw")  # EC2: 16 KB before base64
    api_load_balancer = True  # a Network Load Balancer (elbv2)

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self._network = None
        self._image = None
        # Both take the provider's clients: one retry config (adaptive) for every AWS client.
        self.endpoint = APILoadBalancer(spec.name, self.options.region, self._elbv2_client, self._retry,
                                        self._find_or_create, self.log,
                                        tag_list({TAG_CLUSTER: spec.name, TAG_ROLE: "api"}))
        self.configs = S3ConfigServer(spec.name, self.options.region, self.client, self._retry, self.log,
                                      tag_list({TAG_CLUSTER: spec.name}))

    # -- checks ------------------------------------------------------------------------------
    def check(self) -> list[tuple[str, str]]:
        problems = []
        o = self.options
        if not o.region:
            problems.append(("provider.region", "required"))
        if o.ami is not None and not str(o.ami).startswith("ami-"):
            problems.append(("provider.ami", f"must be an AMI id like ami-0123456789abcdef0 (got {o.ami!r})"))
        if o.ami is None and self.spec.os.family != "flatcar":
            problems.append(("provider.ami", f"required with os.family {self.spec.os.family} "
                                             "(the automatic AMI lookup knows Flatcar only)"))
        if not network_inside(o.subnet_cidr, o.vpc_cidr):
            problems.append(("provider.subnet_cidr", f"{o.subnet_cidr} is not inside provider.vpc_cidr {o.vpc_cidr}"))
        if o.zones and o.availability_zone:
            problems.append(("provider.zones", "set provider.zones or provider.availability_zone, not both"))
        if len(set(o.zones)) != len(o.zones):
            problems.append(("provider.zones", f"names a zone twice ({', '.join(o.zones)})"))
        for zone in o.zones:
            if o.region and not (zone.startswith(o.region) and len(zone) > len(o.region)):
                problems.append(("provider.zones", f"{zone} is not a zone of provider.region {o.region}"))
        split = placement.split_problem(self.spec)
        if split:
            problems.append(("provider.subnet_cidr", split))
        return problems

    def preflight(self) -> list[tuple[str, str]]:
        problems = []
        problem = credentials_problem()
        if problem:
            problems.append(("provider", problem))
        value = ssh_address_choice()
        if value not in ("public", "private"):
            problems.append((SSH_ADDRESS_ENV, f"must be public or private (got {value!r})"))
        return problems

    # -- the API load balancer (aws_endpoint) -----------------------------------------------
    @property
    def api_lb_name(self) -> str:
        """Load balancer and target group name: at most 32 characters, unique per cluster."""
        return self.endpoint.name

    def ensure_api_endpoint(self) -> dict[str, str]:
        """A Network Load Balancer in front of every master (see aws_endpoint). Like `prepare`,
        the AMI is resolved first, so a spec naming no usable image makes nothing."""
        self.prepare()
        return self.endpoint.ensure(self.network())

    def find_api_endpoint(self) -> dict[str, str] | None:
        return self.endpoint.find()

    def register_api_targets(self, masters: Sequence[HostRecord]) -> None:
        self.endpoint.register(masters)

    # -- configs too large for user data (served from S3: aws_configs) -----------------------
    def config_bucket(self) -> str:
        return self.configs.bucket()

    def config_url(self, name: str, config: bytes) -> str | None:
        return self.configs.url(name, config)

    def serve_config(self, name: str, config: bytes, full_config: bytes) -> None:
        self.configs.serve(name, config, full_config)

    def forget_served_configs(self) -> int:
        """Delete the configs served to hosts that have booted (the `wait` phase calls this once
        every host answers SSH, i.e. has run its first boot); returns how many were deleted."""
        return self.configs.forget()

    def teardown(self) -> None:
        """Remove what `prepare` made, found by tag; waits for instances to finish terminating."""
        import time
        deadline = time.monotonic() + 600
        filters = self._cluster_filter() + [{"Name": "instance-state-name",
                                             "Values": LIVE_STATES + ["shutting-down"]}]
        while self._paginate("describe_instances", "Reservations", Filters=filters):
            if time.monotonic() > deadline:
                raise ActionError("aws: instances still terminating after 600s; run `provision down` again")
            time.sleep(2)
        dependency = Backoff(attempts=10, base=1.0, cap=15.0)

        def delete(operation: str, **params: object) -> None:
            from botocore.exceptions import ClientError

            def call():
                try:
                    getattr(self.ec2, operation)(**params)
                except ClientError as err:
                    if "NotFound" in err.response.get("Error", {}).get("Code", ""):
                        return  # gone already: a re-run of down
                    raise
            self._retry(lambda: call_with_retry(
                call, retryable=lambda e: "still in use" if "DependencyViolation" in str(e) else None,
                what=f"ec2 {operation}", log=self.log, backoff=dependency), operation)
        self.endpoint.remove()  # its network interfaces would hold the subnet
        vpcs = [v["VpcId"] for v in self._call("describe_vpcs", Filters=self._cluster_filter())["Vpcs"]]
        for vpc in vpcs:
            groups = [g for g in self._call("describe_security_groups",
                                            Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
                      if g.get("GroupName") != "default"]
            for group in groups:  # the groups name each other in rules: a group in use cannot go
                if group.get("IpPermissions"):
                    delete("revoke_security_group_ingress", GroupId=group["GroupId"],
                           IpPermissions=split_permissions(group["IpPermissions"]))
            for group in groups:
                delete("delete_security_group", GroupId=group["GroupId"])
            for subnet in self._call("describe_subnets", Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]:
                delete("delete_subnet", SubnetId=subnet["SubnetId"])
        for gateway in self._call("describe_internet_gateways", Filters=self._cluster_filter())["InternetGateways"]:
            for attachment in gateway.get("Attachments", []):
                delete("detach_internet_gateway", InternetGatewayId=gateway["InternetGatewayId"],
                       VpcId=attachment["VpcId"])
            delete("delete_internet_gateway", InternetGatewayId=gateway["InternetGatewayId"])
        for vpc in vpcs:
            delete("delete_vpc", VpcId=vpc)
        for pair in self._call("describe_key_pairs", Filters=self._cluster_filter())["KeyPairs"]:
            delete("delete_key_pair", KeyName=pair["KeyName"])
        self.configs.remove()
        self._network = None
        self.log(f"removed {len(vpcs)} VPC(s) with their subnet, security group and gateway")
