"""Streamed auto-responder replies (SPEC 11): each sentence is spoken as soon as the model has
written it. The real daemon, the Twilio simulator's media stream as the caller's ear, and a
FakeOpenAI whose chat completions stream with set delays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.e2e.test_twilio_streaming import config, marks_heard, record, until_record
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness, call_id_of
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_async as until
from tests.simulators.twilio import SimCall, SimStream, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

FROM = "+15550100000"
CALLER = "+15550109999"
INBOUND = (
    'inbound_policy = "open"\n'
    'inbound_greeting = "Hello, Acme clinic."\n'
    'response_model = "openai/gpt-4o-mini"\n'
    "response_timeout_ms = 10000\n"
)


async def inbound_call(
    d: DaemonHarness, sim: TwilioSimulator, openai: FakeOpenAI
) -> tuple[SimCall, SimStream, str]:
    """An inbound streamed call whose greeting has played; STT connected."""
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].marks), timeout=10)
    stream = call.media[0]
    await sim.wait_for(lambda: stream.marks[0][1] in marks_heard(stream), timeout=10)
    await until(lambda: openai.connections, what="the STT connection")
    return call, stream, await call_id_of(d, call.sid)


async def test_first_sentence_is_heard_before_the_model_finishes(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The model writes its first sentence at 300 ms and the rest 2 s later: the caller gets
    the first sentence's audio well before the model's answer is complete."""
    d = await start(make_daemon, config(sim, openai, INBOUND))
    _call, stream, call_id = await inbound_call(d, sim, openai)
    greeting = len(stream.frames)
    openai.chat_stream = [(0.3, "We open at nine. "), (2.0, "On Sundays we open at ten.")]

    said_at = time.monotonic()
    await openai.transcript_completed("When do you open?")
    await sim.wait_for(lambda: len(stream.frames) > greeting, timeout=10)
    first_frame = stream.frames[greeting].at
    await until(lambda: openai.chat_finished, timeout=10, what="the model to finish")
    finished = openai.chat_finished[0]
    print(
        f"\nlast word -> first reply frame {1000 * (first_frame - said_at):.0f} ms; "
        f"model finished at {1000 * (finished - said_at):.0f} ms"
    )
    assert first_frame < finished - 0.5  # heard well before the model was done (2.3 s)
    assert first_frame - said_at < 1.8
    assert openai.chat_requests[0]["stream"] is True

    # The sentences were synthesised one by one, in order, and both are in the transcript.
    await until(lambda: len(openai.tts_requests) >= 3, timeout=10, what="the second sentence")
    assert [r["input"] for r in openai.tts_requests[1:]] == [
        "We open at nine.",
        "On Sundays we open at ten.",
    ]
    call = await until_record(d, call_id, lambda c: len(c["transcript"]) >= 4)
    assert [(t["speaker"], t["text"]) for t in call["transcript"]] == [
        ("bot", "Hello, Acme clinic."),
        ("user", "When do you open?"),
        ("bot", "We open at nine."),
        ("bot", "On Sundays we open at ten."),
    ]


async def test_a_newer_turn_cancels_the_reply_mid_stream(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The first sentence of a reply is already spoken when the caller says something new:
    the rest of that stale reply is never spoken; the answer to the new turn is."""
    d = await start(make_daemon, config(sim, openai, INBOUND))
    _call, _stream, call_id = await inbound_call(d, sim, openai)
    openai.chat_stream = [(0.1, "Let me check. "), (1.5, "Stale rest of the reply.")]

    await openai.transcript_completed("When do you open?", item_id="item_1")
    await until_record(
        d, call_id, lambda c: any(t["text"] == "Let me check." for t in c["transcript"])
    )
    openai.chat_stream = [(0.05, "Yes, from ten to four.")]
    await openai.transcript_completed("Are you open on Sunday?", item_id="item_2")
    await until_record(
        d, call_id, lambda c: any(t["text"] == "Yes, from ten to four." for t in c["transcript"])
    )
    await asyncio.sleep(2.0)  # past the moment the stale rest would have arrived
    call = await record(d, call_id)
    bot = [t["text"] for t in call["transcript"] if t["speaker"] == "bot"]
    assert bot == ["Hello, Acme clinic.", "Let me check.", "Yes, from ten to four."]
    assert all(r["input"] != "Stale rest of the reply." for r in openai.tts_requests)
