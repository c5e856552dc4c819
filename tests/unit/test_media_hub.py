"""The media hub (tokens, admission, binding, grace end) and a session with fake speech parts."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from daemon.errors import MediaError, SpeechError
from daemon.media.hub import MediaHub
from daemon.media.protocols import TwilioFraming
from daemon.media.session import CLOSE_TRY_AGAIN, MediaSession
from daemon.media.wire import SEND_BUFFER_LIMIT, FrameWriter, text_frame
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState


@dataclass
class Calls:
    records: dict[str, CallRecord] = field(default_factory=dict)
    events: list[ProviderEvent] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    async def get(self, call_id: str) -> CallRecord | None:
        for record in self.records.values():
            if call_id in (record.call_id, record.provider_call_id):
                return record
        return None

    async def end(self, call_id: str) -> None:
        self.ended.append(call_id)

    async def apply(self, events: Sequence[ProviderEvent]) -> None:
        self.events.extend(events)

    def add(
        self,
        call_id: str,
        pcid: str | None,
        direction: Direction = Direction.INBOUND,
        mode: CallMode = CallMode.CONVERSATION,
    ) -> CallRecord:
        record = CallRecord(
            call_id, "twilio", direction, mode, "+1555", "+1556", provider_call_id=pcid
        )
        self.records[call_id] = record
        return record


@dataclass
class Transport:
    """A transport that keeps what is written and can pretend the peer stopped reading."""

    data: bytearray = field(default_factory=bytearray)
    buffered: int = 0
    closing: bool = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def messages(self) -> list[dict[str, object]]:
        out, view = [], bytes(self.data)
        while view:
            size, start = view[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(view[2:4], "big"), 4
            out.append(json.loads(view[start : start + size]))
            view = view[start + size :]
        return out


class FakeTts:
    name = "fake"

    def __init__(self, frames: int = 10, fail: bool = False) -> None:
        self.frames = frames
        self.fail = fail
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        if self.fail:
            raise SpeechError("fake TTS failed")
        yield b"\x01" * (160 * self.frames - 7)  # not frame-aligned: the tail is padded


def make_hub(calls: Calls, tts: FakeTts | None = None) -> MediaHub:
    return MediaHub(calls.apply, calls=calls, tts=tts, end_grace_seconds=0.01)


def make_session(
    hub: MediaHub,
    transport: Transport,
    call_id: str = "c1",
    closes: list[tuple[int, str]] | None = None,
) -> MediaSession:
    framing = TwilioFraming()
    framing.decode('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}')
    sink = closes if closes is not None else []
    return MediaSession(
        hub,
        call_id=call_id,
        provider_call_id="CA1",
        stream_id="MZ1",
        framing=framing,
        writer=FrameWriter(transport),
        close=lambda code, reason: sink.append((code, reason)),
    )


async def test_tokens_are_16_random_bytes_base64url_per_call() -> None:
    """A token is 16 bytes base64url; the same call gets the same token until revoked."""
    hub = make_hub(Calls())
    token = hub.issue_token("c1", "CA1")
    assert len(base64.urlsafe_b64decode(token + "==")) == 16
    assert "=" not in token and "+" not in token and "/" not in token
    assert hub.issue_token("c1", "CA1") == token
    assert hub.issue_token("c2", "CA2") != token
    hub.revoke("c1")
    assert hub.issue_token("c1", "CA1") != token


async def test_admission_finds_the_call_and_checks_the_token() -> None:
    """By callId parameter, by provider id, or through the engine; wrong or revoked refused."""
    calls = Calls()
    calls.add("c1", "CA1")
    hub = make_hub(calls)
    token = hub.issue_token("c1", None)
    assert (await hub.admit("CA1", {"token": token}, None)) is not None  # via engine lookup
    assert (await hub.admit(None, {"token": token, "callId": "c1"}, None)) is not None
    assert (await hub.admit("CA1", {}, token)) is not None  # ?token= fallback
    assert await hub.admit("CA1", {"token": token[:-1]}, None) is None
    assert await hub.admit("CA1", {"token": ""}, None) is None
    assert await hub.admit("CA-other", {"token": token}, None) is None
    calls.records["c1"].state = CallState.COMPLETED
    calls.records["c1"].ended_at = "2026-01-01T00:00:00Z"
    assert await hub.admit("CA1", {"token": token}, None) is None  # ended calls are refused
    hub.revoke("c1")
    assert await hub.admit("CA1", {"token": token}, None) is None


@pytest.mark.parametrize(
    ("direction", "mode", "suppress", "barge_in"),
    [
        (Direction.INBOUND, CallMode.CONVERSATION, False, True),
        (Direction.OUTBOUND, CallMode.CONVERSATION, True, True),
        (Direction.OUTBOUND, CallMode.NOTIFY, False, False),
    ],
)
async def test_admission_sets_the_barge_in_rules(
    direction: Direction, mode: CallMode, suppress: bool, barge_in: bool
) -> None:
    """Outbound greetings are not interruptible; notify calls never are."""
    calls = Calls()
    calls.add("c1", "CA1", direction, mode)
    hub = make_hub(calls)
    admission = await hub.admit("CA1", {"token": hub.issue_token("c1", "CA1")}, None)
    assert admission is not None
    assert (admission.suppress_first, admission.barge_in) == (suppress, barge_in)


async def test_bind_wait_and_grace_end() -> None:
    """wait_session resolves on bind; a closed stream ends the call unless one comes back."""
    calls = Calls()
    hub = make_hub(calls, FakeTts())
    hub.issue_token("c1", "CA1")
    waiting = asyncio.ensure_future(hub.wait_session("c1"))
    first = make_session(hub, Transport())
    hub.bind(first)
    assert await asyncio.wait_for(waiting, 1) is first
    # a reconnect within the grace keeps the call
    hub.unbind(first, end_call=True)
    second = make_session(hub, Transport())
    hub.bind(second)
    await asyncio.sleep(0.03)
    assert calls.ended == [] and hub.session("c1") is second
    hub.unbind(second, end_call=True)
    async with asyncio.timeout(1):
        while not calls.ended:
            await asyncio.sleep(0.005)
    assert calls.ended == ["c1"]


async def test_revoking_a_call_fails_speech_still_waiting_for_its_stream() -> None:
    """A call that ends before its stream started: a waiter gets a MediaError naming the call
    (the speech waiting on it is dropped with a log line instead of waiting forever)."""
    hub = make_hub(Calls(), FakeTts())
    hub.issue_token("c1", "CA1")
    waiting = asyncio.ensure_future(hub.wait_session("c1"))
    await asyncio.sleep(0)
    hub.revoke("c1")
    with pytest.raises(MediaError, match="call c1 ended before its media stream started"):
        await asyncio.wait_for(waiting, 1)


async def test_a_newer_stream_replaces_the_older_one() -> None:
    """Binding a second stream closes the first; its close does not end the call."""
    calls = Calls()
    hub = make_hub(calls)
    hub.issue_token("c1", "CA1")
    closes: list[tuple[int, str]] = []
    old = make_session(hub, Transport(), closes=closes)
    hub.bind(old)
    hub.bind(make_session(hub, Transport()))
    assert closes == [(1000, "Replaced by a newer stream")] and old.replaced
    hub.unbind(old, end_call=True)
    await asyncio.sleep(0.03)
    assert calls.ended == []


async def test_speak_streams_sentences_each_followed_by_a_mark() -> None:
    """Two sentences: two syntheses, frames of 160 bytes, a mark after each, then idle on echo."""
    tts = FakeTts(frames=3)
    hub = make_hub(Calls(), tts)
    transport = Transport()
    session = make_session(hub, transport)
    await session.speak("First one. Second one.", turn_token="t")
    async with asyncio.timeout(2):
        while len([m for m in transport.messages() if m["event"] == "mark"]) < 2:
            await asyncio.sleep(0.005)
    assert tts.texts == ["First one.", "Second one."]
    messages = transport.messages()
    assert [m["event"] for m in messages] == ["media"] * 3 + ["mark"] + ["media"] * 3 + ["mark"]
    payloads = [
        base64.b64decode(m["media"]["payload"])  # type: ignore[index]
        for m in messages
        if m["event"] == "media"
    ]
    assert all(len(p) == 160 for p in payloads) and payloads[2].endswith(b"\xff" * 7)
    assert session.speaking
    for mark in [m for m in messages if m["event"] == "mark"]:
        session.feed(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": mark["mark"]}))
    await asyncio.wait_for(session.wait_idle(), 1)
    assert session.history[-1].heard_text == "First one. Second one."
    await session.close()


async def test_synthesis_failure_is_reported_and_does_not_hang() -> None:
    """A TTS error becomes a call.error event; wait_idle still returns."""
    calls = Calls()
    hub = make_hub(calls, FakeTts(fail=True))
    session = make_session(hub, Transport())
    await session.speak("Hello.", turn_token=None)
    await asyncio.wait_for(session.wait_idle(), 1)
    async with asyncio.timeout(1):
        while not calls.events:
            await asyncio.sleep(0.005)
    assert calls.events[0].type is EventType.ERROR
    assert session.history[-1].interrupted and session.history[-1].heard_text == ""


async def test_speak_needs_tts_and_an_open_stream() -> None:
    """Without a TTS engine (provider voice only) or after close, speak is refused."""
    session = make_session(make_hub(Calls()), Transport())
    with pytest.raises(MediaError, match="no TTS engine"):
        await session.speak("Hello.", turn_token=None)
    session = make_session(make_hub(Calls(), FakeTts()), Transport())
    await session.close()
    with pytest.raises(MediaError, match="has closed"):
        await session.speak("Hello.", turn_token=None)


async def test_a_peer_that_stops_reading_is_closed_1013() -> None:
    """A send buffer over 1 MiB asks for close 1013 and stops writing."""
    transport = Transport(buffered=SEND_BUFFER_LIMIT + 1)
    closes: list[tuple[int, str]] = []
    session = make_session(make_hub(Calls(), FakeTts()), transport, closes=closes)
    await session.speak("Hello.", turn_token=None)
    async with asyncio.timeout(1):
        while not closes:
            await asyncio.sleep(0.005)
    assert closes == [(CLOSE_TRY_AGAIN, "Backpressure: send buffer exceeded")]
    written = len(transport.data)
    session.clear()
    assert len(transport.data) == written
    await session.close()


def test_text_frame_lengths() -> None:
    """Unmasked server text frames with 7-bit, 16-bit and 64-bit lengths."""
    assert text_frame("a" * 125)[:2] == bytes((0x81, 125))
    assert text_frame("a" * 126)[:4] == bytes((0x81, 126, 0, 126))
    assert text_frame("a" * 65536)[:10] == bytes((0x81, 127)) + (65536).to_bytes(8, "big")
    assert text_frame("é") == bytes((0x81, 2)) + "é".encode()


def test_writer_stops_at_a_closing_transport() -> None:
    """Nothing is written once the transport is closing."""
    transport = Transport(closing=True)
    writer = FrameWriter(transport)
    assert not writer.write(b"x") and transport.data == bytearray()
    assert not FrameWriter(None).write(b"x")
