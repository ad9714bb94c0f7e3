"""Per-host convergence records (provision.convergence): a host whose record is missing or
differs in anything the roles depend on is picked for bootstrap; the rest are not."""
from __future__ import annotations

import json

from provision import convergence
from provision.phases import RunContext, run_phases, select
from provision.render import INDEX
from provision.spec import load_spec
from provision.state import open_store
from provision.ui import UI
from tests.helpers_render import SMALL_SPEC, served_artifacts, write_spec


def rendered_context(tmp_path):
    spec = load_spec(write_spec(tmp_path, SMALL_SPEC))
    store = open_store(spec, tmp_path / "state")
    state = store.read()
    state["artifacts"] = served_artifacts("http://10.77.0.1:8080")
    ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
    run_phases(ctx, select(until="render"))
    hosts = {name: {"role": entry["role"], "pool": entry["pool"], "address": f"10.9.0.{i + 2}",
                    "provider_id": f"i-{i}", "etcd": entry["role"] == "master"}
             for i, (name, entry) in enumerate(sorted(json.loads(store.read_blob("rendered/" + INDEX))["hosts"].items()))}
    return ctx, hosts


def test_every_host_is_stale_until_recorded_then_none(tmp_path):
    ctx, hosts = rendered_context(tmp_path)
    wanted = convergence.wanted_records(ctx.spec, ctx.store, hosts)
    assert convergence.stale_hosts(ctx.state, "workers", wanted) == sorted(hosts)
    convergence.record(ctx.state, "workers", wanted)
    assert convergence.stale_hosts(ctx.state, "workers", wanted) == []
    # recorded for one phase says nothing about another
    assert convergence.stale_hosts(ctx.state, "fleet", wanted) == sorted(hosts)


def test_a_changed_config_address_or_replacement_makes_only_that_host_stale(tmp_path):
    ctx, hosts = rendered_context(tmp_path)
    convergence.record(ctx.state, "fleet", convergence.wanted_records(ctx.spec, ctx.store, hosts))
    moved = dict(hosts)
    moved["small-workers-0"] = {**hosts["small-workers-0"], "address": "10.9.0.99"}
    assert convergence.stale_hosts(ctx.state, "fleet", convergence.wanted_records(ctx.spec, ctx.store, moved)) \
        == ["small-workers-0"]
    replaced = dict(hosts)
    replaced["small-workers-1"] = {**hosts["small-workers-1"], "provider_id": "i-new"}
    assert convergence.stale_hosts(ctx.state, "fleet", convergence.wanted_records(ctx.spec, ctx.store, replaced)) \
        == ["small-workers-1"]
    # the master's own config changes (a re-render with different bytes): only it is stale
    index = json.loads(ctx.store.read_blob("rendered/" + INDEX))
    config = "rendered/" + index["hosts"]["small-masters-0"]["config"]
    ctx.store.write_blob(config, ctx.store.read_blob(config) + b"\n", secret=True)
    assert convergence.stale_hosts(ctx.state, "fleet", convergence.wanted_records(ctx.spec, ctx.store, hosts)) \
        == ["small-masters-0"]


def test_a_shared_pool_config_change_makes_the_whole_pool_stale(tmp_path):
    ctx, hosts = rendered_context(tmp_path)
    convergence.record(ctx.state, "workers", convergence.wanted_records(ctx.spec, ctx.store, hosts))
    ctx.store.write_blob("rendered/pool-workers.ign", b"{}", secret=True)
    assert convergence.stale_hosts(ctx.state, "workers", convergence.wanted_records(ctx.spec, ctx.store, hosts)) \
        == ["small-workers-0", "small-workers-1"]


def test_forgotten_hosts_are_stale_and_never_converged(tmp_path):
    ctx, hosts = rendered_context(tmp_path)
    wanted = convergence.wanted_records(ctx.spec, ctx.store, hosts)
    for phase in ("fleet", "workers"):
        convergence.record(ctx.state, phase, wanted)
    assert convergence.never_converged(ctx.state, hosts) == []
    convergence.forget(ctx.state, ["small-workers-1"])
    assert convergence.stale_hosts(ctx.state, "workers", wanted) == ["small-workers-1"]
    assert convergence.never_converged(ctx.state, hosts) == ["small-workers-1"]
    rekeyed = {**hosts, "small-workers-0": {**hosts["small-workers-0"], "host_key": "ssh-ed25519 AAAA"}}
    assert convergence.never_converged(ctx.state, rekeyed) == ["small-workers-0", "small-workers-1"]


def test_role_version_is_a_digest_of_the_role_files():
    version = convergence.role_version()
    assert len(version) == 64 and int(version, 16) >= 0
    assert convergence.role_version() == version


def test_a_phase_that_found_a_problem_forgets_only_its_own_record(tmp_path):
    ctx, hosts = rendered_context(tmp_path)
    wanted = convergence.wanted_records(ctx.spec, ctx.store, hosts)
    for phase in ("fleet", "workers"):
        convergence.record(ctx.state, phase, wanted)
    convergence.forget_phase(ctx.state, "workers", ["small-workers-0"])
    assert convergence.stale_hosts(ctx.state, "workers", wanted) == ["small-workers-0"]
    assert convergence.stale_hosts(ctx.state, "fleet", wanted) == []
