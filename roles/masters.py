"""Role masters: a control-plane host has its certificates, kubeconfigs, static pod manifests,
kubelet, and the host-load agent."""
from __future__ import annotations

from pyinfra.api import deploy

from ._common import KUBELET_DIRECTORIES, check, read_paths, remove_retired, retired_paths

FILES = ["/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/apiserver.key",
         "/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/sa.pub", "/etc/kubernetes/admin.conf",
         "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/manifests/kube-apiserver.yaml",
         "/etc/kubernetes/manifests/kube-controller-manager.yaml", "/etc/kubernetes/manifests/kube-scheduler.yaml",
         "/etc/kubernetes/kubelet.env", "/etc/systemd/system/kubelet.service"]
UNITS = ["kubelet.service", "provision-host-agent.service"]


@deploy("master")
def apply(report: dict) -> None:
    current = read_paths(FILES, KUBELET_DIRECTORIES, retired_paths())  # one command for them all
    check(report, FILES, UNITS, directories=KUBELET_DIRECTORIES, current=current)
    remove_retired(report, current)
