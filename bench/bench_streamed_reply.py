"""Streamed auto-responder replies (SPEC 11): caller's final transcript -> first reply audio
frame when the model streams its answer (first sentence after 300 ms, the rest 2 s later).

The setup of bench_turn.py (whose config and timed fake this reuses): a real daemon
(`python -m daemon`) with the Twilio provider on the local simulator, `[streaming]` on, an
inbound call answered with `<Connect><Stream>`, and OpenAI TTS, chat and realtime STT on the
local OpenAI fake, here in this process (the daemon is its own process). The chat fake answers
`stream: true` with server-sent events: "Sure, let me check that for you. " 300 ms after the
request, "The clinic opens at nine tomorrow morning and closes at five." 2 s after that.

Each turn: the STT fake sends the caller's final transcript (the clock starts), the engine
asks the model, the first sentence goes to TTS as soon as it has arrived, and the clock stops
at the first outbound `media` frame of the reply at the simulator's stream. Also measured: when
the model finished its answer (its last byte written), and the toolkit's own part of the first
frame (first frame - chat request arrival - 300 ms). The caller hears the first sentence
before the model has finished (SPEC 11) when first frame < model finished, on every turn.
"Last word" to first frame on a real call adds the vendor STT's end-of-turn detection
(`streaming.silence_duration_ms`, 800 ms by default) and its transcription time.

Run: python bench/bench_streamed_reply.py [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import uptime
from _support import longer_than, percentile
from bench_turn import CALLER, FROM, TimedOpenAI, _config

from tests.fakes._server import sine_pcm16
from tests.fakes.openai import TTS_RATE
from tests.harness import DaemonHarness, short_home
from tests.simulators.twilio import TwilioSimulator

FIRST = "Sure, let me check that for you. "
REST = "The clinic opens at nine tomorrow morning and closes at five."


async def _run(turns: int) -> dict[str, Any]:
    async with TwilioSimulator() as sim, TimedOpenAI() as fake:
        fake.tts_pcm = sine_pcm16(440.0, 0.2, TTS_RATE)
        fake.tts_chunks = 2
        fake.tts_chunk_delay = 0.0
        fake.chat_stream = [(0.3, FIRST), (2.0, REST)]
        daemon = DaemonHarness(short_home(), _config(sim, fake))
        daemon.env.pop("OPENAI_API_KEY", None)
        first: list[float] = []
        done: list[float] = []
        own: list[float] = []
        try:
            await asyncio.to_thread(daemon.start)
            status = await asyncio.to_thread(daemon.rpc, "daemon.status")
            call = await sim.inbound(CALLER, FROM, status["webhookUrl"])
            await sim.wait_for(lambda: bool(call.media) and call.media[0].is_open, timeout=10)
            stream = call.media[0]
            await fake.wait_for(lambda: bool(fake.connections), timeout=10)
            await sim.wait_for(lambda: bool(stream.echoed), timeout=15)  # greeting played
            for turn in range(turns):
                frames, echoed = len(stream.frames), len(stream.echoed)
                chats, finished = len(fake.chat_at), len(fake.chat_finished)
                started = time.monotonic()
                await fake.transcript_completed(
                    f"When do you open, question {turn}?", item_id=f"item_{turn}"
                )
                await sim.wait_for(longer_than(stream.frames, frames), timeout=10)
                at = stream.frames[frames].at
                first.append((at - started) * 1000)
                own.append((at - fake.chat_at[chats] - 0.3) * 1000)
                await fake.wait_for(longer_than(fake.chat_finished, finished), timeout=10)
                done.append((fake.chat_finished[finished] - started) * 1000)
                # both sentences played and their marks came back: the reply is settled
                await sim.wait_for(longer_than(stream.echoed, echoed + 1), timeout=10)
        except BaseException:
            print(daemon.log_text()[-6000:], file=sys.stderr)
            raise
        finally:
            log = daemon.log_text()
            await asyncio.to_thread(daemon.cleanup)
    errors = sum(1 for line in log.splitlines() if " ERROR " in line or "Traceback" in line)
    return {"first": first, "done": done, "own": own, "errors": errors}


def main() -> None:
    """Parse arguments, run the turns, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="caller turns")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {uptime()} (before)", flush=True)
    r = asyncio.run(_run(args.turns))
    first, done, own = r["first"], r["done"], r["own"]
    before = sum(1 for f, d in zip(first, done, strict=True) if f < d)
    print(
        f"streamed reply transcript->first_reply_frame p50={percentile(first, 50):.0f}ms "
        f"p95={percentile(first, 95):.0f}ms max={max(first):.0f}ms | model finished "
        f"p50={percentile(done, 50):.0f}ms | toolkit part (first frame - first sentence "
        f"sent) p50={percentile(own, 50):.1f}ms p95={percentile(own, 95):.1f}ms | "
        f"first sentence heard before the model finished: {before}/{len(first)} | "
        f"daemon_log_errors={r['errors']} | {uptime()} (after)"
    )


if __name__ == "__main__":
    main()
