"""Streamed telephony TTS against local fakes of the OpenAI and ElevenLabs APIs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest

from daemon.errors import ConfigError, SpeechError
from daemon.media.codecs import ulaw_to_pcm16
from daemon.speech.tts.base import TtsEngine
from daemon.speech.tts.elevenlabs import ElevenLabsTts
from daemon.speech.tts.factory import create_tts
from daemon.speech.tts.openai import OpenAiTts
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.openai import FakeOpenAI


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def elevenlabs_fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _openai(fake: FakeOpenAI, session: aiohttp.ClientSession, key: str | None = None) -> OpenAiTts:
    return OpenAiTts(session, api_key=key or fake.api_key, base_url=fake.base_url, voice="nova")


def _eleven(fake: FakeElevenLabs, session: aiohttp.ClientSession) -> ElevenLabsTts:
    return ElevenLabsTts(session, api_key=fake.api_key, voice_id="voice 1", base_url=fake.base_url)


async def _collect(engine: TtsEngine, text: str = "Hello.") -> bytes:
    return b"".join([chunk async for chunk in engine.synthesize(text)])


# -- OpenAI ------------------------------------------------------------------------------------


async def test_openai_first_audio_arrives_before_synthesis_ends(
    openai_fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """The first mu-law bytes are yielded while the vendor is still sending its body."""
    openai_fake.tts_hold = asyncio.Event()
    async with aclosing(_openai(openai_fake, session).synthesize("Hello there.")) as audio:
        first = await anext(audio)
        assert first and openai_fake.tts_completed == 0
        openai_fake.tts_hold.set()
        rest = b"".join([chunk async for chunk in audio])
    assert openai_fake.tts_completed == 1
    assert len(first) + len(rest) == 8000  # 1 s at 24 kHz in, exactly 1 s at 8 kHz out


async def test_a_vendor_far_ahead_of_real_time_is_read_in_bounded_chunks(
    openai_fake: FakeOpenAI, elevenlabs_fake: FakeElevenLabs, session: aiohttp.ClientSession
) -> None:
    """A whole second of audio in one body write is still handed over 200 ms at a time at
    most, so a call never holds (and frames) more than that per step."""
    openai_fake.tts_chunks = 1
    sizes = [len(c) async for c in _openai(openai_fake, session).synthesize("Hello there.")]
    # 200 ms of 8 kHz mu-law a step; the last also carries the resampler's flushed tail
    assert sum(sizes) == 8000 and max(sizes) <= 2 * 1600, sizes
    elevenlabs_fake.chunks = 1
    elevenlabs_fake.audio = bytes(range(256)) * 40  # 10240 bytes: 1.28 s
    sizes = [len(c) async for c in _eleven(elevenlabs_fake, session).synthesize("Hi.")]
    assert sum(sizes) == 10240 and max(sizes) <= 1600, sizes


async def test_openai_request_on_the_wire(
    openai_fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """JSON body names model, voice, input and the raw pcm format."""
    await _collect(_openai(openai_fake, session), "Good morning.")
    assert openai_fake.tts_requests == [
        {
            "model": "gpt-4o-mini-tts",
            "voice": "nova",
            "input": "Good morning.",
            "response_format": "pcm",
        }
    ]


async def test_openai_audio_is_the_tone_at_8khz(
    openai_fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """Resampling and mu-law encoding keep the vendor's 440 Hz tone."""
    pcm = np.frombuffer(ulaw_to_pcm16(await _collect(_openai(openai_fake, session))), "<i2")
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    peak = np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))]
    assert abs(peak - 440) <= 1
    assert np.sqrt(np.mean(pcm[800:-800].astype(np.float64) ** 2)) > 10000  # not attenuated


async def test_openai_bad_key_error_names_status_and_url_not_key(
    openai_fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A 401 becomes SpeechError with vendor, status and URL; neither key nor its mask leaks."""
    wrong = "sk-wrong-secret-value-1234"
    with pytest.raises(SpeechError) as caught:
        await _collect(_openai(openai_fake, session, key=wrong))
    message = caught.value.message
    assert "OpenAI TTS" in message and "401" in message
    assert f"{openai_fake.base_url}/audio/speech" in message
    assert wrong not in message and "sk-wro" not in message and "1234" not in message


async def test_openai_server_error(openai_fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """A 5xx is reported with its status and the vendor's message."""
    openai_fake.tts_status = 503
    with pytest.raises(SpeechError, match=r"HTTP 503 .*fake synthesis failure"):
        await _collect(_openai(openai_fake, session))


async def test_openai_empty_audio_is_an_error(
    openai_fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A 200 with no audio would be silence on the line: report it."""
    openai_fake.tts_pcm = b""
    with pytest.raises(SpeechError, match="no audio"):
        await _collect(_openai(openai_fake, session))


async def test_unreachable_vendor(session: aiohttp.ClientSession) -> None:
    """Connection refused becomes SpeechError naming the URL."""
    async with FakeOpenAI() as fake:
        base_url = fake.base_url
    engine = OpenAiTts(session, api_key="sk-x", base_url=base_url)
    with pytest.raises(SpeechError, match=f"request to {base_url}/audio/speech failed"):
        await _collect(engine)


async def test_stopping_early_releases_the_connection(openai_fake: FakeOpenAI) -> None:
    """Barge-in closes the stream; with a one-connection pool the next request still runs."""
    openai_fake.tts_hold = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        engine = _openai(openai_fake, session)
        async with aclosing(engine.synthesize("Long reply.")) as audio:
            await anext(audio)
        openai_fake.tts_hold = None
        async with asyncio.timeout(5):
            assert len(await _collect(engine)) == 8000


# -- ElevenLabs --------------------------------------------------------------------------------


async def test_elevenlabs_passes_ulaw_through_unchanged(
    elevenlabs_fake: FakeElevenLabs, session: aiohttp.ClientSession
) -> None:
    """ulaw_8000 output is already what the phone plays: bytes arrive untouched."""
    assert await _collect(_eleven(elevenlabs_fake, session), "Hi.") == elevenlabs_fake.audio
    (request,) = elevenlabs_fake.requests
    assert request.output_format == "ulaw_8000"
    assert request.voice_id == "voice 1"
    assert request.api_key == elevenlabs_fake.api_key
    assert request.body == {"text": "Hi.", "model_id": "eleven_multilingual_v2"}


async def test_elevenlabs_streams_before_the_body_ends(
    elevenlabs_fake: FakeElevenLabs, session: aiohttp.ClientSession
) -> None:
    """The first chunk is yielded while the rest is still held back by the vendor."""
    elevenlabs_fake.hold = asyncio.Event()
    async with aclosing(_eleven(elevenlabs_fake, session).synthesize("Hi.")) as audio:
        first = await anext(audio)
        assert first and elevenlabs_fake.completed == 0
        elevenlabs_fake.hold.set()
        rest = b"".join([chunk async for chunk in audio])
    assert first + rest == elevenlabs_fake.audio


async def test_elevenlabs_bad_key(
    elevenlabs_fake: FakeElevenLabs, session: aiohttp.ClientSession
) -> None:
    """A 401 names ElevenLabs, the status and the URL, never the key sent."""
    engine = ElevenLabsTts(
        session, api_key="xi-wrong-key-999", voice_id="v", base_url=elevenlabs_fake.base_url
    )
    with pytest.raises(SpeechError) as caught:
        await _collect(engine)
    message = caught.value.message
    assert "ElevenLabs TTS returned HTTP 401" in message and "output_format=ulaw_8000" in message
    assert "xi-wrong-key-999" not in message


# -- factory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAiCfg:
    api_key: str | None = "sk-cfg"
    base_url: str | None = None
    model: str | None = None
    voice: str | None = None


@dataclass(frozen=True)
class ElevenCfg:
    api_key: str | None = "xi-cfg"
    base_url: str | None = None
    voice_id: str | None = "v1"
    model_id: str | None = None


@dataclass(frozen=True)
class TtsCfg:
    provider: str | None
    openai: OpenAiCfg | None = OpenAiCfg()
    elevenlabs: ElevenCfg | None = ElevenCfg()


async def test_factory_selects_by_provider(session: aiohttp.ClientSession) -> None:
    """openai and elevenlabs build their engines with defaults for unset fields."""
    openai = create_tts(TtsCfg("openai"), session)
    assert isinstance(openai, OpenAiTts)
    assert openai.url == "https://api.openai.com/v1/audio/speech"
    assert (openai.model, openai.voice) == ("gpt-4o-mini-tts", "alloy")
    eleven = create_tts(TtsCfg("elevenlabs"), session)
    assert isinstance(eleven, ElevenLabsTts)
    assert eleven.url == (
        "https://api.elevenlabs.io/v1/text-to-speech/v1/stream?output_format=ulaw_8000"
    )
    assert "sk-cfg" not in repr(openai) and "xi-cfg" not in repr(eleven)


async def test_factory_edge_is_ignored_with_a_warning(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """edge cannot stream to a call: no engine, and the log says what to do."""
    with caplog.at_level(logging.WARNING):
        assert create_tts(TtsCfg("edge"), session) is None
    assert "'edge' cannot speak on phone calls" in caplog.text
    assert create_tts(TtsCfg(None), session) is None


async def test_factory_errors(session: aiohttp.ClientSession) -> None:
    """Unknown provider, missing key or voice id are config errors naming the key."""
    with pytest.raises(ConfigError, match="unknown TTS provider 'polly'"):
        create_tts(TtsCfg("polly"), session)
    with pytest.raises(ConfigError, match=r"tts\.openai\.api_key is not set"):
        create_tts(TtsCfg("openai", openai=OpenAiCfg(api_key=None)), session)
    with pytest.raises(ConfigError, match=r"tts\.elevenlabs\.voice_id"):
        create_tts(TtsCfg("elevenlabs", elevenlabs=ElevenCfg(voice_id="")), session)
