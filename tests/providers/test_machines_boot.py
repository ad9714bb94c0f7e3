"""The machines phase records what each new host boots with (against moto's EC2 server, real
boto3), and `plan`'s per-host changes read that record."""
from __future__ import annotations

import hashlib

from provision.changes import BOOT, KEEP, REPLACE, UPDATE, host_changes
from provision.phases.machines import run
from provision.plan import plan

from .conftest import MOTO_AMI, make_spec
from .test_machines import context, rendered_store


def spec_with(name: str, **options):
    return make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI, **options}, workers=2, name=name)


def test_new_hosts_record_boot_fields_and_config_digest(ec2_proxy, tmp_path):
    spec = spec_with("bootrec")
    store = rendered_store(spec, tmp_path)
    run(context(spec, store))
    state = store.read()
    for name in ("bootrec-masters-0", "bootrec-workers-0", "bootrec-workers-1"):
        boot = state["hosts"][name][BOOT]
        config = "workers.ign" if "workers" in name else f"{name}.ign"
        assert boot["config_sha256"] == hashlib.sha256(store.read_blob(f"rendered/{config}")).hexdigest()
        assert boot["fields"]["provider.instance_type"] == "t3.medium"
        assert boot["fields"]["kubernetes.version"] == spec.kubernetes.version
    assert state["hosts"]["bootrec-masters-0"][BOOT]["fields"]["host.etcd"] is True

    same = host_changes(spec, state, plan(spec, state))
    assert {c.action for c in same.values()} == {KEEP}
    bigger = spec_with("bootrec", instance_type="m5.large")
    changed = host_changes(bigger, state, plan(bigger, state))
    assert {c.action for c in changed.values()} == {REPLACE}
    assert [f.field for f in changed["bootrec-workers-1"].fields] == ["provider.instance_type"]

    # A re-run that creates nothing leaves the records as they were.
    run(context(spec, store))
    assert store.read()["hosts"]["bootrec-workers-0"][BOOT] == state["hosts"]["bootrec-workers-0"][BOOT]

    # A new worker records the fields it booted with; the old ones are unchanged by it.
    labelled = make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}, workers=3, name="bootrec",
                         kubernetes={"api_server_names": ["api.example.org"]})
    run(context(labelled, store))
    state = store.read()
    assert state["hosts"]["bootrec-workers-2"][BOOT]["fields"]["kubernetes.api_server_names"] == ["api.example.org"]
    result = host_changes(labelled, state, plan(labelled, state))
    assert result["bootrec-workers-2"].action == KEEP
    assert result["bootrec-workers-0"].action == UPDATE and result["bootrec-masters-0"].action == UPDATE
