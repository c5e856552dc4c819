"""The store's fault log is rate-limited: once when it starts, then at most once a minute."""

from __future__ import annotations

import logging

import pytest

from daemon.store.health import StoreHealth


def test_a_fault_is_logged_once_a_minute_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    health = StoreHealth("/s/voicecall.db", clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="daemon.store.health")
    for _ in range(500):  # a burst within the first minute: one line
        health.failed("OperationalError: database or disk is full")
        now[0] += 0.1
    assert len(caplog.records) == 1 and "refuses writes" in caplog.records[0].getMessage()
    assert health.fault is not None and health.fault.error.endswith("disk is full")
    since = health.fault.since
    now[0] += 60
    health.failed("OperationalError: database or disk is full")
    assert len(caplog.records) == 2
    assert "still refuses writes since " + since in caplog.records[1].getMessage()
    assert "(500 more refused)" in caplog.records[1].getMessage()
    health.succeeded()
    health.succeeded()
    assert health.fault is None
    assert [r.getMessage().split(" (")[0] for r in caplog.records[2:]] == [
        "the store /s/voicecall.db accepts writes again"
    ]
