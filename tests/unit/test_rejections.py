"""Rejection summaries: bounded log lines per window, whatever the traffic."""

from __future__ import annotations

import logging

import pytest

from daemon.webhooks.rejections import OTHER_ADDRESSES, RejectionLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_first_rejection_at_once_then_one_summary_per_window(caplog) -> None:
    """A flood of one kind: one line at once, then one count line per 10 s window."""
    clock = Clock()
    log = RejectionLog(logging.getLogger("t"), clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            log.record("webhook", 401, "invalid signature", "1.2.3.4")
        assert len(lines(caplog)) == 1
        clock.now += 10
        for _ in range(500):
            log.record("webhook", 401, "invalid signature", "1.2.3.4")
        clock.now += 10
        log.flush()
    assert lines(caplog) == [
        "webhook rejected with 401: invalid signature (client 1.2.3.4); more like it are "
        "summarised every 10 s",
        "webhook rejected with 401: invalid signature (client 1.2.3.4): 999 more in the last 10 s",
        "webhook rejected with 401: invalid signature (client 1.2.3.4): 500 more in the last 10 s",
    ]


def test_rotating_addresses_fold_into_one_kind(caplog) -> None:
    """Past `max_keys` distinct kinds in a window, new addresses share one line."""
    clock = Clock()
    log = RejectionLog(logging.getLogger("t"), clock=clock, max_keys=4)
    with caplog.at_level(logging.WARNING):
        for i in range(10_000):
            log.record("webhook", 401, "bad", f"10.0.{i // 256}.{i % 256}")
        log.flush()
    assert len(lines(caplog)) == 4 + 2
    assert OTHER_ADDRESSES in lines(caplog)[-1] and "9995 more" in lines(caplog)[-1]
