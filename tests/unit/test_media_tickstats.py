"""The pacer's tick histograms (daemon/media/tickstats.py)."""

from __future__ import annotations

from daemon.media.tickstats import TickStats


def test_percentiles_and_max_in_milliseconds_then_start_over() -> None:
    stats = TickStats()
    for _ in range(98):
        stats.add(0.0004, 0.00105)  # on time; 1.05 ms of work
    stats.add(0.0072, 0.00315)
    stats.add(2.5, 0.5)  # a 2.5 s stall lands in the last bucket
    summary = stats.take()
    assert summary.ticks == 100
    assert (summary.late_p50, summary.late_p99, summary.late_max) == (0.0, 7.0, 999.0)
    assert summary.work_p50 == 1.0 and round(summary.work_p99, 1) == 3.1
    assert round(summary.work_max, 1) == 99.9
    assert stats.count == 0 and stats.take().ticks == 0


def test_a_clock_step_backwards_counts_as_on_time() -> None:
    stats = TickStats()
    stats.add(-0.002, 0.0)
    assert stats.take().late_max == 0.0
