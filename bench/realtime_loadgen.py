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
from stream_client import Ticker, client_frame

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
    """Every stream's caller frame, time-stamped when it is sent."""

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
    ticker_class = StampedTicker

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
    run(_main, arguments(__doc__ or "", 20.0))


if __name__ == "__main__":
    main()
