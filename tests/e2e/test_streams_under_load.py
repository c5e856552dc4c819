"""Streamed calls under load and vendor failures, end to end (SPEC 11, last paragraph).

The real daemon, the Twilio simulator opening the `<Connect><Stream>` websockets as Twilio does
(signed, caller audio every 20 ms) and FakeOpenAI for TTS and realtime STT, in this process.
Each test bounds its own time: the machine is shared.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.configs import twilio_config
from tests.fakes.openai import API_KEY, FakeOpenAI
from tests.harness import DaemonHarness, call_id_of
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_async as until
from tests.simulators.twilio import SimCall, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

FROM = "+15550100000"
CALLER = "+15550109999"
GREETING = "Hello, Acme clinic."
OLD_POOL = 100
"""aiohttp's default connector cap, which the daemon's vendor session used to have."""
MANY = 120
FRAMES_PER_SENTENCE = 50


def config(
    sim: TwilioSimulator,
    openai: FakeOpenAI,
    *,
    tts_url: str | None = None,
    calls: int = 8,
    extra: str = "",
) -> str:
    """Inbound calls answered with a streamed greeting; TTS and STT at FakeOpenAI."""
    return twilio_config(
        sim,
        openai,
        streaming=True,
        tts_url=tts_url,
        top=f'inbound_policy = "open"\ninbound_greeting = "{GREETING}"\n'
        f"max_concurrent_calls = {calls}\n{extra}",
        serve=f"max_connections_per_ip = {max(64, 2 * calls)}\n",
        stream=f"max_connections = {max(128, calls + 8)}\n"
        f"max_pending_connections = {max(32, calls)}\n"
        f"max_pending_connections_per_ip = {max(4, calls)}\n",
    )


async def test_more_streamed_calls_than_the_old_pool_each_get_stt_and_audio(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """120 concurrent streamed inbound calls (the old shared pool held 100 vendor connections,
    about 50 calls' worth): every call gets its STT socket at the first attempt and its
    greeting's first frame promptly, and all 120 are streaming at the same time."""
    d = await start(make_daemon, config(sim, openai, calls=MANY + 10))
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    calls: list[SimCall] = []
    started = time.monotonic()
    for _ in range(MANY):
        # Twilio spreads calls over time; at most 6 voice webhooks in flight from one address
        # (the webhook server answers 429 past 8 per address).
        await until(lambda: sum(1 for c in calls if not c.documents) < 6, 30, "webhook room")
        calls.append(await sim.inbound(CALLER, FROM, webhook))
    await until(
        lambda: all(c.media and c.media[0].is_open for c in calls), 40, "every stream to open"
    )
    await until(
        lambda: all(len(c.media[0].frames) >= 1 for c in calls), 40, "every greeting's first frame"
    )
    await until(
        lambda: sum(1 for c in openai.connections if c.updates) >= MANY, 40, "every STT socket"
    )
    ramp = time.monotonic() - started

    latencies = sorted(c.media[0].frames[0].at - (c.media[0].opened_at or 0.0) for c in calls)
    p50 = statistics.median(latencies)
    worst = latencies[-1]
    print(
        f"\n{MANY} calls set up in {ramp:.1f}s; stream start -> first frame p50 "
        f"{p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms; STT handshakes {openai.handshakes}"
    )
    assert worst < 5.0, latencies[-10:]  # the old pool: ~16 s late, or never
    # Every call holds its own STT socket at once, each opened at the first attempt.
    assert openai.handshakes == MANY
    assert sum(1 for c in openai.connections if not c.closed) == MANY
    # The greeting is the same for every call: the vendor is asked by the first two, the
    # rest say it from memory (daemon.speech.tts.cache); the STT sockets alone are past the
    # old pool's 100 connections.
    assert [r["input"] for r in openai.tts_requests] == [GREETING] * 2
    assert all(c.media[0].is_open and not c.ended for c in calls)
    # Caller audio reaches STT on every socket.
    await until(
        lambda: all(len(c.audio) >= 160 for c in openai.connections),
        30,
        "caller audio on every STT socket",
    )
    await until(
        lambda: all(len(c.media[0].frames) >= FRAMES_PER_SENTENCE for c in calls),
        40,
        "every greeting in full",
    )
    log = d.log_text()
    assert "could not connect" not in log and "speech synthesis failed" not in log


async def test_stt_down_at_call_start_is_reported_then_recovers(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The STT vendor refuses the first handshakes: the call gets one `call.error` naming the
    failure and a log line, the daemon keeps retrying with backoff, and once the vendor is back
    the caller is heard again (a final transcript lands on the call)."""
    d = await start(make_daemon, config(sim, openai))
    openai.realtime_reject = [503, 503, 503]
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and bool(call.media[0].frames), timeout=10)
    call_id = await call_id_of(d, call.sid)
    await openai.wait_for(lambda: bool(openai.connections and openai.current.updates), timeout=20)
    assert openai.handshakes == 4
    await until(lambda: len(openai.current.audio) >= 160, 10, "caller audio after recovery")
    await openai.transcript_completed("Are you open today?")
    await until(
        lambda: any(
            t["text"] == "Are you open today?" for t in d.call_record(call_id)["transcript"]
        ),
        10,
        "transcript",
    )

    errors = [
        e for e in await asyncio.to_thread(d.call_events, call_id, 100) if e["type"] == "call.error"
    ]
    assert len(errors) == 1, errors
    message = errors[0]["error"]
    assert "OpenAI realtime STT" in message and "HTTP 503" in message
    assert "retrying" in message and openai.realtime_url in message
    assert "STT" in d.log_text() and "HTTP 503" in d.log_text()
    assert API_KEY not in message and API_KEY not in d.log_text()


async def test_stt_drop_then_recovery_hears_the_caller_again(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The STT socket drops mid-call and the vendor refuses a few reconnects: the call is told
    once, then transcripts flow again on the new socket."""
    d = await start(make_daemon, config(sim, openai))
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await openai.wait_for(lambda: bool(openai.connections and openai.current.updates), timeout=10)
    call_id = await call_id_of(d, call.sid)
    openai.realtime_reject = [502, 502]
    await openai.drop()
    await openai.wait_for(
        lambda: len(openai.connections) == 2 and bool(openai.current.updates), timeout=20
    )
    await until(lambda: len(openai.current.audio) >= 160, 10, "caller audio after recovery")
    await openai.transcript_completed("Hello again.")
    await until(
        lambda: any(t["text"] == "Hello again." for t in d.call_record(call_id)["transcript"]),
        10,
        "transcript",
    )
    errors = [
        e for e in await asyncio.to_thread(d.call_events, call_id, 100) if e["type"] == "call.error"
    ]
    assert len(errors) == 1 and "HTTP 502" in errors[0]["error"], errors


async def test_unreachable_tts_fails_the_calls_speech_loudly(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """TTS at an address nobody listens on: the greeting cannot be synthesised, and the call
    gets a `call.error` naming the vendor and URL (and a log line), not silence alone."""
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    d = await start(make_daemon, config(sim, openai, tts_url=dead))
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.media) and call.media[0].is_open, timeout=10)
    call_id = await call_id_of(d, call.sid)

    def error_events() -> list[dict[str, Any]]:
        return [e for e in d.call_events(call_id, 100) if e["type"] == "call.error"]

    errors = await until(lambda: error_events(), 20, "a call.error")
    message = errors[0]["error"]
    print(f"\ncall.error: {message}")
    assert "OpenAI TTS" in message and f"{dead}/audio/speech" in message
    assert "speech synthesis failed" in d.log_text()
    assert call.media[0].frames == []


async def test_a_stream_binding_late_still_hears_its_greeting(
    sim: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Twilio opens the media stream 16 s after the voice webhook (past the 15 s the daemon
    waits before warning): the pending greeting is still spoken on it."""
    d = await start(make_daemon, config(sim, openai))
    sim.stream_media = False  # the test opens the stream itself, late
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    call = await sim.inbound(CALLER, FROM, webhook)
    await sim.wait_for(lambda: bool(call.streams), timeout=10)
    answered = time.monotonic()
    params = {k: v for k, v in call.streams[0].items() if k != "url"}
    await asyncio.sleep(16.0 - (time.monotonic() - answered))
    assert "has not started 15s after" in d.log_text()
    stream = await sim.open_stream(call, params, call.streams[0]["url"])
    await sim.wait_for(lambda: len(stream.frames) >= FRAMES_PER_SENTENCE, timeout=10)
    assert [r["input"] for r in openai.tts_requests] == [GREETING]
    call_id = await call_id_of(d, call.sid)
    bot = [t["text"] for t in d.call_record(call_id)["transcript"] if t["speaker"] == "bot"]
    assert bot == [GREETING]
