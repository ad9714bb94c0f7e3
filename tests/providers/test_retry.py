"""Backoff with full jitter: delays stay inside the growing window, only retryable errors are
retried, and the budget ends the tries."""
from __future__ import annotations

import pytest

from provision.providers.retry import Backoff, call_with_retry


class Flaky(Exception):
    pass


def test_delays_are_jittered_within_an_exponential_cap():
    backoff = Backoff(base=0.5, cap=4.0, rng=lambda: 1.0)
    assert [backoff.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert Backoff(base=0.5, cap=4.0, rng=lambda: 0.25).delay(2) == 0.5


def test_retryable_errors_are_retried_then_succeed():
    slept, logs, tries = [], [], []

    def call():
        tries.append(1)
        if len(tries) < 3:
            raise Flaky("slow down")
        return "done"
    backoff = Backoff(attempts=5, base=1.0, cap=10.0, sleep=slept.append, rng=lambda: 0.5)
    result = call_with_retry(call, retryable=lambda e: "throttled" if isinstance(e, Flaky) else None,
                             what="op", log=logs.append, backoff=backoff)
    assert result == "done" and len(tries) == 3
    assert slept == [1.0, 2.0]
    assert logs[0].startswith("op: throttled; retry 1/4")


def test_other_errors_are_not_retried():
    tries = []

    def call():
        tries.append(1)
        raise ValueError("bad request")
    with pytest.raises(ValueError):
        call_with_retry(call, retryable=lambda e: None, what="op", backoff=Backoff(sleep=lambda s: None))
    assert len(tries) == 1


def test_the_budget_ends_the_tries():
    tries = []

    def call():
        tries.append(1)
        raise Flaky("still throttled")
    with pytest.raises(Flaky):
        call_with_retry(call, retryable=lambda e: "throttled", what="op",
                        backoff=Backoff(attempts=4, sleep=lambda s: None))
    assert len(tries) == 4
