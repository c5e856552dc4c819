"""Twilio side of bench_streams.py: N media-stream websockets from one process.

Each stream does what Twilio does: an upgrade signed with `X-Twilio-Signature` over the
`ws://` URL, `connected`, `start` (callSid, streamSid, `customParameters.token`), then one
160-byte mu-law `media` message every 20 ms on an absolute clock (one timer for all streams),
and it echoes every `mark` it receives. It records the arrival time of every outbound `media`
message it receives, per stream.

To keep the client's own cost low (it shares the 2 cores with the server), it is a minimal
RFC 6455 client on a raw asyncio protocol (uvloop): each stream's inbound `media` message is
built once (a zero mask key, so masking is a copy) and written straight to the transport, and
received frames are only split and time-stamped, not JSON-parsed. The sequence numbers and
payload of the inbound media therefore repeat; the server's fast path reads only the payload.

Driven over stdin/stdout by bench_streams.py:
  -> `CONNECTED <n> <seconds to connect>` once every stream got its `start` through
  <- `mark`   : answers `MARKED <time>`; arrivals count from here
  <- `report` : answers `REPORT {json}` (receive-interval stats), then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import math
import os
import struct
import sys
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _driven import commands, run
from _support import percentile

from daemon.webhooks.security import TwilioVerifier

FRAME = 0.02
SKIP_FRAMES = 5
MEDIA_HEAD = b'{"event":"media"'
MARK_KEY = b'"mark":{"name":"'
MASK = b"\x00\x00\x00\x00"


def client_frame(text: str | bytes, opcode: int = 0x1) -> bytes:
    """One final, masked (zero key) client frame."""
    data = text.encode() if isinstance(text, str) else text
    size = len(data)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + MASK + data


class Stream(asyncio.Protocol):
    """One Twilio media stream."""

    def __init__(
        self,
        index: int,
        call_id: str,
        sid: str,
        token: str,
        request: bytes,
        clock: asyncio.AbstractEventLoop,
    ) -> None:
        self.index = index
        self.stream_sid = f"MZ{index:032x}"
        self.call_id, self.sid, self.token = call_id, sid, token
        self.request = request
        self.time = clock.time
        self.transport: asyncio.Transport | None = None
        self.upgraded = clock.create_future()
        self.closed = clock.create_future()
        self.buffer = bytearray()
        self.handshake = True
        self.arrivals = array("d")
        self.marks = 0
        self.other = 0
        payload = base64.b64encode(b"\xff" * 160).decode()  # mu-law silence
        self.media = client_frame(
            '{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1",'
            f'"timestamp":"20","payload":"{payload}"}},"streamSid":"{self.stream_sid}"}}'
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"stream {self.index}: closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(
            client_frame(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        )
        self.transport.write(
            client_frame(
                json.dumps(
                    {
                        "event": "start",
                        "sequenceNumber": "1",
                        "streamSid": self.stream_sid,
                        "start": {
                            "accountSid": "AC" + "0" * 32,
                            "streamSid": self.stream_sid,
                            "callSid": self.sid,
                            "tracks": ["inbound"],
                            "customParameters": {"token": self.token, "callId": self.call_id},
                            "mediaFormat": {
                                "encoding": "audio/x-mulaw",
                                "sampleRate": 8000,
                                "channels": 1,
                            },
                        },
                    }
                )
            )
        )

    def _upgrade(self, buffer: bytearray) -> bool:
        """Consume the HTTP upgrade answer; True once frames may follow in `buffer`."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
        del buffer[: end + 4]
        self.handshake = False
        if b" 101 " not in status:
            self.upgraded.set_exception(ConnectionError(f"upgrade refused: {status!r}"))
            return False
        self.upgraded.set_result(None)
        return True

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.handshake and not self._upgrade(buffer):
            return
        now = self.time()
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            start = pos + head
            pos = start + length
            opcode = b0 & 0x0F
            if opcode == 0x1:
                if buffer.startswith(MEDIA_HEAD, start):
                    self._media(buffer, start, pos, now)
                else:
                    self._control(bytes(buffer[start:pos]))
            else:
                self._other_frame(opcode, buffer, start, pos)
        if pos:
            del buffer[:pos]

    def _media(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        """An outbound `media` message (the frame's text is buffer[start:end]): its arrival."""
        self.arrivals.append(now)

    def _other_frame(self, opcode: int, buffer: bytearray, start: int, end: int) -> None:
        """A close (0x8) or ping (0x9, answered with a pong); other frames are ignored."""
        if self.transport is None:
            return
        if opcode == 0x8:
            self.transport.close()
        elif opcode == 0x9:
            self.transport.write(client_frame(bytes(buffer[start:end]), 0xA))

    def _control(self, text: bytes) -> None:
        at = text.find(MARK_KEY)
        if at >= 0 and self.transport is not None:
            name = text[at + len(MARK_KEY) : text.index(b'"', at + len(MARK_KEY))].decode()
            self.marks += 1
            self.transport.write(
                client_frame(
                    json.dumps(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
                    )
                )
            )
        else:
            self.other += 1


class Ticker:
    """Sends every live stream's inbound media frame on one absolute 20 ms clock, and records
    its own lateness: a client that cannot keep its clock would blame the server for its lag.

    With `phases` K > 1 the clock has K points per 20 ms and the stream at position i of
    `streams` (which only grows) sends at point i mod K, still every 20 ms: calls of a real
    provider are not in step with one another, so their frames reach the server spread over
    the period. With K = 1 every frame leaves at once, the harshest case for the server (a
    burst of reads every 20 ms)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        streams: list[Any] | None = None,
        phases: int = 1,
    ) -> None:
        self.loop = loop
        self.streams: list[Any] = streams if streams is not None else []
        self.phases = max(1, phases)
        self.epoch = loop.time()
        self.index = 0
        self.sent = 0
        self.skipped = 0
        self.lateness = array("d")
        self._arm()

    def _arm(self) -> None:
        self.index += 1
        self.loop.call_at(self.epoch + self.index * FRAME / self.phases, self._tick)

    def frame(self, stream: Any) -> bytes:
        """The websocket frame to send for `stream` this tick (its pre-built media frame)."""
        media: bytes = stream.media
        return media

    def _tick(self) -> None:
        phases = self.phases
        step = FRAME / phases
        now = self.loop.time()
        self.lateness.append(max(0.0, now - (self.epoch + self.index * step)))
        behind = int((now - self.epoch) / step) - self.index
        first = self.index
        if behind >= phases:  # stalled a whole frame: skip (like a lossy network), say so
            self.skipped += behind
            self.index += behind
            first = self.index
        elif behind > 0:  # a point or two late (timers have 1 ms steps): send those too
            self.index += behind
        for point in sorted({i % phases for i in range(first, self.index + 1)}):
            for stream in self.streams[point::phases]:
                transport = stream.transport
                if transport is not None and not transport.is_closing():
                    transport.write(self.frame(stream))
                    self.sent += 1
        self._arm()


def upgrade_request(url: str, signature: str) -> bytes:
    """The HTTP upgrade request Twilio sends to open a media stream at `url` (ws://)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        f"X-Twilio-Signature: {signature}\r\n\r\n"
    ).encode()


def _stats(streams: list[Stream], since: float) -> dict[str, float | int]:
    jitter: list[float] = []
    gaps: list[float] = []
    frames = 0
    for stream in streams:
        previous = None
        for index, at in enumerate(stream.arrivals):
            if index < SKIP_FRAMES or at < since:
                continue
            frames += 1
            if previous is not None:
                interval = at - previous
                jitter.append(abs(interval - FRAME) * 1000)
                gaps.append(interval * 1000)
            previous = at
    return {
        "frames": frames,
        "jitter_p50": percentile(jitter, 50),
        "jitter_p99": percentile(jitter, 99),
        "max_gap": max(gaps, default=math.nan),
        "gaps_over_60": sum(1 for g in gaps if g > 60),
        "closed": sum(1 for s in streams if s.closed.done()),
        "marks": sum(s.marks for s in streams),
    }


async def _main(args: argparse.Namespace) -> None:
    port, connect_concurrency = args.port, args.connect_concurrency
    loop = asyncio.get_running_loop()
    calls = json.loads(Path(args.calls).read_text())
    url = f"ws://127.0.0.1:{port}/voice/stream"
    request = upgrade_request(
        url, TwilioVerifier(os.environ.get("BENCH_TWILIO_TOKEN", "")).compute_signature(url)
    )
    streams: list[Stream] = []
    gate = asyncio.Semaphore(connect_concurrency)
    started = loop.time()

    async def open_one(index: int, call: list[str]) -> None:
        async with gate:
            stream = Stream(index, call[0], call[1], call[2], request, loop)
            await loop.create_connection(lambda: stream, "127.0.0.1", port)
            await stream.upgraded
            stream.start()
            streams.append(stream)
            await asyncio.sleep(0.005)  # let the server admit it before the next one is pending

    await asyncio.gather(*(open_one(i, call) for i, call in enumerate(calls)))
    streams.sort(key=lambda s: s.index)
    ticker = Ticker(loop, streams)
    gc.collect()
    gc.freeze()
    gc.disable()  # the client's own collections would show up as jitter; it makes no cycles
    print(f"CONNECTED {len(streams)} {loop.time() - started:.2f}", flush=True)
    since = math.inf
    async for line in commands():
        if line == "mark":
            since = loop.time()
            print(f"MARKED {since}", flush=True)
        elif line == "report":
            stats = _stats(streams, since)
            stats["inbound_sent"] = ticker.sent
            stats["inbound_ticks_skipped"] = ticker.skipped
            print("REPORT " + json.dumps(stats), flush=True)
            break
    os._exit(0)


def main() -> None:
    """Parse arguments, open the streams, serve until `report`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls", required=True, help="JSON file: [[callId, callSid, token]]")
    parser.add_argument("--connect-concurrency", type=int, default=16)
    run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
