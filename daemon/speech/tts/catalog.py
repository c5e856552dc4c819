"""The TTS vendors that can speak on a call's media stream, declared once (issue 14).

Config schema, secrets, the loader, `voicecall doctor` and the engine factory read this list.
Adding a vendor: its engine module beside `openai.py`, one :class:`TtsVendor` here, and its
`[tts.<name>]` table in `daemon/config/model.py` + `schema.py` (docs/architecture.md).
Stdlib only: the CLI imports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TtsVendor:
    """One TTS vendor as the rest of voicecall sees it."""

    name: str
    """The `tts.provider` value and the name of its `[tts.<name>]` table."""
    title: str
    """How messages name it ("OpenAI", "ElevenLabs")."""
    env_var: str
    """The environment variable of its API key (`tts.<name>.api_key`)."""
    factory: str
    """`module:function(settings, session) -> TtsEngine` in :mod:`daemon.speech.tts.factory`."""


VENDORS: tuple[TtsVendor, ...] = (
    TtsVendor("openai", "OpenAI", "OPENAI_API_KEY", "daemon.speech.tts.factory:create_openai"),
    TtsVendor(
        "elevenlabs",
        "ElevenLabs",
        "ELEVENLABS_API_KEY",
        "daemon.speech.tts.factory:create_elevenlabs",
    ),
)
NAMES: tuple[str, ...] = tuple(v.name for v in VENDORS)
IGNORED: tuple[str, ...] = ("edge",)
"""Accepted in the shared (OpenClaw) TTS config but unusable on calls (no telephony output)."""


def vendor(name: str) -> TtsVendor | None:
    """The vendor called `name`; None for anything else."""
    return next((v for v in VENDORS if v.name == name), None)
