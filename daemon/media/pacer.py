"""One pacing clock for every outbound media stream of the daemon.

A sleep per stream would mean 500 timers and 500 task wake-ups every 20 ms; one event loop
serves every call (SPEC 12), so the cost and the jitter of that add up. Instead a single
callback fires on an absolute 20 ms grid (tick n at ``epoch + n * interval``, so lateness in one
tick never shifts the next: no drift) and asks every stream that has something to send to send
what is due. Each stream keeps its own play clock and sends frames a small *lead* ahead of
their play time, so the provider's jitter buffer absorbs a late tick (see
:class:`daemon.media.playback.Playback`). When no stream has work the clock stops: an idle
daemon does not wake up 50 times a second. A grid point that falls due while the loop is
busy reading media streams is pumped between two reads (:meth:`Pacer.poll`), not after the
whole loop turn; its timer then only measures how late the loop runs (the overload signal,
and the health line's stalls).

The grid's period is one frame unless ``streaming.outbound_batch_ms`` says two or three: a
tick then finds that many frames of a stream due and its playback writes them in one system
call (each still its own message, leaving ``lead - interval`` or more before its play time,
which the provider's buffer plays on time). On loopback, and on a busy core, the write and
what the kernel does for it are most of a frame's cost (docs/benchmarks.md). While the loop
is behind, the period widens to ``streaming.outbound_batch_overload_ms`` until it has room
again (:mod:`daemon.media.widening`); the grid restarts at the last point pumped, so it stays
on the lattice of the first.

The clock and the timer are injectable, so tests drive ticks by hand with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections.abc import Callable
from typing import Protocol

from daemon.media.deferral import Deferral
from daemon.media.gcpolicy import GcPauses
from daemon.media.tickstats import REPORT_TICKS, TickStats
from daemon.media.widening import Widening

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
"""One 160-byte mu-law frame plays for 20 ms."""
DEFAULT_LEAD_SECONDS = 0.08
"""How far ahead of its play time a frame is sent (60-160 ms keeps a late tick inaudible)."""


class Paced(Protocol):
    """A stream the pacer drives."""

    def pump(self, now: float) -> bool:
        """Send what is due at ``now``; return True while it still needs ticks."""


class TimerHandle(Protocol):
    """What ``loop.call_at`` returns (only cancel is used)."""

    def cancel(self) -> None: ...


class Pacer:
    """Ticks every ``interval`` seconds on an absolute grid while any stream is active."""

    __slots__ = (
        "_active",
        "_call_at",
        "_clock",
        "_deferred_reported",
        "_due",
        "_epoch",
        "_handle",
        "_index",
        "_monotonic",
        "_poll_due",
        "_polled_reported",
        "_pumped",
        "_real_clock",
        "_tick_cb",
        "deferral",
        "gc_pauses",
        "interval",
        "lateness",
        "loop_late_max",
        "polled",
        "stats",
        "ticks",
        "widening",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        call_at: Callable[[float, Callable[[], None]], TimerHandle] | None = None,
        interval: float = FRAME_SECONDS,
        widening: Widening | None = None,
    ) -> None:
        """Use the running loop's ``time``/``call_at`` unless a clock and timer are given.

        ``interval`` is the grid's period; with ``widening`` it is the period while the loop
        keeps up, and the widening's ``wide`` period while it is behind."""
        self.interval = interval
        self.widening = widening
        """Decides the period tick by tick (None: ``interval`` always)."""
        self._clock = clock
        self._call_at = call_at
        self._active: dict[Paced, None] = {}  # ordered set: streams tick in arrival order
        self._epoch: float | None = None
        self._due = 0.0
        self._index = 0
        self._handle: TimerHandle | None = None
        self._pumped = 0
        """The last grid point pumped (by its timer or by :meth:`poll`)."""
        self._poll_due = math.inf
        """When the grid point after ``_pumped`` is due (what :meth:`poll` checks)."""
        self._tick_cb = self.tick
        self.ticks = 0
        self.polled = 0
        """Ticks run by :meth:`poll` (the rest ran from their timer)."""
        self.loop_late_max = 0.0
        """How late the loop ran the pacer's timer at worst since the last report (seconds):
        its stalls, which ticks run between reads no longer show in their own lateness."""
        self._polled_reported = 0
        self.gc_pauses: GcPauses | None = None
        """The collector's pauses, reported with the ticks (set by the media hub)."""
        self.lateness: array[float] | None = None
        """When recording (see :meth:`record`): how late each tick fired, in seconds."""
        self._real_clock = clock is None
        self._monotonic = time.monotonic if clock is None else clock
        self.stats = TickStats()
        """Always on (two increments a tick): logged every ``REPORT_TICKS`` busy ticks."""
        self.deferral = Deferral()
        """Synthesis ahead of need waits while ticks are late (:mod:`daemon.media.deferral`)."""
        self._deferred_reported = 0

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """The pacing clock (the event loop's monotonic time unless injected)."""
        if self._clock is None:
            loop = asyncio.get_running_loop()
            self._clock = loop.time
            if self._call_at is None:
                self._call_at = loop.call_at
        return self._clock()

    def record(self, enabled: bool = True) -> None:
        """Benchmark hook: keep every tick's lateness (streams keep their own send times)."""
        self.lateness = array("d") if enabled else None

    @property
    def recording(self) -> bool:
        """True while the benchmark hook is on."""
        return self.lateness is not None

    # ------------------------------------------------------------------ streams

    @property
    def active(self) -> int:
        """Streams currently ticking."""
        return len(self._active)

    def align(self, when: float) -> float:
        """The grid point at or before ``when``.

        A stream (re)starts its play clock on the grid so that every tick finds exactly one of
        its frames due. A clock started between grid points would put its frames' due times
        right where ticks land (timers have millisecond resolution and some noise), and such a
        stream would alternate between two frames in one tick and none in the next.
        """
        if self._epoch is None:
            self._epoch = when
            return when
        return self._epoch + math.floor((when - self._epoch) / self.interval + 1e-9) * self.interval

    def is_active(self, stream: Paced) -> bool:
        """True while ``stream`` is ticked."""
        return stream in self._active

    def activate(self, stream: Paced) -> None:
        """Tick ``stream`` from now on (until its ``pump`` returns False)."""
        if stream in self._active:
            return
        self._active[stream] = None
        if self._handle is None:
            self._schedule(self.now())

    def discard(self, stream: Paced) -> None:
        """Stop ticking ``stream`` (its socket closed)."""
        self._active.pop(stream, None)
        if not self._active and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._stopped()

    def close(self) -> None:
        """Stop the clock and forget every stream."""
        self._active.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stopped()

    def _stopped(self) -> None:
        """The clock stopped: nothing is late any more, and the next stream starts at the
        base period."""
        self.deferral.release_all()
        widening = self.widening
        if widening is not None and widening.is_wide:
            widening.reset()
            self._set_period(widening.base)

    # ------------------------------------------------------------------ ticking

    def _schedule(self, now: float) -> None:
        """Arm the next grid point after ``now`` (skipping missed ones after a stall)."""
        if self._epoch is None:
            self._epoch = now
        # The tick after `now` on the grid; never the one just run (float rounding of now).
        index = max(self._index + 1, self._grid_index(now) + 1)
        self._index = index
        assert self._call_at is not None
        self._due = self._epoch + index * self.interval
        self._pumped = max(self._pumped, index - 1)  # an idle spell's grid points are gone
        self._poll_due = self._due
        self._handle = self._call_at(self._due, self._tick_cb)

    def _grid_index(self, when: float) -> int:
        """The grid point at or before ``when``."""
        assert self._epoch is not None
        return math.floor((when - self._epoch) / self.interval + 1e-9)

    def poll(self) -> None:
        """Pump now if a grid point not yet pumped is due.

        Called between the callbacks of a busy loop iteration (after each read of a media
        stream): a timer fires only once the loop has run every callback that was ready
        before it, and at 400 streams one such iteration can take longer than a frame, so
        the frames would leave late by that much, and by varying amounts (jitter). The timer
        still fires for its grid point, and only measures when this pumped already: its
        lateness is the loop's own, the overload signal of :attr:`deferral`.
        """
        if self._handle is None:
            return
        started = self._monotonic()
        if started >= self._poll_due:
            self.polled += 1
            try:
                self._pump(self._grid_index(started), started, started, self._poll_due)
            except Exception:  # a read of one caller's stream must not fail for it
                logger.exception("media pacer: a tick run between reads failed")

    def tick(self) -> None:
        """The grid point's timer: pump every active stream (unless :meth:`poll` did for the
        current grid point), tell the deferral how late the loop is, re-arm while any stream
        remains active."""
        self._handle = None
        # uvloop's clock has millisecond resolution and may fire a timer up to 1 ms before
        # its due time; the tick stands for its grid point, so never run "before" it.
        now = max(self.now(), self._due)
        # The loop's clock (uvloop: 1 ms steps, read once per loop iteration) would hide part
        # of the lateness; the stats read the same monotonic clock at full resolution.
        started = time.monotonic() if self._real_clock else now
        current = self._grid_index(now)
        if self._pumped < current:
            self._pump(current, now, started, self._due)
        loop_late = started - self._due
        self.loop_late_max = max(self.loop_late_max, loop_late)
        self.deferral.tick(loop_late)
        if self.widening is not None:
            self._widen()
        if self._active and self._handle is None:
            self._schedule(now)
        elif not self._active:
            self._stopped()

    def _widen(self) -> None:
        """Take the period the widening asks for, and say so when it changes."""
        widening = self.widening
        assert widening is not None
        period = widening.period()
        if period == self.interval:
            return
        if period > self.interval:
            logger.info(
                "media pacer: the event loop is behind (its last second %.0f%% busy, frames "
                "%.0f ms late on average): each stream's audio is written %.0f ms at a time "
                "until it has room",
                widening.load * 100,
                widening.late * 1000,
                period * 1000,
            )
        else:
            logger.info(
                "media pacer: the event loop has room again (its last second %.0f%% busy): "
                "audio is written %.0f ms at a time",
                widening.load * 100,
                period * 1000,
            )
        self._set_period(period)

    def _set_period(self, period: float) -> None:
        """Change the grid's period from the last grid point pumped on.

        The grid restarts there, so every grid point stays on the lattice of the first one
        (play clocks aligned on either period stay aligned on both), and the grid point
        indices restart with it."""
        if self._epoch is not None:
            self._epoch += self._pumped * self.interval
            self._index -= self._pumped
            self._pumped = 0  # the next `_schedule` arms the timer and the poll on the new grid
        self.interval = period

    def _pump(self, index: int, now: float, started: float, due: float) -> None:
        """Every active stream sends what is due at ``now``: grid point ``index`` (and any
        missed since the one due at ``due``)."""
        assert self._epoch is not None
        self._pumped = index
        self._poll_due = self._epoch + (index + 1) * self.interval
        self.ticks += 1
        lateness = self.lateness
        if lateness is not None:
            lateness.append(now - due)
        active = self._active
        done = [stream for stream in list(active) if not stream.pump(now)]
        for stream in done:
            active.pop(stream, None)
        if self.widening is not None:
            self.widening.observe(started - due)
        if self._real_clock:
            stats = self.stats
            stats.add(started - due, time.monotonic() - started)
            if stats.count >= REPORT_TICKS:
                self._report(len(active))

    def _report(self, streams: int) -> None:
        s = self.stats.take()
        deferred = self.deferral.deferred - self._deferred_reported
        self._deferred_reported = self.deferral.deferred
        polled = self.polled - self._polled_reported
        self._polled_reported = self.polled
        loop_late, self.loop_late_max = self.loop_late_max, 0.0
        collections, gc_total, gc_worst = (
            self.gc_pauses.take() if self.gc_pauses is not None else (0, 0.0, 0.0)
        )
        logger.info(
            "media pacer: %d streams; tick lateness p50 %.0f ms, p99 %.0f ms, max %.0f "
            "ms; tick work p50 %.1f ms, p99 %.1f ms, max %.1f ms (last %d ticks, %d run "
            "between reads); synthesis deferred %d times; timers up to %.0f ms late; "
            "%d collections took %.0f ms, the longest %.1f ms",
            streams,
            s.late_p50,
            s.late_p99,
            s.late_max,
            s.work_p50,
            s.work_p99,
            s.work_max,
            s.ticks,
            polled,
            deferred,
            loop_late * 1000,
            collections,
            gc_total * 1000,
            gc_worst * 1000,
        )
