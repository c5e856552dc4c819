"""Daemon shutdown: a failing step is logged and the next one still runs (issue 14: the steps
used to be wrapped in `contextlib.suppress(Exception)`, so a failure left no trace)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from daemon.app import stop_step


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_failing_step_is_logged_and_the_next_runs(caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    ran: list[str] = []

    async def second() -> None:
        ran.append("second")

    with caplog.at_level(logging.WARNING, logger="daemon.app"):
        first = await stop_step("the tunnel", lambda: asyncio.open_connection("127.0.0.1", port))
        ok = await stop_step("the store", second)
    assert (first, ok, ran) == (False, True, ["second"])
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("stopping the tunnel failed: ConnectionRefusedError")


async def test_cancellation_is_not_swallowed() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.ensure_future(stop_step("the engine", forever))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
