"""Keep CPython's garbage collections from stalling every media stream at once.

One process is one event loop: a 20-50 ms collection at a few hundred streams is a gap in
every call's audio at once. Two kinds of collection stalled the daemon.

Young collections: CPython collects the young generation when allocations of tracked objects
exceed deallocations by 700. A daemon carrying streams frees old objects (played frames'
chunks, answered futures, finished turns) about as fast as it makes new ones, so that count
hardly moves while the young generation keeps growing, and the collection that finally comes
walks seconds' worth of survivors: up to 25 ms at 400 calls. So while streams are live the
young generation is collected every :data:`YOUNG_EVERY_SECONDS` (about 1 ms each).

Older collections: each timed young collection promotes its survivors (whatever has lived
100 ms: a call's TTS request, its turns, its transcript) into the middle generation and counts
one more for it, and nothing else collects that generation while allocations balance, so it
held every survivor of 10-30 s until a burst of allocations (a new call) set off a collection
of it, and promotions in turn grew the oldest generation, whose full collections walked every
object made since start-up: 10-60 ms at 400 calls, several in a 20 s window. So each timed
young collection is followed by ``gc.freeze()``, which moves the survivors into the permanent
generation that no automatic collection walks (a list splice, no walk). The middle and oldest
generations then hold at most 100 ms of survivors and their collections take a millisecond.

Freezing loses nothing that reference counting frees: a frozen object that dies is freed as
any other. Only reference cycles among frozen objects wait, so the media plane leaves none
behind a call: the session, its playback and its sockets break theirs when the stream ends
(measured with 10 calls a second hung up and replaced at 200 live: no cyclic garbage at all;
before, about 125 objects and 27 KB per ended call, kept for good by a daemon that always
carries some call). Cycles made elsewhere (a library's, an error's traceback) are reclaimed by
unfreezing and collecting everything, one pause in every call proportional to the heap (85 ms
at 200 live calls, 150 ms at 400): when the last stream closes (nobody hears it), and while
streams stay live after :data:`RECLAIM_AFTER_ENDED` ended streams (a threshold that doubles
while reclaims find next to nothing, up to :data:`RECLAIM_AFTER_ENDED_MAX`) or
:data:`RECLAIM_EVERY_SECONDS`, whichever comes first. The log says what each one found.

While streams are live, :class:`GcPauses` times every collection (``gc.callbacks``) for the
media health line: a collection stops the one loop, so it is one of the loop stalls that line
reports, and the only one no profiler attributes (a sampler shows the Python line whose
allocation set it off). docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

YOUNG_EVERY_SECONDS = 0.1
"""How often the young generation is collected while streams are live (measured at 400 calls:
the longest collection in a 20 s window 13-25 ms without; with, 1-4 ms in 54 of 58 runs and
an older generation's 23-39 ms in the others, for 0.3-0.4 % more of the core)."""
RECLAIM_AFTER_ENDED = 1000
"""Ended streams after which frozen cycles are first reclaimed while streams stay live."""
RECLAIM_AFTER_ENDED_MAX = 64000
"""The most that threshold doubles to while reclaims find less than an object per stream."""
RECLAIM_EVERY_SECONDS = 3600.0
"""At the longest between reclaims while streams are live."""


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
    """Young collections on a timer while streams are live, each freezing what survived it;
    the frozen cycles of ended streams reclaimed in batches; everything unfrozen and
    collected when idle."""

    def __init__(
        self,
        young_every: float = YOUNG_EVERY_SECONDS,
        *,
        reclaim_after_ended: int = RECLAIM_AFTER_ENDED,
        reclaim_every: float = RECLAIM_EVERY_SECONDS,
    ) -> None:
        self.young_every = young_every
        self.reclaim_after_ended = reclaim_after_ended
        self.reclaim_every = reclaim_every
        self._young: asyncio.TimerHandle | None = None
        self._ended = 0
        """Streams ended since the last reclaim (or the last idle)."""
        self._reclaimed_at = 0.0
        self._threshold = reclaim_after_ended
        """Ended streams that set off the next reclaim (see :func:`next_threshold`)."""
        self.reclaims = 0
        self.pauses = GcPauses()
        """Timed while any stream is live (the only time a pause is heard)."""

    def stream_bound(self) -> None:
        """A stream started: collect the young generation on a timer while streams are live."""
        self.pauses.install()
        if self._young is None:
            loop = asyncio.get_running_loop()
            self._reclaimed_at = loop.time()
            self._young = loop.call_later(self.young_every, self._collect_young)

    def stream_ended(self, live: int) -> None:
        """A stream closed and ``live`` remain: idle at none, else count it for a reclaim."""
        if live == 0:
            self.idle()
        else:
            self._ended += 1

    def _collect_young(self) -> None:
        loop = asyncio.get_running_loop()
        if self._ended >= self._threshold or loop.time() - self._reclaimed_at >= self.reclaim_every:
            self._reclaim(loop.time())
        else:
            gc.collect(0)
            gc.freeze()
        self._young = loop.call_later(self.young_every, self._collect_young)

    def _reclaim(self, now: float) -> None:
        """Unfreeze, collect everything, freeze again: the frozen cycles of ended streams."""
        ended, self._ended = self._ended, 0
        self._reclaimed_at = now
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.reclaims += 1
        self._threshold = next_threshold(self._threshold, found, ended, self.reclaim_after_ended)
        logger.info(
            "media gc: reclaimed %d objects (%d streams ended since the last time) in %.0f ms;"
            " next after %d more",
            found,
            ended,
            (time.perf_counter() - started) * 1000,
            self._threshold,
        )

    def idle(self) -> None:
        """No stream is live: give frozen objects back to the collector and collect."""
        self._stop()
        self._ended = 0
        self._threshold = self.reclaim_after_ended
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
        """Stop the young collections and the timing."""
        self._stop()


def next_threshold(threshold: int, found: int, ended: int, base: int) -> int:
    """Ended streams before the next reclaim: doubled (up to :data:`RECLAIM_AFTER_ENDED_MAX`)
    when this one found less than an object per ended stream, as it does when calls leave no
    cycles (a pause for nothing), else back to ``base``, so cycles that do appear are not
    kept long."""
    if found < max(1, ended):
        return min(max(threshold, base) * 2, max(RECLAIM_AFTER_ENDED_MAX, base))
    return base
