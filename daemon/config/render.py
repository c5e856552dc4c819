"""The effective config as data and as TOML, for `config show` and `config get`, with secrets
masked; and the commented starter file `config init` writes.

Masking happens here, once, so no command can print a secret by forgetting to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.config.model import Config
from daemon.config.secrets import MASK, SECRET_KEYS
from daemon.store.location import StoreLocation

_META_FIELDS = ("warnings", "source", "secret_sources")


def config_to_dict(config: Config, *, mask: bool = True) -> dict[str, Any]:
    """The effective config as nested plain data keyed by TOML names (unset values are None).

    Tuples become lists and paths strings; with `mask`, every set secret becomes "********" (the
    password of a `store` URL too).
    """

    def convert(obj: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not prefix and f.name in _META_FIELDS:
                continue
            if f.name.startswith("effective_"):
                continue  # derived from the other fields, shown through them
            value = getattr(obj, f.name)
            path = prefix + f.name
            if isinstance(value, StoreLocation):  # a URL's password is a secret
                out[f.name] = value.display if mask else (value.url or str(value.folder))
            elif dataclasses.is_dataclass(value):
                out[f.name] = convert(value, path + ".")
            elif isinstance(value, Mapping):  # [numbers."+E164"], its tts/realtime overrides
                if prefix and not value:
                    continue  # an override left empty: nothing to show
                out[f.name] = {
                    key: convert(item, f"{path}.{key}.")
                    if dataclasses.is_dataclass(item)
                    else _plain(item)
                    for key, item in value.items()
                }
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif isinstance(value, Path):
                out[f.name] = str(value)
            elif mask and path in SECRET_KEYS and value is not None:
                out[f.name] = MASK
            else:
                out[f.name] = value
        return out

    return convert(config, "")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def get_path(tree: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key in nested data.

    Raises:
        KeyError: no such key.
    """
    from daemon.config.schema import split_path

    node: Any = tree
    for part in split_path(key):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def to_toml(
    tree: Mapping[str, Any],
    *,
    sources: Mapping[str, str] | None = None,
    header: str | None = None,
    prefix: str = "",
) -> str:
    """Render nested data as TOML: unset keys as comments, secrets annotated with their source."""
    import tomlkit  # lazy: the CLI imports this module only for config commands

    sources = sources or {}
    doc = tomlkit.document()
    if header:
        for line in header.splitlines():
            doc.add(tomlkit.comment(line))
    _fill(doc, tree, prefix, sources)
    return tomlkit.dumps(doc)


def _fill(container: Any, tree: Mapping[str, Any], prefix: str, sources: Mapping[str, str]) -> None:
    import tomlkit

    for name, value in tree.items():
        if isinstance(value, Mapping):
            continue
        path = prefix + name
        if value is None:
            container.add(tomlkit.comment(f"{name} is unset"))
            continue
        item = tomlkit.item(value)
        if path in SECRET_KEYS and path in sources:
            item.comment(f"from {_source_label(path, sources[path])}")
        container.add(name, item)
    for name, value in tree.items():
        if isinstance(value, Mapping):
            table = tomlkit.table()
            _fill(table, value, f"{prefix}{name}.", sources)
            container.add(name, table)


def _source_label(key: str, source: str) -> str:
    if source == "env":
        return f"env {SECRET_KEYS[key]}"
    return "config file" if source == "file" else "keyring"


STARTER_TOML = """\
# voicecall configuration (TOML). Reference: docs/config.md, or `voicecall config show`.
# Check it with `voicecall config validate`; change one key with `voicecall config set KEY VALUE`.
#
# Secrets (auth tokens, API keys) are best kept out of this file: store them in the OS keyring
# with `voicecall secrets set twilio.auth_token`, or export their environment variables
# (TWILIO_AUTH_TOKEN, TELNYX_API_KEY, PLIVO_AUTH_TOKEN, OPENAI_API_KEY, ...).

# twilio, telnyx, plivo, or mock (no network, for trying things out).
provider = "mock"

# Caller ID of outbound calls (E.164), required except for mock; default callee of `voicecall call`.
# from_number = "+15550001234"
# to_number = "+15550005678"

# Inbound calls: "disabled", "allowlist" (only allow_from) or "open".
inbound_policy = "disabled"
# allow_from = ["+15550005678"]

# Answer each caller turn with an LLM (OpenAI-compatible API, see [agent]); unset = no auto-reply.
# response_model = "openai/gpt-4o-mini"

# The webhook URL as the provider sees it, when you publish it yourself (reverse proxy).
# Otherwise use [tunnel] provider = "ngrok" or [tailscale] mode = "funnel".
# public_url = "https://voice.example.com/voice/webhook"

[serve]
# Where the webhook server listens.
bind = "127.0.0.1"
port = 3334
path = "/voice/webhook"

[outbound]
# "notify" speaks the message and hangs up; "conversation" keeps the call for `voicecall continue`.
default_mode = "notify"
notify_hangup_delay_seconds = 3

[mock]
# Caller utterances the mock provider "hears", cycled; empty = the caller never speaks.
replies = ["Yes, that works for me.", "Thanks, bye!"]

# [twilio]
# account_sid = "AC..."
# auth_token: `voicecall secrets set twilio.auth_token`

# [telnyx]
# connection_id = "..."
# api_key, public_key: `voicecall secrets set telnyx.api_key` / `telnyx.public_key`

# [plivo]
# auth_id = "MA..."
# auth_token: `voicecall secrets set plivo.auth_token`

# [tunnel]
# provider = "ngrok"            # ngrok_authtoken: `voicecall secrets set tunnel.ngrok_authtoken`
# ngrok_domain = "voice.ngrok.app"

# [tailscale]
# mode = "funnel"               # off, serve (tailnet only), funnel (public)

# [streaming]
# enabled = true                # media streams + OpenAI realtime speech-to-text

# [tts]
# provider = "openai"           # or "elevenlabs"
# [tts.openai]
# voice = "alloy"

# [machine_detection]
# enabled = true                # outbound calls detect answering machines
# on_machine_notify = "leave-message"   # speak after the beep, end "voicemail"; or "hangup"

# [numbers."+15550001234"]      # inbound calls to this number of ours
# inbound_greeting = "Thanks for calling the bakery."
# response_system_prompt = "You answer questions about opening hours."
"""
"""What `voicecall config init` writes: valid as it is, and a commented tour of the common keys."""
