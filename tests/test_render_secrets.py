"""No private key or token in anything a host fetches at boot (issue 10): every example's every
rendered config is searched for key material; the keys and the bootstrap token are each host's
secret files instead, delivered over SSH by the `secrets` phase (0600, in 0700 directories), and
the units that read them wait for them."""
from __future__ import annotations

import base64
import gzip
import json
import re

import pytest
import yaml

from provision import pki
from provision.errors import ActionError
from provision.phases.secrets import PRIVATE_DIRS, bundle_digest, role_data
from provision.plan import plan
from provision.render import render_secrets
from provision.render.machine import build_machine
from tests.conftest import EXAMPLES
from tests.helpers_render import SMALL_SPEC, render, served_artifacts, write_spec

PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def key_material(store) -> dict[str, bytes]:
    """Every private key and the bootstrap token's secret, as state holds them: what must not
    appear in a boot config (the public halves and certificates may)."""
    out = {name: store.read_blob(name) for name in store.list_blobs("pki/") if name.endswith(".key")}
    token_id, token_secret = pki.bootstrap_token(store)
    out["bootstrap token secret"] = token_secret.encode()
    return out


def decoded_views(data: bytes) -> list[bytes]:
    """A config as stored and every file in it decoded (data URLs, gzip, the whole-config data
    URL of a compressed config): key material hides in none of them."""
    views = [data]
    for match in re.finditer(rb"data:[^,\"]*;base64,([A-Za-z0-9+/=]+)", data):
        raw = base64.b64decode(match.group(1))
        views.append(raw)
        if raw[:2] == b"\x1f\x8b":
            views.extend(decoded_views(gzip.decompress(raw)))
    return views


@pytest.fixture(scope="module")
def every_example(tmp_path_factory):
    base = tmp_path_factory.mktemp("secrets-examples")
    out = {}
    for example in sorted(EXAMPLES.glob("*.yaml")):
        spec, store, hosts, rendered = render(example, base / example.stem / "state",
                                              served_artifacts("http://10.250.0.1:8080"))
        out[example.stem] = (spec, store, hosts, rendered)
    return out


def test_no_rendered_config_of_any_example_holds_a_key_or_the_token(every_example):
    assert len(every_example) >= 6
    configs = 0
    for example, (spec, store, hosts, rendered) in every_example.items():
        secrets = key_material(store)
        assert len(secrets) >= 10, example
        for name, data in list(rendered.files.items()) + [("index.json", rendered.index_bytes())]:
            for view in decoded_views(data):
                assert not PEM_KEY.search(view), (example, name)
                assert b"PRIVATE KEY" not in view, (example, name)
                for what, secret in secrets.items():
                    body = b"".join(secret.strip().splitlines()[1:-1]) if what.startswith("pki/") else secret
                    assert body not in view.replace(b"\n", b"").replace(b"\\n", b""), (example, name, what)
            configs += 1
    assert configs >= 20


def test_every_host_gets_its_keys_as_secret_files_0600(every_example):
    spec, store, hosts, rendered = every_example["openstack"]  # 2 masters, 3 dedicated etcd hosts, 4 workers
    by_name = {h.name: h for h in hosts}
    fleet = {"/etc/ssl/etcd/fleet.key"} if spec.fleet.enabled else set()  # every host runs fleetd then
    delivered = render_secrets(spec, {}, store, hosts, sorted(by_name))
    for name, files in delivered.items():
        assert files, name
        # the phase delivers what the render kept out, and the host agent's own etcd identity, which
        # no config carries (a worker's is per pool): certificate and key made for this host alone
        agent = {"/etc/ssl/etcd/agent.crt", "/etc/ssl/etcd/agent.key"}
        assert {p: f for p, f in files.items() if p not in agent} == rendered.secrets_for(name)
        for suffix in ("crt", "key"):
            assert files[f"/etc/ssl/etcd/agent.{suffix}"].data == store.read_blob(f"pki/etcd-agent-{name}.{suffix}")
        config = json.loads(rendered.config_for(name))
        in_config = {f["path"] for f in config["storage"]["files"]}
        assert not agent & in_config, name
        # the certificates go along (in the config too), so a renewed key never meets an old certificate
        certificates = {p for p, f in files.items()
                        if f.data.startswith((b"-----BEGIN CERTIFICATE-----", b"-----BEGIN PUBLIC KEY-----"))}
        assert certificates and certificates - agent <= in_config, name
        assert all(files[p].mode == 0o644 for p in certificates), name
        secret = {p: f for p, f in files.items() if p not in certificates}
        assert not set(secret) & in_config, name
        assert all(f.mode == 0o600 and f.data for f in secret.values()), name
        role = by_name[name].role
        paths = set(secret)
        assert "/etc/ssl/etcd/agent.key" in paths
        if role == "etcd":
            assert paths == {"/etc/ssl/etcd/agent.key", "/etc/ssl/etcd/server.key", "/etc/ssl/etcd/peer.key"} | fleet
            assert files["/etc/ssl/etcd/server.key"].data == store.read_blob(f"pki/etcd-server-{name}.key")
        elif role == "master":
            assert {"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/admin.key",
                    "/etc/kubernetes/pki/apiserver-etcd-client.key", "/etc/kubernetes/pki/kubelet-client.key",
                    "/etc/ssl/etcd/flannel.key"} <= paths
            assert files["/etc/kubernetes/pki/kubelet-client.key"].data == store.read_blob(f"pki/kubelet-{name}.key")
        else:
            # a worker: its etcd client keys and the bootstrap token; nothing of the control plane, and
            # no kube-proxy key (kube-proxy is a DaemonSet with its ServiceAccount's token)
            assert paths == {"/etc/ssl/etcd/agent.key", "/etc/ssl/etcd/flannel.key",
                             "/etc/kubernetes/bootstrap-kubeconfig"} | fleet
            token_id, token_secret = pki.bootstrap_token(store)
            kubeconfig = yaml.safe_load(files["/etc/kubernetes/bootstrap-kubeconfig"].data)
            assert kubeconfig["users"][0]["user"]["token"] == f"{token_id}.{token_secret}"
        for path, f in files.items():
            if path.endswith(".key"):
                assert PEM_KEY.search(f.data), path
    # the first master alone holds the bootstrap token Secret it creates in the API
    first = sorted(n for n, h in by_name.items() if h.role == "master")[0]
    assert "/etc/kubernetes/addons/bootstrap-token.yaml" in delivered[first]
    assert not any("/etc/kubernetes/addons/bootstrap-token.yaml" in f for n, f in delivered.items() if n != first)


def test_role_data_keeps_the_directories_private_and_the_digest_follows_every_byte(every_example):
    spec, store, hosts, rendered = every_example["local"]
    master = next(h.name for h in hosts if h.role == "master")
    files = render_secrets(spec, {}, store, hosts, [master])[master]
    data = role_data(files)
    assert [p for p, _, _ in data["secret_files"]] == sorted(files)
    assert "/etc/ssl/etcd/server.crt" in files and "/etc/kubernetes/pki/ca.crt" in files
    assert set(data["secret_dirs"]) == {"/etc/ssl/etcd", "/etc/kubernetes/pki", "/etc/kubernetes/addons"}
    assert set(data["secret_dirs"]) <= set(PRIVATE_DIRS)
    digest = bundle_digest(files)
    assert digest == bundle_digest(dict(reversed(list(files.items()))))  # order does not matter
    changed = dict(files)
    path = "/etc/ssl/etcd/agent.key"
    changed[path] = type(files[path])(path=path, mode=0o600, data=files[path].data + b"\n")
    assert bundle_digest(changed) != digest
    moded = dict(files)
    moded[path] = type(files[path])(path=path, mode=0o644, data=files[path].data)
    assert bundle_digest(moded) != digest


def test_a_renewed_key_changes_only_its_holders_digest(tmp_path):
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    names = [h.name for h in hosts]
    before = {n: bundle_digest(f) for n, f in render_secrets(spec, {}, store, hosts, names).items()}
    etcd_host = next(h.name for h in hosts if h.etcd)
    store.delete_blob(f"pki/etcd-server-{etcd_host}.key")
    store.delete_blob(f"pki/etcd-server-{etcd_host}.crt")
    pki.ensure_pki(spec, store, hosts)
    after = {n: bundle_digest(f) for n, f in render_secrets(spec, {}, store, hosts, names).items()}
    assert {n for n in names if before[n] != after[n]} == {etcd_host}


def test_services_that_read_a_delivered_key_wait_for_it(every_example):
    spec, store, hosts, rendered = every_example["local"]
    master = json.loads(rendered.config_for(next(h.name for h in hosts if h.role == "master")))
    units = {u["name"]: u["contents"] for u in master["systemd"]["units"]}
    assert "ExecStartPre=/usr/bin/test -s /etc/kubernetes/pki/kubelet-client.key\n" in units["kubelet.service"]
    assert re.search(r"^Restart=(always|on-failure)$", units["kubelet.service"], re.M)
    # etcd and the etcd clients wait inside their start instead (test below); they still
    # restart when they fail.
    for unit in ("etcd-member.service", "provision-host-agent.service", "flanneld.service", "fleet.service"):
        assert "ExecStartPre=/usr/bin/timeout 600 /bin/sh -c " in units[unit], unit
        assert re.search(r"^TimeoutStartSec=0$", units[unit], re.M), unit
        assert re.search(r"^Restart=always$", units[unit], re.M), unit
    # The run-once bootstrap waits inside its script instead (test below); it still retries.
    assert "ExecStartPre" not in units["provision-bootstrap.service"]
    assert re.search(r"^Restart=on-failure$", units["provision-bootstrap.service"], re.M)
    directories = {d["path"]: d["mode"] for d in master["storage"]["directories"]}
    assert directories["/etc/ssl/etcd"] == directories["/etc/kubernetes/pki"] == 0o700


def test_a_template_file_with_a_key_not_marked_secret_is_refused():
    key = b"-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"
    items = [{"file": "/etc/x.key", "mode": 0o600, "blob": "pki/x.key"}]
    with pytest.raises(ActionError, match="/etc/x.key holds a private key but is not marked secret"):
        build_machine(items, lambda name: "", lambda name: key)
    machine = build_machine([dict(items[0], secret=True)], lambda name: "", lambda name: key)
    assert machine.files == {} and machine.secrets["/etc/x.key"].data == key


# ---- the bootstrap token: an expiry, renewed before it runs out ------------------------------

def test_the_token_expires_in_a_day_and_the_pki_phase_renews_it_when_little_is_left(tmp_path):
    import datetime as dt
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    first = pki.bootstrap_token(store)
    expires = pki.bootstrap_token_expiry(store)
    left = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=23) < left <= dt.timedelta(hours=24)
    master = next(h.name for h in hosts if h.role == "master")
    secret = yaml.safe_load(rendered.secrets_for(master)["/etc/kubernetes/addons/bootstrap-token.yaml"].data)
    assert secret["stringData"]["expiration"] == pki.format_expiry(expires)
    assert secret["stringData"]["token-id"] == first[0]
    names = [h.name for h in hosts]
    digests = {n: bundle_digest(f) for n, f in render_secrets(spec, {}, store, hosts, names).items()}

    assert "bootstrap-token" in pki.ensure_pki(spec, store, hosts)["reused"]  # a day left: kept
    assert pki.bootstrap_token(store) == first

    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=90)
    store.write_blob(pki.BOOTSTRAP_TOKEN_EXPIRES, pki.format_expiry(soon).encode())
    assert "bootstrap-token" in pki.ensure_pki(spec, store, hosts)["created"]  # under 2 h left: a new one
    second = pki.bootstrap_token(store)
    assert second[0] != first[0] and second[1] != first[1]
    assert pki.bootstrap_token_expiry(store) - dt.datetime.now(dt.timezone.utc) > dt.timedelta(hours=23)
    # the first master (the Secret) and every worker (its bootstrap kubeconfig) get it again
    after = {n: bundle_digest(f) for n, f in render_secrets(spec, {}, store, hosts, names).items()}
    assert {n for n in names if after[n] != digests[n]} == {master} | {h.name for h in hosts if h.role == "worker"}

    store.delete_blob(pki.BOOTSTRAP_TOKEN_EXPIRES)  # a token made before tokens expired
    assert "bootstrap-token" in pki.ensure_pki(spec, store, hosts)["created"]
    assert pki.bootstrap_token_expiry(store) is not None


def test_the_bootstrap_scripts_token_step_creates_the_token_secret_and_deletes_the_old_one(tmp_path):
    """`bootstrap.sh token` (what provision runs on the first master after renewing the token)
    against a small HTTPS stand-in for the API server, shaped like its API (GET /readyz; POST,
    list with a label selector and DELETE of Secrets in kube-system; 201/409/404 as the API
    answers), with the cluster's own CA, API server certificate and admin client certificate.
    The new Secret is created, the token it replaces is deleted, a token someone else made stays."""
    import subprocess
    import urllib.parse

    from tests.fakes.json_http import JSONHandler, serve_tls
    from tests.helpers_render import api_pems, bootstrap_api_env, ignition_file, which_or_fail
    which_or_fail("curl")
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    master = next(h.name for h in hosts if h.role == "master")
    config = json.loads(rendered.config_for(master))
    root = tmp_path / "root"
    pem = api_pems(store, tmp_path)
    addons = root / "addons"
    addons.mkdir(parents=True)
    (addons / "index").write_bytes(ignition_file(config, "/etc/kubernetes/addons/index"))
    (addons / "bootstrap-token.yaml").write_bytes(
        rendered.secrets_for(master)["/etc/kubernetes/addons/bootstrap-token.yaml"].data)
    script = root / "bootstrap.sh"
    script.write_bytes(ignition_file(config, "/opt/provision/bootstrap.sh"))
    posted, deleted, listed = [], [], []
    collection = "/api/v1/namespaces/kube-system/secrets"
    label = "provision.io/bootstrap-token"
    # what the API holds before the renewal: the token provision made before, one a user made
    secrets = {"bootstrap-token-old000": {"metadata": {"name": "bootstrap-token-old000", "namespace": "kube-system",
                                                       "labels": {label: spec.name}},
                                          "type": "bootstrap.kubernetes.io/token"},
               "bootstrap-token-user00": {"metadata": {"name": "bootstrap-token-user00", "namespace": "kube-system"},
                                          "type": "bootstrap.kubernetes.io/token"}}

    class API(JSONHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/readyz":
                self.send_response(200)
                self.end_headers()
                return
            if url.path != collection:
                return self.answer(404, {"kind": "Status", "code": 404})
            query = urllib.parse.parse_qs(url.query)
            listed.append(query)
            key, _, value = query["labelSelector"][0].partition("=")
            items = [s for s in secrets.values() if s["metadata"].get("labels", {}).get(key) == value]
            self.answer(200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": items})

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posted.append((self.path, self.headers["Content-Type"], body,
                           self.connection.getpeercert()["subject"]))
            doc = yaml.safe_load(body)
            if doc["metadata"]["name"] in secrets:
                return self.answer(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
            secrets[doc["metadata"]["name"]] = doc
            self.answer(201, doc)

        def do_DELETE(self):
            name = self.path.rsplit("/", 1)[1]
            deleted.append(self.path)
            if secrets.pop(name, None) is None:
                return self.answer(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            self.answer(200, {"kind": "Status", "status": "Success"})

    server = serve_tls(API, pem["apiserver.crt"], pem["apiserver.key"], client_ca=pem["ca.crt"])
    new_name = f"bootstrap-token-{pki.bootstrap_token(store)[0]}"
    try:
        env = bootstrap_api_env(config, pem, server.server_address[1], addons)
        run = subprocess.run(["sh", str(script), "token"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert sorted(secrets) == sorted([new_name, "bootstrap-token-user00"])  # the old one is gone
        assert deleted == [f"{collection}/bootstrap-token-old000"]
        assert listed == [{"labelSelector": [f"{label}={spec.name}"]}]
        # a second run finds the new one there (409: success too) and nothing left to delete
        run = subprocess.run(["sh", str(script), "token"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(deleted) == 1 and sorted(secrets) == sorted([new_name, "bootstrap-token-user00"])
    finally:
        server.shutdown()
        server.server_close()
    assert [p[0] for p in posted] == [collection] * 2  # nothing but the token
    path, content_type, body, subject = posted[0]
    assert content_type == "application/yaml"
    secret = yaml.safe_load(body)
    assert secret["metadata"]["name"] == new_name
    assert secret["metadata"]["labels"] == {label: spec.name}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["stringData"]["token-id"] == pki.bootstrap_token(store)[0]
    assert secret["stringData"]["expiration"] == pki.format_expiry(pki.bootstrap_token_expiry(store))
    assert dict(x[0] for x in subject)["commonName"] == "kubernetes-admin"


def test_the_run_once_bootstrap_waits_for_its_keys_without_failing(tmp_path):
    """The first master's bootstrap script, run as its unit runs it (`all`), waits while its keys
    are missing (so the unit stays in its start rather than failing into a RestartSec window in
    which `status` would see it down), goes on within a second or two of their delivery, and
    gives up with a clear message after BOOTSTRAP_KEYS_WAIT seconds."""
    import subprocess
    import time
    from tests.helpers_render import env_file, ignition_file, which_or_fail
    which_or_fail("curl")
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    config = json.loads(rendered.config_for(next(h.name for h in hosts if h.role == "master")))
    script = tmp_path / "bootstrap.sh"
    script.write_bytes(ignition_file(config, "/opt/provision/bootstrap.sh"))
    env = env_file(ignition_file(config, "/etc/provision/bootstrap.env").decode())
    keys = tmp_path / "keys"
    addons = keys / "addons"
    addons.mkdir(parents=True)
    flannel = tmp_path / "flannel.json"
    flannel.write_text("{}")
    env.update({"BOOTSTRAP_KUBE_KEY": str(keys / "admin.key"), "BOOTSTRAP_ETCD_KEY": str(keys / "etcd.key"),
                "BOOTSTRAP_ADDONS": str(addons), "BOOTSTRAP_FLANNEL_CONFIG": str(flannel),
                "BOOTSTRAP_ETCD_ENDPOINTS": "https://127.0.0.1:9", "BOOTSTRAP_API": "https://127.0.0.1:9",
                "PATH": "/usr/bin:/bin"})
    proc = subprocess.Popen(["sh", str(script), "all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        time.sleep(2.5)
        assert proc.poll() is None, proc.stdout.read()  # still waiting, not failed
        for path in (keys / "admin.key", keys / "etcd.key", addons / "bootstrap-token.yaml"):
            path.write_text("x")
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "waiting for the API server" in line:
                break
        assert any("waiting for the API server" in line for line in lines), lines  # past the keys
        assert proc.poll() is None
        assert lines[0].startswith("bootstrap: waiting for its keys"), lines
    finally:
        proc.kill()
        proc.wait()
    for path in (keys / "admin.key",):
        path.unlink()
    gave_up = subprocess.run(["sh", str(script), "all"], env={**env, "BOOTSTRAP_KEYS_WAIT": "1"},
                             capture_output=True, text=True, timeout=30)
    assert gave_up.returncode != 0
    assert "its keys were not delivered in 1 s" in gave_up.stderr


@pytest.mark.parametrize("unit, keys, says", [
    ("etcd-member.service", ("server.key", "peer.key"), "etcd"),
    # the host agent: with RestartSec=10s a new host's agent looked down right after `scale` +1
    ("provision-host-agent.service", ("agent.key", "agent.crt"), "host agent"),
    ("flanneld.service", ("flannel.key",), "flanneld"),
    ("fleet.service", ("fleet.key",), "fleetd"),
])
def test_etcd_and_its_clients_wait_for_their_keys_inside_their_start(tmp_path, unit, keys, says):
    """The unit's ExecStartPre= run as the unit runs it (real sh and timeout), with the key
    paths moved under tmp_path: it keeps waiting while the keys are missing (no failure into a
    RestartSec window), goes on within a second of their delivery, and fails at its bound."""
    import shlex
    import subprocess
    import time
    from tests.helpers_render import ignition_units
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    member = json.loads(rendered.config_for(next(h.name for h in hosts if h.etcd)))
    text = ignition_units(member)[unit]
    pre = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStartPre=")]
    assert len(pre) == 1 and "$" not in pre[0] and "%" not in pre[0]  # nothing systemd would expand
    folder = tmp_path / "keys"
    folder.mkdir()
    argv = shlex.split(pre[0].replace("/etc/ssl/etcd/", f"{folder}/"))
    assert argv[:2] == ["/usr/bin/timeout", "600"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting, not failed
        for key in keys[:-1]:
            (folder / key).write_text("x")
        time.sleep(0.5)
        assert proc.poll() is None  # all its keys or none
        (folder / keys[-1]).write_text("x")
        delivered = time.monotonic()
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - delivered < 1.0
        assert proc.stdout.read().startswith(f"{says}: waiting for its keys")
    finally:
        proc.kill()
        proc.wait()
    (folder / keys[-1]).unlink()
    gave_up = subprocess.run(["/usr/bin/timeout", "1", *argv[2:]], capture_output=True, text=True, timeout=30)
    assert gave_up.returncode == 124  # timeout's code: the start fails and Restart= tries again
