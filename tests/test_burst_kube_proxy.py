"""kube-proxy on a burst pool's nodes reaches the API the way their kubelet does.

An OpenStack cluster whose API load balancer has only its private VIP: the cluster's workers
reach the API there; the AWS burst pool's kubelet reaches it through the node-local proxy to
the masters' floating IPs (render.pool_provider). kube-proxy's kubeconfig is a ConfigMap, so
the burst nodes get a DaemonSet and ConfigMap of their own, and the cluster's DaemonSet keeps
off them. Proven on the manifests the first master applies (what kube-proxy consumes: no
kube-proxy or scheduler runs here): which DaemonSet each node's labels select, as the
DaemonSet controller matches nodeSelector and required node affinity, and which server that
DaemonSet's ConfigMap names; every manifest passes `kubernetes-validate --strict` and every
config `ignition-validate`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provision.render.pool_provider import PROVIDER_LABEL
from tests.headroom.test_burst import bootstrap_kubeconfig, burst_render, ignition_of, kubelet_args, validate_ignition
from tests.helpers_render import ignition_file

KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
ADDONS = "/etc/kubernetes/addons/"
OPENSTACK = "{name: openstack, cloud: lab, image: flatcar, flavor: m1.large, external_network: public}"
PRIVATE_LB = {"api_endpoint": {"kind": "openstack-octavia", "dns_name": "10.0.0.50", "vip_address": "10.0.0.50"},
              "hosts": {"bursty-masters-0": {"pool": "masters", "role": "master", "index": 0, "etcd": True,
                                             "address": "10.0.0.11", "public_address": "203.0.113.11"}}}


def addon_docs(rendered) -> dict[str, dict]:
    """The first master's addon manifests by file name (the bootstrap token is a secret: not here)."""
    config = ignition_of(rendered, "bursty-masters-0")
    index = ignition_file(config, ADDONS + "index").decode()
    return {file: yaml.safe_load(ignition_file(config, ADDONS + file))
            for _, file in (line.split() for line in index.splitlines() if line.strip())
            if file != "bootstrap-token.yaml"}


def node_labels(rendered, host) -> dict[str, str]:
    """The labels a node registers: kubelet's --node-labels and the well-known ones it sets itself."""
    arg = next(a for a in kubelet_args(ignition_of(rendered, host)) if a.startswith("--node-labels="))
    labels = dict(item.split("=", 1) for item in arg.split("=", 1)[1].split(","))
    return {"kubernetes.io/os": "linux", "kubernetes.io/hostname": host, **labels}


def selects(daemonset: dict, labels: dict[str, str]) -> bool:
    """Whether the DaemonSet places a pod on a node with `labels` (nodeSelector, then required
    node affinity: any term whose expressions all hold)."""
    pod = daemonset["spec"]["template"]["spec"]
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = (((pod.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True

    def holds(expr):
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        return {"Exists": key in labels, "DoesNotExist": key not in labels,
                "In": labels.get(key) in values, "NotIn": labels.get(key) not in values}[op]
    return any(all(holds(e) for e in term.get("matchExpressions") or []) for term in required["nodeSelectorTerms"])


def kube_proxy_server(docs: dict[str, dict], daemonset: dict) -> str:
    """The API server the DaemonSet's kube-proxy is configured with (its ConfigMap's kubeconfig)."""
    (volume,) = [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if v["name"] == "kubeconfig"]
    (configmap,) = [d for d in docs.values() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]]
    kubeconfig = yaml.safe_load(configmap["data"]["kubeconfig.conf"])
    return kubeconfig["clusters"][0]["cluster"]["server"]


def kubelet_server(rendered, host) -> str:
    return yaml.safe_load(bootstrap_kubeconfig(rendered, host))["clusters"][0]["cluster"]["server"]


def test_each_nodes_kube_proxy_reaches_the_api_as_its_kubelet_does(tmp_path):
    spec, hosts, rendered = burst_render(tmp_path, OPENSTACK, PRIVATE_LB)
    docs = addon_docs(rendered)
    daemonsets = [d for d in docs.values() if d["kind"] == "DaemonSet" and "kube-proxy" in d["metadata"]["name"]]
    assert sorted(d["metadata"]["name"] for d in daemonsets) == ["kube-proxy", "kube-proxy-burst"]
    servers = {}
    for host in ("bursty-masters-0", "bursty-workers-0", "bursty-cloud-0"):
        labels = node_labels(rendered, host)
        (daemonset,) = [d for d in daemonsets if selects(d, labels)]  # exactly one: never none, never both
        servers[host] = kube_proxy_server(docs, daemonset)
    port = spec.kubernetes.api_proxy_port
    assert servers["bursty-cloud-0"] == f"https://127.0.0.1:{port}" == kubelet_server(rendered, "bursty-cloud-0")
    assert servers["bursty-workers-0"] == "https://10.0.0.50:6443" == kubelet_server(rendered, "bursty-workers-0")
    # the burst node's node-local proxy is there for its kube-proxy to use
    haproxy = ignition_file(ignition_of(rendered, "bursty-cloud-0"), "/etc/provision/api-proxy/haproxy.cfg").decode()
    assert f"bind 127.0.0.1:{port}" in haproxy and "203.0.113.11:6443" in haproxy
    # two DaemonSets whose selectors overlap would fight over pods: theirs do not
    selectors = [d["spec"]["selector"]["matchLabels"] for d in daemonsets]
    assert all(d["spec"]["template"]["metadata"]["labels"] == s for d, s in zip(daemonsets, selectors))
    assert selectors[0] != selectors[1]
    validate_ignition(tmp_path, rendered)


def test_the_burst_kube_proxy_is_applied_after_the_clusters_and_passes_strict_validation(tmp_path):
    spec, _, rendered = burst_render(tmp_path, OPENSTACK, PRIVATE_LB)
    config = ignition_of(rendered, "bursty-masters-0")
    files = [line.split()[1] for line in ignition_file(config, ADDONS + "index").decode().splitlines()]
    at = files.index("kube-proxy-daemonset.yaml")
    assert files[at + 1:at + 3] == ["kube-proxy-burst-configmap.yaml", "kube-proxy-burst-daemonset.yaml"]
    assert files.index("kube-proxy-serviceaccount.yaml") < at  # the ServiceAccount both run as comes first
    paths = []
    for file in files:
        if file.startswith("kube-proxy"):
            path = tmp_path / file
            path.write_bytes(ignition_file(config, ADDONS + file))
            paths.append(str(path))
    version = ".".join(spec.kubernetes.version.split(".")[:2]) + ".0"
    proc = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", "-k", version, *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(paths) == 6


def test_one_kube_proxy_for_every_node_when_burst_nodes_reach_the_api_the_same_way(tmp_path):
    """A public load balancer, or a cluster with no load balancer (the node-local proxy on every
    node), or no burst pool: one kube-proxy, on every node, with the manifests as before."""
    public = dict(PRIVATE_LB, api_endpoint={"kind": "openstack-octavia", "dns_name": "198.51.100.7",
                                           "vip_address": "10.0.0.50"})
    for name, state, provider in (("public", public, OPENSTACK), ("no-lb", {}, "{name: local, subnet: 10.251.7.0/24}")):
        _, _, rendered = burst_render(tmp_path / name, provider, state)
        docs = addon_docs(rendered)
        assert not any(d["metadata"]["name"] == "kube-proxy-burst" for d in docs.values()), name
        (daemonset,) = [d for d in docs.values() if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "kube-proxy"]
        assert "affinity" not in daemonset["spec"]["template"]["spec"]
        for host in ("bursty-workers-0", "bursty-cloud-0"):
            assert selects(daemonset, node_labels(rendered, host))
            assert kube_proxy_server(docs, daemonset) == kubelet_server(rendered, host)
    # The private-LB cluster without a burst pool: its addons are those of a cluster that never
    # had one (byte for byte; the golden render tests pin the bytes of the rest).
    _, _, alone = burst_render(tmp_path / "alone", OPENSTACK, PRIVATE_LB, pool_provider="null", burst_pool="null")
    config = ignition_of(alone, "bursty-masters-0")
    for file in ("index", "kube-proxy-configmap.yaml", "kube-proxy-daemonset.yaml"):
        data = ignition_file(config, ADDONS + file).decode()
        assert "kube-proxy-burst" not in data and PROVIDER_LABEL not in data and "affinity" not in data


def test_the_bootstrap_script_applies_the_burst_kube_proxy_by_name(tmp_path):
    """bootstrap.sh reads each manifest's metadata.name for the object's URL: the burst ones name
    themselves kube-proxy-burst (a name of the object name grammar)."""
    _, _, rendered = burst_render(tmp_path, OPENSTACK, PRIVATE_LB)
    config = ignition_of(rendered, "bursty-masters-0")
    script = ignition_file(config, "/opt/provision/bootstrap.sh").decode()
    names = {}
    for file in ("kube-proxy-burst-configmap.yaml", "kube-proxy-burst-daemonset.yaml"):
        path = tmp_path / file
        path.write_bytes(ignition_file(config, ADDONS + file))
        # the script's own object_name function, run on the manifest
        function = re.search(r"^object_name\(\) \{$.*?^\}$", script, re.M | re.S).group(0)
        run = subprocess.run(["sh", "-c", function + '\nobject_name "$1"', "sh", str(path)],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        names[file] = run.stdout
    assert names == {"kube-proxy-burst-configmap.yaml": "kube-proxy-burst", "kube-proxy-burst-daemonset.yaml": "kube-proxy-burst"}
    assert json.loads(rendered.config_for("bursty-masters-0"))  # still one JSON document


def test_the_provider_label_is_provisions_own(tmp_path):
    """A pool may not set provision.io/provider itself: the label picks which kube-proxy runs on
    a node, so a primary node wearing it would get the burst nodes' API address."""
    from provision.spec import SpecError
    from tests.headroom.test_burst import load, spec_text
    text = spec_text().replace("{name: workers, role: worker, count: 1, min: 1, max: 3}",
                               '{name: workers, role: worker, count: 1, min: 1, max: 3, labels: {"provision.io/provider": aws}}')
    with pytest.raises(SpecError) as err:
        load(tmp_path, text)
    assert any(": pools[1].labels: provision.io/provider is set by provision" in line for line in err.value.lines)
