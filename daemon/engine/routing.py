"""Per-number routing (SPEC 14): which `[numbers."+E164"]` table an inbound call gets.

The dialled number (the provider's `To`) is compared as a digit string, exactly as the
allowlist compares callers (`+1 (555) 000-1234` is `15550001234`; no suffix matching). A number
with no table uses the top-level settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.engine.policy import digits_only

if TYPE_CHECKING:
    from daemon.config.model import AgentConfig, Config, NumberConfig


def number_key(numbers: Mapping[str, NumberConfig], dialled: str | None) -> str | None:
    """The E.164 key of the table for `dialled`, or None."""
    wanted = digits_only(dialled)
    if not wanted:
        return None
    if dialled in numbers:
        return dialled
    return next((key for key in numbers if digits_only(key) == wanted), None)


def greeting(config: Config, key: str | None) -> str:
    """The greeting of an inbound call to the number with table `key` (None: top level)."""
    table = config.numbers.get(key) if key else None
    return (table.inbound_greeting if table else None) or config.inbound_greeting


@dataclass(frozen=True, slots=True)
class NumberResponderSettings:
    """The auto-responder settings of one number: its overrides over the top-level keys."""

    response_model: str | None
    response_system_prompt: str | None
    response_timeout_ms: int
    agent: AgentConfig | None


def has_responder_override(table: NumberConfig) -> bool:
    """True when the table changes anything the auto-responder reads."""
    return any(
        value is not None
        for value in (table.response_model, table.response_system_prompt, table.response_timeout_ms)
    )


def responder_settings(config: Config, key: str) -> NumberResponderSettings:
    """The effective auto-responder settings for calls to the number with table `key`."""
    table = config.numbers[key]
    return NumberResponderSettings(
        response_model=table.response_model or config.response_model,
        response_system_prompt=table.response_system_prompt or config.response_system_prompt,
        response_timeout_ms=table.response_timeout_ms or config.response_timeout_ms,
        agent=config.agent,
    )
