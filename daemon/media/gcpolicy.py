"""Keep CPython's full garbage collections from stalling every media stream at once.

One process is one event loop: a 20-50 ms full collection at a few hundred streams is a gap
in every call's audio (bench/bench_streams.py measured 19-55 ms pauses lining up with the
largest gaps). Streams are long-lived, so once new streams have settled we move everything
alive into the permanent generation (`gc.freeze()`), which full collections skip: measured
pauses fell to 2-4 ms. Frozen cycles are never collected, so when the last stream closes
(the daemon is idle) we unfreeze and collect, reclaiming whatever became garbage meanwhile.
"""

from __future__ import annotations

import asyncio
import gc

FREEZE_DELAY_SECONDS = 1.0
"""Wait for a burst of new streams to settle before freezing (one freeze per burst)."""


class GcPolicy:
    """Debounced `gc.freeze()` as streams bind, full unfreeze-and-collect when idle."""

    def __init__(self, delay: float = FREEZE_DELAY_SECONDS) -> None:
        self.delay = delay
        self._timer: asyncio.TimerHandle | None = None
        self.freezes = 0

    def stream_bound(self) -> None:
        """A stream started: freeze once the burst of starts is over."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._freeze)

    def _freeze(self) -> None:
        self._timer = None
        gc.freeze()
        self.freezes += 1

    def idle(self) -> None:
        """No stream is live: give frozen objects back to the collector and collect."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if gc.get_freeze_count():
            gc.unfreeze()
            gc.collect()

    def close(self) -> None:
        """Stop the pending freeze."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
