"""Role workers: a worker has what it needs to join (bootstrap kubeconfig, kubelet, kube-proxy)
and runs the host-load agent that headroom reads."""
from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from ._common import check

FILES = ["/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/bootstrap-kubeconfig", "/etc/kubernetes/kubelet.env",
         "/etc/kubernetes/kube-proxy.conf", "/etc/kubernetes/manifests/kube-proxy.yaml",
         "/etc/systemd/system/kubelet.service", "/etc/provision/host-agent.env"]
UNITS = ["kubelet.service", "provision-host-agent.service"]


@deploy("worker")
def apply(report: dict) -> None:
    check(report, FILES, UNITS)
    files.directory(name="static pod manifests", path="/etc/kubernetes/manifests", mode="755", _sudo=True)
    files.directory(name="kubelet state", path="/var/lib/kubelet", mode="700", _sudo=True)
