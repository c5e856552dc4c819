"""Hostile input on the gateway socket: the real dispatch table of an in-process daemon.

One daemon (mock provider) runs in a background thread for the whole module. Every example opens
its own connection, sends its line(s), half-closes and reads every reply until the daemon closes.
Each reply must be a well-formed JSON-RPC 2.0 response; malformed input never yields -32603
(internal error) and the daemon keeps answering `daemon.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import RpcCode
from daemon.rpc.protocol import MAX_MESSAGE_BYTES

CONFIG = """
[serve]
port = 0

[mock]
answer_delay_ms = 30
"""

CLEAN_CODES = frozenset(
    {
        RpcCode.PARSE_ERROR,
        RpcCode.INVALID_REQUEST,
        RpcCode.METHOD_NOT_FOUND,
        RpcCode.INVALID_PARAMS,
        -32001,
        -32002,
        -32003,
        -32004,
        -32005,
        -32006,
    }
)
"""Every code a malformed request may get: everything but -32603 (internal error)."""

# Each method's parameters and the JSON kind each expects (SPEC 5, daemon/rpc/methods.py).
# `daemon.shutdown` is left out on purpose: any params stop the daemon, as they should.
METHOD_PARAMS: dict[str, dict[str, str]] = {
    "voicecall.initiate": {"message": "text", "to": "text", "mode": "text"},
    "voicecall.continue": {"callId": "text", "message": "text", "timeoutMs": "int"},
    "voicecall.speak": {"callId": "text", "message": "text"},
    "voicecall.end": {"callId": "text"},
    "voicecall.status": {"callId": "text"},
    "voicecall.dtmf": {"callId": "text", "digits": "text"},
    "voicecall.list": {"active": "bool", "limit": "int"},
    "voicecall.tail": {"callId": "text", "since": "int"},
    "voicecall.expose": {"mode": "text", "path": "text"},
    "voicecall.latency": {"last": "int"},
    "tool.voice_call": {
        "action": "text",
        "message": "text",
        "to": "text",
        "mode": "text",
        "callId": "text",
    },
    "daemon.status": {},
    "mock.inbound": {"from": "text", "to": "text", "utterances": "texts"},
    "voicecall.tool_result": {"callId": "text", "toolCallId": "text"},
}

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
present = json_value.filter(lambda v: v is not None)  # null means "absent" for every param
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "text": present.filter(lambda v: not isinstance(v, str)),
    "int": present.filter(lambda v: isinstance(v, bool) or not isinstance(v, int)),
    "bool": present.filter(lambda v: not isinstance(v, bool)),
    "texts": present.filter(
        lambda v: not isinstance(v, list) or not all(isinstance(x, str) for x in v)
    ),
}


class InProcessDaemon:
    """The real `daemon.app.Daemon` on its own event loop in a thread."""

    def __init__(self) -> None:
        from daemon.app import Daemon
        from daemon.config.loader import load_config
        from daemon.paths import resolve_paths

        self.home = Path(tempfile.mkdtemp(prefix="vc-"))
        (self.home / "config.toml").write_text(CONFIG)
        paths = resolve_paths({"VOICECALL_HOME": str(self.home)})
        self.socket = paths.socket
        self.daemon = Daemon(load_config(paths, {}, use_keyring=False), paths)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-daemon", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.daemon.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_until_complete(self.daemon.wait_stopped())
        self.loop.run_until_complete(self.daemon.stop())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(20), "the in-process daemon did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.daemon.request_stop)
        self._thread.join(20)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[InProcessDaemon]:
    running = InProcessDaemon()
    running.start()
    yield running
    running.stop()


def exchange(path: Path, payload: bytes, timeout: float = 10.0) -> list[Any]:
    """Send `payload`, half-close, return every reply line (parsed) until the daemon closes."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(str(path))
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := sock.recv(1 << 16):
            data += chunk
    finally:
        sock.close()
    assert data.endswith(b"\n") or not data, f"a reply was cut off: {bytes(data[-200:])!r}"
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def assert_clean(reply: Any) -> None:
    """A well-formed JSON-RPC response; an error one carries a clean code, message and type."""
    replies = reply if isinstance(reply, list) else [reply]
    for item in replies:
        assert isinstance(item, dict) and item.get("jsonrpc") == "2.0", item
        assert "id" in item, item
        assert ("result" in item) != ("error" in item), item
        if "error" in item:
            err = item["error"]
            assert err["code"] in CLEAN_CODES, err
            assert isinstance(err["message"], str) and err["message"], err
            assert isinstance(err["data"]["type"], str), err


def assert_serving(d: InProcessDaemon) -> None:
    (reply,) = exchange(d.socket, b'{"jsonrpc":"2.0","method":"daemon.status","id":"ok"}\n')
    assert reply["result"]["running"] is True


@SETTINGS
@given(junk=st.binary(max_size=2048))
def test_random_bytes_get_one_clean_reply(daemon: InProcessDaemon, junk: bytes) -> None:
    """Any byte string as a line: one clean reply (none for a blank line), never a crash."""
    line = junk.replace(b"\n", b" ")
    replies = exchange(daemon.socket, line + b"\n")
    expected = 1 if line.strip() else 0
    with contextlib.suppress(ValueError):
        parsed = json.loads(line)
        if (
            isinstance(parsed, dict)
            and "id" not in parsed
            and isinstance(parsed.get("method"), str)
            and parsed.get("jsonrpc") == "2.0"
        ):
            expected = 0  # a well-formed notification: no reply by design
    assert len(replies) == expected, (line, replies)
    for reply in replies:
        assert_clean(reply)


@SETTINGS
@given(message=json_value)
def test_any_json_value_is_answered_cleanly(daemon: InProcessDaemon, message: Any) -> None:
    """Any JSON value (object, array, scalar) as a request gets clean replies only."""
    for reply in exchange(daemon.socket, json.dumps(message).encode() + b"\n"):
        assert_clean(reply)


@st.composite
def bad_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A method with at least one parameter of the wrong JSON type, the rest random or absent."""
    method = draw(st.sampled_from(sorted(m for m, p in METHOD_PARAMS.items() if p)))
    spec = METHOD_PARAMS[method]
    wrong = draw(st.sampled_from(sorted(spec)))
    params: dict[str, Any] = {wrong: draw(WRONG[spec[wrong]])}
    for name in spec:
        if name != wrong and draw(st.booleans()):
            params[name] = draw(json_value)
    return method, params


@SETTINGS
@given(call=bad_calls(), req_id=st.integers(1, 2**31) | st.text(max_size=10))
def test_wrong_param_types_are_invalid_params(
    daemon: InProcessDaemon, call: tuple[str, dict[str, Any]], req_id: int | str
) -> None:
    """A wrong-typed parameter of any method is -32602 (tool errors are results), never -32603."""
    method, params = call
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": req_id}
    replies = [
        r for r in exchange(daemon.socket, json.dumps(request).encode() + b"\n") if "id" in r
    ]  # tail also streams notifications
    assert len(replies) == 1, replies
    (reply,) = replies
    assert_clean(reply)
    assert reply["id"] == req_id
    if method == "tool.voice_call":
        assert "error" in reply["result"] or reply["result"].get("found") is False, reply
    else:
        assert reply["error"]["code"] == RpcCode.INVALID_PARAMS, reply


@SETTINGS
@given(
    method=st.sampled_from(sorted(METHOD_PARAMS)),
    params=st.lists(json_value, max_size=3) | json_leaf.filter(lambda v: v is not None),
)
def test_non_object_params_are_invalid_params(
    daemon: InProcessDaemon, method: str, params: Any
) -> None:
    """Positional (array) or scalar params are -32602 for every method."""
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 7}
    (reply,) = exchange(daemon.socket, json.dumps(request).encode() + b"\n")
    assert reply["error"]["code"] == RpcCode.INVALID_PARAMS, reply
    assert reply["id"] == 7


@SETTINGS
@given(
    req_id=st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))
    | st.lists(json_leaf, max_size=2)
    | st.dictionaries(st.text(max_size=3), json_leaf, max_size=2)
)
def test_invalid_ids_are_invalid_requests(daemon: InProcessDaemon, req_id: Any) -> None:
    """An id that is not a string, an integer or null is -32600 with id null."""
    request = {"jsonrpc": "2.0", "method": "daemon.status", "id": req_id}
    (reply,) = exchange(daemon.socket, json.dumps(request).encode() + b"\n")
    assert reply["error"]["code"] == RpcCode.INVALID_REQUEST, reply
    assert reply["id"] is None


def test_boolean_id_is_an_invalid_request(daemon: InProcessDaemon) -> None:
    """`"id": true` is not a JSON-RPC id."""
    (reply,) = exchange(daemon.socket, b'{"jsonrpc":"2.0","method":"daemon.status","id":true}\n')
    assert reply.get("error", {}).get("code") == RpcCode.INVALID_REQUEST, reply


@SETTINGS
@given(batch=st.lists(json_value, min_size=1, max_size=6))
def test_batches_of_junk_get_one_array(daemon: InProcessDaemon, batch: list[Any]) -> None:
    """A batch of arbitrary values: one array reply (or nothing if all were notifications)."""
    replies = exchange(daemon.socket, json.dumps(batch).encode() + b"\n")
    assert len(replies) <= 1
    for reply in replies:
        assert isinstance(reply, list) and 1 <= len(reply) <= len(batch)
        assert_clean(reply)


def test_over_long_line_is_refused_and_closed(daemon: InProcessDaemon) -> None:
    """A line over 1 MiB (with or without its newline): one -32600 naming the cap, then close."""
    for tail in (b"\n", b""):
        payload = (
            b'{"jsonrpc":"2.0","method":"daemon.status","id":1,"pad":"'
            + b"x" * (MAX_MESSAGE_BYTES + 10)
            + b'"}'
            + tail
        )
        (reply,) = exchange(daemon.socket, payload)
        assert reply["error"]["code"] == RpcCode.INVALID_REQUEST
        assert str(MAX_MESSAGE_BYTES) in reply["error"]["message"]
    assert_serving(daemon)


def test_half_closed_mid_line_is_a_parse_error(daemon: InProcessDaemon) -> None:
    """A client that half-closes in the middle of a message gets -32700, then a clean close."""
    (reply,) = exchange(daemon.socket, b'{"jsonrpc":"2.0","meth')
    assert reply["error"]["code"] == RpcCode.PARSE_ERROR
    # A complete message without its newline before the half-close is still answered.
    (reply,) = exchange(daemon.socket, b'{"jsonrpc":"2.0","method":"daemon.status","id":3}')
    assert reply["result"]["running"] is True
    assert exchange(daemon.socket, b"") == []
    assert_serving(daemon)


def test_deeply_nested_json_is_a_clean_error(daemon: InProcessDaemon) -> None:
    """100,000 nested arrays: a clean error reply (not silence) and the daemon keeps serving."""
    replies = exchange(daemon.socket, b"[" * 100_000 + b"]" * 100_000 + b"\n", timeout=5)
    assert len(replies) == 1
    assert_clean(replies[0])


def test_huge_integer_is_a_clean_error(daemon: InProcessDaemon) -> None:
    """A 5000-digit integer literal: a clean error reply, not silence."""
    line = (
        b'{"jsonrpc":"2.0","method":"voicecall.list","id":1,"params":{"limit":'
        + b"9" * 5000
        + b"}}\n"
    )
    replies = exchange(daemon.socket, line, timeout=5)
    assert len(replies) == 1
    assert_clean(replies[0])


def test_nesting_just_under_the_parser_limit_is_clean(daemon: InProcessDaemon) -> None:
    """Deep (but parseable) params echoed in error messages do not turn into -32603."""
    for depth in (500, 900):
        line = (
            b'{"jsonrpc":"2.0","method":"voicecall.initiate","id":1,"params":{"message":'
            + b"[" * depth
            + b"]" * depth
            + b"}}\n"
        )
        (reply,) = exchange(daemon.socket, line)
        assert reply["error"]["code"] == RpcCode.INVALID_PARAMS
    assert_serving(daemon)


def test_error_replies_stay_under_the_message_cap(daemon: InProcessDaemon) -> None:
    """A wrong-typed 1 MiB param gets an error reply no larger than the 1 MiB message cap."""
    # U+0080 is 2 bytes of UTF-8 in, but `'\\x80'` (5 bytes) in the echoed repr: 2.5x.
    value = json.dumps("\x80" * 480_000, ensure_ascii=False)
    line = (
        b'{"jsonrpc":"2.0","method":"voicecall.latency","id":1,"params":{"last":'
        + value.encode()
        + b"}}\n"
    )
    assert len(line) < MAX_MESSAGE_BYTES
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    sock.sendall(line)
    sock.shutdown(socket.SHUT_WR)
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    assert len(data) <= MAX_MESSAGE_BYTES + 1, len(data)


def test_still_serving_after_everything(daemon: InProcessDaemon) -> None:
    """After all of the above, the daemon answers."""
    assert_serving(daemon)
