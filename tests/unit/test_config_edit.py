"""Editing the TOML file, rendering with masks, the OpenClaw import, and the docs."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from daemon.config import edit, schema
from daemon.config.model import Config
from daemon.config.openclaw import convert_openclaw
from daemon.config.render import STARTER_TOML, config_to_dict, to_toml
from daemon.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("from_number", "+15550001234", "+15550001234"),
        ("inbound_greeting", "true", "true"),
        ("inbound_greeting", '"quoted"', "quoted"),
        ("serve.port", "8080", 8080),
        ("serve.port", "abc", "abc"),
        ("skip_signature_verification", "true", True),
        ("streaming.vad_threshold", "0.3", 0.3),
        ("allow_from", '["+15550001234"]', ["+15550001234"]),
    ],
)
def test_parse_value(key: str, text: str, value: object) -> None:
    """String keys take the text verbatim; other keys take a TOML literal."""
    assert edit.parse_value(key, text) == value


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("serve.prot", "did you mean serve.port?"),
        ("port", "did you mean serve.port?"),
        ("fromNumber", "did you mean from_number?"),
        ("serve", "is a table, not a key"),
    ],
)
def test_unknown_or_table_keys_are_refused(key: str, hint: str) -> None:
    """A key that is not settable is refused with a suggestion."""
    with pytest.raises(ConfigError, match=hint):
        edit.leaf_key(key)


def test_set_keeps_comments_and_creates_tables() -> None:
    """Setting keys keeps comments and layout and adds missing tables."""
    text = '# my config\nprovider = "mock"  # for now\n\n[serve]\n# the port\nport = 3334\n'
    text = edit.set_key(text, "serve.port", 8080)
    text = edit.set_key(text, "from_number", "+15550001234")
    text = edit.set_key(text, "tts.openai.voice", "nova")
    assert "# my config" in text and "# for now" in text and "# the port" in text
    data = tomllib.loads(text)
    assert data["serve"]["port"] == 8080 and data["from_number"] == "+15550001234"
    assert data["tts"]["openai"]["voice"] == "nova"
    assert "[tts]" not in text and "[tts.openai]" in text
    text, removed = edit.unset_key(text, "serve.port")
    assert removed and "port" not in tomllib.loads(text)["serve"]
    assert edit.unset_key(text, "to_number")[1] is False


def test_write_atomic_modes(tmp_path: Path) -> None:
    """Secrets make the file 0600; an existing mode is kept otherwise."""
    path = tmp_path / "sub" / "config.toml"
    edit.write_atomic(path, "a = 1\n", private=False)
    path.chmod(0o640)
    edit.write_atomic(path, "a = 2\n", private=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "a = 2\n"
    edit.write_atomic(path, "a = 3\n", private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_has_secret() -> None:
    """Any secret key present makes the document sensitive."""
    assert edit.has_secret({"twilio": {"auth_token": "x"}})
    assert edit.has_secret({"messages": {"tts": {"openai": {"api_key": "x"}}}})
    assert not edit.has_secret({"twilio": {"account_sid": "AC1"}})


def test_starter_config_is_valid() -> None:
    """What `config init` writes passes every check."""
    problems: list[str] = []
    schema.check_table(tomllib.loads(STARTER_TOML), problems)
    assert problems == []


def test_render_masks_secrets_and_marks_unset() -> None:
    """config_to_dict masks secrets; to_toml comments unset keys and secret sources."""
    config = Config(
        twilio=Config().twilio.__class__(auth_token="hunter2"),
        secret_sources={"twilio.auth_token": "env"},
    )
    tree = config_to_dict(config)
    assert tree["twilio"]["auth_token"] == "********"
    assert "warnings" not in tree and tree["store"] == "."
    text = to_toml(tree, sources=config.secret_sources)
    assert "hunter2" not in text
    assert 'auth_token = "********" # from env TWILIO_AUTH_TOKEN' in text
    assert "# from_number is unset" in text
    assert config_to_dict(config, mask=False)["twilio"]["auth_token"] == "hunter2"


def test_openclaw_whole_config() -> None:
    """The plugin entry and messages.tts are found and mapped; leftovers are reported."""
    result = convert_openclaw(
        {
            "messages": {"tts": {"provider": "openai", "openai": {"voice": "nova"}, "auto": "off"}},
            "plugins": {
                "entries": {
                    "voice-call": {
                        "enabled": True,
                        "config": {
                            "provider": "log",
                            "fromNumber": "+15550001234",
                            "ringTimeoutMs": 45500,
                            "webhookSecurity": {"trustedProxyIPs": ["127.0.0.1"]},
                            "outbound": {"notifyHangupDelaySec": 5},
                            "streaming": {"streamPath": "/s", "openaiApiKey": "sk"},
                            "tunnel": {"provider": "tailscale-funnel", "ngrokAuthToken": "n"},
                            "twilio": {"authToken": {"source": "env", "id": "TOKEN"}},
                            "numbers": {
                                "+15550001111": {
                                    "inboundGreeting": "hi",
                                    "agentId": "sales",
                                    "responseTimeoutMs": 9000,
                                    "tts": {"openai": {"voice": "nova", "apiKey": "k"}},
                                }
                            },
                            "voicemail": {"enabled": True},
                        },
                    }
                }
            },
        }
    )
    v = result.values
    assert v["provider"] == "mock" and v["from_number"] == "+15550001234"
    assert v["ring_timeout_seconds"] == 46
    assert v["webhook_security"]["trusted_proxy_ips"] == ["127.0.0.1"]
    assert v["outbound"]["notify_hangup_delay_seconds"] == 5
    assert v["streaming"] == {"stream_path": "/s", "api_key": "sk"}
    assert v["tunnel"] == {"provider": "none", "ngrok_authtoken": "n"}
    assert v["tailscale"]["mode"] == "funnel"
    assert v["messages"]["tts"] == {"provider": "openai", "openai": {"voice": "nova"}}
    assert v["numbers"] == {
        "+15550001111": {
            "inbound_greeting": "hi",
            "response_timeout_ms": 9000,
            "tts": {"openai": {"voice": "nova"}},
        }
    }
    assert any(u.startswith("numbers.+15550001111.agentId") for u in result.unmapped)
    assert any(u.startswith("numbers.+15550001111.tts.openai.apiKey") for u in result.unmapped)
    assert any(
        u.startswith("voicemail.enabled") and "[machine_detection]" in u for u in result.unmapped
    )
    assert any(u.startswith("messages.tts.auto") for u in result.unmapped)
    assert any(
        "twilio.authToken" in u and "secrets set twilio.auth_token" in u for u in result.unmapped
    )
    problems: list[str] = []
    schema.check_table(v, problems)
    assert problems == []


def test_openclaw_plugin_object_and_missing_entry() -> None:
    """The bare plugin config works; a whole config without the plugin is an error."""
    result = convert_openclaw(
        {
            "provider": "twilio",
            "tts": {"elevenlabs": {"voiceId": "v"}},
            "twilio": {"from": "+15550001234"},
        }
    )
    assert result.values == {
        "provider": "twilio",
        "tts": {"elevenlabs": {"voice_id": "v"}},
        "from_number": "+15550001234",
    }
    with pytest.raises(ConfigError, match=r"plugins\.entries\.voice-call\.config"):
        convert_openclaw({"plugins": {"entries": {}}})


def test_docs_cover_every_key() -> None:
    """docs/config.md documents every key of the schema."""
    text = DOCS.read_text()
    missing = [
        path
        for path, _ in schema.leaf_paths()
        if not path.startswith("messages.") and f"`{path}`" not in text
    ]
    assert missing == []
