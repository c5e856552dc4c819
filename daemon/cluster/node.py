"""One daemon's part in a group sharing a PostgreSQL store: take over the dead's calls.

Every heartbeat interval the node asks the store for the live calls of daemons silent for four
intervals (20 s by default) and hands them to the engine, which reconciles each with the
provider's status API like after a restart and never re-dials. A call goes to exactly one taker
(the store's row lock decides). If this daemon itself was presumed dead (its row was gone when it
next beat), it lets go of every call another daemon owns now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from daemon.errors import StoreError
from daemon.model.record import CallRecord

logger = logging.getLogger(__name__)


class SharedStore(Protocol):
    """What the node needs of the store (:class:`daemon.store.postgres.PostgresStore`)."""

    daemon_id: str
    evicted: asyncio.Event

    async def take_over(self, call_id: str | None = None) -> list[tuple[CallRecord, str | None]]:
        """The live calls of dead daemons (or only `call_id`), now this daemon's, with their
        previous owner."""

    async def owners(self, call_ids: list[str]) -> dict[str, str | None]:
        """Who runs each call now."""


class ClusterNode:
    """The take-over loop of one daemon."""

    def __init__(
        self,
        store: SharedStore,
        interval: float,
        adopt: Callable[[Sequence[CallRecord]], Awaitable[None]],
        live_ids: Callable[[], list[str]],
        release: Callable[[str], None],
    ) -> None:
        self.store = store
        self.interval = interval
        self._adopt = adopt
        self._live_ids = live_ids
        self._release = release
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin checking every interval."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-node")

    async def stop(self) -> None:
        """Stop checking (the engine keeps what it runs)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except StoreError as exc:  # the store's fault is shown in status already
                logger.debug("cluster check skipped: %s", exc.message)
            except Exception:
                logger.exception("cluster check failed")

    async def take_over_call(self, call_id: str) -> bool:
        """Take one call of a dead daemon over now (a request about it arrived) and run it
        under the restart rules; True when this daemon runs it from now on."""
        taken = await self.store.take_over(call_id)
        for record, previous in taken:
            logger.warning(
                "taking over call %s (%s) from daemon %s, silent too long: a request about "
                "it arrived",
                record.call_id,
                record.state,
                previous or "unknown",
            )
        if taken:
            await self._adopt([record for record, _ in taken])
        return bool(taken)

    async def check(self) -> None:
        """Let go of calls taken from this daemon, then take over the dead's."""
        if self.store.evicted.is_set():
            self.store.evicted.clear()
            ids = self._live_ids()
            owners = await self.store.owners(ids) if ids else {}
            for call_id, owner in owners.items():
                if owner != self.store.daemon_id:
                    logger.warning(
                        "call %s is run by daemon %s now; letting go of it", call_id, owner
                    )
                    self._release(call_id)
        taken = await self.store.take_over()
        if not taken:
            return
        for record, previous in taken:
            logger.warning(
                "taking over call %s (%s) from daemon %s, silent too long",
                record.call_id,
                record.state,
                previous or "unknown",
            )
        await self._adopt([record for record, _ in taken])
