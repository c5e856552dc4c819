"""A real aiohttp server on 127.0.0.1:0 that a vendor fake runs on, plus shared helpers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from types import TracebackType
from typing import Self

import numpy as np
from aiohttp import web


def sine_pcm16(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> bytes:
    """A mono PCM16LE sine: the audio the TTS fakes "synthesise"."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def split_evenly(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` pieces of (nearly) equal size, deliberately odd-sized."""
    step = max(1, -(-len(data) // parts))
    if step % 2 == 0:
        step += 1  # odd sizes split PCM samples across chunks, as real networks do
    return [data[i : i + step] for i in range(0, len(data), step)]


class FakeServer:
    """Owns the runner; subclasses add routes in ``_routes`` and state of their own."""

    def __init__(self) -> None:
        self._app = web.Application()
        self._routes(self._app)
        self._runner = web.AppRunner(self._app, shutdown_timeout=1.0)
        self._changed = asyncio.Condition()
        self.port = 0

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free port."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Release anything a handler is held on, then stop the server."""
        await self._before_close()
        await self._runner.cleanup()

    async def _before_close(self) -> None:
        """Hook: release held handlers and open sockets so shutdown is quick."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def notify(self) -> None:
        """Wake everyone in :meth:`wait_for` (call after any recorded change)."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every recorded change)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
