"""Several real daemons on one real PostgreSQL database (SPEC section 16), the Twilio simulator as
the carrier: each daemon its own VOICECALL_HOME, socket and webhook port. Where the provider must
reach "the daemons", a loopback load balancer (tests/fakes/balancer.py) stands in front of them
and every daemon has its URL as `public_url` (signatures are over that URL).

The heartbeat is shortened with VOICECALL_CLUSTER_HEARTBEAT_SECONDS (0.5 s: dead after 2 s of
silence) so a take-over is seen in seconds; the rules are the same as with the default 5 s/20 s.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from daemon.errors import RpcCode
from daemon.rpc.protocol import RpcRemoteError
from tests.configs import plivo_config, telnyx_config, twilio_config
from tests.e2e.test_twilio_streaming import config as twilio_stream_config
from tests.fakes.balancer import Balancer
from tests.fakes.openai import FakeOpenAI
from tests.harness import DaemonHarness
from tests.harness import rpc_async as rpc
from tests.harness import until_async as until
from tests.harness import until_state_async as until_state
from tests.simulators.plivo import Delivery as PlivoDelivery
from tests.simulators.plivo import PlivoSimulator
from tests.simulators.telnyx import TelnyxSimulator
from tests.simulators.twilio import Delivery, TwilioSimulator

pytestmark = pytest.mark.e2e
SIMULATOR = TwilioSimulator  # the shared `sim` fixture runs it (tests/conftest.py)

TO = "+15550001234"
FROM = "+15550100000"
BEAT = "0.5"


def config(sim: TwilioSimulator, pg_url: str, *, port: int = 0, public_url: str = "") -> str:
    public = f'public_url = "{public_url}"\n' if public_url else ""
    return twilio_config(sim, port=port, top=f'store = "{pg_url}"\n{public}')


async def daemon(
    make_daemon: Callable[..., DaemonHarness], text: str, beat: str = BEAT
) -> DaemonHarness:
    """A daemon with the short test heartbeat."""
    d: DaemonHarness = make_daemon(text, start=False)
    d.env["VOICECALL_CLUSTER_HEARTBEAT_SECONDS"] = beat
    d.env.pop("OPENAI_API_KEY", None)  # vendor keys come from the test's config only
    await asyncio.to_thread(d.start, timeout=60)
    return d


async def record(d: DaemonHarness, call_id: str) -> dict[str, Any]:
    result = await rpc(d, "voicecall.status", {"callId": call_id})
    assert result["found"], result
    call: dict[str, Any] = result["call"]
    return call


async def query(url: str, sql: str, *args: Any) -> list[Any]:
    """Rows straight from the database (not through voicecall)."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def active_calls(d: DaemonHarness) -> int:
    return int((await rpc(d, "daemon.status"))["activeCalls"])


async def test_kill_9_one_daemon_mid_call_and_another_takes_its_calls_over(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """A runs two answered calls, B runs none; `kill -9` A. Within the take-over bound B runs
    both, reconciled with Twilio's status API: the one that ended at Twilio while A was dead is
    closed `completed`, the other stays up and B can hang it up. Nothing is dialled again."""
    a = await daemon(make_daemon, config(sim, pg_url))
    b = await daemon(make_daemon, config(sim, pg_url))
    ids = []
    for message in ("First call", "Second call"):
        result = await rpc(
            a, "voicecall.initiate", {"to": TO, "message": message, "mode": "conversation"}
        )
        ids.append(result["callId"])
    for call_id in ids:
        await until_state(a, call_id, "listening", "active", "speaking")
    keep, gone = ids
    assert await active_calls(a) == 2 and await active_calls(b) == 0
    sid_gone = (await record(a, gone))["providerCallId"]

    a.kill9()
    killed = time.monotonic()
    await sim.callee_hangup(sid_gone)  # Twilio's callback finds A gone: only its API knows

    deadline = killed + 30
    while await active_calls(b) != 1 or (await record(b, gone))["state"] != "completed":
        states = [(await record(b, c))["state"] for c in ids]
        assert time.monotonic() < deadline, f"B did not take A's calls over in 30 s: {states}"
        await asyncio.sleep(0.1)
    took = time.monotonic() - killed
    assert took < 20, f"with a {BEAT} s heartbeat the take-over took {took:.1f} s"
    kept = await record(b, keep)
    assert kept["state"] in ("listening", "active", "speaking"), (kept, sim.calls)
    fetched = [r for r in sim.requests if r.method == "GET" and "/Calls/" in r.path]
    assert fetched, "B asked Twilio's status API about the calls it took"

    assert await rpc(b, "voicecall.end", {"callId": keep}) == {"success": True}
    await until_state(b, keep, "hangup-bot")
    sid_keep = (await record(b, keep))["providerCallId"]
    await until(lambda: sim.calls[sid_keep].ended, 10, "Twilio to end the call")
    assert sim.calls[sid_keep].ended_by == "api"
    assert len(sim.creates) == 2, "nothing was dialled again"
    log = b.log_text()
    assert f"taking over call {keep}" in log and f"taking over call {gone}" in log


# ---------------------------------------------------------------------- behind a load balancer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def balancer() -> AsyncIterator[Balancer]:
    async with Balancer() as lb:
        yield lb


async def pair(
    make_daemon: Callable[..., DaemonHarness], sim: TwilioSimulator, pg_url: str, lb: Balancer
) -> tuple[DaemonHarness, DaemonHarness]:
    """Daemons A and B behind `lb`, sharing `pg_url` and one public_url (the balancer's)."""
    ports = [free_port(), free_port()]
    public = f"{lb.origin}/voice/webhook"
    a = await daemon(make_daemon, config(sim, pg_url, port=ports[0], public_url=public))
    b = await daemon(make_daemon, config(sim, pg_url, port=ports[1], public_url=public))
    lb.backends = [f"http://127.0.0.1:{port}" for port in ports]
    return a, b


def handled_by(lb: Balancer, call_id: str) -> set[int]:
    """Which backends the balancer gave the webhooks of one call to."""
    return {index for path, index in lb.handled if call_id in path}


async def test_tail_on_any_daemon_sees_every_calls_events(
    sim: TwilioSimulator, balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """`tail` on B shows, live, the events of a call A placed and runs."""
    a, b = await pair(make_daemon, sim, pg_url, balancer)
    seen: list[dict[str, Any]] = []
    subscribed = threading.Event()

    def follow() -> None:
        with b.client(timeout=30) as client:
            client.call("voicecall.tail", {"since": 0})
            subscribed.set()
            for message in client.notifications():
                seen.append(message["params"]["event"])
                if message["params"]["event"]["type"] == "call.ended":
                    return

    follower = asyncio.create_task(asyncio.to_thread(follow))
    assert await asyncio.to_thread(subscribed.wait, 10)
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    assert await rpc(a, "voicecall.end", {"callId": call_id}) == {"success": True}
    await asyncio.wait_for(follower, 30)
    kinds = [e["type"] for e in seen if e["callId"] == call_id]
    assert kinds[0] == "call.initiated" and kinds[-1] == "call.ended", kinds
    assert {"call.ringing", "call.answered", "call.speaking"} <= set(kinds), kinds
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs), "in the order they were stored"
    assert await active_calls(b) == 0, "B only watched: A ran the call"
    ids = {(await rpc(d, "daemon.status"))["daemonId"] for d in (a, b)}
    assert len(ids) == 2 and None not in ids, ids


async def test_continue_on_a_returns_the_transcript_that_reached_b(
    sim: TwilioSimulator, balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """Every webhook of A's call lands on B; A's `continue` still returns what the caller said
    (B sends each webhook to A, and A's TwiML answers go back through B)."""
    a, b = await pair(make_daemon, sim, pg_url, balancer)
    balancer.route = lambda path: 1  # everything to B
    call_id = (
        await rpc(
            a,
            "voicecall.initiate",
            {"to": TO, "message": "Hi, the clinic.", "mode": "conversation"},
        )
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    sim.say_next("Tuesday works.")
    turn = await rpc(a, "voicecall.continue", {"callId": call_id, "message": "Does Tuesday work?"})
    assert turn == {"success": True, "transcript": "Tuesday works."}
    assert handled_by(balancer, call_id) == {1}, "the call's webhooks all reached B"
    assert await active_calls(a) == 1 and await active_calls(b) == 0
    transcript = [(t["speaker"], t["text"]) for t in (await record(b, call_id))["transcript"]]
    assert transcript[-2:] == [("bot", "Does Tuesday work?"), ("user", "Tuesday works.")]
    sid = (await record(a, call_id))["providerCallId"]
    assert "Does Tuesday work?" in sim.calls[sid].spoken, "A's TwiML reached Twilio via B"


async def test_speak_dtmf_and_end_on_b_reach_the_daemon_running_the_call(
    sim: TwilioSimulator, balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """`speak`, `dtmf` and `end` sent to B act on the call A runs; errors come back as A
    gives them."""
    a, b = await pair(make_daemon, sim, pg_url, balancer)
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    sid = (await record(a, call_id))["providerCallId"]
    assert await rpc(b, "voicecall.speak", {"callId": call_id, "message": "Said via B"}) == {
        "success": True
    }
    await until(lambda: "Said via B" in sim.calls[sid].spoken, 15, "Twilio to say it")
    assert await rpc(b, "voicecall.dtmf", {"callId": call_id, "digits": "42"}) == {"success": True}
    await until(lambda: "42" in sim.calls[sid].digits, 15, "Twilio to play the digits")
    with pytest.raises(RpcRemoteError) as bad:
        await rpc(b, "voicecall.dtmf", {"callId": call_id, "digits": "x"})
    assert bad.value.code == RpcCode.INVALID_PARAMS
    assert await rpc(b, "voicecall.end", {"callId": call_id}) == {"success": True}
    await until(lambda: sim.calls[sid].ended_by == "api", 15, "Twilio to end the call")
    assert (await until_state(a, call_id, "hangup-bot"))["state"] == "hangup-bot"
    assert await active_calls(b) == 0


@pytest.mark.parametrize("policy", ["open", "disabled"])
async def test_a_replay_is_caught_whichever_daemon_saw_the_first_delivery(
    sim: TwilioSimulator,
    balancer: Balancer,
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
    policy: str,
) -> None:
    """An inbound call's voice request reaches A; the same delivery, byte for byte, sent to B is
    answered as a replay (an empty `<Response/>`, SPEC 8.6): no second call, nothing applied
    twice. `open`: A runs the call, so B hands the replay to A, which recognises it; `disabled`:
    A refused the call (it is over), so B answers itself from the shared replay cache."""
    ports = [free_port(), free_port()]
    public = f"{balancer.origin}/voice/webhook"
    extra = f'inbound_policy = "{policy}"\n'
    a = await daemon(make_daemon, extra + config(sim, pg_url, port=ports[0], public_url=public))
    b = await daemon(make_daemon, extra + config(sim, pg_url, port=ports[1], public_url=public))
    balancer.backends = [f"http://127.0.0.1:{port}" for port in ports]
    balancer.route = lambda path: 0  # the first delivery to A
    call = await sim.inbound("+15550009999", FROM, public)
    await sim.wait_for(lambda: any(d.kind == "voice" and d.status for d in sim.deliveries), 15)
    first = next(d for d in sim.deliveries if d.kind == "voice")
    assert first.status == 200, first
    [placed] = (await rpc(a, "voicecall.list", {}))["calls"]
    assert placed["direction"] == "inbound" and placed["providerCallId"] == call.sid
    assert (await active_calls(a)) == (1 if policy == "open" else 0)
    b_url = balancer.backends[1] + "/voice/webhook"
    again = await sim.post(Delivery(b_url, dict(first.params), dict(first.headers), "voice"))
    assert again.status == 200, again
    assert again.reply.endswith("<Response />"), again.reply
    assert again.reply != first.reply, "the call's TwiML is not run again"
    calls = (await rpc(b, "voicecall.list", {}))["calls"]
    assert [c["callId"] for c in calls] == [placed["callId"]], "the replay made no second call"
    assert await active_calls(b) == 0
    replays = "replayed twilio webhook delivery ignored"
    log = (a if policy == "open" else b).log_text
    await until(lambda: replays in log(), 15, "the replay to be logged")


async def test_a_daemon_stopped_cleanly_hands_its_calls_over_at_once(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """`daemon stop` on A removes A from the group: B takes A's live call at its next check,
    well before A could have been presumed dead (four heartbeats), and can end it."""
    a = await daemon(make_daemon, config(sim, pg_url))
    b = await daemon(make_daemon, config(sim, pg_url))
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    await asyncio.to_thread(a.stop)
    stopped = time.monotonic()
    while await active_calls(b) != 1:
        assert time.monotonic() - stopped < 30, "B never took the call"
        await asyncio.sleep(0.05)
    took = time.monotonic() - stopped
    assert took < 4 * float(BEAT), f"took {took:.2f} s: the call waited for A to look dead"
    assert await rpc(b, "voicecall.end", {"callId": call_id}) == {"success": True}
    assert len(sim.creates) == 1


async def test_a_media_stream_landing_on_b_reaches_the_daemon_running_the_call(
    sim: TwilioSimulator,
    balancer: Balancer,
    openai: FakeOpenAI,
    make_daemon: Callable[..., DaemonHarness],
    pg_url: str,
) -> None:
    """Webhooks reach A, which runs the call; the call's media websocket reaches B. B passes
    the stream through to A: A's speech reaches the caller over it, the keys the caller presses
    on it answer A's `continue`, and B runs no session of its own."""
    ports = [free_port(), free_port()]
    public = f"{balancer.origin}/voice/webhook"
    text = twilio_stream_config(sim, openai).replace("[serve]\nport = 0", "[serve]\nport = {port}")
    text = f'store = "{pg_url}"\npublic_url = "{public}"\n' + text
    a = await daemon(make_daemon, text.replace("{port}", str(ports[0])))
    b = await daemon(make_daemon, text.replace("{port}", str(ports[1])))
    balancer.backends = [f"http://127.0.0.1:{port}" for port in ports]
    balancer.route = lambda path: 1 if path.startswith("/voice/stream") else 0
    call_id = (
        await rpc(
            a,
            "voicecall.initiate",
            {"to": TO, "message": "Hi, the clinic.", "mode": "conversation"},
        )
    )["callId"]
    await sim.wait_for(lambda: bool(sim.calls) and bool(sim.only_call().media), 20)
    stream = sim.only_call().media[-1]
    await until(
        lambda: any(
            path.startswith("/voice/stream") and index == 1 for path, index in balancer.handled
        ),
        20,
        "the stream to reach B",
    )
    pending = asyncio.create_task(
        rpc(a, "voicecall.continue", {"callId": call_id, "message": "Which option?"})
    )
    await until_state(a, call_id, "listening")
    await until(lambda: len(stream.frames) > 0, 20, "A's speech to reach the caller")
    await stream.press("73#")
    assert await asyncio.wait_for(pending, 30) == {"success": True, "transcript": "73#"}
    assert "passed to daemon" in b.log_text()
    assert "bound to call" in a.log_text() and "bound to call" not in b.log_text()


# ---------------------------------------------------------------------- races between daemons


ROUNDS = 20


def voice_request(sim: TwilioSimulator, public: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A new inbound call's voice request as Twilio signs it: (CallSid, params, headers)."""
    sid = "CA" + secrets.token_hex(16)
    caller = "+1555000" + str(secrets.randbelow(9000) + 1000)
    params = {
        "AccountSid": sim.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": "ringing",
        "Called": FROM,
        "Caller": caller,
        "Direction": "inbound",
        "From": caller,
        "To": FROM,
    }
    return sid, params, sim.sign(public, params)


async def test_the_first_delivery_of_a_new_call_at_two_daemons_at_once_makes_one_call(
    sim: TwilioSimulator, balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """The same signed voice request of a new inbound call reaches A and B at the same moment
    (a balancer's retry, a duplicated delivery), round after round: each call gets exactly one
    record and one owner, one daemon answers it with the call's TwiML and the other as a replay
    (an empty `<Response/>`, SPEC 8.6), both 200; nothing is applied twice."""
    ports = [free_port(), free_port()]
    public = f"{balancer.origin}/voice/webhook"
    extra = 'inbound_policy = "open"\nmax_concurrent_calls = 64\n'
    a = await daemon(make_daemon, extra + config(sim, pg_url, port=ports[0], public_url=public))
    b = await daemon(make_daemon, extra + config(sim, pg_url, port=ports[1], public_url=public))
    urls = [f"http://127.0.0.1:{port}/voice/webhook" for port in ports]
    sids = []
    for _ in range(ROUNDS):
        sid, params, headers = voice_request(sim, public)
        sids.append(sid)
        answers = await asyncio.gather(
            *(sim.post(Delivery(url, dict(params), dict(headers), "voice")) for url in urls)
        )
        assert [d.status for d in answers] == [200, 200], answers
        replies = sorted((d.reply for d in answers), key=len)
        assert replies[0].endswith("<Response />"), replies
        assert "<Response />" not in replies[1] and "<Gather" in replies[1], replies
    rows = await query(pg_url, "SELECT provider_call_id, owner FROM voicecall_calls")
    per_sid: dict[str, int] = {}
    for row in rows:
        per_sid[row["provider_call_id"]] = per_sid.get(row["provider_call_id"], 0) + 1
    assert per_sid == dict.fromkeys(sids, 1), "one record per call"
    assert await active_calls(a) + await active_calls(b) == ROUNDS
    offered = await query(
        pg_url, "SELECT count(*) AS n FROM voicecall_events WHERE type = 'call.initiated'"
    )
    assert offered[0]["n"] == ROUNDS, "each call was offered once"


async def test_two_deliveries_of_a_new_plivo_call_at_two_daemons_at_once_make_one_call(
    balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """Plivo's answer request of a new inbound call reaches A and B at once, each signed with
    its own nonce (a retry is signed afresh, so it is no replay, and Plivo's answer request has
    no event id to deduplicate): round after round, one record per call (the store refuses a
    second live record of a provider call id) and both answers are the call's XML, the second
    daemon passing its delivery to the one that stored the call."""
    async with PlivoSimulator() as plivo:
        ports = [free_port(), free_port()]
        public = f"{balancer.origin}/voice/webhook"
        top = f'store = "{pg_url}"\npublic_url = "{public}"\ninbound_policy = "open"\n'
        top += "max_concurrent_calls = 64\n"
        texts = [plivo_config(plivo, port=port, top=top) for port in ports]
        a, b = [await daemon(make_daemon, text) for text in texts]
        urls = [f"http://127.0.0.1:{port}/voice/webhook" for port in ports]
        uuids = []
        for _ in range(ROUNDS):
            call_uuid = str(uuid.uuid4())
            uuids.append(call_uuid)
            params = {
                "CallUUID": call_uuid,
                "From": "+15550007777",
                "To": FROM,
                "Direction": "inbound",
                "CallStatus": "ringing",
                "Event": "StartApp",
            }
            answers = await asyncio.gather(
                *(
                    plivo.post(PlivoDelivery(url, dict(params), plivo.sign(public, params)))
                    for url in urls
                )
            )
            assert [d.status for d in answers] == [200, 200], answers
            for answer in answers:
                assert answer.reply.startswith("<?xml") and "<Response>" in answer.reply, answer
        rows = await query(pg_url, "SELECT provider_call_id FROM voicecall_calls")
        assert sorted(r["provider_call_id"] for r in rows) == sorted(uuids), "one record per call"
        assert await active_calls(a) + await active_calls(b) == ROUNDS


# ---------------------------------------------------------------------- an owner that is gone


async def test_a_hang_up_reaching_b_after_a_was_killed_is_applied_not_refused(
    sim: TwilioSimulator, balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """A runs a call and is killed (`kill -9`); the callee hangs up at once and Twilio's status
    callback, which Twilio does not retry, reaches B while A is not yet provably dead. B does
    not answer 503: it waits until A is dead by the heartbeat rule (four silent beats), takes
    the call over (reconciled with Twilio, not re-dialled) and applies the hang-up: 200."""
    a, b = await pair(make_daemon, sim, pg_url, balancer)
    balancer.route = lambda path: 0
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    sid = (await record(a, call_id))["providerCallId"]
    a.kill9()
    balancer.route = lambda path: 1  # A is gone: everything reaches B
    started = time.monotonic()
    await sim.callee_hangup(sid)
    took = time.monotonic() - started
    [hangup] = [d for d in sim.deliveries if d.params.get("CallStatus") == "completed"]
    assert hangup.status == 200, (hangup.status, hangup.reply)
    assert took < 15, f"{took:.1f} s: Twilio gives up after 15 s"
    assert (await record(b, call_id))["state"] == "completed"
    assert len(sim.creates) == 1, "nothing was dialled again"
    assert f"taking over call {call_id}" in b.log_text()


async def test_end_on_b_for_a_killed_daemons_call_does_not_wait_out_its_deadline(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """`voicecall end` on B about a call A ran, just after A was killed: B sends it to A, sees A
    die by the heartbeat rule while it waits, takes the call over and ends it itself, within
    seconds rather than the forwarded request's deadline (ring timeout + 30 s)."""
    a = await daemon(make_daemon, config(sim, pg_url))
    b = await daemon(make_daemon, config(sim, pg_url))
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    sid = (await record(a, call_id))["providerCallId"]
    a.kill9()
    started = time.monotonic()
    ended = await asyncio.wait_for(rpc(b, "voicecall.end", {"callId": call_id}), 30)
    assert ended == {"success": True}
    assert time.monotonic() - started < 15
    await until(lambda: sim.calls[sid].ended_by == "api", 15, "Twilio to end the call")
    assert (await record(b, call_id))["state"] == "hangup-bot"
    assert len(sim.creates) == 1


async def test_speak_on_b_while_the_calls_daemon_restarts_reaches_the_restarted_daemon(
    sim: TwilioSimulator, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """A is killed and started again (same state folder, so the same id) while `speak` on B
    waits for A: the message to the old process is lost, so B sends it once more to the new
    one, which took its call back; the caller hears it, long before the request's deadline."""
    beat = "2"  # A's restart must be quicker than four silent beats (8 s): no take-over
    a = await daemon(make_daemon, config(sim, pg_url), beat)
    b = await daemon(make_daemon, config(sim, pg_url), beat)
    call_id = (
        await rpc(a, "voicecall.initiate", {"to": TO, "message": "Hello", "mode": "conversation"})
    )["callId"]
    await until_state(a, call_id, "listening", "active", "speaking")
    sid = (await record(a, call_id))["providerCallId"]
    a.kill9()
    started = time.monotonic()
    said = asyncio.create_task(
        rpc(b, "voicecall.speak", {"callId": call_id, "message": "Said after a restart"})
    )
    await asyncio.sleep(0.5)
    assert not said.done()
    await asyncio.to_thread(a.start, timeout=60)
    assert await asyncio.wait_for(said, 30) == {"success": True}
    assert time.monotonic() - started < 30
    await until(lambda: "Said after a restart" in sim.calls[sid].spoken, 15, "Twilio to say it")
    assert await active_calls(a) == 1 and await active_calls(b) == 0, "A took its call back"
    assert "restarted while a request waited" in b.log_text()
    assert len(sim.creates) == 1


async def test_telnyx_webhooks_landing_on_b_reach_the_daemon_running_the_call(
    balancer: Balancer, make_daemon: Callable[..., DaemonHarness], pg_url: str
) -> None:
    """Telnyx names a call by our `client_state` (and its call_control_id): every webhook of the
    call A places lands on B, which finds the call's daemon by it; A's `continue` returns what
    the caller said, and the caller's hang-up ends the call on A."""
    async with TelnyxSimulator() as telnyx:
        ports = [free_port(), free_port()]
        public = f"{balancer.origin}/voice/webhook"
        top = f'store = "{pg_url}"\npublic_url = "{public}"\n'
        texts = [telnyx_config(telnyx, port=port, top=top) for port in ports]
        a, b = [await daemon(make_daemon, text) for text in texts]
        balancer.backends = [f"http://127.0.0.1:{port}" for port in ports]
        balancer.route = lambda path: 1  # every webhook to B
        telnyx.replies = ["Yes, Tuesday works."]
        call_id = (
            await rpc(
                a,
                "voicecall.initiate",
                {"to": TO, "message": "Hi, the clinic.", "mode": "conversation"},
            )
        )["callId"]
        await until_state(a, call_id, "speaking", "active", "answered", "listening")
        turn = await rpc(a, "voicecall.continue", {"callId": call_id, "message": "Tuesday?"})
        assert turn == {"success": True, "transcript": "Yes, Tuesday works."}
        assert {index for _, index in balancer.handled} == {1}, "every webhook reached B"
        assert await active_calls(a) == 1 and await active_calls(b) == 0
        await telnyx.caller_hangup(telnyx.only_call())
        assert (await until_state(a, call_id, "hangup-user"))["state"] == "hangup-user"
        assert await active_calls(a) == 0
