"""OpenAI realtime transcription client against a local fake of the realtime websocket."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from daemon.errors import ConfigError, SpeechError
from daemon.speech.stt.factory import create_stt
from daemon.speech.stt.openai_realtime import BATCH_BYTES, MAX_BUFFERED_BYTES, OpenAiRealtimeStt
from tests.fakes.openai import FakeOpenAI


@dataclass
class Listener:
    """Records every callback; tests await conditions on it instead of sleeping."""

    speech_starts: int = 0
    partials: list[str] = field(default_factory=list)
    finals: list[tuple[str, float | None]] = field(default_factory=list)
    errors: list[SpeechError] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_speech_start(self) -> None:
        self.speech_starts += 1
        self.changed.set()

    def on_partial(self, text: str) -> None:
        self.partials.append(text)
        self.changed.set()

    def on_final(self, text: str, confidence: float | None) -> None:
        self.finals.append((text, confidence))
        self.changed.set()

    def on_error(self, error: SpeechError) -> None:
        self.errors.append(error)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                await self.changed.wait()
                self.changed.clear()


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.001)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def listener() -> Listener:
    return Listener()


@pytest.fixture
async def stt(
    fake: FakeOpenAI, session: aiohttp.ClientSession, listener: Listener
) -> AsyncIterator[OpenAiRealtimeStt]:
    client = _client(fake, session, listener)
    await client.connect()
    await fake.wait_for(lambda: bool(fake.connections and fake.current.updates))
    yield client
    await client.close()


def _client(
    fake: FakeOpenAI, session: aiohttp.ClientSession, listener: Listener, key: str | None = None
) -> OpenAiRealtimeStt:
    return OpenAiRealtimeStt(
        session,
        listener,
        api_key=key or fake.api_key,
        url=fake.realtime_url,
        vad_threshold=0.6,
        silence_duration_ms=700,
        backoff_base=0.01,
        backoff_max=0.05,
    )


async def test_session_update_and_headers(fake: FakeOpenAI, stt: OpenAiRealtimeStt) -> None:
    """On open: bearer + beta headers, then mu-law input with server VAD settings."""
    conn = fake.current
    assert conn.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert conn.headers["OpenAI-Beta"] == "realtime=v1"
    assert conn.query == {"intent": "transcription"}
    assert conn.updates == [
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 700,
                },
            },
        }
    ]
    assert stt.connected


async def test_audio_is_forwarded_unchanged(fake: FakeOpenAI, stt: OpenAiRealtimeStt) -> None:
    """One second of 20 ms frames arrives byte for byte, in order."""
    frames = [bytes([i % 256]) * 160 for i in range(50)]
    for frame in frames:
        stt.send_audio(frame)
        await asyncio.sleep(0)  # let the writer run, as the media loop would between frames
    await fake.wait_for(lambda: len(fake.current.audio) == 8000)
    assert bytes(fake.current.audio) == b"".join(frames)
    assert stt.dropped_bytes == 0


async def test_caller_audio_goes_out_in_100_ms_appends(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt
) -> None:
    """Four 20 ms frames wait; the fifth completes 100 ms and all five leave as one append.
    A partial batch whose audio stopped flowing is sent after 200 ms anyway."""
    for _ in range(4):
        stt.send_audio(b"\x07" * 160)
        await asyncio.sleep(0.01)
    assert len(fake.current.audio) == 0
    stt.send_audio(b"\x07" * 160)
    await fake.wait_for(lambda: len(fake.current.audio) == BATCH_BYTES)
    assert BATCH_BYTES == 800
    started = asyncio.get_running_loop().time()
    stt.send_audio(b"\x08" * 320)
    await fake.wait_for(lambda: len(fake.current.audio) == BATCH_BYTES + 320)
    waited = asyncio.get_running_loop().time() - started
    assert 0.15 <= waited <= 1.0, waited


async def test_send_audio_never_blocks_and_bounds_the_backlog(
    fake: FakeOpenAI, session: aiohttp.ClientSession, listener: Listener
) -> None:
    """Audio that arrives before the writer can send (here: right after connect, before the
    loop ran the writer) waits in a bounded buffer: a burst larger than it keeps only the
    newest audio and counts the rest."""
    client = _client(fake, session, listener)
    try:
        await client.connect()
        burst = bytes(range(256)) * 100  # 25600 bytes without yielding to the loop
        for start in range(0, len(burst), 160):
            client.send_audio(burst[start : start + 160])
        await fake.wait_for(
            lambda: bool(fake.connections) and len(fake.current.audio) == MAX_BUFFERED_BYTES
        )
        assert bytes(fake.current.audio) == burst[-MAX_BUFFERED_BYTES:]
        assert client.dropped_bytes == len(burst) - MAX_BUFFERED_BYTES
        assert client.direct_sends == 0
    finally:
        await client.close()


async def test_full_batches_are_written_at_once_while_the_writer_is_idle(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt
) -> None:
    """Once the writer task is idle, each full 100 ms batch is written by send_audio itself
    (no task wake-up per batch, SPEC 12): even a burst without a loop turn between frames
    reaches the vendor whole, in order, in 100 ms appends, with nothing dropped."""
    burst = bytes(range(256)) * 100  # 25600 bytes without yielding to the loop
    for start in range(0, len(burst), 160):
        stt.send_audio(burst[start : start + 160])
    assert stt.direct_sends == len(burst) // BATCH_BYTES
    await fake.wait_for(lambda: len(fake.current.audio) == len(burst))
    assert bytes(fake.current.audio) == burst
    assert stt.dropped_bytes == 0


async def test_transcription_events(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener
) -> None:
    """speech_started, accumulated deltas and the completed transcript reach the listener."""
    await fake.speech_started()
    await fake.transcript_delta("Hel")
    await fake.transcript_delta("lo there")
    await fake.transcript_completed(" Hello there. ")
    await listener.wait_for(lambda: bool(listener.finals))
    assert listener.speech_starts == 1
    assert listener.partials == ["Hel", "Hello there"]
    assert listener.finals == [("Hello there.", None)]


async def test_confidence_from_logprobs(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener
) -> None:
    """With logprobs, confidence is the mean token probability."""
    await fake.transcript_completed("Yes.", logprobs=[-0.1, -0.3])
    await listener.wait_for(lambda: bool(listener.finals))
    ((text, confidence),) = listener.finals
    assert text == "Yes." and confidence == pytest.approx(math.exp(-0.2))


async def test_empty_transcript_and_error_events_are_not_finals(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """Noise (empty transcript) gives no final; an error event is logged, the session lives."""
    with caplog.at_level(logging.WARNING):
        await fake.transcript_completed("  ", item_id="a")
        await fake.emit({"type": "error", "error": {"message": "buffer too small"}})
        await fake.transcript_completed("Real words.", item_id="b")
        await listener.wait_for(lambda: bool(listener.finals))
    assert listener.finals == [("Real words.", None)]
    assert "buffer too small" in caplog.text
    assert stt.connected and not listener.errors


async def test_reconnects_after_a_drop_and_drops_audio_meanwhile(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener
) -> None:
    """A dropped socket is reopened (with the session update); audio sent while down is lost;
    the outage is reported once, however many attempts it took."""
    fake.realtime_reject = [503, 503]  # the first two reconnect attempts fail
    await fake.drop()
    await fake.wait_for(lambda: fake.handshakes >= 2)
    assert not stt.connected
    stt.send_audio(b"\x01" * 160)  # disconnected: dropped, does not wait
    assert stt.dropped_bytes == 160
    await fake.wait_for(lambda: len(fake.connections) == 2 and bool(fake.current.updates))
    await _until(lambda: stt.connected)  # client-side state: poll, nothing to await
    stt.send_audio(b"\x02" * BATCH_BYTES)
    await fake.wait_for(lambda: len(fake.current.audio) == BATCH_BYTES)
    assert bytes(fake.current.audio) == b"\x02" * BATCH_BYTES
    assert fake.handshakes == 4
    assert len(listener.errors) == 1 and stt.outages == 1
    assert "HTTP 503" in listener.errors[0].message
    assert "retrying" in listener.errors[0].message
    assert listener.errors[0].details["retrying"] is True


async def test_keeps_reconnecting_for_the_life_of_the_call(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener
) -> None:
    """Far more failed attempts than the old limit of five: still retrying, then back; a
    second outage later is reported again."""
    fake.realtime_reject = [503] * 12
    await fake.drop()
    await fake.wait_for(
        lambda: len(fake.connections) == 2 and bool(fake.current.updates), timeout=10
    )
    assert fake.handshakes == 1 + 12 + 1
    await _until(lambda: stt.connected)
    assert len(listener.errors) == 1
    await fake.transcript_completed("Back again.")
    await listener.wait_for(lambda: bool(listener.finals))
    fake.realtime_reject = [503]
    await fake.drop()
    await fake.wait_for(lambda: len(fake.connections) == 3 and bool(fake.current.updates))
    assert len(listener.errors) == 2 and stt.outages == 2


async def test_unreachable_at_connect_is_reported_and_retried(
    fake: FakeOpenAI, session: aiohttp.ClientSession, listener: Listener
) -> None:
    """The first connect fails (the vendor is down): connect() returns, the listener hears of
    it once, and the session connects when the vendor is back, without the caller's help."""
    fake.realtime_reject = [502, 502, 502]
    client = _client(fake, session, listener)
    try:
        await client.connect()
        assert not client.connected
        assert len(listener.errors) == 1 and "HTTP 502" in listener.errors[0].message
        await fake.wait_for(lambda: bool(fake.connections and fake.current.updates))
        await _until(lambda: client.connected)
        client.send_audio(b"\x05" * BATCH_BYTES)
        await fake.wait_for(lambda: len(fake.current.audio) == BATCH_BYTES)
        assert len(listener.errors) == 1
    finally:
        await client.close()


async def test_backoff_doubles_up_to_the_cap_with_jitter(
    session: aiohttp.ClientSession, listener: Listener
) -> None:
    """Delays double from the base and stop at the cap; each is jittered in its upper half."""
    client = OpenAiRealtimeStt(session, listener, api_key="k", backoff_base=0.5, backoff_max=10.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0), (40, 10.0)]:
        delays = [client._backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)


async def test_refused_credentials_stop_reconnecting(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt, listener: Listener
) -> None:
    """A 401 on reconnect is final: retrying a bad key is pointless."""
    fake.realtime_reject = [401]
    await fake.drop()
    await listener.wait_for(lambda: bool(listener.errors))
    assert "HTTP 401" in listener.errors[0].message
    assert "retrying" not in listener.errors[0].message
    assert fake.handshakes == 2


async def test_connect_with_bad_key_raises_without_the_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession, listener: Listener
) -> None:
    """The first connect fails loudly: status and URL, never the key."""
    client = _client(fake, session, listener, key="sk-bad-secret-key-42")
    with pytest.raises(SpeechError) as caught:
        await client.connect()
    assert "HTTP 401" in caught.value.message and fake.realtime_url in caught.value.message
    assert "sk-bad" not in caught.value.message
    await client.close()


async def test_close_is_idempotent_and_closes_the_socket(
    fake: FakeOpenAI, stt: OpenAiRealtimeStt
) -> None:
    """After close the server sees the socket end and audio is dropped."""
    await stt.close()
    await stt.close()
    await fake.wait_for(lambda: fake.current.closed)
    stt.send_audio(b"\xff" * 160)
    assert stt.dropped_bytes == 160 and not stt.connected


@dataclass(frozen=True)
class StreamingCfg:
    api_key: str | None = "sk-stt"
    stt_provider: str = "openai-realtime"
    stt_model: str = "gpt-4o-mini-transcribe"
    stt_url: str | None = None
    silence_duration_ms: int = 800
    vad_threshold: float = 0.5


async def test_factory(session: aiohttp.ClientSession, listener: Listener) -> None:
    """create_stt reads [streaming]; unknown provider or missing key is a config error."""
    client = create_stt(StreamingCfg(), session, listener)
    assert isinstance(client, OpenAiRealtimeStt)
    assert client.url == "wss://api.openai.com/v1/realtime?intent=transcription"
    assert client.model == "gpt-4o-mini-transcribe"
    with pytest.raises(ConfigError, match="unknown provider 'deepgram'"):
        create_stt(StreamingCfg(stt_provider="deepgram"), session, listener)
    with pytest.raises(ConfigError, match=r"streaming\.api_key"):
        create_stt(StreamingCfg(api_key=None), session, listener)
