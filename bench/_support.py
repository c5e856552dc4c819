"""Shared helpers of the bench programs: a throwaway daemon and percentile arithmetic."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import DaemonHarness, short_home  # noqa: E402

QUIET_MOCK = """
[serve]
port = 0

[mock]
answer_delay_ms = 30
"""
"""The default bench daemon: mock provider, any free webhook port, fast answers."""


def longer_than(items: Sized, count: int) -> Callable[[], bool]:
    """A `wait_for` predicate: `items` has grown past `count` (bound now, not at call time)."""
    return lambda: len(items) > count


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (`pct` in 0..100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    """The 50th percentile, nearest rank."""
    return percentile(values, 50)


@contextlib.contextmanager
def running_daemon(config: str = QUIET_MOCK) -> Iterator[DaemonHarness]:
    """Start a real daemon (`python -m daemon`) on a short temporary home; stop and remove it."""
    harness = DaemonHarness(short_home(), config)
    try:
        harness.start()
        yield harness
    finally:
        harness.cleanup()
