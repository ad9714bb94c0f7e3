"""Trust boundaries in what hosts receive: etcd clients trust only the etcd CA; the scheduler and
kube-proxy pods mount only the files they use (no CA key, no service-account key)."""
from __future__ import annotations

import json

import yaml
from cryptography import x509

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
        for path in ("/etc/ssl/etcd/agent.crt", "/etc/ssl/etcd/flannel.crt"):
            cert = x509.load_pem_x509_certificate(ignition_file(config, path))
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(etcd_ca))
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


def test_scheduler_and_kube_proxy_mount_only_their_own_files(tmp_path):
    store, configs = rendered_small(tmp_path)
    master = next(c for n, c in configs.items() if "masters" in n)
    for manifest, component in (("kube-scheduler.yaml", "scheduler"), ("kube-proxy.yaml", "kube-proxy")):
        pod = yaml.safe_load(ignition_file(master, f"/etc/kubernetes/manifests/{manifest}"))
        # kube-proxy also needs the host's xtables lock (written) and /lib/modules: no secret there
        system = {"/run/xtables.lock", "/lib/modules"} if component == "kube-proxy" else set()
        volumes = {v["name"]: v["hostPath"] for v in pod["spec"]["volumes"]}
        assert {v["path"] for v in volumes.values() if v["type"] != "File"} <= system, volumes  # no pki directory
        paths = {v["path"] for v in volumes.values()}
        keys = {p for p in paths if p.endswith(".key")}
        assert keys == {f"/etc/kubernetes/pki/{component}.key"}, keys
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert all(m["mountPath"] == volumes[m["name"]]["path"] for m in mounts)
        assert all(m["readOnly"] for m in mounts if m["mountPath"] != "/run/xtables.lock")
        # every file the component's kubeconfig names is mounted
        conf_path = next(p for p in paths if p.endswith(".conf"))
        kubeconfig = yaml.safe_load(ignition_file(master, conf_path))
        named = {kubeconfig["clusters"][0]["cluster"]["certificate-authority"],
                 kubeconfig["users"][0]["user"]["client-certificate"], kubeconfig["users"][0]["user"]["client-key"]}
        assert named <= paths
