"""The simulators send the vendors' shapes: every webhook and stream message a simulator sent
during real daemon calls has only fields the vendor's own sample of that message has.

The samples (`tests/fixtures/vendor_samples/`) are what Twilio, Telnyx and Plivo really send.
A simulator that invents a field (Telnyx `direction` on every webhook, a Plivo socket `stop`,
HangupCause names of its own) would let a parser pass here and fail on a real call, which is
what issue 13 found; these tests fail on any such field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_plivo_streaming import config as plivo_stream_config
from tests.e2e.test_telnyx_streaming import config as telnyx_stream_config
from tests.e2e.test_twilio_streaming import config as twilio_stream_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import PlivoSimulator
from tests.simulators.telnyx import TelnyxSimulator
from tests.simulators.twilio import TwilioSimulator

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vendor_samples"
TO = "+15550001234"
FROM = "+15550100000"


def sample(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


OPAQUE = frozenset({"customParameters"})
"""Objects whose keys are ours (Twilio `<Parameter>` names), not the vendor's."""


def extra_fields(message: Any, shape: Any, path: str = "") -> list[str]:
    """Fields of `message` (recursively) that `shape` does not have."""
    if not isinstance(message, dict) or not isinstance(shape, dict):
        return []
    if path.rstrip(".").rpartition(".")[2] in OPAQUE:
        return []
    found: list[str] = []
    for key, value in message.items():
        if key not in shape:
            found.append(f"{path}{key}")
        else:
            found += extra_fields(value, shape[key], f"{path}{key}.")
    return found


def merged(shapes: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One shape with every field any of `shapes` has (nested objects merged too)."""
    result: dict[str, Any] = {}
    for shape in shapes:
        for key, value in shape.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged([result[key], value])
            elif key not in result or isinstance(value, dict):
                result[key] = value
    return result


# ---------------------------------------------------------------------------------- Telnyx


def telnyx_samples() -> dict[str, dict[str, Any]]:
    """Event type -> every field its samples have."""
    documents = [
        *sample("telnyx_webhooks_inbound_capture.json")["events"],
        *sample("telnyx_webhooks_schema_derived.json")["events"],
        sample("telnyx_webhook_hangup_originator_cancel.json"),
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_type.setdefault(document["data"]["event_type"], []).append(document)
    return {kind: merged(docs) for kind, docs in by_type.items()}


async def test_telnyx_simulator_webhooks_and_frames_have_only_sample_fields(
    openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Inbound call (initiated, answered, speak, transcription, DTMF, the caller's hang-up),
    outbound busy and timeout, a streamed call (connected, start, media, dtmf, mark, error,
    stop) and a stream that fails (streaming.failed)."""
    async with TelnyxSimulator() as sim:
        d = await start(make_daemon, telnyx_stream_config(sim, openai, 'inbound_policy = "open"\n'))
        url = (await rpc(d, "daemon.status"))["webhookUrl"]
        placed = await rpc(
            d, "voicecall.initiate", {"message": "Hi there.", "to": TO, "mode": "conversation"}
        )
        await sim.wait_for(
            lambda: bool(sim.calls) and any(s.open for s in sim.only_call().streams), 15
        )
        streamed = sim.only_call()
        stream = streamed.streams[0]
        await sim.wait_for(lambda: len(stream.marks()) >= 1, 10)
        await sim.send_audio(streamed, b"\x7f" * 160)
        await sim.press(streamed, "1", via="stream")
        await sim.stream_error(streamed)
        await sim.wait_for(lambda: not stream.open, 10)
        await sim.caller_says(streamed, "hello")
        await sim.press(streamed, "2")
        await sim.caller_hangup(streamed)
        await until_state(d, placed["callId"], "hangup-user")

        sim.stream_outcome = "failed"
        failing = await rpc(
            d, "voicecall.initiate", {"message": "Hi.", "to": TO, "mode": "conversation"}
        )
        await sim.wait_for(lambda: bool(sim.delivered("streaming.failed")), 10)
        await sim.wait_for(lambda: bool(sim.delivered("call.speak.ended")), 10)
        await rpc(d, "voicecall.end", {"callId": failing["callId"]})

        sim.stream_outcome = None
        inbound = await sim.inbound("+14155550123", FROM, url)
        await sim.wait_for(lambda: any(s.open for s in inbound.streams), 15)
        await sim.caller_hangup(inbound)  # normal_clearing; the stream gets `stop`
        for outcome, state in (("user_busy", "busy"), ("timeout", "no-answer")):
            sim.outcome = outcome
            call = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
            await until_state(d, call["callId"], state)

    samples = telnyx_samples()
    sent_types = set()
    for delivery in sim.deliveries:
        document = json.loads(delivery.body)
        kind = document["data"]["event_type"]
        sent_types.add(kind)
        assert kind in samples, f"the simulator sends {kind}, which no sample shows"
        assert extra_fields(document, samples[kind]) == [], kind
        assert ("direction" in document["data"]["payload"]) == (kind == "call.initiated")
    assert sent_types >= {
        "call.initiated",
        "call.answered",
        "call.speak.started",
        "call.speak.ended",
        "call.transcription",
        "call.dtmf.received",
        "call.hangup",
        "streaming.failed",
    }
    frames = sample("telnyx_media_stream_messages.json")["from_telnyx"]
    by_event = {
        kind: merged(f for f in frames if f["event"] == kind)
        for kind in {f["event"] for f in frames}
    }
    assert set(sim.sent_frames) == {"connected", "start", "media", "dtmf", "mark", "error", "stop"}
    for kind, message in sim.sent_frames.items():
        assert extra_fields(message, by_event[kind]) == [], kind
    assert sim.schema_errors == []


# ---------------------------------------------------------------------------------- Plivo


def plivo_shapes() -> dict[str, dict[str, Any]]:
    """Plivo `Event` -> every callback parameter its samples have."""
    hooks = sample("plivo_voice_callbacks.json")
    answer = merged([hooks["answer_outbound"], hooks["answer_inbound"]])
    return {
        "StartApp": answer,
        "Redirect": answer,  # XML fetches after the answer carry the answer's parameters
        "Ring": hooks["ring_outbound"],
        "Hangup": merged([hooks["hangup_common"], *hooks["hangups"]]),
        "GetInput": merged([hooks["getinput_speech_action"], hooks["getinput_dtmf_action"]]),
    }


async def test_plivo_simulator_callbacks_and_frames_have_only_sample_fields(
    openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Outbound conversation (answer, ring, GetInput speech and digits, our hang-up), busy and
    timeout outcomes, an inbound caller's hang-up; and a streamed call's frames."""
    from tests.e2e.test_plivo_calls import config

    async with PlivoSimulator() as sim:
        d = await start(make_daemon, config(sim, 'inbound_policy = "open"\n'))
        url = (await rpc(d, "daemon.status"))["webhookUrl"]
        call_id = (
            await rpc(d, "voicecall.initiate", {"message": "Hi.", "to": TO, "mode": "conversation"})
        )["callId"]
        await until_state(d, call_id, "speaking", "active", "answered")
        sim.replies = ["Yes."]
        assert (await rpc(d, "voicecall.continue", {"callId": call_id, "message": "Ok?"}))[
            "transcript"
        ] == "Yes."
        turn = asyncio.create_task(
            rpc(d, "voicecall.continue", {"callId": call_id, "message": "Press one."})
        )
        call = sim.only_call()
        await sim.wait_for(lambda: call.listening, 15)
        await sim.press(call, "1")
        assert (await turn)["transcript"] == "1"
        await rpc(d, "voicecall.end", {"callId": call_id})
        for outcome, state in (("busy", "busy"), ("timeout", "failed")):
            sim.outcome = outcome
            placed = await rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO})
            await until_state(d, placed["callId"], state)
        sim.outcome = None
        inbound = await sim.inbound("+14155550123", FROM, url)
        await sim.wait_for(lambda: inbound.listening, 15)
        await sim.caller_hangup(inbound)
        await sim.wait_for(
            lambda: any(dl.params.get("HangupSource") == "Caller" for dl in sim.deliveries), 10
        )

    shapes = plivo_shapes()
    for delivery in sim.deliveries:
        event = delivery.params.get("Event", "Redirect")
        assert extra_fields(delivery.params, shapes[event]) == [], (event, delivery.params)
    events = {dl.params.get("Event") for dl in sim.deliveries}
    assert events >= {"StartApp", "Ring", "Hangup", "GetInput"}

    async with PlivoSimulator() as sim:
        d = await start(make_daemon, plivo_stream_config(sim, openai))
        call_id = (
            await rpc(
                d, "voicecall.initiate", {"message": "Hi there.", "to": TO, "mode": "conversation"}
            )
        )["callId"]
        await sim.wait_for(
            lambda: bool(sim.calls) and any(s.open for s in sim.only_call().streams), 15
        )
        call = sim.only_call()
        await sim.wait_for(lambda: len(call.streams[0].checkpoints()) >= 1, 10)
        await sim.send_audio(call, b"\x7f" * 160)
        await sim.press(call, "5", via="stream")
        await rpc(d, "voicecall.end", {"callId": call_id})
        await sim.wait_for(lambda: not call.streams[0].open, 10)
    frames = sample("plivo_audio_stream_messages.json")["from_plivo"]
    by_event = {f["event"]: f for f in frames}
    assert set(sim.sent_frames) == {"start", "media", "dtmf", "playedStream"}  # never `stop`
    for kind, message in sim.sent_frames.items():
        assert extra_fields(message, by_event[kind]) == [], kind
        assert set(by_event[kind]) - set(message) <= {"extra_headers"}, kind


# ---------------------------------------------------------------------------------- Twilio


async def test_twilio_simulator_webhooks_and_frames_have_only_sample_fields(
    openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Status callbacks, the inbound voice request and a streamed call's frames."""
    hooks = sample("twilio_voice_webhooks.json")
    status_shape = merged([hooks["status_callback_common"], *hooks["status_callbacks"]])
    voice_shape = hooks["inbound_voice_request"]
    async with TwilioSimulator() as sim:
        d = await start(make_daemon, twilio_stream_config(sim, openai, 'inbound_policy = "open"\n'))
        call_id = (
            await rpc(
                d, "voicecall.initiate", {"message": "Hi there.", "to": TO, "mode": "conversation"}
            )
        )["callId"]
        await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media), 15)
        stream = sim.only_call().media[-1]
        await sim.wait_for(lambda: bool(stream.echoed), 10)
        await stream.press("4")
        await rpc(d, "voicecall.end", {"callId": call_id})
        await until_state(d, call_id, "hangup-bot")
    statuses = [dl for dl in sim.deliveries if dl.kind == "status"]
    assert statuses
    for delivery in statuses:
        assert extra_fields(delivery.params, status_shape) == [], delivery.params
    for delivery in sim.deliveries:
        assert extra_fields(delivery.params, {**status_shape, **voice_shape}) == [], (
            delivery.kind,
            delivery.params,
        )
    frames = sample("twilio_media_stream_capture.json")["from_twilio"]
    by_event = {f["event"]: f for f in frames}
    by_event["dtmf"] = {
        "event": "dtmf",
        "streamSid": "",
        "sequenceNumber": "",
        "dtmf": {"track": "", "digit": ""},
    }  # Twilio's documented dtmf message
    assert {"connected", "start", "media", "mark", "dtmf"} <= set(sim.sent_frames)
    for kind, message in sim.sent_frames.items():
        if kind in by_event:
            assert extra_fields(message, by_event[kind]) == [], kind
