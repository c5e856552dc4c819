"""The streaming speech-to-text interface a media stream feeds, and its listener."""

from __future__ import annotations

from typing import Protocol

from daemon.errors import SpeechError


class SttListener(Protocol):
    """Receives what the recogniser hears. Called on the event loop; must return quickly."""

    def on_speech_start(self) -> None:
        """The caller started talking (barge-in: stop playback now)."""

    def on_partial(self, text: str) -> None:
        """The transcript of the current utterance so far (not final, may change)."""

    def on_final(self, text: str, confidence: float | None) -> None:
        """The utterance ended; ``text`` is its final, non-empty transcript."""

    def on_error(self, error: SpeechError) -> None:
        """The vendor cannot be reached (the session goes on retrying with backoff, reported
        once per outage, ``error.details["retrying"]`` set) or refused the credentials (for
        good). Either way the caller is not heard meanwhile: report it on the call."""


class SttSession(Protocol):
    """One streaming recognition session per call."""

    @property
    def connected(self) -> bool:
        """True while audio is being delivered to the vendor."""

    async def connect(self) -> None:
        """Open the session (an unreachable vendor is retried in the background); raises
        :class:`SpeechError` only when retrying cannot help (credentials refused)."""

    def send_audio(self, ulaw: bytes) -> None:
        """Queue mu-law 8 kHz audio. Never blocks; audio is dropped while disconnected."""

    async def close(self) -> None:
        """End the session and its tasks; idempotent."""


class SttSettings(Protocol):
    """``[streaming]`` as read here (read-only, so frozen dataclasses satisfy it)."""

    @property
    def api_key(self) -> str | None: ...
    @property
    def stt_provider(self) -> str: ...
    @property
    def stt_model(self) -> str: ...
    @property
    def stt_url(self) -> str | None: ...
    @property
    def silence_duration_ms(self) -> int: ...
    @property
    def vad_threshold(self) -> float: ...
