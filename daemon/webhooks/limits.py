"""Pre-authentication limits of the webhook server: body size, body time, requests per address.

They run before a signature is checked, so they are what bounds the cost an unauthenticated
client can impose: at most a few unverified requests at once per address, each holding at most
64 KiB, and failures that keep counting for a while so failing fast buys nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

NO_REMOTE_BUCKET = "__voice_call_no_remote__"
"""Requests without a socket address (a Unix socket, a test transport) share one bucket."""


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    """The numbers SPEC 8 fixes, kept in one place so tests and benchmarks can name them."""

    max_body_bytes: int = 64 * 1024
    """A larger body answers 413; no more than this (plus one read) is ever buffered."""
    max_in_flight_per_address: int = 8
    """Unverified requests in flight plus failures within `failure_penalty_seconds` per
    address; one more answers 429."""
    failure_penalty_seconds: float = 10.0
    """How long a request that failed verification keeps counting against its address."""
    body_timeout_seconds: float = 10.0
    """A body that does not arrive in time answers 408 (slow-sender defence)."""
    replay_ttl_seconds: float = 600.0
    """How long a verified delivery's key (and reply) is remembered."""


class InFlightLimiter:
    """Counts requests in flight per key; `acquire` refuses past the limit.

    A plain dict of counters: entries are dropped at zero, so idle addresses cost nothing.
    """

    __slots__ = ("_counts", "_limit")

    def __init__(self, limit: int) -> None:
        """Allow at most `limit` requests at once per key."""
        self._limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str | None) -> str | None:
        """Take a slot; return the bucket to release, or None when the key is at its limit."""
        bucket = key or NO_REMOTE_BUCKET
        count = self._counts.get(bucket, 0)
        if count >= self._limit:
            return None
        self._counts[bucket] = count + 1
        return bucket

    def release(self, bucket: str) -> None:
        """Give back a slot taken by `acquire`."""
        count = self._counts.get(bucket, 0) - 1
        if count > 0:
            self._counts[bucket] = count
        else:
            self._counts.pop(bucket, None)

    def in_flight(self, key: str | None) -> int:
        """Requests currently in flight for a key."""
        return self._counts.get(key or NO_REMOTE_BUCKET, 0)


class AddressLimiter:
    """The SPEC 8 step 3 limit: unverified requests in flight plus recent failures per address.

    A request holds a slot of its address only until its signature is checked. A verified one
    gives it back at once and never counts again (a provider's burst is never refused for its
    own success); one that fails verification (or is too large or too slow) keeps counting for
    `penalty_seconds`. So a flood of bogus requests exhausts its own address's budget and no
    other, and cannot keep a slot by failing fast either.

    Memory stays bounded by the addresses active within the last `penalty_seconds`: expired
    failures are swept at most once per window.
    """

    __slots__ = ("_clock", "_failures", "_in_flight", "_limit", "_next_sweep", "_penalty")

    def __init__(
        self,
        limit: int,
        *,
        penalty_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """At most `limit` unverified-in-flight plus failed-within-`penalty_seconds` per key."""
        self._limit = limit
        self._penalty = penalty_seconds
        self._clock = clock
        self._in_flight = InFlightLimiter(limit)
        self._failures: dict[str, deque[float]] = {}
        self._next_sweep = clock() + penalty_seconds

    def _recent_failures(self, bucket: str, now: float) -> int:
        times = self._failures.get(bucket)
        if times is None:
            return 0
        while times and times[0] <= now:
            times.popleft()
        if not times:
            del self._failures[bucket]
            return 0
        return len(times)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._penalty
        for bucket in [b for b, times in self._failures.items() if times[-1] <= now]:
            del self._failures[bucket]

    def acquire(self, key: str | None) -> str | None:
        """Take a slot before verification; None (answer 429) when the address is over."""
        bucket = key or NO_REMOTE_BUCKET
        now = self._clock()
        self._sweep(now)
        used = self._in_flight.in_flight(bucket) + self._recent_failures(bucket, now)
        if used >= self._limit:
            return None
        return self._in_flight.acquire(bucket)

    def release(self, bucket: str, *, failed: bool) -> None:
        """Give the slot back; a failed request keeps counting for `penalty_seconds`."""
        self._in_flight.release(bucket)
        if failed:
            times = self._failures.setdefault(bucket, deque(maxlen=self._limit))
            times.append(self._clock() + self._penalty)

    def in_use(self, key: str | None) -> int:
        """Unverified requests in flight plus failures still counting, for a key."""
        bucket = key or NO_REMOTE_BUCKET
        return self._in_flight.in_flight(bucket) + self._recent_failures(bucket, self._clock())
