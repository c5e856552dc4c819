"""A local OpenAI: ``/v1/audio/speech``, ``/v1/chat/completions`` and the realtime websocket.

Enough of each API for voicecall's clients, with knobs to delay, hold or fail each one and
records of every request, so tests assert on what went over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes._server import FakeServer, sine_pcm16, split_evenly

API_KEY = "sk-test-openai-key-0001"
TTS_RATE = 24000


@dataclass
class RealtimeConnection:
    """One accepted realtime websocket and what the client sent on it."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    query: dict[str, str]
    updates: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    closed: bool = False


class FakeOpenAI(FakeServer):
    """``base_url`` ends in ``/v1`` like OpenAI's; ``realtime_url`` is the ws:// URL."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        # /v1/audio/speech
        self.tts_pcm = sine_pcm16(440.0, 1.0, TTS_RATE)
        self.tts_chunks = 6
        self.tts_chunk_delay = 0.02
        self.tts_first_byte_delay = 0.0
        """Seconds before the response starts (a real vendor's time to first audio)."""
        self.tts_status = 200
        self.tts_hold: asyncio.Event | None = None
        """When set to an Event, the body pauses after its first chunk until it is set."""
        self.tts_requests: list[dict[str, Any]] = []
        self.tts_request_times: list[float] = []
        """When each request arrived (time.monotonic)."""
        self.tts_completed = 0
        # /v1/chat/completions
        self.chat_reply = "Sure, I can help with that."
        self.chat_status = 200
        self.chat_delay = 0.0
        self.chat_hold: asyncio.Event | None = None
        self.chat_requests: list[dict[str, Any]] = []
        self.chat_stream: list[tuple[float, str]] | None = None
        """For ``stream: true`` requests: (seconds to wait, text) per SSE chunk; None sends
        ``chat_reply`` in word-sized chunks at once."""
        self.chat_finished: list[float] = []
        """``time.monotonic()`` when each chat answer was complete (its last byte written)."""
        # /v1/realtime
        self.realtime_reject: list[int] = []
        """HTTP statuses to refuse the next handshakes with, one per attempt."""
        self.connections: list[RealtimeConnection] = []
        self.handshakes = 0
        """Websocket upgrade attempts, refused ones included."""
        self._holds: set[asyncio.Event] = set()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def realtime_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?intent=transcription"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/realtime", self._realtime)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorized(self, request: web.Request) -> web.Response:
        # The real API echoes a masked key; clients must not pass even that along.
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        masked = f"{sent[:6]}***{sent[-4:]}" if sent else ""
        message = f"Incorrect API key provided: {masked}. You can find your API key at ..."
        body = {"error": {"message": message, "type": "invalid_request_error"}}
        return web.json_response(body, status=401)

    async def _before_close(self) -> None:
        for hold in self._holds:
            hold.set()
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close()

    # -- TTS ---------------------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        self.tts_requests.append(await request.json())
        self.tts_request_times.append(time.monotonic())
        await self.notify()
        if not self._authorized(request):
            return self._unauthorized(request)
        if self.tts_status != 200:
            body = {"error": {"message": "fake synthesis failure"}}
            return web.json_response(body, status=self.tts_status)
        if self.tts_first_byte_delay:
            await asyncio.sleep(self.tts_first_byte_delay)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        hold = self.tts_hold  # this request keeps its hold even if the test swaps it
        for index, chunk in enumerate(split_evenly(self.tts_pcm, self.tts_chunks)):
            if index == 1 and hold is not None:
                self._holds.add(hold)
                await hold.wait()
            if index:
                await asyncio.sleep(self.tts_chunk_delay)
            await response.write(chunk)
        await response.write_eof()
        self.tts_completed += 1
        await self.notify()
        return response

    # -- chat --------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_requests.append(await request.json())
        await self.notify()
        if not self._authorized(request):
            return self._unauthorized(request)
        hold = self.chat_hold
        if hold is not None:
            self._holds.add(hold)
            await hold.wait()
        if self.chat_delay:
            await asyncio.sleep(self.chat_delay)
        if self.chat_status != 200:
            failure = {"error": {"message": "fake model failure"}}
            return web.json_response(failure, status=self.chat_status)
        if self.chat_requests[-1].get("stream"):
            return await self._chat_stream(request)
        message = {"role": "assistant", "content": self.chat_reply}
        body = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        self.chat_finished.append(time.monotonic())
        return web.json_response(body)

    async def _chat_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events as OpenAI streams them: a role chunk, content deltas, a
        finish chunk, ``data: [DONE]``."""
        schedule = self.chat_stream
        if schedule is None:
            schedule = [(0.0, piece) for piece in re.findall(r"\S+\s*", self.chat_reply)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for delay, text in schedule:
            if delay:
                await asyncio.sleep(delay)
            await send({"content": text})
        await send({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.chat_finished.append(time.monotonic())
        await self.notify()
        return response

    # -- realtime ----------------------------------------------------------------------------

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        await self.notify()
        if self.realtime_reject:
            return web.Response(status=self.realtime_reject.pop(0))
        if not self._authorized(request):
            return self._unauthorized(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = RealtimeConnection(ws, dict(request.headers), dict(request.query))
        self.connections.append(conn)
        await ws.send_json({"type": "transcription_session.created", "session": {}})
        await self.notify()
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_client_event(conn, json.loads(message.data))
        finally:
            conn.closed = True
            await self.notify()
        return ws

    async def _on_client_event(self, conn: RealtimeConnection, event: dict[str, Any]) -> None:
        if event.get("type") == "transcription_session.update":
            conn.updates.append(event)
            await conn.ws.send_json({"type": "transcription_session.updated", **event})
        elif event.get("type") == "input_audio_buffer.append":
            conn.audio += base64.b64decode(event["audio"])
        else:
            await conn.ws.send_json({"type": "error", "error": {"message": "unknown event"}})
        await self.notify()

    @property
    def current(self) -> RealtimeConnection:
        """The newest realtime connection."""
        return self.connections[-1]

    async def emit(self, event: dict[str, Any]) -> None:
        """Send a server event on the newest connection."""
        await self.current.ws.send_json(event)

    async def speech_started(self, item_id: str = "item_1") -> None:
        await self.emit({"type": "input_audio_buffer.speech_started", "item_id": item_id})

    async def transcript_delta(self, delta: str, item_id: str = "item_1") -> None:
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "delta": delta,
            }
        )

    async def transcript_completed(
        self, transcript: str, item_id: str = "item_1", logprobs: list[float] | None = None
    ) -> None:
        event: dict[str, Any] = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "transcript": transcript,
        }
        if logprobs is not None:
            event["logprobs"] = [{"token": "x", "logprob": lp} for lp in logprobs]
        await self.emit(event)

    async def drop(self) -> None:
        """Close the newest connection from the server side (a network blip)."""
        await self.current.ws.close(code=1011, message=b"fake drop")
