"""RunContext.plan: `up` makes its plan once and hands it to every phase; it is made again only
when a phase changes what it is made from (hosts recorded by `machines`, a pool's size)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

import provision.plan as plan_module
from provision.phases import RunContext
from provision.plan import plan
from provision.spec import load_spec
from provision.state import LocalStateStore
from provision.ui import UI

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ctx(tmp_path):
    spec = load_spec(REPO / "examples/local.yaml")
    return RunContext(spec=spec, store=LocalStateStore(spec.name, tmp_path), state={}, ui=UI(verbosity=-1))


def count_plans(monkeypatch) -> list[int]:
    calls = [0]
    real = plan_module.plan

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr("provision.phases.plan", counted)
    return calls


def test_the_plan_is_made_once_while_state_does_not_change(ctx, monkeypatch):
    calls = count_plans(monkeypatch)
    first = ctx.plan()
    ctx.state.setdefault("etcd", {})["discovery_token_url"] = "x"  # plan does not read it
    assert ctx.plan() is first and ctx.plan() is first
    assert calls[0] == 1
    assert first == plan(ctx.spec, {})


def test_hosts_recorded_by_a_phase_make_a_new_plan(ctx, monkeypatch):
    calls = count_plans(monkeypatch)
    before = ctx.plan()
    assert [h.name for h in before.create][:1] == ["demo-masters-0"]
    host = before.create[0]
    # what `machines` records for a host it made
    ctx.state.setdefault("hosts", {})[host.name] = {"pool": host.pool, "role": host.role, "index": host.index,
                                                    "address": host.address, "etcd": host.etcd}
    after = ctx.plan()
    assert after is not before and calls[0] == 2
    assert [h.name for h in after.keep] == [host.name] and host.name not in [h.name for h in after.create]
    assert after == plan(ctx.spec, copy.deepcopy(ctx.state))
    # a recorded address that changes (a provider assigned it) is an input too
    ctx.state["hosts"][host.name]["address"] = "10.250.0.99"
    assert ctx.plan().keep[0].address == "10.250.0.99" and calls[0] == 3


def test_a_pool_size_recorded_in_state_makes_a_new_plan(ctx):
    assert len(ctx.plan().create) == 5
    ctx.state["pools"] = {"workers": {"size": 4, "spec_count": 2}}
    assert len(ctx.plan().create) == 7
    ctx.state["pools"]["workers"]["size"] = 1  # changed in place
    assert len(ctx.plan().create) == 4
