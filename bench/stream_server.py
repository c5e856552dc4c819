"""Media-plane server for bench_streams.py: the daemon's real media plane in its own process.

Composes what `python -m daemon` runs for media streams: `install_media` on a real aiohttp app
(provider `twilio`, so the Twilio framing and the `X-Twilio-Signature` check of the upgrade are
on), the real `MediaHub`, `Pacer`, `MediaSession`, `Playback` and `FrameWriter`, uvloop, and
`gc.collect(); gc.freeze()` after start-up as in `daemon/__main__.py`. Faked: the call engine
(every call is a live inbound conversation call), TTS (an endless mu-law stream produced at
once, so every stream talks for the whole run) and STT (takes the decoded audio and drops it).

Why not the whole daemon: the pacer's benchmark hook (`hub.pacer.record()`, per-frame send
times in `session.playback.trace`) is only reachable in process; the engine, store and webhook
server are not on the per-frame path once a stream is bound (bench_turn.py covers that path
with a real daemon).

Driven over stdin/stdout by bench_streams.py, one line each way:
  -> `READY {"port":..,"pid":..,"calls":[[callId, callSid, token], ...]}`
  <- `mark`   : steady state starts now (stats count from here); answers `MARKED <time>`
  <- `report` : answers `REPORT {json}` with the send-interval stats, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import percentile

from daemon.config.model import Config, StreamingConfig, TwilioConfig
from daemon.exposure import Exposure
from daemon.media.codecs import pcm16_to_ulaw
from daemon.media.hub import MediaHub
from daemon.media.server import install_media
from daemon.media.session import MediaSession
from daemon.model.events import CallMode, Direction, ProviderEvent
from daemon.model.record import CallRecord

AUTH_TOKEN = "bench-streams-auth-token"
FRAME = 0.02
SKIP_FRAMES = 5
"""Frames of an utterance that leave together by design (the first one + the 80 ms lead)."""


class FakeEngine:
    """What the hub asks of `CallEngine`: lookups and hang-up; events are dropped."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}
        self.events = 0

    async def apply(self, events: Sequence[ProviderEvent]) -> None:
        self.events += len(events)

    async def get(self, call_id: str) -> CallRecord | None:
        return self.records.get(call_id)

    async def end(self, call_id: str) -> None:
        """Nothing to hang up."""


class FakeDaemon:
    """The attributes of `daemon.app.Daemon` that `install_media` uses."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.web_app = web.Application()
        self.engine = FakeEngine()
        self.extras: dict[str, object] = {}
        self.exposure = Exposure("http://127.0.0.1:1/voice/webhook", None, None)


class EndlessTts:
    """A TTS engine whose every utterance is an endless 440 Hz tone, 1 s per chunk, at once."""

    name = "bench"

    def __init__(self) -> None:
        import array

        samples = array.array(
            "h", (int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(8000))
        )
        self.chunk = pcm16_to_ulaw(samples.tobytes())

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        while True:
            yield self.chunk


class NullStt:
    """An STT session that accepts audio and never hears anything."""

    connected = True
    frames = 0

    async def connect(self) -> None:
        """Nothing to connect."""

    def send_audio(self, ulaw: bytes) -> None:
        NullStt.frames += 1

    async def close(self) -> None:
        """Nothing to close."""


def _config(n: int) -> Config:
    streaming = StreamingConfig(
        enabled=True,
        max_connections=n + 64,
        max_pending_connections=64,
        max_pending_connections_per_ip=64,
    )
    return Config(
        provider="twilio",
        streaming=streaming,
        twilio=TwilioConfig(account_sid="AC" + "0" * 32, auth_token=AUTH_TOKEN),
    )


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


GC_PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}
"""Collector pauses (ms) per generation since the mark: the stalls SPEC 12 warns about."""
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        GC_PAUSES[info["generation"]].append((time.perf_counter() - _gc_started) * 1000)


def _stats(hub: MediaHub, sessions: list[MediaSession], since: float) -> dict[str, Any]:
    """Send-interval jitter (|interval - 20 ms|) and gaps from every stream's trace."""
    jitter: list[float] = []
    gaps: list[float] = []
    frames = 0
    for session in sessions:
        trace = session.playback.trace
        if trace is None:
            continue
        sends = trace[0::2]
        previous = None
        for index, sent in enumerate(sends):
            if index < SKIP_FRAMES or sent < since:
                continue
            frames += 1
            if previous is not None:
                interval = sent - previous
                jitter.append(abs(interval - FRAME) * 1000)
                gaps.append(interval * 1000)
            previous = sent
    late = [x * 1000 for x in (hub.pacer.lateness or ())]
    return {
        "frames": frames,
        "intervals": len(jitter),
        "jitter_p50": percentile(jitter, 50),
        "jitter_p99": percentile(jitter, 99),
        "jitter_max": max(jitter, default=math.nan),
        "max_gap": max(gaps, default=math.nan),
        "gaps_over_60": sum(1 for g in gaps if g > 60),
        "interval_hist": Counter(round(g) for g in gaps).most_common(8),
        "tick_late_p99": percentile(late, 99),
        "tick_late_max": max(late, default=math.nan),
        "ticks": len(late),
        "sessions": hub.sessions,
        "stt_frames": NullStt.frames,
        "rss_kib": _rss_kib(),
        "gc": {gen: [len(p), round(max(p, default=0.0), 1)] for gen, p in GC_PAUSES.items()},
    }


async def _main(n: int, refreeze: bool) -> None:
    daemon = FakeDaemon(_config(n))
    hub = install_media(cast(Any, daemon))
    assert hub is not None
    runner = web.AppRunner(daemon.web_app, access_log=None, handle_signals=False)
    await runner.setup()  # on_startup: the hub's (unconfigured) TTS/STT are replaced below
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    daemon.exposure = Exposure(
        f"http://127.0.0.1:{port}/voice/webhook", None, f"ws://127.0.0.1:{port}/voice/stream"
    )
    hub.tts = EndlessTts()
    hub.stt_factory = lambda listener: NullStt()  # type: ignore[assignment,return-value]
    hub.pacer.record()
    sessions: list[MediaSession] = []
    bind = hub.bind

    def bind_and_talk(session: MediaSession) -> None:
        bind(session)
        sessions.append(session)
        hub.spawn(session.speak("Talking for the whole benchmark."), "bench-speak")

    hub.bind = bind_and_talk  # type: ignore[method-assign]
    calls = []
    for i in range(n):
        call_id, sid = f"bench-{i:05d}", f"CA{i:032x}"
        daemon.engine.records[call_id] = CallRecord(
            call_id=call_id,
            provider="twilio",
            direction=Direction.INBOUND,
            mode=CallMode.CONVERSATION,
            from_number="+15550001111",
            to_number="+15550002222",
            provider_call_id=sid,
        )
        calls.append([call_id, sid, hub.issue_token(call_id, sid)])
    gc.collect()
    gc.freeze()
    gc.callbacks.append(_gc_timer)
    loop = asyncio.get_running_loop()
    print("READY " + json.dumps({"port": port, "pid": os.getpid(), "calls": calls}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    since = math.inf
    while line := (await reader.readline()).decode().strip():
        if line == "mark":
            if refreeze:  # experiment: also keep the per-stream objects out of collections
                gc.collect()
                gc.freeze()
            since = loop.time()
            lateness = hub.pacer.lateness
            if lateness is not None:
                del lateness[:]
            for pauses in GC_PAUSES.values():
                pauses.clear()
            print(f"MARKED {since}", flush=True)
        elif line == "report":
            stats = _stats(hub, sessions, since)
            print("REPORT " + json.dumps(stats), flush=True)
            break
    os._exit(0)  # no orderly shutdown: the client goes away with us


def main() -> None:
    """Parse arguments and serve until `report`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="calls to issue stream tokens for")
    parser.add_argument(
        "--refreeze",
        action="store_true",
        help="gc.collect() + gc.freeze() again once every stream is bound",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(args.n, args.refreeze))
    else:
        uvloop.run(_main(args.n, args.refreeze))


if __name__ == "__main__":
    main()
