"""The store interface the engine and webhook server use (SPEC sections 6 and 12).

The embedded default is SQLite (:mod:`daemon.store.sqlite`); PostgreSQL
(:mod:`daemon.store.postgres`) is the backend for daemons that outgrow one machine (SPEC section
16). :func:`daemon.store.factory.create_store` picks one from the `store` setting. Nothing outside
`daemon/store/` may reach past this interface to a database; every backend passes the same
contract tests (`tests/store_contract.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: the interface pulls in no engine code at run time
    from collections.abc import Sequence
    from pathlib import Path

    from daemon.model.events import CallEvent, EventType
    from daemon.model.record import CallRecord
    from daemon.model.webhook import WebhookReply
    from daemon.store.health import StoreFault
    from daemon.store.location import StoreLocation


class Store(Protocol):
    """Durable calls, events, processed provider-event ids and the webhook replay cache.

    Every method raises :class:`daemon.errors.StoreError` when the store cannot do it (disk
    full, I/O error, locked); a failed `record()` changed nothing.
    """

    @property
    def fault(self) -> StoreFault | None:
        """Why writes fail right now, or None when the last write succeeded."""

    @property
    def location(self) -> StoreLocation:
        """The `store` setting this store serves (print it with `.display`: password masked)."""

    @property
    def description(self) -> str:
        """Where the data is, for people: the database file, or the URL with its password
        masked (`daemon.status` `store`, log lines, errors)."""

    @property
    def lock_file(self) -> Path | None:
        """The file whose lock this daemon holds while the store is open (`voicecall daemon
        stop` waits for it to be free), or None when the claim lives elsewhere (PostgreSQL: an
        advisory lock on the server, dropped with the daemon's connection)."""

    async def open(self) -> None:
        """Claim the store for this daemon, then create or migrate the schema.

        Raises:
            StoreInUseError: another daemon holds the store.
            StoreError: it cannot be opened, or its schema is newer than this version knows.
        """

    async def close(self) -> None:
        """Flush and release (the claim too); safe to call on a store that never opened."""

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

    async def claim_live_calls(self) -> list[CallRecord]:
        """At start: the live calls this daemon runs from now on, newest first (SQLite: all of
        them; PostgreSQL: its own from before a restart and those of dead daemons)."""

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call by our id."""

    async def find_by_provider_id(self, provider_call_id: str) -> CallRecord | None:
        """One call by the provider's id."""

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 50, since: str | None = None
    ) -> list[CallRecord]:
        """Calls, newest first; `live=True` only live ones, `False` only ended ones; `since`
        (ISO 8601 UTC as written by `utc_now`) keeps calls started at or after it."""

    async def recent_events(self, call_id: str | None, limit: int) -> list[CallEvent]:
        """The last `limit` events (of one call, or of all), oldest first."""

    async def turn_latencies(self, last: int) -> list[tuple[float, float]]:
        """(turn latency ms, listen wait ms) of the last `last` completed turns."""

    async def replay_lookup(self, key: str) -> WebhookReply | None:
        """The first delivery's reply for a verified identity seen in its window, or None."""

    async def replay_claim(self, keys: Sequence[str]) -> WebhookReply | None:
        """The first delivery's reply for any of a delivery's identities, or None: unseen, and
        now this daemon's to handle (a shared store makes that atomic across daemons)."""

    async def replay_release(self, keys: Sequence[str]) -> None:
        """Give back a claim whose delivery could not be handled."""

    async def replay_remember(self, key: str, reply: WebhookReply, ttl_seconds: float) -> None:
        """Remember the reply of a verified delivery under its identity."""
