"""The validated, effective configuration as frozen dataclasses (SPEC section 3).

Attribute names are exactly the TOML keys, nested tables are nested dataclasses, so a key path in
an error message (`serve.port`) is also the attribute path (`config.serve.port`). Secrets are
`field(repr=False)` so that logging a config object never prints them. Instances are built by
`daemon.config.loader`; the defaults here are the ones SPEC section 3 gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from daemon.store.location import StoreLocation

DEFAULT_GREETING = "Hello! How can I help you today?"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Keep responses brief and "
    "conversational: one or two short sentences, no lists, markdown or emoji, because every "
    "word is spoken aloud. Be natural and friendly, and ask one question at a time."
)

CURRENT_FOLDER_STORE = StoreLocation(folder=Path("."))
"""A placeholder default: the loader always sets the real store location."""

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_REALTIME_STT_URL = "wss://api.openai.com/v1/realtime?intent=transcription"
OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"
OUTBOUND_BATCHES_MS = (20, 40, 60)
"""What `streaming.outbound_batch_ms` may be: whole 20 ms frames, and no more than three, so
with the playback's 80 ms lead every frame still leaves 20 ms or more before its play time."""


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    """`[twilio]`: Programmable Voice credentials and endpoint."""

    account_sid: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    api_base_url: str = "https://api.twilio.com"
    region: str | None = None


@dataclass(frozen=True, slots=True)
class TelnyxConfig:
    """`[telnyx]`: Call Control v2 credentials and endpoint."""

    api_key: str | None = field(default=None, repr=False)
    connection_id: str | None = None
    public_key: str | None = field(default=None, repr=False)
    """Base64 Ed25519 key (raw 32 bytes, DER SPKI) or PEM, for webhook signatures."""
    api_base_url: str = "https://api.telnyx.com/v2"


@dataclass(frozen=True, slots=True)
class PlivoConfig:
    """`[plivo]`: Voice API credentials and endpoint."""

    auth_id: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    api_base_url: str = "https://api.plivo.com/v1"
    accept_v2_signatures: bool = False
    """V2 signs only the URL and nonce (not the body), so it is refused unless enabled."""


@dataclass(frozen=True, slots=True)
class MockConfig:
    """`[mock]`: how the network-free provider behaves."""

    answer_delay_ms: int = 200
    replies: tuple[str, ...] = ()
    """Caller utterances, cycled; empty means the caller never speaks."""
    outcome: str = "answer"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """`[serve]`: where the webhook server listens."""

    bind: str = "127.0.0.1"
    port: int = 3334
    """0 = any free port."""
    path: str = "/voice/webhook"
    header_timeout_ms: int = 10000
    """A request's headers must arrive within this (slow-loris defence)."""
    idle_timeout_ms: int = 15000
    """An idle keep-alive connection is closed after this."""
    max_connections: int = 1024
    """Open connections in all; a new one beyond is closed at once."""
    max_connections_per_ip: int = 64
    """Open connections per socket address; a new one beyond is closed at once."""
    workers: int = 1
    """Worker processes sharing the ports (SPEC section 16); only 1 in this version."""


@dataclass(frozen=True, slots=True)
class WebhookSecurityConfig:
    """`[webhook_security]`: which forwarding headers to trust when rebuilding the public URL."""

    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """`[tunnel]`: an ngrok tunnel that publishes the webhook."""

    provider: str = "none"
    ngrok_authtoken: str | None = field(default=None, repr=False)
    ngrok_domain: str | None = None
    allow_ngrok_free_tier_loopback_bypass: bool = False


@dataclass(frozen=True, slots=True)
class TailscaleConfig:
    """`[tailscale]`: publish the webhook with `tailscale serve` or `tailscale funnel`."""

    mode: str = "off"
    path: str = "/voice/webhook"


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """`[outbound]`: defaults for calls we place."""

    default_mode: str = "notify"
    notify_hangup_delay_seconds: int = 3


@dataclass(frozen=True, slots=True)
class MachineDetectionConfig:
    """`[machine_detection]`: answering-machine detection on outbound calls (SPEC 13)."""

    enabled: bool = False
    mode: str = "detect-beep"
    """`detect-beep`: also learn when the greeting ends; `detect`: human/machine only."""
    timeout_seconds: int = 30
    """How long the provider may take to decide."""
    greeting_timeout_seconds: int = 20
    """The longest wait for the end of a machine's greeting."""
    on_machine_notify: str = "leave-message"
    on_machine_conversation: str = "hangup"


@dataclass(frozen=True, slots=True)
class StreamingConfig:
    """`[streaming]`: media-stream websockets and streaming speech-to-text."""

    api_key: str | None = field(default=None, repr=False)
    enabled: bool = False
    stream_path: str = "/voice/stream"
    pre_start_timeout_ms: int = 5000
    max_pending_connections: int = 32
    max_pending_connections_per_ip: int = 4
    max_connections: int = 128
    stt_provider: str = "openai-realtime"
    stt_model: str = "gpt-4o-transcribe"
    stt_url: str = OPENAI_REALTIME_STT_URL
    silence_duration_ms: int = 800
    vad_threshold: float = 0.5
    inbound_batch_ms: int = 60
    outbound_batch_ms: int = 20
    outbound_batch_overload_ms: int = 20


@dataclass(frozen=True, slots=True)
class OpenAITtsConfig:
    """`[tts.openai]`: OpenAI speech synthesis."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = OPENAI_BASE_URL
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"


@dataclass(frozen=True, slots=True)
class ElevenLabsTtsConfig:
    """`[tts.elevenlabs]`: ElevenLabs speech synthesis."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = "https://api.elevenlabs.io"
    voice_id: str | None = None
    model_id: str = "eleven_multilingual_v2"


@dataclass(frozen=True, slots=True)
class TtsConfig:
    """The effective call TTS: `[messages.tts]` with `[tts]` deep-merged over it."""

    provider: str = "openai"
    openai: OpenAITtsConfig = field(default_factory=OpenAITtsConfig)
    elevenlabs: ElevenLabsTtsConfig = field(default_factory=ElevenLabsTtsConfig)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """`[agent]`: the OpenAI-compatible chat API of the auto-responder."""

    base_url: str = OPENAI_BASE_URL
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """`[realtime]`: voice-to-voice mode (SPEC 15), a speech-to-speech model per streamed call."""

    enabled: bool = False
    provider: str = "openai"
    model: str = "gpt-realtime"
    voice: str = "alloy"
    instructions: str | None = None
    """The model's instructions; unset = `response_system_prompt`."""
    base_url: str = OPENAI_REALTIME_URL
    api_key: str | None = field(default=None, repr=False)
    vad_threshold: float = 0.5
    silence_duration_ms: int = 500
    tools: tuple[Mapping[str, Any], ...] = ()
    """Function tools (`name`, `description`, `parameters`) relayed to the agent as call.tool."""
    tool_timeout_ms: int = 10000


def _no_sources() -> Mapping[str, str]:
    return MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NumberConfig:
    """`[numbers."+E164"]`: overrides for inbound calls to one of our numbers (SPEC 14).

    Unset keys (None, empty tables) keep the top-level value.
    """

    inbound_greeting: str | None = None
    response_model: str | None = None
    response_system_prompt: str | None = None
    response_timeout_ms: int | None = None
    tts: Mapping[str, Any] = field(default_factory=_empty)
    """The override as written (no API keys); deep-merged over the call TTS."""
    realtime: Mapping[str, Any] = field(default_factory=_empty)
    """The override as written; merged over `[realtime]`."""
    effective_tts: TtsConfig | None = field(default=None, repr=False, compare=False)
    """The call TTS with `tts` deep-merged over it (None when `tts` is empty)."""


def _no_numbers() -> Mapping[str, NumberConfig]:
    return MappingProxyType({})


DEFAULT_MAX_LOOP_LOAD = 0.8
"""New calls wait while the event loop was busier than this (docs/operations.md, "Overload":
measured, 0.9 let the loop settle at 95 % and jitter p99 over 10 ms; 0.8 at 84 % and 4 ms)."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole effective configuration of one daemon or CLI invocation."""

    provider: str = "mock"
    from_number: str | None = None
    to_number: str | None = None
    max_duration_seconds: int = 300
    stale_call_reaper_seconds: int = 0
    max_concurrent_calls: int = 8
    max_loop_load: float = DEFAULT_MAX_LOOP_LOAD
    """New calls are refused while the event loop was busier than this over the last 5 s
    (daemon.loopload); 1 turns it off."""
    ring_timeout_seconds: int = 30
    transcript_timeout_ms: int = 180000
    inbound_policy: str = "disabled"
    allow_from: tuple[str, ...] = ()
    inbound_greeting: str = DEFAULT_GREETING
    response_model: str | None = None
    response_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    response_timeout_ms: int = 30000
    public_url: str | None = None
    skip_signature_verification: bool = False
    store: StoreLocation = CURRENT_FOLDER_STORE
    """Where the store is: `VOICECALL_STORE`, else the `store` key (a folder, `~` expanded and
    relative to the config file, or a `postgresql://` URL), else the state directory."""
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    telnyx: TelnyxConfig = field(default_factory=TelnyxConfig)
    plivo: PlivoConfig = field(default_factory=PlivoConfig)
    mock: MockConfig = field(default_factory=MockConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    webhook_security: WebhookSecurityConfig = field(default_factory=WebhookSecurityConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    tailscale: TailscaleConfig = field(default_factory=TailscaleConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    machine_detection: MachineDetectionConfig = field(default_factory=MachineDetectionConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    numbers: Mapping[str, NumberConfig] = field(default_factory=_no_numbers)
    """`[numbers."+E164"]` tables by their E.164 key."""
    warnings: tuple[str, ...] = ()
    """Things that are allowed but probably not what was meant (`edge` TTS, ...)."""
    source: Path | None = None
    """The file that was read; None when there was none."""
    secret_sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)
    """For each secret that is set: where it came from (`env`, `file` or `keyring`)."""

    @classmethod
    def defaults(cls, store: Path) -> Config:
        """The configuration of "no config file": the mock provider, everything else default."""
        return cls(store=StoreLocation.sqlite(store))
