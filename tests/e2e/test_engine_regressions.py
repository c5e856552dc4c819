"""Call-engine regressions (found in review), in-process with the real engine and store.

The providers here are small test doubles of the Provider interface (not patches of our code).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from daemon.config.model import Config
from daemon.engine.calls import CallEngine
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.providers.base import ProviderContext, RemoteState, RemoteStatus
from daemon.providers.mock import MockProvider
from daemon.store.sqlite import SqliteStore


def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="vc-review-"))


class HangingDialProvider(MockProvider):
    """A carrier whose REST 'create call' never returns (a hung TCP connection)."""

    async def place_call(self, request):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class SlowStatusProvider(MockProvider):
    """A carrier whose status API does not answer (outage while we restart)."""

    name = "mock"

    async def fetch_status(self, call: CallRecord) -> RemoteStatus:
        await asyncio.Event().wait()
        return RemoteStatus(RemoteState.UNKNOWN)


async def _engine(provider: MockProvider, folder: Path, **overrides: object) -> CallEngine:
    config = dataclasses.replace(Config.defaults(folder), **overrides)  # type: ignore[arg-type]
    store = SqliteStore(folder)
    await store.open()
    engine = CallEngine(config, store, provider)
    provider.bind(engine.apply, ProviderContext(config, "", None))
    return engine


async def test_cancelled_initiate_does_not_leave_a_phantom_live_call() -> None:
    """An `initiate` interrupted while dialling (daemon shutdown cancels in-flight RPC handlers,
    or any non-ProviderError) must not leave a live call behind: today the record stays `initiated`
    and live in memory and in the store, counts against max_concurrent_calls, and is restored as
    live after every restart although it was never dialled."""
    folder = _folder()
    engine = await _engine(HangingDialProvider(), folder, max_concurrent_calls=1)
    task = asyncio.create_task(engine.initiate("hello", "+15550001234", "conversation"))
    for _ in range(200):
        if engine.live_count:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    live_in_store = await engine.store.list_calls(live=True)
    try:
        assert engine.live_count == 0, "a cancelled dial left a phantom live call in memory"
        assert live_in_store == [], "a cancelled dial left a live call in the store"
    finally:
        await engine.stop()
        await engine.store.close()


async def test_restart_reconciles_live_calls_concurrently_not_5s_each() -> None:
    """After a restart with N live calls and an unresponsive provider status API, start-up takes
    N x RECONCILE_TIMEOUT_SECONDS (5 s each, sequential): the RPC socket opens only after
    engine.start(), so `voicecall` sees no daemon for that long (8 calls = 40 s)."""
    folder = _folder()
    store = SqliteStore(folder)
    await store.open()
    for i in range(3):
        record = CallRecord(
            f"c{i}",
            "mock",
            Direction.OUTBOUND,
            CallMode.CONVERSATION,
            "+15550000000",
            "+15550001234",
            provider_call_id=f"mock-c{i}",
        )
        record.state = CallState.RINGING
        await store.record(record, EventType.INITIATED)
    await store.close()

    engine = await _engine(SlowStatusProvider(), folder)
    began = time.monotonic()
    try:
        await asyncio.wait_for(engine.start(), 30)
        took = time.monotonic() - began
        assert took < 8.0, f"engine.start() took {took:.1f}s for 3 calls (5 s per call, serial)"
    finally:
        await engine.stop()
        await engine.store.close()


async def test_concurrent_inbound_deliveries_create_one_call() -> None:
    """Two deliveries of a new inbound call's first event that arrive together (provider retry
    with a fresh signature, or two different first events) each pass the `find_by_provider_id
    is None` check across its await, and two call records are made for one provider call."""
    folder = _folder()
    engine = await _engine(MockProvider(), folder, inbound_policy="open")
    offered = ProviderEvent(
        EventType.INITIATED,
        "PROV-1",
        direction=Direction.INBOUND,
        from_number="+15550009999",
        to_number="+15550000000",
    )
    try:
        await asyncio.gather(engine.apply([offered]), engine.apply([offered]))
        calls = [
            c for c in await engine.store.list_calls(limit=10) if c.provider_call_id == "PROV-1"
        ]
        assert engine.live_count == 1, f"{engine.live_count} live calls for one provider call"
        assert len(calls) == 1, f"{len(calls)} stored calls for one provider call"
    finally:
        await engine.stop()
        await engine.store.close()
