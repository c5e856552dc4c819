"""Plivo audio streams end to end: the real daemon against the Plivo simulator and a fake OpenAI.

With `[streaming] enabled` and an OpenAI TTS, the answer XML hands the call to our websocket
(`<Stream bidirectional="true" keepCallAlive="true">`), the greeting arrives as mu-law
`playAudio` frames followed by a `checkpoint`, and a `continue` gets its transcript from the
streaming STT (the fake OpenAI realtime API), never from `<GetInput>`.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from tests.configs import plivo_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness, query, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.simulators.plivo import PlivoSimulator, SimCall, SimStream

pytestmark = pytest.mark.e2e
SIMULATOR = PlivoSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
FRAMES_PER_SENTENCE = 50
"""The fake TTS says 1 s of audio per request: 8000 mu-law bytes, 50 frames of 20 ms."""


def config(sim: PlivoSimulator, openai: FakeOpenAI, extra: str = "") -> str:
    """Plivo at the simulator, streaming on, TTS and STT at the fake OpenAI;
    `extra`: top-level keys."""
    return plivo_config(sim, openai, top=extra, streaming=True)


def live_stream(call: SimCall) -> SimStream | None:
    """The call's open stream, if any."""
    return call.streams[-1] if call.streams and call.streams[-1].open else None


def assert_sentence_frames(frames: list[bytes]) -> None:
    """One fake-TTS sentence: 50 frames of 160 bytes of (non-silent) mu-law."""
    assert len(frames) == FRAMES_PER_SENTENCE
    assert all(len(frame) == 160 for frame in frames)
    assert len(set(b"".join(frames))) > 16  # a sine, not a constant silence byte


async def test_plivo_stream_greeting_frames_and_a_continue_turn_via_stt(
    sim: PlivoSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Answer XML is a bidirectional `<Stream>`; the greeting is streamed; `continue` returns
    the streaming STT's transcript; nothing goes through `<Speak>`, `<GetInput>` or a transfer."""
    d = await start(make_daemon, config(sim, openai))
    greeting, prompt = "Hi, it is the clinic.", "Does Tuesday work?"
    call_id = (
        await rpc(d, "voicecall.initiate", {"message": greeting, "to": TO, "mode": "conversation"})
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and live_stream(sim.only_call()) is not None)
    call = sim.only_call()
    stream = call.streams[0]

    root = ET.fromstring(call.documents[0])
    assert [child.tag for child in root] == ["Stream"]
    element = root[0]
    assert element.get("bidirectional") == "true"
    assert element.get("keepCallAlive") == "true"
    assert element.get("contentType") == "audio/x-mulaw;rate=8000"
    status = await rpc(d, "daemon.status")
    assert stream.url.split("?")[0] == status["streamUrl"]
    assert set(query(stream.url)) == {"token", "callId"}
    assert query(stream.url)["callId"] == call_id

    # The greeting: one sentence of frames, then its checkpoint (answered with playedStream).
    await sim.wait_for(lambda: len(stream.checkpoints()) >= 1, timeout=10)
    kinds = [kind for kind, _ in stream.events]
    assert kinds == ["audio"] * FRAMES_PER_SENTENCE + ["checkpoint"]
    assert_sentence_frames(stream.audio())
    assert [r["input"] for r in openai.tts_requests] == [greeting]
    await openai.wait_for(lambda: bool(openai.connections))  # STT is listening

    turn = asyncio.create_task(rpc(d, "voicecall.continue", {"callId": call_id, "message": prompt}))
    await sim.wait_for(lambda: len(stream.checkpoints()) >= 2, timeout=10)
    assert_sentence_frames(stream.audio()[FRAMES_PER_SENTENCE:])
    await sim.send_audio(call, b"\x7f" * 1600)  # the caller's 200 ms, mu-law
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
    assert call.spoken == [] and len(call.documents) == 1
    assert sim.recorded("POST", f"/Call/{call.call_uuid}/") == []  # no transfer
    assert not [dl for dl in sim.deliveries if query(dl.url).get("flow") == "getinput"]

    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    await sim.wait_for(lambda: call.ended and not stream.open)
    assert call.end_source == "API Request"


async def test_plivo_inbound_stream_greets_hears_and_barge_in_clears(
    sim: PlivoSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An inbound call is streamed from its answer XML: greeting frames, the caller's words via
    STT in the transcript, and caller speech over a long reply sends `clearAudio`."""
    extra = 'inbound_policy = "open"\ninbound_greeting = "Hello, clinic here."\n'
    d = await start(make_daemon, config(sim, openai, extra))
    url = (await rpc(d, "daemon.status"))["webhookUrl"]
    call = await sim.inbound("+14155550123", FROM, url)
    await sim.wait_for(lambda: live_stream(call) is not None)
    stream = call.streams[0]
    await sim.wait_for(lambda: len(stream.checkpoints()) >= 1, timeout=10)
    assert_sentence_frames(stream.audio())
    assert call.spoken == []
    call_id = (await rpc(d, "voicecall.status"))["calls"][0]["callId"]

    await openai.wait_for(lambda: bool(openai.connections))
    await sim.send_audio(call, b"\x7f" * 1600)  # 200 ms: STT hears audio in 100 ms appends
    await openai.wait_for(lambda: len(openai.current.audio) >= 1600)
    await openai.transcript_completed("I need a table")

    def heard() -> bool:
        transcript = d.call_record(call_id)["transcript"]
        return any(t["speaker"] == "user" and t["text"] == "I need a table" for t in transcript)

    await asyncio.to_thread(wait_for, heard, 10.0, 0.02, "the caller's words")

    long_reply = "We have a table at seven. We also have one at nine. Which one would you like?"
    assert await rpc(d, "voicecall.speak", {"callId": call_id, "message": long_reply}) == {
        "success": True
    }
    before = len(stream.audio())
    await sim.wait_for(lambda: len(stream.audio()) >= before + 10, timeout=10)
    await openai.speech_started()
    await sim.wait_for(lambda: stream.cleared >= 1, timeout=5)
    kinds = [kind for kind, _ in stream.events]
    assert "audio" not in kinds[kinds.index("clear") :]  # nothing played after the clear
    assert len(stream.audio()) < before + 3 * FRAMES_PER_SENTENCE  # the reply was cut short

    await sim.caller_hangup(call)
    ended = await asyncio.to_thread(d.wait_state, call_id, "hangup-user", timeout=10)
    assert ended["endReason"] == "hangup-user"
    await sim.wait_for(lambda: not stream.open)
