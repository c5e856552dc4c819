"""Daemon configs for the provider end-to-end tests: one builder per provider simulator.

Every provider test used to carry its own copy of the same TOML (provider section at the
simulator, `[serve]`, streaming at FakeOpenAI, TTS at FakeOpenAI ...); the copies drifted only in
the few keys each test is about. Here the common part is written once and a test passes just
those keys (`Keys`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Unpack

from tests.fakes.openai import API_KEY as OPENAI_KEY
from tests.simulators import plivo, telnyx, twilio

if TYPE_CHECKING:
    from tests.fakes.openai import FakeOpenAI

FROM = "+15550100000"
"""The number every provider test calls from (and receives inbound calls on)."""


def _speech(
    openai: FakeOpenAI | None,
    *,
    streaming: bool,
    stream: str,
    tts: str,
    tts_url: str | None,
    tts_table: str,
    agent: bool,
) -> str:
    """`[streaming]` (STT at `openai` when given) and the TTS / agent tables at `openai`."""
    parts = []
    if streaming:
        stt = (
            f'stt_url = "{openai.realtime_url}"\napi_key = "{OPENAI_KEY}"\n'
            if openai is not None
            else ""
        )
        parts.append(f"[streaming]\nenabled = true\n{stt}{stream}\n")
    if openai is not None:
        parts.append(
            f'[{tts_table}]\nprovider = "openai"\n\n[{tts_table}.openai]\n'
            f'base_url = "{tts_url or openai.base_url}"\napi_key = "{OPENAI_KEY}"\n'
            f"{tts}\n"
        )
    if agent:
        assert openai is not None, "the agent talks to the fake OpenAI"
        parts.append(f'[agent]\nbase_url = "{openai.base_url}"\napi_key = "{OPENAI_KEY}"\n')
    return "\n".join(parts)


class Keys(TypedDict, total=False):
    """What a provider test sets beyond the provider section (every key optional)."""

    top: str
    """top-level keys"""
    serve: str
    """more `[serve]` keys"""
    port: int
    """`serve.port` (default 0: any free port)"""
    provider_keys: str
    """more keys of the provider's own section"""
    hangup_delay: int
    """adds `[outbound] notify_hangup_delay_seconds`"""
    streaming: bool
    """`[streaming] enabled = true`, with STT at the fake OpenAI when there is one"""
    stream: str
    """more `[streaming]` keys"""
    tts: str
    """more keys of the TTS table at the fake OpenAI"""
    tts_url: str | None
    """that TTS table's base_url, instead of the fake's"""
    tts_table: str
    """`messages.tts` (the core settings) or `tts` (the call-only override)"""
    agent: bool
    """`[agent]` at the fake OpenAI"""
    extra: str
    """whole further tables, appended last"""


def _config(provider: str, section: str, openai: FakeOpenAI | None, keys: Keys) -> str:
    hangup_delay = keys.get("hangup_delay")
    outbound = (
        ""
        if hangup_delay is None
        else f"[outbound]\nnotify_hangup_delay_seconds = {hangup_delay}\n"
    )
    speech = _speech(
        openai,
        streaming=keys.get("streaming", False),
        stream=keys.get("stream", ""),
        tts=keys.get("tts", ""),
        tts_url=keys.get("tts_url"),
        tts_table=keys.get("tts_table", "tts"),
        agent=keys.get("agent", False),
    )
    return f"""
provider = "{provider}"
from_number = "{FROM}"
{keys.get("top", "")}
[serve]
port = {keys.get("port", 0)}
{keys.get("serve", "")}
[{provider}]
{section}{keys.get("provider_keys", "")}
{outbound}
{speech}
{keys.get("extra", "")}
"""


def twilio_config(
    sim: twilio.TwilioSimulator,
    openai: FakeOpenAI | None = None,
    *,
    auth_token: str = twilio.AUTH_TOKEN,
    **keys: Unpack[Keys],
) -> str:
    """Twilio at `sim`; with `openai`, TTS (`[messages.tts]` unless `tts_table` says otherwise)
    and with `streaming`, realtime STT at the fake."""
    keys.setdefault("tts_table", "messages.tts")
    section = (
        f'account_sid = "{twilio.ACCOUNT_SID}"\nauth_token = "{auth_token}"\n'
        f'api_base_url = "{sim.api_base_url}"\n'
    )
    return _config("twilio", section, openai, keys)


def telnyx_config(
    sim: telnyx.TelnyxSimulator, openai: FakeOpenAI | None = None, **keys: Unpack[Keys]
) -> str:
    """Telnyx at `sim` (its signing key included); with `openai`, TTS (`[tts]`) and with
    `streaming`, realtime STT at the fake."""
    section = (
        f'api_key = "{telnyx.API_KEY}"\nconnection_id = "{telnyx.CONNECTION_ID}"\n'
        f'public_key = "{sim.public_key}"\napi_base_url = "{sim.api_base_url}"\n'
    )
    return _config("telnyx", section, openai, keys)


def plivo_config(
    sim: plivo.PlivoSimulator, openai: FakeOpenAI | None = None, **keys: Unpack[Keys]
) -> str:
    """Plivo at `sim`; with `openai`, TTS (`[tts]`) and with `streaming`, realtime STT at the
    fake."""
    section = (
        f'auth_id = "{plivo.AUTH_ID}"\nauth_token = "{plivo.AUTH_TOKEN}"\n'
        f'api_base_url = "{sim.api_base_url}"\n'
    )
    return _config("plivo", section, openai, keys)
