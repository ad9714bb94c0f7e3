"""A worker replacement on AWS, create before destroy: moto's EC2 (and S3) over HTTP behind a
recording proxy, driven by the real boto3 inside `provision`, with every instance moto reports
booted as a local host from exactly the user data moto received (tests/providers/moto_hosts.py),
so the new workers really boot, answer SSH and take their keys before the old ones go.

A change of the worker pool's `size` (its instance type) forces replacement; `up
--max-unavailable 2` replaces both workers as one batch: the batch's new instances are made by
one RunInstances per zone they take (a call takes one subnet; the provider's own batching), and
the old instances' TerminateInstances, one call naming exactly the old instances, comes only
after them.
"""
from __future__ import annotations

import pytest
import yaml

from tests.real import needs_local, require

from .ec2_proxy import EC2Proxy
from .test_aws_machines import World

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_local]


class ProxiedWorld(World):
    """The World of test_aws_machines with provision (and the hosts' S3 fetches) going through
    a recording proxy on the bridge in front of moto."""

    proxy: EC2Proxy | None = None

    def start(self, monkeypatch) -> None:
        super().start(monkeypatch)
        assert self.server is not None
        host, port = self.server.get_host_and_port()
        self.proxy = EC2Proxy(host, port, bind=self.hosts.gateway)
        self.env["AWS_ENDPOINT_URL"] = self.proxy.url
        monkeypatch.setenv("AWS_ENDPOINT_URL", self.proxy.url)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.proxy is not None:
                self.proxy.close()


@pytest.fixture
def world(tmp_path, monkeypatch):
    require("curl", "ssh")
    w = ProxiedWorld(tmp_path, "local")
    try:
        w.start(monkeypatch)
        doc = w.write_spec({"backend": "local"})
        doc.pop("headroom")  # nothing to drain through: the drain itself is tested on the local provider
        doc["pools"][1].update(count=2)
        w.spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        yield w
    finally:
        try:
            if w.server is not None:
                w.provision("down", "--yes")
        finally:
            w.stop()


def host_calls(proxy: EC2Proxy) -> list[tuple[str, dict[str, list[str]]]]:
    return [(a, q) for a, q in list(proxy.log) if a in ("RunInstances", "TerminateInstances")]


def test_a_worker_replacement_on_aws_runs_the_new_instances_before_terminating_the_old(world):
    w = world
    code, up = w.json("up", "--yes")
    assert code == 0 and up["ok"], (up, w.hosts.diagnostics())
    workers = {i["InstanceId"]: i for i in w.live_instances()
               if {"Key": "provision:pool", "Value": "workers"} in i.get("Tags", [])}
    assert len(workers) == 2

    doc = yaml.safe_load(w.spec.read_text())
    doc["pools"][1]["size"] = "t3.large"
    w.spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, plan = w.json("plan")
    assert code == 0
    replaced = sorted(n for n, c in plan["changes"].items() if c["action"] == "replace")
    assert len(replaced) == 2 and all(plan["changes"][n]["replacement"] == "create before destroy" for n in replaced)
    assert all(c["action"] == "keep" for n, c in plan["changes"].items() if n not in replaced)

    assert w.proxy is not None
    w.proxy.log.clear()
    code, rolled = w.json("up", "--yes", "--max-unavailable", "2")
    assert code == 0 and rolled["ok"], (rolled, w.hosts.diagnostics())
    surged = rolled["results"]["rollout"]["surged"]
    assert sorted(surged) == replaced and not set(surged.values()) & set(replaced)

    calls = host_calls(w.proxy)
    actions = [a for a, _ in calls]
    # one batch: the new workers' RunInstances (one call per zone slot they take: a call takes
    # one subnet), all before one TerminateInstances of exactly the old two
    assert actions[-1] == "TerminateInstances" and set(actions[:-1]) == {"RunInstances"}, actions
    runs = [q for a, q in calls if a == "RunInstances"]
    assert sum(int(q["MinCount"][0]) for q in runs) == 2 and all(q["MinCount"] == q["MaxCount"] for q in runs)
    assert all(q["InstanceType"] == ["t3.large"] for q in runs)
    terminated = sorted(v[0] for k, v in calls[-1][1].items() if k.startswith("InstanceId."))
    assert terminated == sorted(workers)

    w.hosts.settle()
    live = w.live_instances()
    new_workers = [i for i in live if {"Key": "provision:pool", "Value": "workers"} in i.get("Tags", [])]
    assert len(new_workers) == 2 and not {i["InstanceId"] for i in new_workers} & set(workers)
    assert all(i["InstanceType"] == "t3.large" for i in new_workers)
    assert len(runs) == len({i["Placement"]["AvailabilityZone"] for i in new_workers})  # one call per zone
    assert w.hosts.errors == []
    code, status = w.json("status")
    assert code == 0 and status["healthy"], status
    assert sorted(n for n, h in status["hosts"].items() if h["pool"] == "workers") == sorted(surged.values())
    assert status["orphans"] == [] and status["missing"] == []
    code, again = w.json("plan")
    assert code == 0 and {c["action"] for c in again["changes"].values()} == {"keep"}
