"""Creating a worker pool on EC2 (moto's server over HTTP, real boto3): the aws provider's
batched RunInstances (one call per pool and subnet, MinCount = MaxCount = N, tags in the call;
host names come from the batch's indices tag and each launch index, no call per host) against a
baseline of one tagged RunInstances per host, run side by side.

Figures are wall-clock seconds and API calls for N workers; ratios are baseline / provider.
moto does not throttle, so real EC2 widens the gap: its RunInstances bucket refills at 2/s
while other mutating calls refill at 5/s.
"""
from __future__ import annotations

import collections
import os
import time

from bench.moto_endpoint import moto_endpoint

WORKERS = int(os.environ.get("BENCH_PROVIDER_WORKERS", "300"))
AMI = "ami-12c6146b"


def _spec(name: str, workers: int):
    from provision.spec import parse_spec
    return parse_spec({"name": name, "provider": {"name": "aws", "region": "us-east-1", "ami": AMI},
                       "ssh": {"authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA b@x"]},
                       "etcd": {"count": 1},
                       "pools": [{"name": "masters", "role": "master", "count": 1},
                                 {"name": "workers", "role": "worker", "count": workers}]})


def run() -> dict:
    import boto3

    from provision.plan import plan
    from provision.providers.aws import AWSProvider

    calls: collections.Counter[str] = collections.Counter()

    def count(event_name, **_):
        calls[event_name.split(".")[-1]] += 1
    with moto_endpoint():
        spec = _spec("bench", WORKERS)
        provider = AWSProvider(spec)
        provider.ec2.meta.events.register("before-call.ec2.*", count)
        provider._single_attempt_client("ec2").meta.events.register("before-call.ec2.*", count)  # creating calls
        provider.prepare()  # shared resources are not what is measured
        workers = [h for h in plan(spec, {}).create if h.role == "worker"]
        config = b'{"ignition":{"version":"3.3.0"}}'
        calls.clear()
        start = time.perf_counter()
        provider.create_hosts(workers, {h.name: config for h in workers})
        batched_seconds = time.perf_counter() - start
        batched_calls = dict(calls)

        # Baseline: one RunInstances per host, tags in the call (what a per-host loop does).
        client = boto3.client("ec2", region_name="us-east-1")
        client.meta.events.register("before-call.ec2.*", count)
        network = provider.network()
        calls.clear()
        start = time.perf_counter()
        for h in workers:
            client.run_instances(ImageId=AMI, InstanceType="t3.medium", MinCount=1, MaxCount=1, UserData=config,
                                 SubnetId=network["subnet"], TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                     {"Key": "provision:cluster", "Value": "baseline"},
                                     {"Key": "provision:host", "Value": h.name}]}])
        baseline_seconds = time.perf_counter() - start
        baseline_calls = dict(calls)
    return {
        "name": f"providers: create {WORKERS} EC2 workers (moto over HTTP)",
        "figures": {
            "provider_seconds": round(batched_seconds, 2),
            "provider_run_instances_calls": batched_calls.get("RunInstances", 0),
            "provider_total_calls": sum(batched_calls.values()),
            "baseline_seconds": round(baseline_seconds, 2),
            "baseline_run_instances_calls": baseline_calls.get("RunInstances", 0),
        },
        "ratios": {
            "speedup_wall_clock": round(baseline_seconds / batched_seconds, 2),
            "run_instances_calls_saved": round(baseline_calls.get("RunInstances", 0)
                                               / max(1, batched_calls.get("RunInstances", 0)), 1),
        },
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
