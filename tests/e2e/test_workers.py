"""`voicecall daemon run --workers N` (SPEC section 16): one parent, N worker daemons on a real
PostgreSQL database, one RPC socket and one webhook port between them, the mock provider as the
carrier (its webhooks go to the shared port, so they land on either worker).

Everything runs through the real entry point (`python -m voicecall_cli daemon run --workers 2`,
which execs the daemon); worker pids are read from /proc (the parent's children).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from daemon.workers.handoff import handoff_path
from tests.configs import twilio_config as twilio_keys_config
from tests.e2e.test_cluster import FROM, TO
from tests.e2e.test_cluster import config as twilio_config
from tests.e2e.test_postgres_store import REPLIES, query
from tests.fakes.balancer import Balancer
from tests.fakes.openai import FakeOpenAI
from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for
from tests.harness import rpc_async as rpc
from tests.harness import until_async as until
from tests.harness import until_state_async as until_state
from tests.simulators.twilio import Delivery, SimStream, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

BEAT = "0.5"
LIVE = ("speaking", "active", "answered", "listening")


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of `pid`."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    alive = []
    for child in text.split():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
            alive.append(int(child))
    return alive


def start_workers(
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
    workers: int = 2,
    text: str | None = None,
    beat: str = BEAT,
) -> DaemonHarness:
    """`voicecall daemon run --workers N` on `pg_url` (config `text`, else the mock's);
    returns once N workers answer."""
    text = text if text is not None else f'store = "{pg_url}"\n' + FAST_MOCK + REPLIES
    d: DaemonHarness = make_daemon(text, start=False)
    d.env.pop("OPENAI_API_KEY", None)
    d.env["VOICECALL_CLUSTER_HEARTBEAT_SECONDS"] = beat
    out = open(d.log, "ab")  # noqa: SIM115 - closed once the process has it
    d.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voicecall_cli",
            "--socket",
            str(d.socket),
            "daemon",
            "run",
            "--workers",
            str(workers),
        ],
        env=d.env,
        stdout=out,
        stderr=out,
        cwd=REPO,
    )
    out.close()
    parent = d.proc.pid

    def up() -> bool:
        assert d.proc is not None
        if d.proc.poll() is not None:
            raise AssertionError(f"parent exited {d.proc.returncode}:\n{d.log_text()}")
        if len(children(parent)) != workers:
            return False
        seen = {s["worker"]["pid"] for s in statuses(d, 12)}
        return seen <= set(children(parent)) and len(seen) >= 1

    wait_for(up, 90, message=f"{workers} workers to answer")
    wait_for(
        lambda: (
            all(f"w{i} " in d.log_text() for i in range(1, workers + 1))
            and d.log_text().count("voicecall daemon 0.1.0 ready") >= workers
        ),
        90,
        message="every worker ready",
    )
    return d


def statuses(d: DaemonHarness, count: int) -> list[dict[str, Any]]:
    """`daemon.status` on `count` fresh connections (any worker may accept each)."""
    got = []
    for _ in range(count):
        try:
            got.append(d.rpc("daemon.status", timeout=5.0))
        except Exception:  # a worker still starting
            continue
    return got


def test_workers_serve_one_socket_and_stop_together(make_daemon, pg_url: str) -> None:
    """Two workers: status answers with the parent's pid from either worker; calls placed on
    several connections run to the end whichever worker owns them; `tail` on any connection
    sees every call's events; `daemon stop` stops the parent and both workers."""
    d = start_workers(make_daemon, pg_url)
    assert d.proc is not None
    parent = d.proc.pid
    workers = children(parent)
    assert len(workers) == 2

    status = d.cli_json("daemon", "status")
    assert status["pid"] == parent and status["worker"]["pid"] in workers
    ids = {(d.home / "state" / f"daemon-id-w{i}").read_text().strip() for i in (1, 2)}
    assert len(ids) == 2, "each worker has its own cluster id"
    assert status["daemonId"] in ids

    # A tail subscriber on its own connection, started before the calls.
    seen: list[dict[str, Any]] = []
    tail_ready = threading.Event()

    def tail() -> None:
        with d.client(timeout=60) as client:
            client.call("voicecall.tail", {})
            tail_ready.set()
            for message in client.notifications():
                seen.append(message["params"]["event"])
                if sum(e["type"] == "call.ended" for e in seen) >= 4:
                    return

    tailer = threading.Thread(target=tail, daemon=True)
    tailer.start()
    assert tail_ready.wait(30)

    placed: list[str] = []
    for _ in range(4):
        with d.client(timeout=60) as client:
            call_id = client.call(
                "voicecall.initiate",
                {"to": "+15550001234", "message": "Hello from a worker.", "mode": "conversation"},
            )["callId"]
            placed.append(call_id)
    for call_id in placed:
        d.wait_state(call_id, *LIVE, timeout=60)
        with d.client(timeout=60) as client:
            turn = client.call(
                "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"}
            )
        assert turn == {"success": True, "transcript": "Yes, Tuesday works."}, turn
        with d.client(timeout=60) as client:
            ended = client.call("voicecall.end", {"callId": call_id})
        assert ended["success"] is True, ended
    tailer.join(60)
    ended_ids = {e["callId"] for e in seen if e["type"] == "call.ended"}
    assert ended_ids == set(placed), (ended_ids, placed)
    for call_id in placed:
        kinds = [e["type"] for e in seen if e["callId"] == call_id]
        assert kinds.count("call.initiated") == 1, kinds

    stopped = d.cli("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert d.proc.wait(30) == 0
    assert not children(parent) and not d.socket.exists()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_killed_worker_is_restarted_and_its_call_goes_on(make_daemon, pg_url: str) -> None:
    """`kill -9` of the worker that owns a live call: the parent starts it again under the same
    id, the call is reconciled (never re-dialled) and answers the next turn. The heartbeat
    (2 s: dead after 8 s of silence) outlasts the restart even on a busy machine, so the
    sibling does not take the call over first (it would, by the rules, after four beats)."""
    d = start_workers(make_daemon, pg_url, beat="2")
    assert d.proc is not None
    parent = d.proc.pid
    call_id = d.rpc(
        "voicecall.initiate",
        {"to": "+15550001234", "message": "Hi, the clinic.", "mode": "conversation"},
    )["callId"]
    d.wait_state(call_id, *LIVE, timeout=60)
    owner_id = _owner(pg_url, call_id)
    index = next(
        i for i in (1, 2) if (d.home / "state" / f"daemon-id-w{i}").read_text().strip() == owner_id
    )
    victim = next(
        pid
        for pid in children(parent)
        if f"--worker\0{index}\0" in Path(f"/proc/{pid}/cmdline").read_text()
    )
    os.kill(victim, signal.SIGKILL)
    # Asked at once, while the owner is down: the sibling that takes the RPC sends it to the
    # call's worker, sees a new process under its id (once that one listens) and sends it again
    # there, instead of waiting out the request's deadline.
    started = time.monotonic()
    result = d.rpc(
        "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"}, timeout=60
    )
    assert time.monotonic() - started < 30
    wait_for(
        lambda: len(children(parent)) == 2 and victim not in children(parent),
        60,
        message="the parent to start the worker again",
    )
    log = d.log_text()
    assert "starting it again" in log
    assert f"restored live call {call_id}" in log
    assert result["success"] is True, result
    listed = d.rpc("voicecall.list", {"limit": 100})["calls"]
    assert [c["callId"] for c in listed] == [call_id], "no second call was placed"
    assert _owner(pg_url, call_id) == owner_id, "the restarted worker took its call back"
    stopped = d.cli("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert d.proc.wait(30) == 0 and not children(parent)


def test_daemon_shutdown_on_any_worker_stops_all(make_daemon, pg_url: str) -> None:
    """`daemon.shutdown` is answered by one worker; the parent and both workers exit."""
    d = start_workers(make_daemon, pg_url)
    assert d.proc is not None
    parent = d.proc.pid
    assert d.rpc("daemon.shutdown") == {"ok": True}
    assert d.proc.wait(60) == 0
    assert not children(parent) and not d.socket.exists()


def test_workers_on_sqlite_are_refused_naming_the_fix(make_daemon) -> None:
    """`--workers 2` on the default SQLite store: exit 78 with the key and the fix."""
    d: DaemonHarness = make_daemon(FAST_MOCK, start=False)
    done = d.cli("daemon", "run", "--workers", "2", timeout=60)
    assert done.returncode == 78, done
    assert "--workers 2: worker processes share one PostgreSQL store" in done.stderr
    assert 'store = "postgresql://..."' in done.stderr
    assert not d.socket.exists()


def _owner(pg_url: str, call_id: str) -> str:
    rows = query(pg_url, f"SELECT owner FROM voicecall_calls WHERE call_id = '{call_id}'")
    owner: str = rows[0]["owner"]
    return owner


async def test_signed_twilio_webhooks_land_on_either_worker(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """The Twilio simulator as the carrier, its signed webhooks sent to the one shared port:
    outbound calls placed on several connections are answered, run and hung up; an inbound
    call's voice request, sent again byte for byte to the worker that does NOT run the call
    (its private port), is recognised as a replay there (handed to the owner): no second call,
    its TwiML not run again."""
    text = 'inbound_policy = "open"\n' + twilio_config(sim, pg_url)
    d = await asyncio.to_thread(start_workers, make_daemon, pg_url, 2, text)
    ids = []
    for n in range(3):
        result = await rpc(
            d, "voicecall.initiate", {"to": TO, "message": f"Call {n}", "mode": "conversation"}
        )
        ids.append(result["callId"])
    for call_id in ids:
        await until_state(d, call_id, "listening", "active", "speaking")
    for call_id in ids:
        assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
        await until_state(d, call_id, "hangup-bot")
    assert len(sim.creates) == 3 and all(c.ended_by == "api" for c in sim.calls.values())

    webhook = (await rpc(d, "daemon.status"))["webhookUrl"]
    call = await sim.inbound("+15550009999", FROM, webhook)

    def voice() -> Delivery | None:
        return next(
            (
                x
                for x in sim.deliveries
                if x.kind == "voice" and x.status and x.params.get("CallSid") == call.sid
            ),
            None,
        )

    await sim.wait_for(lambda: voice() is not None, 30)
    first = voice()
    assert first is not None
    assert first.status == 200 and "<Response />" not in first.reply, first
    [placed] = [
        c
        for c in (await rpc(d, "voicecall.list", {"limit": 100}))["calls"]
        if c["providerCallId"] == call.sid
    ]
    owner = await asyncio.to_thread(_owner, pg_url, placed["callId"])
    rows = await asyncio.to_thread(
        query, pg_url, "SELECT daemon_id, address FROM voicecall_daemons"
    )
    [other] = [r["address"] for r in rows if r["daemon_id"] != owner]
    again = await sim.post(
        Delivery(f"http://{other}/voice/webhook", dict(first.params), dict(first.headers), "voice")
    )
    assert again.status == 200, again
    assert again.reply.endswith("<Response />"), again.reply
    calls = (await rpc(d, "voicecall.list", {"limit": 100}))["calls"]
    assert [c["callId"] for c in calls if c["providerCallId"] == call.sid] == [placed["callId"]], (
        "the replay made no second call"
    )
    await until(
        lambda: "replayed twilio webhook delivery ignored" in d.log_text(),
        15,
        "the replay to be logged",
    )

    # The same delivery twice more on one connection to that worker, pipelined, and the bytes
    # cut in three writes (the first inside the first request's headers): the connection and
    # every byte read from it go to the owner, which answers both, in order, as replays.
    body = urlencode(first.params).encode()
    target = first.url.split("/", 3)[3]
    head = f"POST /{target} HTTP/1.1\r\nHost: {other}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in first.headers.items() if k.lower() != "host"
    )
    one = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    answers = await _raw_exchange(other, one + one, [40, len(one) + 25], 2)
    assert [status for status, _ in answers] == [200, 200], answers
    assert all(reply.endswith(b"<Response />") for _, reply in answers), answers
    # More bytes at once than the connection guard passes to aiohttp in one slice (8 KiB): all
    # kept, handed over, and fed in order at the owner.
    many = one * (1 + 3 * 8192 // len(one))
    count = many.count(b"POST /")
    answers = await _raw_exchange(other, many, [], count)
    assert [status for status, _ in answers] == [200] * count, answers
    assert all(reply.endswith(b"<Response />") for _, reply in answers), answers
    found = await asyncio.to_thread(_both_statuses, d)
    rows = await asyncio.to_thread(
        query, pg_url, "SELECT daemon_id, address FROM voicecall_daemons"
    )
    [other_id] = [r["daemon_id"] for r in rows if r["address"] == other]
    assert found[other_id]["handoff"]["handedOver"]["webhook"] >= 2, found
    assert found[owner]["handoff"]["adopted"]["webhook"] >= 2, found
    for status in found.values():
        assert status["handoff"]["relayed"]["webhook"] == 0, found
    stopped = await asyncio.to_thread(d.cli, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr


FLOOD = 40


async def _call_on_the_wrong_worker(
    sim: TwilioSimulator,
    balancer: Balancer,
    openai: FakeOpenAI,
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
    stream_keys: str = "",
    prepare: Callable[[DaemonHarness, str], None] | None = None,
) -> tuple[DaemonHarness, list[Any], str, str, SimStream]:
    """Two workers behind `balancer`, which sends every webhook and media stream to the worker
    that does NOT run the call placed (`prepare(daemon, owner id)` first); one turn of the
    conversation is heard and answered over the stream. (daemon, rows of voicecall_daemons,
    owner id, call id, stream)."""
    public = f"{balancer.origin}/voice/webhook"
    text = f'store = "{pg_url}"\npublic_url = "{public}"\n' + twilio_keys_config(
        sim, openai, streaming=True, agent=True, stream=stream_keys
    )
    d = await asyncio.to_thread(start_workers, make_daemon, pg_url, 2, text)
    rows = await asyncio.to_thread(
        query, pg_url, "SELECT daemon_id, address FROM voicecall_daemons ORDER BY daemon_id"
    )
    assert len(rows) == 2, rows
    balancer.backends = [f"http://{r['address']}" for r in rows]

    def place() -> tuple[str, str]:
        with d.client(timeout=60) as client:
            owner = client.call("daemon.status", {})["daemonId"]
            if prepare is not None:
                prepare(d, owner)
            other = next(i for i, r in enumerate(rows) if r["daemon_id"] != owner)
            balancer.route = lambda _path: other
            call_id = client.call(
                "voicecall.initiate",
                {"to": TO, "message": "Hi, the clinic.", "mode": "conversation"},
            )["callId"]
        return owner, call_id

    owner, call_id = await asyncio.to_thread(place)
    assert await asyncio.to_thread(_owner, pg_url, call_id) == owner
    await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media), 30)
    stream = sim.only_call().media[-1]
    pending = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "Which option?"})
    )
    await until_state(d, call_id, "listening")
    await until(lambda: len(stream.frames) > 0, 30, "the owner's speech to reach the caller")
    await stream.press("73#")
    assert await asyncio.wait_for(pending, 60) == {"success": True, "transcript": "73#"}
    return d, rows, owner, call_id, stream


async def test_a_failed_hand_over_falls_back_to_the_relay_and_logs_once(
    sim: TwilioSimulator,
    balancer: Balancer,
    openai: FakeOpenAI,
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
) -> None:
    """The owner's hand-over socket refuses (a file where the socket was: a sibling gone, a
    stale path): the worker the call's stream and webhooks land on keeps each connection,
    untouched, and relays it as between daemons; the call is heard and answered all the
    same, and the failure is logged once, not once per connection."""

    def break_socket(d: DaemonHarness, owner: str) -> None:
        path = handoff_path(d.socket.parent, owner)
        path.rename(path.with_name(path.name + ".moved"))
        path.write_text("")

    d, _rows, owner, call_id, _stream = await _call_on_the_wrong_worker(
        sim, balancer, openai, make_daemon, pg_url, prepare=break_socket
    )
    found = await asyncio.to_thread(_both_statuses, d)
    [other_id] = [i for i in found if i != owner]
    counts = found[other_id]["handoff"]
    assert counts["handedOver"] == {"media": 0, "webhook": 0}, found
    assert counts["relayed"]["media"] == 1 and counts["relayed"]["webhook"] >= 1, found
    assert counts["failed"] == 1 + counts["relayed"]["webhook"], found
    log = d.log_text()
    assert "passed to daemon" in log
    assert log.count("relayed instead; logged once per sibling") == 1, log
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}


def _connections(port: int) -> dict[str, int]:
    """Loopback TCP sockets of this machine on local `port`, by state, except those waiting
    out their close (TIME_WAIT, FIN_WAIT2: closed by us)."""
    states = {"01": "established", "08": "close-wait", "09": "last-ack", "0B": "closing"}
    found: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port and fields[3] in states:
            found[states[fields[3]]] = found.get(states[fields[3]], 0) + 1
    return found


async def _misrouted_streams(
    sim: TwilioSimulator, genuine: SimStream, address: str, call_id: str, count: int
) -> list[int | None]:
    """Open `count` streams at `address` for `call_id` as Twilio would (a signed upgrade,
    `connected`, `start`), with a wrong token; the close code each one gets."""
    headers = {"X-Twilio-Signature": sim.validator.compute_signature(genuine.url, {})}

    async def one(session: aiohttp.ClientSession, n: int) -> int | None:
        async with session.ws_connect(f"ws://{address}/voice/stream", headers=headers) as ws:
            sid = f"MZflood{n:025d}"
            await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            start = {
                "accountSid": sim.account_sid,
                "streamSid": sid,
                "callSid": genuine.call.sid,
                "tracks": ["inbound"],
                "customParameters": {"callId": call_id, "token": "not-the-token"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await ws.send_json(
                {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid}
            )
            while not ws.closed:
                await ws.receive(timeout=60)
            return ws.close_code

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(await asyncio.gather(*(one(session, n) for n in range(count))))


async def _raw_exchange(
    address: str, request: bytes, cuts: list[int], count: int
) -> list[tuple[int, bytes]]:
    """Send `request` over one new connection in pieces (cut at `cuts`, 50 ms apart); read
    `count` answers: (status, body)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        start = 0
        for cut in [*cuts, len(request)]:
            writer.write(request[start:cut])
            await writer.drain()
            start = cut
            await asyncio.sleep(0.05)
        answers = []
        for _ in range(count):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
            assert length is not None, head
            reply = await asyncio.wait_for(reader.readexactly(int(length.group(1))), 30)
            answers.append((int(head.split(b" ", 2)[1]), reply))
        return answers
    finally:
        writer.close()


def test_serve_workers_with_daemon_start_logs_and_stop(make_daemon, pg_url: str) -> None:
    """`serve.workers = 2` in the config and `voicecall daemon start` (in the background): the
    pid it prints is the parent's, both workers' lines are in the one log with their tags
    (`daemon logs --json` gives `worker`), and `daemon stop` stops all three processes."""
    d: DaemonHarness = make_daemon(
        f'store = "{pg_url}"\n[serve]\nport = 0\nworkers = 2\n', start=False
    )
    started = d.cli("daemon", "start", timeout=120)
    assert started.returncode == 0, started.stderr
    parent = int(started.stdout.split("(pid ")[1].split(")")[0])
    wait_for(lambda: len(children(parent)) == 2, 60, message="two workers")

    def both_tagged() -> bool:
        done = d.cli("daemon", "logs", "-n", "200", "--json")
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
        ready = {
            r["worker"]
            for r in lines
            if (r["message"] or "").startswith("voicecall daemon 0.1.0 ready")
        }
        return ready == {"w1", "w2"}

    wait_for(both_tagged, 60, message="both workers' ready lines, tagged, in the log")
    status = d.cli_json("daemon", "status")
    assert status["pid"] == parent and status["worker"]["index"] in (1, 2)
    stopped = d.cli("daemon", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped
    assert not Path(f"/proc/{parent}").exists() or not children(parent)
    assert not d.socket.exists()


def test_daemon_reload_on_one_connection_reloads_every_worker(make_daemon, pg_url: str) -> None:
    """`voicecall daemon reload` reaches one worker; that worker has the parent pass SIGHUP to
    every worker, so both apply the edited file (each logs `config reloaded ... inbound_policy`)."""
    d = start_workers(make_daemon, pg_url)
    text = (d.home / "config.toml").read_text()
    d.write_config('inbound_policy = "open"\n' + text)
    done = d.cli("daemon", "reload")
    assert done.returncode == 0, done.stderr
    assert "inbound_policy" in done.stdout

    def reloaded() -> set[str]:
        return {
            tag
            for tag in ("w1", "w2")
            if any(
                f" {tag} daemon.reload: config reloaded" in line and "inbound_policy" in line
                for line in d.log_text().splitlines()
            )
        }

    wait_for(lambda: reloaded() == {"w1", "w2"}, 30, message="both workers to reload")


@pytest.fixture
async def balancer() -> AsyncIterator[Balancer]:
    async with Balancer() as lb:
        yield lb


def _both_statuses(d: DaemonHarness) -> dict[str, dict[str, Any]]:
    """`daemon.status` of each worker (by cluster id), asking until both have answered."""
    seen: dict[str, dict[str, Any]] = {}

    def both() -> bool:
        for status in statuses(d, 6):
            seen[status["daemonId"]] = status
        return len(seen) == 2

    wait_for(both, 60, message="both workers' status")
    return seen


async def test_misrouted_stream_and_webhooks_are_handed_to_the_owner(
    sim: TwilioSimulator,
    balancer: Balancer,
    openai: FakeOpenAI,
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
) -> None:
    """Two workers behind a balancer that sends every webhook and the media stream of a call
    to the worker that does NOT run it: that worker hands each connection (socket and the
    bytes it read) to its sibling, which serves it as if the provider had connected to it:
    the caller hears the owner's speech on the stream and the keys pressed answer its
    `continue`. Nothing is relayed (`daemon status`: handoff.relayed is 0 on both workers),
    and the stream's session runs on the owner only."""
    room = f"max_pending_connections = {2 * FLOOD}\nmax_pending_connections_per_ip = {FLOOD}\n"
    d, rows, owner, call_id, stream = await _call_on_the_wrong_worker(
        sim, balancer, openai, make_daemon, pg_url, room
    )
    mine = next(i for i, r in enumerate(rows) if r["daemon_id"] == owner)
    assert balancer.handled and all(index != mine for _path, index in balancer.handled), (
        "everything went to the other worker"
    )

    found = await asyncio.to_thread(_both_statuses, d)
    handoff = {daemon_id: s["handoff"] for daemon_id, s in found.items()}
    [other_id] = [i for i in handoff if i != owner]
    assert handoff[other_id]["handedOver"]["media"] == 1, handoff
    assert handoff[other_id]["handedOver"]["webhook"] >= 1, handoff
    assert handoff[owner]["adopted"]["media"] == 1, handoff
    assert handoff[owner]["adopted"]["webhook"] >= 1, handoff
    for counts in handoff.values():
        assert counts["relayed"] == {"media": 0, "webhook": 0}, handoff
        assert counts["failed"] == 0, handoff
    shown = await asyncio.to_thread(d.cli, "daemon", "status")
    assert shown.returncode == 0, shown.stderr
    assert "handoff   to siblings " in shown.stdout and "relayed 0 streams, 0 webhooks" in (
        shown.stdout
    ), shown.stdout
    log = d.log_text()
    assert "passed to daemon" not in log, "no stream was relayed"
    bound = [line for line in log.splitlines() if "bound to call" in line]
    assert len(bound) == 1, bound

    # A flood of misrouted streams for the live call with a wrong token, straight at the worker
    # that does not run it: each one is handed over and refused by the owner (1008) like a
    # stream that reached it; the call's own stream goes on; no descriptor is left behind.
    other_address = next(r["address"] for r in rows if r["daemon_id"] != owner)
    port = int(other_address.rpartition(":")[2])
    before = _connections(port)
    codes = await _misrouted_streams(sim, stream, other_address, call_id, FLOOD)
    assert codes == [1008] * FLOOD, codes
    found = await asyncio.to_thread(_both_statuses, d)
    assert found[other_id]["handoff"]["handedOver"]["media"] == 1 + FLOOD, found
    assert found[owner]["handoff"]["adopted"]["media"] == 1 + FLOOD, found
    assert all(s["handoff"]["relayed"]["media"] == 0 for s in found.values()), found
    # every socket of the flood closed at the worker that holds it (none left half-open)
    await until(lambda: _connections(port) == before, 30, "the flood's sockets closed")
    frames = len(stream.frames)
    pending = asyncio.create_task(
        rpc(d, "voicecall.continue", {"callId": call_id, "message": "And the day?"})
    )
    await until(lambda: len(stream.frames) > frames, 30, "the second question to be heard")
    await until_state(d, call_id, "listening")
    await stream.press("5#")
    assert await asyncio.wait_for(pending, 60) == {"success": True, "transcript": "5#"}
    assert await rpc(d, "voicecall.end", {"callId": call_id}) == {"success": True}
    stopped = await asyncio.to_thread(d.cli, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
