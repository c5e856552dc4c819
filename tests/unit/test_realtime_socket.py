"""The Realtime API socket's caller-audio path (daemon/realtime/client.py) on a real server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from daemon.realtime.client import RealtimeSocket
from daemon.speech.vendor import open_vendor_session
from daemon.speech.wsdirect import (
    attach_reader,
    detach_reader,
    direct_reading,
    reader_attached,
)


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


async def _serve(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/v1/realtime", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


def _delta(n: int) -> str:
    audio = base64.b64encode(bytes([n % 256]) * 160).decode()
    return (
        '{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1",'
        f'"delta":"{audio}"}}'
    )


async def test_model_messages_reach_the_handlers_in_order_from_the_parser() -> None:
    """On the daemon's vendor session, the model's messages reach ``on_audio``/``on_event``
    straight from the socket's parser (no reader-task step per message): the events sent
    right behind the upgrade (read before the sink could be attached) come first, every
    later message in order, audio deltas and other events interleaved as sent."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"session.created","session":{}}')
        await ws.send_str(_delta(0))
        await release.wait()
        for n in range(1, 40):
            await ws.send_str(_delta(n))
            if n % 10 == 0:
                await ws.send_str(f'{{"type":"response.done","response":{{"id":"r{n}"}}}}')
        await ws.send_str('{"type":"session.updated","session":{}}')
        async for _message in ws:
            pass
        return ws

    runner, port = await _serve(handler)
    order: list[str] = []
    done = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        order.append(event["type"] if event["type"] != "response.done" else event["response"]["id"])
        if event["type"] == "session.updated":
            done.set()

    def on_audio(item_id: str, response_id: str, delta: str) -> None:
        order.append(f"delta{base64.b64decode(delta)[0]}")

    try:
        async with open_vendor_session(1, 1) as http:
            socket = RealtimeSocket(
                http,
                url=f"ws://127.0.0.1:{port}/v1/realtime",
                api_key="sk-test",
                on_event=on_event,
                on_lost=lambda _reason: None,
                on_audio=on_audio,
            )
            await socket.open()
            for _ in range(500):  # the reader task drained the early ones and attached
                if socket._ws is not None and reader_attached(socket._ws):
                    break
                await asyncio.sleep(0.01)
            assert socket._ws is not None
            assert reader_attached(socket._ws), "the direct path was not attached"
            release.set()
            await asyncio.wait_for(done.wait(), 10)
            await socket.close()
    finally:
        await runner.cleanup()
    expected = ["session.created", "delta0"]
    for n in range(1, 40):
        expected.append(f"delta{n}")
        if n % 10 == 0:
            expected.append(f"r{n}")
    assert order == [*expected, "session.updated"]


async def test_direct_reader_delivers_without_receive_and_stops_when_detached() -> None:
    """wsdirect on its own: a socket opened under ``direct_reading`` hands text to the sink
    from the parser while nobody calls ``receive()``; detached, text queues for
    ``receive()`` again; a socket opened outside the block is aiohttp's plain one."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str("echo " + message.data)
        return ws

    runner, port = await _serve(handler)
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    got: list[str] = []
    arrived = asyncio.Event()

    def sink(text: str) -> None:
        got.append(text)
        arrived.set()

    try:
        async with open_vendor_session(1, 1) as http:
            plain = await http.ws_connect(url)
            assert not attach_reader(plain, sink)
            await plain.close()
            with direct_reading(1 << 20):
                ws = await http.ws_connect(url)
            assert attach_reader(ws, sink)
            for n in range(5):
                await ws.send_str(f"m{n}")
            while len(got) < 5:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 10)
            assert got == [f"echo m{n}" for n in range(5)]
            detach_reader(ws)
            await ws.send_str("late")
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.data == "echo late"
            assert len(got) == 5
            await ws.close()
    finally:
        await runner.cleanup()


async def test_direct_socket_heartbeat_no_ping_while_data_flows_and_a_mute_peer_is_dropped() -> (
    None
):
    """The coalesced heartbeat of a direct socket: while the peer sends, no ping goes out;
    once it goes quiet, pings go out, and a peer that answers them keeps the socket; one that
    does not is dropped (aiohttp's pong timeout), as without the direct path. No read
    schedules aiohttp's per-read heartbeat callback."""
    pings: list[float] = []
    answer = {"pong": True}
    talk = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)

        async def reader() -> None:
            async for message in ws:
                if message.type is WSMsgType.PING:
                    pings.append(asyncio.get_running_loop().time())
                    if answer["pong"]:
                        await ws.pong(message.data)

        task = asyncio.create_task(reader())
        await talk.wait()
        for _ in range(24):  # 1.2 s of data, one message every 50 ms
            await ws.send_str("data")
            await asyncio.sleep(0.05)
        await task
        return ws

    runner, port = await _serve(handler)
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    got: list[str] = []
    try:
        async with open_vendor_session(1, 1) as http:
            with direct_reading(1 << 20):
                ws = await http.ws_connect(url, heartbeat=0.3)
            handles: list[object] = []

            def sink(text: str) -> None:
                got.append(text)
                handles.append(ws._heartbeat_reset_handle)  # aiohttp's per-read callback

            assert attach_reader(ws, sink)
            closed = asyncio.create_task(ws.receive())  # control frames and the close
            talk.set()
            while len(got) < 24:
                await asyncio.sleep(0.05)
            assert pings == [], "pinged while the peer was sending"
            assert handles == [None] * 24, "a loop callback per read re-armed the heartbeat"
            loop = asyncio.get_running_loop()
            quiet = loop.time()
            while len(pings) < 2:  # answered pings keep the socket open
                assert loop.time() - quiet < 10
                await asyncio.sleep(0.05)
            assert not closed.done()
            answer["pong"] = False
            message = await asyncio.wait_for(closed, 10)
            assert message.type in (WSMsgType.ERROR, WSMsgType.CLOSED, WSMsgType.CLOSING)
            assert ws.closed or ws.exception() is not None
            await ws.close()
    finally:
        await runner.cleanup()
