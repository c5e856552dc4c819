"""The Twilio provider's webhook replies and control plane, with a scripted engine and hub.

The "engine" here is a plain sink function that reacts to events the way `CallEngine` does
(speak the greeting inside the same task, reject, ...), so the TwiML each request gets back can
be asserted exactly. REST goes to the Twilio simulator.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlencode

import pytest
from multidict import CIMultiDict

from daemon.config.model import Config, StreamingConfig, TwilioConfig
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.model.state import CallState
from daemon.providers.base import (
    DialRequest,
    ProviderContext,
    RemoteState,
    ReplyDraft,
    WebhookRequest,
)
from daemon.providers.twilio import TwilioProvider
from daemon.store.location import StoreLocation
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

WEBHOOK = "https://voice.example.com/voice/webhook"
STREAM = "wss://voice.example.com/voice/stream"
SID = "CA" + "1" * 32
HOLD = '<Response><Pause length="60"/></Response>'


class Engine:
    """Collects events; `on_event` plays the engine's follow-up inside the sink, handing the
    provider back the reply draft it passed in (as `CallEngine` does)."""

    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []
        self.on_event: Callable[[ProviderEvent, ReplyDraft | None], Awaitable[None]] | None = None

    async def __call__(
        self, events: Sequence[ProviderEvent], reply: ReplyDraft | None = None
    ) -> None:
        for event in events:
            self.events.append(event)
            if self.on_event is not None:
                await self.on_event(event, reply)


class FakeSession:
    """A media session that records what it was asked to say."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str | None]] = []

    async def speak(self, text: str, *, turn_token: str | None = None) -> None:
        self.said.append((text, turn_token))

    async def wait_idle(self) -> None:
        return None


class FakeHub:
    """The media hub surface the provider uses."""

    def __init__(self) -> None:
        self.tts = object()
        self.tokens: dict[str, str] = {}
        self.revoked: list[str] = []
        self.sessions: dict[str, FakeSession] = {}
        self.bound = asyncio.Event()
        self.prefetched: list[tuple[str, str | None, str]] = []

    def issue_token(self, call_id: str, provider_call_id: str | None) -> str:
        return self.tokens.setdefault(call_id, f"tok-{call_id}")

    def revoke(self, call_id: str) -> None:
        self.revoked.append(call_id)

    def session(self, call_id: str) -> FakeSession | None:
        return self.sessions.get(call_id)

    async def wait_session(self, call_id: str) -> FakeSession:
        await self.bound.wait()
        return self.sessions[call_id]

    def prefetch(self, call_id: str, number: str | None, text: str) -> None:
        self.prefetched.append((call_id, number, text))

    def drop_prefetch(self, call_id: str) -> None:
        self.prefetched = [entry for entry in self.prefetched if entry[0] != call_id]


def record(
    call_id: str = "c1",
    *,
    mode: CallMode = CallMode.CONVERSATION,
    direction: Direction = Direction.OUTBOUND,
    sid: str | None = SID,
) -> CallRecord:
    return CallRecord(
        call_id,
        "twilio",
        direction,
        mode,
        "+15550100000",
        "+15550001234",
        state=CallState.ANSWERED,
        provider_call_id=sid,
    )


def request(query: dict[str, str], **form: str) -> WebhookRequest:
    body = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": SID,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
        "From": "+15550100000",
        "To": "+15550001234",
    }
    body.update(form)
    url = WEBHOOK + ("?" + urlencode(query) if query else "")
    return WebhookRequest(
        "POST",
        "/voice/webhook",
        tuple(query.items()),
        CIMultiDict(),
        urlencode(body).encode(),
        "127.0.0.1",
        url,
    )


def verbs(reply: bytes) -> list[str]:
    return [child.tag for child in ET.fromstring(reply)]


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    """The REST side."""
    async with TwilioSimulator() as simulator:
        simulator.auto_answer = False
        yield simulator


def make_provider(
    sim: TwilioSimulator, *, hub: FakeHub | None = None
) -> tuple[TwilioProvider, Engine]:
    config = Config(
        provider="twilio",
        store=StoreLocation.sqlite(Path("/nonexistent")),
        twilio=TwilioConfig(
            account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_base_url=sim.api_base_url
        ),
        streaming=StreamingConfig(enabled=hub is not None),
    )
    provider, engine = TwilioProvider(), Engine()
    provider.bind(engine, ProviderContext(config, WEBHOOK, STREAM if hub else None, media=hub))
    return provider, engine


@pytest.fixture
async def provider(sim: TwilioSimulator) -> AsyncIterator[tuple[TwilioProvider, Engine]]:
    """A started provider without streaming."""
    made = make_provider(sim)
    await made[0].start()
    yield made
    await made[0].close()


async def test_opening_line_goes_into_the_url_fetch_reply(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """What the engine says while the Url fetch is handled is rendered into its reply: no REST."""
    twilio, engine = provider

    async def answered(event: ProviderEvent, reply: ReplyDraft | None) -> None:
        if event.type is EventType.ANSWERED:
            await twilio.speak(record(), "Hi, it's the clinic.", turn_token=None, reply=reply)

    engine.on_event = answered
    reply = await twilio.handle_webhook(request({"callId": "c1"}))
    assert reply.status == 200 and reply.content_type == "application/xml"
    assert verbs(reply.body) == ["Say", "Pause", "Redirect"]
    assert b"Hi, it&#x27;s the clinic." in reply.body or b"Hi, it's the clinic." in reply.body
    assert [e.type for e in engine.events] == [EventType.ANSWERED]
    assert sim.requests == []


async def test_status_callback_gets_an_empty_response_and_says_nothing(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """Twilio ignores a status callback's body: speech during it must go by REST, not into it."""
    twilio, engine = provider
    sid = await twilio.rest.create_call(to="+15550001234", from_="+15550100000", twiml=HOLD)
    await sim.answer(sid)

    async def answered(event: ProviderEvent, reply: ReplyDraft | None) -> None:
        await twilio.speak(record(sid=sid), "Hello", turn_token=None, reply=reply)

    engine.on_event = answered
    reply = await twilio.handle_webhook(
        request(
            {"callId": "c1", "type": "status", "mode": "notify"}, CallSid=sid, SequenceNumber="2"
        )
    )
    assert reply.body.endswith(b"<Response />")
    (update,) = sim.recorded("POST", f"/Calls/{sid}.json")
    assert "<Say" in (update.get("Twiml") or "")


async def test_inbound_reject_renders_reject_and_hangs_up_nothing(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """A rejected inbound caller gets <Reject/>; a later request for it too; no REST hang-up."""
    twilio, engine = provider
    inbound = record("in-1", direction=Direction.INBOUND)

    async def policy(event: ProviderEvent, reply: ReplyDraft | None) -> None:
        if event.type is EventType.INITIATED:
            await twilio.reject(inbound, reply=reply)

    engine.on_event = policy
    voice = request({}, CallStatus="ringing", Direction="inbound")
    reply = await twilio.handle_webhook(voice)
    assert verbs(reply.body) == ["Reject"]
    assert [e.type for e in engine.events] == [EventType.INITIATED, EventType.ANSWERED]
    engine.on_event = None
    again = await twilio.handle_webhook(voice)
    assert verbs(again.body) == ["Reject"]
    await twilio.reject(inbound)  # outside a request: remembered, no REST call
    assert sim.requests == []


async def test_inbound_greeting_is_say_and_gather(
    provider: tuple[TwilioProvider, Engine],
) -> None:
    """An accepted inbound call: greeting and a Gather carrying the turn token and callId."""
    twilio, engine = provider
    inbound = record("in-2", direction=Direction.INBOUND)

    async def accept(event: ProviderEvent, reply: ReplyDraft | None) -> None:
        if event.type is EventType.ANSWERED:
            await twilio.answer(inbound)
            await twilio.speak(
                inbound, "Hello! How can I help you today?", turn_token="T1", reply=reply
            )

    engine.on_event = accept
    reply = await twilio.handle_webhook(request({}, CallStatus="ringing", Direction="inbound"))
    assert verbs(reply.body) == ["Say", "Gather", "Redirect"]
    gather = ET.fromstring(reply.body)[1]
    assert "callId=in-2" in gather.attrib["action"] and "turnToken=T1" in gather.attrib["action"]


async def test_listen_loop_and_hold_loop_without_engine_speech(
    provider: tuple[TwilioProvider, Engine],
) -> None:
    """`flow=listen` gathers again with the same token; `flow=hold` keeps holding."""
    twilio, _ = provider
    listen = await twilio.handle_webhook(
        request({"callId": "c1", "flow": "listen", "turnToken": "T9"})
    )
    assert verbs(listen.body) == ["Gather", "Redirect"]
    assert b"turnToken=T9" in listen.body
    hold = await twilio.handle_webhook(request({"callId": "c1", "flow": "hold"}))
    assert verbs(hold.body) == ["Pause", "Redirect"]


async def test_requests_for_an_ended_call_hang_up(
    provider: tuple[TwilioProvider, Engine],
) -> None:
    """After the final status callback, a stray keep-alive fetch gets <Hangup/>."""
    twilio, _ = provider
    await twilio.handle_webhook(
        request({"callId": "c1", "type": "status"}, CallStatus="completed", SequenceNumber="4")
    )
    stray = await twilio.handle_webhook(request({"callId": "c1", "flow": "hold"}))
    assert verbs(stray.body) == ["Hangup"]


async def test_replay_reply_is_empty(provider: tuple[TwilioProvider, Engine]) -> None:
    """SPEC 8.6: a replay gets an empty <Response/>, whatever the first answer was."""
    twilio, _ = provider
    assert twilio.replay_reply(None).body.endswith(b"<Response />")


async def test_place_call_conversation_and_notify(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """Conversation dials with Url; notify with inline Twiml; both with status callbacks."""
    twilio, _ = provider
    for mode in (CallMode.CONVERSATION, CallMode.NOTIFY):
        await twilio.place_call(
            DialRequest(f"id-{mode}", "+15550001234", "+15550100000", mode, "Hello there", 25, 2)
        )
    conversation, notify = sim.creates
    assert conversation.get("Url") == f"{WEBHOOK}?callId=id-conversation"
    assert conversation.get("Twiml") is None and conversation.get("Timeout") == "25"
    assert notify.get("Url") is None and "<Hangup />" in (notify.get("Twiml") or "")
    assert notify.get("StatusCallback") == (f"{WEBHOOK}?callId=id-notify&type=status&mode=notify")


async def test_dtmf_and_hangup_over_rest(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """DTMF is a live update with <Play digits>; hang-up tolerates an unknown call."""
    twilio, _ = provider
    sid = await twilio.rest.create_call(to="+15550001234", from_="+15550100000", twiml=HOLD)
    await sim.answer(sid)
    await twilio.send_dtmf(record(sid=sid), "12W#")
    (update,) = sim.recorded("POST", f"/Calls/{sid}.json")
    assert '<Play digits="12ww#" />' in (update.get("Twiml") or "")
    await twilio.hangup(record(sid="CA" + "0" * 32))  # 404: already over, no error


async def test_fetch_status_mapping(
    provider: tuple[TwilioProvider, Engine], sim: TwilioSimulator
) -> None:
    """Live -> LIVE; 404 -> ENDED completed; ended notify -> hangup-bot; error -> UNKNOWN."""
    twilio, _ = provider
    sid = await twilio.rest.create_call(to="+15550001234", from_="+15550100000", twiml=HOLD)
    await sim.answer(sid)
    assert (await twilio.fetch_status(record(sid=sid))).state is RemoteState.LIVE
    gone = await twilio.fetch_status(record(sid="CA" + "0" * 32))
    assert (gone.state, gone.end_state) == (RemoteState.ENDED, CallState.COMPLETED)
    await sim.callee_hangup(sid)
    ended = await twilio.fetch_status(record(sid=sid, mode=CallMode.NOTIFY))
    assert (ended.state, ended.end_state) == (RemoteState.ENDED, CallState.HANGUP_BOT)
    sim.fetch_error = 503
    assert (await twilio.fetch_status(record(sid=sid))).state is RemoteState.UNKNOWN


async def test_streaming_connects_a_stream_and_speaks_through_the_session(
    sim: TwilioSimulator,
) -> None:
    """With streaming on, the Url fetch answer is <Connect><Stream> with the hub's token, the
    opening line waits for the session, and later speech goes through it (no TwiML update)."""
    hub = FakeHub()
    twilio, engine = make_provider(sim, hub=hub)
    await twilio.start()
    try:

        async def answered(event: ProviderEvent, reply: ReplyDraft | None) -> None:
            if event.type is EventType.ANSWERED:
                await twilio.speak(record(), "Hi there", turn_token=None, reply=reply)

        engine.on_event = answered
        reply = await twilio.handle_webhook(request({"callId": "c1"}))
        root = ET.fromstring(reply.body)
        assert [c.tag for c in root] == ["Connect"]
        stream = root[0][0]
        assert stream.attrib == {"url": STREAM}
        assert {p.attrib["name"]: p.attrib["value"] for p in stream} == {
            "token": "tok-c1",
            "callId": "c1",
        }
        session = FakeSession()
        hub.sessions["c1"] = session
        hub.bound.set()
        for _ in range(100):
            if session.said:
                break
            await asyncio.sleep(0.01)
        assert session.said == [("Hi there", None)]
        await twilio.speak(record(), "Next?", turn_token="T2")
        assert session.said[-1] == ("Next?", "T2")
        assert sim.requests == []
        await twilio.handle_webhook(
            request({"callId": "c1", "type": "status"}, CallStatus="completed", SequenceNumber="5")
        )
        assert hub.revoked == ["c1"]
    finally:
        await twilio.close()
