"""Addons on a running cluster (provision.addons, phases `masters` and `workers`): the first
master applies the rendered addons again when they differ from what state records as applied,
before any node role is told to remove kube-proxy's retired static pod and key; a failed apply
records nothing and removes nothing. The roles themselves run over real SSH in
tests/local/test_secrets_role.py; here the phases' decisions and their order are checked
through the role runs they ask for."""
from __future__ import annotations

import pytest

from provision import addons, bootstrap
from provision.bootstrap import RoleOutcome
from provision.errors import ActionError
from provision.phases import masters, workers
from tests.test_convergence import rendered_context


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    ctx, hosts = rendered_context(tmp_path)
    ctx.state["hosts"] = hosts
    calls: list[dict] = []
    failing: set[str] = set()

    def run_roles(spec, workdir, hosts, roles, key_path, dry_run=False, timeout=10, cluster=None, data=None,
                  host_only=None):
        calls.append({"roles": tuple(roles), "hosts": sorted(hosts), "data": dict(data or {}),
                      "host_only": dict(host_only or {})})
        return {name: RoleOutcome(host=name, error="an operation failed" if set(roles) & failing else None)
                for name in hosts}

    monkeypatch.setattr(bootstrap, "run_roles", run_roles)
    return ctx, calls, failing


def test_an_upgraded_cluster_gets_its_addons_applied_before_the_retired_files_go(cluster):
    ctx, calls, _ = cluster
    assert addons.applied(ctx.state) is None  # made by a version that recorded no addons
    result = masters.run(ctx)
    first = "small-masters-0"
    assert [c["roles"] for c in calls] == [("addons",), ("masters",)]
    apply, node = calls
    assert apply["hosts"] == [first]
    sent = {path: data for path, _, data in apply["host_only"][first]["addon_files"]}
    index = sent["/etc/kubernetes/addons/index"].decode()
    assert "kube-proxy-daemonset.yaml" in index and "/etc/kubernetes/addons/kube-proxy-daemonset.yaml" in sent
    assert "/opt/provision/bootstrap.sh" in sent
    assert not any("bootstrap-token" in path for path in sent)  # a secret: never in role data from the config
    assert result["addons"] == {"host": first, "applied": True, "written": []}
    assert addons.applied(ctx.state) is not None
    assert node["data"] == {"remove_retired": True}  # after the apply, in the same run
    workers.run(ctx)
    assert calls[-1]["roles"] == ("workers",) and calls[-1]["data"] == {"remove_retired": True}

    calls.clear()
    masters.run(ctx)  # nothing changed: no apply, and the masters are converged
    assert [c["roles"] for c in calls] == []


def test_a_failed_apply_records_nothing_and_no_node_removes_anything(cluster):
    ctx, calls, failing = cluster
    failing.add("addons")
    with pytest.raises(ActionError, match="masters: small-masters-0"):
        masters.run(ctx)
    assert [c["roles"] for c in calls] == [("addons",)]
    assert addons.applied(ctx.state) is None
    workers.run(ctx)
    assert calls[-1]["roles"] == ("workers",) and calls[-1]["data"] == {"remove_retired": False}
    failing.clear()
    masters.run(ctx)  # the next run applies them, then removes
    assert [c["roles"] for c in calls[-2:]] == [("addons",), ("masters",)]
    assert calls[-1]["data"] == {"remove_retired": True}


def test_changed_addon_manifests_are_applied_again(cluster):
    ctx, calls, _ = cluster
    masters.run(ctx)
    recorded = addons.applied(ctx.state)
    ctx.state["addons"]["applied"] = "0" * 64  # what an older render applied
    calls.clear()
    masters.run(ctx)
    assert [c["roles"] for c in calls] == [("addons",)]  # masters converged already: only the apply
    assert addons.applied(ctx.state) == recorded


def test_a_dry_run_says_it_would_apply_and_records_nothing(cluster):
    ctx, calls, _ = cluster
    ctx.dry_run = True
    result = masters.run(ctx)
    assert result["addons"] == {"host": "small-masters-0", "applied": False, "dry_run": True}
    assert ("addons",) not in [c["roles"] for c in calls]
    assert addons.applied(ctx.state) is None


def test_a_masters_files_as_the_roles_compare_them_are_its_boot_configs(cluster):
    """What the masters phase hands its roles (render_files) is byte for byte what the master's
    boot config writes, the control-plane manifests with their mounted-files digest included."""
    import json
    from provision.render import INDEX, render_files
    from tests.helpers_render import ignition_file
    from provision.phases import run_phases, select
    ctx, _, _ = cluster
    run_phases(ctx, select(only="render"))  # rendered with the hosts' addresses, as `up` does
    first = "small-masters-0"
    files = render_files(ctx.spec, ctx.state, ctx.store, ctx.plan().desired, [first])[first]
    index = json.loads(ctx.store.read_blob("rendered/" + INDEX))
    config = json.loads(ctx.store.read_blob("rendered/" + index["hosts"][first]["config"]))
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
    assert b"provision.io/mounted-digest" in files[manifest].data
    assert files[manifest].data == ignition_file(config, manifest)
    assert files["/etc/kubernetes/addons/index"].data == ignition_file(config, "/etc/kubernetes/addons/index")
