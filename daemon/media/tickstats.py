"""How punctual and how busy the one pacing clock is: the media plane's health in two numbers.

Every outbound frame of every stream leaves from the pacer's tick (SPEC 12), so two figures
say whether the event loop keeps up: how late each tick fired (*lateness*: the loop was busy
with something else, or the process waited for its core) and how long the tick's own work took
(*work*: pumping every talking stream; near 20 ms the loop is saturated). They are kept as
fixed histograms (1 ms buckets for lateness, 0.1 ms for work), so recording costs two index
increments per tick and no allocation, and the pacer logs a summary every ``REPORT_TICKS``
ticks while streams are talking (operators see it in the log; bench_daemon_streams reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

BUCKETS = 1000
LATE_BUCKET_SECONDS = 0.001
WORK_BUCKET_SECONDS = 0.0001
REPORT_TICKS = 500
"""10 s of ticks at 20 ms."""


@dataclass(frozen=True, slots=True)
class TickSummary:
    """Percentiles of one reporting period, in milliseconds."""

    ticks: int
    late_p50: float
    late_p99: float
    late_max: float
    work_p50: float
    work_p99: float
    work_max: float


def _percentile(hist: list[int], count: int, pct: float) -> int:
    """The bucket holding the nearest-rank ``pct`` percentile of ``count`` samples."""
    rank = max(1, -(-count * pct // 100))
    seen = 0
    for index, number in enumerate(hist):
        seen += number
        if seen >= rank:
            return index
    return len(hist) - 1


def _highest(hist: list[int]) -> int:
    for index in range(len(hist) - 1, -1, -1):
        if hist[index]:
            return index
    return 0


class TickStats:
    """Lateness and work histograms of the pacer's ticks since the last :meth:`take`."""

    __slots__ = ("count", "late", "work")

    def __init__(self) -> None:
        self.late: list[int] = []
        self.work: list[int] = []
        self.count = 0
        self._reset()

    def _reset(self) -> None:
        self.late = [0] * BUCKETS
        self.work = [0] * BUCKETS
        self.count = 0

    def add(self, late: float, work: float) -> None:
        """One tick: ``late`` and ``work`` in seconds (the last bucket takes anything longer)."""
        i = int(late / LATE_BUCKET_SECONDS)
        self.late[i if 0 <= i < BUCKETS else (0 if i < 0 else BUCKETS - 1)] += 1
        j = int(work / WORK_BUCKET_SECONDS)
        self.work[j if j < BUCKETS else BUCKETS - 1] += 1
        self.count += 1

    def take(self) -> TickSummary:
        """The summary so far; the histograms start over."""
        count = self.count
        late, work = self.late, self.work
        lms, wms = LATE_BUCKET_SECONDS * 1000, WORK_BUCKET_SECONDS * 1000
        summary = TickSummary(
            count,
            _percentile(late, count, 50) * lms,
            _percentile(late, count, 99) * lms,
            _highest(late) * lms,
            _percentile(work, count, 50) * wms,
            _percentile(work, count, 99) * wms,
            _highest(work) * wms,
        )
        self._reset()
        return summary
