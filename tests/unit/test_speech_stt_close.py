"""OpenAI realtime STT lifecycle races (found in review)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from daemon.errors import SpeechError
from daemon.speech.stt.openai_realtime import OpenAiRealtimeStt


class _Listener:
    def __init__(self) -> None:
        self.finals: list[str] = []

    def on_speech_start(self) -> None: ...
    def on_partial(self, text: str) -> None: ...
    def on_final(self, text: str, confidence: float | None) -> None:
        self.finals.append(text)

    def on_error(self, error: SpeechError) -> None: ...


async def _poll(predicate, timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_close_while_connecting_does_not_leave_a_live_socket() -> None:
    """The media stream closes (caller hung up) while STT is still opening its socket.

    session.close() -> stt.close() runs first and finds nothing to close; connect() then
    finishes and starts reader/writer tasks on a socket nobody will ever close: a leaked
    vendor connection that keeps delivering transcripts for a dead session.
    """
    hold = asyncio.Event()
    entered = asyncio.Event()
    server_sockets: list[web.WebSocketResponse] = []

    async def realtime(request: web.Request) -> web.StreamResponse:
        entered.set()
        await hold.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        server_sockets.append(ws)
        await ws.send_json({"type": "transcription_session.created", "session": {}})
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        stt = OpenAiRealtimeStt(
            http, _Listener(), api_key="k", url=f"ws://127.0.0.1:{port}/v1/realtime"
        )
        connecting = asyncio.create_task(stt.connect())
        await asyncio.wait_for(entered.wait(), 3)
        await stt.close()  # the session went away first
        hold.set()
        try:
            await asyncio.wait_for(connecting, 3)
        except SpeechError:
            pass
        try:
            # After close() nothing may stay connected to the vendor.
            leaked = await _poll(lambda: stt.connected, timeout=0.5)
            closed_by_client = await _poll(
                lambda: bool(server_sockets) and all(ws.closed for ws in server_sockets),
                timeout=1.0,
            )
            assert not leaked and (not server_sockets or closed_by_client), (
                "STT socket opened after close() is left running (leaked vendor connection)"
            )
        finally:
            await stt.close()
    await runner.cleanup()
