"""Restart rules (SPEC section 6) and what `daemon start`/`daemon stop` promise around them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.rpc.client import DaemonUnreachableError, RpcClient
from tests.harness import FAST_MOCK, DaemonHarness, wait_for
from tests.harness import rpc_async as rpc
from tests.simulators.twilio import ACCOUNT_SID, AUTH_TOKEN, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API origin that accepts connections and never answers (a dial that never returns)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # never accepted: the kernel completes the handshakes, nobody replies
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def twilio(api: str) -> str:
    return f"""
provider = "twilio"
from_number = "+15550100000"
max_concurrent_calls = 1

[serve]
port = 0

[twilio]
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base_url = "{api}"
"""


async def test_call_stored_before_the_dial_answered_ends_failed_at_restart(
    make_daemon: Callable[..., DaemonHarness], silent_api: str, sim: TwilioSimulator
) -> None:
    """kill -9 while the provider has not answered the dial: the call was stored `initiated`
    with no provider id. After restart it ends `failed` and its slot is free (max 1 call)."""
    d = make_daemon(twilio(silent_api), start=False)
    await asyncio.to_thread(d.start)
    dial = asyncio.create_task(rpc(d, "voicecall.initiate", {"message": "Hi", "to": TO}))
    live = await asyncio.to_thread(
        wait_for, lambda: d.rpc("voicecall.status")["calls"], 20, 0.02, "the stored call"
    )
    call_id = live[0]["callId"]
    assert live[0]["providerCallId"] is None and live[0]["state"] == "initiated"
    await asyncio.to_thread(d.kill9)
    with pytest.raises(ConnectionError):
        await dial
    d.write_config(twilio(sim.api_base_url))
    await asyncio.to_thread(d.start)
    record = await asyncio.to_thread(d.call_record, call_id)
    assert (record["state"], record["endReason"]) == ("failed", "failed")
    assert (await rpc(d, "daemon.status"))["activeCalls"] == 0
    placed = await rpc(d, "voicecall.initiate", {"message": "Hi again", "to": TO})
    assert placed["initiated"] is True  # not -32006: the orphan holds no slot
    assert len(sim.creates) == 1  # the orphan was never re-dialled


def test_locked_store_fails_start_with_an_error_line_and_no_socket(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """Another process holds the SQLite store locked: `daemon start` prints one `Error:` (no
    traceback) and no socket ever accepts a connection it would not serve."""
    d = make_daemon(FAST_MOCK)
    d.stop()
    db = d.home / "state" / "voicecall.db"
    assert db.exists()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('PRAGMA locking_mode=EXCLUSIVE')\n"
            "db.execute('BEGIN EXCLUSIVE'); db.execute('INSERT INTO meta VALUES (\"x\", \"y\")')\n"
            "print('locked', flush=True); time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        accepted: list[float] = []
        done = threading.Event()

        def probe() -> None:  # a client trying to connect all through the start attempt
            while not done.is_set():
                try:
                    with RpcClient(d.socket, timeout=0.2):
                        accepted.append(time.monotonic())
                except (DaemonUnreachableError, OSError):
                    pass
                time.sleep(0.01)

        watcher = threading.Thread(target=probe)
        watcher.start()
        try:
            started = d.cli("daemon", "start", timeout=90)
        finally:
            done.set()
            watcher.join()
    finally:
        holder.kill()
        holder.wait()
    assert started.returncode != 0
    assert started.stderr.startswith("Error: "), started.stderr
    assert "locked" in started.stderr and str(db) in started.stderr, started.stderr
    assert "Traceback" not in started.stderr + (d.home / "state" / "daemon.log").read_text()
    assert accepted == [], "a socket accepted connections for a daemon that never served"
    assert not d.socket.exists()
    # Once the other process lets go, the same command works.
    again = d.cli("daemon", "start")
    assert again.returncode == 0, again.stderr


def test_daemon_stop_does_not_wait_for_the_parent_to_reap(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """The test process is the daemon's parent and does not reap it, so the exited daemon is
    a zombie that `kill(pid, 0)` calls alive. `daemon stop` still returns at once, exit 0."""
    d = make_daemon(FAST_MOCK)
    assert d.proc is not None
    began = time.monotonic()
    stopped = d.cli("daemon", "stop", timeout=60)
    elapsed = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "voicecall daemon stopped"
    assert elapsed < 10, f"daemon stop took {elapsed:.1f}s"
    proc_stat = Path(f"/proc/{d.proc.pid}/stat")  # never reaped: it ends a zombie ('Z')
    wait_for(
        lambda: proc_stat.read_text().split(") ", 1)[1].startswith("Z"),
        20,
        message="the daemon to become a zombie",
    )
