"""Which config keys a running daemon can take on a reload, and which need a restart.

A reload (`voicecall daemon reload`, SIGHUP, RPC `daemon.reload`) swaps the config that the
engine, the providers and the auto-responder read at the moment they act. Keys that were used
once at start-up to build something long-lived (the listening socket, the store, the provider
and its webhook verifiers, tunnels, the media hub and its TTS engine, the reaper timer) cannot
change under a running daemon: a reload reports them in `needsRestart` and keeps their old
values until `voicecall daemon restart`.

The list of live keys is explicit on purpose: a key added later is restart-only until someone
checks that everything reading it reads it per use, so a reload never claims to have applied
something it has not. Stdlib-only: `voicecall config set` imports it to say how a change takes
effect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from daemon.store.location import StoreLocation

LIVE_TOP_LEVEL = frozenset(
    {
        "from_number",
        "to_number",
        "max_duration_seconds",
        "max_concurrent_calls",
        "max_loop_load",
        "ring_timeout_seconds",
        "transcript_timeout_ms",
        "inbound_policy",
        "allow_from",
        "inbound_greeting",
        "response_model",
        "response_system_prompt",
        "response_timeout_ms",
        "outbound",
        "machine_detection",
        "mock",
        "agent",
    }
)
"""Top-level keys (or whole tables) a reload applies; every other key needs a restart."""

RESPONDER_KEYS = frozenset(
    {"response_model", "response_system_prompt", "response_timeout_ms", "agent"}
)
"""Keys the auto-responder is built from: a change rebuilds it."""

IGNORED_FIELDS = frozenset({"source", "secret_sources", "warnings"})
"""Fields of the config object that are bookkeeping, not keys."""


def is_live(key: str) -> bool:
    """Whether a reload applies the dotted `key` (`messages.tts.*` counts as `tts.*`)."""
    return key.split(".", 1)[0] in LIVE_TOP_LEVEL


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type | StoreLocation):
        for f in dataclasses.fields(value):
            if f.name in IGNORED_FIELDS:
                continue
            yield from _leaves(getattr(value, f.name), f"{prefix}{f.name}.")
    elif isinstance(value, dict):
        for name in sorted(value):
            yield from _leaves(value[name], f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), value


def changed_keys(old: Any, new: Any) -> list[str]:
    """The dotted keys whose effective value differs between two configs, sorted."""
    before = dict(_leaves(old, ""))
    after = dict(_leaves(new, ""))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def merge_live(old: Any, new: Any) -> Any:
    """`old` with the live keys of `new`: what a running daemon switches to on a reload."""
    live = {
        f.name: getattr(new, f.name) for f in dataclasses.fields(old) if f.name in LIVE_TOP_LEVEL
    }
    return dataclasses.replace(old, **live, warnings=new.warnings)
