"""The event loop's load (daemon.loopload): the window's arithmetic with a hand-driven clock,
and the real thread accounting and timer on a real loop."""

from __future__ import annotations

import asyncio
import time

from daemon.loopload import LoopLoad, thread_times


class Driven:
    """A clock, thread times and live calls the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.run = 0.0
        self.wait = 0.0
        self.calls = 0

    def advance(self, seconds: float, run: float, wait: float = 0.0) -> None:
        self.now += seconds
        self.run += run
        self.wait += wait


def driven(window: int = 5) -> tuple[LoopLoad, Driven]:
    d = Driven()
    load = LoopLoad(
        window=window,
        clock=lambda: d.now,
        times=lambda: (d.run, d.wait),
        units=lambda: d.calls,
    )
    load.sample()
    return load, d


def ramp(
    load: LoopLoad, d: Driven, *, seconds: int, per_second: int, cost: float, setup: float
) -> None:
    """Calls arriving `per_second`, each costing `cost` of the loop once up, plus `setup` of
    the loop while they keep arriving (webhooks, greetings): one sample a second."""
    for _ in range(seconds):
        before = d.calls
        d.calls += per_second
        d.advance(1.0, run=setup + cost * (before + d.calls) / 2)
        load.sample()


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


def test_a_ramp_counts_the_calls_the_window_has_not_seen() -> None:
    """50 calls a second, 0.002 of the loop each and 0.12 of set-up work while they arrive:
    at 325 calls the window reads 0.47 (its calls average 175), while 325 calls cost 0.65
    plus the set-up. The slope (0.002) adds the 150 calls above the window's mean; the set-up
    share is not multiplied by them, as load per call would."""
    load, d = driven()
    ramp(load, d, seconds=6, per_second=50, cost=0.002, setup=0.12)
    d.calls += 25  # half a second into the next one
    assert abs(load.share - 0.12 - 0.002 * 175) < 1e-9
    assert abs(load.projected - (load.share + 0.002 * 150)) < 1e-9
    assert load.projected < load.share * d.calls / 175  # load per call would refuse sooner
    assert load.describe() == "47% busy over the last 5 s, 77% counting the calls taken since"


def test_a_steady_load_projects_itself() -> None:
    """Calls neither arriving nor leaving: the projection is the window's load."""
    load, d = driven()
    d.calls = 400
    for _ in range(5):
        d.advance(1.0, run=0.7)
        load.sample()
    assert load.projected == load.share == 0.7
    assert load.describe() == "70% busy over the last 5 s"


def test_calls_that_ended_do_not_lower_it() -> None:
    """Fewer calls than the window saw: the figure stays the window's, erring towards waiting."""
    load, d = driven()
    ramp(load, d, seconds=5, per_second=50, cost=0.002, setup=0.0)
    d.calls = 10
    assert load.projected == load.share


def test_a_few_calls_and_a_noisy_second_project_nothing() -> None:
    """Three calls and one second of a long collection: the calls did not move by
    MIN_SLOPE_SPREAD, so no slope is believed, and 50 more calls are not charged 0.3 each."""
    load, d = driven()
    for calls, run in ((1, 0.01), (2, 0.01), (3, 0.9), (3, 0.01)):
        d.calls = calls
        d.advance(1.0, run=run)
        load.sample()
    d.calls = 53
    assert load.projected == load.share


def test_load_not_the_calls_is_not_multiplied_by_them() -> None:
    """Load rising faster than the calls (an RPC flood growing while they come): the fitted
    slope, 0.02 a call, is capped at the window's load per call, 0.5 / 55; and the projection
    never passes 1."""
    load, d = driven()
    d.calls = 30
    load.sample()  # a first period of 30 calls makes no sample of its own
    for calls, run in ((40, 0.1), (50, 0.3), (60, 0.5), (70, 0.7), (80, 0.9)):
        d.calls = calls
        d.advance(1.0, run=run)
        load.sample()
    assert abs(load.share - 0.5) < 1e-9
    d.calls = 100
    assert abs(load.projected - (0.5 + 0.5 / 55 * 45)) < 1e-9
    d.calls = 1000
    assert load.projected == 1.0
