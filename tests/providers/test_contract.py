"""The one contract every provider keeps, run against each (see CONTRACT_CASES in conftest.py):
create, list by tag, wait, destroy, re-create after a partial failure, no duplicates on a
retry, orphans reported."""
from __future__ import annotations

import collections
import re

import pytest

from provision.errors import ActionError
from provision.plan import plan
from provision.providers.base import CAPABILITIES, FILE_STATES, HOST_KEYS, START_HOSTS, UNIT_STATES, Provider, compare

from .conftest import configs_for


def planned(case):
    hosts = plan(case.spec, {}).create
    return hosts, configs_for(hosts)


def live_names(provider) -> list[str]:
    return sorted(h.name for h in provider.list_hosts() if h.state != "terminated")


def assert_each_created_once(case, provider, hosts) -> None:
    """No host exists twice: counted in the cloud's listing, or (providers keyed by name, where
    the listing cannot repeat a name) in the host-creating steps themselves."""
    wanted = collections.Counter(h.name for h in hosts)
    assert collections.Counter(h.name for h in provider.list_hosts() if h.state != "terminated") == wanted
    if case.created_names is not None:
        assert collections.Counter(case.created_names()) == wanted, case.created_names()


def test_create_list_wait_destroy(contract_case):
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    provider.prepare()
    records = provider.create_hosts(hosts, configs)
    assert [r.name for r in records] == [h.name for h in hosts]
    assert len({r.provider_id for r in records}) == len(hosts)

    # A fresh provider object (no memory of the call) finds the cluster from the cloud alone,
    # with pool and role from the tags.
    listed = {h.name: h for h in contract_case.make().list_hosts()}
    assert sorted(listed) == sorted(h.name for h in hosts)
    for h in hosts:
        assert (listed[h.name].pool, listed[h.name].role) == (h.pool, h.role)

    running = provider.wait_running([h.name for h in hosts], timeout=60)
    assert all(r.state == "running" for r in running)
    assert all(r.address for r in running)

    provider.destroy_hosts([hosts[-1].name, "not-a-host-of-this-cluster"])
    assert live_names(provider) == sorted(h.name for h in hosts[:-1])
    provider.destroy_hosts([h.name for h in hosts])
    assert live_names(provider) == []
    provider.teardown()


def test_no_duplicates_on_retry(contract_case):
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    first = provider.create_hosts(hosts, configs)
    calls = contract_case.create_calls()
    again = contract_case.make().create_hosts(hosts, configs)
    assert {r.name: r.provider_id for r in again} == {r.name: r.provider_id for r in first}
    assert contract_case.create_calls() == calls, "a repeated create made API calls that create hosts"
    assert calls >= 1
    assert live_names(provider) == sorted(h.name for h in hosts)
    assert_each_created_once(contract_case, provider, hosts)


def test_lost_answer_is_not_duplicated(contract_case):
    """The cloud creates the host but the answer never arrives: the retry (inside the
    provider, or a re-run after the error) must not make a second one."""
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    contract_case.drop_next_create()
    try:
        provider.create_hosts(hosts, configs)
    except ActionError:
        contract_case.make().create_hosts(hosts, configs)
    assert_each_created_once(contract_case, provider, hosts)


def test_recreate_after_partial_failure(contract_case):
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    provider.create_hosts(hosts[:1], configs)
    contract_case.fail_next_create()
    with pytest.raises(ActionError):
        provider.create_hosts(hosts, configs)
    listed = {h.name: h.state for h in provider.list_hosts() if h.state != "terminated"}
    assert hosts[0].name in listed
    # The batch is left short: a host missing (a cloud's failed create makes none), or one never
    # booted (the local provider tries every host of a batch side by side and leaves the one
    # that failed half made, not running).
    assert len(listed) < len(hosts) or any(state != "running" for state in listed.values()), listed
    # The re-run creates exactly what is missing.
    records = contract_case.make().create_hosts(hosts, configs)
    assert sorted(r.name for r in records) == sorted(h.name for h in hosts)
    assert_each_created_once(contract_case, provider, hosts)


def test_orphans_and_missing_reported(contract_case):
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    provider.create_hosts(hosts, configs)
    # State lost the last host and believes in one the cloud never had.
    recorded = {h.name: {"pool": h.pool} for h in hosts[:-1]}
    recorded[f"{contract_case.spec.name}-workers-99"] = {"pool": "workers"}
    report = compare(recorded, contract_case.make().list_hosts())
    assert report == {"orphans": [hosts[-1].name], "missing": [f"{contract_case.spec.name}-workers-99"]}


def test_planned_addresses_are_kept_or_the_provider_says_it_cannot(contract_case):
    """`plans_addresses`: when true, every host the plan gave an address runs on exactly that
    private address (configs name it); when false, the plan gives no host an address (nothing
    would honour it) and the `hosts` phase maps host names in /etc/hosts instead."""
    hosts, configs = planned(contract_case)
    provider = contract_case.make()
    assert isinstance(provider.plans_addresses, bool)
    if not provider.plans_addresses:
        assert [h.name for h in hosts if h.address] == []
        return
    provider.prepare()
    provider.create_hosts(hosts, configs)
    running = {r.name: r for r in provider.wait_running([h.name for h in hosts], timeout=60)}
    fixed = {h.name: h.address for h in hosts if h.address}
    assert fixed, "a provider that plans addresses got none from the plan"
    assert {name: running[name].private_address for name in fixed} == fixed
    provider.destroy_hosts([h.name for h in hosts])
    provider.teardown()


CAPABILITY_METHODS = {START_HOSTS: "start_hosts", HOST_KEYS: "host_public_key", UNIT_STATES: "unit_states",
                      FILE_STATES: "file_states"}


def test_optional_capabilities_are_declared_and_kept(contract_case):
    """A provider implements an optional method exactly when it declares the capability (callers
    ask `optional_capabilities`, never probe), and what it declares works on its hosts; the others keep
    the base class's no-op answers."""
    assert set(CAPABILITY_METHODS) == CAPABILITIES
    provider = contract_case.make()
    assert provider.optional_capabilities <= CAPABILITIES, provider.optional_capabilities
    for capability, method in CAPABILITY_METHODS.items():
        overridden = getattr(type(provider), method) is not getattr(Provider, method)
        assert overridden == (capability in provider.optional_capabilities), (capability, method)
    hosts, configs = planned(contract_case)
    provider.prepare()
    provider.create_hosts(hosts, configs)
    names = [h.name for h in hosts]
    provider.wait_running(names, timeout=60)
    started = provider.start_hosts(names)
    keys = {name: provider.host_public_key(name) for name in names}
    units = {name: provider.unit_states(name) for name in names}
    if START_HOSTS in provider.optional_capabilities:
        assert sorted(started) == sorted(names)
        assert all(isinstance(what, list) for what in started.values())
    else:
        assert started == {}
    if HOST_KEYS in provider.optional_capabilities:
        assert all(key and key.split()[0].startswith("ssh-") and len(key.split()) == 2 for key in keys.values()), keys
    else:
        assert set(keys.values()) == {None}
    if UNIT_STATES in provider.optional_capabilities:
        assert all(units[name] for name in names), units
        assert all(isinstance(doc.get("state"), str) for per_host in units.values() for doc in per_host.values())
    else:
        assert all(per_host == {} for per_host in units.values())
    files = {name: provider.file_states(name, ["/etc/hostname", "/etc/no-such-file"]) for name in names}
    if FILE_STATES in provider.optional_capabilities:
        assert all(sorted(per_host) == ["/etc/hostname", "/etc/no-such-file"] for per_host in files.values())
        assert all(per_host["/etc/no-such-file"] is None for per_host in files.values()), files
        assert all(re.fullmatch(r"[0-7]+:\d+:\d+ ([0-9a-f]{64}|dir)", value)
                   for per_host in files.values() for value in per_host.values() if value is not None), files
    else:
        assert all(per_host == {} for per_host in files.values())
    assert provider.artifact_notes() is not None
    provider.destroy_hosts(names)
    provider.teardown()
