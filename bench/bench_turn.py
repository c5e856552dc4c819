"""Final transcript -> first reply audio frame, vendors faked at 0 ms (SPEC 12: p95 <= 30 ms).

The whole path through public configuration: a real daemon (`python -m daemon`) with
`provider = "twilio"` on the local Twilio simulator (tests/simulators/twilio.py), `[streaming]`
on, `inbound_policy = "open"`, `response_model` with `[agent] base_url`, and OpenAI TTS,
chat and realtime STT all on the local OpenAI fake (tests/fakes/openai.py) with no added
delay. The simulator places an inbound call; the daemon answers with `<Connect><Stream>` and
its `<Parameter name="token">`; the simulator then runs Twilio's side of that stream itself
(signed upgrade, connected/start with the token, 20 ms caller frames of silence in, outbound
frames time-stamped on arrival and played out in real time, marks echoed once played), and
this program waits for the greeting to finish.

Each turn: the fake realtime STT sends
`conversation.item.input_audio_transcription.completed` (clock starts just before the send),
the daemon stores the transcript, the auto-responder calls the fake chat API, the reply is
spoken through the call's media session (fake TTS, 24 kHz PCM resampled to mu-law), and the
clock stops when the first outbound `media` message of the reply arrives at the simulator's
stream websocket. The program then waits until the simulator echoed the reply's mark (played
out) before the next turn. The simulator, the fakes and the stream client share this
process's event loop, so their own cost (tens of microseconds per hop) is inside the figure.

Also reported: when the chat request and the TTS request reached the fakes, which splits the
latency into transcript -> chat request (engine: apply, store write, responder start),
chat request -> TTS request (chat answer, speak), TTS request -> first frame (synthesis,
resample, framing, pacer).

Run: python bench/bench_turn.py [--turns 200]
Prints one summary line: p50/p95/p99/max in ms and the medians of the three parts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import longer_than, percentile

from tests.fakes._server import sine_pcm16
from tests.fakes.openai import API_KEY, TTS_RATE, FakeOpenAI
from tests.harness import DaemonHarness, short_home
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

FROM = "+15550100000"
CALLER = "+15550109999"


class TimedOpenAI(FakeOpenAI):
    """The OpenAI fake, also noting when each chat and speech request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.chat_at: list[float] = []
        self.tts_at: list[float] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_at.append(time.monotonic())
        return await super()._chat(request)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        self.tts_at.append(time.monotonic())
        return await super()._speech(request)


def _config(sim: TwilioSimulator, fake: FakeOpenAI) -> str:
    return f"""
provider = "twilio"
from_number = "{FROM}"
inbound_policy = "open"
inbound_greeting = "Hello."
response_model = "openai/gpt-4o-mini"
response_timeout_ms = 5000
max_duration_seconds = 3600

[serve]
port = 0

[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base_url = "{sim.api_base_url}"

[streaming]
enabled = true
api_key = "{API_KEY}"
stt_url = "{fake.realtime_url}"

[tts]
provider = "openai"

[tts.openai]
api_key = "{API_KEY}"
base_url = "{fake.base_url}"

[agent]
base_url = "{fake.base_url}"
api_key = "{API_KEY}"
"""


async def _run(turns: int) -> dict[str, Any]:
    async with TwilioSimulator() as sim, TimedOpenAI() as fake:
        fake.tts_pcm = sine_pcm16(440.0, 0.2, TTS_RATE)  # 10 frames: the lead sends 5 at once
        fake.tts_chunks = 2
        fake.tts_chunk_delay = 0.0
        fake.chat_reply = "Sure."
        daemon = DaemonHarness(short_home(), _config(sim, fake))
        daemon.env.pop("OPENAI_API_KEY", None)
        latencies: list[float] = []
        parts: list[tuple[float, float, float]] = []
        try:
            await asyncio.to_thread(daemon.start)
            status = await asyncio.to_thread(daemon.rpc, "daemon.status")
            call = await sim.inbound(CALLER, FROM, status["webhookUrl"])
            await sim.wait_for(lambda: bool(call.media) and call.media[0].is_open, timeout=10)
            stream = call.media[0]
            await fake.wait_for(lambda: bool(fake.connections), timeout=10)
            await sim.wait_for(lambda: bool(stream.echoed), timeout=15)  # greeting played
            await asyncio.sleep(0.2)
            for turn in range(turns):
                frames, echoed = len(stream.frames), len(stream.echoed)
                chats, speeches = len(fake.chat_at), len(fake.tts_at)
                started = time.monotonic()
                await fake.transcript_completed(f"Question number {turn}?", item_id=f"item_{turn}")
                await sim.wait_for(longer_than(stream.frames, frames), timeout=10)
                first = stream.frames[frames].at
                latencies.append((first - started) * 1000)
                if len(fake.chat_at) > chats and len(fake.tts_at) > speeches:
                    chat, tts = fake.chat_at[chats], fake.tts_at[speeches]
                    parts.append(
                        ((chat - started) * 1000, (tts - chat) * 1000, (first - tts) * 1000)
                    )
                # the reply played out and its mark came back: the utterance is settled
                await sim.wait_for(longer_than(stream.echoed, echoed), timeout=10)
                await asyncio.sleep(0.02)
        except BaseException:
            print(daemon.log_text()[-6000:], file=sys.stderr)
            raise
        finally:
            log = daemon.log_text()
            await asyncio.to_thread(daemon.cleanup)
    errors = sum(1 for line in log.splitlines() if " ERROR " in line or "Traceback" in line)
    return {"latencies": latencies, "parts": parts, "errors": errors}


def main() -> None:
    """Parse arguments, run the turns, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", "--n", type=int, default=200, help="caller turns")
    args = parser.parse_args()
    result = asyncio.run(_run(args.turns))
    lat = result["latencies"]
    parts = result["parts"]
    split = " ".join(
        f"{name}={percentile([p[i] for p in parts], 50):.1f}ms"
        for i, name in enumerate(
            ("transcript->chat_req", "chat_req->tts_req", "tts_req->first_frame")
        )
    )
    print(
        f"turn transcript->first_reply_frame p50={percentile(lat, 50):.1f}ms "
        f"p95={percentile(lat, 95):.1f}ms p99={percentile(lat, 99):.1f}ms "
        f"max={max(lat):.1f}ms | medians {split} | n={len(lat)} "
        f"daemon_log_errors={result['errors']} target_p95<=30ms"
    )


if __name__ == "__main__":
    main()
