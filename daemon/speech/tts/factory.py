"""Chooses the call TTS engine from the merged TTS settings."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import aiohttp

from daemon.errors import ConfigError
from daemon.speech.tts import catalog, elevenlabs, openai
from daemon.speech.tts.base import TtsEngine, TtsSettings

logger = logging.getLogger(__name__)

PROVIDERS = catalog.NAMES
"""TTS providers that can speak on a media stream (declared in :mod:`.catalog`)."""
IGNORED_PROVIDERS = catalog.IGNORED
"""Accepted in the shared TTS config but unusable on calls (no telephony output)."""


def create_tts(settings: TtsSettings, session: aiohttp.ClientSession) -> TtsEngine | None:
    """Build the engine ``settings.provider`` names, or None when calls use the provider voice.

    Raises:
        ConfigError: the provider is unknown, or its API key or voice id is missing.
    """
    provider = (settings.provider or "").strip().lower()
    if not provider:
        return None
    if provider in IGNORED_PROVIDERS:
        logger.warning(
            "tts.provider %r cannot speak on phone calls; calls use the telephony provider's"
            " own voice (set tts.provider to openai or elevenlabs for streamed speech)",
            provider,
        )
        return None
    declared = catalog.vendor(provider)
    if declared is not None:
        module, _, name = declared.factory.partition(":")
        build: Callable[[TtsSettings, aiohttp.ClientSession], TtsEngine] = getattr(
            importlib.import_module(module), name
        )
        return build(settings, session)
    raise ConfigError(
        f"tts.provider: unknown TTS provider {provider!r}; expected one of "
        f"{', '.join(PROVIDERS + IGNORED_PROVIDERS)}"
    )


def create_openai(settings: TtsSettings, session: aiohttp.ClientSession) -> TtsEngine:
    """OpenAI speech (`/v1/audio/speech`)."""
    cfg = settings.openai
    if cfg is None or not cfg.api_key:
        raise ConfigError(
            "tts.openai.api_key is not set; set OPENAI_API_KEY or run "
            "`voicecall secrets set tts.openai.api_key`"
        )
    return openai.OpenAiTts(
        session,
        api_key=cfg.api_key,
        base_url=cfg.base_url or openai.DEFAULT_BASE_URL,
        model=cfg.model or openai.DEFAULT_MODEL,
        voice=cfg.voice or openai.DEFAULT_VOICE,
    )


def create_elevenlabs(settings: TtsSettings, session: aiohttp.ClientSession) -> TtsEngine:
    """ElevenLabs text-to-speech."""
    cfg = settings.elevenlabs
    if cfg is None or not cfg.api_key:
        raise ConfigError(
            "tts.elevenlabs.api_key is not set; set ELEVENLABS_API_KEY or run "
            "`voicecall secrets set tts.elevenlabs.api_key`"
        )
    if not cfg.voice_id:
        raise ConfigError("tts.elevenlabs.voice_id is not set; expected an ElevenLabs voice id")
    return elevenlabs.ElevenLabsTts(
        session,
        api_key=cfg.api_key,
        voice_id=cfg.voice_id,
        base_url=cfg.base_url or elevenlabs.DEFAULT_BASE_URL,
        model_id=cfg.model_id or elevenlabs.DEFAULT_MODEL_ID,
    )
