"""Where the daemon's time per media message goes, from a py-spy profile of bench_daemon_streams.

Reads `py-spy record --format raw` output (one collapsed stack and its sample count per line)
and puts every sample in the first category below whose marker appears anywhere in its stack
(the order puts specific work before the code that calls it). With `--us-per-msg` (the bench's
"us/media msg": daemon CPU time / media messages handled) each share is also given in
microseconds per media message. py-spy sees Python frames only: time in the kernel (socket
writes, epoll) shows as the Python call that made it, and the loop's own C code as "event loop".

Run: python bench/pyspy_breakdown.py /tmp/prof-openai-400.txt --us-per-msg 23.1
"""

from __future__ import annotations

import argparse
from collections import Counter

IDLE_WORKER = "_worker (concurrent/futures/thread.py:81)"
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("TTS: resample 24->8 kHz (soxr)", ("media/resample.py",)),
    ("TTS: G.711 encode", ("media/codecs.py",)),
    (
        "TTS: framing + frame prep (base64, JSON, ws header)",
        ("media/framing.py", "Playback.add_frames"),
    ),
    ("STT: forward caller audio (buffer, writer task, ws send)", ("stt/openai_realtime.py",)),
    (
        "inbound: session.feed (find payload, base64 decode)",
        ("MediaSession.feed", "MediaSession._audio", "media/protocols.py", "media/direct.py"),
    ),
    (
        "outbound: pacer tick + pump + transport.write",
        ("media/pacer.py", "media/playback.py", "media/wire.py"),
    ),
    ("TTS: HTTP body read (aiohttp)", ("speech/tts/",)),
    (
        "inbound: websocket read + frame parse (aiohttp)",
        ("web_ws.py", "aiohttp/_websocket", "MediaServer._run", "RequestHandler.data_received"),
    ),
    ("engine + store + auto-responder", ("daemon/engine/", "daemon/store/", "speech/responder.py")),
    (
        "webhooks + provider + stream admission",
        ("daemon/webhooks/", "daemon/providers/", "media/server.py", "media/hub.py"),
    ),
    ("aiohttp client/server other", ("aiohttp/",)),
    ("event loop + asyncio", ("asyncio/", "uvloop")),
]


def category(stack: str) -> str:
    """The first category whose marker appears anywhere in `stack` ("other" if none)."""
    for name, markers in CATEGORIES:
        if any(marker in stack for marker in markers):
            return name
    return "other"


def breakdown(path: str) -> tuple[Counter[str], int]:
    """Samples per category, and the total."""
    counts: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, number = line.rstrip("\n").rpartition(" ")
            if not number.isdigit():
                continue
            samples = int(number)
            if stack.endswith(IDLE_WORKER):
                continue  # an executor thread waiting for work: py-spy cannot tell it is idle
            total += samples
            counts[category(stack)] += samples
    return counts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="py-spy raw output")
    parser.add_argument("--us-per-msg", type=float, help="the bench's us/media msg")
    args = parser.parse_args()
    counts, total = breakdown(args.profile)
    print(f"{total} samples")
    for name, samples in counts.most_common():
        share = samples / total if total else 0.0
        micro = f"{share * args.us_per_msg:6.2f} us" if args.us_per_msg else ""
        print(f"{share * 100:5.1f} % {micro}  {name}")


if __name__ == "__main__":
    main()
