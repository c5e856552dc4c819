"""Hostile clients on the real daemon's socket: connection floods, half-closes, stalls.

The parser-level fuzzing lives in tests/unit/test_fuzz_rpc.py (an in-process daemon); these are
the cases that need the real process: file descriptors, the accept backlog and the event loop.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from daemon.errors import RpcCode
from daemon.rpc.protocol import MAX_MESSAGE_BYTES
from tests.harness import FAST_MOCK, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e


def _fds(d: DaemonHarness) -> int:
    assert d.proc is not None
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


def _connect(d: DaemonHarness) -> socket.socket:
    """Connect, waiting while the accept backlog is full.

    A Unix-socket connect with a timeout set is non-blocking and fails at once with EAGAIN when
    the listen backlog is full (RpcClient does the same: see the note in the benchmarks doc), so
    a flood client has to retry.
    """
    deadline = time.monotonic() + 10
    while True:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        try:
            sock.connect(str(d.socket))
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def test_thousands_of_connections_opened_and_dropped(make_daemon) -> None:
    """3000 connect/close cycles (some mid-message) and 500 held at once leak nothing."""
    d = make_daemon(FAST_MOCK)
    d.rpc("daemon.status")
    baseline = _fds(d)
    for i in range(3000):
        sock = _connect(d)
        if i % 3 == 1:
            sock.sendall(b'{"jsonrpc":"2.0","method":"daemon.st')  # dropped mid-message
        elif i % 3 == 2:
            sock.sendall(b'{"jsonrpc":"2.0","method":"daemon.status","id":1}\n')  # never read
        sock.close()
    held = [_connect(d) for _ in range(500)]
    assert d.rpc("daemon.status")["running"] is True  # served while 500 idle clients wait
    for sock in held:
        sock.close()
    wait_for(lambda: _fds(d) <= baseline + 2, 10, message="the daemon to close dropped sockets")
    assert d.rpc("daemon.status")["running"] is True


def test_half_closed_clients_get_their_answers(make_daemon) -> None:
    """Requests sent before a half-close are all answered, then the daemon closes."""
    d = make_daemon(FAST_MOCK)
    sock = _connect(d)
    lines = b"".join(
        json.dumps({"jsonrpc": "2.0", "method": "voicecall.status", "id": i}).encode() + b"\n"
        for i in range(50)
    )
    sock.sendall(lines + b'{"jsonrpc":"2.0","method":"daemon.status","id":"last"}')
    sock.shutdown(socket.SHUT_WR)
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    replies = [json.loads(line) for line in data.splitlines()]
    assert sorted(str(r["id"]) for r in replies) == sorted([str(i) for i in range(50)] + ["last"])
    assert all("result" in r for r in replies)


def test_a_stalled_sender_does_not_block_others(make_daemon) -> None:
    """A client that sends half a line and stalls, and one that sends 1 MiB+ without a newline,
    do not stop another client from being served promptly."""
    d = make_daemon(FAST_MOCK)
    stalled = _connect(d)
    stalled.sendall(b'{"jsonrpc":"2.0","method":"daemon.status"')
    flooder = _connect(d)
    sent = threading.Event()

    def flood() -> None:
        try:
            flooder.sendall(b"[" + b"1," * (MAX_MESSAGE_BYTES // 2 + 10))
        except OSError:
            pass  # the daemon closed on us after refusing the line: expected
        sent.set()

    threading.Thread(target=flood, daemon=True).start()
    started = time.monotonic()
    assert d.rpc("daemon.status")["running"] is True
    assert time.monotonic() - started < 2
    assert sent.wait(10)
    reply = json.loads(flooder.makefile("rb").readline())
    assert reply["error"]["code"] == RpcCode.INVALID_REQUEST
    stalled.close()
    flooder.close()
    assert d.rpc("daemon.status")["running"] is True


def test_a_subscriber_that_never_reads_is_dropped(make_daemon) -> None:
    """A `tail` subscriber that stops reading is cut off; the daemon keeps serving."""
    d = make_daemon(FAST_MOCK)
    lazy = _connect(d)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.sendall(b'{"jsonrpc":"2.0","method":"voicecall.tail","params":{"since":0},"id":1}\n')
    for n in range(20):
        call = d.rpc(
            "voicecall.initiate",
            {"message": "x" * 2000, "to": f"+1555000{n:04d}", "mode": "conversation"},
        )
        d.rpc("voicecall.end", {"callId": call["callId"]})
    assert d.rpc("daemon.status")["running"] is True
    lazy.close()
