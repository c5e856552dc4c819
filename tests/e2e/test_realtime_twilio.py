"""Realtime voice-to-voice mode (SPEC 15) end to end: the real daemon, the Twilio simulator's
media stream as the caller, and FakeRealtime speaking the OpenAI Realtime API's GA events."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from daemon.rpc.protocol import RpcRemoteError
from tests.configs import twilio_config
from tests.e2e.test_twilio_streaming import (
    CALLER,
    ENDED,
    FROM,
    TO,
    marks_heard,
    record,
    until_record,
)
from tests.fakes.openai_realtime import API_KEY, FRAME, FakeRealtime, speech_audio
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

TOOLS = (
    'tools = [{name = "lookup", description = "Find free slots", parameters = '
    '{type = "object", properties = {day = {type = "string"}}}}]\n'
)


def config(sim: TwilioSimulator, model: FakeRealtime, extra: str = "", realtime: str = "") -> str:
    """Twilio at the simulator, streaming on, realtime mode at FakeRealtime; no TTS, no STT."""
    return twilio_config(
        sim,
        top=extra,
        streaming=True,
        extra=f"""
[realtime]
enabled = true
base_url = "{model.url}"
api_key = "{API_KEY}"
silence_duration_ms = 400
vad_threshold = 0.6
tool_timeout_ms = 1500
{TOOLS}{realtime}""",
    )


async def events(d: DaemonHarness, call_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in await asyncio.to_thread(d.call_events, call_id) if e["type"] == kind]


async def until_events(
    d: DaemonHarness, call_id: str, kind: str, count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await events(d, call_id, kind)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {count} {kind} events: {found}")
        await asyncio.sleep(0.05)


async def outbound(
    d: DaemonHarness, sim: TwilioSimulator, model: FakeRealtime, message: str
) -> tuple[str, SimCall, SimStream]:
    """A conversation call whose stream is up and bridged to the model."""
    result = await rpc(
        d, "voicecall.initiate", {"message": message, "to": TO, "mode": "conversation"}
    )
    await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media), timeout=10)
    call = sim.only_call()
    await model.wait_for(lambda: bool(model.sessions), timeout=10)
    return str(result["callId"]), call, call.media[0]


def bot_lines(call: dict[str, Any]) -> list[str]:
    return [t["text"] for t in call["transcript"] if t["speaker"] == "bot"]


async def test_call_is_bridged_both_ways_in_pcmu_without_resampling(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The call's message is the model's opening line; session.update asks for audio/pcmu both
    ways with the configured voice, VAD and tools (end_call first); the model's audio reaches
    the caller byte for byte in paced 160-byte frames with a mark; the caller's audio reaches
    the model byte for byte; both sides' transcripts are events and transcript lines."""
    d = await start(make_daemon, config(sim, model))
    call_id, call, stream = await outbound(d, sim, model, "Hi, it's the clinic.")
    session = model.current
    assert session.query["model"] == "gpt-realtime"
    assert session.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "<Connect>" in call.documents[0]

    await model.wait_for(lambda: bool(session.of("response.create")), timeout=10)
    update = session.session
    assert update["type"] == "realtime" and update["model"] == "gpt-realtime"
    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "alloy"}
    vad = update["audio"]["input"]["turn_detection"]
    assert vad["type"] == "server_vad" and vad["threshold"] == 0.6
    assert vad["silence_duration_ms"] == 400
    assert vad["interrupt_response"] is False  # the opening line is not interruptible
    assert [t["name"] for t in update["tools"]] == ["end_call", "lookup"]
    assert update["tools"][1]["parameters"]["properties"] == {"day": {"type": "string"}}
    first = session.of("response.create")[0]["response"]
    assert "Hi, it's the clinic." in first["instructions"]

    # Model audio -> caller: the exact bytes, framed and paced, then a mark.
    await sim.wait_for(lambda: bool(stream.marks), timeout=10)
    audio = b"".join(f.audio for f in stream.frames)
    assert audio == speech_audio(model.reply_frames)
    assert all(len(f.audio) == FRAME_BYTES for f in stream.frames)
    span = stream.frames[-1].at - stream.frames[0].at
    assert 0.35 <= span <= 0.9  # 25 frames = 500 ms of audio, minus the 80 ms lead
    await sim.wait_for(lambda: stream.marks[0][1] in marks_heard(stream), timeout=10)

    # Caller audio -> model, byte for byte.
    spoken = bytes(range(1, 161)) * 5
    stream.say_audio(spoken)
    await model.wait_for(lambda: spoken in bytes(session.audio), timeout=10)

    await model.caller_said("I'd like an appointment.")
    await model.respond("Sure, which day suits you?", frames=20)
    current = await until_record(d, call_id, lambda c: len(c["transcript"]) >= 3)
    assert [(t["speaker"], t["text"]) for t in current["transcript"]] == [
        ("bot", "Hi, it's the clinic."),
        ("user", "I'd like an appointment."),
        ("bot", "Sure, which day suits you?"),
    ]
    speech = await until_events(d, call_id, "call.speech")
    assert speech[0]["transcript"] == "I'd like an appointment." and speech[0]["isFinal"]
    speaking = await until_events(d, call_id, "call.speaking", 2)
    assert [e["text"] for e in speaking] == ["Hi, it's the clinic.", "Sure, which day suits you?"]

    await rpc(d, "voicecall.end", {"callId": call_id})
    await model.wait_for(lambda: session.closed, timeout=10)
    assert (await record(d, call_id))["state"] == "hangup-bot"


async def test_barge_in_clears_and_truncates_at_what_was_played(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The caller talks over a long model line: `clear` goes to Twilio at once, the model's
    item is truncated at the audio actually played (not what was sent), and the transcript
    keeps only the words heard."""
    d = await start(make_daemon, config(sim, model))
    call_id, _call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(
        lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream), timeout=10
    )
    greeting = len(stream.frames)

    text = " ".join(f"word{i}" for i in range(30))
    item = asyncio.create_task(model.respond(text, frames=150))  # 3 s, sent at once
    item_id = await item
    await until(lambda: stream.played >= greeting + 50, timeout=10, what="1 s played")
    played_ms = (stream.played - greeting) * 20
    await model.speech_started()
    await sim.wait_for(lambda: bool(stream.clears), timeout=5)
    session = model.current
    await model.wait_for(lambda: bool(session.of("conversation.item.truncate")), timeout=5)
    (truncate,) = session.of("conversation.item.truncate")
    assert truncate["item_id"] == item_id and truncate["content_index"] == 0
    heard_ms = (stream.played - greeting) * 20  # the simulator played nothing after `clear`
    print(
        f"\nplayed {played_ms} ms when speech started, {heard_ms} ms in all; truncated at "
        f"{truncate['audio_end_ms']} ms; {len(stream.frames) - greeting} frames were sent"
    )
    # The daemon's play clock and the simulator's playout agree within the 80 ms lead.
    assert played_ms - 100 <= truncate["audio_end_ms"] <= heard_ms + 100
    assert truncate["audio_end_ms"] < (len(stream.frames) - greeting) * 20  # sent > played
    assert all(f.at <= stream.clears[0] for f in stream.frames)

    current = await until_record(d, call_id, lambda c: len(bot_lines(c)) >= 2)
    heard = bot_lines(current)[1]
    assert text.startswith(heard) and heard != text
    fraction = len(heard.split()) / 30
    assert abs(fraction - truncate["audio_end_ms"] / 3000) <= 0.1
    (speaking,) = [e for e in await events(d, call_id, "call.speaking") if e["text"] == heard]
    assert speaking


async def test_the_outbound_opening_line_is_not_cut_by_the_callee(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The callee's "hello?" during the call's message neither clears nor truncates it (as in
    the cascade); once it was heard, the session turns interruption on and barge-in works."""
    d = await start(make_daemon, config(sim, model))
    model.reply_frames = 100  # a 2 s opening line
    _call_id, _call, stream = await outbound(d, sim, model, "This is the Acme clinic calling.")
    session = model.current
    await until(lambda: stream.played >= 20, timeout=10, what="the opening to play")
    await model.speech_started()
    await sim.wait_for(
        lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream), timeout=10
    )
    assert stream.clears == [] and session.of("conversation.item.truncate") == []
    assert stream.played == 100
    await model.wait_for(lambda: len(session.of("session.update")) >= 2, timeout=5)
    vad = session.of("session.update")[1]["session"]["audio"]["input"]["turn_detection"]
    assert vad["interrupt_response"] is True and vad["create_response"] is True

    await model.respond("A second line that the callee interrupts.", frames=100)
    await until(lambda: stream.played >= 120, timeout=10, what="the second line to play")
    await model.speech_started()
    await sim.wait_for(lambda: bool(stream.clears), timeout=5)
    await model.wait_for(lambda: bool(session.of("conversation.item.truncate")), timeout=5)


async def test_relayed_tool_is_answered_by_the_agent_and_times_out_otherwise(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A configured tool call becomes `call.tool` with parsed arguments; `voicecall.tool_result`
    gives the model the output as JSON text and asks for a response. An unanswered call is
    answered with an error after tool_timeout_ms, and recorded as call.error."""
    d = await start(make_daemon, config(sim, model))
    call_id, _call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks), timeout=10)
    session = model.current

    await model.call_function("lookup", '{"day": "Tuesday"}', call_id="call_42")
    (tool,) = await until_events(d, call_id, "call.tool")
    assert tool["toolCallId"] == "call_42" and tool["name"] == "lookup"
    assert tool["arguments"] == {"day": "Tuesday"}
    tail = await asyncio.to_thread(
        d.cli, "tail", "--call-id", call_id, "--since", "100", "--no-follow"
    )
    assert 'call.tool lookup({"day":"Tuesday"}) toolCallId=call_42' in tail.stdout, tail.stdout
    creates = len(session.of("response.create"))
    output = {"slots": ["9:00", "14:30"], "note": "café"}
    result = await rpc(
        d, "voicecall.tool_result", {"callId": call_id, "toolCallId": "call_42", "output": output}
    )
    assert result == {"success": True}
    await model.wait_for(lambda: len(session.of("response.create")) > creates, timeout=5)
    (item,) = session.of("conversation.item.create")
    assert item["item"]["type"] == "function_call_output"
    assert item["item"]["call_id"] == "call_42"
    assert json.loads(item["item"]["output"]) == output

    with pytest.raises(RpcRemoteError) as refused:
        await rpc(
            d, "voicecall.tool_result", {"callId": call_id, "toolCallId": "call_42", "output": 1}
        )
    assert refused.value.code == -32002 and "call_42" in refused.value.message

    started = time.monotonic()
    await model.call_function("lookup", "{}", call_id="call_43")
    await model.wait_for(lambda: len(session.of("conversation.item.create")) >= 2, timeout=6)
    waited = time.monotonic() - started
    late = session.of("conversation.item.create")[1]["item"]
    assert late["call_id"] == "call_43" and "error" in json.loads(late["output"])
    assert 1.4 <= waited <= 8.0  # tool_timeout_ms = 1500, on a busy machine
    errors = await until_events(d, call_id, "call.error")
    assert any("lookup" in e["error"] and "call_43" in e["error"] for e in errors)

    await model.call_function("not_a_tool", "{}", call_id="call_44")
    await model.wait_for(lambda: len(session.of("conversation.item.create")) >= 3, timeout=5)
    assert "no tool named" in session.of("conversation.item.create")[2]["item"]["output"]


async def test_end_call_hangs_up_once_the_goodbye_was_heard(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The model says goodbye and calls end_call in the same response: the call is hung up
    only after the goodbye's mark came back (it was heard), never before."""
    d = await start(make_daemon, config(sim, model))
    call_id, call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(
        lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream), timeout=10
    )
    await model.respond("Goodbye!", frames=50, function_call=("end_call", "call_9", "{}"))
    await sim.wait_for(lambda: call.ended, timeout=10)
    ended_at = time.monotonic()
    goodbye_mark = stream.marks[1][1]
    echoed = dict((name, at) for at, name in stream.echoed)
    assert goodbye_mark in echoed and echoed[goodbye_mark] <= ended_at
    assert stream.played == model.reply_frames + 50  # greeting and goodbye both played out
    final = await until_record(d, call_id, lambda c: c["state"] in ENDED)
    assert final["state"] == "hangup-bot"
    assert bot_lines(final) == ["Hello.", "Goodbye!"]
    assert await events(d, call_id, "call.tool") == []  # end_call is ours, not relayed


async def test_speak_asks_the_model_and_beta_event_names_work(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`voicecall speak` on a realtime call makes the model say the text; a server using the
    beta names (response.audio.delta ...) is understood too."""
    d = await start(make_daemon, config(sim, model))
    model.beta_names = True
    call_id, _call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks), timeout=10)
    greeting = len(stream.frames)
    session = model.current
    done = await asyncio.to_thread(
        d.cli, "speak", "--call-id", call_id, "--message", "Your table is ready."
    )
    assert done.returncode == 0, done.stderr
    await model.wait_for(lambda: len(session.of("response.create")) >= 2, timeout=5)
    assert "Your table is ready." in session.of("response.create")[1]["response"]["instructions"]
    await sim.wait_for(lambda: len(stream.frames) >= greeting + model.reply_frames, timeout=10)
    current = await record(d, call_id)
    assert bot_lines(current) == ["Hello.", "Your table is ready."]


async def test_model_socket_failure_is_loud_and_ends_the_call(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The model's socket drops mid-call: a call.error event and an error log line, then the
    call is hung up (never left in silence); a speak on it afterwards fails."""
    d = await start(make_daemon, config(sim, model))
    call_id, call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(lambda: bool(stream.marks), timeout=10)
    await model.drop()
    errors = await until_events(d, call_id, "call.error")
    assert "session lost" in errors[0]["error"]
    await sim.wait_for(lambda: call.ended, timeout=10)
    assert (await until_record(d, call_id, lambda c: c["state"] in ENDED))["state"] == "hangup-bot"
    assert "OpenAI Realtime session lost" in d.log_text()


async def test_refused_model_key_is_loud_and_ends_the_call(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The Realtime API refuses the handshake (401): call.error naming the status, no key in
    it, and the call ends instead of staying silent."""
    model.api_key = "sk-some-other-key"
    d = await start(make_daemon, config(sim, model))
    result = await rpc(
        d, "voicecall.initiate", {"message": "Hello.", "to": TO, "mode": "conversation"}
    )
    call_id = str(result["callId"])
    errors = await until_events(d, call_id, "call.error")
    assert "HTTP 401" in errors[0]["error"] and API_KEY not in errors[0]["error"]
    await until_record(d, call_id, lambda c: c["state"] in ENDED)
    assert API_KEY not in d.log_text()


async def test_inbound_call_greets_through_the_model_without_the_auto_responder(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """An inbound realtime call opens with inbound_greeting said by the model; the caller's
    turns are recorded but the cascade's auto-responder never runs (the model answers)."""
    extra = (
        'inbound_policy = "open"\ninbound_greeting = "Hello, Acme clinic."\n'
        'response_model = "openai/gpt-4o-mini"\n'
    )
    d = await start(
        make_daemon,
        config(sim, model, extra) + "[agent]\nbase_url = "
        '"http://127.0.0.1:9/v1"\napi_key = "sk-unused"\n',
    )
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await model.wait_for(
        lambda: bool(model.sessions) and bool(model.current.of("response.create")), timeout=10
    )
    session = model.current
    assert "Hello, Acme clinic." in session.of("response.create")[0]["response"]["instructions"]
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].marks), timeout=10)
    await model.caller_said("Are you open today?")
    listed = (await rpc(d, "voicecall.list", {}))["calls"]
    (found,) = [c for c in listed if c["providerCallId"] == call.sid]
    current = await until_record(d, found["callId"], lambda c: len(c["transcript"]) >= 2)
    assert [(t["speaker"], t["text"]) for t in current["transcript"]] == [
        ("bot", "Hello, Acme clinic."),
        ("user", "Are you open today?"),
    ]
    await asyncio.sleep(0.3)
    assert len(session.of("response.create")) == 1  # nobody but the model answers
    assert "auto-responder failed" not in d.log_text()
    assert FRAME == FRAME_BYTES


async def test_per_number_realtime_table_turns_it_on_for_that_number_only(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`[realtime]` off, `[numbers."+E164".realtime]` on with its own voice and instructions:
    a call to that number is bridged with the merged settings (the key still from
    [realtime]); calls to other numbers are not bridged."""
    d = await start(
        make_daemon,
        config(sim, model, 'inbound_policy = "open"\n').replace(
            "[realtime]\nenabled = true\n", "[realtime]\nenabled = false\n"
        )
        + f"""
[numbers."{FROM}".realtime]
enabled = true
voice = "verse"
instructions = "You are the Acme night line."
""",
    )
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    await sim.inbound(CALLER, FROM, webhook)
    await model.wait_for(
        lambda: bool(model.sessions) and bool(model.current.of("session.update")), timeout=10
    )
    update = model.current.session
    assert update["audio"]["output"]["voice"] == "verse"
    assert update["instructions"].startswith("You are the Acme night line.")
    assert update["audio"]["input"]["turn_detection"]["threshold"] == 0.6  # from [realtime]

    await sim.inbound(CALLER, "+15550177777", webhook)
    # Realtime is decided before a stream is bound: once the second is bound, it was not.
    await until(
        lambda: d.log_text().count("bound to call") >= 2,
        timeout=10,
        what="the second call's stream",
    )
    assert len(model.sessions) == 1 and model.handshakes == 1


async def test_a_spoken_line_cut_by_the_caller_keeps_what_was_heard(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`voicecall speak` recorded its text when asked; a barge-in during it rewrites that
    transcript line to the words heard (interruptedUtterances) and truncates the item."""
    d = await start(make_daemon, config(sim, model))
    call_id, _call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(
        lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream), timeout=10
    )
    session = model.current
    await model.wait_for(lambda: len(session.of("session.update")) >= 2, timeout=5)
    text = " ".join(f"part{i}" for i in range(20))
    model.reply_frames = 150
    await rpc(d, "voicecall.speak", {"callId": call_id, "message": text})
    await until(lambda: stream.played >= 25 + 40, timeout=10, what="the line to play")
    await model.speech_started()
    await model.wait_for(lambda: bool(session.of("conversation.item.truncate")), timeout=5)
    current = await until_record(
        d, call_id, lambda c: c["metadata"].get("interruptedUtterances") == 1
    )
    heard = bot_lines(current)[1]
    assert heard != text and text.startswith(heard) and heard.startswith("part0")
    ms = session.of("conversation.item.truncate")[0]["audio_end_ms"]
    assert abs(len(heard.split()) / 20 - ms / 3000) <= 0.1


async def test_a_response_that_stops_without_audio_done_still_settles(
    sim: TwilioSimulator, model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """A response that ends (response.done, cancelled) before its output_audio.done: what
    arrived plays out with its mark, and an end_call after it still hangs up (the call is
    never stuck waiting for audio that will not come)."""
    d = await start(make_daemon, config(sim, model))
    call_id, call, stream = await outbound(d, sim, model, "Hello.")
    await sim.wait_for(
        lambda: bool(stream.marks) and stream.marks[0][1] in marks_heard(stream), timeout=10
    )
    base = {"response_id": "resp_x", "item_id": "item_x", "output_index": 0, "content_index": 0}
    await model.emit({"type": "response.created", "response": {"id": "resp_x"}})
    for chunk in range(3):
        await model.emit(
            {
                "type": "response.output_audio.delta",
                **base,
                "delta": base64.b64encode(speech_audio(5, chunk)).decode(),
            }
        )
    await model.emit({"type": "response.done", "response": {"id": "resp_x", "status": "cancelled"}})
    await sim.wait_for(lambda: len(stream.marks) >= 2, timeout=10)
    await model.call_function("end_call", "{}", call_id="call_end")
    await sim.wait_for(lambda: call.ended, timeout=10)
    assert stream.played == model.reply_frames + 15
    assert (await until_record(d, call_id, lambda c: c["state"] in ENDED))["state"] == "hangup-bot"
