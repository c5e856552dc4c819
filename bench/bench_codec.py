"""Per-frame cost of the media path's steps: G.711 encode/decode, 24k->8k resampling, and a
Twilio message's framing (the inbound fast path, an outbound frame's wire bytes, the pump).

The media path budget (SPEC section 12) is 500 streams x 50 frames/s x 2 directions on two
cores, about 50,000 frames/s: each per-frame step must stay in the low microseconds.

Run: python bench/bench_codec.py [--number N]
Prints one summary line; each figure is the best of 5 runs of N calls, per 20 ms frame.
"""

from __future__ import annotations

import argparse
import binascii
import json
import math
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.media import codecs
from daemon.media.framing import Framer
from daemon.media.pacer import Pacer
from daemon.media.playback import Playback, Segment
from daemon.media.protocols import TwilioFraming
from daemon.media.resample import StreamResampler
from daemon.media.wire import AudioFrames, FrameWriter


def _sine(rate: int, samples: int) -> bytes:
    t = np.arange(samples) / rate
    return (np.sin(2 * math.pi * 440 * t) * 16000).astype("<i2").tobytes()


def _best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


class _Sink:
    """A transport that takes every write (the pump's own cost, no system call)."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _pump_us(ulaw: bytes, framing: TwilioFraming, rounds: int) -> float:
    """Per frame: queue 150 frames, then pump once per 20 ms of a fake clock until empty."""
    clock = [0.0]
    pacer = Pacer(clock=lambda: clock[0], call_at=lambda when, callback: _NoTimer())
    playback = Playback(framing, FrameWriter(_Sink()).write, pacer, lambda segment: None)
    frames = [ulaw] * 150
    best = float("inf")
    for _ in range(5):
        total = 0.0
        for _ in range(rounds):
            segment = Segment("x")
            playback.begin(segment)
            playback.add_frames(segment, frames)
            start = timeit.default_timer()
            while playback.queued:
                clock[0] += 0.02
                playback.pump(clock[0])
            total += timeit.default_timer() - start
            playback.clear(clock[0], send=False)
        best = min(best, total / (rounds * len(frames)) * 1e6)
    return best


class _NoTimer:
    def cancel(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    number = parser.parse_args().number

    pcm8k = _sine(8000, 160)  # one 20 ms frame at 8 kHz
    ulaw = codecs.pcm16_to_ulaw(pcm8k)
    alaw = codecs.pcm16_to_alaw(pcm8k)
    pcm24k = _sine(24000, 480)  # one 20 ms chunk at 24 kHz (OpenAI TTS output)
    resampler = StreamResampler(24000, 8000)
    framer = Framer()
    tts_chunk = ulaw * 5  # a typical network chunk: five frames
    twilio = TwilioFraming()
    twilio.decode(json.dumps({"event": "start", "start": {"streamSid": "MZ" + "0" * 32}}))
    inbound = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "42",
            "streamSid": "MZ" + "0" * 32,
            "media": {
                "track": "inbound",
                "chunk": "41",
                "timestamp": "820",
                "payload": binascii.b2a_base64(ulaw, newline=False).decode(),
            },
        },
        separators=(",", ":"),  # as Twilio sends it
    )
    fast = twilio.media_payload
    assert fast(inbound), "the message must take the fast path"
    builder, ten = AudioFrames(), [ulaw] * 10

    figures = {
        "ulaw_enc": _best_us(lambda: codecs.pcm16_to_ulaw(pcm8k), number),
        "ulaw_dec": _best_us(lambda: codecs.ulaw_to_pcm16(ulaw), number),
        "alaw_enc": _best_us(lambda: codecs.pcm16_to_alaw(pcm8k), number),
        "alaw_dec": _best_us(lambda: codecs.alaw_to_pcm16(alaw), number),
        "ulaw->alaw": _best_us(lambda: codecs.ulaw_to_alaw(ulaw), number),
        "resample_24k->8k": _best_us(lambda: resampler.feed(pcm24k), number),
        "tts_24k->ulaw": _best_us(lambda: codecs.pcm16_to_ulaw(resampler.feed(pcm24k)), number),
        "framer": _best_us(lambda: framer.push(tts_chunk), number) / 5,
        "inbound_fast_path": _best_us(lambda: binascii.a2b_base64(fast(inbound) or ""), number),
        "frame_wire_bytes": _best_us(lambda: list(builder.build(twilio, ten)), number) / 10,
        "pump": _pump_us(ulaw, twilio, max(1, number // 1000)),
    }
    summary = "  ".join(f"{name}={us:.2f}us" for name, us in figures.items())
    print(f"per 20 ms frame (160 samples @ 8 kHz), best of 5 x {number}: {summary}")


if __name__ == "__main__":
    main()
