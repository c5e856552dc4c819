"""`[realtime]` (SPEC 3, 15): keys and defaults, the key's fallback, tool checks, and the
protocol helpers the bridge builds its events with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config.loader import check_document
from daemon.config.model import RealtimeConfig
from daemon.paths import Paths, resolve_paths
from daemon.realtime import protocol
from daemon.realtime.settings import effective_realtime, realtime_url
from daemon.realtime.tools import tool_definitions


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve_paths({"VOICECALL_HOME": str(tmp_path)})


def check(paths: Paths, data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return check_document(data, paths, env or {}, use_keyring=False)


def test_defaults_are_spec_s_and_the_key_falls_back_to_openai_api_key(paths: Paths) -> None:
    config, report = check(paths, {}, {"OPENAI_API_KEY": "sk-env"})
    assert report.errors == ()
    assert config.realtime == RealtimeConfig(
        enabled=False,
        provider="openai",
        model="gpt-realtime",
        voice="alloy",
        instructions=None,
        base_url="wss://api.openai.com/v1/realtime",
        api_key="sk-env",
        vad_threshold=0.5,
        silence_duration_ms=500,
        tools=(),
        tool_timeout_ms=10000,
    )
    assert config.secret_sources["realtime.api_key"] == "env"
    assert "sk-env" not in repr(config.realtime)


def test_bad_values_and_tools_are_named(paths: Paths) -> None:
    _, report = check(
        paths,
        {
            "realtime": {
                "provider": "azure",
                "base_url": "https://x.example/v1",
                "vad_threshold": 2,
                "tools": [{"name": "end_call"}],
                "tool_timeout_ms": 0,
            }
        },
    )
    errors = "\n".join(report.errors)
    for key in (
        "realtime.provider",
        "realtime.base_url",
        "realtime.vad_threshold",
        "realtime.tools",
        "realtime.tool_timeout_ms",
    ):
        assert key in errors
    assert 'not "end_call"' in errors
    for tools in (
        [{"name": "a b"}],
        [{"name": "x"}, {"name": "x"}],
        [{"name": "x", "parameters": "object"}],
        [{"name": "x", "extra": 1}],
        ["lookup"],
    ):
        _, report = check(paths, {"realtime": {"tools": tools}})
        assert report.errors and report.errors[0].startswith("realtime.tools = "), tools


def test_enabled_without_streaming_or_key_warns(paths: Paths) -> None:
    _, report = check(paths, {"realtime": {"enabled": True}})
    assert any("streaming.enabled" in w for w in report.warnings)
    assert any("realtime.api_key is not set" in w for w in report.warnings)
    # With realtime on, the cascade's STT key is not needed: no warning about it.
    _, report = check(
        paths, {"streaming": {"enabled": True}, "realtime": {"enabled": True, "api_key": "sk-x"}}
    )
    assert report.warnings == ()
    _, report = check(paths, {"streaming": {"enabled": True}})
    assert any("streaming.api_key is not set" in w for w in report.warnings)


def test_tools_offered_to_the_model(paths: Paths) -> None:
    config, _ = check(
        paths,
        {
            "realtime": {
                "tools": [
                    {"name": "lookup", "description": "Find", "parameters": {"type": "object"}},
                    {"name": "ping"},
                ]
            }
        },
    )
    assert effective_realtime(config) is config.realtime
    tools = tool_definitions(config.realtime.tools)
    assert [t["name"] for t in tools] == ["end_call", "lookup", "ping"]
    assert all(t["type"] == "function" for t in tools)
    assert tools[2]["parameters"] == {"type": "object", "properties": {}}


def test_protocol_helpers() -> None:
    assert (
        realtime_url("wss://h/v1/realtime", "gpt-realtime")
        == "wss://h/v1/realtime?model=gpt-realtime"
    )
    assert realtime_url("wss://h/v1/realtime?x=1", "m") == "wss://h/v1/realtime?x=1&model=m"
    assert realtime_url("wss://h/v1/realtime?model=a", "b") == "wss://h/v1/realtime?model=a"
    assert protocol.event_type({"type": "response.audio.delta"}) == protocol.AUDIO_DELTA
    assert protocol.event_type({"type": protocol.AUDIO_DELTA}) == protocol.AUDIO_DELTA
    assert protocol.parse_arguments('{"day": "Tue"}') == {"day": "Tue"}
    assert protocol.parse_arguments("") == {}
    with pytest.raises(ValueError, match="not valid JSON"):
        protocol.parse_arguments("{nope")
    with pytest.raises(ValueError, match="JSON object"):
        protocol.parse_arguments("[1]")
    assert protocol.function_output("c1", {"é": 1}) == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c1", "output": '{"é": 1}'},
    }
    assert protocol.truncate("i1", 840) == {
        "type": "conversation.item.truncate",
        "item_id": "i1",
        "content_index": 0,
        "audio_end_ms": 840,
    }


def test_audio_delta_fast_path() -> None:
    """Compact GA or beta deltas are read without a JSON parse; anything else is left to it."""
    text = (
        '{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1",'
        '"item_id":"item_2","output_index":0,"content_index":0,"delta":"AAEC/w=="}'
    )
    assert protocol.audio_delta_fields(text) == ("item_2", "resp_1", "AAEC/w==")
    beta = text.replace("response.output_audio.delta", "response.audio.delta")
    assert protocol.audio_delta_fields(beta) == ("item_2", "resp_1", "AAEC/w==")
    assert protocol.audio_delta_fields(text.replace('"delta":"AAEC', '"delta":"\\u0041')) is None
    assert protocol.audio_delta_fields('{"type": "response.output_audio.delta"}') is None
    assert protocol.audio_delta_fields('{"type":"response.output_audio.done"}') is None
    assert protocol.audio_delta_fields('{"type":"response.output_audio.delta"}') is None
