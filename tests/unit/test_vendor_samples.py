"""Every vendor wire sample is a fixture: parsed by the real parser into what the vendor meant.

The samples (`tests/fixtures/vendor_samples/`, copied from the shared `vendor_samples/` folder so
the tests never depend on a sibling checkout) are what Twilio, Telnyx and Plivo really send or
publish, each with its `_source`. Their README lists the meaning of each; these tests hold the
parsers (webhooks, media-stream framings, REST readers) to it. A test that reads a sample file
also checks that it used every entry of it, so a sample added later cannot go untested.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from daemon.config.model import Config, PlivoConfig, TelnyxConfig
from daemon.media.protocols import PlivoFraming, StreamEvent, StreamMessage, framing_for
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.providers import plivo_wire, telnyx_wire, twilio_parse
from daemon.providers.base import (
    DialRequest,
    ProviderContext,
    RemoteState,
    ReplyDraft,
    WebhookRequest,
)
from daemon.providers.plivo import PlivoProvider
from daemon.providers.telnyx import TelnyxProvider
from daemon.webhooks.security import TwilioVerifier
from tests.fakes._server import FakeServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vendor_samples"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "vendor_samples"


def sample(name: str) -> Any:
    """One sample file, parsed."""
    return json.loads((FIXTURES / name).read_text())


def test_every_shared_sample_is_copied_into_the_fixtures() -> None:
    """The repo's copy is the shared folder's (when a sibling `shared/` checkout exists)."""
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert len(names) == 8
    assert all("_source" in sample(name) for name in names)
    if SHARED.is_dir():
        assert names == sorted(p.name for p in SHARED.glob("*.json"))
        for name in names:
            assert sample(name) == json.loads((SHARED / name).read_text()), name


# ---------------------------------------------------------------------------------- Telnyx


def telnyx_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def telnyx_events(
    document: dict[str, Any], leg: telnyx_wire.LegFacts | None = None
) -> list[ProviderEvent]:
    hook = telnyx_wire.parse_webhook(telnyx_body(document))
    assert hook is not None
    return telnyx_wire.to_events(hook, leg=leg)


class Sink:
    """The engine's event sink, recording."""

    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []

    async def __call__(
        self, events: Sequence[ProviderEvent], reply: ReplyDraft | None = None
    ) -> None:
        self.events.extend(events)


def telnyx_provider() -> tuple[TelnyxProvider, Sink]:
    provider, sink = TelnyxProvider(), Sink()
    config = Config(provider="telnyx", telnyx=TelnyxConfig(api_key="KEY", connection_id="1"))
    provider.bind(sink, ProviderContext(config, "https://vc.example.com/voice/webhook"))
    return provider, sink


def request(body: bytes) -> WebhookRequest:
    return WebhookRequest(
        "POST",
        "/voice/webhook",
        (),
        CIMultiDict(),
        body,
        "127.0.0.1",
        "https://vc.example.com/voice/webhook",
    )


async def test_telnyx_inbound_capture_parses_to_an_inbound_call_the_caller_ended() -> None:
    """The real inbound call: initiated (the only webhook with `direction`), answered, speak
    events (no event), and the caller's `normal_clearing` -> hangup-user (was `completed`)."""
    provider, sink = telnyx_provider()
    for document in sample("telnyx_webhooks_inbound_capture.json")["events"]:
        reply = await provider.handle_webhook(request(telnyx_body(document)))
        assert reply.status == 200
    pid = "v3:2EC-70CTEjlUq3tDM0CxKXIt5-5N4iP4wo7_-PfH-qub97Sk4EqO5w"
    assert [(e.type, e.direction, e.from_number, e.to_number) for e in sink.events] == [
        (EventType.INITIATED, Direction.INBOUND, "+18124040851", "+13057864498"),
        (EventType.ANSWERED, None, "+18124040851", "+13057864498"),
        (EventType.ENDED, None, None, None),
    ]
    assert all(e.provider_call_id == pid and e.call_id is None for e in sink.events)
    assert sink.events[-1].end_state is CallState.HANGUP_USER
    assert [e.dedupe_key for e in sink.events] == [
        "telnyx:b97d4d5e-6fe7-4432-911f-79637bf6ebb7",
        "telnyx:6513c729-f759-47ad-b345-606732b23608",
        "telnyx:b7f7dc2a-dacb-4fe9-a405-653b8184400b",
    ]


async def test_telnyx_abandoned_inbound_call_is_hangup_user() -> None:
    """The portal capture: `originator_cancel` from the caller, no `direction` on call.hangup.
    The provider saw the call's `call.initiated` (direction incoming) -> hangup-user (was
    hangup-bot)."""
    cancel = sample("telnyx_webhook_hangup_originator_cancel.json")
    assert "direction" not in cancel["data"]["payload"]
    initiated = sample("telnyx_webhooks_inbound_capture.json")["events"][0]
    initiated["data"]["payload"]["call_control_id"] = cancel["data"]["payload"]["call_control_id"]
    initiated["data"]["id"] = "initiated-of-the-abandoned-call"
    provider, sink = telnyx_provider()
    await provider.handle_webhook(request(telnyx_body(initiated)))
    await provider.handle_webhook(request(telnyx_body(cancel)))
    assert [e.type for e in sink.events] == [EventType.INITIATED, EventType.ENDED]
    assert sink.events[-1].end_state is CallState.HANGUP_USER


async def test_telnyx_hangup_after_a_restart_takes_the_direction_from_the_record() -> None:
    """No `call.initiated` comes again after a restart: the stored record gives the direction."""
    cancel = sample("telnyx_webhook_hangup_originator_cancel.json")
    pid = cancel["data"]["payload"]["call_control_id"]
    provider, sink = telnyx_provider()
    record = CallRecord(
        "c-9",
        "telnyx",
        Direction.INBOUND,
        CallMode.CONVERSATION,
        "+15022969469",
        "+14807868280",
        provider_call_id=pid,
    )
    provider._note(record)  # what every provider method handed a record does (fetch_status)
    await provider.handle_webhook(request(telnyx_body(cancel)))
    assert sink.events[-1].end_state is CallState.HANGUP_USER


SCHEMA_CALL = telnyx_wire.ClientState("call-1", "turn", "tok9")


def test_telnyx_schema_derived_events() -> None:
    """Transcriptions (final and partial), a DTMF key, speak cancelled by AMD, every hang-up
    sample and streaming.failed, each as the vendor means it."""
    docs = sample("telnyx_webhooks_schema_derived.json")["events"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_type.setdefault(doc["data"]["event_type"], []).append(doc)
    assert set(by_type) == {
        "call.transcription",
        "call.dtmf.received",
        "call.machine.detection.ended",
        "call.machine.premium.detection.ended",
        "call.speak.ended",
        "call.hangup",
        "streaming.failed",
    }
    final, partial = (telnyx_events(d)[0] for d in by_type["call.transcription"])
    assert (
        final.type,
        final.transcript,
        final.is_final,
        final.confidence,
        final.turn_token,
        final.call_id,
    ) == (EventType.SPEECH, "hello this is a test speech", True, 0.977219, "tok9", "call-1")
    assert (partial.transcript, partial.is_final) == ("hello this", False)
    (dtmf,) = telnyx_events(by_type["call.dtmf.received"][0])
    assert (dtmf.type, dtmf.digits, dtmf.is_final, dtmf.turn_token) == (
        EventType.DTMF,
        "#",
        False,
        "tok9",
    )
    assert telnyx_events(by_type["call.speak.ended"][0]) == []
    for kind in ("call.machine.detection.ended", "call.machine.premium.detection.ended"):
        # The machine verdict is issue 16's (call.machine); it must never end or answer a turn.
        assert all(
            e.type not in (EventType.ENDED, EventType.SPEECH, EventType.DTMF)
            for e in telnyx_events(by_type[kind][0])
        )
    outbound = telnyx_wire.LegFacts(Direction.OUTBOUND, answered=True)
    ends = [
        (d["data"]["payload"]["hangup_cause"], telnyx_events(d, outbound)[0].end_state)
        for d in by_type["call.hangup"]
    ]
    assert ends == [
        ("timeout", CallState.NO_ANSWER),
        ("time_limit", CallState.TIMEOUT),
        ("normal_clearing", CallState.HANGUP_USER),  # the callee of our outbound call
        ("call_rejected", CallState.FAILED),
        ("unspecified", CallState.COMPLETED),
    ]
    unanswered = telnyx_wire.LegFacts(Direction.OUTBOUND, answered=False)
    assert telnyx_events(by_type["call.hangup"][-1], unanswered)[0].end_state is CallState.FAILED
    (failed,) = by_type["streaming.failed"]
    hook = telnyx_wire.parse_webhook(telnyx_body(failed))
    assert hook is not None and telnyx_wire.stream_failure(hook) == "connection_failed"
    assert hook.client_state == SCHEMA_CALL


def test_telnyx_sample_hangup_causes_are_all_known() -> None:
    """Every cause in the samples is one we map (none falls to the unknown-cause path)."""
    causes = {
        d["data"]["payload"]["hangup_cause"]
        for d in sample("telnyx_webhooks_schema_derived.json")["events"]
        if d["data"]["event_type"] == "call.hangup"
    }
    causes.add(
        sample("telnyx_webhook_hangup_originator_cancel.json")["data"]["payload"]["hangup_cause"]
    )
    assert causes <= telnyx_wire.HANGUP_CAUSES


def test_telnyx_media_stream_frames() -> None:
    """connected, both start shapes (stream_id top-level), media, dtmf, mark, error, stop; and
    what we send is Telnyx's shape exactly."""
    messages = sample("telnyx_media_stream_messages.json")
    framing = framing_for("telnyx")
    decoded = [framing.decode(json.dumps(m)) for m in messages["from_telnyx"]]
    old, new = decoded[1], decoded[2]
    assert decoded[0] == StreamMessage(StreamEvent.CONNECTED)
    assert old == StreamMessage(
        StreamEvent.START,
        stream_id="32de0dea-53cb-4b21-89a4-9e1819c043bc",
        provider_call_id="v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
        parameters={"client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d"},
        encoding="audio/x-mulaw",
    )
    assert new is not None and (new.kind, new.stream_id, new.provider_call_id, new.encoding) == (
        StreamEvent.START,
        "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
        "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "PCMU",
    )
    assert decoded[3:] == [
        StreamMessage(
            StreamEvent.MEDIA, payload="no+JhoaJjpzSHxAKBgYJD/////////////////////////////////8="
        ),
        StreamMessage(StreamEvent.DTMF, digit="1"),
        StreamMessage(StreamEvent.MARK, name="my label"),
        StreamMessage(
            StreamEvent.ERROR,
            stream_id="32de0dea-53cb-4b21-89a4-9e1819c043bc",
            error="100005 rate_limit_reached: Too many requests",
        ),
        StreamMessage(StreamEvent.STOP),
    ]
    media, mark, clear = messages["to_telnyx"]
    assert json.loads(framing.encode_media("QUJD")) == {**media, "media": {"payload": "QUJD"}}
    assert json.loads(framing.encode_mark("my label")) == mark
    assert json.loads(framing.encode_clear()) == clear


# ---------------------------------------------------------------------------------- Twilio


def test_twilio_media_stream_capture() -> None:
    """The real 2020 capture: connected, start (streamSid, callSid, customParameters), media,
    the mark echo; and our media/mark carry Twilio's shape."""
    messages = sample("twilio_media_stream_capture.json")
    framing = framing_for("twilio")
    connected, start, media, mark = (framing.decode(json.dumps(m)) for m in messages["from_twilio"])
    sid = "9e7ee906-377b-408f-a852-eebfb834422a"
    assert connected == StreamMessage(StreamEvent.CONNECTED)
    assert start == StreamMessage(
        StreamEvent.START,
        stream_id=sid,
        provider_call_id="CA3c95a2a6bba5fde93a5dea01e388e8fb",
        parameters={"aCutomParameter": "aCustomValue that was set in TwiML"},
        encoding="audio/x-mulaw",
    )
    assert media is not None and media.kind is StreamEvent.MEDIA
    assert media.payload == messages["from_twilio"][2]["media"]["payload"]
    assert mark == StreamMessage(StreamEvent.MARK, name="Repeat message 0")
    sent_media, sent_mark = messages["to_twilio"]
    assert json.loads(framing.encode_media("QUJD")) == {**sent_media, "media": {"payload": "QUJD"}}
    assert json.loads(framing.encode_mark("Repeat message 0")) == sent_mark


def twilio_events(form: dict[str, str], query: dict[str, str] | None = None) -> list[ProviderEvent]:
    cb = twilio_parse.parse_callback((query or {}).items(), form.items())
    return twilio_parse.to_events(cb)


def test_twilio_voice_webhooks() -> None:
    """Inbound request -> offered + answered; every CallStatus; Gather speech; signatures."""
    hooks = sample("twilio_voice_webhooks.json")
    inbound = twilio_events(hooks["inbound_voice_request"])
    assert [(e.type, e.direction, e.from_number, e.to_number) for e in inbound] == [
        (EventType.INITIATED, Direction.INBOUND, "+14158675309", "+18005551212"),
        (EventType.ANSWERED, Direction.INBOUND, "+14158675309", "+18005551212"),
    ]
    query = {"callId": "c-1", "type": "status"}
    seen = []
    for status in hooks["status_callbacks"]:
        events = twilio_events({**hooks["status_callback_common"], **status}, query)
        seen.append((status["CallStatus"], [(e.type, e.end_state) for e in events]))
    assert seen == [
        ("initiated", []),
        ("ringing", [(EventType.RINGING, None)]),
        ("in-progress", [(EventType.ANSWERED, None)]),
        ("completed", [(EventType.ENDED, CallState.COMPLETED)]),
        ("busy", [(EventType.ENDED, CallState.BUSY)]),
        ("no-answer", [(EventType.ENDED, CallState.NO_ANSWER)]),
        ("failed", [(EventType.ENDED, CallState.FAILED)]),
        ("canceled", [(EventType.ENDED, CallState.HANGUP_BOT)]),
    ]
    (speech,) = twilio_events(
        hooks["gather_speech_action"], {"callId": "c-1", "turnToken": "T1", "n": "x"}
    )
    assert (speech.type, speech.transcript, speech.confidence, speech.turn_token) == (
        EventType.SPEECH,
        "I'd like to book a table for two.",
        0.9128386,
        "T1",
    )
    assert set(hooks["amd_answered_by_values"]) >= {"human", "machine_start", "fax", "unknown"}
    vector = hooks["signature_vector"]
    verifier = TwilioVerifier(vector["auth_token"])
    params = sorted(vector["params"].items())
    assert verifier.compute_signature(vector["url"], params) == vector["X-Twilio-Signature"]
    verifier.verify_form(vector["url"], params, vector["X-Twilio-Signature"])
    verifier.verify_form(vector["url"], params, vector["with_port_443"])
    json_url = f"{vector['url']}&bodySHA256={vector['json_bodySHA256']}"
    verifier.verify_json(json_url, vector["json_body"].encode(), vector["json_signature"])


def test_twilio_gather_digits_are_a_dtmf_answer_of_the_turn() -> None:
    """Gather's `Digits` (DTMF input) is one complete entry tagged with the turn token."""
    hooks = sample("twilio_voice_webhooks.json")
    form = {**hooks["gather_speech_action"], "Digits": "1234"}
    del form["SpeechResult"], form["Confidence"]
    (event,) = twilio_events(form, {"callId": "c-1", "turnToken": "T2", "n": "y"})
    assert (event.type, event.digits, event.is_final, event.turn_token) == (
        EventType.DTMF,
        "1234",
        True,
        "T2",
    )


# ---------------------------------------------------------------------------------- Plivo


def test_plivo_audio_stream_messages() -> None:
    """start (extra_headers `k=v;k=v` -> every key), media, dtmf, playedStream and played (both
    confirm playback), clearedAudio; and our playAudio/checkpoint/clearAudio shapes."""
    messages = sample("plivo_audio_stream_messages.json")
    framing = framing_for("plivo")
    assert isinstance(framing, PlivoFraming)
    decoded = [framing.decode(json.dumps(m)) for m in messages["from_plivo"]]
    assert decoded == [
        StreamMessage(
            StreamEvent.START,
            stream_id="87654321-4321-4321-4321-cba987654321",
            provider_call_id="12345678-1234-1234-1234-123456789abc",
            parameters={"userId": "12345", "sessionId": "abc-xyz"},
            encoding="audio/x-mulaw",
        ),
        StreamMessage(StreamEvent.MEDIA, payload="//uQxAAAAAANIAAAAAExBTUUzLjEwMFVV"),
        StreamMessage(StreamEvent.DTMF, digit="5"),
        StreamMessage(StreamEvent.MARK, name="customer greeting audio"),
        StreamMessage(StreamEvent.MARK, name="customer greeting audio"),
        StreamMessage(StreamEvent.CLEARED),
    ]
    play, checkpoint, clear = messages["to_plivo"]
    sent = json.loads(framing.encode_media("QUJD"))
    assert sent == {**play, "media": {**play["media"], "payload": "QUJD"}}
    framing.stream_id = checkpoint["streamId"]  # learnt from `start` on a live socket
    assert json.loads(framing.encode_mark("customer greeting audio")) == checkpoint
    framing.stream_id = clear["streamId"]
    assert json.loads(framing.encode_clear()) == clear


def plivo_events(form: dict[str, str], query: dict[str, str]) -> list[ProviderEvent]:
    return plivo_wire.to_events(plivo_wire.parse_callback(query, form))


def test_plivo_voice_callbacks() -> None:
    """Answer (out, re-keyed from RequestUUID; in), ring, every hang-up row, GetInput speech and
    digits."""
    hooks = sample("plivo_voice_callbacks.json")
    (answered,) = plivo_events(hooks["answer_outbound"], {"flow": "answer", "callId": "c-1"})
    assert (answered.type, answered.provider_call_id, answered.previous_provider_call_id) == (
        EventType.ANSWERED,
        "4d04c52e-cea3-4458-bbdb-0bfc314ee7cd",
        "9834029e-58b6-11e1-b8b7-a5bd0e4e126f",
    )
    (inbound,) = plivo_events(hooks["answer_inbound"], {})
    assert (inbound.type, inbound.direction, inbound.from_number, inbound.to_number) == (
        EventType.ANSWERED,
        Direction.INBOUND,
        "918687888990",
        "919798990001",
    )
    (ring,) = plivo_events(hooks["ring_outbound"], {"flow": "ring", "callId": "c-1"})
    assert ring.type is EventType.RINGING
    ends = []
    for row in hooks["hangups"]:
        (event,) = plivo_events(
            {**hooks["hangup_common"], **row}, {"flow": "hangup", "callId": "c-1"}
        )
        ends.append((row["CallStatus"], row["HangupSource"], event.end_state))
    assert ends == [
        ("completed", "Call recipient", CallState.HANGUP_USER),
        ("completed", "API Request", CallState.HANGUP_BOT),
        ("completed", "Plivo", CallState.COMPLETED),
        ("completed", "Answer XML", CallState.HANGUP_BOT),
        ("busy", "Call recipient", CallState.BUSY),
        ("no-answer", "Plivo", CallState.NO_ANSWER),
        ("timeout", "Plivo", CallState.FAILED),  # carrier gave up connecting (was no-answer)
        ("cancel", "API Request", CallState.HANGUP_BOT),
        ("failed", "Carrier", CallState.FAILED),
    ]
    query = {"flow": "getinput", "callId": "c-1", "turnToken": "T3"}
    (speech,) = plivo_events(hooks["getinput_speech_action"], query)
    assert (speech.type, speech.transcript, speech.confidence, speech.turn_token) == (
        EventType.SPEECH,
        "I want to check my balance",
        0.92,
        "T3",
    )
    (digits,) = plivo_events(hooks["getinput_dtmf_action"], query)
    assert (digits.type, digits.digits, digits.is_final, digits.turn_token) == (
        EventType.DTMF,
        "1",
        True,
        "T3",
    )


class PlivoRest(FakeServer):
    """Plivo's REST answers as the plivo-python fixtures give them."""

    def __init__(self, rest: dict[str, Any]) -> None:
        self.rest = rest
        self.live = False
        super().__init__()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/Account/{auth}/Call/", self._create)
        app.router.add_get("/v1/Account/{auth}/Call/{uuid}/", self._get)

    async def _create(self, request: web.Request) -> web.Response:
        return web.json_response(self.rest["call_create_response"], status=201)

    async def _get(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status == "live" and self.live:
            return web.json_response(self.rest["live_call_get_response"])
        if status:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(self.rest["call_get_cdr_response"])


@pytest.fixture
async def plivo_rest() -> AsyncIterator[tuple[PlivoProvider, PlivoRest]]:
    async with PlivoRest(sample("plivo_voice_callbacks.json")["rest"]) as rest:
        provider = PlivoProvider()
        config = Config(
            provider="plivo",
            plivo=PlivoConfig(
                auth_id="MAJHUDTEYWLSIUYTDBCZ", auth_token="token", api_base_url=f"{rest.origin}/v1"
            ),
        )
        provider.bind(Sink(), ProviderContext(config, "https://vc.example.com/voice/webhook"))
        await provider.start()
        try:
            yield provider, rest
        finally:
            await provider.close()


async def test_plivo_rest_fixtures(plivo_rest: tuple[PlivoProvider, PlivoRest]) -> None:
    """Create gives the request_uuid; a live call is LIVE; a CDR with neither `call_state` nor
    `answer_time` (an unanswered call) reconciles to no-answer, not completed."""
    provider, rest = plivo_rest
    pid = await provider.place_call(
        DialRequest("c-1", "+919999999999", "+919879879876", CallMode.CONVERSATION, "Hi", 30, 0)
    )
    assert pid == "9834029e-58b6-11e1-b8b7-a5bd0e4e126f"
    record = CallRecord(
        "c-1",
        "plivo",
        Direction.OUTBOUND,
        CallMode.CONVERSATION,
        "+919879879876",
        "+919999999999",
        provider_call_id="4d04c52e-cea3-4458-bbdb-0bfc314ee7cd",
    )
    rest.live = True
    assert (await provider.fetch_status(record)).state is RemoteState.LIVE
    rest.live = False
    status = await provider.fetch_status(record)
    assert (status.state, status.end_state) == (RemoteState.ENDED, CallState.NO_ANSWER)
    rest.rest["call_get_cdr_response"] = {
        **rest.rest["call_get_cdr_response"],
        "answer_time": "2017-05-22 17:49:31+05:30",
    }
    assert (await provider.fetch_status(record)).end_state is CallState.COMPLETED
