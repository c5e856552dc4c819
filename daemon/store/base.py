"""The store interface the engine and webhook server use (SPEC sections 6 and 12).

The embedded default is SQLite (:mod:`daemon.store.sqlite`); a Redis-backed store is the planned
second backend for several daemons behind a load balancer. Nothing outside `daemon/store/` may
reach past this interface to SQLite itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from daemon.engine.record import CallRecord
from daemon.events import CallEvent, EventType
from daemon.providers.base import WebhookReply
from daemon.store.health import StoreFault


class Store(Protocol):
    """Durable calls, events, processed provider-event ids and the webhook replay cache.

    Every method raises :class:`daemon.errors.StoreError` when the store cannot do it (disk
    full, I/O error, locked); a failed `record()` changed nothing.
    """

    @property
    def fault(self) -> StoreFault | None:
        """Why writes fail right now, or None when the last write succeeded."""

    async def open(self) -> None:
        """Create or migrate the schema."""

    async def close(self) -> None:
        """Flush and release."""

    async def record(
        self,
        call: CallRecord,
        event_type: EventType | None,
        data: dict[str, Any] | None = None,
        *,
        dedupe_key: str | None = None,
    ) -> CallEvent | None:
        """Atomically save the call snapshot and append one event (if `event_type` is given).

        Returns the stored event, or None when `dedupe_key` was already processed (then nothing
        is written).
        """

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call by our id."""

    async def find_by_provider_id(self, provider_call_id: str) -> CallRecord | None:
        """One call by the provider's id."""

    async def list_calls(self, *, live: bool | None = None, limit: int = 50,
                         since: str | None = None) -> list[CallRecord]:
        """Calls, newest first; `live=True` only live ones, `False` only ended ones; `since`
        (ISO 8601 UTC as written by `utc_now`) keeps calls started at or after it."""

    async def recent_events(self, call_id: str | None, limit: int) -> list[CallEvent]:
        """The last `limit` events (of one call, or of all), oldest first."""

    async def turn_latencies(self, last: int) -> list[tuple[float, float]]:
        """(turn latency ms, listen wait ms) of the last `last` completed turns."""

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """The first delivery's reply for a verified identity seen in its window, or None."""

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember the reply of a verified delivery under its identity."""
