"""Connection hygiene of the public port against the real daemon (SPEC 8 "Connection hygiene").

Real sockets from several loopback source addresses (127.0.0.2 ... are all this host on Linux),
so per-address caps can be told apart from the genuine client on 127.0.0.1. Counts stay in the
hundreds (the test process and the daemon each hold one descriptor per connection).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from tests.harness import DaemonHarness

pytestmark = pytest.mark.e2e

TOKEN = "hygiene-token"
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 7)]


def config(**serve: int) -> str:
    keys = "".join(f"{k} = {v}\n" for k, v in serve.items())
    return f"""
provider = "twilio"
from_number = "+15550000001"
[twilio]
account_sid = "AC00000000000000000000000000000000"
auth_token = "{TOKEN}"
api_base_url = "http://127.0.0.1:9"
[serve]
port = 0
{keys}"""


def webhook_url(d: DaemonHarness) -> str:
    url = d.rpc("daemon.status")["webhookUrl"]
    assert url.startswith("http://127.0.0.1:")
    return str(url)


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """The daemon closed (or reset) this connection."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def wait_closed(socks: list[socket.socket], timeout: float) -> list[bool]:
    deadline = time.monotonic() + timeout
    state = [False] * len(socks)
    while time.monotonic() < deadline and not all(state):
        state = [s or closed_by_peer(sock) for s, sock in zip(state, socks, strict=True)]
        await asyncio.sleep(0.05)
    return state


async def genuine(session: aiohttp.ClientSession, url: str, i: int) -> int:
    params = {"CallSid": f"CA{i:032d}", "CallStatus": "completed"}
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(url, data=urlencode(params), headers=headers) as response:
        return response.status


async def test_idle_and_trickling_connections_are_capped_and_timed_out(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """400 idle/trickling sockets from 5 addresses: the 65th per address is closed at once,
    signed webhooks keep getting 200, and every held socket is closed by the header timeout."""
    d = make_daemon(config(header_timeout_ms=8000, idle_timeout_ms=10000))
    url = await asyncio.to_thread(webhook_url, d)
    port = int(url.split(":")[2].split("/")[0])
    held: list[socket.socket] = []
    refused: list[socket.socket] = []
    try:
        for source in ATTACKERS:
            batch = [connect_from(source, port) for _ in range(80)]
            for n, sock in enumerate(batch):
                if n % 2:  # trickling: a request line, then nothing more
                    sock.send(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Tw")
            held += batch[:64]
            refused += batch[64:]
        assert all(await wait_closed(refused, 5.0)), "the 65th connection per address stays"
        assert not any(closed_by_peer(sock) for sock in held[-64:])  # the newest: within 8 s
        async with aiohttp.ClientSession() as session:
            statuses = []
            for start in range(0, 40, 4):
                statuses += await asyncio.gather(
                    *(genuine(session, url, i) for i in range(start, start + 4))
                )
        assert statuses == [200] * 40
        # the header timeout (8 s) closes every idle and trickling connection
        state = await wait_closed(held, 30.0)
        assert all(state), f"{state.count(False)} of {len(held)} connections still open"
    finally:
        for sock in held + refused:
            sock.close()
    log = d.log_text()
    assert "over serve.max_connections_per_ip" in log
    assert "headers not complete within serve.header_timeout_ms" in log
    assert log.count("connection rejected") <= 4 * len(ATTACKERS)


async def test_global_cap_and_idle_keep_alive(make_daemon: Callable[..., DaemonHarness]) -> None:
    """Beyond max_connections a new connection is closed at once; an idle keep-alive one is
    closed after idle_timeout_ms, and the slot is free again."""
    d = make_daemon(config(max_connections=20, idle_timeout_ms=1000, header_timeout_ms=30000))
    url = await asyncio.to_thread(webhook_url, d)
    port = int(url.split(":")[2].split("/")[0])
    async with aiohttp.ClientSession() as session:
        assert await genuine(session, url, 1) == 200  # leaves one keep-alive connection
        held = [connect_from(ATTACKERS[i % 5], port) for i in range(19)]
        over = connect_from(ATTACKERS[0], port)
        assert (await wait_closed([over], 5.0)) == [True]
        assert not any(closed_by_peer(sock) for sock in held)
        for sock in held:
            sock.close()
        # an idle keep-alive connection is closed by the daemon after idle_timeout_ms (1 s)
        probe = connect_from(ATTACKERS[1], port)
        probe.setblocking(True)
        probe.settimeout(10)
        probe.sendall(b"GET /voice/webhook HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        received = b""
        while chunk := probe.recv(4096):
            received += chunk
        idle = time.monotonic() - answered
        assert received.startswith(b"HTTP/1.1 405") and b"keep-alive" not in received.lower()
        assert 0.7 < idle < 10, idle
        probe.close()


async def test_malformed_requests_are_logged_as_summaries(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """200 unparsable requests (aiohttp logged a traceback for each) write a few lines."""
    d = make_daemon(config())
    url = await asyncio.to_thread(webhook_url, d)
    port = int(url.split(":")[2].split("/")[0])
    before = len(d.log_text().splitlines())

    def flood() -> None:
        for i in range(200):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\n"
                    + (b"Content-Length: abc\r\n\r\n" if i % 2 else b"Content-Length: -5\r\n\r\n")
                )
                assert b" 400 Bad Request" in sock.recv(100)

    await asyncio.to_thread(flood)
    async with aiohttp.ClientSession() as session:
        assert await genuine(session, url, 1) == 200
    written = d.log_text().splitlines()[before:]
    assert len(written) <= 10, "\n".join(written[:40])
    assert any("malformed" in line for line in written)
