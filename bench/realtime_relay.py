"""The control run of bench_realtime.py: a trivial relay in the daemon's place (the floor).

It stands where the daemon stands (same core, same nice, same load generator and fake) and
does only what any bridge between a Twilio media stream and the Realtime API must do, with
nothing of the toolkit: no signature checks, no store, no engine, no pacing, no marks, no
barge-in. Its voice webhook answers every call with `<Connect><Stream>` to its own websocket;
each stream, once `start` arrives, opens one Realtime websocket to the fake (`session.update`
and `response.create`, so the fake's model starts talking), and from then on:
- caller `media` -> its base64 payload, cut out of the text, sent as
  `input_audio_buffer.append` (no decode, no JSON parse);
- model `response.output_audio.delta` -> its base64 delta, cut out of the text, sent as a
  Twilio `media` message at once (the fake's deltas are exactly one 20 ms frame each).
Both sides use aiohttp's ordinary `async for` / `send_str`, on uvloop, as a minimal
asyncio/aiohttp pass-through would.

So what the load generator and the fake measure through it is two loopback websocket hops,
the fake's and the generator's own scheduling, and one event loop's turn for the burst of
frames that arrives at once: the floor under the daemon's figure.

Driven over stdin/stdout: prints `READY {"port": p}`; EOF exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _driven import commands, run, serve_local

APPEND = '{"type":"input_audio_buffer.append","audio":"'
DELTA_KEY = '"delta":"'
PAYLOAD_KEY = '"payload":"'
SESSION_UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        },
    }
)
RESPONSE_CREATE = '{"type":"response.create","response":{}}'


class Relay:
    """Every stream's pair of sockets."""

    def __init__(self, vendor_url: str) -> None:
        self.vendor_url = vendor_url
        self.port = 0
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def webhook(self, request: web.Request) -> web.Response:
        await request.read()
        url = f"ws://127.0.0.1:{self.port}/stream"
        return web.Response(
            text=f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}">'
            '<Parameter name="callId" value="relay"/><Parameter name="token" value="relay"/>'
            "</Stream></Connect></Response>",
            content_type="application/xml",
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        vendor: aiohttp.ClientWebSocketResponse | None = None
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                text = message.data
                if vendor is not None:
                    if text.startswith('{"event":"media"'):
                        start = text.find(PAYLOAD_KEY) + len(PAYLOAD_KEY)
                        payload = text[start : text.index('"', start)]
                        await vendor.send_str(APPEND + payload + '"}')
                    continue
                event = json.loads(text)
                if event.get("event") == "start":
                    vendor = await self._open(ws, event["start"]["streamSid"])
        finally:
            if vendor is not None:
                await vendor.close()
        return ws

    async def _open(self, ws: web.WebSocketResponse, sid: str) -> aiohttp.ClientWebSocketResponse:
        assert self.http is not None
        vendor = await self.http.ws_connect(self.vendor_url, max_msg_size=16 * 1024 * 1024)
        await vendor.send_str(SESSION_UPDATE)
        await vendor.send_str(RESPONSE_CREATE)
        task = asyncio.create_task(self._model(vendor, ws, sid))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return vendor

    async def _model(
        self, vendor: aiohttp.ClientWebSocketResponse, ws: web.WebSocketResponse, sid: str
    ) -> None:
        head = '{"event":"media","streamSid":"' + sid + '","media":{"payload":"'
        try:
            async for message in vendor:
                if message.type is not WSMsgType.TEXT:
                    continue
                text = message.data
                if text.startswith('{"type":"response.output_audio.delta"'):
                    start = text.find(DELTA_KEY) + len(DELTA_KEY)
                    await ws.send_str(head + text[start : text.index('"', start)] + '"}}')
        except (aiohttp.ClientError, ConnectionError):
            pass


async def _main(args: argparse.Namespace) -> None:
    relay = Relay(args.vendor)
    relay.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    app = web.Application()
    app.router.add_post("/webhook", relay.webhook)
    app.router.add_get("/stream", relay.stream)
    runner, relay.port = await serve_local(app)
    gc.freeze()
    print("READY " + json.dumps({"port": relay.port}), flush=True)
    async for _line in commands():
        pass
    for task in list(relay.tasks):
        task.cancel()
    await relay.http.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor", required=True, help="the fake's ws://.../v1/realtime URL")
    run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
