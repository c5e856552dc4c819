"""Connection caps: per address, in all, and the exemption of proxies and tunnel agents."""

from __future__ import annotations

from daemon.webhooks.connections import ConnectionGuard, ConnectionLimits


def test_per_address_cap_then_global_cap() -> None:
    """The 4th connection of one address is refused; others still fit until the global cap."""
    guard = ConnectionGuard(ConnectionLimits(max_connections=6, max_connections_per_ip=3))
    assert [guard.admit("1.1.1.1") for _ in range(3)] == [None] * 3
    assert guard.admit("1.1.1.1") == "over serve.max_connections_per_ip"
    assert [guard.admit("2.2.2.2") for _ in range(3)] == [None] * 3
    assert guard.admit("3.3.3.3") == "over serve.max_connections"
    guard.release("1.1.1.1")
    assert guard.admit("1.1.1.1") is None
    assert guard.total == 6 and guard.open_for("1.1.1.1") == 3


def test_exempt_peer_is_bounded_by_the_global_cap_only() -> None:
    """A trusted proxy or tunnel agent carries many clients: no per-address cap for it."""
    guard = ConnectionGuard(
        ConnectionLimits(max_connections=10, max_connections_per_ip=2),
        exempt=lambda address: address == "127.0.0.1",
    )
    assert all(guard.admit("127.0.0.1") is None for _ in range(10))
    assert guard.admit("127.0.0.1") == "over serve.max_connections"
    for _ in range(10):
        guard.release("127.0.0.1")
    assert guard.total == 0 and guard.open_for("127.0.0.1") == 0


async def test_admitted_stream_bypasses_aiohttp_handler_and_floods_are_still_sliced() -> None:
    """Once a websocket is authenticated its packets go straight to the websocket parser (the
    guard's fast path), every message still arrives in order, and a burst larger than a slice
    still takes the sliced path (the guard holds a backlog and hands it over piece by piece).
    After each fast-path read the guard calls `after_read` (the daemon's pacer checks for a
    due tick there)."""
    import asyncio

    import aiohttp
    from aiohttp import WSMsgType, web

    from daemon.webhooks.connections import SLICE_BYTES, GuardedSite, install_guard

    guard = ConnectionGuard(ConnectionLimits())
    reads: list[int] = []
    guard.after_read = lambda: reads.append(1)  # the pacer's poll, in the daemon
    received: list[str] = []
    states: dict[str, object] = {}
    authenticated = asyncio.Event()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = guard.guard_of(request.transport)
        assert connection is not None
        states["before"] = connection.media_fast_path
        first = await ws.receive()
        received.append(first.data)
        states["reads before"] = len(reads)
        connection.authenticated()
        states["after"] = connection.media_fast_path
        authenticated.set()
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                break
            received.append(message.data)
            if message.data == "end":
                break
        done.set()
        return ws

    app = web.Application()
    install_guard(app, guard)
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, guard=guard)
    await site.start()
    port = runner.addresses[0][1]
    big = "x" * (4 * SLICE_BYTES)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            await ws.send_str("start")
            await asyncio.wait_for(authenticated.wait(), 10)
            for index in range(50):
                await ws.send_str(f"m{index}")
            await ws.send_str(big)
            await ws.send_str("end")
            await asyncio.wait_for(done.wait(), 10)
    finally:
        await runner.cleanup()
    assert states["before"] is False and states["after"] is True
    assert received == ["start", *[f"m{i}" for i in range(50)], big, "end"]
    assert states["reads before"] == 0 and reads, "after_read follows each fast-path read"
    assert guard.total == 0
