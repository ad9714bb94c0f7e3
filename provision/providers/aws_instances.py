"""The AWS provider's hosts: batches made by one RunInstances each (tags in the call, a
deterministic ClientToken, looked for before any retry), listed by one paginated
DescribeInstances, named from their batch's indices tag and launch index.

A pool spread over zones costs one RunInstances per zone (a call takes one subnet). One EC2
Fleet (CreateFleet, instant) per pool would not keep placement: its On-Demand allocation strategy
(lowest-price or prioritized) only orders the per-zone overrides, so EC2 may put every host in
one zone, and a host's zone slot (its subnet and name) could no longer be chosen by index.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from .. import placement
from ..errors import ActionError
from ..plan import HostPlan, host_name
from .aws_calls import (LIVE_STATES, MAX_BATCH, STATE_MAP, TAG_BATCH, TAG_INDICES, compress_indices,
                        expand_indices, ssh_over_private_addresses, tag_list, tags_of)
from .aws_network import AWSNetwork
from .base import TAG_CLUSTER, TAG_HOST, TAG_POOL, TAG_ROLE, HostRecord, host_tags


class AWSInstances(AWSNetwork):
    """Creating, listing and destroying a cluster's EC2 instances."""

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
