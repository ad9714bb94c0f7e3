"""The README's "From Python" example, run as written against a local cluster (network
namespaces, real etcd and sshd): load, plan, up with progress, status, scale, one headroom
pass, down; then nothing of the cluster is left on this machine."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO, cluster_namespaces, example_spec, free_subnet, needs_root, provision, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


def readme_example() -> str:
    """The python block of the README's "From Python" section, unchanged."""
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_readme_python_example_runs_as_written(tmp_path):
    code = readme_example()
    assert 'Cluster.load("cluster.yaml", state_dir=".provision")' in code and "cluster.down()" in code
    name = unique_name("rd")
    spec = example_spec(tmp_path, name, free_subnet())
    spec.rename(tmp_path / "cluster.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROVISION_STATE_DIR", None)
    try:
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stderr == "", run.stderr  # the API prints nothing of its own
        lines = run.stdout.splitlines()
        assert lines[0] == str([f"{name}-masters-{i}" for i in range(3)] + [f"{name}-workers-{i}" for i in range(2)])
        # progress through the callback: each phase announced, then its own lines
        assert "[validate] check the spec against the contract" in lines
        assert any(line.startswith("[machines] ") for line in lines)
        changed, kubeconfig = next(line for line in lines if line.startswith("('")).rsplit(" ", 1)
        assert "'machines'" in changed and kubeconfig == str(tmp_path / ".provision" / name / "kubeconfig")
        assert lines[-2] == "True"  # healthy after up
        assert lines[-1] in ("acted", "decided", "busy")  # one headroom pass, after the scale to 3
        assert cluster_namespaces(name) == []  # down removed every host
    finally:
        provision("down", tmp_path / "cluster.yaml", "--yes", "--state-dir", tmp_path / ".provision", timeout=600)
