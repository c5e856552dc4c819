"""The Realtime API socket's caller-audio path (daemon/realtime/client.py) on a real server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from daemon.realtime.client import RealtimeSocket


async def test_caller_audio_is_written_at_once_in_order_after_control_events() -> None:
    """With the writer idle, each caller frame is written by ``send_audio`` itself (no task
    wake-up, no loop turn: the server has it after one round trip of the loop); control events
    queued earlier still go first, and every byte arrives in order."""
    events: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                events.append(json.loads(message.data))
                arrived.set()
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    lost: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            socket = RealtimeSocket(
                http,
                url=f"ws://127.0.0.1:{port}/v1/realtime",
                api_key="sk-test",
                on_event=lambda _event: None,
                on_lost=lost.append,
            )
            socket.send({"type": "session.update"})
            await socket.open()
            socket.send({"type": "response.create"})
            socket.send_audio(b"\x01" * 160)  # behind a queued control event: via the task
            for _ in range(200):  # until the writer is idle again
                if len(events) >= 3:
                    break
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 10)
            frames = [bytes([n]) * 160 for n in range(2, 12)]
            for frame in frames:
                socket.send_audio(frame)
            assert socket.direct_sends == len(frames)
            while len(events) < 3 + len(frames):
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 10)
            await socket.close()
    finally:
        await runner.cleanup()
    assert [event["type"] for event in events[:2]] == ["session.update", "response.create"]
    audio = [base64.b64decode(event["audio"]) for event in events[2:]]
    assert all(event["type"] == "input_audio_buffer.append" for event in events[2:])
    assert audio == [b"\x01" * 160, *frames]
    assert lost == []
