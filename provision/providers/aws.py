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

import hashlib
import os
from typing import Any, Callable, Mapping, Sequence

from .. import placement
from ..errors import ActionError
from ..plan import HostPlan, host_name
from ..spec.model import AWSOptions
from .base import (TAG_CLUSTER, TAG_HOST, TAG_POOL, TAG_ROLE, HostRecord, Provider, UserDataLimit,
                   host_tags, network_inside)
from .aws_configs import S3ConfigServer
from .aws_endpoint import APILoadBalancer
from .retry import Backoff, call_with_retry

TAG_BATCH = "provision:batch"      # ClientToken of the RunInstances that made the host
TAG_INDICES = "provision:indices"  # host indices of that batch, in launch order ("0-4,7")
TAG_ZONE_SLOT = "provision:zone-slot"  # a subnet's zone slot (provision.placement)

# Flatcar's publishing account (the owner filter keeps look-alike community images out).
FLATCAR_OWNER = "075585003325"
# EC2 caps one RunInstances at the RunInstances token bucket's burst.
MAX_BATCH = 1000
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
STATE_MAP = {"pending": "pending", "running": "running", "stopping": "stopped", "stopped": "stopped",
             "shutting-down": "terminated", "terminated": "terminated"}
# botocore's retry attempts per call (the first included), in its `adaptive` mode.
AWS_MAX_ATTEMPTS = 8
SSH_ADDRESS_ENV = "PROVISION_AWS_SSH_ADDRESS"  # public (default) | private
THROTTLING_CODES = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
                    "TooManyRequestsException", "SlowDown", "EC2ThrottledException",
                    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}


def compress_indices(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (launch order kept; fits a 256-character tag value)."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if start is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def expand_indices(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def aws_retryable(err: BaseException) -> str | None:
    """Why an error is worth another try (throttling, 5xx, a dropped connection), or None."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in THROTTLING_CODES or status == 429:
            return f"throttled ({code or status})"
        if status >= 500 and status != 501:  # 501 Not Implemented will not change on a retry
            return f"server error {status} ({code})"
        return None
    if isinstance(err, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return f"connection problem ({type(err).__name__})"
    return None


def client_config(max_attempts: int = AWS_MAX_ATTEMPTS, **extra: Any):
    """The botocore config of every client: `adaptive` retries (standard retries plus a token
    bucket that paces calls to the rate the service accepts), `max_attempts` tries a call."""
    from botocore.config import Config
    return Config(retries={"mode": "adaptive", "total_max_attempts": max_attempts},
                  user_agent_extra="provision", **extra)


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


def ssh_address_choice() -> str:
    """`PROVISION_AWS_SSH_ADDRESS` as given (default public); preflight refuses other values."""
    return os.environ.get(SSH_ADDRESS_ENV, "").strip().lower() or "public"


def ssh_over_private_addresses() -> bool:
    """Whether provision reaches hosts at their private addresses (see the module doc)."""
    return ssh_address_choice() == "private"


def credentials_problem() -> str | None:
    """Why boto3's standard chain finds no credentials here, or None when it finds some (found
    before anything is made, instead of at the first API call after PKI)."""
    import boto3
    from botocore.exceptions import BotoCoreError
    try:
        credentials = boto3.session.Session().get_credentials()
    except BotoCoreError as err:  # e.g. AWS_PROFILE names a profile the config lacks
        return f"AWS credentials cannot be read: {err}"
    if credentials is None:
        return ("no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "~/.aws/credentials, or an instance profile)")
    return None


class AWSProvider(Provider):
    """EC2 hosts in a VPC the provider creates and tags (or reuses by tag)."""

    name = "aws"
    options: AWSOptions  # the spec's provider options, typed
    user_data_limit = UserDataLimit(16 * 1024, "raw")  # EC2: 16 KB before base64
    api_load_balancer = True  # a Network Load Balancer (elbv2)

    def __init__(self, spec, workdir=None, log=None):
        super().__init__(spec, workdir, log)
        self.backoff = Backoff()  # only for `_look_first`: botocore retries every other call
        self.max_attempts = AWS_MAX_ATTEMPTS
        self._looking_first = False
        self._single_attempt: dict[str, Any] = {}
        self._client = None
        self._elbv2: Any = None
        self._network: dict[str, Any] | None = None
        self._image: str | None = None
        self.endpoint = APILoadBalancer(spec.name, self.options.region, self._retry, self._find_or_create, self.log,
                                        tag_list({TAG_CLUSTER: spec.name, TAG_ROLE: "api"}))
        self.endpoint.client = self._elbv2_client  # adaptive retries, single-attempt while looking first
        self.configs = S3ConfigServer(spec.name, self.options.region, self._retry, self.log,
                                      tag_list({TAG_CLUSTER: spec.name}))

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def ec2(self):
        if self._looking_first:
            return self._single_attempt_client("ec2")
        if self._client is None:
            self._client = self._make_client("ec2", self.max_attempts)
        return self._client

    def _make_client(self, service: str, attempts: int):
        import boto3
        client = boto3.session.Session().client(service, region_name=self.options.region,
                                                config=client_config(attempts, connect_timeout=10, read_timeout=60))
        client.meta.events.register("needs-retry", self._log_retry)
        return client

    def _elbv2_client(self) -> Any:
        """The ELBv2 client the API load balancer uses (single-attempt while looking first)."""
        if self._looking_first:
            return self._single_attempt_client("elbv2")
        if self._elbv2 is None:
            self._elbv2 = self._make_client("elbv2", self.max_attempts)
        return self._elbv2

    def _single_attempt_client(self, service: str):
        if service not in self._single_attempt:
            self._single_attempt[service] = self._make_client(service, 1)
        return self._single_attempt[service]

    def _log_retry(self, response=None, attempts: int = 0, caught_exception=None, operation=None, **_: Any) -> None:
        """Say when botocore is about to retry a call (it decides; this only reports)."""
        if attempts >= self.max_attempts or self._looking_first:
            return
        reason = None
        if caught_exception is not None:
            reason = aws_retryable(caught_exception)
        elif response is not None:
            http, parsed = response
            code = (parsed or {}).get("Error", {}).get("Code", "")
            if code in THROTTLING_CODES or http.status_code == 429:
                reason = f"throttled ({code or http.status_code})"
            elif http.status_code >= 500 and http.status_code != 501:
                reason = f"server error {http.status_code} ({code})"
        if reason:
            name = getattr(operation, "name", "call")
            self.log(f"aws {name}: {reason}; botocore retries (attempt {attempts + 1}/{self.max_attempts}, adaptive)")

    def _look_first(self, attempt: Callable[[], Any], what: str) -> Any:
        """A creating call botocore must not repeat blindly: `attempt` looks for what an earlier
        try made before it creates; each try's calls are made once, and a throttled or lost one
        is tried again here with backoff."""
        self._looking_first = True
        try:
            return self._retry(lambda: call_with_retry(attempt, retryable=aws_retryable, what=f"aws {what}",
                                                       log=self.log, backoff=self.backoff), what)
        finally:
            self._looking_first = False

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        """Run `call` (botocore retries its calls); errors become ActionError."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        try:
            return call()
        except NoCredentialsError:
            raise ActionError("aws: no credentials found in the standard AWS chain (AWS_ACCESS_KEY_ID/"
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance role)") from None
        except ClientError as err:
            error = err.response.get("Error", {})
            raise ActionError(f"aws {what}: {error.get('Code', 'error')}: {error.get('Message', err)}") from None
        except BotoCoreError as err:
            raise ActionError(f"aws {what}: {err}") from None

    def _call(self, operation: str, **params: Any) -> Any:
        return self._retry(lambda: getattr(self.ec2, operation)(**params), operation)

    def _paginate(self, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        def pages() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for page in self.ec2.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items
        return self._retry(pages, operation)

    def _cluster_filter(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.spec.name]}]

    def _tag_spec(self, resource_type: str, extra: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        tags = {TAG_CLUSTER: self.spec.name, "Name": self.spec.name, **(extra or {})}
        return [{"ResourceType": resource_type, "Tags": tag_list(tags)}]

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

    # -- shared resources --------------------------------------------------------------------
    def prepare(self) -> None:
        """VPC, internet gateway and route, subnet, security group, key pair: found by tag or made
        (after the AMI is resolved, so a spec naming no usable image creates nothing)."""
        self.image()
        self.network()

    def network(self) -> dict[str, Any]:
        if self._network is None:
            vpc = self._ensure_vpc()
            subnets = self._ensure_subnets(vpc)
            groups = self._ensure_security_groups(vpc)
            key = self._ensure_key_pair()
            self._network = {"vpc": vpc, "subnet": subnets[0], "subnets": tuple(subnets), "security_group": groups["nodes"],
                             "security_group_masters": groups["masters"], "security_group_etcd": groups["etcd"],
                             "key_name": key}
        return self._network

    def _find_or_create(self, what: str, find: Callable[[], str | None], create: Callable[[], str]) -> str:
        """Look before every (re)try of a creating call, so a lost answer never duplicates."""
        def attempt() -> str:
            found = find()
            if found:
                return found
            self.log(f"creating {what}")
            return create()
        return self._look_first(attempt, f"create {what}")

    def _ensure_vpc(self) -> str:
        def find():
            vpcs = self.ec2.describe_vpcs(Filters=self._cluster_filter())["Vpcs"]
            return sorted(v["VpcId"] for v in vpcs)[0] if vpcs else None

        def create():
            vpc = self.ec2.create_vpc(CidrBlock=self.options.vpc_cidr,
                                      TagSpecifications=self._tag_spec("vpc"))["Vpc"]["VpcId"]
            return vpc
        vpc = self._find_or_create("VPC", find, create)
        # Read first: a no-op `up` makes no mutating call (EC2 meters those in a small bucket).
        if not self._call("describe_vpc_attribute", VpcId=vpc, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]:
            self._call("modify_vpc_attribute", VpcId=vpc, EnableDnsHostnames={"Value": True})
        self._ensure_internet_route(vpc)
        return vpc

    def _ensure_internet_route(self, vpc: str) -> None:
        def find():
            gateways = self.ec2.describe_internet_gateways(Filters=self._cluster_filter())["InternetGateways"]
            return sorted(g["InternetGatewayId"] for g in gateways)[0] if gateways else None

        def create():
            return self.ec2.create_internet_gateway(
                TagSpecifications=self._tag_spec("internet-gateway"))["InternetGateway"]["InternetGatewayId"]
        gateway = self._find_or_create("internet gateway", find, create)
        attached = self._call("describe_internet_gateways", InternetGatewayIds=[gateway])["InternetGateways"][0]
        if not any(a.get("VpcId") == vpc for a in attached.get("Attachments", [])):
            self._call("attach_internet_gateway", InternetGatewayId=gateway, VpcId=vpc)
        tables = self._call("describe_route_tables", Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                              {"Name": "association.main", "Values": ["true"]}])
        for table in tables["RouteTables"]:
            if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in table.get("Routes", [])):
                self._call("create_route", RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0",
                           GatewayId=gateway)

    def zones(self) -> list[str]:
        """The zone of each zone slot (see `provision.placement`)."""
        o = self.options
        named = list(o.zones) or ([o.availability_zone] if o.availability_zone else [])
        if not named:
            available = self._call("describe_availability_zones",
                                   Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
            named = sorted(z["ZoneName"] for z in available)[:placement.DEFAULT_ZONE_SLOTS]
            if not named:
                raise ActionError(f"aws: region {o.region} reports no available zone")
        return placement.slot_zones(placement.zone_slot_count(self.spec), named)

    def _ensure_subnets(self, vpc: str) -> list[str]:
        """One subnet per zone slot, tagged with its slot. A cluster made before zones keeps its
        one subnet (the whole subnet_cidr) for every slot."""
        cidrs = placement.zone_subnets(self.spec)
        tagged = self._call("describe_subnets", Filters=self._cluster_filter()
                            + [{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        whole = sorted(s["SubnetId"] for s in tagged if s.get("CidrBlock") == self.options.subnet_cidr)
        if whole:
            subnets = [whole[0]] * len(cidrs)
        else:
            zones = self.zones()
            subnets = [self._ensure_subnet(vpc, slot, cidr, zones[slot]) for slot, cidr in enumerate(cidrs)]
        for subnet in sorted(set(subnets)):  # read first: a no-op `up` makes no mutating call
            if not self._call("describe_subnets", SubnetIds=[subnet])["Subnets"][0].get("MapPublicIpOnLaunch"):
                self._call("modify_subnet_attribute", SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
        return subnets

    def _ensure_subnet(self, vpc: str, slot: int, cidr: str, zone: str) -> str:
        def find():
            subnets = self.ec2.describe_subnets(Filters=self._cluster_filter()
                                                + [{"Name": "vpc-id", "Values": [vpc]},
                                                   {"Name": "cidr-block", "Values": [cidr]}])["Subnets"]
            return sorted(s["SubnetId"] for s in subnets)[0] if subnets else None

        def create():
            return self.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone,
                                          TagSpecifications=self._tag_spec("subnet", {TAG_ZONE_SLOT: str(slot)})
                                          )["Subnet"]["SubnetId"]
        return self._find_or_create(f"subnet {cidr} in {zone}", find, create)

    def _ensure_security_groups(self, vpc: str) -> dict[str, str]:
        """One group per kind of host (every node, masters, etcd members), each with exactly the
        rules of `wanted_permissions`: missing ones are opened, others (a narrowed ssh_cidrs) revoked."""
        groups = {kind: self._ensure_security_group(vpc, kind) for kind in GROUP_KINDS}
        for kind, group in groups.items():
            current = self._call("describe_security_groups", GroupIds=[group])["SecurityGroups"][0]
            have = split_permissions(current.get("IpPermissions", []))
            wanted = wanted_permissions(kind, groups, self.options)
            wanted_keys = {rule_key(p) for p in wanted}
            have_keys = {rule_key(p) for p in have}
            missing = [p for p in wanted if rule_key(p) not in have_keys]
            extra = [p for p in have if rule_key(p) not in wanted_keys]
            if missing:
                self.log(f"opening {len(missing)} security group rule(s) of {kind}")
                self._call("authorize_security_group_ingress", GroupId=group, IpPermissions=missing)
            if extra:
                self.log(f"revoking {len(extra)} security group rule(s) of {kind} the spec no longer asks")
                self._call("revoke_security_group_ingress", GroupId=group, IpPermissions=extra)
        return groups

    def security_groups_for(self, role: str, network: Mapping[str, str]) -> list[str]:
        """Groups of a host of `role`: every node's, plus masters' and etcd members' own."""
        groups = [network["security_group"]]
        if role == "master":
            groups.append(network["security_group_masters"])
        if role == "etcd" or (role == "master" and self.spec.etcd.placement == "masters"):
            groups.append(network["security_group_etcd"])
        return groups

    def _ensure_security_group(self, vpc: str, kind: str) -> str:
        group_name = f"provision-{self.spec.name}" + ("" if kind == "nodes" else f"-{kind}")

        def find():
            groups = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                               {"Name": "group-name", "Values": [group_name]}])
            return sorted(g["GroupId"] for g in groups["SecurityGroups"])[0] if groups["SecurityGroups"] else None

        def create():
            return self.ec2.create_security_group(
                GroupName=group_name, VpcId=vpc, Description=f"provision cluster {self.spec.name} ({kind})",
                TagSpecifications=self._tag_spec("security-group"))["GroupId"]
        return self._find_or_create(f"security group {group_name}", find, create)

    def _ensure_key_pair(self) -> str:
        key_name = f"provision-{self.spec.name}"

        def find():
            pairs = self.ec2.describe_key_pairs(Filters=self._cluster_filter())["KeyPairs"]
            return sorted(p["KeyName"] for p in pairs)[0] if pairs else None

        def create():
            from botocore.exceptions import ClientError
            try:
                return self.ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=self.spec.ssh.authorized_keys[0].encode(),
                                                TagSpecifications=self._tag_spec("key-pair"))["KeyName"]
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") == "InvalidKeyPair.Duplicate":
                    return key_name  # same name, made outside provision or before tags: reuse it
                raise
        return self._find_or_create("key pair", find, create)

    def image(self) -> str:
        """The AMI: provider.ami, or the newest Flatcar image of os.channel."""
        if self.options.ami:
            return self.options.ami
        if self._image is None:
            channel = self.spec.os.channel
            images = self._call("describe_images", Owners=[FLATCAR_OWNER], Filters=[
                {"Name": "name", "Values": [f"Flatcar-{channel}-*"]},
                {"Name": "architecture", "Values": ["x86_64"]},
                {"Name": "virtualization-type", "Values": ["hvm"]},
                {"Name": "state", "Values": ["available"]}])["Images"]
            if not images:
                raise ActionError(f"aws: no Flatcar {channel} AMI found in {self.options.region} "
                                  f"(owner {FLATCAR_OWNER}); set provider.ami")
            newest = max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", "")))
            self.log(f"AMI {newest['ImageId']} ({newest.get('Name')})")
            self._image = newest["ImageId"]
        return self._image

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

    # -- hosts -------------------------------------------------------------------------------
    def batch_token(self, pool: str, indices: Sequence[int], config: bytes, generation: int = 0) -> str:
        """RunInstances ClientToken: the same batch (cluster, pool, indices, config) always gets
        the same token, so EC2 itself answers a retry with the first call's instances."""
        digest = hashlib.sha256("\0".join([self.spec.name, pool, compress_indices(indices),
                                           hashlib.sha256(config).hexdigest(), str(generation)]).encode())
        return "pv-" + digest.hexdigest()[:40]

    def slot(self, host: HostPlan) -> int:
        """The zone slot (subnet) a host is made in."""
        return placement.host_slot(self.spec, host.name, host.index, host.address)

    def batches(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[list[HostPlan]]:
        """Hosts of one pool, zone and config with no fixed address go together (up to MAX_BATCH)."""
        groups: dict[tuple[str, str, int], list[HostPlan]] = {}
        singles: list[list[HostPlan]] = []
        for host in hosts:
            if host.address:
                singles.append([host])
            else:
                key = (host.pool, hashlib.sha256(configs[host.name]).hexdigest(), self.slot(host))
                groups.setdefault(key, []).append(host)
        out = list(singles)
        for group in groups.values():
            group = sorted(group, key=lambda h: h.index)
            out.extend(group[i:i + MAX_BATCH] for i in range(0, len(group), MAX_BATCH))
        return out

    def create_hosts(self, hosts: Sequence[HostPlan], configs: Mapping[str, bytes]) -> list[HostRecord]:
        self.prepare()
        network = self.network()
        existing = {h.name: h for h in self.list_hosts()}
        records = [existing[h.name] for h in hosts if h.name in existing]
        self._ensure_instance_groups([(h, existing[h.name]) for h in hosts if h.name in existing], network)
        todo = [h for h in hosts if h.name not in existing]
        for batch in self.batches(todo, configs):
            records.extend(self._run_batch(batch, configs[batch[0].name], network))
        self.register_api_targets([r for r in records if r.role == "master"])
        order = {h.name: i for i, h in enumerate(hosts)}
        return sorted(records, key=lambda r: order.get(r.name, len(order)))

    def _ensure_instance_groups(self, hosts: Sequence[tuple[HostPlan, HostRecord]], network: Mapping[str, str]) -> None:
        """Hosts made before the groups were split per role (one group for all) get their role's
        groups, so revoking the old shared rules does not cut masters and etcd members off."""
        ids = {r.provider_id: h for h, r in hosts if r.provider_id}
        if not ids:
            return
        for instance in self._describe_instances([{"Name": "instance-id", "Values": sorted(ids)}]):
            host = ids[instance["InstanceId"]]
            wanted = self.security_groups_for(host.role, network)
            have = {g["GroupId"] for g in instance.get("SecurityGroups", [])} or {
                g["GroupId"] for ni in instance.get("NetworkInterfaces", [])[:1] for g in ni.get("Groups", [])}
            if have != set(wanted):
                self.log(f"{host.name}: security groups of a {host.role}")
                self._call("modify_instance_attribute", InstanceId=instance["InstanceId"], Groups=wanted)

    def _run_batch(self, batch: list[HostPlan], config: bytes, network: Mapping[str, str]) -> list[HostRecord]:
        pool = self.spec.pool(batch[0].pool)
        indices = [h.index for h in batch]
        token = self.batch_token(pool.name, indices, config)
        common = {TAG_CLUSTER: self.spec.name, TAG_POOL: pool.name, TAG_ROLE: pool.role,
                  TAG_BATCH: token, TAG_INDICES: compress_indices(indices)}
        if len(batch) == 1:  # one host: its own name goes in the same call
            common.update(host_tags(self.spec.name, batch[0]), Name=batch[0].name)
        params: dict[str, Any] = {
            "ImageId": self.image(), "InstanceType": pool.size or self.options.instance_type,
            "MinCount": len(batch), "MaxCount": len(batch), "KeyName": network["key_name"],
            "UserData": config, "ClientToken": token,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(common)},
                                  {"ResourceType": "volume", "Tags": tag_list(common)},
                                  {"ResourceType": "network-interface", "Tags": tag_list(common)}]}
        # IMDSv2 only, one hop: a pod (one hop further) cannot read the instance's metadata or user data
        params["MetadataOptions"] = {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"}
        interface = {"DeviceIndex": 0, "SubnetId": network["subnets"][self.slot(batch[0])],
                     "Groups": self.security_groups_for(pool.role, network),
                     "AssociatePublicIpAddress": True}
        if batch[0].address:
            interface["PrivateIpAddress"] = batch[0].address
        params["NetworkInterfaces"] = [interface]

        def attempt() -> list[dict[str, Any]]:
            # A retry after a lost answer: the batch may exist already (EC2 honours the token;
            # a look by tag also covers endpoints that do not).
            found = self._describe_instances([{"Name": f"tag:{TAG_BATCH}", "Values": [token]}])
            if found:
                return found
            instances = self.ec2.run_instances(**params)["Instances"]
            generation = 0
            while all(STATE_MAP.get(i.get("State", {}).get("Name")) == "terminated" for i in instances):
                # EC2 replays a token's old answer even after those hosts were destroyed: the
                # batch was made and destroyed before, so this is a new generation of it.
                generation += 1
                if generation > 5:
                    raise ActionError(f"aws RunInstances: token {token} keeps answering with terminated instances")
                params["ClientToken"] = self.batch_token(pool.name, indices, config, generation)
                instances = self.ec2.run_instances(**params)["Instances"]
            return instances
        self.log(f"RunInstances: {len(batch)} x {pool.name} ({params['InstanceType']})")
        instances = self._look_first(attempt, "RunInstances")
        launched = sorted(instances, key=lambda i: i.get("AmiLaunchIndex", 0))
        # Host names inside a batch come from its indices tag and each launch index
        # (`_record`), so a batch costs one mutating call however many hosts it holds: EC2's
        # mutating-call bucket (50 burst, 5/s) would otherwise spend ~1 s per 5 hosts on names.
        records = [self._record(i) for i in launched]
        return records

    def _describe_instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        filters = self._cluster_filter() + filters + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
        reservations = self._paginate("describe_instances", "Reservations", Filters=filters,
                                      PaginationConfig={"PageSize": 1000})
        return [i for r in reservations for i in r.get("Instances", [])]

    def _record(self, instance: Mapping[str, Any]) -> HostRecord:
        tags = tags_of(instance)
        name = tags.get(TAG_HOST)
        if not name and tags.get(TAG_INDICES) and tags.get(TAG_POOL):
            indices = expand_indices(tags[TAG_INDICES])
            launch = int(instance.get("AmiLaunchIndex", 0))
            if launch < len(indices):
                name = host_name(self.spec.name, tags[TAG_POOL], indices[launch])
        public = instance.get("PublicIpAddress")
        # HostRecord.address (where provision reaches the host) is the public address when there is one.
        reach_private = ssh_over_private_addresses()
        return HostRecord(
            name=name or instance["InstanceId"], pool=tags.get(TAG_POOL, ""), role=tags.get(TAG_ROLE, ""),
            provider_id=instance["InstanceId"], state=STATE_MAP.get(instance.get("State", {}).get("Name"), "unknown"),
            private_address=instance.get("PrivateIpAddress"), public_address=None if reach_private else public,
            extra={"instance_type": instance.get("InstanceType"), "image": instance.get("ImageId"),
                   "zone": instance.get("Placement", {}).get("AvailabilityZone"), "public_ip": public})

    def list_hosts(self) -> list[HostRecord]:
        return sorted((self._record(i) for i in self._describe_instances([])), key=lambda r: r.name)

    def destroy_hosts(self, names: Sequence[str]) -> None:
        wanted = set(names)
        ids = sorted(r.provider_id for r in self.list_hosts() if r.name in wanted)
        for i in range(0, len(ids), MAX_BATCH):
            chunk = ids[i:i + MAX_BATCH]
            self.log(f"TerminateInstances: {len(chunk)} instance(s)")
            self._call("terminate_instances", InstanceIds=chunk)

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

        def delete(operation: str, **params: Any) -> None:
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


GROUP_KINDS = ("nodes", "masters", "etcd")


def wanted_permissions(kind: str, groups: Mapping[str, str], options: Any) -> list[dict[str, Any]]:
    """Ingress of each group, one source per rule.

    nodes (every host): SSH from provider.ssh_cidrs, kubelet's 10250 from masters only, flannel
    vxlan between nodes; masters: the API's 6443 from provider.api_cidrs and from the VPC (the
    load balancer and the nodes); etcd: client and peer ports from etcd members, the client port
    from masters (the API server).
    """
    def tcp(port: int, to: int | None = None, *, cidrs=(), group: str | None = None, proto: str = "tcp"):
        base = {"IpProtocol": proto, "FromPort": port, "ToPort": to or port}
        rules = [{**base, "IpRanges": [{"CidrIp": c}]} for c in cidrs]
        if group:
            rules.append({**base, "UserIdGroupPairs": [{"GroupId": groups[group]}]})
        return rules
    if kind == "nodes":
        return (tcp(22, cidrs=options.ssh_cidrs) + tcp(10250, group="masters")
                + tcp(8472, group="nodes", proto="udp"))
    if kind == "masters":
        return tcp(6443, cidrs=tuple(dict.fromkeys((*options.api_cidrs, options.vpc_cidr))))
    if kind == "etcd":
        return tcp(2379, 2380, group="etcd") + tcp(2379, group="masters")
    raise ValueError(kind)


def split_permissions(permissions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One permission per source, so rules compare one by one."""
    out = []
    for p in permissions:
        base = {"IpProtocol": p.get("IpProtocol"), "FromPort": p.get("FromPort"), "ToPort": p.get("ToPort")}
        for r in p.get("IpRanges", []) or []:
            out.append({**base, "IpRanges": [{"CidrIp": r["CidrIp"]}]})
        for g in p.get("UserIdGroupPairs", []) or []:
            out.append({**base, "UserIdGroupPairs": [{"GroupId": g["GroupId"]}]})
    return out


def rule_key(p: Mapping[str, Any]) -> tuple:
    sources = tuple(sorted([r["CidrIp"] for r in p.get("IpRanges", []) or []]
                           + [g["GroupId"] for g in p.get("UserIdGroupPairs", []) or []]))
    return (str(p.get("IpProtocol")), p.get("FromPort"), p.get("ToPort"), sources)
