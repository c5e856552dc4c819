"""Two frames per write while the event loop is behind, one again once it has room.

Every stream's next frame is a ``write`` of its own, and that system call (with what the
kernel does for it) is the largest single cost of a streamed call (docs/benchmarks.md, "Where
a frame's cost goes"). When the one event loop that carries every call falls behind its core
(a burst of new calls, or a slow spell of a shared machine that makes the same work cost up
to half as much again), every stream's frames leave late together, and past the lead the
callers hear gaps. Writing each stream's next two frames in one call takes about a sixth off
the daemon's CPU per call, often enough to bring a loop that is just over its core back
under it; the provider's buffer plays the pairs on time (each frame is still its own message
and leaves 40 ms or more before its play time). While the loop has room the one-frame period
stays, so frames cross the wire 20 ms apart (SPEC 9, 12).

When to widen, either of two signs, whichever shows first:

- the loop was busy a whole second (:data:`BUSY_AT` or more of the newest second of
  :class:`daemon.loopload.LoopLoad`) and a grid point in it or since was pumped
  :data:`STALL_SECONDS` late or more: past its core, work queues up, and the frames leave in
  bursts behind long loop turns (at 650 calls on one core of the benchmark machine: mostly on
  time, then 200-400 ms late) that no average of their lateness sees in time. Load alone is
  not enough: at 400 calls in a slower spell a one-second sample reaches 95 % now and then
  while every frame leaves within a few milliseconds, and a version that widened on it
  alone turned a jitter p99 of a few ms into 20-23 (docs/benchmarks.md);
- the frames themselves leave late, :data:`BEHIND_SECONDS` or more on average over the last
  ten or so grid points (:meth:`Widening.observe`, each pump's lateness, counted up to
  :data:`COUNTED_UP_TO` so that one long stall alone is not "behind"): time in which the
  process did not run at all (stopped, or the whole guest paused), which its load, the time
  it ran or waited for a CPU, does not show.

Both were meant to fire only where the frames' jitter is past SPEC 12's 10 ms or about to be
(in the benchmark's slow minutes, a loop 92-98 % busy had p99 11-31 ms), but at 400 calls a
busy second with one stall also comes in runs whose jitter is otherwise 3-4 ms, and even
0.2 s of pairs reads as 20 ms there: so ``streaming.outbound_batch_overload_ms`` is off by
default, and this runs only for an operator who turns it on (docs/media.md).
Not the deferral's signal (how late the loop runs the pacer's *timer*): at a few hundred
streams the timer is often 10 ms late while reads run the ticks on time between them
(``Pacer.poll``), and widening then would put pairs on a wire that had none.

When to narrow: the frames are on time again and a second of the loop's load measured wholly
at the wide period (a sample begun after the switch) is under :data:`NARROW_BELOW`: at one
frame per write the same calls cost about a fifth more, which still leaves the loop short
of :data:`BUSY_AT`. A loop between the two keeps the wide period; it never flips with every
tick.
"""

from __future__ import annotations

from typing import Protocol

BEHIND_SECONDS = 0.020
"""Average lateness of the frames' grid points past which the loop is behind: frames that
late on average are past SPEC 12's 10 ms of jitter whatever the period. At 10 ms a loop 88-91 %
busy in a slower minute (grid points late by 4-9 ms at p99, in runs of up to 20 ms) widened
in two of four runs and read 21-22 ms."""
SMOOTHING = 0.1
"""Weight of the newest grid point in that average (about the last ten count)."""
COUNTED_UP_TO = 2 * BEHIND_SECONDS
"""A grid point later than this counts as this late: it takes seven or more in a row to be
behind, where one stall of any length (a collection, a slow disk write) would otherwise do."""
BUSY_AT = 0.95
"""The loop's load over a second at or above which it may be past its core."""
STALL_SECONDS = 0.040
"""A grid point this late (half the playback's lead) with the loop that busy: it is past it."""
NARROW_BELOW = 0.75
"""The loop's load at the wide period under which one frame per write fits again (about
0.9 at one frame per write: below :data:`BUSY_AT`)."""


class RecentLoad(Protocol):
    """The loop's load, a sample a second (:class:`daemon.loopload.LoopLoad`)."""

    @property
    def taken(self) -> int:
        """Samples taken so far."""

    @property
    def latest(self) -> float:
        """The newest sample's load (0 to 1)."""


class Widening:
    """Decides the pacer's period: ``base`` while the loop keeps up, ``wide`` while it is behind."""

    __slots__ = ("_gauge", "_late", "_since", "_stalled", "base", "wide", "widened")

    def __init__(self, base: float, wide: float, gauge: RecentLoad) -> None:
        self.base = base
        self.wide = wide
        self._gauge = gauge
        self._late = 0.0
        self._stalled = -2
        """Samples the gauge had taken at the last stall (:data:`STALL_SECONDS` late)."""
        self._since: int | None = None
        """Samples the gauge had taken when the period widened (None: at ``base``)."""
        self.widened = 0
        """Times the period widened (for tests and diagnostics; the benchmark counts the log
        lines, which a worker process writes too)."""

    @property
    def late(self) -> float:
        """How late the frames' grid points were pumped, on average (seconds)."""
        return self._late

    @property
    def load(self) -> float:
        """The loop's load over its newest second."""
        return self._gauge.latest

    @property
    def behind(self) -> bool:
        """The loop is past its core: the frames leave :data:`BEHIND_SECONDS` late or more on
        average, or its newest second was :data:`BUSY_AT` busy or more and a grid point in it
        or since was :data:`STALL_SECONDS` late."""
        if self._late >= BEHIND_SECONDS:
            return True
        gauge = self._gauge
        return gauge.latest >= BUSY_AT and self._stalled >= gauge.taken - 1

    def observe(self, late: float) -> None:
        """A grid point was pumped ``late`` seconds after it fell due."""
        self._late += (min(late, COUNTED_UP_TO) - self._late) * SMOOTHING
        if late >= STALL_SECONDS:
            self._stalled = self._gauge.taken

    @property
    def is_wide(self) -> bool:
        """True while the wide period is in force."""
        return self._since is not None

    def period(self) -> float:
        """The period for the next grid point."""
        behind = self.behind
        if self._since is None:
            if not behind:
                return self.base
            self._since = self._gauge.taken
            self.widened += 1
            return self.wide
        # The first sample after the switch spans it; the second is the wide period's alone.
        if behind or self._gauge.taken < self._since + 2 or self._gauge.latest >= NARROW_BELOW:
            return self.wide
        self._since = None
        return self.base

    def reset(self) -> None:
        """Back to ``base`` (the clock stopped: no stream, no load)."""
        self._since = None
        self._late = 0.0
        self._stalled = -2
