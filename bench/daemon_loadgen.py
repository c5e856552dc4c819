"""Twilio's side of bench_daemon_streams.py: inbound calls by signed webhook, then media streams.

For each call, at `--rate` calls per second: a signed voice webhook (`X-Twilio-Signature` over
the daemon's webhook URL and form, as Twilio signs it), its TwiML parsed for the
`<Connect><Stream url>` and its `token`/`callId` parameters, then the websocket opened as
Twilio opens it (signed upgrade, `connected`, `start`). From then on every stream sends 160 bytes
of caller audio every 20 ms and echoes the daemon's marks.

The generator must stay cheap (it shares a core with the vendor fakes): it reuses the raw
RFC 6455 client of stream_client.py (pre-encoded inbound frames written straight to the
transport, outbound frames only split and time-stamped), and one timer sends every stream's
frame: at `--phases` points of each 20 ms (stream i at point i mod K), since the calls of a
real provider are not in step, or all at once with `--phases 1`. That timer's lateness is
recorded: a generator that cannot keep its own 20 ms clock would blame the daemon for its own
lag, so such a run is reported as lagging (INVALID).

With `--churn R`, from `mark` on, R calls a second hang up (the oldest first: `stop`, then the
websocket closed, as Twilio ends a stream) and as many new ones are placed: the daemon's load
stays at N calls while calls end and begin as they do in use. The window's health and jitter
are then those of the calls up all through it; the new calls' webhooks and first audio are
reported apart.

Driven over stdin/stdout: prints `RAMPED {json}` once every call was set up (or failed);
`mark` answers `MARKED`, and arrivals count from there; `report` answers `REPORT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import secrets
import sys
import time
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _driven import commands, run
from _support import percentile
from stream_client import FRAME, Stream, Ticker, client_frame, upgrade_request

from daemon.webhooks.security import TwilioVerifier

ACCOUNT_SID = "AC" + "b" * 32
CALLER = "+15550109999"
STREAM_URL = re.compile(r'<Stream[^>]*\burl="([^"]+)"')
PARAMETER = re.compile(r'<Parameter name="([^"]+)" value="([^"]*)"')
HEALTHY_SHARE = 0.9
HEALTHY_GAP = 0.1
MIN_SPAN = 1.0
"""A call is judged for health if it was up for at least this much of the window (`--churn`)."""
LAG_LIMIT = 0.010
"""A generator tick later than this at p99 (or any skipped tick) makes the run invalid."""
CLEAR_EVENT = b'"event":"clear"'
"""A `clear` (barge-in): the provider drops the audio it holds."""
JITTER_TARGET_MS = 10.0
"""SPEC 12's outbound p99 jitter: the frames further off their 20 ms are listed by arrival,
so the driver can set them beside what the machine did then."""


class CallStream(Stream):
    """A stream that also remembers when its `start` went out and when each message other
    than audio came (a mark, a clear: where an utterance may end), and can hang up."""

    started_at = 0.0
    hung_up = False
    hung_up_at = 0.0
    controls: array[float] | None = None
    clears: array[float] | None = None

    def _control(self, text: bytes) -> None:
        now = self.time()  # the loop's time of this read, as the arrivals have
        if self.controls is None:
            self.controls, self.clears = array("d"), array("d")
        self.controls.append(now)
        if CLEAR_EVENT in text:
            assert self.clears is not None
            self.clears.append(now)
        super()._control(text)

    def start(self) -> None:
        self.started_at = self.time()
        super().start()

    def hang_up(self) -> None:
        """End the call as Twilio does: a `stop` message, then the websocket closed (1000)."""
        self.hung_up = True
        self.hung_up_at = self.time()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        stop = {
            "event": "stop",
            "sequenceNumber": "3",
            "streamSid": self.stream_sid,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": self.sid},
        }
        transport.write(client_frame(json.dumps(stop)))
        transport.write(client_frame(b"\x03\xe8", opcode=0x8))
        transport.close()


class Playout:
    """What the provider's player makes of the frames: SPEC 12's jitter is the interval
    between frames, but a provider plays a stream's audio from a buffer, in order, so what
    a caller hears depends on whether each frame came before the audio ahead of it had
    played out. Modelled with no buffer of the provider's own: a frame arriving to an empty
    player starts playing at once; otherwise it plays after the audio queued before it.
    For each frame it keeps how much audio was queued ahead of it when it came (`buffered`,
    ms; the lead it was sent with, less its lateness), and counts underruns: a frame that
    came after the audio before it had run out, within an utterance (no mark or clear came
    between the two frames). An underrun is a gap the caller hears. A clear empties the
    player, as it does the provider's."""

    def __init__(self) -> None:
        self.buffered: list[float] = []
        self.underruns = 0
        self.underrun_ms = 0.0

    def add(
        self,
        arrivals: array[float],
        controls: array[float] | None,
        clears: array[float] | None,
        start: float,
        end: float,
    ) -> None:
        """One stream's frames that came within [start, end], its player followed from the
        stream's first frame (the lead's frames at an utterance's start fill the buffer);
        `controls`: when marks and clears came, `clears`: when the clears did."""
        bounds, drops = controls or array("d"), clears or array("d")
        bound = drop = 0
        played_out = -math.inf
        previous = -math.inf
        for at in arrivals:
            if at > end:
                break
            judged = at >= start
            boundary = False
            while bound < len(bounds) and bounds[bound] <= at:
                boundary = boundary or bounds[bound] > previous
                bound += 1
            while drop < len(drops) and drops[drop] <= at:
                if drops[drop] > previous:
                    played_out = -math.inf  # the player dropped what it held
                drop += 1
            if at >= played_out:
                if judged and previous > -math.inf and at > played_out and not boundary:
                    self.underruns += 1
                    self.underrun_ms += (at - played_out) * 1000
                played_out = at + FRAME
            else:
                if judged:
                    self.buffered.append((played_out - at) * 1000)
                played_out += FRAME
            previous = at


class LoadGen:
    """Sets calls up and keeps their streams going."""

    stream_class: type[CallStream] = CallStream
    ticker_class: type[Ticker] = Ticker

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.args = args
        self.loop = loop
        self.verifier = TwilioVerifier(args.auth_token)
        self.ticker = self.ticker_class(loop, phases=args.phases)
        self.webhook_ms = array("d")
        self.webhook_at = array("d")
        self.started = time.perf_counter()
        self.failures: dict[str, int] = {}
        self.sources = [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(args.sources)]
        """Twilio reaches the daemon from many addresses; so does the generator (all of
        127/8 is loopback), so the daemon's per-address limits see what they would in use."""
        self.http: list[aiohttp.ClientSession] = []
        self.sent_at_mark = 0
        self.churn_webhook_ms = array("d")
        """Webhook round trips of the calls placed during the window (`--churn`)."""
        self.churn_first_audio: list[CallStream] = []
        self.hung_up = 0
        self._churn: asyncio.Task[None] | None = None

    refused = 0
    """Calls the daemon answered with `<Reject/>` (its loop overloaded: max_loop_load)."""

    def _fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    async def call(self, index: int, *, churned: bool = False) -> None:
        source = index % len(self.sources)
        http = self.http[source]
        sid = "CA" + secrets.token_hex(16)
        params = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": "ringing",
            "Called": self.args.to,
            "Caller": CALLER,
            "Direction": "inbound",
            "From": CALLER,
            "To": self.args.to,
        }
        url = self.args.webhook
        headers = {
            "X-Twilio-Signature": self.verifier.compute_signature(url, params.items()),
            "Content-Type": "application/x-www-form-urlencoded",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        sent = time.perf_counter()
        try:
            async with http.post(url, data=urlencode(params), headers=headers) as response:
                twiml = await response.text()
                status = response.status
        except (aiohttp.ClientError, OSError):
            self._fail("webhook unreachable")
            return
        if churned:
            self.churn_webhook_ms.append((time.perf_counter() - sent) * 1000)
        else:
            self.webhook_ms.append((time.perf_counter() - sent) * 1000)
            self.webhook_at.append(sent - self.started)
        if status != 200:
            self._fail(f"webhook HTTP {status}")
            return
        if "<Reject" in twiml:  # refused (max_loop_load): no stream, and not a failure
            self.refused += 1
            return
        found = STREAM_URL.search(twiml)
        if found is None:
            self._fail("no <Stream> in the TwiML")
            return
        stream_url = found.group(1).replace("&amp;", "&")
        parameters = dict(PARAMETER.findall(twiml))
        await self.stream(index, sid, stream_url, parameters, self.sources[source], churned)

    async def stream(
        self,
        index: int,
        sid: str,
        url: str,
        parameters: dict[str, str],
        source: str,
        churned: bool = False,
    ) -> None:
        parts = urlsplit(url)
        request = upgrade_request(url, self.verifier.compute_signature(url))
        stream = self.stream_class(
            index,
            parameters.get("callId", ""),
            sid,
            parameters.get("token", ""),
            request,
            self.loop,
        )
        try:
            await self.loop.create_connection(
                lambda: stream,
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                local_addr=(source, 0),
            )
            await asyncio.wait_for(stream.upgraded, 30)
        except (OSError, ConnectionError, TimeoutError):
            self._fail("stream upgrade failed")
            return
        stream.start()
        self.ticker.streams.append(stream)
        if churned:
            self.churn_first_audio.append(stream)

    async def ramp(self) -> float:
        self.http = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, local_addr=(source, 0)))
            for source in self.sources
        ]
        started = self.loop.time()
        tasks = []
        for index in range(self.args.n):
            due = started + index / self.args.rate
            delay = due - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.call(index)))
        await asyncio.gather(*tasks)
        return self.loop.time() - started

    def mark(self) -> None:
        """The measured window starts: the ramp's own lateness is not the window's."""
        self.ticker.lateness = array("d")
        if self.args.churn > 0:
            self._churn = self.loop.create_task(self.churn())
        self.ticker.skipped = 0
        self.sent_at_mark = self.ticker.sent

    async def churn(self) -> None:
        """Hang up the oldest call and place a new one, `--churn` times a second."""
        interval = 1.0 / self.args.churn
        oldest = 0
        index = self.args.n
        due = self.loop.time()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - self.loop.time()))
            streams = self.ticker.streams
            while oldest < len(streams) and streams[oldest].hung_up:
                oldest += 1
            if oldest < len(streams):
                streams[oldest].hang_up()
                self.hung_up += 1
            task = self.loop.create_task(self.call(index, churned=True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1

    def report(self, since: float, until: float) -> dict[str, Any]:
        if self._churn is not None:
            self._churn.cancel()
        churned = self.churn_first_audio
        churn_audio = [(s.arrivals[0] - s.started_at) * 1000 for s in churned if s.arrivals]
        # Health and jitter: each call up when the window began, over its part of the window
        # (to its end, or the call's hang-up). Calls placed during the window are judged by
        # their webhook and first audio only: their greeting ends within it, and the pause
        # until a reply is the conversation's (a turn, a model, a synthesis), not the media's.
        placed = {id(s) for s in churned}
        ramped = [s for s in self.ticker.streams if id(s) not in placed]
        jitter: list[float] = []
        late: list[float] = []  # when each frame off its 20 ms by more than 10 ms arrived
        worst_gap = 0.0
        healthy = judged = 0
        first_audio = [(s.arrivals[0] - s.started_at) * 1000 for s in ramped if s.arrivals]
        for stream in self.ticker.streams:
            arrivals = stream.arrivals
            if stream.started_at > since:
                continue
            start = since
            end = min(until, stream.hung_up_at) if stream.hung_up else until
            if end - start < MIN_SPAN:
                continue
            judged += 1
            frames = 0
            previous = start
            gap = 0.0
            for at in arrivals:
                if at < start or at > end:
                    continue
                interval = at - previous
                if frames:
                    off = abs(interval - FRAME) * 1000
                    jitter.append(off)
                    if off > JITTER_TARGET_MS:
                        late.append(round(at, 4))
                gap = max(gap, interval)
                previous = at
                frames += 1
            gap = max(gap, end - previous)
            worst_gap = max(worst_gap, gap)
            cut = stream.closed.done() and not stream.hung_up
            if frames >= HEALTHY_SHARE * (end - start) / FRAME and gap <= HEALTHY_GAP and not cut:
                healthy += 1
        playout = Playout()
        for stream in ramped:
            if stream.started_at <= since:
                end = min(until, stream.hung_up_at) if stream.hung_up else until
                playout.add(stream.arrivals, stream.controls, stream.clears, since, end)
        frames_out = sum(
            1 for st in self.ticker.streams for at in st.arrivals if since <= at <= until
        )
        lateness = list(self.ticker.lateness)
        late_p99 = percentile(lateness, 99)
        return {
            "streams": judged,
            "healthy": healthy,
            "silent": sum(1 for s in ramped if not s.arrivals),
            "closed": sum(1 for s in ramped if s.closed.done() and not s.hung_up),
            "jitter_p50_ms": percentile(jitter, 50),
            "jitter_p99_ms": percentile(jitter, 99),
            "worst_gap_ms": worst_gap * 1000,
            "frames_judged": len(jitter),
            "buffered_p1_ms": percentile(playout.buffered, 1),
            "buffered_p50_ms": percentile(playout.buffered, 50),
            "underruns": playout.underruns,
            "underrun_ms": playout.underrun_ms,
            "clears": sum(len(s.clears or ()) for s in ramped),
            "late_frames_at": sorted(late),
            "first_audio_p50_ms": percentile(first_audio, 50),
            "first_audio_p99_ms": percentile(first_audio, 99),
            "first_audio_max_ms": max(first_audio, default=math.nan),
            "webhook_p50_ms": percentile(self.webhook_ms, 50),
            "webhook_p99_ms": percentile(self.webhook_ms, 99),
            "webhook_max_ms": max(self.webhook_ms, default=math.nan),
            "webhook_worst": sorted(
                (
                    (round(ms, 1), round(at, 2))
                    for ms, at in zip(self.webhook_ms, self.webhook_at, strict=True)
                ),
                reverse=True,
            )[:8],
            "failures": self.failures,
            "refused": self.refused,
            "marks_echoed": sum(s.marks for s in self.ticker.streams),
            "inbound_sent": self.ticker.sent,
            "frames_out_window": frames_out,
            "frames_in_window": self.ticker.sent - self.sent_at_mark,
            "ticks_skipped": self.ticker.skipped,
            "tick_late_p99_ms": late_p99 * 1000,
            "lagging": self.ticker.skipped > 0 or late_p99 > LAG_LIMIT,
            "window_s": until - since,
            "churn": {
                "hung_up": self.hung_up,
                "placed": len(self.churn_webhook_ms),
                "streams": len(churned),
                "silent": sum(1 for s in churned if not s.arrivals),
                "webhook_p99_ms": percentile(self.churn_webhook_ms, 99),
                "first_audio_p99_ms": percentile(churn_audio, 99),
            },
        }


async def drive(gen: LoadGen) -> None:
    """Ramp, say `RAMPED`, then answer the driver's `mark` and `report`; exit after the report."""
    loop = gen.loop
    # Its own collections would show up as the daemon's latency; the generator makes few
    # cycles, so it collects only between phases.
    gc.collect()
    gc.freeze()
    gc.disable()
    ramp = await gen.ramp()
    gc.collect()
    gc.freeze()
    print(
        "RAMPED "
        + json.dumps(
            {"streams": len(gen.ticker.streams), "ramp_s": ramp, "failures": gen.failures}
        ),
        flush=True,
    )
    since = math.inf
    async for line in commands():
        if line == "mark":
            since = loop.time()
            gen.mark()
            print("MARKED", flush=True)
        elif line == "report":
            print("REPORT " + json.dumps(gen.report(since, loop.time())), flush=True)
            break
    os._exit(0)


def arguments(doc: str, rate: float) -> argparse.Namespace:
    """The command line of a load generator (`rate`: the default calls per second)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--webhook", required=True, help="the daemon's webhook URL")
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--to", default="+15550100000")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--rate", type=float, default=rate, help="new calls per second")
    parser.add_argument(
        "--sources", type=int, default=64, help="source addresses the calls come from (127.0.x.y)"
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="from `mark` on, calls a second hung up and replaced by new ones (0: none)",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="points per 20 ms the streams' caller frames are spread over (1: all at once)",
    )
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    await drive(LoadGen(args, asyncio.get_running_loop()))


def main() -> None:
    run(_main, arguments(__doc__ or "", 50.0))


if __name__ == "__main__":
    main()
