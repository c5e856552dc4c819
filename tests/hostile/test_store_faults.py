"""Faults of the store (SPEC section 6): a real full disk under the SQLite store.

Nothing is acknowledged that is not durable: a signed webhook gets 503 (the provider retries),
is not remembered as processed, and leaves no live call, slot or waiter; an RPC gets -32007. Once
space is back, the same retried delivery is processed normally and `initiate` works again. The
daemon stays up, logs the fault once (not once per request), and `daemon status` and `doctor`
show it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Callable

import pytest

from daemon.config.model import Config
from daemon.engine.calls import CallEngine
from daemon.errors import RpcCode, StoreError
from daemon.model.events import Direction, EventType, ProviderEvent
from daemon.model.record import CallRecord
from daemon.providers.base import ProviderContext
from daemon.providers.mock import MockProvider
from daemon.rpc.protocol import RpcRemoteError
from daemon.store.sqlite import SqliteStore
from tests.configs import twilio_config
from tests.harness import DaemonHarness, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.hostile.conftest import SmallDisk
from tests.simulators.twilio import SimCall, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

FROM = "+15550100000"
CALLER = "+15550109999"
GREETING = "Hello from the store fault test"
FAULT_LINE = "refuses writes"


def store_config(sim: TwilioSimulator, disk: SmallDisk) -> str:
    store = disk.root / "store"
    return twilio_config(
        sim,
        top=f'store = "{store}"\nmax_concurrent_calls = 1\n'
        f'inbound_policy = "open"\ninbound_greeting = "{GREETING}"\n',
    )


async def rpc_error(d: DaemonHarness, method: str, params: dict[str, object]) -> RpcRemoteError:
    try:
        result = await rpc(d, method, params)
    except RpcRemoteError as exc:
        return exc
    raise AssertionError(f"{method} succeeded on a full disk: {result}")


async def test_full_disk_webhook_is_503_not_remembered_and_its_retry_succeeds(
    small_disk: SmallDisk, make_daemon: Callable[..., DaemonHarness], sim: TwilioSimulator
) -> None:
    d = await start(make_daemon, store_config(sim, small_disk))
    url = str((await rpc(d, "daemon.status"))["webhookUrl"])
    small_disk.fill()

    # A signed inbound call: Twilio's voice request for a call to our number.
    call = SimCall("CA" + secrets.token_hex(16), "inbound", CALLER, FROM, url=url, status="ringing")
    sim.calls[call.sid] = call
    first = await sim.webhook(call, url, {}, "voice")
    assert first.status == 503, first.reply
    for _ in range(5):  # the provider's retries, byte for byte: not a "replay" while faulted
        again = await sim.replay(first)
        assert again.status == 503, again.reply

    # No trace in memory: no live call, no slot; the RPC whose effect cannot be stored: -32007.
    status = await rpc(d, "daemon.status")
    assert status["activeCalls"] == 0
    assert (await rpc(d, "voicecall.status"))["calls"] == []
    fault = status["storeFault"]
    assert fault is not None and fault["since"].endswith("Z") and "full" in fault["error"]
    refused = await rpc_error(d, "voicecall.initiate", {"message": "hi", "to": "+15550001234"})
    assert refused.code == RpcCode.STORE_UNAVAILABLE == -32007, refused.message
    assert sim.creates == []  # nothing was dialled for a call that could not be stored

    human = await asyncio.to_thread(d.cli, "daemon", "status")
    assert human.returncode == 0, human.stderr
    assert "store     FAULT since " + fault["since"] in human.stdout
    doctor = await asyncio.to_thread(d.cli, "doctor", "--offline", "--json")
    checks = {c["id"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["store"]["status"] == "FAIL" and "refuses writes" in checks["store"]["message"]
    # Logged once for the whole burst (6 webhooks, 1 RPC), not once per request.
    assert d.log_text().count(FAULT_LINE) == 1, d.log_text()

    # Space is back: `initiate` works (no leaked slot, so no -32006 with max 1 call) ...
    small_disk.free()
    placed = await rpc(d, "voicecall.initiate", {"message": "hi", "to": "+15550001234"})
    assert (await rpc(d, "daemon.status"))["storeFault"] is None
    await rpc(d, "voicecall.end", {"callId": placed["callId"]})
    # ... and the very same delivery, retried, is processed as a new one.
    retried = await sim.replay(first)
    assert retried.status == 200, retried.reply
    assert GREETING in retried.reply
    calls = (await rpc(d, "voicecall.status"))["calls"]
    assert [(c["direction"], c["providerCallId"]) for c in calls] == [("inbound", call.sid)]
    # Now it is remembered: a replay gets the empty answer, with no second call.
    replay = await sim.replay(first)
    assert replay.status == 200 and GREETING not in replay.reply
    assert len((await rpc(d, "voicecall.status"))["calls"]) == 1
    assert d.proc is not None and d.proc.poll() is None  # the daemon stayed up throughout


MOCK = """
store = "{store}"
max_concurrent_calls = 1

[serve]
port = 0

[mock]
answer_delay_ms = 30
replies = ["Tuesday works."]
"""


def test_full_disk_rpc_gets_32007_and_leaves_no_waiter(
    small_disk: SmallDisk, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`speak`/`continue` on a full disk: -32007, nothing said or recorded, no waiter left,
    so the same `continue` works once space is back."""
    d = make_daemon(MOCK.format(store=small_disk.root / "store"))
    call_id = d.rpc(
        "voicecall.initiate", {"message": "Hi there", "to": "+15550001234", "mode": "conversation"}
    )["callId"]
    d.wait_state(call_id, "speaking", "active", "answered", "listening")
    before = d.call_record(call_id)["transcript"]
    small_disk.fill()
    for method, params in (
        ("voicecall.speak", {"callId": call_id, "message": "Lost words"}),
        ("voicecall.continue", {"callId": call_id, "message": "Lost too"}),
    ):
        with pytest.raises(RpcRemoteError) as refused:
            d.rpc(method, params)
        assert refused.value.code == -32007, refused.value.message
    assert d.call_record(call_id)["transcript"] == before
    done = d.cli("continue", "--call-id", call_id, "-m", "Still there?")
    assert done.returncode == 1 and done.stderr.startswith("Error: "), done.stderr
    assert "store" in done.stderr and "Traceback" not in done.stderr
    small_disk.free()
    answer = d.rpc("voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert answer == {"success": True, "transcript": "Tuesday works."}
    wait_for(lambda: d.rpc("daemon.status")["storeFault"] is None, 10, message="fault to clear")
    assert d.log_text().count(FAULT_LINE) == 1


class QuietAnswerProvider(MockProvider):
    """The mock carrier, answering an inbound call in the webhook's reply (as Twilio does)
    instead of with a later event of its own."""

    async def answer(self, call: CallRecord) -> None:
        """Nothing to send."""


async def test_answer_stored_but_not_its_greeting_is_greeted_on_the_retry(
    small_disk: SmallDisk,
) -> None:
    """One delivery offers and answers an inbound call (Twilio's voice request). The disk fills
    right after the answer is stored, so the greeting cannot be: the delivery fails (503). Its
    retry, once space is back, says the greeting instead of leaving the caller in silence."""
    folder = small_disk.root / "store"
    config = dataclasses.replace(
        Config.defaults(folder), inbound_policy="open", inbound_greeting=GREETING
    )
    store = SqliteStore(folder)
    await store.open()
    provider = QuietAnswerProvider()
    engine = CallEngine(config, store, provider)
    provider.bind(engine.apply, ProviderContext(config, "", None))
    # A tail subscriber fills the disk the moment the answer is stored and published.
    engine.subscribe(lambda event: small_disk.fill() if event.type is EventType.ANSWERED else None)
    delivery = [
        ProviderEvent(
            kind,
            "CA-1",
            direction=Direction.INBOUND,
            from_number=CALLER,
            to_number=FROM,
            dedupe_key=f"{key}:CA-1",
        )
        for kind, key in ((EventType.INITIATED, "offered"), (EventType.ANSWERED, "answered"))
    ]
    try:
        with pytest.raises(StoreError):
            await engine.apply(delivery)
        (record,) = engine.live_calls()
        assert record.state.value == "answered" and record.transcript == []
        small_disk.free()
        await engine.apply(delivery)  # the provider's retry of the very same delivery
        (record,) = engine.live_calls()
        assert [(t.speaker, t.text) for t in record.transcript] == [("bot", GREETING)]
        stored = await store.get_call(record.call_id)
        assert stored is not None and stored.transcript == record.transcript
    finally:
        await engine.stop()
        await store.close()


async def test_refused_call_whose_end_was_not_stored_is_rejected_on_the_retry(
    small_disk: SmallDisk,
) -> None:
    """The policy refuses an inbound call; the offer is stored, then the disk fills, so its end
    is not. The delivery fails (503); its retry ends the call and rejects it at the provider."""
    folder = small_disk.root / "store"
    config = dataclasses.replace(Config.defaults(folder), inbound_policy="disabled")
    store = SqliteStore(folder)
    await store.open()
    provider = QuietAnswerProvider()
    engine = CallEngine(config, store, provider)
    provider.bind(engine.apply, ProviderContext(config, "", None))
    engine.subscribe(lambda event: small_disk.fill() if event.type is EventType.INITIATED else None)
    offer = [
        ProviderEvent(
            EventType.INITIATED,
            "CA-2",
            direction=Direction.INBOUND,
            from_number=CALLER,
            to_number=FROM,
            dedupe_key="offered:CA-2",
        )
    ]
    try:
        with pytest.raises(StoreError):
            await engine.apply(offer)
        (record,) = engine.live_calls()
        assert record.state.value == "initiated"
        small_disk.free()
        await engine.apply(offer)  # the provider's retry
        assert engine.live_calls() == []
        stored = await store.get_call(record.call_id)
        assert stored is not None and stored.state.value == "hangup-bot"
    finally:
        await engine.stop()
        await store.close()
