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
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

SAMPLE_SECONDS = 1.0
WINDOW_SAMPLES = 5
"""The load is that of the last five seconds."""

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

    __slots__ = ("_clock", "_handle", "_last", "_period", "_samples", "_times")

    def __init__(
        self,
        *,
        period: float = SAMPLE_SECONDS,
        window: int = WINDOW_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
        times: Callable[[], tuple[float, float]] = thread_times,
    ) -> None:
        self._period = period
        self._clock = clock
        self._times = times
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)
        """(wall, run, wait) seconds of each of the last periods."""
        self._last: tuple[float, float, float] | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def window_seconds(self) -> float:
        """The wall time the figures cover (0 before the first sample)."""
        return sum(wall for wall, _, _ in self._samples)

    @property
    def share(self) -> float:
        """Share of the window the loop ran or waited for a CPU: 0 (idle) to 1 (never idle)."""
        wall = self.window_seconds
        if wall <= 0:
            return 0.0
        return min(1.0, sum(run + wait for _, run, wait in self._samples) / wall)

    @property
    def waited(self) -> float:
        """The part of :attr:`share` the loop was runnable but another process had the CPU."""
        wall = self.window_seconds
        return sum(wait for _, _, wait in self._samples) / wall if wall > 0 else 0.0

    def sample(self) -> None:
        """Take one sample (the timer's work; call it on the loop's thread)."""
        now = self._clock()
        run, wait = self._times()
        last = self._last
        self._last = (now, run, wait)
        if last is not None and now > last[0]:
            self._samples.append((now - last[0], max(0.0, run - last[1]), max(0.0, wait - last[2])))

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
        return text
