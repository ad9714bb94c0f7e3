"""The AWS provider's shared network: a VPC with an internet gateway and route, a subnet per
zone slot, a security group per kind of host with exactly the rules the spec asks, one key pair,
and the AMI. Each is found by the cluster tag or created with it; a no-op reads and changes nothing.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import placement
from ..errors import ActionError
from ..spec.model import AWSOptions
from .aws_calls import FLATCAR_OWNER, TAG_ZONE_SLOT, AWSCalls


class AWSNetwork(AWSCalls):
    """VPC, subnets, security groups, key pair and image of one cluster."""

    _network: dict[str, Any] | None = None
    _image: str | None = None

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
            from .burst_reach import OVERLAY_PORTS, burst_networks
            wanted = wanted_permissions(kind, groups, self.options, burst_networks(self.spec),
                                        OVERLAY_PORTS.get(self.spec.network.flannel.backend))
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


GROUP_KINDS = ("nodes", "masters", "etcd")


def wanted_permissions(kind: str, groups: Mapping[str, str], options: AWSOptions, burst: Sequence[str] = (),
                       overlay: tuple[str, int] | None = ("udp", 8472)) -> list[dict[str, Any]]:
    """Ingress of each group, one source per rule.

    nodes (every host): SSH from provider.ssh_cidrs, kubelet's 10250 from masters only, flannel's
    `overlay` port between nodes (vxlan 8472/udp, udp 8285/udp; host-gw has none); masters: the API's 6443 from provider.api_cidrs and from the VPC (the
    load balancer and the nodes); etcd: the client port 2379 from every node (the API server, and
    every worker's flanneld, fleetd and host agent talk to etcd directly), the peer port 2380 from
    etcd members only. `burst` (headroom.burst_networks: where hosts on the other side of a burst
    come from) is admitted on the ports a burst needs: 2379, 6443, 10250 and the overlay's.
    """
    def tcp(port: int, to: int | None = None, *, cidrs=(), group: str | None = None, proto: str = "tcp"):
        base = {"IpProtocol": proto, "FromPort": port, "ToPort": to or port}
        rules = [{**base, "IpRanges": [{"CidrIp": c}]} for c in cidrs]
        if group:
            rules.append({**base, "UserIdGroupPairs": [{"GroupId": groups[group]}]})
        return rules
    if kind == "nodes":
        between = tcp(overlay[1], group="nodes", proto=overlay[0]) if overlay else []
        across = tcp(10250, cidrs=burst) + (tcp(overlay[1], cidrs=burst, proto=overlay[0]) if overlay else [])
        return tcp(22, cidrs=options.ssh_cidrs) + tcp(10250, group="masters") + between + across
    if kind == "masters":
        return tcp(6443, cidrs=tuple(dict.fromkeys((*options.api_cidrs, options.vpc_cidr, *burst))))
    if kind == "etcd":
        return tcp(2379, group="nodes") + tcp(2380, group="etcd") + tcp(2379, cidrs=burst)
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
