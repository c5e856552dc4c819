"""Bogus webhook floods against the real daemon behind a tunnel (SPEC 8 step 3, logging).

The daemon runs with `[tailscale] mode = "funnel"` through the fake `tailscale` CLI, so, as in
production behind a tunnel, every request reaches it from 127.0.0.1 and the real client is the
address the tunnel agent appended to `X-Forwarded-For`. Genuine deliveries are signed with the
Twilio SDK over the public URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from tests.harness import REPO, DaemonHarness

pytestmark = pytest.mark.e2e

TOKEN = "flood-test-token"
PUBLIC = "https://box.tail1234.ts.net/voice/webhook"
PROVIDER_IP = "198.51.100.7"
ATTACKER_IP = "203.0.113.66"
CONFIG = f"""
provider = "twilio"
from_number = "+15550000001"
[twilio]
account_sid = "AC00000000000000000000000000000000"
auth_token = "{TOKEN}"
[serve]
port = 0
[tailscale]
mode = "funnel"
"""


def tunnelled_daemon(make_daemon: Callable[..., DaemonHarness]) -> tuple[DaemonHarness, str]:
    """A Twilio daemon published by (fake) Tailscale funnel; returns it and its local URL."""
    d: DaemonHarness = make_daemon(CONFIG, start=False)
    bin_dir = d.home / "bin"
    bin_dir.mkdir()
    shutil.copy(REPO / "tests" / "fakes" / "tailscale", bin_dir / "tailscale")
    (bin_dir / "tailscale").chmod(0o755)
    d.env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{d.env['PATH']}",
            "FAKE_TAILSCALE_LOG": str(d.home / "tailscale.log"),
        }
    )
    d.start()
    status = d.rpc("daemon.status")
    assert status["publicUrl"] == PUBLIC
    # the local URL the funnel forwards to: the last argument of the `funnel` call logged
    target = next(
        line for line in (d.home / "tailscale.log").read_text().splitlines() if "--set-path" in line
    )
    local = target.split('"')[-2]
    return d, local


def signed(call_sid: str) -> tuple[bytes, dict[str, str]]:
    """A Twilio status callback signed over the public URL, as Twilio would send it."""
    params = {"CallSid": call_sid, "CallStatus": "completed", "AccountSid": "AC" + "0" * 32}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC, params)
    return urlencode(params).encode(), {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Forwarded-For": PROVIDER_IP,
    }


async def slow_bogus(host: str, port: int, path: str) -> asyncio.StreamWriter:
    """A request with a bogus signature whose body trickles (never completes)."""
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: box.tail1234.ts.net\r\nX-Twilio-Signature: bogus\r\n"
        f"X-Forwarded-For: {ATTACKER_IP}\r\nContent-Length: 1000\r\n\r\nA".encode()
    )
    await writer.drain()
    return writer


async def test_slow_bogus_requests_behind_a_tunnel_do_not_429_signed_webhooks(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """8 slow bogus requests from the attacker's forwarded address leave the provider's alone."""
    _d, local = await asyncio.to_thread(tunnelled_daemon, make_daemon)
    host, port_path = local.removeprefix("http://").split(":", 1)
    port, path = port_path.split("/", 1)
    writers = [await slow_bogus(host, int(port), "/" + path) for _ in range(8)]
    async with aiohttp.ClientSession() as session:

        async def attacker_status() -> int:
            body = urlencode({"CallSid": "CAevil"}).encode()
            headers = {
                "X-Twilio-Signature": "bogus",
                "X-Forwarded-For": ATTACKER_IP,
                "Content-Type": "application/x-www-form-urlencoded",
            }
            async with session.post(local, data=body, headers=headers) as response:
                return response.status

        # the 8 trickling requests hold the attacker's budget: its next one is refused
        for _ in range(200):
            if await attacker_status() == 429:
                break
            await asyncio.sleep(0.05)
        assert await attacker_status() == 429

        async def genuine(i: int) -> int:
            body, headers = signed(f"CA{i:032d}")
            async with session.post(local, data=body, headers=headers) as response:
                return response.status

        statuses: list[int] = []
        for start in range(0, 48, 4):
            statuses += await asyncio.gather(*(genuine(i) for i in range(start, start + 4)))
        assert statuses == [200] * 48
    for writer in writers:
        writer.close()


async def test_bogus_flood_is_logged_as_bounded_summaries(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """400 rejected requests from 4 addresses write a handful of log lines, not 400."""
    d, local = await asyncio.to_thread(tunnelled_daemon, make_daemon)
    before = d.log_text().count("rejected")
    async with aiohttp.ClientSession() as session:

        async def bogus(i: int) -> int:
            headers = {
                "X-Forwarded-For": f"203.0.113.{i % 4}",
                "Content-Type": "application/x-www-form-urlencoded",
            }
            if i % 2:
                headers["X-Twilio-Signature"] = f"forged{i}"
            body = urlencode({"CallSid": f"CA{i}"}).encode()
            async with session.post(local + f"?n={i}", data=body, headers=headers) as response:
                return response.status

        statuses: list[int] = []
        for start in range(0, 400, 20):
            statuses += await asyncio.gather(*(bogus(i) for i in range(start, start + 20)))
        assert set(statuses) <= {401, 429} and statuses.count(401) >= 200
        body, headers = signed("CA" + "9" * 32)
        async with session.post(local, data=body, headers=headers) as response:
            assert response.status == 200
    await asyncio.sleep(0.5)
    lines = [line for line in d.log_text().splitlines() if "rejected" in line]
    # per (reason, address): one line at once, then at most one summary per 10 s window
    assert len(lines) - before <= 24, "\n".join(lines[-30:])
    assert not any("forged" in line for line in lines)


async def test_tunnel_agent_is_not_capped_per_address(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """Behind a tunnel every connection comes from 127.0.0.1 (the agent): more than
    serve.max_connections_per_ip (64) of them stay open, only the global cap bounds them."""
    _d, local = await asyncio.to_thread(tunnelled_daemon, make_daemon)
    host, port_path = local.removeprefix("http://").split(":", 1)
    port = int(port_path.split("/", 1)[0])
    held = [socket.create_connection((host, port)) for _ in range(80)]
    try:
        for sock in held:
            sock.setblocking(False)
        await asyncio.sleep(1.0)
        for sock in held:
            with contextlib.suppress(BlockingIOError):
                assert sock.recv(1) != b"", "a tunnelled connection was closed at once"
        async with aiohttp.ClientSession() as session:
            body, headers = signed("CA" + "7" * 32)
            async with session.post(local, data=body, headers=headers) as response:
                assert response.status == 200
    finally:
        for sock in held:
            sock.close()
