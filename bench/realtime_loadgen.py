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
import math
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _driven import run
from _support import percentile
from daemon_loadgen import CallStream, LoadGen, arguments, drive
from stream_client import FRAME, Ticker, client_frame

_STAMP = struct.Struct("<d")
_FILLER = bytes(range(100, 100 + 160 - _STAMP.size))
_PAYLOAD = b'"payload":"'
_STAMP_CHARS = 12
"""Base64 characters that hold the first 9 bytes: the 8-byte timestamp and one more."""


class StampedStream(CallStream):
    """A stream that reads the vendor's timestamp out of every outbound frame."""

    window = False
    outbound_ms: array[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.time = time.monotonic  # the fake stamps frames with this clock

    def _media(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        self.arrivals.append(now)
        at = buffer.find(_PAYLOAD, start, end)
        if at < 0:
            return
        begin = at + len(_PAYLOAD)
        stamp = bytes(buffer[begin : begin + _STAMP_CHARS])
        try:
            (sent,) = _STAMP.unpack_from(base64.b64decode(stamp))
        except (binascii.Error, struct.error):
            return
        if StampedStream.window and 0 < now - sent < 60:
            StampedStream.outbound_ms.append((now - sent) * 1000)


StampedStream.outbound_ms = array("d")


class StampedTicker(Ticker):
    """Every stream's caller frame, time-stamped when it is sent. With `phases` K > 1 the
    clock has K points per 20 ms and stream i sends at point i mod K (still every 20 ms)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, phases: int = 1) -> None:
        self.phases = max(1, phases)
        super().__init__(loop)

    def _arm(self) -> None:
        self.index += 1
        self.loop.call_at(self.epoch + self.index * FRAME / self.phases, self._tick)

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
        due = {i % phases for i in range(first, self.index + 1)}
        for stream in self.streams:
            if stream.index % phases not in due:
                continue
            transport = stream.transport
            if transport is not None and not transport.is_closing():
                transport.write(self.frame(stream))
                self.sent += 1
        self._arm()

    def frame(self, stream: Any) -> bytes:
        payload = base64.b64encode(_STAMP.pack(time.monotonic()) + _FILLER).decode()
        return client_frame(
            '{"event":"media","media":{"track":"inbound","payload":"'
            + payload
            + f'"}},"streamSid":"{stream.stream_sid}"}}'
        )


class RealtimeLoadGen(LoadGen):
    """LoadGen with time-stamped streams."""

    stream_class = StampedStream

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(args, loop)
        self.ticker = StampedTicker(loop, args.phases)

    def mark(self) -> None:
        super().mark()
        StampedStream.window = True

    def report(self, since: float, until: float) -> dict[str, Any]:
        """LoadGen's report, and the vendor -> caller frame latencies."""
        StampedStream.window = False
        report = super().report(since, until)
        values = StampedStream.outbound_ms
        report.update(
            outbound_frames=len(values),
            outbound_p50_ms=percentile(values, 50),
            outbound_p99_ms=percentile(values, 99),
            outbound_max_ms=max(values, default=math.nan),
        )
        return report


async def _main(args: argparse.Namespace) -> None:
    await drive(RealtimeLoadGen(args, asyncio.get_running_loop()))


def main() -> None:
    phases = 1
    if "--phases" in sys.argv:  # ours; the rest is daemon_loadgen's command line
        at = sys.argv.index("--phases")
        phases = int(sys.argv[at + 1])
        del sys.argv[at : at + 2]
    args = arguments(__doc__ or "", 20.0)
    args.phases = phases
    run(_main, args)


if __name__ == "__main__":
    main()
