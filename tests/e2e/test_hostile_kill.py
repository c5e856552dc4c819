"""`kill -9` in the middle of a burst of calls, then restart: nothing lost, nothing re-dialled.

SPEC 6 (durability): every event is written to the store before it is acted on; after a restart
no call record or event is lost and a call is never re-dialled automatically.
"""

from __future__ import annotations

import threading
import time

import pytest

from daemon.errors import RpcCode
from daemon.rpc.client import DaemonUnreachableError
from daemon.rpc.protocol import RpcRemoteError
from tests.harness import DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

BURST = """
max_concurrent_calls = 100

[serve]
port = 0

[mock]
answer_delay_ms = 30
"""

CLIENTS = 6
KILL_AFTER = 40
"""Acknowledged initiates to wait for before the SIGKILL (the burst is still running then)."""


def _burst(d: DaemonHarness, acked: list[str], stop: threading.Event, index: int) -> None:
    """Initiate calls on one connection until told to stop or the daemon dies."""
    n = 0
    try:
        with d.client(timeout=10) as client:
            while not stop.is_set():
                n += 1
                mode = "conversation" if n % 2 else "notify"
                try:
                    result = client.call(
                        "voicecall.initiate",
                        {
                            "message": f"burst {index}-{n}",
                            "to": f"+1555{index:03d}{n:04d}",
                            "mode": mode,
                        },
                    )
                except RpcRemoteError as exc:
                    if exc.code == RpcCode.LIMIT_REACHED:
                        time.sleep(0.01)
                        continue
                    raise
                acked.append(result["callId"])
    except (ConnectionError, DaemonUnreachableError, OSError):
        return  # the daemon was killed under us: expected


def test_kill_9_during_an_initiate_burst(make_daemon) -> None:
    """Every acknowledged call survives, once, with one call.initiated, and is not re-dialled."""
    d = make_daemon(BURST)
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_burst, args=(d, acked, stop, i)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acked) >= KILL_AFTER, 20, message=f"{KILL_AFTER} acknowledged calls")
        d.kill9()
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    acknowledged = list(acked)  # callIds the daemon returned before it died
    assert len(set(acknowledged)) == len(acknowledged)

    d.start()
    listed = d.rpc("voicecall.list", {"limit": 10_000})["calls"]
    ids = [c["callId"] for c in listed]
    assert len(ids) == len(set(ids)), "a call appears twice in the store"
    missing = set(acknowledged) - set(ids)
    assert not missing, f"acknowledged calls lost by kill -9: {sorted(missing)[:5]}"
    provider_ids = [c["providerCallId"] for c in listed if c["providerCallId"]]
    assert len(provider_ids) == len(set(provider_ids)), "two records for one provider call"

    for call_id in acknowledged:
        assert d.call_record(call_id)["callId"] == call_id
    # Give the restarted daemon time to (wrongly) re-dial or re-ring anything.
    time.sleep(0.5)
    for call_id in ids:
        kinds = [e["type"] for e in d.call_events(call_id)]
        assert kinds.count("call.initiated") == 1, (call_id, kinds)
        assert kinds.count("call.ringing") <= 1, (call_id, kinds)
        assert kinds.count("call.answered") <= 1, (call_id, kinds)

    # And it serves normally: a new call goes through to the end.
    fresh = d.rpc(
        "voicecall.initiate", {"message": "after", "to": "+15559990000", "mode": "conversation"}
    )["callId"]
    d.wait_state(fresh, "speaking", "listening")
    assert d.rpc("voicecall.end", {"callId": fresh}) == {"success": True}
    assert d.rpc("daemon.status")["running"] is True
