"""Direct delivery of inbound media messages (daemon/media/direct.py) on a real aiohttp server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from daemon.media import direct


@pytest.mark.skipif(not direct.SUPPORTED, reason="this aiohttp's websocket internals differ")
async def test_text_reaches_the_sink_in_order_without_receive_and_stop_ends_the_loop() -> None:
    """Messages queued before the sink was attached arrive first, through receive(); later
    text goes to the sink from the parser; a message the sink refuses (stop) comes back
    through receive() so the owner ends; a close still ends receive()."""
    seen: list[str] = []
    received: list[str] = []
    done = asyncio.Event()
    gate = asyncio.Event()
    attached_event = asyncio.Event()

    def sink(text: str) -> bool:
        seen.append(text)
        return text != "stop"

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = direct.direct_response()
        await ws.prepare(request)
        await gate.wait()  # the client's first messages are queued meanwhile
        attached = False
        while True:
            if not attached:
                attached = direct.attach(ws, sink)
                if attached:
                    attached_event.set()
            message = await ws.receive()
            if message.type is not WSMsgType.TEXT:
                break
            received.append(message.data)
            if message.data == "stop":
                break
        done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            await ws.send_str("early-1")
            await ws.send_str("early-2")
            await asyncio.sleep(0.05)
            gate.set()
            await asyncio.wait_for(attached_event.wait(), 5)
            for index in range(20):
                await ws.send_str(f"m{index}")
            await ws.send_str("stop")
            await asyncio.wait_for(done.wait(), 5)
    finally:
        await runner.cleanup()
    assert received[:2] == ["early-1", "early-2"]
    assert seen[:-1] == [f"m{i}" for i in range(20)] and seen[-1] == "stop"
    assert received[2:] == ["stop"]  # nothing else woke the receive() loop
