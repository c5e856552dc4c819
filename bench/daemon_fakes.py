"""Vendor fakes of bench_daemon_streams.py, in their own process: cheap, counting, no records.

One aiohttp server (uvloop) plays every vendor the daemon talks to during the benchmark:
- Twilio REST (`/2010-04-01/Accounts/{sid}/Calls/{sid}.json`): fetch and hang-up answer at once;
- OpenAI TTS (`POST /v1/audio/speech`): `--tts-seconds` of 24 kHz PCM per request, written in
  100 ms chunks as fast as the daemon reads (a vendor synthesises faster than real time);
- ElevenLabs TTS (`POST /v1/text-to-speech/{voice}/stream?output_format=ulaw_8000`): the same
  length of 8 kHz mu-law;
- OpenAI realtime STT (`GET /v1/realtime`, websocket): confirms the session, counts the caller
  audio it receives (from the base64 length, without decoding it) and, with `--turn-every S`,
  sends each connection a final transcript every S seconds (staggered over all connections by
  one timer), so the daemon's auto-responder answers and keeps talking;
- the chat model (`POST /v1/chat/completions`): a one-sentence reply, plain or `stream: true`,
  worded differently each time (a numbered point), as a model's replies are: the daemon keeps
  the audio of a sentence said again, and a fixed reply would be said from memory.

The tests' fakes (tests/fakes/) record every request for assertions; at hundreds of calls that
bookkeeping would cost more than the daemon, so these keep counters only.

Driven over stdin/stdout: prints `READY {"port": p}`; `report` answers `REPORT {json}`; EOF exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from array import array
from typing import Any

import numpy as np
from _driven import commands, run, serve_local
from _support import percentile
from aiohttp import WSMsgType, web

TTS_RATE = 24000
ULAW_RATE = 8000
CHUNK_SECONDS = 0.1
TRANSCRIPT = "Could you tell me a little more about that?"
REPLY = "Of course, here is a little more about it, point {n}."
APPEND_OVERHEAD = len('{"type":"input_audio_buffer.append","audio":""}')


def _pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * TTS_RATE)) / TTS_RATE
    tone = np.sin(2 * math.pi * 440 * t) * 0.4 + np.sin(2 * math.pi * 660 * t) * 0.2
    return (tone * 32767).astype("<i2").tobytes()


def _ulaw(seconds: float) -> bytes:
    # Any mu-law bytes will do: the daemon passes them through untouched.
    pattern = bytes(range(0x10, 0x70)) + bytes(range(0x70, 0x10, -1))
    size = int(seconds * ULAW_RATE)
    return (pattern * (size // len(pattern) + 1))[:size]


class Fakes:
    """Every fake endpoint and its counters."""

    def __init__(self, tts_seconds: float, turn_every: float) -> None:
        self.pcm = _pcm(tts_seconds)
        self.ulaw = _ulaw(tts_seconds)
        self.pcm_chunk = int(TTS_RATE * CHUNK_SECONDS) * 2
        self.ulaw_chunk = int(ULAW_RATE * CHUNK_SECONDS)
        self.turn_every = turn_every
        self.counts: dict[str, int] = {
            "rest": 0,
            "tts_requests": 0,
            "tts_completed": 0,
            "tts_failed": 0,
            "stt_handshakes": 0,
            "stt_open": 0,
            "stt_appends": 0,
            "stt_audio_bytes": 0,
            "transcripts": 0,
            "chat_requests": 0,
        }
        self.tts_first_byte = array("d")
        """Seconds from request to first body chunk written (the fake's own latency)."""
        self.sockets: list[web.WebSocketResponse] = []
        self._turn_index = 0
        self._credit = 0.0
        self._turn_handle: asyncio.TimerHandle | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/2010-04-01/Accounts/{account}/Calls/{sid}.json", self.rest)
        app.router.add_post("/v1/audio/speech", self.openai_tts)
        app.router.add_post("/v1/text-to-speech/{voice}/stream", self.elevenlabs_tts)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/realtime", self.realtime)

    async def rest(self, request: web.Request) -> web.Response:
        self.counts["rest"] += 1
        sid = request.match_info["sid"]
        status = "completed" if request.method == "POST" else "in-progress"
        return web.json_response({"sid": sid, "status": status})

    async def _stream(
        self, request: web.Request, audio: bytes, chunk: int, content_type: str
    ) -> web.StreamResponse:
        started = time.perf_counter()
        self.counts["tts_requests"] += 1
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": content_type})
        try:
            await response.prepare(request)
            first = True
            for start in range(0, len(audio), chunk):
                await response.write(audio[start : start + chunk])
                if first:
                    self.tts_first_byte.append(time.perf_counter() - started)
                    first = False
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            self.counts["tts_failed"] += 1  # the daemon cut it (barge-in, hang-up)
            return response
        self.counts["tts_completed"] += 1
        return response

    async def openai_tts(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, self.pcm, self.pcm_chunk, "application/octet-stream")

    async def elevenlabs_tts(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, self.ulaw, self.ulaw_chunk, "audio/basic")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.counts["chat_requests"] += 1
        reply = REPLY.format(n=self.counts["chat_requests"])
        body = await request.json()
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply}
            return web.json_response(
                {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in reply.split(" "):
            delta = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
            await response.write(f"data: {json.dumps(delta)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        self.counts["stt_handshakes"] += 1
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.counts["stt_open"] += 1
        self.sockets.append(ws)
        counts = self.counts
        try:
            await ws.send_str('{"type":"transcription_session.created","session":{}}')
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                data = message.data
                if data.startswith('{"type":"input_audio_buffer.append"'):
                    counts["stt_appends"] += 1
                    counts["stt_audio_bytes"] += (len(data) - APPEND_OVERHEAD) * 3 // 4
                elif '"transcription_session.update"' in data:
                    await ws.send_str('{"type":"transcription_session.updated","session":{}}')
        finally:
            counts["stt_open"] -= 1
            self.sockets.remove(ws)
        return ws

    # -- transcripts: one timer for every connection ------------------------------------------

    def start_turns(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.turn_every > 0:
            self._turn_handle = loop.call_later(0.05, self._turn, loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every 50 ms send a transcript on the share of connections whose turn it is, so each
        connection gets one every `turn_every` seconds."""
        sockets = self.sockets
        if sockets and self.turn_every > 0:
            self._credit += len(sockets) * 0.05 / self.turn_every
            due = min(int(self._credit), len(sockets))
            self._credit -= due
            for _ in range(due):
                self._turn_index = (self._turn_index + 1) % len(sockets)
                ws = sockets[self._turn_index]
                if not ws.closed:
                    self.counts["transcripts"] += 1
                    event = {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": f"item_{self.counts['transcripts']}",
                        "transcript": TRANSCRIPT,
                    }
                    loop.create_task(ws.send_str(json.dumps(event)))
        self._turn_handle = loop.call_later(0.05, self._turn, loop)

    def report(self) -> dict[str, Any]:
        return {**self.counts, "tts_first_byte_p99_ms": percentile(self.tts_first_byte, 99) * 1000}


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    fakes = Fakes(args.tts_seconds, args.turn_every)
    app = web.Application(client_max_size=1024 * 1024)
    fakes.routes(app)
    runner, port = await serve_local(app, backlog=4096)
    fakes.start_turns(loop)
    print("READY " + json.dumps({"port": port}), flush=True)
    async for line in commands():
        if line == "report":
            print("REPORT " + json.dumps(fakes.report()), flush=True)
        elif line == "turns-off":
            fakes.turn_every = 0
    for ws in list(fakes.sockets):
        await ws.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tts-seconds",
        type=float,
        default=20.0,
        help="audio per TTS request (a long sentence keeps the daemon talking)",
    )
    parser.add_argument(
        "--turn-every",
        type=float,
        default=10.0,
        help="seconds between final transcripts per STT connection (0: none)",
    )
    run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
