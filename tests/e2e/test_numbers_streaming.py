"""Per-number routing (SPEC 14) on a streamed Twilio call: the number table's greeting, TTS
voice (deep-merged over the call TTS) and auto-responder model/prompt, end to end against the
Twilio simulator and a fake OpenAI (TTS, STT, chat)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.configs import twilio_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_async as until
from tests.simulators.twilio import TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

FROM = "+15550100000"
BAKERY = "+15550102222"
CALLER = "+15550109999"


def config(sim: TwilioSimulator, openai: FakeOpenAI) -> str:
    """Streaming Twilio with a top-level TTS (alloy, no auto-responder) and one number table
    that has its own greeting, voice, model and prompt."""
    return twilio_config(
        sim,
        openai,
        streaming=True,
        agent=True,
        top='inbound_policy = "open"\ninbound_greeting = "Main line."\n',
        tts='voice = "alloy"\nmodel = "tts-main"\n',
        extra=f"""
[numbers."{BAKERY}"]
inbound_greeting = "Bakery, good morning."
response_model = "openai/bakery-model"
response_system_prompt = "You sell bread."
[numbers."{BAKERY}".tts.openai]
voice = "nova"
""",
    )


async def test_number_table_greeting_voice_and_responder_on_a_streamed_call(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A call to the bakery number: greeting synthesised with voice nova (model inherited
    from the call TTS), the caller's turn answered by the number's model and prompt although
    the top level has no auto-responder; a call to another number keeps the top level."""
    d = await start(make_daemon, config(sim, openai))
    openai.chat_reply = "We have sourdough."
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, BAKERY, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].marks), timeout=10)
    greeting = next(r for r in openai.tts_requests if r["input"] == "Bakery, good morning.")
    assert (greeting["voice"], greeting["model"]) == ("nova", "tts-main")
    await until(lambda: openai.connections, what="the STT connection")
    await openai.transcript_completed("Any bread left?")
    await until(lambda: openai.chat_requests, what="the chat request")
    chat = openai.chat_requests[0]
    assert chat["model"] == "bakery-model"
    assert chat["messages"][0]["content"].startswith("You sell bread.")
    await until(
        lambda: any(r["input"] == "We have sourdough." for r in openai.tts_requests),
        what="the reply's synthesis",
    )
    reply = next(r for r in openai.tts_requests if r["input"] == "We have sourdough.")
    assert reply["voice"] == "nova"
    await sim.callee_hangup(call.sid)

    other = await sim.inbound(CALLER, "+15550103333", webhook)
    await sim.wait_for(lambda: bool(other.media) and bool(other.media[0].marks), timeout=10)
    main = next(r for r in openai.tts_requests if r["input"] == "Main line.")
    assert main["voice"] == "alloy"
    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    numbers = {c["to"]: c["metadata"].get("number") for c in listed}
    assert numbers == {BAKERY: BAKERY, "+15550103333": None}


async def test_a_streamed_conversation_held_for_the_machine_verdict_still_streams(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """With machine detection the answer fetch only holds the line; once `AnsweredBy=human`
    arrives the call is updated to `<Connect><Stream>` and the opening line is streamed."""
    text = config(sim, openai) + "\n[machine_detection]\nenabled = true\n"
    d = await start(make_daemon, text)
    call_id = (
        await rpc(
            d,
            "voicecall.initiate",
            {"message": "Hello from the clinic.", "to": "+15550001234", "mode": "conversation"},
        )
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media), timeout=10)
    stream = sim.only_call().media[0]
    await sim.wait_for(lambda: bool(stream.marks), timeout=10)
    assert sim.only_call().spoken == []  # nothing went through <Say>
    assert any(r["input"] == "Hello from the clinic." for r in openai.tts_requests)
    record = await asyncio.to_thread(d.call_record, call_id)
    assert record["metadata"]["answeredBy"] == "human"
