"""The TTS engine interface the call engine speaks through, and what it reads from config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class TtsEngine(Protocol):
    """Turns text into telephony audio while the vendor is still synthesising it.

    ``synthesize`` yields mu-law 8 kHz bytes in chunks of any size (a Framer cuts them into
    20 ms frames) and must yield the first chunk before the vendor's response ends, so the
    caller hears speech as soon as possible. To stop early (barge-in), cancel the consuming
    task or close the iterator (the vendor engines are async generators, so
    ``contextlib.aclosing`` works on them); the HTTP response is then released at once.

    Raises:
        SpeechError: the vendor failed (message names vendor, HTTP status and URL, never a key).
    """

    name: str

    def synthesize(self, text: str) -> AsyncIterator[bytes]: ...


class OpenAiTtsSettings(Protocol):
    """``[tts.openai]`` as read here (read-only, so frozen dataclasses satisfy it)."""

    @property
    def api_key(self) -> str | None: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def voice(self) -> str | None: ...


class ElevenLabsTtsSettings(Protocol):
    """``[tts.elevenlabs]`` as read here."""

    @property
    def api_key(self) -> str | None: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def voice_id(self) -> str | None: ...
    @property
    def model_id(self) -> str | None: ...


class TtsSettings(Protocol):
    """The merged ``[messages.tts]`` + ``[tts]`` table as read here."""

    @property
    def provider(self) -> str | None: ...
    @property
    def openai(self) -> OpenAiTtsSettings | None: ...
    @property
    def elevenlabs(self) -> ElevenLabsTtsSettings | None: ...
