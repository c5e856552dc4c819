"""Telnyx media streaming end to end: the real daemon against the Telnyx simulator and a fake
OpenAI.

With `[streaming] enabled` and an OpenAI TTS, conversation calls are dialled (and inbound calls
answered) with `stream_url` + bidirectional RTP PCMU; the simulator opens that websocket like
Telnyx once the call is answered. The greeting arrives as mu-law `media` frames followed by a
`mark`, and `continue` takes its transcript from the streaming STT (the fake OpenAI realtime
API): no `actions/speak`, no `transcription_start`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.configs import telnyx_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness, query, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.telnyx import SimCall, SimStream, TelnyxSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TelnyxSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
FRAMES_PER_SENTENCE = 50
"""The fake TTS says 1 s of audio per request: 8000 mu-law bytes, 50 frames of 20 ms."""


def config(sim: TelnyxSimulator, openai: FakeOpenAI, extra: str = "") -> str:
    """Telnyx at the simulator, streaming on, TTS and STT at the fake OpenAI;
    `extra`: top-level keys."""
    return telnyx_config(sim, openai, top=extra, hangup_delay=0, streaming=True)


def live_stream(call: SimCall) -> SimStream | None:
    """The call's open stream, if any."""
    return call.streams[-1] if call.streams and call.streams[-1].open else None


def assert_sentence_frames(frames: list[bytes]) -> None:
    """One fake-TTS sentence: 50 frames of 160 bytes of (non-silent) mu-law."""
    assert len(frames) == FRAMES_PER_SENTENCE
    assert all(len(frame) == 160 for frame in frames)
    assert len(set(b"".join(frames))) > 16  # a sine, not a constant silence byte


def assert_stream_fields(fields: dict[str, Any], stream_url: str, *, dial: bool) -> None:
    """Bidirectional RTP in PCMU, the token in the URL; on dial also as stream_auth_token and
    an explicit 8 kHz (`actions/answer` defines neither field)."""
    assert fields["stream_url"].split("?")[0] == stream_url
    token = query(fields["stream_url"])["token"]
    assert fields["stream_bidirectional_mode"] == "rtp"
    assert fields["stream_codec"] == fields["stream_bidirectional_codec"] == "PCMU"
    if dial:
        assert fields["stream_auth_token"] == token
        assert fields["stream_bidirectional_sampling_rate"] == 8000
    else:
        assert "stream_auth_token" not in fields
        assert "stream_bidirectional_sampling_rate" not in fields


async def test_telnyx_stream_greeting_frames_and_a_continue_turn_via_stt(
    sim: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The dial asks for a bidirectional RTP stream; the greeting is streamed with a mark; a
    `continue` returns the streaming STT's transcript; Telnyx never speaks or transcribes."""
    d = await start(make_daemon, config(sim, openai))
    status = await rpc(d, "daemon.status")
    greeting, prompt = "Hi, it is the clinic.", "Does Tuesday work?"
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": greeting, "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and live_stream(sim.only_call()) is not None)
    call = sim.only_call()
    stream = call.streams[0]
    assert_stream_fields(sim.commands("dial")[0].body, status["streamUrl"], dial=True)

    await sim.wait_for(lambda: len(stream.marks()) >= 1, timeout=10)
    kinds = [kind for kind, _ in stream.events]
    assert kinds == ["audio"] * FRAMES_PER_SENTENCE + ["mark"]
    assert_sentence_frames(stream.audio())
    assert [r["input"] for r in openai.tts_requests] == [greeting]
    await openai.wait_for(lambda: bool(openai.connections))  # STT is listening

    turn = asyncio.create_task(rpc(d, "voicecall.continue", {"callId": call_id, "message": prompt}))
    await sim.wait_for(lambda: len(stream.marks()) >= 2, timeout=10)
    assert_sentence_frames(stream.audio()[FRAMES_PER_SENTENCE:])
    await sim.send_audio(call, b"\x7f" * 1600)  # the caller's 200 ms, PCMU
    await openai.wait_for(lambda: len(openai.current.audio) >= 1600)
    await openai.transcript_completed("Yes, Tuesday works.")
    assert await asyncio.wait_for(turn, 10) == {
        "success": True,
        "transcript": "Yes, Tuesday works.",
    }

    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert [(t["speaker"], t["text"]) for t in record["transcript"]] == [
        ("bot", greeting),
        ("bot", prompt),
        ("user", "Yes, Tuesday works."),
    ]
    assert call.spoken == []
    assert sim.commands("speak") == [] and sim.commands("transcription_start") == []

    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    await sim.wait_for(lambda: call.ended and not stream.open)
    assert len(sim.commands("hangup")) == 1


async def test_telnyx_inbound_answer_streams_the_greeting_and_notify_is_not_streamed(
    sim: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An inbound call is answered with the stream fields and greeted over the stream; the
    caller's words reach the transcript via STT. A notify call keeps `actions/speak`."""
    extra = 'inbound_policy = "open"\ninbound_greeting = "Hello, clinic here."\n'
    d = await start(make_daemon, config(sim, openai, extra))
    status = await rpc(d, "daemon.status")
    call = await sim.inbound("+14155550123", FROM, status["webhookUrl"])
    await sim.wait_for(lambda: live_stream(call) is not None)
    stream = call.streams[0]
    assert_stream_fields(sim.commands("answer")[0].body, status["streamUrl"], dial=False)
    await sim.wait_for(lambda: len(stream.marks()) >= 1, timeout=10)
    assert_sentence_frames(stream.audio())
    assert call.spoken == [] and sim.commands("speak") == []
    call_id = (await rpc(d, "voicecall.status"))["calls"][0]["callId"]

    await openai.wait_for(lambda: bool(openai.connections))
    await sim.send_audio(call, b"\x7f" * 1600)  # 200 ms: STT hears audio in 100 ms appends
    await openai.wait_for(lambda: len(openai.current.audio) >= 1600)
    await openai.transcript_completed("I need a table")

    def heard() -> bool:
        transcript = d.call_record(call_id)["transcript"]
        return any(t["speaker"] == "user" and t["text"] == "I need a table" for t in transcript)

    await asyncio.to_thread(wait_for, heard, 10.0, 0.02, "the caller's words")
    await sim.caller_hangup(call, "normal_clearing", "caller")
    await asyncio.to_thread(d.wait_state, call_id, "hangup-user", timeout=10)
    await sim.wait_for(lambda: not stream.open)

    notify = (await rpc(d, "voicecall.initiate", {"message": "Your table is ready", "to": TO}))[
        "callId"
    ]
    await asyncio.to_thread(d.wait_state, notify, "hangup-bot", timeout=10)
    dial = sim.commands("dial")[0].body
    assert "stream_url" not in dial
    placed = next(c for c in sim.calls.values() if c.direction == "outgoing")
    assert placed.spoken == ["Your table is ready"] and placed.streams == []


async def test_telnyx_streaming_failed_falls_back_to_telnyx_speech_at_once(
    sim: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`streaming.failed` (the schema sample's shape): the greeting waiting for the stream is
    spoken with `actions/speak` at once, not after the 10 s stream wait, and a `continue` is
    heard through `transcription_start` (language inside transcription_engine_config)."""
    sim.stream_outcome = "failed"
    sim.replies = ["Yes, Tuesday works."]
    d = await start(make_daemon, config(sim, openai))
    greeting = "Hi, it is the clinic."
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": greeting, "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.delivered("streaming.failed")), timeout=10)
    failed_at = time.monotonic()
    await sim.wait_for(lambda: bool(sim.commands("speak")), timeout=10)
    assert time.monotonic() - failed_at < 3.0  # not the 10 s STREAM_WAIT_SECONDS
    call = sim.only_call()
    assert call.spoken == [greeting]
    answer = await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Tuesday?"})
    assert answer == {"success": True, "transcript": "Yes, Tuesday works."}
    (transcribe,) = sim.commands("transcription_start")
    assert transcribe.body["transcription_engine_config"] == {
        "transcription_engine": "Telnyx",
        "language": "en",
    }
    assert sim.schema_errors == []
    # At most the greeting synthesised ahead for the stream (daemon/media/prefetch.py), given
    # up when the stream failed; nothing said on a stream after the fall-back.
    assert [request["input"] for request in openai.tts_requests] in ([], [greeting])


async def test_telnyx_stream_error_frame_hands_the_turn_to_telnyx(
    sim: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A stream `error` frame (Telnyx's rate_limit_reached sample) while a `continue` listens:
    the stream is dropped without ending the call and Telnyx transcribes the caller at once."""
    d = await start(make_daemon, config(sim, openai))
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Hi, it is the clinic.", "to": TO, "mode": "conversation"},
        )
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and live_stream(sim.only_call()) is not None)
    call = sim.only_call()
    stream = call.streams[0]
    await sim.wait_for(lambda: len(stream.marks()) >= 1, timeout=10)
    turn = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    )
    await sim.wait_for(lambda: len(stream.marks()) >= 2, timeout=10)
    await until_state(d, call_id, "listening")
    await sim.stream_error(call)
    await sim.wait_for(lambda: call.transcribing, timeout=5)
    await sim.wait_for(lambda: not stream.open, timeout=5)
    await sim.caller_says(call, "Yes, Tuesday works.")
    answer = await asyncio.wait_for(turn, 10)
    assert answer == {"success": True, "transcript": "Yes, Tuesday works."}
    assert sim.commands("speak") == []  # the prompt had been heard: not said twice
    assert (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]["state"] not in (
        "completed",
        "hangup-bot",
        "hangup-user",
    )
    # Later speech goes through Telnyx's own voice.
    assert await rpc(d, "voicecall.speak", {"callId": call_id, "message": "Booked."}) == {
        "success": True
    }
    await sim.wait_for(lambda: call.spoken == ["Booked."], timeout=5)


async def test_telnyx_stream_error_while_speaking_says_it_again_with_telnyx(
    sim: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An `error` frame while the prompt is still streaming: the prompt is said again with
    `actions/speak` (turn client_state) and the caller's answer comes by transcription."""
    d = await start(make_daemon, config(sim, openai))
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Hi, it is the clinic.", "to": TO, "mode": "conversation"},
        )
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and live_stream(sim.only_call()) is not None)
    call = sim.only_call()
    stream = call.streams[0]
    await sim.wait_for(lambda: len(stream.marks()) >= 1, timeout=10)
    prompt = "Does Tuesday work?"
    turn = asyncio.create_task(rpc(d, "voicecall.continue", {"callId": call_id, "message": prompt}))
    await sim.wait_for(lambda: len(stream.audio()) > FRAMES_PER_SENTENCE + 5, timeout=10)
    assert len(stream.marks()) == 1  # the prompt is still playing
    await sim.stream_error(call, "100004", "invalid_media", "Invalid media")
    await sim.wait_for(lambda: call.spoken == [prompt], timeout=5)
    await sim.wait_for(lambda: call.transcribing, timeout=5)
    await sim.caller_says(call, "Yes.")
    assert await asyncio.wait_for(turn, 10) == {"success": True, "transcript": "Yes."}
