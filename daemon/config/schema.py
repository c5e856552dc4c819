"""The config file's keys, their types and rules, and the walker that checks a parsed TOML table.

One declarative table serves the loader (checks and defaults), `config set` (how to read a value
typed on the command line), `config show` and the docs test, so the three can never disagree.
Every problem is a sentence `<key path> = <value>: expected <what>`, and all are collected.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from daemon.config import model
from daemon.config.exposure import is_local_only_host
from daemon.config.secrets import MASK, SECRET_KEYS
from daemon.providers import catalog as provider_catalog
from daemon.speech.tts import catalog as tts_catalog
from daemon.store import location as store_location

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
Kind = Literal["str", "int", "float", "bool", "list", "table"]


class Invalid(ValueError):
    """A value broke its key's rule; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Key:
    """One leaf key: how to check it, its default, and what to call it in messages and docs."""

    kind: Kind
    expected: str
    check: Callable[[Any], Any]
    default: Any = None
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table: its keys (leaves or sub-tables)."""

    keys: Mapping[str, Key | Table | Dynamic]
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Dynamic:
    """A table whose keys the user chooses (`[numbers."+15550001234"]`), each one a `value`
    table. A key that breaks `key_ok` is an error naming it; nothing is filled in by default."""

    key_ok: Callable[[str], bool]
    key_expected: str
    value: Table
    placeholder: str
    """How the docs and `config show` name any one key (`+E164`)."""
    doc: str = ""


def _typed(
    kind: Kind,
    expected: str,
    rule: Callable[[Any], bool] = lambda _v: True,
    default: Any = None,
    doc: str = "",
) -> Key:
    py: tuple[type, ...] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "list": (list,),
    }[kind]

    def check(value: Any) -> Any:
        if not isinstance(value, py) or (kind in ("int", "float") and isinstance(value, bool)):
            raise Invalid(expected)
        if not rule(value):
            raise Invalid(expected)
        if kind == "float":
            return float(cast(float, value))
        return tuple(cast(list[Any], value)) if kind == "list" else value

    return Key(kind, expected, check, default, doc)


def string(default: str | None = None, doc: str = "", *, nonempty: bool = True) -> Key:
    """A string (non-empty unless told otherwise)."""
    return _typed(
        "str",
        "a non-empty string" if nonempty else "a string",
        lambda v: bool(v.strip()) or not nonempty,
        default,
        doc,
    )


def integer(low: int, high: int | None = None, default: int | None = None, doc: str = "") -> Key:
    """An integer in [low, high]."""
    if high is not None:
        expected = f"an integer from {low} to {high}"
    else:
        expected = "an integer greater than 0" if low == 1 else f"an integer >= {low}"
    return _typed("int", expected, lambda v: v >= low and (high is None or v <= high), default, doc)


def number(low: float, high: float, default: float, doc: str = "") -> Key:
    """A number (int or float) in [low, high]."""
    return _typed(
        "float", f"a number from {low:g} to {high:g}", lambda v: low <= v <= high, default, doc
    )


def boolean(default: bool = False, doc: str = "") -> Key:
    """true or false."""
    return _typed("bool", "true or false", default=default, doc=doc)


def choice(*options: str, default: str | None = None, doc: str = "") -> Key:
    """One of a fixed set of strings."""
    listed = ", ".join(f'"{o}"' for o in options)
    return _typed("str", f"one of {listed}", lambda v: v in options, default, doc)


def e164(doc: str = "") -> Key:
    """A phone number in E.164 form."""
    return _typed(
        "str",
        'an E.164 phone number such as "+15550001234"',
        lambda v: bool(E164.match(v)),
        None,
        doc,
    )


def url(*schemes: str, default: str | None = None, doc: str = "") -> Key:
    """An absolute URL with one of the given schemes and a host."""
    expected = f'an absolute {" or ".join(schemes)} URL such as "{schemes[-1]}://example.com/path"'

    def ok(value: str) -> bool:
        try:
            parts = urlsplit(value)
            return parts.scheme in schemes and bool(parts.hostname) and " " not in value
        except ValueError:
            return False

    return _typed("str", expected, ok, default, doc)


def store_key(doc: str = "") -> Key:
    """The `store` key: a folder for SQLite, or a `postgresql://` URL (its password is masked
    in every message, like any URL's)."""
    expected = store_location.EXPECTED

    def check(value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(expected)
        if store_location.is_postgres_url(value):
            why = store_location.check_postgres_url(value)
            if why is not None:
                raise Invalid(f"a usable PostgreSQL URL, but {why}")
            return value.strip()
        if store_location.looks_like_url(value):
            raise Invalid(expected)
        return value

    return Key("str", expected, check, None, doc)


def url_path(default: str, doc: str = "") -> Key:
    """A URL path starting with `/`."""
    return _typed(
        "str",
        'a URL path starting with "/" such as "/voice/webhook"',
        lambda v: v.startswith("/") and " " not in v and "?" not in v,
        default,
        doc,
    )


def str_list(item: Callable[[str], bool], what: str, doc: str = "") -> Key:
    """A list of strings each satisfying `item`."""
    return _typed(
        "list",
        f"a list of {what}",
        lambda v: all(isinstance(i, str) and item(i) for i in v),
        (),
        doc,
    )


def _is_ip_or_net(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_public_key(value: str) -> bool:
    if value.lstrip().startswith("-----BEGIN"):
        return True
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) in (32, 44)  # raw Ed25519 key, or its DER SubjectPublicKeyInfo


TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters"})


def _valid_tools(tools: list[Any]) -> bool:
    """`[realtime] tools`: function tools as the Realtime API takes them; `end_call` is ours."""
    names: set[str] = set()
    for tool in tools:
        if not isinstance(tool, dict) or not set(tool) <= _TOOL_KEYS:
            return False
        name = tool.get("name")
        if (
            not isinstance(name, str)
            or not TOOL_NAME.match(name)
            or name == "end_call"
            or name in names
        ):
            return False
        names.add(name)
        if tool.get("type", "function") != "function":
            return False
        if not isinstance(tool.get("description", ""), str):
            return False
        if not isinstance(tool.get("parameters", {}), dict):
            return False
    return True


def _is_public_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    if not host or " " in value:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_local_only_host(host))


HOST = re.compile(r"^[A-Za-z0-9_.:%\-\[\]]+$")
RESPONSE_MODEL = re.compile(r"^[A-Za-z0-9_.\-]+/\S+$")
REGION = re.compile(r"^[a-z]{2}\d$")
HTTP = ("http", "https")


def _tts_table(doc: str, *, keys: bool = True, defaults: bool = True) -> Table:
    """The TTS settings; a per-number override has no API keys (they are secrets, kept in the
    call TTS) and no defaults (an unset key keeps the call TTS value)."""

    def d(value: str) -> str | None:
        return value if defaults else None

    openai = {
        "api_key": string(doc="OpenAI API key"),
        "base_url": url(*HTTP, default=d(model.OPENAI_BASE_URL)),
        "model": string(d("gpt-4o-mini-tts")),
        "voice": string(d("alloy")),
    }
    elevenlabs = {
        "api_key": string(doc="ElevenLabs API key"),
        "base_url": url(*HTTP, default=d("https://api.elevenlabs.io")),
        "voice_id": string(),
        "model_id": string(d("eleven_multilingual_v2")),
    }
    if not keys:
        del openai["api_key"], elevenlabs["api_key"]
    return Table(
        {
            "provider": choice(
                *tts_catalog.NAMES,
                *tts_catalog.IGNORED,
                default=d("openai"),
                doc="`edge` is accepted and ignored for calls, with a warning",
            ),
            "openai": Table(openai),
            "elevenlabs": Table(elevenlabs),
        },
        doc,
    )


def _is_e164(value: str) -> bool:
    return bool(E164.match(value))


def _free_table(value: Any) -> Any:
    if not isinstance(value, dict):
        raise Invalid("a table such as { enabled = true }")
    return dict(value)


NUMBER = Table(
    {
        "inbound_greeting": string(doc="greeting of inbound calls to this number"),
        "response_model": _typed(
            "str",
            'a "provider/model" name such as "openai/gpt-4o-mini"',
            lambda v: bool(RESPONSE_MODEL.match(v)),
        ),
        "response_system_prompt": string(),
        "response_timeout_ms": integer(1),
        "tts": _tts_table("deep-merged over the call TTS", keys=False, defaults=False),
        "realtime": Key(
            "table", "a table of [realtime] settings", _free_table, None, "merged over [realtime]"
        ),
    },
    "overrides for inbound calls to this number",
)
"""One `[numbers."+E164"]` table: every key optional, unset keys keep the top-level value."""


SCHEMA = Table(
    {
        "provider": choice(*provider_catalog.NAMES, default="mock"),
        "from_number": e164("caller ID of outbound calls; required except for mock"),
        "to_number": e164("default callee of `voicecall call`"),
        "max_duration_seconds": integer(1, default=300),
        "stale_call_reaper_seconds": integer(0, default=0, doc="0 = off"),
        "max_concurrent_calls": integer(1, default=8),
        "max_loop_load": number(
            0.01,
            1,
            model.DEFAULT_MAX_LOOP_LOAD,
            "share of the last 5 s the event loop may be busy (counting the calls taken "
            "since) before new calls are refused (1 = never)",
        ),
        "ring_timeout_seconds": integer(1, default=30),
        "transcript_timeout_ms": integer(1, default=180000),
        "inbound_policy": choice("disabled", "allowlist", "open", default="disabled"),
        "allow_from": str_list(
            lambda v: bool(E164.match(v)), 'E.164 phone numbers such as ["+15550001234"]'
        ),
        "inbound_greeting": string(model.DEFAULT_GREETING),
        "response_model": _typed(
            "str",
            'a "provider/model" name such as "openai/gpt-4o-mini"',
            lambda v: bool(RESPONSE_MODEL.match(v)),
        ),
        "response_system_prompt": string(model.DEFAULT_SYSTEM_PROMPT),
        "response_timeout_ms": integer(1, default=30000),
        "public_url": _typed(
            "str",
            'an https URL such as "https://voice.example.com/voice/webhook" '
            "(http only for a local address)",
            _is_public_url,
            doc="https URL of the webhook as the provider sees it",
        ),
        "skip_signature_verification": boolean(),
        "store": store_key(
            doc="folder of the SQLite store, or a postgresql:// URL (default: the "
            "state directory; VOICECALL_STORE overrides it)"
        ),
        "twilio": Table(
            {
                "account_sid": _typed(
                    "str",
                    'a Twilio account SID such as "AC0123..."',
                    lambda v: v.startswith("AC") and len(v) > 2,
                ),
                "auth_token": string(),
                "api_base_url": url(*HTTP, default="https://api.twilio.com"),
                "region": _typed(
                    "str",
                    'a Twilio region such as "us1", "ie1" or "au1"',
                    lambda v: bool(REGION.match(v)),
                ),
            }
        ),
        "telnyx": Table(
            {
                "api_key": string(),
                "connection_id": string(),
                "public_key": _typed(
                    "str",
                    "a base64 Ed25519 public key (32 raw bytes or DER) or PEM",
                    _is_public_key,
                ),
                "api_base_url": url(*HTTP, default="https://api.telnyx.com/v2"),
            }
        ),
        "plivo": Table(
            {
                "auth_id": string(),
                "auth_token": string(),
                "api_base_url": url(*HTTP, default="https://api.plivo.com/v1"),
                "accept_v2_signatures": boolean(
                    doc="V2 signs only URL + nonce, not the body: refused unless true"
                ),
            }
        ),
        "mock": Table(
            {
                "answer_delay_ms": integer(0, default=200),
                "replies": str_list(lambda _v: True, "strings (caller utterances)"),
                "outcome": choice(
                    "answer", "busy", "no-answer", "failed", "machine", default="answer"
                ),
            }
        ),
        "serve": Table(
            {
                "bind": _typed(
                    "str",
                    'an IP address or host name such as "127.0.0.1"',
                    lambda v: bool(HOST.match(v)),
                    "127.0.0.1",
                ),
                "port": integer(0, 65535, default=3334, doc="0 = any free port"),
                "path": url_path("/voice/webhook"),
                "header_timeout_ms": integer(
                    1,
                    default=10000,
                    doc="a request's headers must arrive "
                    "within this; a trickling or silent client is closed",
                ),
                "idle_timeout_ms": integer(
                    1, default=15000, doc="an idle keep-alive connection closes"
                ),
                "max_connections": integer(
                    1, default=1024, doc="beyond it a new connection is closed"
                ),
                "max_connections_per_ip": integer(
                    1,
                    default=64,
                    doc="per socket address; a trusted "
                    "proxy or tunnel agent is bounded by max_connections",
                ),
                "workers": integer(
                    1,
                    default=1,
                    doc="worker processes sharing the ports (SPEC 16); "
                    "above 1 needs a PostgreSQL store",
                ),
            }
        ),
        "webhook_security": Table(
            {
                "allowed_hosts": str_list(
                    lambda v: bool(HOST.match(v)), 'host names such as ["voice.example.com"]'
                ),
                "trust_forwarding_headers": boolean(),
                "trusted_proxy_ips": str_list(
                    _is_ip_or_net,
                    'IP addresses or CIDR networks such as ["127.0.0.1", "10.0.0.0/8"]',
                ),
            }
        ),
        "tunnel": Table(
            {
                "provider": choice("none", "ngrok", default="none"),
                "ngrok_authtoken": string(),
                "ngrok_domain": _typed(
                    "str", 'a host name such as "voice.ngrok.app"', lambda v: bool(HOST.match(v))
                ),
                "allow_ngrok_free_tier_loopback_bypass": boolean(),
            }
        ),
        "tailscale": Table(
            {
                "mode": choice("off", "serve", "funnel", default="off"),
                "path": url_path("/voice/webhook"),
            }
        ),
        "outbound": Table(
            {
                "default_mode": choice("notify", "conversation", default="notify"),
                "notify_hangup_delay_seconds": integer(0, default=3),
            }
        ),
        "machine_detection": Table(
            {
                "enabled": boolean(
                    doc="outbound calls ask the provider to detect answering machines"
                ),
                "mode": choice(
                    "detect-beep",
                    "detect",
                    default="detect-beep",
                    doc="`detect-beep` also learns when the greeting ends; `detect` = "
                    "human/machine only",
                ),
                "timeout_seconds": integer(
                    1, default=30, doc="how long the provider may take to decide"
                ),
                "greeting_timeout_seconds": integer(
                    1, default=20, doc="the longest wait for the end of a machine's greeting"
                ),
                "on_machine_notify": choice("leave-message", "hangup", default="leave-message"),
                "on_machine_conversation": choice(
                    "hangup", "leave-message", "continue", default="hangup"
                ),
            }
        ),
        "streaming": Table(
            {
                "api_key": string(doc="STT key"),
                "enabled": boolean(),
                "stream_path": url_path("/voice/stream"),
                "pre_start_timeout_ms": integer(1, default=5000),
                "max_pending_connections": integer(1, default=32),
                "max_pending_connections_per_ip": integer(1, default=4),
                "max_connections": integer(1, default=128),
                "stt_provider": choice("openai-realtime", default="openai-realtime"),
                "stt_model": string("gpt-4o-transcribe"),
                "stt_url": url("ws", "wss", default=model.OPENAI_REALTIME_STT_URL),
                "silence_duration_ms": integer(1, default=800),
                "vad_threshold": number(0, 1, 0.5),
                "inbound_batch_ms": integer(
                    0,
                    200,
                    default=60,
                    doc="caller audio taken from the kernel this many ms at a time, not per "
                    "20 ms frame (CPU per call); 0 reads every frame at once",
                ),
                "outbound_batch_ms": _typed(
                    "int",
                    "20, 40 or 60 (a whole number of 20 ms frames, at most three so every "
                    "frame still leaves 20 ms or more before its play time)",
                    lambda v: v in model.OUTBOUND_BATCHES_MS,
                    default=20,
                    doc="audio to the caller written this many ms at a time: 20 writes every "
                    "frame on its own clock tick; 40 or 60 write two or three frames (each "
                    "still its own message) in one system call, for less CPU per call, "
                    "and the provider's buffer plays them on time",
                ),
                "outbound_batch_overload_ms": _typed(
                    "int",
                    "20, 40 or 60 (as outbound_batch_ms)",
                    lambda v: v in model.OUTBOUND_BATCHES_MS,
                    default=20,
                    doc="the same while the event loop is past its core (a second 95 % busy "
                    "with a frame 40 ms late, or frames 20 ms late on average), until it has "
                    "room again: about a sixth less CPU per call when it is short; at or "
                    "below outbound_batch_ms (the default) it never changes, for a busy "
                    "second at 400 calls on one core widens too, and SPEC 12's jitter reads "
                    "the pairs as 20 ms",
                ),
            }
        ),
        "messages": Table({"tts": _tts_table("core TTS settings")}),
        "tts": _tts_table("call-only TTS, deep-merged over [messages.tts]"),
        "agent": Table(
            {
                "base_url": url(*HTTP, default=model.OPENAI_BASE_URL),
                "api_key": string(),
            }
        ),
        "realtime": Table(
            {
                "enabled": boolean(),
                "provider": choice("openai", default="openai"),
                "model": string("gpt-realtime"),
                "voice": string("alloy"),
                "instructions": string(
                    doc="the model's instructions (default: response_system_prompt)"
                ),
                "base_url": url("ws", "wss", default=model.OPENAI_REALTIME_URL),
                "api_key": string(doc="Realtime API key"),
                "vad_threshold": number(0, 1, 0.5),
                "silence_duration_ms": integer(1, default=500),
                "tools": _typed(
                    "list",
                    'a list of function tools such as [{name = "lookup", '
                    'description = "...", parameters = {type = "object"}}] (names of '
                    'letters, digits, "_" or "-", not "end_call"; no duplicates)',
                    _valid_tools,
                    (),
                    "function tools relayed to the agent as call.tool",
                ),
                "tool_timeout_ms": integer(1, default=10000),
            }
        ),
        "numbers": Dynamic(
            _is_e164,
            'an E.164 phone number such as "+15550001234"',
            NUMBER,
            "+E164",
            "per-number overrides for inbound calls (section 14)",
        ),
    }
)
"""Every key the config file may hold."""


def show(value: Any, *, secret: bool = False) -> str:
    """Render a value as it would be written in TOML; secrets become a mask."""
    if secret:
        return f'"{MASK}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a URL's password is a secret wherever it appears
        return json.dumps(store_location.mask_url_passwords(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def lookup(path: str) -> Key | Table | None:
    """The schema entry of a dotted key path, or None when there is no such key.

    Under a `Dynamic` table any key its rule accepts leads on (`numbers.+15550001234.tts`).
    """
    node: Key | Table | Dynamic = SCHEMA
    for part in split_path(path):
        if isinstance(node, Dynamic):
            if not node.key_ok(part):
                return None
            node = node.value
        elif isinstance(node, Table) and part in node.keys:
            node = node.keys[part]
        else:
            return None
    return None if isinstance(node, Dynamic) else node


def split_path(path: str) -> list[str]:
    """`numbers."+15550001234".tts` -> ["numbers", "+15550001234", "tts"] (quotes optional)."""
    return [part.strip('"') for part in re.findall(r'"[^"]*"|[^.]+', path)]


def leaf_paths(table: Table = SCHEMA, prefix: str = "") -> list[tuple[str, Key]]:
    """Every leaf key as `(dotted path, Key)`, in schema order; a dynamic key is named by its
    placeholder (`numbers.+E164.inbound_greeting`)."""
    out: list[tuple[str, Key]] = []
    for name, node in table.keys.items():
        if isinstance(node, Table):
            out.extend(leaf_paths(node, f"{prefix}{name}."))
        elif isinstance(node, Dynamic):
            out.extend(leaf_paths(node.value, f"{prefix}{name}.{node.placeholder}."))
        else:
            out.append((prefix + name, node))
    return out


def suggest(name: str, known: list[str]) -> str | None:
    """The known key a misspelt (or camelCase) key probably meant."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower().replace("-", "_")
    if snake in known:
        return snake
    close = difflib.get_close_matches(snake, known, n=1, cutoff=0.6)
    return close[0] if close else None


def check_table(
    raw: Mapping[str, Any], problems: list[str], table: Table = SCHEMA, prefix: str = ""
) -> dict[str, Any]:
    """Check a parsed TOML table against the schema.

    Appends one sentence per problem to `problems` and returns the keys that passed, normalised
    (lists as tuples, numbers as floats where a float is expected). Defaults are not filled in.
    """
    out: dict[str, Any] = {}
    for name, value in raw.items():
        path = prefix + name
        node = table.keys.get(name)
        if node is None:
            problems.append(_unknown(path, name, value, table, prefix))
        elif isinstance(node, Dynamic):
            if isinstance(value, dict):
                out[name] = _check_dynamic(value, problems, node, path)
            else:
                problems.append(
                    f"{path} = {show(value)}: expected a table of tables such as "
                    f'[{path}."{node.placeholder}"]'
                )
        elif isinstance(node, Table):
            if isinstance(value, dict):
                out[name] = check_table(value, problems, node, path + ".")
            else:
                problems.append(
                    f"{path} = {show(value)}: expected a table; write it as "
                    f"[{path}] with its keys below"
                )
        else:
            try:
                out[name] = node.check(value)
            except Invalid as exc:
                problems.append(
                    f"{path} = {show(value, secret=path in SECRET_KEYS)}: expected {exc}"
                )
    return out


def _check_dynamic(
    raw: Mapping[str, Any], problems: list[str], node: Dynamic, path: str
) -> dict[str, Any]:
    """Each key must pass the rule (a bad key is named, its table not checked further)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f'{path}."{key}"'
        if not node.key_ok(key):
            problems.append(
                f"{where} = a table: expected its key {json.dumps(key)} to be {node.key_expected}"
            )
            continue
        if not isinstance(value, dict):
            problems.append(
                f"{where} = {show(value)}: expected a table; write it as [{where}] "
                "with its keys below"
            )
            continue
        checked = check_table(value, problems, node.value, where + ".")
        realtime = SCHEMA.keys.get("realtime")
        if isinstance(checked.get("realtime"), dict) and isinstance(realtime, Table):
            override = dict(checked["realtime"])
            if "api_key" in override:  # a secret: it stays in [realtime] (env, keyring)
                del override["api_key"]
                problems.append(
                    f'{where}.realtime.api_key = "{MASK}": a number table holds '
                    "no secrets; set realtime.api_key (or OPENAI_API_KEY) instead"
                )
            checked["realtime"] = check_table(override, problems, realtime, where + ".realtime.")
        out[key] = checked
    return out


def _unknown(path: str, name: str, value: Any, table: Table, prefix: str) -> str:
    known = list(table.keys)
    hint = suggest(name, known)
    where = f"[{prefix[:-1]}]" if prefix else "the top level"
    # An unknown key in a table that holds secrets may be a misspelt secret under any name
    # (`[twilio] auth = "..."`): never echo its text there.
    in_secret_table = bool(prefix) and any(key.startswith(prefix) for key in SECRET_KEYS)
    secretish = (
        (isinstance(value, str) and in_secret_table)
        or bool(re.search(r"token|key|secret|password", name, re.IGNORECASE))
        or (f"{prefix}{hint}" in SECRET_KEYS)
    )
    shown = "a table" if isinstance(value, dict) else show(value, secret=secretish)
    if hint:
        return f"{path} = {shown}: unknown key; did you mean {prefix}{hint}?"
    return f"{path} = {shown}: unknown key; keys allowed at {where}: {', '.join(known)}"


def with_defaults(checked: Mapping[str, Any], table: Table = SCHEMA) -> dict[str, Any]:
    """The checked values with every missing key filled with its default."""
    out: dict[str, Any] = {}
    for name, node in table.keys.items():
        if isinstance(node, Dynamic):
            out[name] = dict(checked.get(name) or {})  # overrides only: no defaults
        elif isinstance(node, Table):
            sub = checked.get(name)
            out[name] = with_defaults(sub if isinstance(sub, Mapping) else {}, node)
        else:
            out[name] = checked.get(name, node.default)
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge recursively; any other value in `override` replaces the one in `base`."""
    merged = dict(base)
    for name, value in override.items():
        old = merged.get(name)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[name] = deep_merge(old, value)
        else:
            merged[name] = value
    return merged
