"""Builds the streaming STT session from ``[streaming]`` settings."""

from __future__ import annotations

import aiohttp

from daemon.errors import ConfigError
from daemon.speech.stt import openai_realtime
from daemon.speech.stt.base import SttListener, SttSession, SttSettings

PROVIDERS = ("openai-realtime",)


def create_stt(
    settings: SttSettings, session: aiohttp.ClientSession, listener: SttListener
) -> SttSession:
    """Build one (unconnected) session for a call; call ``connect()`` on it next.

    Raises:
        ConfigError: unknown ``streaming.stt_provider`` or no API key.
    """
    if settings.stt_provider not in PROVIDERS:
        raise ConfigError(
            f"streaming.stt_provider: unknown provider {settings.stt_provider!r}; "
            f"expected one of {', '.join(PROVIDERS)}"
        )
    if not settings.api_key:
        raise ConfigError(
            "streaming.api_key is not set; set OPENAI_API_KEY or run "
            "`voicecall secrets set streaming.api_key`"
        )
    return openai_realtime.OpenAiRealtimeStt(
        session,
        listener,
        api_key=settings.api_key,
        url=settings.stt_url or openai_realtime.DEFAULT_URL,
        model=settings.stt_model,
        vad_threshold=settings.vad_threshold,
        silence_duration_ms=settings.silence_duration_ms,
    )
