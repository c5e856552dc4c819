"""Synthesis that is ahead of need waits while the event loop is overloaded.

One event loop carries every call (SPEC 12). When more work arrives than the core can do (the
top of a ramp of new calls, a slow spell of a shared machine), everything queues behind
everything else: pacer ticks fire late and webhooks wait for loop turns. Much of the daemon's
work at such a moment is synthesis *ahead of need*: reading TTS audio, resampling, encoding
and framing frames that play 0.5-3 s later (a stream's playback queue holds 3 s). That work
can wait a second or two without anyone hearing it; a webhook, a tick or a new call's first
words cannot.

The pacer's lateness is the overload signal: ticks late by more than :data:`STRAIN_SECONDS` on
average (a moving average, so one long loop turn is not an overload) mean the loop is behind
(:meth:`Deferral.tick`, once per tick). While it is, a speaker with at least
:data:`FLOOR_FRAMES` queued (0.5 s) parks before it reads its next chunk of audio
(:meth:`Deferral.wait`). Parked speakers go on when a tick is on time again, a few per tick
(:data:`RELEASE_PER_TICK`, oldest first) so the catch-up does not overload the loop in turn,
and at once, strain or not, when their queue has played down to the floor: deferring never
makes a gap. A new call's first 0.5 s is never deferred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FLOOR_FRAMES = 25
"""Speech queued (0.5 s of 20 ms frames) below which synthesis never waits."""
STRAIN_SECONDS = 0.010
"""Average tick lateness above which the loop is behind (a loop with room: p99 under 3 ms; a
full one at steady load: 5-10 ms, which the provider's buffer absorbs and is no overload)."""
SMOOTHING = 0.25
"""Weight of the newest tick in the average (about the last four ticks count)."""
RELEASE_PER_TICK = 2
"""Parked speakers let go per tick once the loop keeps up (100 a second): each then
synthesises up to its queue's capacity at once, so letting all go together would be the next
overload."""

Queued = Callable[[], int]
"""A speaker's queue depth in frames, read on every tick while it is parked."""


class Deferral:
    """Parks speakers that are ahead while the pacer is late; lets them go as described above."""

    __slots__ = ("_late", "_parked", "deferred", "strained")

    def __init__(self) -> None:
        self._parked: dict[asyncio.Future[None], Queued] = {}  # insertion order: oldest first
        self._late = 0.0
        self.strained = False
        """Ticks are more than :data:`STRAIN_SECONDS` late on average."""
        self.deferred = 0
        """Times a speaker parked (a figure for tests and diagnostics)."""

    @property
    def parked(self) -> int:
        """Speakers waiting now."""
        return len(self._parked)

    async def wait(self, queued: Queued) -> None:
        """Return at once unless the loop is strained and ``queued()`` is at the floor or above;
        else once let go (see the module text). Cancellation leaves no trace."""
        if not self.strained or queued() < FLOOR_FRAMES:
            return
        parked = asyncio.get_running_loop().create_future()
        self._parked[parked] = queued
        self.deferred += 1
        try:
            await parked
        finally:
            self._parked.pop(parked, None)

    def tick(self, late: float) -> None:
        """The pacer ticked ``late`` seconds after its grid point."""
        self._late += (late - self._late) * SMOOTHING
        self.strained = self._late > STRAIN_SECONDS
        if not self._parked:
            return
        budget = 0 if self.strained else RELEASE_PER_TICK
        for parked, queued in list(self._parked.items()):
            if budget > 0 or queued() < FLOOR_FRAMES:
                budget -= 1
                del self._parked[parked]
                if not parked.done():
                    parked.set_result(None)

    def release_all(self) -> None:
        """Let every parked speaker go (the pacer stopped: no tick will come)."""
        self._late = 0.0
        self.strained = False
        parked, self._parked = self._parked, {}
        for future in parked:
            if not future.done():
                future.set_result(None)
