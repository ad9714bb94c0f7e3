"""`up`'s phases are a tuple of imported modules, loaded when a verb needs them."""
from __future__ import annotations

import subprocess
import sys

from provision import phases
from tests.conftest import REPO


def test_each_phase_is_its_module_in_up_order():
    table = phases.all_phases()
    assert tuple(p.name for p in table) == phases.PHASE_NAMES == (
        "validate", "endpoint", "pki", "render", "rollout", "machines", "wait", "hosts", "secrets", "etcd", "flannel",
        "fleet", "masters",
        "workers",
        "kubeconfig")
    for phase in table:
        assert phase.module is sys.modules[f"provision.phases.{phase.name}"]
        assert callable(phase.module.run)
    assert phases.PHASES is table
    assert [p.name for p in phases.select(until="render")] == ["validate", "endpoint", "pki", "render"]


def test_the_cli_loads_no_phase_until_a_verb_needs_one():
    probe = ("import sys, provision.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('provision.phases.')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
