"""Retrying cloud calls: exponential backoff with full jitter (the AWS architecture blog's
recommendation), for throttling and server-side errors only.

Every provider classifies its own library's errors into "try again" or "stop"; this module only
owns the timing, so that all providers back off the same way and tests can replace the clock.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """How long to wait before attempt n+1: a random delay in [0, min(cap, base * 2**n)]."""

    attempts: int = 8
    base: float = 0.25
    cap: float = 20.0
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = field(default=random.random)

    def delay(self, attempt: int) -> float:
        return self.rng() * min(self.cap, self.base * (2 ** attempt))


DEFAULT_BACKOFF = Backoff()


def call_with_retry(call: Callable[[], T], *, retryable: Callable[[BaseException], str | None],
                    what: str, log: Callable[[str], None] | None = None,
                    backoff: Backoff | None = None) -> T:
    """Run `call`; when it raises and `retryable(err)` names a reason (e.g. "throttled"), wait
    and try again, up to `backoff.attempts` tries. Other errors propagate at once; the last
    retryable error propagates when the tries run out."""
    backoff = backoff or DEFAULT_BACKOFF
    attempt = 0
    while True:
        try:
            return call()
        except Exception as err:  # classified right below; anything else re-raises
            reason = retryable(err)
            attempt += 1
            if reason is None or attempt >= backoff.attempts:
                raise
            wait = backoff.delay(attempt)
            if log:
                log(f"{what}: {reason}; retry {attempt}/{backoff.attempts - 1} in {wait:.2f}s")
            backoff.sleep(wait)
