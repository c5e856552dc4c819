"""New calls wait while the daemon's event loop is overloaded (`max_loop_load`), end to end.

The real daemon with the Twilio simulator, its loop made busy for real: RPC clients in other
threads of this process ask `daemon.status` as fast as it answers, the work of many
simultaneous callers, which keeps it all but saturated. A `max_loop_load` of 0.5 stands for
the default's 0.8 on a core full of calls (the benchmark's 600 streams: docs/benchmarks.md,
"Past the core"), with room on both sides for a slow machine. The calls already live are not
touched; new ones are refused with the reason, and come again once the load has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config.model import Config
from daemon.engine.calls import CallEngine
from daemon.errors import LimitReachedError
from daemon.loopload import LoopLoad
from daemon.providers.base import ProviderContext
from daemon.providers.mock import MockProvider
from daemon.store.sqlite import SqliteStore
from tests.configs import twilio_config
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import start_async as start
from tests.harness import until_async as until
from tests.simulators.twilio import TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
CALLER = "+15550109999"
LIMIT = 0.5
"""Far from both sides: the flood keeps the loop 98-99 % busy, the test's own commands and
the call up keep it under 5 %."""
CLIENTS = 4


@contextlib.contextmanager
def busy_loop(d: DaemonHarness) -> Iterator[None]:
    """Keep the daemon's loop busy: `CLIENTS` connections asking `daemon.status` back to back."""
    stop = threading.Event()

    def ask() -> None:
        with d.client(timeout=10) as client:
            while not stop.is_set():
                client.call("daemon.status")

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


async def loop_load(d: DaemonHarness) -> float:
    return float((await rpc(d, "daemon.status"))["loopLoad"])


async def until_load(d: DaemonHarness, above: bool, what: str) -> None:
    """Poll `daemon.status` until its loopLoad is above (or at most) `LIMIT`."""
    for _ in range(300):
        load = await loop_load(d)
        if (load > LIMIT) == above:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (loopLoad {load})")


async def doctor(d: DaemonHarness) -> dict[str, Any]:
    """`voicecall doctor --offline --json`'s checks by id."""
    done = await asyncio.to_thread(d.cli, "doctor", "--offline", "--json")
    return {c["id"]: c for c in json.loads(done.stdout)["checks"]}


async def test_an_overloaded_loop_refuses_new_calls_and_takes_them_again_after(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """While the loop is busier than max_loop_load: `voicecall call` fails with the reason (exit
    1, nothing dialled) and an inbound caller gets `<Reject/>` with the reason stored; the
    call that was already up stays up. Once the load is gone a call goes through, and
    max_loop_load = 1 (set live, by reload) lets calls through however busy the loop is.
    `voicecall doctor` warns while calls are refused."""
    d = await start(
        make_daemon,
        twilio_config(
            sim, top=f'inbound_policy = "open"\nmax_loop_load = {LIMIT}\nmax_concurrent_calls = 8'
        ),
    )
    webhook = str((await rpc(d, "daemon.status"))["webhookUrl"])
    await until_load(d, False, "an idle daemon's load to settle")
    up = await asyncio.to_thread(
        d.cli, "call", "--to", TO, "-m", "Hello", "--mode", "conversation", "--json"
    )
    assert up.returncode == 0, up.stderr
    up_id = json.loads(up.stdout)["callId"]

    with busy_loop(d):
        await until_load(d, True, "the flood to load the loop")
        refused = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Hi")
        assert refused.returncode == 1, (refused.returncode, refused.stdout, refused.stderr)
        assert "overloaded" in refused.stderr and "max_loop_load" in refused.stderr
        assert "busy over the last" in refused.stderr
        assert len(sim.creates) == 1, "a refused call must not be dialled"

        caller = await sim.inbound(CALLER, FROM, webhook)
        await sim.wait_for(lambda: caller.ended)
        assert caller.ended_by == "reject"
        (offer,) = [
            dl
            for dl in sim.deliveries
            if dl.kind == "voice" and dl.params.get("CallSid") == caller.sid
        ]
        assert '<Reject reason="busy" />' in offer.reply, offer.reply
        listed = (await rpc(d, "voicecall.list", {}))["calls"]
        (offered,) = [c for c in listed if c.get("providerCallId") == caller.sid]
        events = await asyncio.to_thread(d.call_events, str(offered["callId"]))
        assert events[0]["type"] == "call.initiated" and events[0]["accepted"] is False
        assert "overloaded" in events[0]["reason"]

        record = await asyncio.to_thread(d.call_record, up_id)
        assert record["state"] not in ("hangup-bot", "failed", "error"), record["state"]
        load = (await doctor(d))["load"]
        assert load["status"] == "WARN" and "new calls are refused" in load["message"], load

        # 1 turns it off, live: the same flood, and the call goes through.
        done = await asyncio.to_thread(d.cli, "config", "set", "max_loop_load", "1")
        assert done.returncode == 0, done.stderr
        done = await asyncio.to_thread(d.cli, "daemon", "reload")
        assert done.returncode == 0, done.stderr
        assert await loop_load(d) > LIMIT
        through = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Hi again")
        assert through.returncode == 0, through.stderr
        done = await asyncio.to_thread(d.cli, "config", "set", "max_loop_load", str(LIMIT))
        assert done.returncode == 0, done.stderr
        done = await asyncio.to_thread(d.cli, "daemon", "reload")
        assert done.returncode == 0, done.stderr

    await until_load(d, False, "the load to go once the flood stopped")
    assert (await doctor(d))["load"]["status"] == "OK"
    again = await asyncio.to_thread(d.cli, "call", "--to", TO, "-m", "Hi, later")
    assert again.returncode == 0, again.stderr
    await until(lambda: len(sim.creates) == 3, 10, "the later call to be dialled")


async def test_status_shows_the_loop_load(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness]
) -> None:
    """`voicecall daemon status` says how busy the loop was (its JSON has loopLoad)."""
    d = await start(make_daemon, twilio_config(sim))
    done = await asyncio.to_thread(d.cli, "daemon", "status")
    assert done.returncode == 0, done.stderr
    assert "busy over the last 5 s" in done.stdout
    status = json.loads((await asyncio.to_thread(d.cli, "daemon", "status", "--json")).stdout)
    assert 0.0 <= status["loopLoad"] <= status["loopLoadProjected"] <= 1.0
    assert status["maxLoopLoad"] == 0.8


async def test_a_burst_is_refused_before_the_window_shows_it(tmp_path: Path) -> None:
    """The real engine, store and mock carrier, with the loop's accounting driven by hand: each
    live call costs 1 % of the loop, and 50 calls came over the window's five seconds (its
    load 25 %, its calls 25 on average). Calls taken after it count at that slope, so with
    max_loop_load 0.605 the 61st call is taken and the 62nd refused, with the reason, though
    the window itself still reads 25 %. (Judged by the window alone, all 100 would be taken.)"""
    config = dataclasses.replace(
        Config.defaults(tmp_path), max_loop_load=0.605, max_concurrent_calls=100
    )
    store = SqliteStore(tmp_path)
    await store.open()
    provider = MockProvider()
    engine = CallEngine(config, store, provider)
    provider.bind(engine.apply, ProviderContext(config, "", None))
    clock, busy = [0.0], [0.0]
    load = LoopLoad(
        clock=lambda: clock[0], times=lambda: (busy[0], 0.0), units=lambda: engine.live_count
    )
    engine.loop_load = load
    load.sample()

    async def place() -> None:
        await engine.initiate("Hello", "+15550001234", "conversation")

    try:
        for _ in range(5):
            before = engine.live_count
            for _ in range(10):
                await place()
            clock[0] += 1.0
            busy[0] += 0.01 * (before + engine.live_count) / 2
            load.sample()
        assert abs(load.share - 0.25) < 1e-9
        for _ in range(11):
            await place()
        assert engine.live_count == 61
        with pytest.raises(LimitReachedError) as refused:
            await place()
        assert "counting the calls taken since" in str(refused.value)
        assert "25% busy over the last 5 s, 61% counting" in str(refused.value)
        assert engine.live_count == 61 and load.share < config.max_loop_load
    finally:
        await engine.stop()
        await store.close()
