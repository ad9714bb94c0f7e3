"""The burst nodes' kube-proxy (`kube-proxy-burst` ConfigMap and DaemonSet) goes when the split
ends: a cluster whose burst pool is removed from the spec gets, from the first master's addon
apply (`bootstrap.sh addons`, run with curl as on the master), both objects deleted after the
index is applied, while the cluster's kube-proxy stays and covers every node again.

No API server runs here: a small HTTPS stand-in shaped like the API answers what the script
sends (server-side apply PATCH `<collection>/<name>?fieldManager=provision&force=true`, 201 on
create and 200 on update; DELETE `<collection>/<name>`, 200 with the object, 404 Status when it
does not exist), with the cluster's own CA, API server certificate and admin client certificate.
"""
from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import yaml

from provision import addons
from provision.render import render_files
from provision.state import LocalStateStore
from tests.fakes.json_http import JSONHandler, serve_tls
from tests.headroom.test_burst import burst_render, ignition_of
from tests.helpers_render import api_pems, bootstrap_api_env, ignition_file, served_artifacts, which_or_fail
from tests.test_burst_kube_proxy import OPENSTACK, PRIVATE_LB

FIRST = "bursty-masters-0"
ADDONS = "/etc/kubernetes/addons/"
BURST_OBJECTS = {"/api/v1/namespaces/kube-system/configmaps/kube-proxy-burst",
                 "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy-burst"}
KUBE_PROXY = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy"


class FakeAPI:
    """The objects the API holds (URL path -> object) and the requests it got."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict, int]] = []

    def handler(self):
        api = self

        class Handler(JSONHandler):
            def do_GET(self):
                if self.path == "/readyz":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

            def do_PATCH(self):
                url = urllib.parse.urlsplit(self.path)
                doc = yaml.safe_load(self.rfile.read(int(self.headers["Content-Length"])))
                query = urllib.parse.parse_qs(url.query)
                if (self.headers["Content-Type"] != "application/apply-patch+yaml"
                        or query.get("fieldManager") != ["provision"]
                        or url.path.rsplit("/", 1)[1] != doc["metadata"]["name"]):
                    return self.answer(400, {"kind": "Status", "code": 400, "reason": "BadRequest"})
                code = 200 if url.path in api.objects else 201
                api.objects[url.path] = doc
                api.requests.append(("PATCH", url.path, query, code))
                self.answer(code, doc)

            def do_DELETE(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                gone = api.objects.pop(url.path, None)
                code = 404 if gone is None else 200
                api.requests.append(("DELETE", url.path, query, code))
                self.answer(code, gone if gone is not None else {"kind": "Status", "code": 404, "reason": "NotFound"})
        return Handler


def first_master_addons(tmp_path: Path, rendered, name: str) -> tuple[Path, dict]:
    """The first master's addon directory and bootstrap script, as its boot config has them."""
    config = ignition_of(rendered, FIRST)
    directory = tmp_path / name
    directory.mkdir()
    for f in config["storage"]["files"]:
        if f["path"].startswith(ADDONS):
            (directory / f["path"][len(ADDONS):]).write_bytes(ignition_file(config, f["path"]))
    token = ADDONS + "bootstrap-token.yaml"
    (directory / "bootstrap-token.yaml").write_bytes(rendered.secrets_for(FIRST)[token].data)
    (directory / "bootstrap.sh").write_bytes(ignition_file(config, "/opt/provision/bootstrap.sh"))
    return directory, config


def applied_files(tmp_path: Path, spec, hosts, extra: dict) -> dict:
    """The first master's addon files as the `masters` phase compares and records them."""
    store = LocalStateStore(spec.name, tmp_path / "state")
    state = dict(store.read(), artifacts=served_artifacts("http://127.0.0.1:9"), **extra)
    return addons.addon_files(render_files(spec, state, store, hosts, [FIRST])[FIRST])


def run_addons_step(directory: Path, config: dict, pem: dict, port: int) -> str:
    env = bootstrap_api_env(config, pem, port, directory)
    run = subprocess.run(["sh", str(directory / "bootstrap.sh"), "addons"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_burst_kube_proxy_is_deleted_when_the_burst_pool_leaves_the_spec(tmp_path):
    which_or_fail("curl")
    spec, hosts, rendered = burst_render(tmp_path, OPENSTACK, PRIVATE_LB)
    store = LocalStateStore(spec.name, tmp_path / "state")
    pem = api_pems(store, tmp_path)
    api = FakeAPI()
    server = serve_tls(api.handler(), pem["apiserver.crt"], pem["apiserver.key"], client_ca=pem["ca.crt"])
    port = server.server_address[1]
    try:
        # 1. the split: both kube-proxies applied, and state records the burst one applied
        directory, config = first_master_addons(tmp_path, rendered, "with-burst")
        run_addons_step(directory, config, pem, port)
        assert BURST_OBJECTS <= set(api.objects) and KUBE_PROXY in api.objects
        state: dict = dict(PRIVATE_LB)
        addons.record_applied(state, FIRST, applied_files(tmp_path, spec, hosts, PRIVATE_LB))
        assert state["addons"]["burst_kube_proxy"] is True

        # 2. the burst pool removed from the spec: the addons differ, and their apply prunes
        spec2, hosts2, rendered2 = burst_render(tmp_path, OPENSTACK, state, pool_provider="null", burst_pool="null")
        files = applied_files(tmp_path, spec2, hosts2, state)
        assert addons.needs_apply(state, FIRST, files)
        assert files[ADDONS + "prune"].data.decode().splitlines() == [
            "/api/v1/namespaces/kube-system/configmaps kube-proxy-burst",
            "/apis/apps/v1/namespaces/kube-system/daemonsets kube-proxy-burst"]
        directory, config = first_master_addons(tmp_path, rendered2, "after-burst")
        api.requests.clear()
        run_addons_step(directory, config, pem, port)
        assert not BURST_OBJECTS & set(api.objects)  # both gone
        deletes = [r for r in api.requests if r[0] == "DELETE"]
        assert {r[1] for r in deletes} == BURST_OBJECTS and all(r[3] == 200 for r in deletes)
        assert all(r[2].get("propagationPolicy") == ["Background"] for r in deletes)  # its pods go with it
        # applied first, pruned after: the cluster's kube-proxy covers the burst nodes' place before
        assert max(i for i, r in enumerate(api.requests) if r[0] == "PATCH") < min(
            i for i, r in enumerate(api.requests) if r[0] == "DELETE")
        kube_proxy = api.objects[KUBE_PROXY]["spec"]["template"]["spec"]
        assert "affinity" not in kube_proxy  # every node again
        addons.record_applied(state, FIRST, files)

        # 3. a re-run (a failure after the deletes, say) repairs: already gone is success
        api.requests.clear()
        out = run_addons_step(directory, config, pem, port)
        assert [r[3] for r in api.requests if r[0] == "DELETE"] == [404, 404] and "pruned (404)" in out
        assert KUBE_PROXY in api.objects

        # 4. settled: the next run renders the same addons, so nothing is applied again
        assert not addons.needs_apply(state, FIRST, applied_files(tmp_path, spec2, hosts2, state))
    finally:
        server.shutdown()
        server.server_close()


def test_a_cluster_that_never_burst_has_nothing_to_prune(tmp_path):
    """No burst kube-proxy ever applied: no prune file, and the bootstrap script has no prune step
    (its bytes are those of a cluster without burst pools; the golden render tests pin them)."""
    spec, hosts, rendered = burst_render(tmp_path, OPENSTACK, dict(PRIVATE_LB, addons={"applied": "0" * 64, "host": FIRST}),
                                         pool_provider="null", burst_pool="null")
    config = ignition_of(rendered, FIRST)
    paths = {f["path"] for f in config["storage"]["files"]}
    assert ADDONS + "index" in paths and ADDONS + "prune" not in paths
    assert b"prune" not in ignition_file(config, "/opt/provision/bootstrap.sh")
    state: dict = {}
    addons.record_applied(state, FIRST, applied_files(tmp_path, spec, hosts, PRIVATE_LB))
    assert "burst_kube_proxy" not in state["addons"]
