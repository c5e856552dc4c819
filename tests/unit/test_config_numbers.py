"""`[machine_detection]` and `[numbers."+E164"]` (SPEC 3, 13, 14): checks, defaults, merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config import schema
from daemon.config.edit import leaf_key, set_key
from daemon.config.loader import check_document
from daemon.config.model import MachineDetectionConfig
from daemon.config.render import config_to_dict, to_toml
from daemon.engine.routing import greeting, number_key, responder_settings
from daemon.paths import Paths, resolve_paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve_paths({"VOICECALL_HOME": str(tmp_path)})


def check(paths: Paths, data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return check_document(data, paths, env or {}, use_keyring=False)


def test_machine_detection_defaults_are_spec_s(paths: Paths) -> None:
    """Every key and default exactly as SPEC section 3 lists them."""
    config, report = check(paths, {})
    assert report.errors == ()
    assert config.machine_detection == MachineDetectionConfig(
        enabled=False,
        mode="detect-beep",
        timeout_seconds=30,
        greeting_timeout_seconds=20,
        on_machine_notify="leave-message",
        on_machine_conversation="hangup",
    )


def test_machine_detection_bad_values_are_named(paths: Paths) -> None:
    """Each bad value is reported with its key, value and what is expected."""
    _, report = check(
        paths,
        {
            "machine_detection": {
                "mode": "beep",
                "on_machine_notify": "continue",
                "timeout_seconds": 0,
            }
        },
    )
    assert sorted(report.errors) == [
        'machine_detection.mode = "beep": expected one of "detect-beep", "detect"',
        'machine_detection.on_machine_notify = "continue": expected one of "leave-message", '
        '"hangup"',
        "machine_detection.timeout_seconds = 0: expected an integer greater than 0",
    ]


def test_mock_outcome_machine_is_accepted(paths: Paths) -> None:
    config, report = check(paths, {"mock": {"outcome": "machine"}})
    assert report.errors == () and config.mock.outcome == "machine"


def test_number_keys_must_be_e164_and_every_bad_one_is_named(paths: Paths) -> None:
    """A key that is not E.164 is an error naming it; the good tables are still checked."""
    _, report = check(
        paths,
        {
            "numbers": {
                "5550001234": {"inbound_greeting": "a"},
                "+1 555 000": {"inbound_greeting": "b"},
                "+15550001234": {"greeting": "c"},
            }
        },
    )
    assert report.errors[0] == (
        'numbers."5550001234" = a table: expected its key "5550001234" '
        'to be an E.164 phone number such as "+15550001234"'
    )
    assert report.errors[1].startswith('numbers."+1 555 000" = a table: expected its key')
    assert report.errors[2].startswith(
        'numbers."+15550001234".greeting = "c": unknown key; did you mean'
    )
    assert len(report.errors) == 3


def test_numbers_not_a_table_and_api_keys_refused(paths: Paths) -> None:
    _, report = check(paths, {"numbers": {"+15550001234": "hello"}})
    assert report.errors == (
        'numbers."+15550001234" = "hello": expected a table; write it as '
        '[numbers."+15550001234"] with its keys below',
    )
    _, report = check(
        paths, {"numbers": {"+15550001234": {"tts": {"openai": {"api_key": "sk-secret"}}}}}
    )
    assert len(report.errors) == 1 and "sk-secret" not in report.errors[0]


def test_number_tts_is_deep_merged_over_the_call_tts(paths: Paths) -> None:
    """The number's TTS inherits what it does not set, API keys included."""
    config, report = check(
        paths,
        {
            "messages": {"tts": {"provider": "openai", "openai": {"voice": "alloy"}}},
            "tts": {"openai": {"model": "tts-1"}},
            "numbers": {
                "+15550001234": {"tts": {"openai": {"voice": "nova"}}},
                "+15550009999": {"inbound_greeting": "Other"},
            },
        },
        {"OPENAI_API_KEY": "sk-env"},
    )
    assert report.errors == ()
    tts = config.numbers["+15550001234"].effective_tts
    assert tts.provider == "openai"
    assert (tts.openai.voice, tts.openai.model, tts.openai.api_key) == ("nova", "tts-1", "sk-env")
    assert config.numbers["+15550009999"].effective_tts is None
    shown = to_toml(config_to_dict(config))
    assert '[numbers."+15550001234".tts.openai]' in shown and "sk-env" not in shown


def test_routing_matches_digits_like_the_allowlist(paths: Paths) -> None:
    """`1 (555) 000-1234` finds `+15550001234`; no suffix matching; no table -> top level."""
    config, _ = check(
        paths,
        {
            "inbound_greeting": "Main",
            "response_model": "openai/gpt-4o-mini",
            "numbers": {
                "+15550001234": {"inbound_greeting": "Bakery", "response_system_prompt": "Bake"}
            },
        },
    )
    assert number_key(config.numbers, "1 (555) 000-1234") == "+15550001234"
    assert number_key(config.numbers, "+9915550001234") is None
    assert number_key(config.numbers, "") is None
    assert greeting(config, "+15550001234") == "Bakery"
    assert greeting(config, None) == "Main"
    settings = responder_settings(config, "+15550001234")
    assert (settings.response_model, settings.response_system_prompt) == (
        "openai/gpt-4o-mini",
        "Bake",
    )


def test_config_set_reaches_a_number_table() -> None:
    """`config set numbers.+15550001234.inbound_greeting` writes a quoted table header."""
    assert leaf_key("numbers.+15550001234.inbound_greeting").kind == "str"
    assert schema.lookup("numbers.5550001234.inbound_greeting") is None
    text = set_key(None, "numbers.+15550001234.inbound_greeting", "Hi")
    assert '[numbers."+15550001234"]' in text and 'inbound_greeting = "Hi"' in text


def test_number_realtime_is_checked_against_realtime_and_merged(paths: Paths) -> None:
    """`[numbers."+E164".realtime]` takes `[realtime]` keys only, no secrets, and is merged over
    `[realtime]` for calls to that number."""
    from daemon.model.events import CallMode, Direction
    from daemon.model.record import CallRecord
    from daemon.realtime.settings import effective_realtime

    _, report = check(
        paths,
        {
            "numbers": {
                "+15550001234": {"realtime": {"voice": 3, "api_key": "sk-leak", "bogus": True}}
            }
        },
    )
    assert len(report.errors) == 3 and not any("sk-leak" in e for e in report.errors)
    assert any(e.startswith('numbers."+15550001234".realtime.voice = 3') for e in report.errors)
    config, report = check(
        paths,
        {
            "realtime": {"model": "gpt-realtime", "voice": "alloy"},
            "numbers": {"+15550001234": {"realtime": {"enabled": True, "voice": "marin"}}},
        },
    )
    assert report.errors == ()
    call = CallRecord(
        "c1",
        "mock",
        Direction.INBOUND,
        CallMode.CONVERSATION,
        "+1555",
        "+1556",
        metadata={"number": "+15550001234"},
    )
    merged = effective_realtime(config, call)
    assert (merged.enabled, merged.voice, merged.model) == (True, "marin", "gpt-realtime")
    call.metadata.clear()
    assert effective_realtime(config, call) == config.realtime
