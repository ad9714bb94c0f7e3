"""Trust boundaries in what hosts receive: etcd clients trust only the etcd CA; the scheduler pod
mounts only the files it uses (no CA key, no service-account key); kube-proxy holds no key at all
(a DaemonSet authenticating with its ServiceAccount's token)."""
from __future__ import annotations

import json

import yaml
from cryptography import x509

from provision.render import render_secrets
from tests.helpers_render import SMALL_SPEC, ignition_file, render, served_artifacts, write_spec


def rendered_small(tmp_path):
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    configs = {name: json.loads(data) for name, data in rendered.files.items() if name.endswith(".ign")}
    return store, configs


def test_every_etcd_client_and_member_trusts_the_etcd_ca_not_the_kubernetes_ca(tmp_path):
    store, configs = rendered_small(tmp_path)
    etcd_ca = store.read_blob("pki/etcd-ca.crt")
    kube_ca = store.read_blob("pki/ca.crt")
    assert etcd_ca != kube_ca
    for name, config in configs.items():
        assert ignition_file(config, "/etc/ssl/etcd/ca.crt") == etcd_ca, name
        cert = x509.load_pem_x509_certificate(ignition_file(config, "/etc/ssl/etcd/flannel.crt"))
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(etcd_ca))
    # each host agent's own certificate (delivered over SSH) is the etcd CA's too
    for blob in [b for b in store.list_blobs("pki/") if b.startswith("pki/etcd-agent-") and b.endswith(".crt")]:
        x509.load_pem_x509_certificate(store.read_blob(blob)).verify_directly_issued_by(
            x509.load_pem_x509_certificate(etcd_ca))
    master = next(c for n, c in configs.items() if "masters" in n)
    assert ignition_file(master, "/etc/kubernetes/pki/etcd-ca.crt") == etcd_ca
    apiserver = ignition_file(master, "/etc/kubernetes/manifests/kube-apiserver.yaml").decode()
    assert "--etcd-cafile=/etc/kubernetes/pki/etcd-ca.crt" in apiserver
    client = x509.load_pem_x509_certificate(ignition_file(master, "/etc/kubernetes/pki/apiserver-etcd-client.crt"))
    client.verify_directly_issued_by(x509.load_pem_x509_certificate(etcd_ca))
    assert client.subject.rfc4514_string() == "CN=etcd-apiserver"
    # the etcd root identity never reaches a host
    root_key = store.read_blob("pki/etcd-client-root.key")
    for config in configs.values():
        for f in config["storage"]["files"]:
            if f["contents"]["source"].startswith("data:"):
                assert ignition_file(config, f["path"]) != root_key


def test_scheduler_mounts_only_its_own_files(tmp_path):
    store, configs = rendered_small(tmp_path)
    master = next(c for n, c in configs.items() if "masters" in n)
    pod = yaml.safe_load(ignition_file(master, "/etc/kubernetes/manifests/kube-scheduler.yaml"))
    volumes = {v["name"]: v["hostPath"] for v in pod["spec"]["volumes"]}
    assert {v["path"] for v in volumes.values() if v["type"] != "File"} == set(), volumes  # no pki directory
    paths = {v["path"] for v in volumes.values()}
    keys = {p for p in paths if p.endswith(".key")}
    assert keys == {"/etc/kubernetes/pki/scheduler.key"}, keys
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert all(m["mountPath"] == volumes[m["name"]]["path"] and m["readOnly"] for m in mounts)
    # every file the component's kubeconfig names is mounted
    conf_path = next(p for p in paths if p.endswith(".conf"))
    kubeconfig = yaml.safe_load(ignition_file(master, conf_path))
    named = {kubeconfig["clusters"][0]["cluster"]["certificate-authority"],
             kubeconfig["users"][0]["user"]["client-certificate"], kubeconfig["users"][0]["user"]["client-key"]}
    assert named <= paths


def _files(config: dict) -> dict[str, bytes]:
    return {f["path"]: ignition_file(config, f["path"]) for f in config["storage"]["files"]
            if f["contents"]["source"].startswith("data:")}


def test_no_node_holds_a_kube_proxy_key_the_daemonset_uses_its_service_account(tmp_path):
    spec, store, hosts, rendered = render(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                          served_artifacts("http://10.77.0.1:8080"))
    # the PKI issues no kube-proxy certificate: there is no shared node key to leak
    assert [b for b in store.list_blobs("pki/") if "kube-proxy" in b] == []
    secrets = render_secrets(spec, {}, store, hosts, [h.name for h in hosts])
    private_keys = {b: store.read_blob(b) for b in store.list_blobs("pki/") if b.endswith(".key")}
    for host in hosts:
        config = json.loads(rendered.config_for(host.name))
        files = _files(config)
        delivered = secrets[host.name]
        # neither the boot config nor what the secrets phase delivers names a kube-proxy key or kubeconfig
        assert not [p for p in list(files) + list(delivered) if "kube-proxy" in p and "/addons/" not in p], host.name
        if host.role == "worker":
            # and the keys a worker gets are exactly its own etcd clients' (no client of the Kubernetes CA)
            keys = {p for p, f in delivered.items() if b"PRIVATE KEY" in f.data}
            clients = ("flannel",) + (("fleet",) if spec.fleet.enabled else ())
            assert keys == {f"/etc/ssl/etcd/{c}.key" for c in ("agent", *clients)}, keys
            owners = {b for b, data in private_keys.items() for f in delivered.values() if f.data == data}
            assert owners == {f"pki/etcd-client-{c}.key" for c in clients} | {f"pki/etcd-agent-{host.name}.key"}, owners
    first = json.loads(rendered.files["small-masters-0.ign"])
    docs = {name: yaml.safe_load(ignition_file(first, f"/etc/kubernetes/addons/kube-proxy-{name}.yaml"))
            for name in ("serviceaccount", "clusterrolebinding", "configmap", "daemonset")}
    binding = docs["clusterrolebinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "system:node-proxier"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]
    kubeconfig = yaml.safe_load(docs["configmap"]["data"]["kubeconfig.conf"])
    user = kubeconfig["users"][0]["user"]
    assert user == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert cluster["certificate-authority"] == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    # the node-local proxy (no load balancer here): not the Service address, which needs kube-proxy itself
    assert cluster["server"] == f"https://127.0.0.1:{spec.kubernetes.api_proxy_port}"
    pod = docs["daemonset"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["serviceaccount"]["metadata"]["name"] == "kube-proxy"
    assert pod.get("automountServiceAccountToken", True) is True
    assert pod["hostNetwork"] is True and pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every taint: masters and not-ready nodes too
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert volumes["lib-modules"]["hostPath"] == {"path": "/lib/modules", "type": "Directory"}
    assert volumes["kubeconfig"]["configMap"]["name"] == docs["configmap"]["metadata"]["name"]
    assert not any("hostPath" in v and v["hostPath"]["path"].startswith("/etc/kubernetes") for v in volumes.values())
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert f"--kubeconfig={next(p for p, m in mounts.items() if m['name'] == 'kubeconfig')}/kubeconfig.conf" \
        in container["command"]
    assert mounts["/run/xtables.lock"]["readOnly"] is False and mounts["/lib/modules"]["readOnly"] is True
    # every node runs the node-local proxy the ConfigMap names: masters too
    for host in hosts:
        assert "/etc/kubernetes/manifests/api-proxy.yaml" in _files(json.loads(rendered.config_for(host.name))) \
            or host.role == "etcd", host.name
