"""`tail` on any daemon sees every call's events (SPEC section 16).

The store announces each stored event on `voicecall_events` as `seq:daemon id`. A daemon with
`tail` subscribers fetches the events other daemons stored (in batches, oldest first) and
publishes them to its subscribers; one without subscribers reads nothing. Announcements made while
this daemon's listening connection was down (a database restart, a network cut) never reach it:
when the connection is back, the relay reads what the others stored after the newest event it had
heard of, so `tail` misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from daemon.errors import StoreError
from daemon.model.events import CallEvent

logger = logging.getLogger(__name__)


class EventStore(Protocol):
    """What the relay needs of the store."""

    daemon_id: str

    async def listen(self, channel: str, on_message: Callable[[str], None]) -> None:
        """Call `on_message` with every message sent to `channel`."""

    async def events_by_seq(self, seqs: list[int]) -> list[CallEvent]:
        """Stored events by number, oldest first."""

    async def last_seq(self) -> int:
        """The number of the newest stored event."""

    async def events_after(self, seq: int, limit: int) -> list[CallEvent]:
        """Events other daemons stored, numbered above `seq`, oldest first."""

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the listening connection is back after being lost."""


CATCH_UP_BATCH = 500
"""Events read per query when catching up after a lost connection."""


class EventRelay:
    """Publishes here the events other daemons stored."""

    def __init__(
        self,
        store: EventStore,
        channel: str,
        subscribers: Callable[[], int],
        publish: Callable[[CallEvent], None],
    ) -> None:
        self.store = store
        self.channel = channel
        self._subscribers = subscribers
        self._publish = publish
        self._pending: set[int] = set()
        self._heard = 0
        """The newest event number announced (by any daemon, this one included)."""
        self._gap_from: int | None = None
        """Set when the connection came back: the newest event heard of before it was lost."""
        self._published: set[int] = set()
        """Events the last catch-up published (their announcements may still come)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for announced events."""
        self._heard = await self.store.last_seq()
        await self.store.listen(self.channel, self._on_announced)
        self.store.on_reconnect(self._reconnected)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-relay")

    async def stop(self) -> None:
        """Stop relaying."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_announced(self, payload: str) -> None:
        seq, _, origin = payload.partition(":")
        if not seq.isdigit():
            return
        self._heard = max(self._heard, int(seq))
        if origin == self.store.daemon_id or not self._subscribers():
            return
        self._pending.add(int(seq))
        self._wake.set()

    def _reconnected(self) -> None:
        """The connection is back (not yet listening): catch up from the newest event heard."""
        if self._gap_from is None:
            self._gap_from = self._heard
        self._wake.set()

    async def _catch_up(self, since: int) -> None:
        """Publish what the others stored after event `since` (the newest heard of before the
        connection was lost)."""
        self._published = set()
        if not self._subscribers():
            return
        while True:
            events = await self.store.events_after(since, CATCH_UP_BATCH)
            for event in events:
                self._publish(event)
                self._published.add(event.seq)
                since = event.seq
            if len(events) < CATCH_UP_BATCH:
                return

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._gap_from is not None:
                since, self._gap_from = self._gap_from, None
                try:
                    await self._catch_up(since)
                except StoreError as exc:
                    logger.warning(
                        "events other daemons stored while this one's connection was down "
                        "not shown to tail: %s",
                        exc.message,
                    )
            batch, self._pending = sorted(self._pending - self._published), set()
            if not batch:
                continue
            try:
                events = await self.store.events_by_seq(batch)
            except StoreError as exc:
                logger.warning(
                    "%d events of other daemons not shown to tail: %s", len(batch), exc.message
                )
                continue
            for event in events:
                self._publish(event)
