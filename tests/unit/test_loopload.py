"""The event loop's load (daemon.loopload): the window's arithmetic with a hand-driven clock,
and the real thread accounting and timer on a real loop."""

from __future__ import annotations

import asyncio
import time

from daemon.loopload import LoopLoad, thread_times


class Driven:
    """A clock and thread times the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.run = 0.0
        self.wait = 0.0

    def advance(self, seconds: float, run: float, wait: float = 0.0) -> None:
        self.now += seconds
        self.run += run
        self.wait += wait


def driven(window: int = 5) -> tuple[LoopLoad, Driven]:
    d = Driven()
    load = LoopLoad(window=window, clock=lambda: d.now, times=lambda: (d.run, d.wait))
    load.sample()
    return load, d


def test_no_sample_yet_is_no_load() -> None:
    load, _ = driven()
    assert load.share == 0.0 and load.window_seconds == 0.0


def test_share_is_run_over_wall_of_the_window() -> None:
    load, d = driven()
    for _ in range(3):
        d.advance(1.0, run=0.5)
        load.sample()
    assert load.share == 0.5
    assert load.window_seconds == 3.0
    assert load.describe() == "50% busy over the last 3 s"


def test_only_the_last_samples_count() -> None:
    """A full second long ago does not refuse a call now: the window slides."""
    load, d = driven(window=5)
    d.advance(1.0, run=1.0)
    load.sample()
    for _ in range(5):
        d.advance(1.0, run=0.1)
        load.sample()
    assert abs(load.share - 0.1) < 1e-9


def test_waiting_for_a_cpu_counts_and_is_said() -> None:
    """A loop starved by other processes delays frames as much as a busy one."""
    load, d = driven()
    d.advance(1.0, run=0.3, wait=0.6)
    load.sample()
    assert abs(load.share - 0.9) < 1e-9 and abs(load.waited - 0.6) < 1e-9
    assert "60% of it waiting for a CPU" in load.describe()


def test_share_never_passes_one() -> None:
    """Accounting granularity can make run + wait exceed the wall time a little."""
    load, d = driven()
    d.advance(1.0, run=0.8, wait=0.3)
    load.sample()
    assert load.share == 1.0


def test_a_clock_that_did_not_move_adds_nothing() -> None:
    load, d = driven()
    d.advance(0.0, run=0.1)
    load.sample()
    assert load.window_seconds == 0.0


def test_thread_times_follow_this_thread() -> None:
    """The real accounting: spinning 50 ms adds about that much time running or waiting for a
    CPU (on a busy machine the spin waits part of it); sleeping 50 ms adds next to none."""

    def wanted() -> float:
        run, wait = thread_times()
        return run + wait

    before = wanted()
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        pass
    spun = wanted()
    time.sleep(0.05)
    slept = wanted()
    assert spun - before >= 0.035
    assert slept - spun < 0.02


async def test_a_busy_loop_reads_busy_and_an_idle_one_idle() -> None:
    """On a real loop with a short period: callbacks that hog it read near 1, then sleeping
    reads near 0 once the window has passed."""
    load = LoopLoad(period=0.02, window=3)
    load.start()
    try:
        for _ in range(6):
            end = time.monotonic() + 0.03
            while time.monotonic() < end:
                pass
            await asyncio.sleep(0)
        assert load.share > 0.6, load.describe()
        await asyncio.sleep(0.2)
        assert load.share < 0.3, load.describe()
    finally:
        load.stop()
    samples = load.window_seconds
    await asyncio.sleep(0.06)
    assert load.window_seconds == samples, "stopped, it must not sample"
