"""The SQLite store: atomic event+snapshot writes, dedupe, replay memory across reopen."""

from __future__ import annotations

import tempfile
from pathlib import Path

from daemon.model.events import CallMode, Direction, EventType
from daemon.model.record import CallRecord, TranscriptEntry
from daemon.model.state import CallState
from daemon.model.webhook import WebhookReply
from daemon.store.sqlite import SqliteStore


def _record() -> CallRecord:
    return CallRecord(
        "c1",
        "mock",
        Direction.OUTBOUND,
        CallMode.CONVERSATION,
        "+1555",
        "+1666",
        provider_call_id="p1",
    )


async def test_events_snapshots_and_dedupe_survive_reopen() -> None:
    """What was recorded is there after closing and reopening; duplicates are refused."""
    folder = Path(tempfile.mkdtemp(prefix="vc-"))
    store = SqliteStore(folder)
    await store.open()
    call = _record()
    first = await store.record(call, EventType.INITIATED, {"to": "+1666"})
    assert first is not None and first.seq == 1
    call.state = CallState.ANSWERED
    assert await store.record(call, EventType.ANSWERED, dedupe_key="k1") is not None
    assert await store.record(call, EventType.ANSWERED, dedupe_key="k1") is None
    call.transcript.append(TranscriptEntry("t", "user", "hello"))
    await store.record(
        call, EventType.SPEECH, {"transcript": "hello", "turnLatencyMs": 12.5, "listenWaitMs": 3.0}
    )
    await store.replay_remember(
        "twilio:req:abc", WebhookReply(200, "application/xml", b"<R/>"), 600
    )
    await store.close()

    again = SqliteStore(folder)
    await again.open()
    loaded = await again.get_call("c1")
    assert loaded is not None and loaded.state is CallState.ANSWERED
    assert loaded.transcript[0].text == "hello"
    assert (await again.find_by_provider_id("p1")) == loaded
    assert [e.type for e in await again.recent_events("c1", 10)] == [
        EventType.INITIATED,
        EventType.ANSWERED,
        EventType.SPEECH,
    ]
    assert [e.seq for e in await again.recent_events(None, 2)] == [2, 3]
    assert await again.record(call, EventType.ANSWERED, dedupe_key="k1") is None
    assert await again.turn_latencies(5) == [(12.5, 3.0)]
    assert await again.replay_lookup("twilio:req:abc") == WebhookReply(
        200, "application/xml", b"<R/>"
    )
    assert await again.replay_lookup("twilio:req:other") is None
    assert [c.call_id for c in await again.list_calls(live=True)] == ["c1"]
    await again.close()


async def test_replay_entries_expire() -> None:
    """A remembered delivery is forgotten after its window."""
    now = [1000.0]
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="vc-")), clock=lambda: now[0])
    await store.open()
    await store.replay_remember("k", WebhookReply(), 600)
    assert await store.replay_lookup("k") is not None
    now[0] += 601
    assert await store.replay_lookup("k") is None
    await store.close()
