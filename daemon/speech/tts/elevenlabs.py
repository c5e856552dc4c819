"""ElevenLabs text-to-speech, streamed as telephony-ready mu-law.

``output_format=ulaw_8000`` makes ElevenLabs produce exactly what Twilio plays, so the bytes
pass through untouched: no resampling, no encoding, no added latency.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
from yarl import URL

from daemon.speech.vendor import http_error, request_timeout, transport_error

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL_ID = "eleven_multilingual_v2"
OUTPUT_FORMAT = "ulaw_8000"
VENDOR = "ElevenLabs TTS"
READ_BYTES = 1600
"""At most 200 ms of mu-law per read: what is buffered beyond stays in the bounded HTTP
reader instead of being framed all at once (see ``openai.READ_BYTES``)."""


class ElevenLabsTts:
    """:class:`~daemon.speech.tts.base.TtsEngine` for the ElevenLabs ``/stream`` endpoint."""

    name = "elevenlabs"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        voice_id: str,
        base_url: str = DEFAULT_BASE_URL,
        model_id: str = DEFAULT_MODEL_ID,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        base = URL(base_url.rstrip("/"))
        self.url = str(
            (base / "v1" / "text-to-speech" / voice_id / "stream").with_query(
                output_format=OUTPUT_FORMAT
            )
        )
        self._timeout = timeout or request_timeout()

    def __repr__(self) -> str:
        return f"ElevenLabsTts(url={self.url!r}, model_id={self.model_id!r})"

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Yield mu-law 8 kHz chunks of ``text`` spoken, exactly as ElevenLabs sends them."""
        payload = {"text": text, "model_id": self.model_id}
        headers = {"xi-api-key": self._api_key, "Accept": "audio/basic"}
        produced = 0
        try:
            async with self._session.post(
                URL(self.url, encoded=True), json=payload, headers=headers, timeout=self._timeout
            ) as response:
                if response.status >= 400:
                    raise await http_error(VENDOR, response, self.url, self._api_key)
                read = response.content.read
                while chunk := await read(READ_BYTES):
                    produced += len(chunk)
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(VENDOR, self.url, exc, self._api_key) from None
        if not produced:
            raise transport_error(VENDOR, self.url, ValueError("response held no audio"), None)
