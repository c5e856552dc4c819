"""The media-stream websocket end to end: a real aiohttp app with `install_media`, a Twilio
peer over a real socket, and local fakes of OpenAI TTS and realtime STT. Each test runs with
aiohttp's handler started as usual and stepped at once (the `handler_start` fixture)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from daemon.app import Daemon
from daemon.config.model import (
    Config,
    OpenAITtsConfig,
    RealtimeConfig,
    StreamingConfig,
    TtsConfig,
)
from daemon.exposure import Exposure
from daemon.media.hub import MediaHub
from daemon.media.server import install_media
from daemon.model.events import CallMode, Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from tests.fakes.openai import API_KEY, FakeOpenAI
from tests.fakes.openai_realtime import API_KEY as MODEL_KEY
from tests.fakes.openai_realtime import FakeRealtime

pytestmark = pytest.mark.usefixtures("handler_start")


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `predicate` every few milliseconds until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class FakeEngine:
    """Records what the media plane tells the engine; looks calls up like CallEngine.get."""

    records: dict[str, CallRecord] = field(default_factory=dict)
    events: list[ProviderEvent] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    async def apply(self, events: Sequence[ProviderEvent]) -> None:
        self.events.extend(events)

    async def get(self, call_id: str) -> CallRecord | None:
        for record in self.records.values():
            if call_id in (record.call_id, record.provider_call_id):
                return record
        return None

    async def end(self, call_id: str) -> None:
        self.ended.append(call_id)

    def note_spoken(self, call_id: str, text: str) -> None:
        """A realtime model's own line (the bridge reports it)."""

    async def record_tool_call(
        self, call_id: str, tool_call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        """A realtime model's tool call (the bridge reports it)."""

    def add(
        self,
        call_id: str,
        provider_call_id: str,
        *,
        direction: Direction = Direction.INBOUND,
        mode: CallMode = CallMode.CONVERSATION,
    ) -> CallRecord:
        record = CallRecord(
            call_id=call_id,
            provider="twilio",
            direction=direction,
            mode=mode,
            from_number="+15550001111",
            to_number="+15550002222",
            provider_call_id=provider_call_id,
        )
        self.records[call_id] = record
        return record


class FakeDaemon:
    """The attributes of `daemon.app.Daemon` that `install_media` uses."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.web_app = web.Application()
        self.engine = FakeEngine()
        self.media: object = None
        self.realtime: object = None
        self.exposure = Exposure("http://127.0.0.1:1/voice/webhook", None, None)


def media_config(openai_base: str, realtime_url: str, api_key: str, **streaming: Any) -> Config:
    """Streaming on, TTS and STT pointed at a local fake OpenAI."""
    settings = replace(
        StreamingConfig(enabled=True, api_key=api_key, stt_url=realtime_url), **streaming
    )
    tts = TtsConfig(
        provider="openai", openai=OpenAITtsConfig(api_key=api_key, base_url=openai_base)
    )
    return Config(streaming=settings, tts=tts)


@dataclass
class Received:
    at: float
    message: dict[str, Any]


class TwilioPeer:
    """Plays Twilio's side of a media stream and records what it receives, with times."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[Received] = []
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.received.append(Received(time.monotonic(), json.loads(message.data)))
        self.close_code = self.ws.close_code

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def start(
        self, token: str | None, call_sid: str = "CA1", stream_sid: str = "MZ1", **params: str
    ) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        custom = dict(params)
        if token is not None:
            custom["token"] = token
        await self.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": stream_sid,
                "start": {
                    "accountSid": "AC1",
                    "streamSid": stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    async def media(self, audio: bytes, stream_sid: str = "MZ1") -> None:
        payload = base64.b64encode(audio).decode()
        await self.ws.send_str(
            '{"event":"media","sequenceNumber":"2","media":{"track":"inbound",'
            f'"chunk":"1","timestamp":"20","payload":"{payload}"}},'
            f'"streamSid":"{stream_sid}"}}'
        )

    async def echo_marks(self) -> None:
        for item in self.received:
            if item.message.get("event") == "mark" and not item.message.get("_echoed"):
                item.message["_echoed"] = True
                await self.send(
                    {
                        "event": "mark",
                        "streamSid": item.message["streamSid"],
                        "mark": item.message["mark"],
                    }
                )

    def of(self, event: str) -> list[Received]:
        return [r for r in self.received if r.message.get("event") == event]

    def frames(self) -> list[tuple[float, bytes]]:
        return [(r.at, base64.b64decode(r.message["media"]["payload"])) for r in self.of("media")]

    async def closed(self, timeout: float = 5.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self._reader
        return self.close_code

    async def stop(self) -> None:
        await self.send(
            {
                "event": "stop",
                "sequenceNumber": "9",
                "streamSid": "MZ1",
                "stop": {"accountSid": "AC1", "callSid": "CA1"},
            }
        )


Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def build(
    openai: FakeOpenAI, aiohttp_client: MakeClient
) -> Callable[..., Awaitable[tuple[FakeDaemon, MediaHub, Client]]]:
    async def factory(
        *, realtime: RealtimeConfig | None = None, **streaming: Any
    ) -> tuple[FakeDaemon, MediaHub, Client]:
        config = media_config(openai.base_url, openai.realtime_url, API_KEY, **streaming)
        if realtime is not None:
            config = replace(config, realtime=realtime)
        daemon = FakeDaemon(config)
        hub = install_media(cast(Daemon, daemon))
        assert hub is not None
        hub.end_grace_seconds = 0.05
        client = await aiohttp_client(daemon.web_app)
        return daemon, hub, client

    return factory


async def connect(client: Client) -> TwilioPeer:
    return TwilioPeer(await client.ws_connect("/voice/stream"))


async def test_streaming_off_installs_nothing() -> None:
    """With streaming disabled there is no hub and no route."""
    daemon = FakeDaemon(media_config("http://x", "ws://x", "k", enabled=False))
    assert install_media(cast(Daemon, daemon)) is None
    assert daemon.media is None


async def test_more_than_max_connections_is_503(build: Any) -> None:
    """The socket over max_connections is refused with HTTP 503 before the upgrade."""
    _, _, client = await build(max_connections=1)
    first = await connect(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/voice/stream")
    assert refused.value.status == 503
    await first.ws.close()


async def test_too_many_pending_per_ip_evicts_the_oldest_with_1013(build: Any) -> None:
    """Beyond max_pending_connections_per_ip the OLDEST pending socket is closed with 1013."""
    _, _, client = await build(max_pending_connections_per_ip=1)
    first = await connect(client)
    second = await connect(client)
    assert await first.closed() == 1013
    assert not second.ws.closed
    await second.ws.close()


async def test_too_many_pending_overall_evicts_the_oldest_with_1013(build: Any) -> None:
    """max_pending_connections counts every address; the oldest makes room."""
    _, _, client = await build(max_pending_connections=1)
    first = await connect(client)
    second = await connect(client)
    assert await first.closed() == 1013
    assert not second.ws.closed
    await second.ws.close()


async def test_no_start_in_time_closes_1008(build: Any) -> None:
    """No valid start within pre_start_timeout_ms closes the socket with 1008."""
    _, _, client = await build(pre_start_timeout_ms=100)
    peer = await connect(client)
    await peer.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    assert await peer.closed() == 1008


async def test_bad_token_closes_1008(build: Any) -> None:
    """A start whose token does not match the call's is refused with 1008."""
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1")
    hub.issue_token("call-1", "CA1")
    peer = await connect(client)
    await peer.start("not-the-token")
    assert await peer.closed() == 1008
    assert hub.session("call-1") is None


async def test_unknown_call_closes_1008(build: Any) -> None:
    """A start for a call with no token (unknown or revoked) is refused with 1008."""
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1")
    token = hub.issue_token("call-1", "CA1")
    hub.revoke("call-1")
    peer = await connect(client)
    await peer.start(token)
    assert await peer.closed() == 1008


async def test_full_stream(build: Any, openai: FakeOpenAI) -> None:
    """TTS audio arrives as paced 160-byte frames, then a mark; its echo completes wait_idle.
    Caller audio reaches STT, a final transcript and a DTMF digit reach the engine, and the
    call is ended after the stream stops."""
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1")
    token = hub.issue_token("call-1", None)  # issued before the provider id was known
    peer = await connect(client)
    await peer.start(token)
    await wait_until(lambda: hub.session("call-1") is not None)
    session = hub.session("call-1")
    assert session is not None
    await wait_until(lambda: openai.connections)

    await session.speak("Hello there.", turn_token=None)
    await wait_until(lambda: peer.of("mark"))
    frames = peer.frames()
    assert len(frames) == 50  # 1 s of 24 kHz PCM -> 8000 mu-law bytes
    assert all(len(audio) == 160 for _, audio in frames)
    assert peer.received[-1].message["event"] == "mark"
    assert frames[0][0] <= peer.of("mark")[0].at
    # Paced: 1 s of audio, sent at most `lead` ahead of real time.
    span = frames[-1][0] - frames[0][0]
    assert 1.0 - hub.lead - 0.1 <= span <= 1.3
    idle = asyncio.create_task(session.wait_idle())
    await asyncio.sleep(0.05)
    assert not idle.done()  # every frame was sent, but the mark has not come back
    await peer.echo_marks()
    async with asyncio.timeout(5):
        await idle
    assert session.history[-1].heard_text == "Hello there."
    assert not session.history[-1].interrupted

    await peer.media(b"\x7f" * 160)
    await wait_until(lambda: len(openai.current.audio) >= 160)
    await openai.transcript_completed("I need help")
    await wait_until(lambda: len(daemon.engine.events) >= 1)  # STT and media: two sockets
    await peer.send(
        {
            "event": "dtmf",
            "streamSid": "MZ1",
            "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": "7"},
        }
    )
    await wait_until(lambda: len(daemon.engine.events) >= 2)
    speech, dtmf = daemon.engine.events
    assert (speech.type, speech.transcript, speech.call_id, speech.turn_token) == (
        EventType.SPEECH,
        "I need help",
        "call-1",
        None,
    )
    assert speech.provider_call_id == "CA1" and speech.is_final
    assert (dtmf.type, dtmf.digits) == (EventType.DTMF, "7")

    await peer.stop()
    await wait_until(lambda: daemon.engine.ended == ["call-1"])
    assert hub.session("call-1") is None


async def test_barge_in_sends_clear(build: Any, openai: FakeOpenAI) -> None:
    """Caller speech start while the bot speaks sends clear and stops the frames at once."""
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1")
    peer = await connect(client)
    await peer.start(hub.issue_token("call-1", "CA1"))
    await wait_until(lambda: hub.session("call-1") is not None and openai.connections)
    session = hub.session("call-1")
    assert session is not None
    await session.speak("This is a long answer. It has two sentences.", turn_token=None)
    await wait_until(lambda: len(peer.frames()) >= 10)
    await openai.speech_started()
    await wait_until(lambda: peer.of("clear"))
    await wait_until(lambda: not session.speaking)
    clear_at = peer.of("clear")[0].at
    media_after = [r for r in peer.of("media") if r.at > clear_at]
    assert media_after == []
    result = session.history[-1]
    assert result.interrupted
    assert result.heard_text != result.text
    assert peer.of("clear")[0].message == {"event": "clear", "streamSid": "MZ1"}


async def test_outbound_greeting_is_not_interrupted(build: Any, openai: FakeOpenAI) -> None:
    """Speech start during an outbound conversation call's first utterance is ignored."""
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1", direction=Direction.OUTBOUND, mode=CallMode.CONVERSATION)
    peer = await connect(client)
    await peer.start(hub.issue_token("call-1", "CA1"))
    await wait_until(lambda: hub.session("call-1") is not None and openai.connections)
    session = hub.session("call-1")
    assert session is not None
    await session.speak("Hi, this is your reminder.", turn_token=None)
    await wait_until(lambda: len(peer.frames()) >= 5)
    await openai.speech_started()
    await wait_until(lambda: peer.of("mark"))
    assert peer.of("clear") == []
    assert len(peer.frames()) == 50


async def test_twilio_upgrade_signature(openai: FakeOpenAI, aiohttp_client: MakeClient) -> None:
    """With the twilio provider the upgrade must carry a valid X-Twilio-Signature (401 if not)."""
    from daemon.config.model import TwilioConfig
    from daemon.webhooks.security import TwilioVerifier

    config = media_config(openai.base_url, openai.realtime_url, API_KEY)
    config = replace(
        config, provider="twilio", twilio=TwilioConfig(account_sid="AC1", auth_token="secret")
    )
    daemon = FakeDaemon(config)
    install_media(cast(Daemon, daemon))
    client = await aiohttp_client(daemon.web_app)
    host = f"127.0.0.1:{client.port}"
    daemon.exposure = Exposure(f"http://{host}/voice/webhook", None, None)
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        await client.ws_connect("/voice/stream")
    assert missing.value.status == 401
    bad = {
        "X-Twilio-Signature": TwilioVerifier("other").compute_signature(f"ws://{host}/voice/stream")
    }
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await client.ws_connect("/voice/stream", headers=bad)
    assert wrong.value.status == 401
    good = {
        "X-Twilio-Signature": TwilioVerifier("secret").compute_signature(
            f"ws://{host}/voice/stream"
        )
    }
    ws = await client.ws_connect("/voice/stream", headers=good)
    await ws.close()


def on_a_cycle(obj: object, among: dict[int, object]) -> bool:
    """True if ``obj`` refers to itself through objects of ``among`` (id -> object)."""
    seen = {id(obj)}
    todo = [obj]
    while todo:
        for referent in gc.get_referents(todo.pop()):
            if referent is obj:
                return True
            if id(referent) in among and id(referent) not in seen:
                seen.add(id(referent))
                todo.append(referent)
    return False


async def converse(hub: MediaHub, peer: TwilioPeer, openai: FakeOpenAI) -> None:
    """Speak, be barged in on (the speaker task is cancelled mid-sentence), hear the caller."""
    session = hub.session("call-1")
    assert session is not None
    await session.speak("This is a long answer. It has two sentences.", turn_token=None)
    await wait_until(lambda: len(peer.frames()) >= 10)
    await openai.speech_started()
    await wait_until(lambda: peer.of("clear") and not session.speaking)
    await peer.media(b"\x7f" * 800)
    await wait_until(lambda: len(openai.current.audio) >= 800)
    await openai.transcript_completed("Hold on")


async def cycles_left_by_hanging_up(
    peer: TwilioPeer, daemon: FakeDaemon, gone: Callable[[], bool]
) -> list[str]:
    """Hang ``peer``'s call up; once it ended and ``gone()`` (its vendor socket closed), the
    daemon's classes with an object left on a reference cycle."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage to look at
    try:
        await peer.stop()
        await wait_until(lambda: daemon.engine.ended == ["call-1"])
        await peer.closed()
        await wait_until(gone)
        gc.collect()
        garbage = {id(obj): obj for obj in gc.garbage}
        return sorted(
            {
                f"{type(obj).__module__}.{type(obj).__qualname__}"
                for obj in gc.garbage
                if type(obj).__module__.startswith("daemon.") and on_a_cycle(obj, garbage)
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_an_ended_stream_leaves_no_reference_cycles(build: Any, openai: FakeOpenAI) -> None:
    """While calls are live the daemon freezes whatever lived 100 ms out of the collector's
    reach (daemon/media/gcpolicy.py), so a cycle an ended call leaves would stay until the
    daemon is idle, which a busy one never is. A call that spoke, was barged in on, was
    heard and hung up leaves none of the media plane's objects on a reference cycle:
    reference counting frees them when the stream ends. (The default event loop's transports
    do refer to themselves, and whatever they hold is garbage with them; the daemon runs on
    uvloop, whose transports do not.)"""
    gc.unfreeze()  # earlier tests' garbage (some frozen by their hubs), gone before ours
    gc.collect()
    daemon, hub, client = await build()
    daemon.engine.add("call-1", "CA1")
    peer = await connect(client)
    await peer.start(hub.issue_token("call-1", "CA1"))
    await wait_until(lambda: hub.session("call-1") is not None and openai.connections)
    await converse(hub, peer, openai)  # holds the session only while it runs
    await wait_until(lambda: daemon.engine.events)
    assert await cycles_left_by_hanging_up(peer, daemon, lambda: openai.current.closed) == []


async def talk_to_the_model(hub: MediaHub, peer: TwilioPeer, model: FakeRealtime) -> None:
    """The model speaks, the caller barges in, then says something."""
    session = hub.session("call-1")
    assert session is not None
    await session.speak("Say hello.", turn_token=None)
    await wait_until(lambda: len(peer.frames()) >= 10)
    await model.speech_started()
    await wait_until(lambda: peer.of("clear"))
    await model.caller_said("Hold on")


async def test_an_ended_realtime_stream_leaves_no_reference_cycles(
    build: Any, model: FakeRealtime
) -> None:
    """The same for a call bridged to a realtime model (SPEC 15): its bridge, model socket
    and tool timers let go of one another and of the session when the stream ends."""
    gc.unfreeze()
    gc.collect()
    daemon, hub, client = await build(
        realtime=RealtimeConfig(enabled=True, base_url=model.url, api_key=MODEL_KEY)
    )
    daemon.engine.add("call-1", "CA1")
    peer = await connect(client)
    await peer.start(hub.issue_token("call-1", "CA1"))
    await wait_until(lambda: hub.session("call-1") is not None and model.sessions)
    await talk_to_the_model(hub, peer, model)
    assert await cycles_left_by_hanging_up(peer, daemon, lambda: model.current.closed) == []
