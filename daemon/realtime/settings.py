"""Which realtime settings apply to a call, and what the model is told.

Every reader of realtime settings goes through :func:`effective_realtime`, so per-number
overrides (SPEC 14: ``[numbers."+E164"] realtime`` merged over ``[realtime]``) apply in one
place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.config.model import RealtimeConfig

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.engine.record import CallRecord

PHONE_STYLE = (
    " You are speaking on a phone call: keep answers short and natural, one or two sentences, "
    "and when the conversation is over say goodbye and call end_call."
)


def effective_realtime(config: Config, call: CallRecord | None = None) -> RealtimeConfig:
    """The realtime settings that apply to ``call``: ``[realtime]`` (the per-number
    ``realtime`` table is merged over it here once ``[numbers]`` exists)."""
    del call
    return config.realtime


def instructions(config: Config, settings: RealtimeConfig) -> str:
    """The session instructions: ``realtime.instructions``, else the auto-responder prompt,
    plus the phone-call rules (short answers, ``end_call`` to hang up)."""
    base = settings.instructions or config.response_system_prompt
    return base.rstrip() + PHONE_STYLE
