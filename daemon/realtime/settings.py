"""Which realtime settings apply to a call, and what the model is told.

Every reader of realtime settings goes through :func:`effective_realtime`, so per-number
overrides (SPEC 14: ``[numbers."+E164"] realtime`` merged over ``[realtime]``) apply in one
place.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from daemon.config.model import RealtimeConfig

if TYPE_CHECKING:
    from daemon.config.model import Config
    from daemon.model.record import CallRecord

PHONE_STYLE = (
    " You are speaking on a phone call: keep answers short and natural, one or two sentences, "
    "and when the conversation is over say goodbye and call end_call."
)


def effective_realtime(config: Config, call: CallRecord | None = None) -> RealtimeConfig:
    """The realtime settings that apply to ``call``: ``[realtime]`` with the ``realtime`` table
    of the call's ``[numbers."+E164"]`` (``metadata.number``) merged over it."""
    key = call.metadata.get("number") if call is not None else None
    table = config.numbers.get(key) if isinstance(key, str) else None
    if table is None or not table.realtime:
        return config.realtime
    return dataclasses.replace(config.realtime, **dict(table.realtime))


def realtime_in_use(config: Config) -> bool:
    """True when realtime is on globally or for any number table."""
    return config.realtime.enabled or any(
        table.realtime.get("enabled") for table in config.numbers.values()
    )


def realtime_url(base_url: str, model: str) -> str:
    """``base_url`` with ``model=<model>`` in its query (kept if the URL already names one)."""
    if "model=" in base_url:
        return base_url
    return f"{base_url}{'&' if '?' in base_url else '?'}model={model}"


def instructions(config: Config, settings: RealtimeConfig) -> str:
    """The session instructions: ``realtime.instructions``, else the auto-responder prompt,
    plus the phone-call rules (short answers, ``end_call`` to hang up)."""
    base = settings.instructions or config.response_system_prompt
    return base.rstrip() + PHONE_STYLE
