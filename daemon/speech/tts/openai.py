"""OpenAI text-to-speech, streamed and converted to mu-law 8 kHz as it arrives.

``response_format: "pcm"`` is raw 24 kHz s16le mono: no container to parse, so every body
chunk can be resampled and encoded immediately (the first frame leaves before synthesis ends).
Reads are bounded (:data:`READ_BYTES`), so resampling runs per 200 ms chunk at most and memory
per call stays small however far ahead the vendor is.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import aiohttp

from daemon.media.codecs import SAMPLE_RATE, pcm16_to_ulaw
from daemon.media.resample import StreamResampler
from daemon.speech.vendor import http_error, request_timeout, transport_error

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
PCM_RATE = 24000
"""Sample rate of OpenAI's ``pcm`` response format."""
VENDOR = "OpenAI TTS"
READ_BYTES = 9600
"""At most 200 ms of 24 kHz PCM per read (whatever has arrived, up to this). ``iter_any``
hands over everything buffered at once: a vendor that runs ahead of real time then put
seconds of audio (and its resampled, encoded and framed copies) in memory per call, and
frames past the playback queue's capacity (SPEC 12: <= 1 MiB per call)."""


class OpenAiTts:
    """:class:`~daemon.speech.tts.base.TtsEngine` for ``POST {base_url}/audio/speech``."""

    name = "openai"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self.url = f"{base_url.rstrip('/')}/audio/speech"
        self.model = model
        self.voice = voice
        self._timeout = timeout or request_timeout()

    def __repr__(self) -> str:
        return f"OpenAiTts(url={self.url!r}, model={self.model!r}, voice={self.voice!r})"

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield mu-law 8 kHz chunks of ``text`` spoken, as the vendor streams them."""
        resampler = StreamResampler(PCM_RATE, SAMPLE_RATE)
        payload = {
            "model": self.model,
            "voice": self.voice,
            "input": text,
            "response_format": "pcm",
        }
        headers = {"Authorization": f"Bearer {self._api_key}"}
        produced = 0
        try:
            async with self._session.post(
                self.url, json=payload, headers=headers, timeout=self._timeout
            ) as response:
                if response.status >= 400:
                    raise await http_error(VENDOR, response, self.url, self._api_key)
                read = response.content.read
                while chunk := await read(READ_BYTES):
                    pcm = resampler.feed(chunk)
                    if pcm:
                        produced += len(pcm)
                        yield pcm16_to_ulaw(pcm)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(VENDOR, self.url, exc, self._api_key) from None
        tail = resampler.feed(b"", last=True)
        if tail:
            produced += len(tail)
            yield pcm16_to_ulaw(tail)
        if not produced:
            raise transport_error(VENDOR, self.url, ValueError("response held no audio"), None)
