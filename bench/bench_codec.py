"""Per-frame cost of the media-path codecs: G.711 encode/decode and 24k->8k resampling.

The media path budget (SPEC section 12) is 500 streams x 50 frames/s x 2 directions on two
cores, about 50,000 frames/s: each per-frame step must stay in the low microseconds.

Run: python bench/bench_codec.py [--number N]
Prints one summary line; each figure is the best of 5 runs of N calls, per 20 ms frame.
"""

from __future__ import annotations

import argparse
import math
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.media import codecs
from daemon.media.framing import Framer
from daemon.media.resample import StreamResampler


def _sine(rate: int, samples: int) -> bytes:
    t = np.arange(samples) / rate
    return (np.sin(2 * math.pi * 440 * t) * 16000).astype("<i2").tobytes()


def _best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


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

    figures = {
        "ulaw_enc": _best_us(lambda: codecs.pcm16_to_ulaw(pcm8k), number),
        "ulaw_dec": _best_us(lambda: codecs.ulaw_to_pcm16(ulaw), number),
        "alaw_enc": _best_us(lambda: codecs.pcm16_to_alaw(pcm8k), number),
        "alaw_dec": _best_us(lambda: codecs.alaw_to_pcm16(alaw), number),
        "ulaw->alaw": _best_us(lambda: codecs.ulaw_to_alaw(ulaw), number),
        "resample_24k->8k": _best_us(lambda: resampler.feed(pcm24k), number),
        "tts_24k->ulaw": _best_us(lambda: codecs.pcm16_to_ulaw(resampler.feed(pcm24k)), number),
        "framer": _best_us(lambda: framer.push(tts_chunk), number) / 5,
    }
    summary = "  ".join(f"{name}={us:.2f}us" for name, us in figures.items())
    print(f"per 20 ms frame (160 samples @ 8 kHz), best of 5 x {number}: {summary}")


if __name__ == "__main__":
    main()
