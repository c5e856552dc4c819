"""The OpenAI Realtime API (and Twilio REST) for bench_realtime.py, in its own process.

Each websocket at `/v1/realtime` is a model that talks all the time: after the daemon's
`session.update` and first `response.create` (the opening line) it streams audio as a real
model does but at exactly real time, one 160-byte mu-law delta per 20 ms for every connection
(one timer for all), in items of `--item-frames` frames (`response.created` ...
`response.output_audio.done`, `response.done`), with `--pause-frames` ticks of silence between
them (the caller's turn). The first 8
bytes of every frame are `time.monotonic()` when the delta was built (CLOCK_MONOTONIC is one
clock for all processes of the machine), so the load generator measures vendor -> caller frame
latency per frame. It decodes the caller audio the daemon appends and reads the load
generator's timestamp from each 160-byte frame: caller frame -> vendor latency per frame.

Twilio REST (`/2010-04-01/...`): any request is answered 200 (the daemon hangs calls up at the
end). Driven over stdin/stdout: prints `READY {"port": p}`; `mark` starts the window
(`MARKED`); `report` answers `REPORT {json}`; EOF exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gc
import json
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _driven import commands, run, serve_local
from _support import percentile

FRAME = 160
TICK = 0.02
_STAMP = struct.Struct("<d")
_FILLER = bytes(range(1, FRAME - _STAMP.size + 1))
_APPEND = '"type":"input_audio_buffer.append"'


class Model:
    """One connection: its websocket and where it is in its current item."""

    __slots__ = ("frames", "item", "pause", "response", "talking", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.talking = False
        self.item = ""
        self.response = ""
        self.frames = 0
        self.pause = 0
        """Ticks of silence left before the next item (the caller's turn)."""


class Fake:
    """Every model connection, the shared 20 ms clock and the latency records."""

    def __init__(self, item_frames: int, pause_frames: int, phases: int = 1) -> None:
        self.phases = max(1, phases)
        self.item_frames = item_frames
        self.pause_frames = pause_frames
        self.models: list[Model] = []
        self.inbound_ms = array("d")
        self.window = False
        self.deltas = 0
        self.appends = 0
        self.ids = 0
        self.tick_late = array("d")

    def _id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}_{self.ids}"

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        model = Model(ws)
        self.models.append(model)
        await ws.send_str('{"type":"session.created","session":{"type":"realtime"}}')
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            data = message.data
            if _APPEND in data[:60]:
                self._caller_audio(data)
                continue
            event = json.loads(data)
            kind = event.get("type")
            if kind == "session.update":
                await ws.send_str('{"type":"session.updated","session":{}}')
            elif kind == "response.create" and not model.talking:
                metadata = (event.get("response") or {}).get("metadata")
                await self._new_response(model, metadata)
                model.talking = True
        model.talking = False
        return ws

    def _caller_audio(self, data: str) -> None:
        now = time.monotonic()
        start = data.index('"audio":"') + 9
        try:
            audio = base64.b64decode(data[start : data.index('"', start)])
        except (binascii.Error, ValueError):
            return
        self.appends += 1
        if not self.window:
            return
        for offset in range(0, len(audio) - FRAME + 1, FRAME):
            (sent,) = _STAMP.unpack_from(audio, offset)
            if 0 < now - sent < 60:  # a frame of ours (not silence padding)
                self.inbound_ms.append((now - sent) * 1000)

    async def _new_response(self, model: Model, metadata: Any) -> None:
        model.response, model.item, model.frames = self._id("resp"), self._id("item"), 0
        await model.ws.send_str(
            json.dumps(
                {
                    "type": "response.created",
                    "response": {
                        "id": model.response,
                        "status": "in_progress",
                        "metadata": metadata,
                    },
                }
            )
        )

    async def _end_item(self, model: Model) -> None:
        base = f'"response_id":"{model.response}","item_id":"{model.item}"'
        await model.ws.send_str(f'{{"type":"response.output_audio.done",{base}}}')
        await model.ws.send_str(
            f'{{"type":"response.output_audio_transcript.done",{base},"transcript":""}}'
        )
        await model.ws.send_str(
            f'{{"type":"response.done","response":{{"id":'
            f'"{model.response}","status":"completed"}}}}'
        )
        model.pause = self.pause_frames

    async def clock(self) -> None:
        """One delta per talking connection every 20 ms, on an absolute grid. With `phases`
        K > 1 the grid has K points per 20 ms and connection i talks at point i mod K (its
        deltas still 20 ms apart): the calls' frames no longer all leave at one instant."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        phases = self.phases
        step = TICK / phases
        phase = -1
        while True:
            due += step
            phase = (phase + 1) % phases
            await asyncio.sleep(max(0.0, due - loop.time()))
            late = loop.time() - due
            if self.window:
                self.tick_late.append(late * 1000)
            for index, model in enumerate(list(self.models)):
                if index % phases != phase or not model.talking or model.ws.closed:
                    continue
                if model.pause:
                    model.pause -= 1
                    if model.pause == 0:
                        await self._new_response(model, None)
                    continue
                frame = _STAMP.pack(time.monotonic()) + _FILLER
                payload = base64.b64encode(frame).decode()
                try:
                    await model.ws.send_str(
                        f'{{"type":"response.output_audio.delta","response_id":'
                        f'"{model.response}","item_id":"{model.item}","delta":"{payload}"}}'
                    )
                    self.deltas += 1
                    model.frames += 1
                    if model.frames >= self.item_frames:
                        await self._end_item(model)
                except ConnectionError:
                    model.talking = False

    def report(self) -> dict[str, Any]:
        values = self.inbound_ms
        return {
            "connections": len(self.models),
            "deltas": self.deltas,
            "appends": self.appends,
            "inbound_frames": len(values),
            "inbound_p50_ms": percentile(values, 50),
            "inbound_p99_ms": percentile(values, 99),
            "inbound_max_ms": max(values, default=float("nan")),
            "tick_late_p99_ms": percentile(self.tick_late, 99),
        }


async def _twilio(request: web.Request) -> web.Response:
    return web.json_response({"sid": "CA0", "status": "completed"})


async def _main(args: argparse.Namespace) -> None:
    fake = Fake(args.item_frames, args.pause_frames, args.phases)
    app = web.Application()
    app.router.add_get("/v1/realtime", fake.realtime)
    app.router.add_route("*", "/2010-04-01/{tail:.*}", _twilio)
    runner, port = await serve_local(app)
    clock = asyncio.get_running_loop().create_task(fake.clock())
    gc.freeze()
    print("READY " + json.dumps({"port": port}), flush=True)
    async for line in commands():
        if line == "mark":
            fake.window = True
            print("MARKED", flush=True)
        elif line == "report":
            fake.window = False
            print("REPORT " + json.dumps(fake.report()), flush=True)
    clock.cancel()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--item-frames", type=int, default=250, help="frames per model audio item (250 = 5 s)"
    )
    parser.add_argument(
        "--pause-frames",
        type=int,
        default=50,
        help="silent ticks between items (the caller's turn; 50 = 1 s)",
    )
    parser.add_argument(
        "--phases", type=int, default=1, help="points per 20 ms the connections' deltas spread over"
    )
    run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
