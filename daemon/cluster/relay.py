"""`tail` on any daemon sees every call's events (SPEC section 16).

The store announces each stored event on `voicecall_events` as `seq:daemon id`. A daemon with
`tail` subscribers fetches the events other daemons stored (in batches, oldest first) and
publishes them to its subscribers; one without subscribers reads nothing.
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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for announced events."""
        await self.store.listen(self.channel, self._on_announced)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-relay")

    async def stop(self) -> None:
        """Stop relaying."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_announced(self, payload: str) -> None:
        seq, _, origin = payload.partition(":")
        if origin == self.store.daemon_id or not self._subscribers() or not seq.isdigit():
            return
        self._pending.add(int(seq))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = sorted(self._pending), set()
            try:
                events = await self.store.events_by_seq(batch)
            except StoreError as exc:
                logger.warning(
                    "%d events of other daemons not shown to tail: %s", len(batch), exc.message
                )
                continue
            for event in events:
                self._publish(event)
