"""Role workers: a worker has what it needs to join (bootstrap kubeconfig, kubelet; kube-proxy
comes as a DaemonSet) and runs the host-load agent that headroom reads."""
from __future__ import annotations

from pyinfra.api import deploy

from ._common import KUBELET_DIRECTORIES, check, read_paths, remove_retired, retired_paths

FILES = ["/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/bootstrap-kubeconfig", "/etc/kubernetes/kubelet.env",
         "/etc/systemd/system/kubelet.service", "/etc/provision/host-agent.env"]
UNITS = ["kubelet.service", "provision-host-agent.service"]


@deploy("worker")
def apply(report: dict) -> None:
    current = read_paths(FILES, KUBELET_DIRECTORIES, retired_paths())  # one command for them all
    check(report, FILES, UNITS, directories=KUBELET_DIRECTORIES, current=current)
    remove_retired(report, current)
