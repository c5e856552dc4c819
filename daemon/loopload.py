"""How loaded the daemon's event loop is: the share of the last few seconds it ran or waited
for a CPU, read from the kernel's accounting of the loop's own thread.

One event loop carries every call (SPEC 12): once it is busy all the time, every stream's
frames leave late and every call degrades at once (at 500 streamed calls on one core of the
benchmark machine, none stayed healthy). The engine refuses new calls above
``max_loop_load`` instead (:meth:`daemon.engine.core.EngineCore._overloaded`), so the calls
already up keep their voice.

The figure is the loop thread's run time plus its run-queue wait
(``/proc/thread-self/schedstat``) over the wall time of the window: time the loop wanted a
CPU. Its run time alone would miss a loop starved by other processes on its core, which
delays frames just as much. Where that file does not exist (not Linux) the thread's CPU time
stands in. A sample a second, five kept: one long collection or one burst of call set-ups
does not refuse anybody, a core full for seconds does.

Five seconds is also how late the figure is. Calls arriving 50 a second are 250 calls the
window has not yet seen, enough to fill the core before it shows (the benchmark's burst of
500 was all taken, at 0.8). So each sample also keeps how many calls were live (``units``),
and :attr:`LoopLoad.projected` adds what the calls taken since cost: the window's own slope
of load against calls (fitted over its samples) times the calls above the window's mean. A
slope, not the mean load per call: during a ramp the window's load also holds the set-up
work of the calls arriving, which stops when they stop coming.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE_SECONDS = 1.0
WINDOW_SAMPLES = 5
"""The load is that of the last five seconds."""
MIN_SLOPE_SPREAD = 10.0
"""Calls the window's samples must differ by before their slope is believed: below that a
collection or a webhook burst in one second would read as a huge cost per call."""

_SCHEDSTAT = "/proc/thread-self/schedstat"


def thread_times() -> tuple[float, float]:
    """(run, wait) seconds of the calling thread: on CPU, and runnable but not running."""
    try:
        with open(_SCHEDSTAT, "rb") as f:
            run, wait, _ = f.read().split()
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return time.thread_time(), 0.0


class LoopLoad:
    """Samples the event loop's thread every ``period`` seconds while started.

    The clock and the thread's times are injectable, so tests drive samples by hand.
    """

    __slots__ = (
        "_clock",
        "_handle",
        "_last",
        "_period",
        "_samples",
        "_times",
        "_units",
        "taken",
    )

    def __init__(
        self,
        *,
        period: float = SAMPLE_SECONDS,
        window: int = WINDOW_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
        times: Callable[[], tuple[float, float]] = thread_times,
        units: Callable[[], int] = lambda: 0,
    ) -> None:
        self._period = period
        self._clock = clock
        self._times = times
        self._units = units
        self._samples: deque[_Sample] = deque(maxlen=window)
        self._last: tuple[float, float, float, int] | None = None
        """(clock, run, wait, units) when the last sample was taken."""
        self._handle: asyncio.TimerHandle | None = None
        self.taken = 0
        """Samples taken so far (the media pacer's widening waits for whole ones)."""

    @property
    def latest(self) -> float:
        """The newest sample's load (0 before the first): the last second alone."""
        return min(1.0, self._samples[-1].share) if self._samples else 0.0

    @property
    def window_seconds(self) -> float:
        """The wall time the figures cover (0 before the first sample)."""
        return sum(s.wall for s in self._samples)

    @property
    def share(self) -> float:
        """Share of the window the loop ran or waited for a CPU: 0 (idle) to 1 (never idle)."""
        wall = self.window_seconds
        if wall <= 0:
            return 0.0
        return min(1.0, sum(s.run + s.wait for s in self._samples) / wall)

    @property
    def waited(self) -> float:
        """The part of :attr:`share` the loop was runnable but another process had the CPU."""
        wall = self.window_seconds
        return sum(s.wait for s in self._samples) / wall if wall > 0 else 0.0

    @property
    def projected(self) -> float:
        """:attr:`share` with the calls taken since the window's middle counted at its slope.

        The least-squares slope of each sample's load against its mean live calls, weighted by
        the samples' wall time, is believed only when the calls moved by
        :data:`MIN_SLOPE_SPREAD` or more, and never above the window's load per call (so load
        that is not the calls' is not multiplied by them). Calls gone since count nothing: the
        figure only ever errs towards waiting.
        """
        share = self.share
        samples = self._samples
        wall = self.window_seconds
        if len(samples) < 2 or wall <= 0:
            return share
        mean_units = sum(s.units * s.wall for s in samples) / wall
        grown = self._units() - mean_units
        spread = max(s.units for s in samples) - min(s.units for s in samples)
        if grown <= 0 or spread < MIN_SLOPE_SPREAD:
            return share
        spread_sq = sum(s.wall * (s.units - mean_units) ** 2 for s in samples)
        covar = sum(s.wall * (s.units - mean_units) * s.share for s in samples)
        slope = min(max(0.0, covar / spread_sq), share / mean_units)
        return min(1.0, share + slope * grown)

    def sample(self) -> None:
        """Take one sample (the timer's work; call it on the loop's thread)."""
        now = self._clock()
        run, wait = self._times()
        units = self._units()
        last = self._last
        self._last = (now, run, wait, units)
        if last is not None and now > last[0]:
            wall = now - last[0]
            busy_run, busy_wait = max(0.0, run - last[1]), max(0.0, wait - last[2])
            self._samples.append(_Sample(wall, busy_run, busy_wait, (units + last[3]) / 2))
            self.taken += 1

    def start(self) -> None:
        """Sample every period from now on (on the running loop)."""
        if self._handle is None:
            self.sample()
            self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def stop(self) -> None:
        """Stop sampling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self.sample()
        self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def describe(self) -> str:
        """The figure as a person reads it: ``93 % busy over the last 5 s``."""
        text = f"{self.share:.0%} busy over the last {self.window_seconds:.0f} s"
        if self.waited >= 0.01:
            text += f" ({self.waited:.0%} of it waiting for a CPU other processes had)"
        projected = self.projected
        if projected >= self.share + 0.005:
            text += f", {projected:.0%} counting the calls taken since"
        return text


@dataclass(frozen=True, slots=True)
class _Sample:
    """One period of the loop thread's accounting."""

    wall: float
    run: float
    wait: float
    units: float
    """Live calls over the period (the mean of its ends)."""

    @property
    def share(self) -> float:
        return (self.run + self.wait) / self.wall
