"""P3 (issue 11): create 500 workers on EC2 (moto's server over HTTP, real boto3).

Measured: the mutating calls the aws provider makes (per pool and batch), and the time real
EC2 would allow them, from a token-bucket model of its API throttling:

- RunInstances draws one token per instance from a bucket of 1,000 that refills at 2 a second;
- every other mutating call draws one token from a bucket of 50 that refills at 5 a second;
- read calls (Describe*) are not throttled in the model.

Each call starts when its caller is free and its bucket holds the tokens, and lasts a nominal
$BENCH_P3_LATENCY seconds (0.3; moto's own latency on a loaded machine, tens of seconds for one
RunInstances of 500, says nothing about EC2 and is reported apart as wall-clock). Beside it, in
the same run, the baseline: one mutating call per host (the per-host CreateTags that named each
host before), 10 in parallel, after one RunInstances for the pool, made on moto and modelled
the same way; and, modelled, one RunInstances per host, 10 in parallel. Ratio: baseline model
time / provider model time (goal >= 3).
"""
from __future__ import annotations

import concurrent.futures
import os
import time

from bench.moto_endpoint import moto_endpoint

WORKERS = int(os.environ.get("BENCH_P3_WORKERS", "500"))
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]  # the pool spreads over a subnet per zone
AMI = "ami-12c6146b"
PARALLEL = 10
LATENCY = float(os.environ.get("BENCH_P3_LATENCY", "0.3"))
BUCKETS = {"RunInstances": (1000.0, 2.0), "other": (50.0, 5.0)}  # (burst, refill per second)


def mutating(operation: str) -> bool:
    return not operation.startswith(("Describe", "List", "Get"))


class Bucket:
    def __init__(self, burst: float, rate: float):
        self.burst, self.rate, self.tokens, self.at = burst, rate, burst, 0.0

    def take(self, when: float, n: float) -> float:
        """The time (>= when) at which `n` tokens are there; takes them."""
        self.tokens = min(self.burst, self.tokens + (when - self.at) * self.rate)
        self.at = when
        if n > self.tokens:
            when += (n - self.tokens) / self.rate
            self.tokens, self.at = n, when
        self.tokens -= n
        return when


def model_seconds(calls: list[tuple[str, int]], lanes: int, latency: float = LATENCY) -> float:
    """Seconds for `calls` ((operation, tokens) in issue order) on `lanes` parallel callers."""
    buckets = {name: Bucket(*spec) for name, spec in BUCKETS.items()}
    free = [0.0] * lanes
    end = 0.0
    for operation, tokens in calls:
        lane = min(range(lanes), key=free.__getitem__)
        start = free[lane]
        if mutating(operation):
            bucket = buckets["RunInstances" if operation == "RunInstances" else "other"]
            start = bucket.take(start, tokens)
        free[lane] = start + latency
        end = max(end, free[lane])
    return end


def run() -> dict:
    import boto3

    from provision.plan import plan
    from provision.providers.aws import AWSProvider
    from provision.spec import parse_spec

    with moto_endpoint():
        spec = parse_spec({"name": "p3", "provider": {"name": "aws", "region": "us-east-1", "ami": AMI,
                                                              "zones": ZONES},
                           "ssh": {"authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA b@x"]},
                           "etcd": {"count": 1},
                           "pools": [{"name": "masters", "role": "master", "count": 1},
                                     {"name": "workers", "role": "worker", "count": WORKERS}]})
        provider = AWSProvider(spec)
        provider.prepare()  # shared resources (network, key) are not what is measured
        workers = [h for h in plan(spec, {}).create if h.role == "worker"]
        config = b'{"ignition":{"version":"3.3.0"}}'
        # every client the provider calls EC2 through (creating calls go through a single-attempt one)
        clients = (provider.ec2, provider._single_attempt_client("ec2"))
        provider_calls = record_calls(clients, lambda: provider.create_hosts(workers, {h.name: config for h in workers}))
        batches = len(provider.batches(workers, {h.name: config for h in workers}))
        # P4 on moto: what a no-op `up` asks the cloud about its hosts (one listing of them all)
        listing_calls = record_calls(clients, provider.list_hosts)

        # Baseline: the pool in one RunInstances, then one CreateTags per host (its Name), 10 at once.
        client = boto3.client("ec2", region_name="us-east-1")
        network = provider.network()

        def baseline():
            made = client.run_instances(ImageId=AMI, InstanceType="t3.medium", MinCount=WORKERS, MaxCount=WORKERS,
                                        UserData=config, SubnetId=network["subnet"])["Instances"]
            with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(lambda pair: client.create_tags(Resources=[pair[1]["InstanceId"]], Tags=[
                    {"Key": "Name", "Value": pair[0].name}]), zip(workers, made)))
        baseline_calls = record_calls(client, baseline)

    provider_mutating = [c for c in provider_calls if mutating(c[0])]
    baseline_mutating = [c for c in baseline_calls if mutating(c[0])]
    provider_model = model_seconds([(o, t) for o, t, _ in provider_calls], 1)
    baseline_model = model_seconds([(o, t) for o, t, _ in baseline_calls], PARALLEL)
    per_host_run_model = model_seconds([("RunInstances", 1)] * WORKERS, PARALLEL)
    return {
        "name": f"P3: create {WORKERS} EC2 workers in 1 pool over {len(ZONES)} zones (moto over HTTP; "
                "EC2 time from a token-bucket model)",
        "figures": {
            "provider_mutating_calls": len(provider_mutating),
            "provider_batches": batches,
            "provider_run_instances_calls": sum(1 for c in provider_calls if c[0] == "RunInstances"),
            "provider_zones_used": len({provider.slot(h) for h in workers}),
            "provider_mutating_calls_per_pool_and_batch": round(len(provider_mutating) / max(1, batches), 2),
            "provider_read_calls": len(provider_calls) - len(provider_mutating),
            f"P4 no-op listing of {WORKERS + 1} hosts: calls (goal 1 page per 1,000; 0 mutating)":
                f"{len(listing_calls)} ({', '.join(sorted({c[0] for c in listing_calls}))}); "
                f"{sum(1 for c in listing_calls if mutating(c[0]))} mutating",
            "provider_ec2_model_seconds": round(provider_model, 2),
            "baseline_mutating_calls (1 per host, 10 parallel)": len(baseline_mutating),
            "baseline_ec2_model_seconds": round(baseline_model, 2),
            "baseline_run_instances_per_host_ec2_model_seconds": round(per_host_run_model, 2),
            "provider_moto_wall_seconds": round(sum(c[2] for c in provider_calls), 2),
            "baseline_moto_wall_seconds (calls summed)": round(sum(c[2] for c in baseline_calls), 2),
        },
        "ratios": {
            "ec2_model_speedup vs tag per host (goal >= 3)": round(baseline_model / max(provider_model, 1e-9), 1),
            "ec2_model_speedup vs RunInstances per host": round(per_host_run_model / max(provider_model, 1e-9), 1),
            "mutating_calls_saved": round(len(baseline_mutating) / max(1, len(provider_mutating)), 1),
        },
    }


def record_calls(client, action) -> list[tuple[str, int, float]]:
    """Run `action`; the EC2 calls `client` (one, or a tuple of clients) made: (operation, bucket
    tokens, seconds)."""
    import threading
    calls: list[tuple[str, int, float]] = []
    local = threading.local()

    def before(event_name, params, **_):
        operation = event_name.split(".")[-1]
        tokens = int(params.get("MaxCount", 1)) if operation == "RunInstances" else 1
        local.started = (operation, tokens, time.perf_counter())

    def after(event_name, **_):
        operation, tokens, start = local.started
        calls.append((operation, tokens, time.perf_counter() - start))

    clients = client if isinstance(client, tuple) else (client,)
    for one in clients:
        one.meta.events.register("before-call.ec2.*", before)
        one.meta.events.register("after-call.ec2.*", after)
    try:
        action()
    finally:
        for one in clients:
            one.meta.events.unregister("before-call.ec2.*", before)
            one.meta.events.unregister("after-call.ec2.*", after)
    return calls


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
