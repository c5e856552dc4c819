"""Twilio's side of bench_realtime.py: realtime calls by signed webhook, streams with
time-stamped audio both ways.

Calls are set up exactly as bench/daemon_loadgen.py does (signed voice webhooks from many
source addresses, `<Connect><Stream>`, signed upgrade, `connected`/`start`; its classes are
reused). Then every 20 ms (one timer for all streams) each stream sends a caller frame whose
first 8 bytes are `time.monotonic()` at sending: the realtime fake reads them and measures
caller frame -> vendor. Every outbound `media` frame the daemon sends carries the fake's
timestamp in its first 8 bytes: this side measures vendor -> caller frame on arrival.
Marks are echoed as Twilio does.

Driven over stdin/stdout like daemon_loadgen.py: `RAMPED {json}`; `mark` -> `MARKED`;
`report` -> `REPORT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gc
import json
import math
import os
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _support import percentile
from daemon_loadgen import CallStream, LoadGen, Ticker
from stream_client import MARK_KEY, client_frame

_STAMP = struct.Struct("<d")
_FILLER = bytes(range(100, 100 + 160 - _STAMP.size))
_PAYLOAD = b'"payload":"'
_STAMP_CHARS = 12
"""Base64 characters that hold the first 9 bytes: the 8-byte timestamp and one more."""


class StampedStream(CallStream):
    """A stream that reads the vendor's timestamp out of every outbound frame."""

    window = False
    outbound_ms: array[float]

    def _upgrade(self, buffer: bytearray) -> bool:
        """Consume the HTTP upgrade answer; True once frames may follow in `buffer`."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
        del buffer[:end + 4]
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
        now = time.monotonic()
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length, head = buffer[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = (buffer[pos + 2] << 8) | buffer[pos + 3], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
            if size - pos < head + length:
                break
            start, opcode = pos + head, buffer[pos] & 0x0F
            pos = start + length
            if opcode == 0x1:
                self._text(bytes(buffer[start:pos]), now)
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()
        if pos:
            del buffer[:pos]

    def _text(self, text: bytes, now: float) -> None:
        at = text.find(_PAYLOAD)
        if at >= 0:
            self.arrivals.append(now)
            begin = at + len(_PAYLOAD)
            try:
                (sent,) = _STAMP.unpack_from(base64.b64decode(text[begin:begin + _STAMP_CHARS]))
            except (binascii.Error, struct.error):
                return
            if StampedStream.window and 0 < now - sent < 60:
                StampedStream.outbound_ms.append((now - sent) * 1000)
            return
        at = text.find(MARK_KEY)
        if at >= 0 and self.transport is not None:
            name = text[at + len(MARK_KEY):text.index(b'"', at + len(MARK_KEY))].decode()
            self.marks += 1
            self.transport.write(client_frame(json.dumps(
                {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})))


StampedStream.outbound_ms = array("d")


class StampedTicker(Ticker):
    """Every stream's caller frame, time-stamped when it is sent."""

    def _tick(self) -> None:
        due = self.epoch + self.index * 0.02
        now = self.loop.time()
        self.lateness.append(max(0.0, now - due))
        behind = int((now - self.epoch) / 0.02) - self.index
        if behind > 0:
            self.skipped += behind
            self.index += behind
        for stream in self.streams:
            transport = stream.transport
            if transport is not None and not transport.is_closing():
                payload = base64.b64encode(_STAMP.pack(time.monotonic()) + _FILLER).decode()
                transport.write(client_frame(
                    '{"event":"media","media":{"track":"inbound","payload":"' + payload
                    + f'"}},"streamSid":"{stream.stream_sid}"}}'))
                self.sent += 1
        self._arm()


class RealtimeLoadGen(LoadGen):
    """LoadGen with time-stamped streams."""

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(args, loop)
        self.ticker = StampedTicker(loop)

    async def stream(self, index: int, sid: str, url: str, parameters: dict[str, str],
                     source: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        signature = self.verifier.compute_signature(url)
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   f"X-Twilio-Signature: {signature}\r\n\r\n").encode()
        stream = StampedStream(index, parameters.get("callId", ""), sid,
                               parameters.get("token", ""), request, self.loop)
        try:
            await self.loop.create_connection(lambda: stream, parts.hostname,
                                              parts.port or 80, local_addr=(source, 0))
            await asyncio.wait_for(stream.upgraded, 30)
        except (OSError, ConnectionError, TimeoutError):
            self._fail("stream upgrade failed")
            return
        stream.start()
        self.ticker.streams.append(stream)


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    gen = RealtimeLoadGen(args, loop)
    ramp = await gen.ramp()
    gc.collect()
    gc.freeze()
    gc.disable()  # its own collections would show up as latency; it makes no cycles
    print("RAMPED " + json.dumps({"streams": len(gen.ticker.streams), "ramp_s": ramp,
                                  "failures": gen.failures}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    since = math.inf
    while line := (await reader.readline()).decode().strip():
        if line == "mark":
            since = loop.time()
            gen.ticker.lateness = array("d")
            gen.ticker.skipped = 0
            gen.sent_at_mark = gen.ticker.sent
            StampedStream.window = True
            print("MARKED", flush=True)
        elif line == "report":
            StampedStream.window = False
            report: dict[str, Any] = gen.report(since, loop.time())
            values = StampedStream.outbound_ms
            report.update(outbound_frames=len(values),
                          outbound_p50_ms=percentile(values, 50),
                          outbound_p99_ms=percentile(values, 99),
                          outbound_max_ms=max(values, default=math.nan))
            print("REPORT " + json.dumps(report), flush=True)
            break
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhook", required=True, help="the daemon's webhook URL")
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--to", default="+15550100000")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--sources", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))


if __name__ == "__main__":
    main()
