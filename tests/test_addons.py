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


def test_the_bootstrap_scripts_addons_step_applies_every_addon_and_a_rerun_changes_nothing(tmp_path):
    """`bootstrap.sh addons` (what the addons role runs on the first master) against a small HTTPS
    stand-in for the API server, shaped like its server-side apply (GET /readyz; PATCH
    `<collection>/<name>?fieldManager=...&force=true` with `application/apply-patch+yaml`: 201
    when it creates, 200 when the object exists), with the cluster's own CA, API server
    certificate and admin client certificate. kube-proxy's DaemonSet is created on a cluster that
    has none; a changed manifest is applied over the existing object; a re-run creates nothing."""
    import json
    import subprocess
    import urllib.parse

    import yaml

    from tests.fakes.json_http import JSONHandler, serve_tls

    from tests.helpers_render import (SMALL_SPEC, api_pems, bootstrap_api_env, ignition_file, render,
                                      served_artifacts, which_or_fail, write_spec)
    which_or_fail("curl")
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    master = next(h.name for h in hosts if h.role == "master")
    config = json.loads(rendered.config_for(master))
    pem = api_pems(store, tmp_path)
    addons_dir = tmp_path / "addons"
    addons_dir.mkdir()
    index = ignition_file(config, "/etc/kubernetes/addons/index")
    (addons_dir / "index").write_bytes(index)
    entries = [line.split() for line in index.decode().splitlines() if line.strip()]
    for _, file in entries:
        path = f"/etc/kubernetes/addons/{file}"
        data = (rendered.secrets_for(master)[path].data if file == "bootstrap-token.yaml"
                else ignition_file(config, path))
        (addons_dir / file).write_bytes(data)
    script = tmp_path / "bootstrap.sh"
    script.write_bytes(ignition_file(config, "/opt/provision/bootstrap.sh"))
    objects: dict[str, dict] = {}  # URL path -> the object as applied
    requests: list[tuple[str, str, dict, int]] = []

    class API(JSONHandler):
        def do_GET(self):
            if self.path == "/readyz":
                self.send_response(200)
                self.end_headers()
                return
            self.answer(404, {"kind": "Status", "code": 404})

        def do_PATCH(self):
            url = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            query = urllib.parse.parse_qs(url.query)
            doc = yaml.safe_load(body)
            if (self.headers["Content-Type"] != "application/apply-patch+yaml"
                    or query.get("fieldManager") != ["provision"]
                    or url.path.rsplit("/", 1)[1] != doc["metadata"]["name"]):
                return self.answer(400, {"kind": "Status", "code": 400, "reason": "BadRequest"})
            code = 200 if url.path in objects else 201
            objects[url.path] = doc
            requests.append((url.path, self.headers["Content-Type"], query, code))
            self.answer(code, doc)

    server = serve_tls(API, pem["apiserver.crt"], pem["apiserver.key"], client_ca=pem["ca.crt"])
    daemonset = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy"
    try:
        env = bootstrap_api_env(config, pem, server.server_address[1], addons_dir)

        def addons_step():
            run = subprocess.run(["sh", str(script), "addons"], env=env, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stdout + run.stderr

        addons_step()
        assert [r[3] for r in requests] == [201] * len(entries)  # every object created, in index order
        assert [r[0].rsplit("/", 1)[0] for r in requests] == [path for path, _ in entries]
        assert all(r[2].get("force") == ["true"] for r in requests)
        assert objects[daemonset]["kind"] == "DaemonSet"
        # a changed manifest (a new image, say) reaches the existing object
        ds_file = addons_dir / "kube-proxy-daemonset.yaml"
        changed = yaml.safe_load(ds_file.read_bytes())
        changed["metadata"].setdefault("labels", {})["provision.io/test"] = "changed"
        ds_file.write_text(yaml.safe_dump(changed))
        requests.clear()
        addons_step()
        assert [r[3] for r in requests] == [200] * len(entries)  # nothing new: each applied over itself
        assert objects[daemonset]["metadata"]["labels"]["provision.io/test"] == "changed"
        assert len(objects) == len(entries)
    finally:
        server.shutdown()
        server.server_close()
