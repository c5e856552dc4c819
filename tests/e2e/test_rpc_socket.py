"""The gateway socket: framing, every error code, batches, concurrency, durability."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from daemon.errors import RpcCode
from daemon.rpc.protocol import MAX_MESSAGE_BYTES, RpcRemoteError
from tests.harness import FAST_MOCK, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e


def _raw(d: DaemonHarness, payload: bytes, *, lines: int = 1) -> list[Any]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(d.socket))
    sock.sendall(payload)
    reader = sock.makefile("rb")
    out = [json.loads(reader.readline()) for _ in range(lines)]
    sock.close()
    return out


def _code(d: DaemonHarness, method: str, params: dict[str, object] | None = None) -> int:
    with pytest.raises(RpcRemoteError) as info:
        d.rpc(method, params)
    assert info.value.message  # every error has a sentence for a person
    assert info.value.type  # and names its class in data.type
    return info.value.code


def test_standard_error_codes(make_daemon) -> None:
    """Parse error, invalid request, unknown method and bad params get their codes."""
    d = make_daemon(FAST_MOCK)
    (parse,) = _raw(d, b"{not json\n")
    assert parse["error"]["code"] == RpcCode.PARSE_ERROR and parse["id"] is None
    (invalid,) = _raw(d, b'{"jsonrpc":"1.0","method":"daemon.status","id":1}\n')
    assert invalid["error"]["code"] == RpcCode.INVALID_REQUEST and invalid["id"] == 1
    (unknown,) = _raw(d, b'{"jsonrpc":"2.0","method":"nope","id":"a"}\n')
    assert unknown["error"]["code"] == RpcCode.METHOD_NOT_FOUND
    assert unknown["error"]["data"]["type"] == "MethodNotFound"
    assert _code(d, "voicecall.initiate", {}) == RpcCode.INVALID_PARAMS
    assert _code(d, "voicecall.initiate", {"message": 5}) == RpcCode.INVALID_PARAMS
    assert _code(d, "voicecall.latency", {"last": "x"}) == RpcCode.INVALID_PARAMS
    (positional,) = _raw(d, b'{"jsonrpc":"2.0","method":"daemon.status","params":[1],"id":2}\n')
    assert positional["error"]["code"] == RpcCode.INVALID_PARAMS


def test_application_error_codes(make_daemon) -> None:
    """-32001 not found, -32002 bad state, -32004 config, -32005 timeout, -32006 limit."""
    d = make_daemon("max_concurrent_calls = 1\n" + FAST_MOCK)
    assert _code(d, "voicecall.end", {"callId": "missing"}) == RpcCode.CALL_NOT_FOUND
    assert _code(d, "voicecall.initiate", {"message": "hi"}) == RpcCode.CONFIG_ERROR
    call = d.rpc(
        "voicecall.initiate", {"message": "hi", "to": "+15550001234", "mode": "conversation"}
    )
    assert (
        _code(d, "voicecall.initiate", {"message": "again", "to": "+15550001235"})
        == RpcCode.LIMIT_REACHED
    )
    d.wait_state(call["callId"], "speaking")
    # mock.replies is empty: the caller never speaks, so continue times out.
    assert (
        _code(
            d,
            "voicecall.continue",
            {"callId": call["callId"], "message": "hello?", "timeoutMs": 200},
        )
        == RpcCode.TIMED_OUT
    )
    assert d.rpc("voicecall.end", {"callId": call["callId"]}) == {"success": True}
    assert d.rpc("voicecall.end", {"callId": call["callId"]}) == {"success": True}
    assert (
        _code(d, "voicecall.speak", {"callId": call["callId"], "message": "x"})
        == RpcCode.INVALID_CALL_STATE
    )
    assert _code(d, "voicecall.expose", {"mode": "sideways"}) == RpcCode.INVALID_PARAMS
    assert _code(d, "mock.inbound", {"from": 12}) == RpcCode.INVALID_PARAMS


def test_operations_wait_for_a_ringing_call(make_daemon) -> None:
    """continue right after initiate waits for the answer; a call that never connects is -32002."""
    d = make_daemon('[serve]\nport = 0\n[mock]\nanswer_delay_ms = 400\nreplies = ["Hi!"]\n')
    call = d.rpc(
        "voicecall.initiate", {"message": "hello", "to": "+15550001234", "mode": "conversation"}
    )
    assert d.rpc("voicecall.continue", {"callId": call["callId"], "message": "Hello?"}) == {
        "success": True,
        "transcript": "Hi!",
    }
    d.write_config('[serve]\nport = 0\n[mock]\nanswer_delay_ms = 300\noutcome = "busy"\n')
    d.stop()
    d.start()
    busy = d.rpc(
        "voicecall.initiate", {"message": "hello", "to": "+15550001234", "mode": "conversation"}
    )
    with pytest.raises(RpcRemoteError) as info:
        d.rpc("voicecall.speak", {"callId": busy["callId"], "message": "x"})
    assert info.value.code == RpcCode.INVALID_CALL_STATE
    assert "busy" in info.value.message and "before it was answered" in info.value.message


def test_batches_notifications_and_the_size_cap(make_daemon) -> None:
    """A batch gets one array reply without the notifications; an over-long line is refused."""
    d = make_daemon(FAST_MOCK)
    batch = (
        json.dumps(
            [
                {"jsonrpc": "2.0", "method": "daemon.status", "id": 1},
                {"jsonrpc": "2.0", "method": "voicecall.status"},
                {"jsonrpc": "2.0", "method": "nope", "id": 3},
            ]
        ).encode()
        + b"\n"
    )
    (reply,) = _raw(d, batch)
    assert isinstance(reply, list) and [r["id"] for r in reply] == [1, 3]
    assert reply[0]["result"]["running"] is True
    assert reply[1]["error"]["code"] == RpcCode.METHOD_NOT_FOUND
    (empty,) = _raw(d, b"[]\n")
    assert empty["error"]["code"] == RpcCode.INVALID_REQUEST
    huge = (
        b'{"jsonrpc":"2.0","method":"daemon.status","id":1,"pad":"'
        + b"x" * MAX_MESSAGE_BYTES
        + b'"}\n'
    )
    (too_big,) = _raw(d, huge)
    assert too_big["error"]["code"] == RpcCode.INVALID_REQUEST
    assert "1048576" in too_big["error"]["message"]
    assert d.rpc("daemon.status")["running"] is True  # still serving


def test_two_clients_at_once(make_daemon) -> None:
    """One client blocked in `continue` does not stop another from being served."""
    d = make_daemon(FAST_MOCK)
    call_id = d.rpc(
        "voicecall.initiate", {"message": "hi", "to": "+15550001234", "mode": "conversation"}
    )["callId"]
    d.wait_state(call_id, "speaking")
    outcome: dict[str, object] = {}

    def wait_for_reply() -> None:
        try:
            with d.client(timeout=30) as client:
                outcome["result"] = client.call(
                    "voicecall.continue", {"callId": call_id, "message": "Hello?"}
                )
        except RpcRemoteError as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=wait_for_reply)
    waiter.start()
    wait_for(lambda: d.call_record(call_id)["state"] == "listening", message="listening")
    started = time.monotonic()
    with d.client() as other:
        assert other.call("voicecall.status", {"callId": call_id})["found"] is True
        with pytest.raises(RpcRemoteError) as busy:
            other.call("voicecall.continue", {"callId": call_id, "message": "again"})
        assert busy.value.code == RpcCode.INVALID_CALL_STATE
        assert "already waiting" in busy.value.message
        other.call("voicecall.end", {"callId": call_id})
    assert time.monotonic() - started < 5
    waiter.join(10)
    error = outcome.get("error")
    assert isinstance(error, RpcRemoteError) and error.code == RpcCode.INVALID_CALL_STATE
    assert "ended" in error.message


def test_kill_9_mid_call_loses_nothing(make_daemon) -> None:
    """After SIGKILL and a restart the call, its transcript and its events are all there."""
    d = make_daemon(FAST_MOCK + 'replies = ["First answer.", "Second answer."]\n')
    call_id = d.rpc(
        "voicecall.initiate", {"message": "Hello", "to": "+15550001234", "mode": "conversation"}
    )["callId"]
    d.wait_state(call_id, "speaking")
    assert d.rpc("voicecall.continue", {"callId": call_id, "message": "Question one?"}) == {
        "success": True,
        "transcript": "First answer.",
    }
    before = d.call_record(call_id)
    with d.client() as client:
        backlog = client.call("voicecall.tail", {"callId": call_id, "since": 100})["backlog"]
        events_before = [n["params"]["event"] for n in _take(client, backlog)]
    assert [e["type"] for e in events_before] == [
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.speaking",
        "call.speaking",
        "call.speech",
    ]
    d.kill9()
    d.start()
    after = d.call_record(call_id)
    assert after["transcript"] == before["transcript"]
    assert after["state"] == "listening" and after["endedAt"] is None  # kept, never re-dialled
    with d.client() as client:
        reply = client.call("voicecall.tail", {"callId": call_id, "since": 100})
        assert reply["backlog"] == len(events_before)
        assert [n["params"]["event"] for n in _take(client, reply["backlog"])] == events_before
    assert [e["type"] for e in events_before].count("call.initiated") == 1
    assert d.rpc("daemon.status")["activeCalls"] == 1
    # The restored call still works.
    assert d.rpc("voicecall.continue", {"callId": call_id, "message": "Question two?"})[
        "transcript"
    ] in ("First answer.", "Second answer.")
    d.rpc("voicecall.end", {"callId": call_id})


def _take(client, n: int) -> list[dict[str, Any]]:
    out = []
    for message in client.notifications():
        out.append(message)
        if len(out) == n:
            break
    return out


def test_mock_inbound_through_the_policy(make_daemon) -> None:
    """Allowlisted callers are greeted and heard; others are hung up at once."""
    d = make_daemon(
        'inbound_policy = "allowlist"\nallow_from = ["+14155550123"]\n'
        'inbound_greeting = "Thanks for calling."\n' + FAST_MOCK
    )
    accepted = d.rpc("mock.inbound", {"from": "+1 (415) 555-0123", "utterances": ["I need help."]})
    assert accepted["accepted"] is True
    call = wait_for(
        lambda: len((c := d.call_record(accepted["callId"]))["transcript"]) >= 2 and c,
        message="greeting and utterance",
    )
    assert [(t["speaker"], t["text"]) for t in call["transcript"]][:2] == [
        ("bot", "Thanks for calling."),
        ("user", "I need help."),
    ]
    assert call["direction"] == "inbound"
    for caller in ("+99914155550123", "", "4155550123"):
        rejected = d.rpc("mock.inbound", {"from": caller})
        assert rejected["accepted"] is False
        assert d.call_record(rejected["callId"])["state"] == "hangup-bot"


def test_notify_call_interrupted_by_kill_9_still_hangs_up(make_daemon) -> None:
    """A notify call answered before a crash is hung up after restart, not held open."""
    d = make_daemon(
        "max_duration_seconds = 300\n" + FAST_MOCK + "[outbound]\nnotify_hangup_delay_seconds = 1\n"
    )
    call_id = d.rpc("voicecall.initiate", {"message": "Reminder", "to": "+15550001234"})["callId"]
    d.wait_state(call_id, "speaking")
    d.kill9()
    d.start()
    call = d.wait_state(call_id, "hangup-bot", timeout=10)
    assert [t["text"] for t in call["transcript"]] == ["Reminder"]
