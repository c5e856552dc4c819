"""Shared fixtures: real daemons on short temporary sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

# Imported now, at collection, not lazily by the hypothesis plugin's end-of-run summary: on
# CPython 3.11.7 that late import (through pytest's assertion rewriter's ast.parse) can die with
# "SystemError: AST constructor recursion depth mismatch" after a run that never imported
# hypothesis (e.g. `pytest tests/e2e/test_media_stream.py`), turning a green run red.
import hypothesis  # noqa: F401
import pytest

from daemon.webhooks.eager import install as install_eager
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openai_realtime import FakeRealtime
from tests.harness import DaemonHarness, short_home
from tests.pg_cluster import PgServer, server_for_test, start_server


@pytest.fixture(params=["plain", "eager"])
async def handler_start(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Runs a test twice: aiohttp's handler task started as usual, and stepped at once as the
    daemon does on Python 3.11 (daemon/webhooks/eager.py). For tests of aiohttp apps built
    outside the daemon: timeouts, errors and waits must end the same either way."""
    loop = asyncio.get_running_loop()
    if request.param == "eager" and install_eager(loop) is None:
        pytest.skip("handlers start eagerly on this Python without the daemon's help")
    yield
    loop.set_task_factory(None)


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., DaemonHarness]]:
    """Build (and at teardown stop) daemons: `make_daemon(config_text, start=True)`."""
    made: list[DaemonHarness] = []

    def factory(config: str | None = None, *, start: bool = True) -> DaemonHarness:
        harness = DaemonHarness(short_home(), config)
        made.append(harness)
        if start:
            harness.start()
        return harness

    yield factory
    for harness in made:
        harness.cleanup()


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A running provider simulator: the class the test module names in `SIMULATOR`
    (TwilioSimulator, TelnyxSimulator or PlivoSimulator)."""
    simulator_class = getattr(request.module, "SIMULATOR", None)
    if simulator_class is None:
        raise LookupError(
            f"{request.module.__name__} uses the `sim` fixture: it must say which "
            "simulator in a module constant, e.g. SIMULATOR = TwilioSimulator"
        )
    async with simulator_class() as simulator:
        yield simulator


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    """A running fake OpenAI (TTS, realtime STT, chat)."""
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def model() -> AsyncIterator[FakeRealtime]:
    """A running fake OpenAI Realtime model (realtime voice-to-voice mode)."""
    async with FakeRealtime() as fake:
        yield fake


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session (see tests/pg_cluster.py); skips without one,
    except under CI, where `.ci/run` provides one and its absence is a failure."""
    server = server_for_test(start_server)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty database on the test server."""
    return pg_server.new_database()
