"""Inbound DTMF end to end: each provider's simulator presses keys the way the vendor reports
them, and the real daemon turns them into `call.dtmf` events and into the answer of a pending
`voicecall continue` (the keys as pressed; docs/behaviour.md "Keypad answers").

- Twilio: `<Gather input="dtmf speech">` posts `Digits` (one entry, `#` left out).
- Plivo: `<GetInput inputType="dtmf speech">` posts `InputType=dtmf` + `Digits` (one entry).
- Telnyx: one `call.dtmf.received` webhook per key; `#` ends the entry.
- Streams (Twilio/Telnyx/Plivo media streams): one `dtmf` frame per key; `#` or a 2 s gap ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.e2e.test_plivo_streaming import config as plivo_stream_config
from tests.e2e.test_telnyx_streaming import config as telnyx_stream_config
from tests.e2e.test_twilio_streaming import config as twilio_stream_config
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import PlivoSimulator
from tests.simulators.telnyx import TelnyxSimulator
from tests.simulators.twilio import TwilioSimulator

pytestmark = pytest.mark.e2e

TO = "+15550001234"


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def telnyx() -> AsyncIterator[TelnyxSimulator]:
    async with TelnyxSimulator() as simulator:
        yield simulator


@pytest.fixture
async def plivo() -> AsyncIterator[PlivoSimulator]:
    async with PlivoSimulator() as simulator:
        yield simulator


def dtmf_events(d: DaemonHarness, call_id: str) -> list[str]:
    """The `call.dtmf` digits stored for the call, through `voicecall tail --no-follow`."""
    done = d.cli("tail", "--call-id", call_id, "--no-follow", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return [e["digits"] for e in events if e["type"] == "call.dtmf"]


async def continue_via_cli(d: DaemonHarness, call_id: str, message: str) -> asyncio.Task[Any]:
    """`voicecall continue --json` in a thread (it blocks until the caller answers)."""
    return asyncio.create_task(
        asyncio.to_thread(d.cli_json, "continue", "--call-id", call_id, "-m", message)
    )


async def conversation(d: DaemonHarness) -> str:
    result = await rpc(
        d,
        "voicecall.initiate",
        {"message": "Hi, it's the clinic.", "to": TO, "mode": "conversation"},
    )
    return str(result["callId"])


# ---------------------------------------------------------------------------------- Twilio


async def test_twilio_gather_digits_answer_a_continue(
    twilio: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """The caller types 42# into the Gather: `continue` returns "42" (Twilio drops the #)."""
    from tests.e2e.test_twilio_calls import config

    d = await start(make_daemon, config(twilio))
    call_id = await conversation(d)
    await twilio.wait_for(lambda: bool(twilio.calls) and twilio.only_call().spoken != [])
    call = twilio.only_call()
    pending = await continue_via_cli(d, call_id, "Press your booking number, then hash.")
    await twilio.wait_for(lambda: call.gathering, 15)
    await twilio.press(call, "42#")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "42"}
    assert dtmf_events(d, call_id) == ["42"]
    record = (await rpc(d, "voicecall.status", {"callId": call_id}))["call"]
    assert record["transcript"][-1]["speaker"] == "user"
    assert record["transcript"][-1]["text"] == "42"


async def test_twilio_stream_dtmf_keys_answer_a_continue(
    twilio: TwilioSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """On a streamed call each key is a `dtmf` message; 7, 3, # make the entry "73#"."""
    d = await start(make_daemon, twilio_stream_config(twilio, openai))
    call_id = await conversation(d)
    await twilio.wait_for(lambda: bool(twilio.calls) and bool(twilio.only_call().media), 15)
    stream = twilio.only_call().media[-1]
    pending = await continue_via_cli(d, call_id, "Which option?")
    await twilio.wait_for(lambda: d.call_record(call_id)["state"] == "listening", 15)
    await stream.press("73#")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "73#"}
    assert dtmf_events(d, call_id) == ["7", "3", "#"]


# ---------------------------------------------------------------------------------- Telnyx


async def test_telnyx_dtmf_webhooks_answer_a_continue(
    telnyx: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`call.dtmf.received` per key (the schema-derived sample's shape): 1, 2, # -> "12#"."""
    from tests.e2e.test_telnyx_calls import config

    d = await start(make_daemon, config(telnyx))
    call_id = await conversation(d)
    await until_state(d, call_id, "speaking", "active", "answered")
    call = telnyx.only_call()
    pending = await continue_via_cli(d, call_id, "Press one for yes.")
    await telnyx.wait_for(lambda: call.transcribing, 15)
    await telnyx.press(call, "12#")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "12#"}
    assert dtmf_events(d, call_id) == ["1", "2", "#"]
    assert all(d.status == 200 for d in telnyx.delivered("call.dtmf.received"))


async def test_telnyx_single_key_ends_after_the_gap(
    telnyx: TelnyxSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """One key and no #: the entry ends 2 s after the key (DTMF_ENTRY_GAP_SECONDS)."""
    from tests.e2e.test_telnyx_calls import config

    d = await start(make_daemon, config(telnyx))
    call_id = await conversation(d)
    await until_state(d, call_id, "speaking", "active", "answered")
    call = telnyx.only_call()
    pending = await continue_via_cli(d, call_id, "Press one for yes.")
    await telnyx.wait_for(lambda: call.transcribing, 15)
    pressed = time.monotonic()
    await telnyx.press(call, "1")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "1"}
    assert time.monotonic() - pressed >= 1.9


async def test_telnyx_stream_dtmf_frames_answer_a_continue(
    telnyx: TelnyxSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Stream `dtmf` frames (the AsyncAPI sample's shape) answer a streamed call's turn; a
    `call.dtmf.received` webhook for a call whose stream is live is not counted twice."""
    d = await start(make_daemon, telnyx_stream_config(telnyx, openai))
    call_id = await conversation(d)
    await telnyx.wait_for(
        lambda: bool(telnyx.calls) and any(s.open for s in telnyx.only_call().streams), 15
    )
    call = telnyx.only_call()
    pending = await continue_via_cli(d, call_id, "Which option?")
    await telnyx.wait_for(lambda: d.call_record(call_id)["state"] == "listening", 15)
    await telnyx.press(call, "9", via="webhook")  # the same key, also reported by the stream
    await telnyx.press(call, "9#", via="stream")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "9#"}
    assert dtmf_events(d, call_id) == ["9", "#"]


# ---------------------------------------------------------------------------------- Plivo


async def test_plivo_getinput_digits_answer_a_continue(
    plivo: PlivoSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """GetInput posts `InputType=dtmf`, `Digits=5` (the sample's shape): continue gets "5"."""
    from tests.e2e.test_plivo_calls import config

    d = await start(make_daemon, config(plivo))
    call_id = await conversation(d)
    await until_state(d, call_id, "speaking", "active", "answered")
    call = plivo.only_call()
    pending = await continue_via_cli(d, call_id, "Press five to confirm.")
    await plivo.wait_for(lambda: call.listening and "Press five to confirm." in call.spoken, 15)
    await plivo.press(call, "5")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "5"}
    assert dtmf_events(d, call_id) == ["5"]
    posted = [dl for dl in plivo.deliveries if dl.params.get("InputType") == "dtmf"]
    assert posted and posted[0].params["Digits"] == "5" and "Speech" not in posted[0].params


async def test_plivo_stream_dtmf_frames_answer_a_continue(
    plivo: PlivoSimulator, openai: FakeOpenAI, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """Plivo stream `dtmf` frames answer a streamed call's turn."""
    d = await start(make_daemon, plivo_stream_config(plivo, openai))
    call_id = await conversation(d)
    await plivo.wait_for(
        lambda: bool(plivo.calls) and any(s.open for s in plivo.only_call().streams), 15
    )
    call = plivo.only_call()
    pending = await continue_via_cli(d, call_id, "Which option?")
    await plivo.wait_for(lambda: d.call_record(call_id)["state"] == "listening", 15)
    await plivo.press(call, "2#", via="stream")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "2#"}
    assert dtmf_events(d, call_id) == ["2", "#"]
