"""A local OpenAI Realtime API (speech-to-speech) that speaks the GA event protocol.

It accepts the websocket at ``/v1/realtime?model=...``, records every client event (session
updates, caller audio with arrival times, truncations, function outputs, response requests),
and answers ``response.create`` with a scripted response: ``response.created`` (echoing the
request's metadata), an audio item with ``response.output_audio.delta`` chunks of mu-law,
``response.output_audio_transcript.delta``/``done``, ``response.output_audio.done`` and
``response.done``. Tests script the rest: caller speech start, caller transcripts, function
calls, a response the model starts on its own, a dropped socket, a refused handshake.
``beta_names`` switches the audio events to their beta names (``response.audio.delta``...).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes._server import FakeServer

API_KEY = "sk-test-realtime-key-0001"
FRAME = 160
_SAID = re.compile(r'"(.*)"\s*$', re.DOTALL)


def speech_audio(frames: int, seed: int = 0) -> bytes:
    """``frames`` x 20 ms of recognisable mu-law bytes (a ramp, never silence 0xFF)."""
    return bytes((seed + i) % 255 for i in range(frames * FRAME))


@dataclass
class RealtimeSession:
    """One accepted connection and everything the client sent on it."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    query: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic arrival time, total audio bytes after it) per append."""
    closed: bool = False
    responding: asyncio.Task[str] | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The client events of one type, in order."""
        return [e for e in self.events if e.get("type") == kind]

    @property
    def session(self) -> dict[str, Any]:
        """The first ``session.update`` payload (the whole configuration)."""
        updates = self.of("session.update")
        return dict(updates[0]["session"]) if updates else {}


class FakeRealtime(FakeServer):
    """``url`` is the ws:// base URL to configure as ``realtime.base_url``."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.sessions: list[RealtimeSession] = []
        self.handshakes = 0
        self.reject: list[int] = []
        """HTTP statuses to refuse the next handshakes with."""
        self.reply_frames = 25
        """Audio per scripted response (20 ms frames)."""
        self.reply_text: str | None = None
        """Transcript of scripted responses; None = the quoted text of the instructions."""
        self.chunk_frames = 5
        """Frames per audio delta."""
        self.chunk_delay = 0.0
        """Seconds between audio deltas (0.02 per frame is real time)."""
        self.beta_names = False
        self.auto_respond = True
        """Answer ``response.create`` with a scripted response."""
        self._ids = itertools.count(1)
        super().__init__()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def current(self) -> RealtimeSession:
        return self.sessions[-1]

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/realtime", self._handle)

    async def _before_close(self) -> None:
        for session in self.sessions:
            if session.responding is not None:
                session.responding.cancel()
            if not session.ws.closed:
                await session.ws.close()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    # ------------------------------------------------------------------ connection

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        await self.notify()
        if self.reject:
            return web.Response(status=self.reject.pop(0))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided"}}, status=401
            )
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = RealtimeSession(ws, dict(request.headers), dict(request.query))
        self.sessions.append(session)
        await ws.send_json(
            {
                "type": "session.created",
                "event_id": self._id("event"),
                "session": {"type": "realtime", "model": request.query.get("model")},
            }
        )
        await self.notify()
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_client_event(session, json.loads(message.data))
        finally:
            session.closed = True
            await self.notify()
        return ws

    async def _on_client_event(self, session: RealtimeSession, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            session.audio += base64.b64decode(event["audio"])
            session.audio_arrivals.append((time.monotonic(), len(session.audio)))
            await self.notify()
            return
        session.events.append(event)
        if kind == "session.update":
            await session.ws.send_json(
                {
                    "type": "session.updated",
                    "event_id": self._id("event"),
                    "session": event["session"],
                }
            )
        elif kind == "conversation.item.truncate":
            await session.ws.send_json(
                {
                    "type": "conversation.item.truncated",
                    "event_id": self._id("event"),
                    "item_id": event["item_id"],
                    "content_index": 0,
                    "audio_end_ms": event["audio_end_ms"],
                }
            )
        elif kind == "response.create" and self.auto_respond:
            response = event.get("response") or {}
            said = _SAID.search(str(response.get("instructions", "")))
            text = self.reply_text or (said.group(1) if said else "Okay.")
            session.responding = asyncio.create_task(
                self.respond(text, metadata=response.get("metadata"), session=session)
            )
        await self.notify()

    # ------------------------------------------------------------------ scripted server events

    async def emit(self, event: dict[str, Any], session: RealtimeSession | None = None) -> None:
        """Send one server event (on the newest connection unless told)."""
        event.setdefault("event_id", self._id("event"))
        await (session or self.current).ws.send_json(event)

    def _name(self, ga: str) -> str:
        if not self.beta_names:
            return ga
        return {
            "response.output_audio.delta": "response.audio.delta",
            "response.output_audio.done": "response.audio.done",
            "response.output_audio_transcript.delta": "response.audio_transcript.delta",
            "response.output_audio_transcript.done": "response.audio_transcript.done",
        }.get(ga, ga)

    async def respond(
        self,
        text: str,
        *,
        metadata: Any = None,
        frames: int | None = None,
        audio: bytes | None = None,
        session: RealtimeSession | None = None,
        function_call: tuple[str, str, str] | None = None,
    ) -> str:
        """One whole response: audio ``frames`` (or ``audio``) saying ``text``; optionally a
        function call item ``(name, call_id, arguments)`` after the audio. Returns the audio
        item's id."""
        session = session or self.current
        response_id, item_id = self._id("resp"), self._id("item")
        base = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        ws = session.ws

        async def send(event: dict[str, Any]) -> None:
            # compact, "type" first, as the API sends it (the daemon's fast path for deltas)
            await ws.send_str(json.dumps(event, separators=(",", ":"), ensure_ascii=False))

        await send(
            {
                "type": "response.created",
                "event_id": self._id("event"),
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "metadata": metadata,
                },
            }
        )
        await send(
            {
                "type": "response.output_item.added",
                "event_id": self._id("event"),
                "response_id": response_id,
                "output_index": 0,
                "item": {"id": item_id, "type": "message", "role": "assistant"},
            }
        )
        pcm = audio if audio is not None else speech_audio(frames or self.reply_frames)
        words = text.split(" ")
        step = self.chunk_frames * FRAME
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        for index, chunk in enumerate(chunks):
            if index and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            if session.ws.closed:
                return item_id
            if index < len(words):
                await send(
                    {
                        "type": self._name("response.output_audio_transcript.delta"),
                        **base,
                        "delta": words[index] + (" " if index < len(words) - 1 else ""),
                    }
                )
            await send(
                {
                    "type": self._name("response.output_audio.delta"),
                    **base,
                    "delta": base64.b64encode(chunk).decode(),
                }
            )
        await send({"type": self._name("response.output_audio.done"), **base})
        await send(
            {
                "type": self._name("response.output_audio_transcript.done"),
                **base,
                "transcript": text,
            }
        )
        if function_call is not None:
            name, call_id, arguments = function_call
            await send(
                {
                    "type": "response.function_call_arguments.done",
                    "event_id": self._id("event"),
                    "response_id": response_id,
                    "item_id": self._id("item"),
                    "output_index": 1,
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments,
                }
            )
        await send(
            {
                "type": "response.done",
                "event_id": self._id("event"),
                "response": {"id": response_id, "status": "completed", "metadata": metadata},
            }
        )
        return item_id

    async def speech_started(self) -> None:
        """The caller started talking (server VAD)."""
        await self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": 0,
                "item_id": self._id("item"),
            }
        )

    async def caller_said(self, transcript: str) -> None:
        """The caller's turn was transcribed."""
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": self._id("item"),
                "content_index": 0,
                "transcript": transcript,
            }
        )

    async def call_function(self, name: str, arguments: str, call_id: str = "call_1") -> None:
        """A response that only calls a function."""
        response_id = self._id("resp")
        await self.emit(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        await self.emit(
            {
                "type": "response.function_call_arguments.done",
                "response_id": response_id,
                "item_id": self._id("item"),
                "output_index": 0,
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
        await self.emit(
            {"type": "response.done", "response": {"id": response_id, "status": "completed"}}
        )

    async def drop(self) -> None:
        """Close the newest connection from the server side (an outage)."""
        await self.current.ws.close(code=1011, message=b"fake outage")
