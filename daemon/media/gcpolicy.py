"""Keep CPython's full garbage collections from stalling every media stream at once.

One process is one event loop: a 20-50 ms full collection at a few hundred streams is a gap
in every call's audio (bench/bench_streams.py measured 19-55 ms pauses lining up with the
largest gaps). Streams are long-lived, so once new streams have settled we move everything
alive into the permanent generation (`gc.freeze()`), which full collections skip: measured
pauses fell to 2-4 ms. Frozen cycles are never collected, so when the last stream closes
(the daemon is idle) we unfreeze and collect, reclaiming whatever became garbage meanwhile.

Young collections stall the loop too, for a reason of their own. CPython collects the young
generation when allocations of tracked objects exceed deallocations by 700. A daemon carrying
streams frees old objects (played frames' chunks, answered futures, finished turns) about as
fast as it makes new ones, so that count hardly moves while the young generation keeps
growing, and the collection that finally comes walks seconds' worth of survivors: up to 25 ms
at 400 calls, a gap in every stream at once. So while streams are live the young generation is
also collected every :data:`YOUNG_EVERY_SECONDS`, which keeps each collection near 1 ms.

While streams are live, :class:`GcPauses` times every collection (``gc.callbacks``) for the
media health line: a collection stops the one loop, so it is one of the loop stalls that line
reports, and the only one no profiler attributes (a sampler shows the Python line whose
allocation set it off). docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

FREEZE_DELAY_SECONDS = 1.0
"""Wait for a burst of new streams to settle before freezing (one freeze per burst)."""
YOUNG_EVERY_SECONDS = 0.1
"""How often the young generation is collected while streams are live (measured at 400 calls:
the longest collection in a 20 s window 13-25 ms without; with, 1-4 ms in 54 of 58 runs and
an older generation's 23-39 ms in the others, for 0.3-0.4 % more of the core)."""


class GcPauses:
    """How long the collector ran, in all and at worst, since the last :meth:`take`."""

    __slots__ = ("_clock", "_started", "count", "total", "worst")

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.count = 0
        self.total = 0.0
        """Seconds."""
        self.worst = 0.0
        """Seconds."""

    def install(self) -> None:
        """Start timing collections (once, however often called)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never overlap (the interpreter runs one at a time, on whichever thread
        # allocated), so one start time serves every thread.
        if phase == "start":
            self._started = self._clock()
            return
        elapsed = self._clock() - self._started
        self.count += 1
        self.total += elapsed
        if elapsed > self.worst:
            self.worst = elapsed

    def take(self) -> tuple[int, float, float]:
        """(collections, seconds in all, seconds at worst) since the last call; then zero."""
        taken = (self.count, self.total, self.worst)
        self.count, self.total, self.worst = 0, 0.0, 0.0
        return taken


class GcPolicy:
    """Debounced `gc.freeze()` as streams bind, young collections on a timer while they are
    live, full unfreeze-and-collect when idle."""

    def __init__(
        self, delay: float = FREEZE_DELAY_SECONDS, young_every: float = YOUNG_EVERY_SECONDS
    ) -> None:
        self.delay = delay
        self.young_every = young_every
        self._timer: asyncio.TimerHandle | None = None
        self._young: asyncio.TimerHandle | None = None
        self.freezes = 0
        self.pauses = GcPauses()
        """Timed while any stream is live (the only time a pause is heard)."""

    def stream_bound(self) -> None:
        """A stream started: freeze once the burst of starts is over; collect the young
        generation on a timer while streams are live."""
        self.pauses.install()
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = loop.call_later(self.delay, self._freeze)
        if self._young is None:
            self._young = loop.call_later(self.young_every, self._collect_young)

    def _collect_young(self) -> None:
        gc.collect(0)
        self._young = asyncio.get_running_loop().call_later(self.young_every, self._collect_young)

    def _freeze(self) -> None:
        self._timer = None
        gc.freeze()
        self.freezes += 1

    def idle(self) -> None:
        """No stream is live: give frozen objects back to the collector and collect."""
        self._stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if gc.get_freeze_count():
            gc.unfreeze()
            gc.collect()

    def _stop(self) -> None:
        """No more young collections on the timer, nor timing of collections."""
        self.pauses.remove()
        if self._young is not None:
            self._young.cancel()
            self._young = None

    def close(self) -> None:
        """Stop the pending freeze, the young collections and the timing."""
        self._stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
