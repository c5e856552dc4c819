"""The real daemon on a PostgreSQL store (SPEC sections 3 and 16), against a real server.

`kill -9` and restart on the same database loses nothing and re-dials nothing; the URL's password
is masked everywhere it could show; an unreachable database, a newer schema and a second daemon
are refused with a clear `Error:` (a second daemon only when it has the first's id);
`voicecall doctor` reports the connection and schema version.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from daemon.errors import RpcCode
from daemon.rpc.protocol import RpcRemoteError
from daemon.store import pg_schema
from tests.harness import FAST_MOCK, wait_for
from tests.pg_cluster import PgServer, server_for_test, start_cluster

pytestmark = pytest.mark.e2e

PASSWORD = "pg-Secret-4711"
REPLIES = 'replies = ["Yes, Tuesday works.", "No, that is all."]\n'


def with_password(url: str, password: str = PASSWORD) -> str:
    """The URL with a password (the test server trusts loopback, so any password works)."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def config_for(url: str) -> str:
    return f'store = "{url}"\n' + FAST_MOCK + REPLIES


def query(url: str, sql: str) -> list[Any]:
    """Rows straight from the database (not through voicecall)."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_kill_9_and_restart_on_postgres_loses_nothing(make_daemon, pg_url: str) -> None:
    """A conversation call's record, transcript and events survive kill -9; no re-dial."""
    d = make_daemon(config_for(pg_url))
    call_id = d.rpc(
        "voicecall.initiate",
        {"to": "+15550001234", "message": "Hi, the clinic.", "mode": "conversation"},
    )["callId"]
    d.wait_state(call_id, "speaking", "active", "answered", "listening")
    turn = d.rpc("voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert turn == {"success": True, "transcript": "Yes, Tuesday works."}
    before = d.call_record(call_id)
    before_events = d.call_events(call_id)
    assert before_events and before_events[0]["type"] == "call.initiated"
    stored = query(pg_url, "SELECT call_id FROM voicecall_calls")
    assert [r["call_id"] for r in stored] == [call_id], "the call is in PostgreSQL"
    assert not (d.home / "state" / "voicecall.db").exists(), "nothing went to SQLite"

    d.kill9()
    d.start()

    after = d.call_record(call_id)
    assert after["transcript"] == before["transcript"]
    assert [(t["speaker"], t["text"]) for t in after["transcript"]][-2:] == [
        ("bot", "Does Tuesday work?"),
        ("user", "Yes, Tuesday works."),
    ]
    for key in (
        "callId",
        "providerCallId",
        "direction",
        "mode",
        "from",
        "to",
        "startedAt",
        "answeredAt",
    ):
        assert after[key] == before[key], key
    time.sleep(0.5)  # give the restarted daemon the chance to (wrongly) dial again
    after_events = d.call_events(call_id)
    assert after_events[: len(before_events)] == before_events, "an event was lost or changed"
    kinds = [e["type"] for e in after_events]
    assert kinds.count("call.initiated") == 1 and kinds.count("call.ringing") <= 1, kinds
    listed = d.rpc("voicecall.list", {"limit": 100})["calls"]
    assert [c["callId"] for c in listed] == [call_id], "no second call was placed"
    # And it carries on: another turn on the restored call, if the call is still up.
    if after["state"] in ("active", "listening", "speaking", "answered"):
        again = d.rpc("voicecall.continue", {"callId": call_id, "message": "Anything else?"})
        assert again["success"] is True  # (the mock's reply cycle restarts with the process)
        assert (
            d.call_record(call_id)["transcript"][: len(before["transcript"])]
            == before["transcript"]
        )
        assert d.rpc("voicecall.end", {"callId": call_id}) == {"success": True}


def test_the_password_never_shows(make_daemon, pg_url: str) -> None:
    """status, config show/get, the daemon log: the URL with its password masked."""
    url = with_password(pg_url)
    d = make_daemon(config_for(url))
    status = d.rpc("daemon.status")
    assert PASSWORD not in json.dumps(status)
    assert status["store"] == url.replace(PASSWORD, "********")
    shown = d.cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    got = d.cli("config", "get", "store")
    as_json = d.cli("config", "show", "--json")
    for out in (shown.stdout, got.stdout, as_json.stdout):
        assert PASSWORD not in out and "********@127.0.0.1" in out, out
    call_id = d.rpc(
        "voicecall.initiate", {"to": "+15550001234", "message": "Hi", "mode": "notify"}
    )["callId"]
    d.wait_state(call_id, "hangup-bot", "completed", timeout=20)
    d.stop()
    log = d.log_text()
    assert "store postgresql://postgres:********@127.0.0.1" in log, log[-2000:]
    assert PASSWORD not in log


def test_voicecall_store_environment_variable(make_daemon, pg_url: str) -> None:
    """VOICECALL_STORE points the daemon at PostgreSQL and wins over the file's `store`."""
    d = make_daemon(f'store = "{"/tmp/never-used-by-this-test"}"\n' + FAST_MOCK, start=False)
    d.env["VOICECALL_STORE"] = pg_url
    d.start()
    assert d.rpc("daemon.status")["store"] == pg_url
    call_id = d.rpc(
        "voicecall.initiate", {"to": "+15550001234", "message": "Hi", "mode": "notify"}
    )["callId"]
    rows = query(pg_url, "SELECT call_id FROM voicecall_calls")
    assert [r["call_id"] for r in rows] == [call_id]


def test_an_unreachable_database_is_a_clear_error(make_daemon, pg_url: str) -> None:
    """`daemon start` fails with an Error: naming the masked URL and what to check."""
    parts = urlsplit(pg_url)
    dead = urlunsplit(parts._replace(netloc=f"vc:{PASSWORD}@127.0.0.1:{closed_port()}"))
    d = make_daemon(config_for(dead), start=False)
    done = d.cli("daemon", "start", timeout=90)
    assert done.returncode != 0
    assert "Error:" in done.stderr
    assert (
        "cannot connect to the PostgreSQL store postgresql://vc:********@127.0.0.1" in done.stderr
    ), done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert PASSWORD not in (d.home / "state" / "daemon.log").read_text()


def test_a_newer_schema_is_refused(make_daemon, pg_url: str) -> None:
    """A database a newer voicecall migrated is refused at start, untouched; doctor says so."""
    d = make_daemon(config_for(pg_url))
    d.stop()
    query(pg_url, "INSERT INTO voicecall_schema (version, applied_by) VALUES (7, 'future')")
    done = d.cli("daemon", "start", timeout=90)
    assert done.returncode != 0
    assert "Error:" in done.stderr
    known = pg_schema.SCHEMA_VERSION
    assert f"schema version 7, newer than this voicecall knows ({known})" in done.stderr, (
        done.stderr
    )
    doctor = d.cli("doctor", "--offline", "--json")
    store = [c for c in json.loads(doctor.stdout)["checks"] if c["id"] == "store.database"]
    assert store and store[0]["status"] == "FAIL" and "version 7" in store[0]["message"]
    assert doctor.returncode == 1
    rows = query(pg_url, "SELECT version FROM voicecall_schema ORDER BY version")
    assert [r["version"] for r in rows] == [*range(1, known + 1), 7]


def test_a_second_daemon_with_the_same_id_is_refused(make_daemon, pg_url: str) -> None:
    """Daemons share a database (SPEC 16), each under its own id (state/daemon-id): a second
    home with a copy of the first's id (a cloned machine) is refused with a clear error, while
    one with its own id runs beside the first."""
    first = make_daemon(config_for(pg_url))
    own_id = (first.home / "state" / "daemon-id").read_text()
    clone = make_daemon(config_for(pg_url), start=False)
    (clone.home / "state").mkdir(parents=True, exist_ok=True)
    (clone.home / "state" / "daemon-id").write_text(own_id)
    clone.start(expect_ready=False)
    assert clone.proc is not None
    clone.proc.wait(60)
    assert clone.proc.returncode != 0
    log = clone.log_text()
    assert "another voicecall daemon is already running on the store" in log, log[-2000:]
    assert f"with this daemon's id ({own_id.strip()})" in log
    beside = make_daemon(config_for(pg_url))
    assert beside.rpc("daemon.status")["running"] is True
    assert first.rpc("daemon.status")["running"] is True
    rows = query(pg_url, "SELECT daemon_id FROM voicecall_daemons ORDER BY daemon_id")
    assert len(rows) == 2 and own_id.strip() in {r["daemon_id"] for r in rows}


def test_doctor_checks_the_database(make_daemon, pg_url: str) -> None:
    """doctor: reachable and schema created (OK); unreachable (FAIL, password masked)."""
    d = make_daemon(config_for(pg_url), start=False)
    fresh = json.loads(d.cli("doctor", "--offline", "--json").stdout)
    [store] = [c for c in fresh["checks"] if c["id"] == "store.database"]
    assert store["status"] == "OK" and "no voicecall schema yet" in store["message"], store
    d.start()
    current = json.loads(d.cli("doctor", "--offline", "--json").stdout)
    [store] = [c for c in current["checks"] if c["id"] == "store.database"]
    current_version = f"schema version {pg_schema.SCHEMA_VERSION} (current)"
    assert store["status"] == "OK" and current_version in store["message"], store

    parts = urlsplit(pg_url)
    dead = urlunsplit(parts._replace(netloc=f"vc:{PASSWORD}@127.0.0.1:{closed_port()}"))
    other = make_daemon(config_for(dead), start=False)
    done = other.cli("doctor", "--offline")
    assert done.returncode == 1
    line = next(ln for ln in done.stdout.splitlines() if " store.database: " in ln)
    assert line.startswith(
        "FAIL store.database: cannot connect to the PostgreSQL store "
        "postgresql://vc:********@127.0.0.1"
    ), line
    assert PASSWORD not in done.stdout + done.stderr


def test_cli_stays_off_the_driver(make_daemon, pg_url: str) -> None:
    """With a PostgreSQL store, ordinary CLI commands still never import asyncpg."""
    d = make_daemon(config_for(pg_url))
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "voicecall_cli",
            "--socket",
            str(d.socket),
            "status",
            "--json",
        ],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "voicecall_cli" in done.stderr, "importtime output expected"
    assert "asyncpg" not in done.stderr


def test_daemon_stop_and_start_again_on_postgres(make_daemon, pg_url: str) -> None:
    """`daemon stop` needs no lock file here (storeLock is null): it returns once the daemon is
    gone, and the next start on the same database gets the lock at once."""
    d = make_daemon(config_for(pg_url))
    status = d.rpc("daemon.status")
    assert status["storeLock"] is None and status["store"] == pg_url
    stopped = d.cli("daemon", "stop", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["stopped"] is True, stopped
    started = time.monotonic()
    d.start()
    assert time.monotonic() - started < 4.5, "the lock should be free at once, not after a retry"
    assert d.rpc("daemon.status")["running"] is True


@pytest.fixture
def own_server() -> Any:
    """A PostgreSQL server of this test's own, which it may shut down and start again."""
    server = server_for_test(start_cluster)
    yield server
    server.stop()


def test_the_database_restarting_under_a_running_daemon(make_daemon, own_server: PgServer) -> None:
    """While the server is down, call commands fail cleanly (-32007, nothing half done) and
    status shows the fault; when it is back the daemon takes its lock back by itself and works,
    with the calls from before intact."""
    url = with_password(own_server.new_database())
    d = make_daemon(config_for(url))
    first = d.rpc(
        "voicecall.initiate",
        {"to": "+15550001234", "message": "Hi, the clinic.", "mode": "conversation"},
    )["callId"]
    d.wait_state(first, "listening", "speaking", "active", timeout=20)
    before = d.call_record(first)

    own_server.pause()
    with pytest.raises(RpcRemoteError) as refused:
        d.rpc(
            "voicecall.initiate",
            {"to": "+15550005678", "message": "During the outage", "mode": "notify"},
        )
    assert refused.value.code == RpcCode.STORE_UNAVAILABLE, refused.value
    assert "PostgreSQL store postgresql://postgres:********@" in refused.value.message
    assert PASSWORD not in refused.value.message
    fault = wait_for(lambda: d.rpc("daemon.status")["storeFault"], 10, message="a store fault")
    assert PASSWORD not in json.dumps(fault)

    own_server.resume()

    def placed() -> str | None:
        try:
            return str(
                d.rpc(
                    "voicecall.initiate",
                    {"to": "+15550005678", "message": "After", "mode": "notify"},
                )["callId"]
            )
        except RpcRemoteError as exc:
            assert exc.code == RpcCode.STORE_UNAVAILABLE, exc
            time.sleep(0.3)
            return None

    after = wait_for(placed, 30, message="the daemon to write again")
    wait_for(lambda: d.rpc("daemon.status")["storeFault"] is None, 10, message="fault to clear")
    assert d.call_record(first)["transcript"] == before["transcript"]
    calls = {c["callId"] for c in d.rpc("voicecall.list", {"limit": 10})["calls"]}
    assert calls == {first, after}, "the refused initiate left nothing behind"
    log = d.log_text()
    assert "lost its lock" in log and "lock taken back" in log
    assert PASSWORD not in log
