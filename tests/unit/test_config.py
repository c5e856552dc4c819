"""Config loading: defaults, every validation rule, messages, env fallbacks, TTS merge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config.loader import check_document, load_config
from daemon.config.model import Config
from daemon.errors import ConfigError
from daemon.paths import Paths, resolve_paths

TWILIO_OK: dict[str, Any] = {
    "provider": "twilio",
    "from_number": "+15550001234",
    "public_url": "https://voice.example.com/voice/webhook",
    "twilio": {"account_sid": "AC0123", "auth_token": "tok"},
}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve_paths({"VOICECALL_HOME": str(tmp_path)})


def check(paths: Paths, data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return check_document(data, paths, env or {}, use_keyring=False)


def errors_of(paths: Paths, data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    _, report = check(paths, data, env)
    return list(report.errors)


def test_missing_file_gives_mock_defaults(paths: Paths) -> None:
    """No config file is valid: every SPEC default, provider mock, store in the state dir."""
    config = load_config(paths, {}, use_keyring=False)
    assert config == Config.defaults(paths.state)
    assert config.source is None
    assert (config.provider, config.max_duration_seconds, config.max_concurrent_calls) == (
        "mock",
        300,
        8,
    )
    assert (config.ring_timeout_seconds, config.transcript_timeout_ms) == (30, 180000)
    assert config.stale_call_reaper_seconds == 0
    assert config.inbound_policy == "disabled" and config.allow_from == ()
    assert config.inbound_greeting == "Hello! How can I help you today?"
    assert config.response_timeout_ms == 30000 and config.response_model is None
    assert (config.serve.bind, config.serve.port, config.serve.path) == (
        "127.0.0.1",
        3334,
        "/voice/webhook",
    )
    assert config.mock.answer_delay_ms == 200 and config.mock.outcome == "answer"
    assert config.mock.replies == ()
    assert config.twilio.api_base_url == "https://api.twilio.com"
    assert config.telnyx.api_base_url == "https://api.telnyx.com/v2"
    assert config.plivo.api_base_url == "https://api.plivo.com/v1"
    assert config.tunnel.provider == "none" and config.tailscale.mode == "off"
    assert config.outbound.default_mode == "notify"
    assert config.outbound.notify_hangup_delay_seconds == 3
    assert config.streaming.stream_path == "/voice/stream"
    assert config.streaming.stt_url == "wss://api.openai.com/v1/realtime?intent=transcription"
    assert config.streaming.vad_threshold == 0.5 and config.streaming.max_connections == 128
    assert config.tts.openai.model == "gpt-4o-mini-tts" and config.tts.openai.voice == "alloy"
    assert config.tts.elevenlabs.model_id == "eleven_multilingual_v2"
    assert config.tts.elevenlabs.base_url == "https://api.elevenlabs.io"
    assert config.agent.base_url == "https://api.openai.com/v1"
    assert config.store.folder == paths.state


def test_file_values_are_read(paths: Paths) -> None:
    """A file's values land on the attributes of the same names."""
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(
        'max_concurrent_calls = 2\nallow_from = ["+15550001234"]\n'
        '[serve]\nport = 0\n[mock]\nreplies = ["yes"]\n'
    )
    config = load_config(paths, {}, use_keyring=False)
    assert config.max_concurrent_calls == 2 and config.serve.port == 0
    assert config.allow_from == ("+15550001234",) and config.mock.replies == ("yes",)
    assert config.source == paths.config


def test_store_is_expanded_and_relative_to_the_file(paths: Paths) -> None:
    """`store` expands `~` and resolves a relative folder against the config file's folder."""
    config, _ = check_document(
        {"store": "calls"}, paths, {}, use_keyring=False, source=paths.config
    )
    assert config is not None and config.store.folder == paths.config.parent / "calls"
    config, _ = check(paths, {"store": "~/vc"})
    assert config is not None and config.store.folder == Path("~/vc").expanduser()


def test_invalid_toml_names_the_file(paths: Paths) -> None:
    """A syntax error is a ConfigError naming the file and the line."""
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text("provider = \n")
    with pytest.raises(ConfigError, match=r"config\.toml is not valid TOML.*line 1"):
        load_config(paths, {}, use_keyring=False)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"provider": "twillio"},
            'provider = "twillio": expected one of "twilio", "telnyx", "plivo", "mock"',
        ),
        ({"from_number": "5550001234"}, 'from_number = "5550001234": expected an E.164 phone'),
        ({"to_number": "+0123"}, 'to_number = "+0123": expected an E.164'),
        (
            {"max_duration_seconds": 0},
            "max_duration_seconds = 0: expected an integer greater than 0",
        ),
        ({"max_concurrent_calls": True}, "max_concurrent_calls = true: expected an integer"),
        (
            {"stale_call_reaper_seconds": -1},
            "stale_call_reaper_seconds = -1: expected an integer >= 0",
        ),
        ({"ring_timeout_seconds": 1.5}, "ring_timeout_seconds = 1.5: expected an integer"),
        ({"transcript_timeout_ms": "9"}, 'transcript_timeout_ms = "9": expected an integer'),
        ({"response_timeout_ms": 0}, "response_timeout_ms = 0: expected an integer greater than 0"),
        ({"inbound_policy": "pairing"}, 'inbound_policy = "pairing": expected one of "disabled"'),
        (
            {"allow_from": ["+15550001234", "x"]},
            'allow_from = ["+15550001234", "x"]: expected a list of E.164',
        ),
        ({"allow_from": "+15550001234"}, 'allow_from = "+15550001234": expected a list'),
        ({"inbound_greeting": ""}, 'inbound_greeting = "": expected a non-empty string'),
        ({"response_model": "gpt-4o"}, 'response_model = "gpt-4o": expected a "provider/model"'),
        (
            {"public_url": "http://voice.example.com/x"},
            'public_url = "http://voice.example.com/x": expected an https URL',
        ),
        ({"public_url": "not a url"}, 'public_url = "not a url": expected an https URL'),
        (
            {"skip_signature_verification": "yes"},
            'skip_signature_verification = "yes": expected true or false',
        ),
        ({"serve": {"port": "abc"}}, 'serve.port = "abc": expected an integer from 0 to 65535'),
        ({"serve": {"port": 70000}}, "serve.port = 70000: expected an integer from 0 to 65535"),
        (
            {"serve": {"path": "voice"}},
            'serve.path = "voice": expected a URL path starting with "/"',
        ),
        ({"serve": {"bind": "a b"}}, 'serve.bind = "a b": expected an IP address or host name'),
        ({"serve": 3}, "serve = 3: expected a table"),
        (
            {"twilio": {"api_base_url": "ftp://x"}},
            'twilio.api_base_url = "ftp://x": expected an absolute http or https URL',
        ),
        (
            {"twilio": {"account_sid": "XY1"}},
            'twilio.account_sid = "XY1": expected a Twilio account',
        ),
        ({"twilio": {"region": "US"}}, 'twilio.region = "US": expected a Twilio region'),
        (
            {"telnyx": {"public_key": "not-base64!"}},
            'telnyx.public_key = "********": expected a base64 Ed25519',
        ),
        (
            {"mock": {"outcome": "maybe"}},
            'mock.outcome = "maybe": expected one of "answer", "busy", "no-answer", "failed"',
        ),
        ({"mock": {"answer_delay_ms": -5}}, "mock.answer_delay_ms = -5: expected an integer >= 0"),
        (
            {"webhook_security": {"trusted_proxy_ips": ["10.0.0.0/8", "proxy"]}},
            'webhook_security.trusted_proxy_ips = ["10.0.0.0/8", "proxy"]: expected a list of IP',
        ),
        (
            {"tunnel": {"provider": "cloudflare"}},
            'tunnel.provider = "cloudflare": expected one of "none", "ngrok"',
        ),
        (
            {"tailscale": {"mode": "on"}},
            'tailscale.mode = "on": expected one of "off", "serve", "funnel"',
        ),
        (
            {"outbound": {"default_mode": "chat"}},
            'outbound.default_mode = "chat": expected one of "notify", "conversation"',
        ),
        (
            {"outbound": {"notify_hangup_delay_seconds": -1}},
            "outbound.notify_hangup_delay_seconds = -1: expected an integer >= 0",
        ),
        (
            {"streaming": {"vad_threshold": 1.5}},
            "streaming.vad_threshold = 1.5: expected a number from 0 to 1",
        ),
        (
            {"streaming": {"stt_url": "https://x"}},
            'streaming.stt_url = "https://x": expected an absolute ws or wss URL',
        ),
        (
            {"streaming": {"outbound_batch_ms": 30}},
            "streaming.outbound_batch_ms = 30: expected 20, 40 or 60 (a whole number of 20 ms",
        ),
        (
            {"streaming": {"outbound_batch_overload_ms": 80}},
            "streaming.outbound_batch_overload_ms = 80: expected 20, 40 or 60 "
            "(as outbound_batch_ms)",
        ),
        (
            {"streaming": {"stt_provider": "deepgram"}},
            'streaming.stt_provider = "deepgram": expected one of "openai-realtime"',
        ),
        (
            {"tts": {"provider": "polly"}},
            'tts.provider = "polly": expected one of "openai", "elevenlabs", "edge"',
        ),
        (
            {"messages": {"tts": {"openai": {"base_url": "x"}}}},
            'messages.tts.openai.base_url = "x": expected an absolute http or https URL',
        ),
        ({"agent": {"api_key": 5}}, 'agent.api_key = "********": expected a non-empty string'),
    ],
)
def test_each_rule_names_key_value_and_expectation(
    paths: Paths, data: dict[str, Any], expected: str
) -> None:
    """Every rule: the message starts with `<key> = <value>: expected <what>`."""
    errors = errors_of(paths, data)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"fromNumber": "+15550001234"},
            'fromNumber = "+15550001234": unknown key; did you mean from_number?',
        ),
        ({"serve": {"prot": 1}}, "serve.prot = 1: unknown key; did you mean serve.port?"),
        (
            {"webhook_security": {"trustedProxyIPs": []}},
            "webhook_security.trustedProxyIPs = []: "
            "unknown key; did you mean "
            "webhook_security.trusted_proxy_ips?",
        ),
        (
            {"twilio": {"auth_tokn": "s3cret"}},
            'twilio.auth_tokn = "********": unknown key; did you mean twilio.auth_token?',
        ),
        ({"zzz": 1}, "zzz = 1: unknown key; keys allowed at the top level: provider, from_number"),
        (
            {"mock": {"qqq": {"a": 1}}},
            "mock.qqq = a table: unknown key; keys allowed at [mock]: "
            "answer_delay_ms, replies, outcome",
        ),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(
    paths: Paths, data: dict[str, Any], expected: str
) -> None:
    """Unknown keys are errors; a close or camelCase name is suggested; secrets stay masked."""
    errors = errors_of(paths, data)
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert "s3cret" not in errors[0]


def test_all_errors_are_reported_at_once(paths: Paths) -> None:
    """Several bad values give one ConfigError listing each of them."""
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(
        'provider = "twilio"\nfrom_number = "12"\nbogus = 1\n'
        '[serve]\nport = "abc"\n[twilio]\nauth_token = "hunter2"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(paths, {}, use_keyring=False)
    problems = info.value.problems
    assert any(p.startswith('from_number = "12"') for p in problems)
    assert any(p.startswith("bogus = 1: unknown key") for p in problems)
    assert any(p.startswith('serve.port = "abc"') for p in problems)
    assert any(p.startswith("twilio.account_sid is not set") for p in problems)
    assert any("is local-only" in p for p in problems)
    assert len(problems) == 5 and "5 problems" in info.value.message
    assert not any("hunter2" in p for p in problems)
    assert not any(p.startswith("from_number is not set") for p in problems)


@pytest.mark.parametrize(
    ("provider", "creds", "missing"),
    [
        ("twilio", {}, ["twilio.account_sid", "twilio.auth_token"]),
        ("twilio", {"twilio": {"account_sid": "AC1"}}, ["twilio.auth_token"]),
        ("telnyx", {}, ["telnyx.api_key", "telnyx.connection_id", "telnyx.public_key"]),
        ("plivo", {"plivo": {"auth_token": "t"}}, ["plivo.auth_id"]),
    ],
)
def test_selected_provider_needs_its_credentials(
    paths: Paths, provider: str, creds: dict[str, Any], missing: list[str]
) -> None:
    """Missing credentials are named with their env var and the command that stores them."""
    data = {
        "provider": provider,
        "from_number": "+15550001234",
        "public_url": "https://v.example.com/w",
        **creds,
    }
    config, report = check(paths, data)
    assert config is not None and report.errors == ()
    assert [m.split(" ", 1)[0] for m in report.missing] == missing
    from daemon.config.secrets import NON_SECRET_ENV, SECRET_KEYS

    for key, message in zip(missing, report.missing, strict=True):
        env_var = SECRET_KEYS.get(key) or NON_SECRET_ENV[key]
        assert env_var in message
        command = "secrets set" if key in SECRET_KEYS else "config set"
        assert f"`voicecall {command} {key}" in message


def test_telnyx_public_key_not_needed_when_skipping_signatures(paths: Paths) -> None:
    """skip_signature_verification drops the Telnyx public-key requirement."""
    data = {
        "provider": "telnyx",
        "from_number": "+15550001234",
        "skip_signature_verification": True,
        "telnyx": {"api_key": "k", "connection_id": "c", "api_base_url": "http://127.0.0.1:9"},
    }
    config, report = check(paths, data)
    assert report.problems == () and config is not None


def test_from_number_required_except_for_mock(paths: Paths) -> None:
    """A real provider needs a caller ID; mock does not."""
    _, report = check(
        paths,
        {
            "provider": "plivo",
            "plivo": {"auth_id": "a", "auth_token": "t"},
            "public_url": "https://v.example.com/w",
        },
    )
    assert len(report.missing) == 1 and report.missing[0].startswith("from_number is not set")
    assert "voicecall config set from_number" in report.missing[0]
    assert check(paths, {"provider": "mock"})[1].problems == ()


def test_non_secret_env_fallbacks_lose_to_the_file(paths: Paths) -> None:
    """TWILIO_ACCOUNT_SID etc. fill unset keys only; TWILIO_FROM_NUMBER only for twilio."""
    env = {
        "TWILIO_ACCOUNT_SID": "ACenv",
        "TWILIO_AUTH_TOKEN": "t",
        "TWILIO_FROM_NUMBER": "+15550009999",
        "TELNYX_CONNECTION_ID": "conn",
        "PLIVO_AUTH_ID": "MAenv",
    }
    data = {**TWILIO_OK, "twilio": {}, "from_number": "+15550001234"}
    config, report = check(paths, data, env)
    assert config is not None and report.problems == ()
    assert config.twilio.account_sid == "ACenv" and config.from_number == "+15550001234"
    assert config.telnyx.connection_id == "conn" and config.plivo.auth_id == "MAenv"
    del data["from_number"]
    config, _ = check(paths, data, env)
    assert config is not None and config.from_number == "+15550009999"
    config, _ = check(paths, {"provider": "mock"}, env)
    assert config is not None and config.from_number is None


def test_bad_env_values_are_reported_with_their_origin(paths: Paths) -> None:
    """A malformed environment value is an error that says where it came from."""
    errors = errors_of(paths, {"provider": "twilio"}, {"TWILIO_FROM_NUMBER": "555"})
    assert errors == [
        'from_number = "555" (from TWILIO_FROM_NUMBER): expected an E.164 phone '
        'number such as "+15550001234"'
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"serve": {"bind": "0.0.0.0"}},
        {"public_url": "https://v.example.com/w"},
        {"tunnel": {"provider": "ngrok"}},
        {"tailscale": {"mode": "serve"}},
    ],
)
def test_skip_signature_verification_refused_when_exposed(
    paths: Paths, data: dict[str, Any]
) -> None:
    """Unsigned webhooks only on a loopback bind with nothing exposed."""
    errors = errors_of(paths, {"skip_signature_verification": True, **data})
    assert len(errors) == 1
    assert errors[0].startswith("skip_signature_verification = true: refused because ")
    assert "set skip_signature_verification = false" in errors[0]


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.5.5.5", "::1", "localhost"])
def test_skip_signature_verification_allowed_on_loopback(paths: Paths, bind: str) -> None:
    """Loopback binds (127/8, ::1, localhost) may skip signatures."""
    config, report = check(paths, {"skip_signature_verification": True, "serve": {"bind": bind}})
    assert report.problems == () and config is not None


def test_real_provider_on_a_local_webhook_is_refused(paths: Paths) -> None:
    """No public URL, tunnel or Tailscale: the message names the three ways out."""
    _, report = check(paths, {k: v for k, v in TWILIO_OK.items() if k != "public_url"})
    assert len(report.missing) == 1
    message = report.missing[0]
    assert "http://127.0.0.1:3334/voice/webhook is local-only" in message
    assert "public_url" in message and '[tunnel] provider = "ngrok"' in message
    assert '[tailscale] mode = "funnel"' in message


def test_local_webhook_is_fine_with_a_local_simulator(paths: Paths) -> None:
    """A provider API on this machine (a simulator) accepts a local webhook URL."""
    data = {k: v for k, v in TWILIO_OK.items() if k != "public_url"}
    data["twilio"] = {**TWILIO_OK["twilio"], "api_base_url": "http://127.0.0.1:8099"}
    config, report = check(paths, data)
    assert report.problems == () and config is not None
    data["public_url"] = "http://127.0.0.1:3334/voice/webhook"
    assert check(paths, data)[1].problems == ()


def test_tunnel_or_tailscale_defers_the_exposure_check(paths: Paths) -> None:
    """With a tunnel the URL is known only at start-up; tailscale serve earns a warning."""
    data = {k: v for k, v in TWILIO_OK.items() if k != "public_url"}
    assert check(paths, {**data, "tunnel": {"provider": "ngrok"}})[1].problems == ()
    _, report = check(paths, {**data, "tailscale": {"mode": "serve"}})
    assert report.problems == () and "tailnet" in report.warnings[0]


def test_warnings(paths: Paths) -> None:
    """Allowed-but-odd settings are warnings, carried on the config."""
    config, report = check(
        paths,
        {
            "tunnel": {"allow_ngrok_free_tier_loopback_bypass": True},
            "tts": {"provider": "edge"},
            "inbound_policy": "allowlist",
        },
    )
    assert config is not None and report.problems == ()
    assert config.warnings == report.warnings and len(report.warnings) == 3
    assert 'unless [tunnel] provider = "ngrok"' in report.warnings[0]
    assert 'tts.provider = "edge" is ignored for calls' in report.warnings[1]
    assert "rejects every inbound call" in report.warnings[2]


def test_tts_deep_merge(paths: Paths) -> None:
    """[tts] merges over [messages.tts]: tables recursively, other values replace."""
    config, report = check(
        paths,
        {
            "messages": {
                "tts": {
                    "provider": "elevenlabs",
                    "openai": {"voice": "nova", "model": "tts-1"},
                    "elevenlabs": {"voice_id": "v1", "api_key": "core-key"},
                }
            },
            "tts": {"openai": {"voice": "shimmer"}},
        },
    )
    assert config is not None and report.problems == ()
    assert config.tts.provider == "elevenlabs"
    assert config.tts.openai.voice == "shimmer" and config.tts.openai.model == "tts-1"
    assert config.tts.elevenlabs.voice_id == "v1"
    assert config.tts.elevenlabs.api_key == "core-key"
    assert config.tts.elevenlabs.model_id == "eleven_multilingual_v2"


def test_deep_merge_helper() -> None:
    """Lists and scalars replace; nested tables merge."""
    from daemon.config.schema import deep_merge

    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "d": {"x": 1}}) == {
        "a": {"b": 1, "c": [3]},
        "d": {"x": 1},
    }
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_repr_never_shows_secrets(paths: Paths) -> None:
    """Secret fields are excluded from repr."""
    config, _ = check(paths, TWILIO_OK, {"OPENAI_API_KEY": "sk-live-123"})
    assert config is not None
    assert config.twilio.auth_token == "tok" and config.agent.api_key == "sk-live-123"
    assert "tok'" not in repr(config) and "sk-live-123" not in repr(config)


def test_unknown_key_in_a_secret_table_never_echoes_its_value(tmp_path: Path) -> None:
    """`[twilio] auth = "..."` may be a misspelt secret: the error names it but masks it."""
    (tmp_path / "config.toml").write_text('[twilio]\nauth = "s3cr3t-value"\n')
    paths = resolve_paths({"VOICECALL_HOME": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        load_config(paths, {}, use_keyring=False)
    text = "\n".join(info.value.problems)
    assert "twilio.auth" in text and "s3cr3t-value" not in text


def test_serve_workers_above_one_needs_the_postgresql_store(paths: Paths) -> None:
    """`serve.workers` (SPEC 3, default 1): above 1 with SQLite is a clear error naming the key,
    the value and the fix; with a PostgreSQL store it is accepted; a tunnel (one per worker)
    is refused with what to do instead."""
    [error] = [e for e in errors_of(paths, {"serve": {"workers": 2}}) if "serve.workers" in e]
    assert error.startswith("serve.workers = 2: worker processes share one PostgreSQL store")
    assert 'store = "postgresql://..."' in error and "serve.workers = 1" in error
    shared = {"serve": {"workers": 2}, "store": "postgresql://vc@db.example.com/vc"}
    config, report = check(paths, shared)
    assert not [e for e in report.errors if "serve.workers" in e]
    assert config.serve.workers == 2
    [error] = [
        e
        for e in errors_of(paths, {**shared, "tailscale": {"mode": "funnel"}})
        if "serve.workers" in e
    ]
    assert "its own tunnel" in error
    config, report = check(paths, {"serve": {"workers": 1}})
    assert not report.errors and config.serve.workers == 1
    assert any("serve.workers" in e for e in errors_of(paths, {"serve": {"workers": 0}}))
