"""The `tool.voice_call` RPC (SPEC section 7) straight through the blocking RpcClient.

Every action's result shape, and every way a call can be wrong, answered as `{error}` (never an
RPC error, never a crash), against a real daemon running the mock provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemon.rpc.client import RpcClient
from daemon.tool_schema import ACTIONS, TOOL_NAME, TOOL_SCHEMA
from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

CONVERSATION = FAST_MOCK + 'replies = ["Yes, Tuesday works.", "No, that is all."]\n'
LIVE_STATES = ("answered", "active", "speaking", "listening")
TO = "+15550001234"
SKILL = REPO / "skills" / "voice-call" / "SKILL.md"

MakeDaemon = Callable[..., DaemonHarness]


def tool(client: RpcClient, **arguments: Any) -> dict[str, Any]:
    """One tool call; the RPC itself must always succeed with a JSON object."""
    result = client.call("tool.voice_call", arguments)
    assert isinstance(result, dict)
    return result


def is_error(result: dict[str, Any], *fragments: str) -> bool:
    """True when `result` is exactly `{error: sentence}` and the sentence holds `fragments`."""
    return (
        set(result) == {"error"}
        and isinstance(result["error"], str)
        and all(f in result["error"] for f in fragments)
    )


def wait_live(client: RpcClient, call_id: str) -> dict[str, Any]:
    """Poll get_status until the call is connected; return the status result."""

    def live() -> dict[str, Any]:  # {} (falsy) until connected
        status = tool(client, action="get_status", callId=call_id)
        return status if status["call"]["state"] in LIVE_STATES else {}

    found: dict[str, Any] = wait_for(live, message=f"call {call_id} to connect")
    return found


@pytest.fixture
def daemon(make_daemon: MakeDaemon) -> DaemonHarness:
    """A mock daemon whose callee answers with two replies, in turn."""
    return make_daemon(CONVERSATION)


@pytest.fixture
def client(daemon: DaemonHarness) -> Iterator[RpcClient]:
    """A connection with no read timeout cap beyond the daemon's own."""
    with daemon.client(timeout=60.0) as conn:
        yield conn


def test_conversation_actions_and_their_result_shapes(client: RpcClient) -> None:
    """initiate_call, get_status, continue_call (twice), speak_to_user, end_call (twice)."""
    started = tool(
        client, action="initiate_call", message="Hi, it's the clinic.", to=TO, mode="conversation"
    )
    assert set(started) == {"callId", "initiated"} and started["initiated"] is True
    call_id = started["callId"]

    status = wait_live(client, call_id)
    assert set(status) == {"found", "call"} and status["found"] is True
    record = status["call"]
    assert record["callId"] == call_id and record["to"] == TO
    assert record["direction"] == "outbound" and record["mode"] == "conversation"

    assert tool(client, action="continue_call", callId=call_id, message="Does Tuesday work?") == {
        "success": True,
        "transcript": "Yes, Tuesday works.",
    }
    assert tool(client, action="continue_call", callId=call_id, message="Anything else?") == {
        "success": True,
        "transcript": "No, that is all.",
    }
    assert tool(client, action="speak_to_user", callId=call_id, message="Bye now.") == {
        "success": True
    }
    assert tool(client, action="end_call", callId=call_id) == {"success": True}
    # Ending an ended call is not a mistake (SPEC section 5, voicecall.end).
    assert tool(client, action="end_call", callId=call_id) == {"success": True}

    ended = tool(client, action="get_status", callId=call_id)["call"]
    assert ended["state"] == "hangup-bot" and ended["endedAt"]
    assert [t["speaker"] for t in ended["transcript"]] == [
        "bot",
        "bot",
        "user",
        "bot",
        "user",
        "bot",
    ]


def test_notify_call_speaks_and_hangs_up(make_daemon: MakeDaemon) -> None:
    """A notify call returns {callId, initiated} and ends by itself after the message."""
    d = make_daemon(FAST_MOCK + "[outbound]\nnotify_hangup_delay_seconds = 0\n")
    with d.client() as client:
        started = tool(
            client, action="initiate_call", message="Your order has shipped.", to=TO, mode="notify"
        )
        assert set(started) == {"callId", "initiated"}
        call_id = started["callId"]

        def ended() -> dict[str, Any]:  # {} (falsy) until it hung up
            record: dict[str, Any] = tool(client, action="get_status", callId=call_id)["call"]
            return record if record["state"] == "hangup-bot" else {}

        record = wait_for(ended, message="the notify call to hang up")
    assert record["mode"] == "notify"
    assert [(t["speaker"], t["text"]) for t in record["transcript"]] == [
        ("bot", "Your order has shipped.")
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, ("unknown action None", "initiate_call")),
        ({"action": "dance"}, ("unknown action 'dance'", "get_status")),
        ({"action": 7}, ("unknown action 7",)),
        ({"action": "initiate_call"}, ("message required",)),
        ({"action": "initiate_call", "message": "   "}, ("message required",)),
        ({"action": "initiate_call", "message": "Hi", "to": "555-1234"}, ("E.164",)),
        (
            {"action": "initiate_call", "message": "Hi", "to": TO, "mode": "shout"},
            ("mode = 'shout'", "notify or conversation"),
        ),
        ({"action": "continue_call", "message": "Hello?"}, ("callId required",)),
        ({"action": "speak_to_user", "message": "Hello?"}, ("callId required",)),
        ({"action": "end_call"}, ("callId required",)),
        ({"action": "get_status"}, ("callId required",)),
        ({"action": "get_status", "callId": ""}, ("callId required",)),
        ({"action": "continue_call", "callId": "abc"}, ("callId and message required",)),
        ({"action": "speak_to_user", "callId": "abc"}, ("callId and message required",)),
        (
            {"action": "continue_call", "callId": "no-such-call", "message": "Hi"},
            ("no call with id 'no-such-call'",),
        ),
        (
            {"action": "speak_to_user", "callId": "no-such-call", "message": "Hi"},
            ("no call with id 'no-such-call'",),
        ),
        ({"action": "end_call", "callId": "no-such-call"}, ("no call with id 'no-such-call'",)),
    ],
)
def test_bad_arguments_return_an_error_sentence(
    client: RpcClient, arguments: dict[str, Any], expected: tuple[str, ...]
) -> None:
    """Each SPEC section 7 error shape is `{error: sentence}`, with the sentence that names it."""
    result = tool(client, **arguments)
    assert is_error(result, *expected), result


def test_no_number_and_no_default_is_an_error(client: RpcClient) -> None:
    """initiate_call without `to` and without `to_number` configured says what to set."""
    assert is_error(tool(client, action="initiate_call", message="Hi"), "to_number")


def test_unknown_call_id_in_get_status_is_not_found(client: RpcClient) -> None:
    """get_status of an unknown id is {found:false}, not an error."""
    assert tool(client, action="get_status", callId="no-such-call") == {"found": False}


def test_actions_on_an_ended_call_are_errors(client: RpcClient) -> None:
    """continue_call and speak_to_user on an ended call tell the agent to place a new call."""
    call_id = tool(client, action="initiate_call", message="Hi", to=TO, mode="conversation")[
        "callId"
    ]
    wait_live(client, call_id)
    assert tool(client, action="end_call", callId=call_id) == {"success": True}
    assert is_error(
        tool(client, action="continue_call", callId=call_id, message="Still there?"),
        call_id,
        "ended",
    )
    assert is_error(
        tool(client, action="speak_to_user", callId=call_id, message="Hello?"), call_id, "ended"
    )


def test_continue_before_the_call_is_answered_is_an_error(make_daemon: MakeDaemon) -> None:
    """continue_call waits for a ringing call, then says it is not connected after the timeout."""
    d = make_daemon(
        "ring_timeout_seconds = 1\n"
        + FAST_MOCK.replace("answer_delay_ms = 30", "answer_delay_ms = 60000")
    )
    with d.client() as client:
        call_id = tool(client, action="initiate_call", message="Hi", to=TO, mode="conversation")[
            "callId"
        ]
        result = tool(client, action="continue_call", callId=call_id, message="Hello?")
        assert is_error(result, call_id, "not connected"), result
        assert tool(client, action="end_call", callId=call_id) == {"success": True}


def test_continue_times_out_when_the_caller_says_nothing(make_daemon: MakeDaemon) -> None:
    """With no reply within transcript_timeout_ms, continue_call is an {error}; the call lives."""
    d = make_daemon("transcript_timeout_ms = 300\n" + FAST_MOCK)
    with d.client() as client:
        call_id = tool(client, action="initiate_call", message="Hi", to=TO, mode="conversation")[
            "callId"
        ]
        wait_live(client, call_id)
        result = tool(client, action="continue_call", callId=call_id, message="Hello?")
        assert is_error(result, "no reply", call_id), result
        assert tool(client, action="get_status", callId=call_id)["call"]["state"] in LIVE_STATES
        assert tool(client, action="end_call", callId=call_id) == {"success": True}


def test_the_concurrent_call_limit_is_an_error(make_daemon: MakeDaemon) -> None:
    """A call over max_concurrent_calls is refused with an {error} naming the limit."""
    d = make_daemon("max_concurrent_calls = 1\n" + FAST_MOCK)
    with d.client() as client:
        first = tool(client, action="initiate_call", message="Hi", to=TO, mode="conversation")
        second = tool(
            client, action="initiate_call", message="Hi", to="+15550004321", mode="conversation"
        )
        assert is_error(second, "max_concurrent_calls"), second
        assert tool(client, action="end_call", callId=first["callId"]) == {"success": True}


def test_skill_front_matter_names_the_skill() -> None:
    """SKILL.md opens with front matter holding `name: voice-call` and a description."""
    text = SKILL.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match is not None, "SKILL.md must start with --- front matter ---"
    fields = dict(line.split(": ", 1) for line in match.group(1).splitlines())
    assert fields["name"] == "voice-call"
    assert TOOL_NAME in fields["description"] and len(fields["description"]) > 80


def test_skill_examples_are_valid_tool_calls() -> None:
    """Every JSON example in SKILL.md parses, and every tool call in it fits TOOL_SCHEMA."""
    jsonschema = pytest.importorskip("jsonschema")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", SKILL.read_text(), re.S)]
    calls = [b for b in blocks if "action" in b]
    assert {c["action"] for c in calls} == set(ACTIONS)
    for arguments in calls:
        jsonschema.validate(arguments, TOOL_SCHEMA)
