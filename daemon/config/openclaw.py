"""Translate an OpenClaw voice-call plugin config (camelCase JSON5) into voicecall's TOML keys.

Accepts the whole OpenClaw config (`plugins.entries.voice-call.config`, plus the core
`messages.tts`), the plugin entry (`{enabled, config}`) or the plugin config object itself. Every
leaf is mapped through one table; whatever has no counterpart (the plugin's realtime options,
agent ids, Edge TTS tuning, ...) is reported by its OpenClaw path rather than silently dropped.
Per-number tables (`numbers["+E164"]`) become `[numbers."+E164"]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.errors import ConfigError
from daemon.providers.catalog import SPECS

Convert = Callable[[Any], Any]

_SIMPLE: dict[str, str] = {
    "provider": "provider",
    "fromNumber": "from_number",
    "toNumber": "to_number",
    "inboundPolicy": "inbound_policy",
    "allowFrom": "allow_from",
    "inboundGreeting": "inbound_greeting",
    "maxDurationSeconds": "max_duration_seconds",
    "staleCallReaperSeconds": "stale_call_reaper_seconds",
    "maxConcurrentCalls": "max_concurrent_calls",
    "transcriptTimeoutMs": "transcript_timeout_ms",
    "responseModel": "response_model",
    "responseSystemPrompt": "response_system_prompt",
    "responseTimeoutMs": "response_timeout_ms",
    "publicUrl": "public_url",
    "skipSignatureVerification": "skip_signature_verification",
    "store": "store",
    **{theirs: ours for spec in SPECS for theirs, ours in spec.openclaw.items()},
    "outbound.defaultMode": "outbound.default_mode",
    "outbound.notifyHangupDelaySec": "outbound.notify_hangup_delay_seconds",
    "serve.port": "serve.port",
    "serve.bind": "serve.bind",
    "serve.path": "serve.path",
    "tailscale.mode": "tailscale.mode",
    "tailscale.path": "tailscale.path",
    "tunnel.ngrokAuthToken": "tunnel.ngrok_authtoken",
    "tunnel.ngrokDomain": "tunnel.ngrok_domain",
    "tunnel.allowNgrokFreeTierLoopbackBypass": "tunnel.allow_ngrok_free_tier_loopback_bypass",
    "webhookSecurity.allowedHosts": "webhook_security.allowed_hosts",
    "webhookSecurity.trustForwardingHeaders": "webhook_security.trust_forwarding_headers",
    "webhookSecurity.trustedProxyIPs": "webhook_security.trusted_proxy_ips",
    "streaming.enabled": "streaming.enabled",
    "streaming.streamPath": "streaming.stream_path",
    "streaming.preStartTimeoutMs": "streaming.pre_start_timeout_ms",
    "streaming.maxPendingConnections": "streaming.max_pending_connections",
    "streaming.maxPendingConnectionsPerIp": "streaming.max_pending_connections_per_ip",
    "streaming.maxConnections": "streaming.max_connections",
    "streaming.openaiApiKey": "streaming.api_key",
    "streaming.sttModel": "streaming.stt_model",
    "streaming.silenceDurationMs": "streaming.silence_duration_ms",
    "streaming.vadThreshold": "streaming.vad_threshold",
    "streaming.providers.openai.apiKey": "streaming.api_key",
    "streaming.providers.openai.model": "streaming.stt_model",
    "streaming.providers.openai.silenceDurationMs": "streaming.silence_duration_ms",
    "streaming.providers.openai.vadThreshold": "streaming.vad_threshold",
}

_TTS: dict[str, str] = {
    "provider": "provider",
    "openai.apiKey": "openai.api_key",
    "openai.baseUrl": "openai.base_url",
    "openai.model": "openai.model",
    "openai.voice": "openai.voice",
    "elevenlabs.apiKey": "elevenlabs.api_key",
    "elevenlabs.baseUrl": "elevenlabs.base_url",
    "elevenlabs.voiceId": "elevenlabs.voice_id",
    "elevenlabs.modelId": "elevenlabs.model_id",
}

_NUMBER: dict[str, str] = {
    "inboundGreeting": "inbound_greeting",
    "responseModel": "response_model",
    "responseSystemPrompt": "response_system_prompt",
    "responseTimeoutMs": "response_timeout_ms",
}
"""The plugin's per-number keys (`numbers["+E164"].*`) with a voicecall counterpart."""

_STT_PROVIDERS = {"openai": "openai-realtime", "openai-realtime": "openai-realtime"}


@dataclass(slots=True)
class Conversion:
    """The result of an import: voicecall keys, and what could not be carried over."""

    values: dict[str, Any] = field(default_factory=dict)
    """Nested voicecall config (TOML key names)."""
    unmapped: list[str] = field(default_factory=list)
    """OpenClaw paths with no voicecall counterpart, each with its reason."""
    notes: list[str] = field(default_factory=list)
    """Values that were changed on the way (renamed provider, converted units)."""


def find_plugin_config(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any]:
    """Locate the plugin config and the core `messages.tts` in what the user gave us.

    Raises:
        ConfigError: a whole OpenClaw config without a voice-call plugin entry.
    """
    messages = data.get("messages")
    core_tts = messages.get("tts") if isinstance(messages, Mapping) else None
    if "plugins" in data:
        entry = _dig(data, "plugins", "entries", "voice-call")
        plugin = entry.get("config") if isinstance(entry, Mapping) else None
        if not isinstance(plugin, Mapping):
            raise ConfigError(
                "no plugins.entries.voice-call.config object in this OpenClaw "
                "config; pass the whole openclaw.json or the plugin config itself"
            )
        return plugin, core_tts
    if isinstance(data.get("config"), Mapping) and "provider" not in data:
        return data["config"], core_tts  # the plugin entry {enabled, config}
    return {k: v for k, v in data.items() if k != "messages"}, core_tts


def convert_openclaw(data: Mapping[str, Any]) -> Conversion:
    """Map an OpenClaw config (any of the accepted shapes) to voicecall's TOML keys."""
    plugin, core_tts = find_plugin_config(data)
    out = Conversion()
    leaves = _leaves(plugin)
    for path, value in leaves.items():
        _convert_leaf(path, value, leaves, out)
    if isinstance(core_tts, Mapping):
        for path, value in _leaves(core_tts).items():
            _map_tts("messages.tts.", path, value, out)
    return out


def _convert_leaf(path: str, value: Any, leaves: Mapping[str, Any], out: Conversion) -> None:
    if value is None:
        return  # JSON null: unset
    if isinstance(value, Mapping) and value:
        target = _SIMPLE.get(path, path)
        out.unmapped.append(
            f"{path}: a secret reference cannot be imported; store the secret "
            f"with `voicecall secrets set {target}`"
        )
        return
    if path in _SIMPLE:
        _convert_simple(path, value, out)
    else:
        _convert_special(path, value, leaves, out)


def _convert_simple(path: str, value: Any, out: Conversion) -> None:
    """A key with a one-to-one counterpart (two of its old values were renamed)."""
    if path == "provider" and value == "log":
        out.notes.append('provider "log" is called "mock" in voicecall')
        value = "mock"
    if path == "inboundPolicy" and value == "pairing":
        out.notes.append('inboundPolicy "pairing" became "allowlist" (it behaved the same)')
        value = "allowlist"
    _put(out.values, _SIMPLE[path], value)


def _convert_special(path: str, value: Any, leaves: Mapping[str, Any], out: Conversion) -> None:
    """A key that changed shape, unit or place, or has no counterpart (noted as unmapped)."""
    if path == "enabled":
        if value is False:
            out.notes.append(
                "the plugin was disabled (enabled = false); voicecall has no such "
                "switch: just do not start the daemon"
            )
    elif path == "ringTimeoutMs" and isinstance(value, int | float):
        seconds = max(1, math.ceil(value / 1000))
        out.notes.append(f"ringTimeoutMs = {value} became ring_timeout_seconds = {seconds}")
        _put(out.values, "ring_timeout_seconds", seconds)
    elif path == "twilio.from":
        if "fromNumber" not in leaves:
            _put(out.values, "from_number", value)
    elif path == "tunnel.provider" and value in ("tailscale-serve", "tailscale-funnel"):
        mode = value.split("-", 1)[1]
        out.notes.append(f'tunnel.provider "{value}" became [tailscale] mode = "{mode}"')
        _put(out.values, "tunnel.provider", "none")
        _put(out.values, "tailscale.mode", mode)
    elif path == "tunnel.provider":
        _put(out.values, "tunnel.provider", value)
    elif path in ("streaming.sttProvider", "streaming.provider") and value in _STT_PROVIDERS:
        _put(out.values, "streaming.stt_provider", _STT_PROVIDERS[value])
    elif path.startswith("tts."):
        _map_tts("tts.", path[4:], value, out)
    elif path.startswith("numbers.") and path.count(".") >= 2:
        _map_number(path, value, out)
    elif path.startswith("voicemail."):
        out.unmapped.append(
            f"{path}: the plugin's voicemail (Twilio AMD) options have no "
            "one-to-one key; set [machine_detection] (enabled, mode, "
            "on_machine_notify, on_machine_conversation) by hand"
        )
    else:
        out.unmapped.append(f"{path}: no voicecall equivalent")


def _map_tts(prefix: str, path: str, value: Any, out: Conversion) -> None:
    source = ("messages.tts." if prefix.startswith("messages") else "tts.") + path
    if path in _TTS:
        _put(out.values, prefix + _TTS[path], value)
    else:
        out.unmapped.append(
            f"{source}: no voicecall equivalent (call TTS supports provider, "
            "openai.* and elevenlabs.* api_key/base_url/voice/model only)"
        )


def _map_number(path: str, value: Any, out: Conversion) -> None:
    """`numbers.<E164>.<key>` -> `[numbers."<E164>"]` (a bad number is left for `config
    validate` to name; API keys stay in [tts], a per-number table holds none)."""
    _, number, key = path.split(".", 2)
    if key in _NUMBER:
        _put(out.values, f"numbers.{number}.{_NUMBER[key]}", value)
    elif key.startswith("tts.") and key[4:] in _TTS and not key.endswith("apiKey"):
        _put(out.values, f"numbers.{number}.tts.{_TTS[key[4:]]}", value)
    elif key.startswith("tts.") and key.endswith("apiKey"):
        out.unmapped.append(
            f"{path}: a per-number TTS key is not imported; API keys live in "
            "[tts] (`voicecall secrets set tts.openai.api_key`)"
        )
    else:
        out.unmapped.append(f"{path}: no voicecall equivalent")


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping) and value and not _is_secret_ref(value):
            out.update(_leaves(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _is_secret_ref(value: Mapping[str, Any]) -> bool:
    """OpenClaw secret-input references ({source, id}) cannot be resolved outside OpenClaw."""
    return "source" in value and ("id" in value or "provider" in value)


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _dig(data: Mapping[str, Any], *keys: str) -> Any:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node
