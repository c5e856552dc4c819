"""Twilio media streams end to end: the real daemon, the Twilio simulator opening the
`<Connect><Stream>` websocket as Twilio does, and FakeOpenAI for TTS, realtime STT and chat."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.configs import twilio_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_async as until
from tests.simulators.twilio import (
    FRAME_BYTES,
    SimCall,
    SimStream,
    TwilioSimulator,
)

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
CALLER = "+15550109999"
ENDED = ("completed", "hangup-user", "hangup-bot", "timeout", "error", "failed")
FRAMES_PER_SENTENCE = 50
"""FakeOpenAI synthesises 1 s of audio per request: 50 frames of 20 ms."""


def config(sim: TwilioSimulator, openai: FakeOpenAI, extra: str = "") -> str:
    """Twilio at the simulator, streaming on, TTS/STT (and the agent) at FakeOpenAI;
    `extra`: top-level keys."""
    return twilio_config(sim, openai, top=extra, streaming=True, agent=True)


async def record(d: DaemonHarness, call_id: str) -> dict[str, Any]:
    """The call record."""
    return await asyncio.to_thread(d.call_record, call_id)


async def until_record(
    d: DaemonHarness,
    call_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 8.0,
) -> dict[str, Any]:
    """Poll the call record until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while True:
        call = await record(d, call_id)
        if predicate(call):
            return call
        if time.monotonic() > deadline:
            raise AssertionError(f"call record never matched: {call}")
        await asyncio.sleep(0.02)


async def conversation(
    d: DaemonHarness, sim: TwilioSimulator, openai: FakeOpenAI, message: str
) -> tuple[str, SimCall, SimStream]:
    """Place an outbound conversation call; return once its stream is up and STT connected."""
    result = await rpc(
        d, "voicecall.initiate", {"message": message, "to": TO, "mode": "conversation"}
    )
    call_id = result["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media))
    call = sim.only_call()
    stream = call.media[0]
    await until(lambda: openai.connections, what="the STT connection")
    return call_id, call, stream


def utterance_frames(stream: SimStream, after: int) -> list[tuple[float, bytes]]:
    """Outbound frames received after the first `after` frames."""
    return [(f.at, f.audio) for f in stream.frames[after:]]


def marks_heard(stream: SimStream) -> set[str]:
    """Names of the marks echoed back."""
    return {name for _, name in stream.echoed}


async def test_streamed_conversation_paced_frames_marks_and_continue(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Answered -> `<Connect><Stream>` -> the simulator opens the stream (signed, token and
    callId parameters); the greeting streams as 160-byte frames while TTS is still
    synthesising; its mark is echoed after playout; `continue` speaks the question paced at
    20 ms and returns the fake STT's final transcript, which lands in the call record."""
    d = await start(make_daemon, config(sim, openai))
    openai.tts_hold = hold = asyncio.Event()
    call_id, call, stream = await conversation(d, sim, openai, "Hi, it's the clinic.")

    assert stream.is_open and stream.handshake_status is None
    url = call.streams[0]["url"]
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/voice/stream")
    assert call.streams[0]["callId"] == call_id and call.streams[0]["token"]
    assert "<Connect>" in call.documents[0] and "<Gather" not in call.documents[0]

    # The first frames arrive while the synthesis is held after its first chunk.
    await sim.wait_for(lambda: len(stream.frames) >= 3)
    assert openai.tts_completed == 0
    openai.tts_hold = None
    hold.set()
    await sim.wait_for(lambda: bool(stream.marks))
    greeting = len(stream.frames)
    assert greeting == FRAMES_PER_SENTENCE
    assert all(len(f.audio) == FRAME_BYTES for f in stream.frames)
    first_mark = stream.marks[0][1]
    assert stream.of("mark")[0][0] >= stream.frames[-1].at  # the mark follows its audio
    await sim.wait_for(lambda: first_mark in marks_heard(stream))
    echo_at = next(at for at, name in stream.echoed if name == first_mark)
    # Echoed only once the audio had played (real-time playout from the first frame).
    assert echo_at - stream.frames[0].at >= 0.9
    assert stream.played == greeting

    turn = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    )
    await sim.wait_for(lambda: len(stream.marks) >= 2, timeout=5)
    question = utterance_frames(stream, greeting)
    assert len(question) == FRAMES_PER_SENTENCE
    assert all(len(audio) == FRAME_BYTES for _, audio in question)
    times = [at for at, _ in question]
    paced = times[5:]  # the first lead-worth (80 ms) leaves at once, by design
    intervals = [b - a for a, b in itertools.pairwise(paced)]
    mean = sum(intervals) / len(intervals)
    print(
        f"\nquestion: {len(question)} frames over {times[-1] - times[0]:.3f}s, "
        f"mean interval {mean * 1000:.1f} ms, max {max(intervals) * 1000:.1f} ms"
    )
    assert 0.017 <= mean <= 0.023
    assert 0.85 <= times[-1] - times[0] <= 1.3
    await sim.wait_for(lambda: stream.marks[1][1] in marks_heard(stream))

    assert stream.caller_frames > 0
    await until(lambda: len(openai.current.audio) >= FRAME_BYTES, what="caller audio at STT")
    await openai.transcript_completed("Yes, Tuesday works.")
    result = await asyncio.wait_for(turn, 5)
    assert result == {"success": True, "transcript": "Yes, Tuesday works."}
    call_record = await record(d, call_id)
    assert [(t["speaker"], t["text"]) for t in call_record["transcript"]] == [
        ("bot", "Hi, it's the clinic."),
        ("bot", "Does Tuesday work?"),
        ("user", "Yes, Tuesday works."),
    ]
    assert call_record["metadata"]["turnCount"] == 1
    assert call.spoken == []  # nothing went through <Say>: all speech was streamed
    assert sim.recorded("POST", f"/Calls/{call.sid}.json") == []  # and no live TwiML update

    # Hanging up revokes the token: the daemon closes the stream itself (1000) and the call
    # ends at Twilio (REST hang-up, or the `<Connect>` verb ending with nothing after it).
    await rpc(d, "voicecall.end", {"callId": call_id})
    await sim.wait_for(lambda: stream.closed and call.ended)
    # 1000 from the daemon; when the simulator's own hang-up `stop` crossed the daemon's close
    # frame on the wire (both sides closing at once), aiohttp reports the cut as 1006.
    assert stream.close_code == 1000 or (stream.close_code == 1006 and stream.stop_sent), (
        stream.close_code
    )
    assert (await record(d, call_id))["state"] == "hangup-bot"


async def test_barge_in_clears_within_a_frame_and_cuts_the_transcript(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Speech start from STT during a long utterance: `clear` within a frame or two, no frame
    after it; the transcript keeps only what was heard (interruptedUtterances)."""
    d = await start(make_daemon, config(sim, openai))
    call_id, _, stream = await conversation(d, sim, openai, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream))
    greeting = len(stream.frames)

    text = "The first sentence is here. The second one runs long. And a third follows it."
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": text})
    # Barge in during the second sentence: the first was heard in full (its mark echoed).
    await sim.wait_for(
        lambda: (
            len(stream.marks) >= 2
            and stream.marks[1][1] in marks_heard(stream)
            and len(stream.frames) >= greeting + 60
        )
    )
    sent_at = time.monotonic()
    await openai.speech_started()
    await sim.wait_for(lambda: bool(stream.clears))
    clear_at = stream.clears[0]
    in_between = [f for f in stream.frames if sent_at <= f.at <= clear_at]
    print(
        f"\nclear {1000 * (clear_at - sent_at):.1f} ms after speech_started; "
        f"{len(in_between)} frames in between; {stream.dropped} buffered frames dropped"
    )
    assert len(in_between) <= 2
    assert clear_at - sent_at < 0.1
    assert stream.of("clear")[0][1] == {"event": "clear", "streamSid": stream.stream_sid}

    call_record = await until_record(
        d, call_id, lambda c: c["metadata"].get("interruptedUtterances") == 1
    )
    assert all(f.at <= clear_at for f in stream.frames)  # nothing was sent after the clear
    bot = [t["text"] for t in call_record["transcript"] if t["speaker"] == "bot"]
    assert bot[0] == "Hello."
    heard = bot[1]
    assert heard != text and text.startswith(heard)
    assert heard.startswith("The first sentence is here.")
    assert "third" not in heard


async def test_stream_token_close_and_grace(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A forged stream (bad token) is closed 1008 and an unsigned upgrade refused 401, while the
    call's own stream keeps working. A stream that goes away and comes back within the 2 s
    grace keeps the call; `stop` without a new stream ends it after the grace."""
    d = await start(make_daemon, config(sim, openai))
    call_id, call, stream = await conversation(d, sim, openai, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks))
    params = {k: v for k, v in call.streams[0].items() if k != "url"}

    forged = await sim.open_stream(call, {**params, "token": "not-the-token"})
    await sim.wait_for(lambda: forged.closed)
    assert forged.close_code == 1008
    unsigned = await sim.open_stream(call, params, sign=False)
    assert unsigned.handshake_status == 401 and unsigned.ws is None

    before = len(stream.frames)
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": "Still here."})
    await sim.wait_for(lambda: len(stream.frames) >= before + FRAMES_PER_SENTENCE)
    assert forged.frames == []

    # The media leg breaks (no stop) and Twilio's stream comes back within the grace.
    await stream.drop()
    dropped_at = time.monotonic()
    again = await sim.open_stream(call, params)
    assert again.is_open
    await until(lambda: len(openai.connections) >= 2, what="the new stream's STT")
    while time.monotonic() - dropped_at < 2.6:  # past the grace: the call must stay up
        assert (await record(d, call_id))["state"] not in ENDED
        await asyncio.sleep(0.1)
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": "Back again."})
    await sim.wait_for(lambda: len(again.frames) >= FRAMES_PER_SENTENCE)

    # `stop` and no new stream: the call ends once the grace is over.
    await again.drop(send_stop=True)
    stopped_at = time.monotonic()
    ended = await until_record(d, call_id, lambda c: c["state"] in ENDED, timeout=6)
    waited = time.monotonic() - stopped_at
    print(f"\ncall ended {waited:.2f}s after stop ({ended['state']})")
    assert 1.9 <= waited <= 4.0
    assert ended["state"] == "hangup-bot"
    await sim.wait_for(lambda: call.ended)
    assert call.ended_by == "api"


async def test_inbound_streamed_call_auto_responder_latency(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An inbound call is answered with `<Connect><Stream>`; the greeting streams; the caller's
    final transcript goes to the chat model and its reply is spoken over the stream."""
    extra = (
        'inbound_policy = "open"\n'
        'inbound_greeting = "Hello, Acme clinic."\n'
        'response_model = "openai/gpt-4o-mini"\n'
        "response_timeout_ms = 5000\n"
    )
    d = await start(make_daemon, config(sim, openai, extra))
    openai.chat_reply = "We open at nine."
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].marks))
    stream = call.media[0]
    assert "<Connect>" in call.documents[0] and call.streams[0]["token"]
    await sim.wait_for(lambda: stream.marks[0][1] in marks_heard(stream))
    greeting = len(stream.frames)
    assert greeting == FRAMES_PER_SENTENCE
    await until(lambda: openai.connections, what="the STT connection")

    said_at = time.monotonic()
    await openai.transcript_completed("When do you open?")
    await sim.wait_for(lambda: len(stream.frames) > greeting, timeout=5)
    latency = stream.frames[greeting].at - said_at
    print(f"\ntranscript_completed -> first reply frame: {latency * 1000:.1f} ms")
    assert latency < 0.5
    await sim.wait_for(lambda: len(stream.marks) >= 2)
    assert all(len(f.audio) == FRAME_BYTES for f in stream.frames)
    assert len(stream.frames) == greeting + FRAMES_PER_SENTENCE
    assert {"role": "user", "content": "When do you open?"} in openai.chat_requests[0]["messages"]

    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    (found,) = [c for c in listed if c["providerCallId"] == call.sid]
    assert [(t["speaker"], t["text"]) for t in found["transcript"]] == [
        ("bot", "Hello, Acme clinic."),
        ("user", "When do you open?"),
        ("bot", "We open at nine."),
    ]
    await sim.callee_hangup(call.sid)
    await sim.wait_for(lambda: stream.closed)
    assert stream.stop_sent
    await until_record(d, found["callId"], lambda c: c["state"] in ENDED)


async def test_dtmf_on_a_streamed_call_reconnects_the_stream(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """DTMF live-updates the call with `<Play digits>` + `<Connect><Stream>`: Twilio stops the
    old stream, plays the tones and opens a new one, which the daemon speaks on."""
    d = await start(make_daemon, config(sim, openai))
    call_id, call, stream = await conversation(d, sim, openai, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks))
    await rpc(d, "voicecall.dtmf", {"callId": call_id, "digits": "12"})
    await sim.wait_for(lambda: len(call.media) >= 2 and call.media[1].is_open)
    assert call.digits == ["12"] and stream.stop_sent and stream.closed
    assert '<Play digits="12" /><Connect>' in call.documents[-1]
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": "After the tones."})
    await sim.wait_for(lambda: len(call.media[1].frames) >= FRAMES_PER_SENTENCE)
    assert (await record(d, call_id))["state"] not in ENDED and not call.ended


async def test_elevenlabs_ulaw_is_streamed_without_transcoding(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """With `[tts] provider = "elevenlabs"` the daemon asks for `ulaw_8000` and the caller
    receives exactly those bytes, framed in 160-byte frames (the tail padded with silence)."""
    from tests.fakes.elevenlabs import API_KEY as XI_KEY
    from tests.fakes.elevenlabs import FakeElevenLabs

    async with FakeElevenLabs() as eleven:
        extra_tts = (
            f'\n[tts]\nprovider = "elevenlabs"\n\n[tts.elevenlabs]\n'
            f'base_url = "{eleven.base_url}"\napi_key = "{XI_KEY}"\nvoice_id = "voice-1"\n'
        )
        d = await start(make_daemon, config(sim, openai) + extra_tts)
        call_id, _call, stream = await conversation(d, sim, openai, "Hello there.")
        await sim.wait_for(lambda: bool(stream.marks), timeout=5)
        assert [r.output_format for r in eleven.requests] == ["ulaw_8000"]
        assert eleven.requests[0].voice_id == "voice-1"
        assert eleven.requests[0].body["text"] == "Hello there."
        audio = b"".join(f.audio for f in stream.frames)
        assert all(len(f.audio) == FRAME_BYTES for f in stream.frames)
        assert audio[: len(eleven.audio)] == eleven.audio  # byte for byte: no transcoding
        assert set(audio[len(eleven.audio) :]) <= {0xFF}  # mu-law silence pads the last frame
        assert openai.tts_requests == []
        await rpc(d, "voicecall.end", {"callId": call_id})


async def test_a_newer_caller_turn_cancels_a_stale_reply(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """While the model is still answering the caller's first turn, a second final transcript
    cancels that reply: only the answer to the newer turn is spoken."""
    extra = (
        'inbound_policy = "open"\n'
        'inbound_greeting = "Hello, Acme clinic."\n'
        'response_model = "openai/gpt-4o-mini"\n'
        "response_timeout_ms = 5000\n"
    )
    d = await start(make_daemon, config(sim, openai, extra))
    openai.chat_reply = "We open at nine."
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].marks))
    stream = call.media[0]
    await sim.wait_for(lambda: stream.marks[0][1] in marks_heard(stream))
    await until(lambda: openai.connections, what="the STT connection")

    openai.chat_hold = hold = asyncio.Event()
    await openai.transcript_completed("When do you open?", item_id="item_1")
    await until(lambda: len(openai.chat_requests) == 1, what="the first chat request")
    await openai.transcript_completed("Actually, are you open on Sunday?", item_id="item_2")
    await until(lambda: len(openai.chat_requests) == 2, what="the second chat request")
    openai.chat_reply = "Yes, from ten to four."
    openai.chat_hold = None
    hold.set()

    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    (found,) = [c for c in listed if c["providerCallId"] == call.sid]
    final = await until_record(
        d,
        found["callId"],
        lambda c: any(t["text"] == "Yes, from ten to four." for t in c["transcript"]),
    )
    # Give a reply that was not cancelled time to show up: the one we saw has played out.
    await sim.wait_for(lambda: len(stream.echoed) >= 2, timeout=5)
    final = await record(d, found["callId"])
    bot_lines = [t["text"] for t in final["transcript"] if t["speaker"] == "bot"]
    assert bot_lines == ["Hello, Acme clinic.", "Yes, from ten to four."]
    last = openai.chat_requests[1]["messages"]
    assert {"role": "user", "content": "Actually, are you open on Sunday?"} in last


async def test_the_greeting_is_synthesised_while_the_stream_connects(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The TTS vendor takes 0.6 s to its first audio and Twilio 0.8 s to open the stream after
    `<Connect><Stream>`: the greeting's synthesis starts with the answer, so its first frame
    follows the stream's start at once instead of the vendor's 0.6 s later; all of it plays."""
    extra = 'inbound_policy = "open"\ninbound_greeting = "Hello, Acme clinic."\n'
    d = await start(make_daemon, config(sim, openai, extra))
    openai.tts_first_byte_delay = 0.6
    sim.stream_connect_delay = 0.8
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].frames), timeout=10)
    stream = call.media[0]
    assert stream.opened_at is not None
    assert openai.tts_request_times[0] < stream.opened_at  # asked before the stream was there
    first = stream.frames[0].at - stream.opened_at
    print(f"\nstream open -> first greeting frame: {first * 1000:.0f} ms")
    assert first < 0.4
    await sim.wait_for(lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream))
    assert len(stream.frames) == FRAMES_PER_SENTENCE  # the whole greeting, once
    assert len(openai.tts_requests) == 1


async def test_a_greeting_said_again_is_said_from_memory(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Every inbound call opens with the same greeting: the vendor is asked for it by the
    first two calls only (the second one's audio is kept), and the third call hears it from
    memory at once, though the vendor now takes 0.6 s to its first audio and the stream is
    there before any synthesis could be."""
    extra = 'inbound_policy = "open"\ninbound_greeting = "Hello, Acme clinic."\n'
    d = await start(make_daemon, config(sim, openai, extra))
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    heard: list[bytes] = []
    for n in range(3):
        if n == 2:
            openai.tts_first_byte_delay = 0.6
        call = await sim.inbound(CALLER, FROM, webhook)

        def whole(call: SimCall = call) -> bool:
            return bool(call.media) and len(call.media[0].frames) >= FRAMES_PER_SENTENCE

        await sim.wait_for(whole, timeout=10)
        stream = call.media[0]
        heard.append(b"".join(f.audio for f in stream.frames))
    assert stream.opened_at is not None
    first = stream.frames[0].at - stream.opened_at
    print(f"\nthird call: stream open -> first greeting frame: {first * 1000:.0f} ms")
    assert first < 0.3
    assert [r["input"] for r in openai.tts_requests] == ["Hello, Acme clinic."] * 2
    assert heard[2] == heard[1] and len(heard[2]) == FRAMES_PER_SENTENCE * FRAME_BYTES


async def test_frames_written_two_at_a_time_with_outbound_batch_ms(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`[streaming] outbound_batch_ms = 40`: the pacing clock ticks every 40 ms and each tick
    writes a stream's next two frames together (each still its own 160-byte `media`
    message), so the caller's audio arrives in pairs 40 ms apart, in real time overall, and
    the utterance's mark still follows its last frame."""
    cfg = twilio_config(sim, openai, streaming=True, agent=True, stream="outbound_batch_ms = 40")
    d = await start(make_daemon, cfg)
    call_id, _, stream = await conversation(d, sim, openai, "Hi, it's the clinic.")
    await sim.wait_for(lambda: bool(stream.marks))
    frames = stream.frames
    assert len(frames) == FRAMES_PER_SENTENCE
    assert all(len(f.audio) == FRAME_BYTES for f in frames)
    assert stream.of("mark")[0][0] >= frames[-1].at
    paced = [f.at for f in frames[5:]]  # the lead's frames leave at once, by design
    intervals = [b - a for a, b in itertools.pairwise(paced)]
    together = sum(1 for gap in intervals if gap < 0.010)
    single = sum(1 for gap in intervals if 0.010 <= gap < 0.030)
    print(f"\n{len(intervals)} intervals: {together} under 10 ms, {single} of 10-30 ms")
    # Pairs: about every other interval is ~0 and the rest ~40 ms (a reader that falls behind
    # merges pairs, which adds ~0 ones); at a 20 ms pace most would be ~20 ms.
    assert together >= len(intervals) * 0.3 and single <= len(intervals) * 0.25
    assert 0.017 <= (paced[-1] - paced[0]) / len(intervals) <= 0.023  # still real time
    await rpc(d, "voicecall.end", {"callId": call_id})


@contextlib.contextmanager
def starved(pid: int) -> Iterator[None]:
    """The daemon's process has the CPU a tenth of the time while inside: stopped 90 ms of
    every 100 (SIGSTOP/SIGCONT), as on a machine far too busy for it."""
    starving = threading.Event()

    def starve() -> None:
        while not starving.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.090)
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.010)  # under a frame: most grid points fall due while it is stopped

    thread = threading.Thread(target=starve)
    thread.start()
    try:
        yield
    finally:
        starving.set()
        thread.join()
        os.kill(pid, signal.SIGCONT)


async def speaking_ten_sentences(
    make_daemon: Callable[..., DaemonHarness],
    sim: TwilioSimulator,
    openai: FakeOpenAI,
    cfg: str,
) -> tuple[DaemonHarness, str, SimStream, int]:
    """A daemon on `cfg` half a second into a ten-sentence reply on a Twilio stream: the
    daemon, the call, the simulator's stream and the daemon's pid."""
    d = await start(make_daemon, cfg)
    sentences = " ".join(f"Sentence number {n} of the reply." for n in range(1, 11))
    call_id, _, stream = await conversation(d, sim, openai, sentences)
    await sim.wait_for(lambda: len(stream.frames) >= 25)
    assert d.proc is not None
    return d, call_id, stream, d.proc.pid


async def every_frame_once(sim: TwilioSimulator, stream: SimStream, total: int) -> None:
    """The reply's `total` frames all arrive, and no more, before its mark."""
    await sim.wait_for(lambda: len(stream.frames) >= total and bool(stream.marks), timeout=20)
    assert len(stream.frames) == total, "no frame lost or repeated"


async def test_a_starved_daemon_on_the_default_keeps_one_frame_per_write(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """By default the period never widens, however late the loop runs: SPEC 12 judges the
    interval between frames, which reads each pair as 20 ms, and at 400 calls on one core a
    busy second now and then widened 3 of 13 of the benchmark's runs (docs/benchmarks.md).
    The same starvation as the test below, for as long as it takes the stream to get 75
    more frames (the opt-in setting widens well within that)."""
    cfg = twilio_config(sim, openai, streaming=True, agent=True)
    d, call_id, stream, pid = await speaking_ten_sentences(make_daemon, sim, openai, cfg)
    with starved(pid):
        await sim.wait_for(lambda: len(stream.frames) >= 100, timeout=30)
    assert "the event loop is behind" not in d.log_text()
    await every_frame_once(sim, stream, 10 * FRAMES_PER_SENTENCE)
    await rpc(d, "voicecall.end", {"callId": call_id})


async def test_a_starved_daemon_writes_two_frames_at_a_time_until_it_has_room_again(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The real failure: the daemon's process has the CPU only a tenth of the time (stopped
    90 ms of every 100, as on a machine too busy for it), so its pacing clock runs late and
    the pacer widens to two frames per write (`streaming.outbound_batch_overload_ms = 40`; off
    by default), says so in the log, and loses no frame. Given the CPU back, it goes back to
    one frame per 20 ms tick after a quiet second, while the same utterance still plays."""
    cfg = twilio_config(
        sim, openai, streaming=True, agent=True, stream="outbound_batch_overload_ms = 40"
    )
    d, call_id, stream, pid = await speaking_ten_sentences(make_daemon, sim, openai, cfg)
    with starved(pid):
        await until(lambda: "the event loop is behind" in d.log_text(), what="the widening")
    assert "written 40 ms at a time" in d.log_text()
    await until(lambda: "has room again" in d.log_text(), timeout=10, what="the narrowing")
    narrowed = len(stream.frames)
    await sim.wait_for(lambda: len(stream.frames) >= narrowed + 60)
    paced = [f.at for f in stream.frames[narrowed + 5 : narrowed + 60]]
    intervals = [b - a for a, b in itertools.pairwise(paced)]
    single = sum(1 for gap in intervals if 0.010 <= gap < 0.030)
    print(f"\nafter the narrowing: {single} of {len(intervals)} intervals of 10-30 ms")
    assert single >= len(intervals) * 0.8, "one frame per 20 ms tick again"
    await every_frame_once(sim, stream, 10 * FRAMES_PER_SENTENCE)
    assert all(len(f.audio) == FRAME_BYTES for f in stream.frames)
    await rpc(d, "voicecall.end", {"callId": call_id})
