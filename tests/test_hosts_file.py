"""The /etc/hosts block of role `hosts` (pure functions) and when the `hosts` phase is needed."""
from __future__ import annotations

import pytest

from provision.bootstrap import load_role
from provision.phases import PHASE_NAMES, POOL_PHASES
from provision.phases.hosts import host_entries, needs_hosts_file
from provision.providers import PROVIDERS, provider_class

hosts_role = load_role("hosts")
ENTRIES = [("10.110.0.3", "edge-workers-0"), ("10.110.0.2", "edge-masters-0")]
OTHER = ["127.0.0.1\tlocalhost", "# a comment of the image", "192.0.2.7 printer.example printer", ""]


def test_block_is_appended_and_other_lines_are_kept():
    lines = hosts_role.with_block(OTHER, "edge", ENTRIES)
    assert lines[:4] == OTHER
    assert lines[4:] == [hosts_role.begin_line("edge"), "10.110.0.2\tedge-masters-0", "10.110.0.3\tedge-workers-0",
                         "# END provision cluster edge"]


def test_same_entries_change_nothing_whatever_their_order():
    once = hosts_role.with_block(OTHER, "edge", ENTRIES)
    assert hosts_role.with_block(once, "edge", list(reversed(ENTRIES))) == once


def test_a_stale_block_is_replaced_where_it_stands():
    stale = hosts_role.with_block(OTHER[:2], "edge", [("10.110.0.9", "edge-masters-0"), ("10.110.0.8", "edge-old-0")])
    stale += ["10.0.0.1 after-the-block"]
    lines = hosts_role.with_block(stale, "edge", ENTRIES)
    assert lines == [*OTHER[:2], hosts_role.begin_line("edge"), "10.110.0.2\tedge-masters-0",
                     "10.110.0.3\tedge-workers-0", "# END provision cluster edge", "10.0.0.1 after-the-block"]
    assert not any("edge-old-0" in line or "10.110.0.9" in line for line in lines)


def test_another_clusters_block_is_left_alone():
    other_cluster = hosts_role.with_block(OTHER, "edge-2", [("10.1.0.5", "edge-2-masters-0")])
    lines = hosts_role.with_block(other_cluster, "edge", ENTRIES)
    assert lines[: len(other_cluster)] == other_cluster
    assert lines.count("# END provision cluster edge") == 1


def test_an_unterminated_block_is_replaced_to_the_end():
    broken = OTHER[:1] + [hosts_role.begin_line("edge"), "10.9.9.9\tedge-masters-0"]
    lines = hosts_role.with_block(broken, "edge", ENTRIES)
    assert lines == OTHER[:1] + hosts_role.block_lines("edge", ENTRIES)


def test_a_missing_file_gets_the_loopback_names_and_the_block():
    lines = hosts_role.with_block(None, "edge", ENTRIES)
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    assert lines[2:] == hosts_role.block_lines("edge", ENTRIES)


@pytest.mark.parametrize("entry, word", [
    (("10.0.0.1", "Edge-masters-0"), "'Edge-masters-0' is not a DNS label"),
    (("10.0.0.1", "edge masters"), "'edge masters' is not a DNS label"),
    (("10.0.0.1", "edge.masters\n10.6.6.6 evil"), "is not a DNS label"),
    (("10.0.0.1", "-edge"), "'-edge' is not a DNS label"),
    (("10.0.0.1", "edge-masters-1\n"), "'edge-masters-1\\n' is not a DNS label"),
    (("10.0.0.1", "a" * 64), "is not a DNS label"),
    (("10.0.0.1 evil", "edge-masters-1"), "address '10.0.0.1 evil' of host 'edge-masters-1'"),
    (("10.110.0.2", "edge-masters-0"), "'edge-masters-0' appears twice"),
])
def test_names_and_addresses_outside_the_grammar_are_refused(entry, word):
    problems = hosts_role.check_entries("edge", [ENTRIES[1], entry])
    assert len(problems) == 1 and word in problems[0], problems
    with pytest.raises(ValueError, match="not a DNS label|not an IP address|appears twice"):
        hosts_role.block_lines("edge", [ENTRIES[1], entry])


def test_a_cluster_name_outside_the_grammar_is_refused():
    assert hosts_role.check_entries("edge\n", ENTRIES) == [
        "cluster name 'edge\\n' is not a DNS label (a-z, 0-9 and '-', at most 63)"]
    assert hosts_role.check_entries("edge\n# x", ENTRIES) == [
        "cluster name 'edge\\n# x' is not a DNS label (a-z, 0-9 and '-', at most 63)"]


def test_entries_take_the_private_address():
    state_hosts = {"edge-masters-0": {"address": "203.0.113.2", "private_address": "10.110.0.2"},
                   "edge-workers-0": {"address": "203.0.113.3", "private_address": None}}
    assert host_entries(state_hosts) == [("10.110.0.2", "edge-masters-0"), ("203.0.113.3", "edge-workers-0")]


def test_the_phase_runs_after_wait_and_before_etcd_also_when_pools_resize():
    for names in (PHASE_NAMES, POOL_PHASES):
        # secrets (keys over SSH) come between: hosts resolve cluster names before etcd starts either way
        assert names.index("wait") + 1 == names.index("hosts") == names.index("secrets") - 1 == names.index("etcd") - 2


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_phase_is_needed_only_where_addresses_are_not_planned(provider):
    # libcloud (DigitalOcean and every other driver) cannot give a host a chosen private address.
    assert needs_hosts_file(provider) is (provider == "libcloud")
    assert provider_class(provider).plans_addresses is (provider != "libcloud")


def test_certificates_of_hosts_without_a_planned_address_carry_their_host_names():
    """What TLS checks when the configs name hosts by host name (etcd URLs, the API server)."""
    from provision.pki import wanted_certs
    from provision.plan import plan
    from tests.providers.conftest import do_spec

    spec = do_spec(masters=3, workers=1, etcd={"count": 3})
    hosts = plan(spec, {}).create
    assert all(h.address is None for h in hosts)
    certs = {c.name: c for c in wanted_certs(spec, hosts)}
    members = [h.name for h in hosts if h.etcd]
    assert len(members) == 3
    for name in members:
        for kind in ("server", "peer"):
            assert name in certs[f"etcd-{kind}-{name}"].dns_names
    masters = [h.name for h in hosts if h.role == "master"]
    assert set(masters) <= set(certs["apiserver"].dns_names)


def _context(spec, tmp_path, state, dry_run=False):
    from provision.phases import RunContext
    from provision.state import LocalStateStore
    from provision.ui import UI
    return RunContext(spec=spec, store=LocalStateStore(spec.name, tmp_path / "state"), state=state,
                      ui=UI(verbosity=-1), dry_run=dry_run)


def test_the_phase_does_nothing_where_addresses_are_planned(tmp_path):
    from provision.phases.hosts import run
    from tests.providers.conftest import make_spec
    spec = make_spec({"name": "local", "subnet": "10.251.0.0/24"})
    # a host state says exists: the phase must not even try to reach it
    ctx = _context(spec, tmp_path, {"hosts": {f"{spec.name}-masters-0": {"address": "10.251.0.10"}}})
    assert run(ctx) == {"needed": False}


def test_a_name_outside_the_grammar_stops_the_phase_before_any_host_is_reached(tmp_path):
    from provision.errors import UserError
    from provision.phases.hosts import run
    from tests.providers.conftest import do_spec
    spec = do_spec()
    # state edited by hand: a name that would add a line to /etc/hosts
    bad = f"{spec.name}-masters-0\n10.6.6.6 evil"
    ctx = _context(spec, tmp_path, {"hosts": {bad: {"address": "203.0.113.2", "private_address": "10.110.0.2",
                                                    "role": "master"}}})
    with pytest.raises(UserError, match="is not a DNS label") as err:
        run(ctx)
    assert err.value.exit_code == 2


def test_a_dry_run_before_hosts_exist_names_the_planned_hosts(tmp_path):
    from provision.phases.hosts import run
    from tests.providers.conftest import do_spec
    spec = do_spec(workers=2)
    logged = []
    ctx = _context(spec, tmp_path, {"hosts": {}}, dry_run=True)
    ctx.log = lambda phase, message: logged.append((phase, message))
    assert run(ctx) == {"needed": True, "entries": {}, "hosts": {}, "changed": 0}
    assert logged == [("hosts", f"would check 3 planned hosts once they exist: {spec.name}-masters-0, "
                                f"{spec.name}-workers-0, {spec.name}-workers-1")]
