"""Realtime mode on Telnyx and Plivo streams (SPEC 15): each provider's stream is set up as
PCMU 8 kHz, the model's audio reaches the caller byte for byte, the caller's reaches the model,
and barge-in clears the provider's buffer and truncates the model's item. Real daemon,
provider simulators, FakeRealtime."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from tests.fakes.openai_realtime import API_KEY as REALTIME_KEY
from tests.fakes.openai_realtime import FakeRealtime, speech_audio
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.simulators import plivo, telnyx

pytestmark = pytest.mark.e2e

TO = "+15550001234"
FROM = "+15550100000"

REALTIME = """
[streaming]
enabled = true

[realtime]
enabled = true
base_url = "{url}"
api_key = "{key}"
"""


async def _barge_in(
    model: FakeRealtime, played: Callable[[], int], cleared: Callable[[], bool]
) -> None:
    """A long model line, the caller talks over it: the provider is told to clear and the item
    is truncated."""
    item_id = await model.respond("A long answer that goes on and on.", frames=150)
    await poll(lambda: played() > 10, "the long line to start playing")
    await model.speech_started()
    await model.wait_for(lambda: bool(model.current.of("conversation.item.truncate")), timeout=10)
    (truncate,) = model.current.of("conversation.item.truncate")
    assert truncate["item_id"] == item_id and 0 < truncate["audio_end_ms"] < 3000
    await poll(cleared, "the provider to be told to clear")


async def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a condition of a simulator's recorded stream."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_telnyx_realtime_stream_is_pcmu_both_ways(
    model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The dial asks Telnyx for a bidirectional RTP stream in PCMU at 8 kHz; the opening line
    is the model's audio, unchanged; caller audio reaches the model unchanged; barge-in sends
    `clear` and a truncate."""
    async with telnyx.TelnyxSimulator() as sim:
        d = await start(
            make_daemon,
            f"""
provider = "telnyx"
from_number = "{FROM}"
[serve]
port = 0
[telnyx]
api_key = "{telnyx.API_KEY}"
connection_id = "{telnyx.CONNECTION_ID}"
public_key = "{sim.public_key}"
api_base_url = "{sim.api_base_url}"
"""
            + REALTIME.format(url=model.url, key=REALTIME_KEY),
        )
        call_id = (
            await rpc(
                d,
                "voicecall.initiate",
                {"message": "Hello from Acme.", "to": TO, "mode": "conversation"},
            )
        )["callId"]
        await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().streams), timeout=10)
        dial = sim.commands("dial")[0].body
        assert dial["stream_bidirectional_mode"] == "rtp"
        assert dial["stream_codec"] == dial["stream_bidirectional_codec"] == "PCMU"
        assert dial["stream_bidirectional_sampling_rate"] == 8000
        call = sim.only_call()
        stream = call.streams[0]
        await sim.wait_for(lambda: len(stream.marks()) >= 1, timeout=10)
        assert b"".join(stream.audio()) == speech_audio(model.reply_frames)
        assert (
            "Hello from Acme." in model.current.of("response.create")[0]["response"]["instructions"]
        )
        assert model.current.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        await sim.send_audio(call, bytes(range(1, 161)) * 4)
        await model.wait_for(
            lambda: bytes(range(1, 161)) * 4 in bytes(model.current.audio), timeout=10
        )
        await _barge_in(
            model,
            lambda: len(stream.audio()) - model.reply_frames,
            lambda: any(kind == "clear" for kind, _ in stream.events),
        )
        await rpc(d, "voicecall.end", {"callId": call_id})


async def test_plivo_realtime_stream_is_pcmu_both_ways(
    model: FakeRealtime, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Plivo's `<Stream>` is bidirectional audio/x-mulaw at 8000 Hz; the model's audio goes out
    as playAudio unchanged; caller audio reaches the model; barge-in sends clearAudio and a
    truncate."""
    async with plivo.PlivoSimulator() as sim:
        d = await start(
            make_daemon,
            f"""
provider = "plivo"
from_number = "{FROM}"
[serve]
port = 0
[plivo]
auth_id = "{plivo.AUTH_ID}"
auth_token = "{plivo.AUTH_TOKEN}"
api_base_url = "{sim.api_base_url}"
"""
            + REALTIME.format(url=model.url, key=REALTIME_KEY),
        )
        call_id = (
            await rpc(
                d,
                "voicecall.initiate",
                {"message": "Hello from Acme.", "to": TO, "mode": "conversation"},
            )
        )["callId"]
        await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().streams), timeout=10)
        call = sim.only_call()
        element = ET.fromstring(call.documents[0])[0]
        assert element.tag == "Stream" and element.get("bidirectional") == "true"
        assert element.get("contentType") == "audio/x-mulaw;rate=8000"
        stream = call.streams[0]
        await sim.wait_for(lambda: len(stream.checkpoints()) >= 1, timeout=10)
        assert b"".join(stream.audio()) == speech_audio(model.reply_frames)
        await sim.send_audio(call, bytes(range(1, 161)) * 4)
        await model.wait_for(
            lambda: bytes(range(1, 161)) * 4 in bytes(model.current.audio), timeout=10
        )
        await _barge_in(
            model, lambda: len(stream.audio()) - model.reply_frames, lambda: stream.cleared > 0
        )
        await rpc(d, "voicecall.end", {"callId": call_id})
