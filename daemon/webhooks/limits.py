"""Pre-authentication limits of the webhook server: body size, body time, requests in flight.

They run before a signature is checked, so they are what bounds the cost an unauthenticated
client can impose: at most a few requests at once per address, each holding at most 64 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_REMOTE_BUCKET = "__voice_call_no_remote__"
"""Requests without a socket address (a Unix socket, a test transport) share one bucket."""


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    """The numbers SPEC 8 fixes, kept in one place so tests and benchmarks can name them."""

    max_body_bytes: int = 64 * 1024
    """A larger body answers 413; no more than this (plus one read) is ever buffered."""
    max_in_flight_per_address: int = 8
    """The ninth concurrent request from one address answers 429."""
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
