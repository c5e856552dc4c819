"""Background tasks with an owner: every task is tracked, logged on failure, cancelled at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from daemon.errors import StoreError

logger = logging.getLogger(__name__)


class TaskSet:
    """The background tasks of one component (engine, media hub, provider)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` in the background; an exception is logged, never lost."""

        async def guard() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                # The store logs its own faults, once a minute: not once per task.
                logger.debug("%s background task %s: %s", self.owner, name, exc.message)
            except Exception:
                logger.exception("%s background task %s failed", self.owner, name)

        task = asyncio.create_task(guard(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, seconds: float) -> None:
        """Give running tasks up to `seconds` to finish on their own."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)

    async def cancel(self) -> None:
        """Cancel every task and wait until they are gone."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
