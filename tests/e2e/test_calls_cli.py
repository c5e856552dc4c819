"""The walking skeleton through the real CLI and a real daemon with the mock provider."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

CONVERSATION = FAST_MOCK + 'replies = ["Yes, Tuesday works.", "No, that is all."]\n'


def test_notify_call_from_a_fresh_home_with_no_config(make_daemon) -> None:
    """`voicecall call` with no config file autostarts the daemon and completes a notify call."""
    d: DaemonHarness = make_daemon(None, start=False)
    assert not (d.home / "config.toml").exists()
    done = d.cli("call", "--to", "+15550001234", "--message", "Hello from voicecall", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["initiated"] is True and result["to"] == "+15550001234"
    assert result["mode"] == "notify"
    call = d.wait_state(result["callId"], "hangup-bot", timeout=15)
    assert [t["speaker"] for t in call["transcript"]] == ["bot"]
    assert call["transcript"][0]["text"] == "Hello from voicecall"
    assert call["answeredAt"] and call["endedAt"]
    status = d.cli_json("daemon", "status")
    assert status["running"] is True and status["provider"] == "mock"
    d.cli("daemon", "stop")
    wait_for(lambda: not d.socket.exists(), message="socket removed")


def test_call_wait_prints_events_until_the_end(make_daemon) -> None:
    """`call --wait` follows the call and exits 0 when the bot hung up."""
    d = make_daemon(FAST_MOCK + "[outbound]\nnotify_hangup_delay_seconds = 0\n")
    done = d.cli("call", "--to", "+15550001234", "-m", "Hi there", "--wait")
    assert done.returncode == 0, done.stderr
    call_id = done.stdout.strip()  # stdout: the bare id; the events are progress (stderr)
    lines = done.stderr.splitlines()
    assert lines[0] == f"Calling +15550001234 (notify): call {call_id}"
    assert any("call.speaking bot: Hi there" in ln and call_id in ln for ln in lines)
    assert lines[-1].endswith("call.ended reason=hangup-bot")


def test_conversation_with_two_continue_turns(make_daemon) -> None:
    """Two `continue` turns return the mock replies in order and land in the transcript."""
    d = make_daemon(CONVERSATION)
    call_id = d.cli_json(
        "call", "--to", "+15550001234", "-m", "Hi, it's the clinic.", "--mode", "conversation"
    )["callId"]
    d.wait_state(call_id, "speaking", "active", "answered")
    first = d.cli("continue", "--call-id", call_id, "-m", "Does Tuesday work?")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Yes, Tuesday works."
    second = d.cli_json("continue", "--call-id", call_id, "-m", "Anything else?")
    assert second == {"success": True, "transcript": "No, that is all."}
    call = d.call_record(call_id)
    assert [(t["speaker"], t["text"]) for t in call["transcript"]] == [
        ("bot", "Hi, it's the clinic."),
        ("bot", "Does Tuesday work?"),
        ("user", "Yes, Tuesday works."),
        ("bot", "Anything else?"),
        ("user", "No, that is all."),
    ]
    assert call["metadata"]["turnCount"] == 2
    assert d.cli_json("end", "--call-id", call_id) == {"success": True}
    assert d.call_record(call_id)["state"] == "hangup-bot"
    latency = d.cli_json("latency")
    assert latency["turnLatency"]["count"] == 2


def test_speak_and_status_human_output(make_daemon) -> None:
    """`speak` and `status` print readable text; status lists active calls."""
    d = make_daemon(CONVERSATION)
    call_id = d.cli_json("call", "--to", "+15550001234", "-m", "Hello", "--mode", "conversation")[
        "callId"
    ]
    d.wait_state(call_id, "speaking")
    spoken = d.cli("speak", "--call-id", call_id, "-m", "One moment please.")
    assert spoken.returncode == 0 and spoken.stdout.strip() == "Spoken."
    listing = d.cli("status")
    assert call_id in listing.stdout and "speaking" in listing.stdout
    detail = d.cli("status", "--call-id", call_id)
    assert "bot : One moment please." in detail.stdout
    assert d.cli_json("status")["calls"][0]["callId"] == call_id
    d.cli("end", "--call-id", call_id)
    assert d.cli("status").stdout.strip() == "No active calls."


def test_tail_prints_backlog_then_follows(make_daemon) -> None:
    """`tail --no-follow --json` prints stored events; a following tail sees new ones live."""
    d = make_daemon(FAST_MOCK + "[outbound]\nnotify_hangup_delay_seconds = 0\n")
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voicecall_cli",
            "--socket",
            str(d.socket),
            "tail",
            "--json",
            "--since",
            "0",
        ],
        env=d.env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        wait_for(lambda: d.rpc("daemon.status")["pid"], message="daemon")
        # The follower must be subscribed before the call starts; poll its connection.
        call_id = None
        seen: list[dict[str, object]] = []
        wait_for(
            lambda: d.rpc("daemon.status")["tailSubscribers"] == 1, message="tail subscription"
        )
        call_id = d.cli_json("call", "--to", "+15550001234", "-m", "Tail me")["callId"]
        assert follower.stdout is not None
        for line in follower.stdout:
            event = json.loads(line)
            seen.append(event)
            if event["type"] == "call.ended":
                break
        types = [e["type"] for e in seen if e["callId"] == call_id]
        assert types == [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.speaking",
            "call.ended",
        ]
        assert all(isinstance(e["seq"], int) for e in seen)
    finally:
        follower.terminate()
        follower.wait(5)
    backlog = d.cli("tail", "--call-id", call_id, "--no-follow", "--json", "--since", "3")
    assert backlog.returncode == 0, backlog.stderr
    assert [json.loads(x)["type"] for x in backlog.stdout.splitlines()] == [
        "call.answered",
        "call.speaking",
        "call.ended",
    ]
    human = d.cli("tail", "--call-id", call_id, "--no-follow", "--since", "1")
    assert "call.ended reason=hangup-bot" in human.stdout


def test_exit_statuses(make_daemon) -> None:
    """0 ok, 1 failed operation, 2 usage error, 3 daemon unreachable."""
    d = make_daemon(FAST_MOCK)
    unknown = d.cli("status", "--call-id", "nope", "--json")
    assert unknown.returncode == 1 and json.loads(unknown.stdout) == {"found": False}
    human = d.cli("status", "--call-id", "nope")
    assert human.returncode == 1 and human.stderr.startswith("Error: no call with id 'nope'")
    assert d.cli("end", "--call-id", "nope").returncode == 1
    assert d.cli("call", "--bogus").returncode == 2
    bad_to = d.cli("call", "--to", "5550001234", "-m", "x")
    assert bad_to.returncode == 2 and "E.164" in bad_to.stderr
    d.stop()
    down = d.cli("--no-autostart", "status")
    assert down.returncode == 3 and "voicecall daemon start" in down.stderr
    env_off = subprocess.run(
        [sys.executable, "-m", "voicecall_cli", "--socket", str(d.socket), "status"],
        env={**d.env, "VOICECALL_NO_AUTOSTART": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert env_off.returncode == 3
    not_running = d.cli("daemon", "status", "--json")
    assert not_running.returncode == 3 and json.loads(not_running.stdout) == {"running": False}


def test_socket_is_private_and_single_instance(make_daemon) -> None:
    """Socket 0600 in a 0700 folder; a second daemon on the same socket is refused."""
    d = make_daemon(FAST_MOCK)
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o700
    second = subprocess.run(
        [sys.executable, "-m", "daemon", "--socket", str(d.socket)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert d.rpc("daemon.status")["running"] is True


def test_stale_socket_is_removed_at_start(make_daemon) -> None:
    """A socket file nobody listens on does not stop the daemon from starting."""
    import socket as socketlib

    d = make_daemon(FAST_MOCK, start=False)
    d.socket.parent.mkdir(parents=True, mode=0o700)
    stale = socketlib.socket(socketlib.AF_UNIX)
    stale.bind(str(d.socket))
    stale.close()
    d.start()
    assert d.rpc("daemon.status")["running"] is True


def test_bad_config_is_refused_naming_the_key(make_daemon) -> None:
    """The daemon refuses to start on a bad config; the CLI says which key and why."""
    d = make_daemon(
        "max_duration_seconds = -5\n[serve]\nport = 'abc'\nbogus_key = 1\n", start=False
    )
    done = d.cli("status")
    assert done.returncode == 3
    assert 'serve.port = "abc": expected an integer from 0 to 65535' in done.stderr
    assert "serve.bogus_key" in done.stderr and "unknown key" in done.stderr
    assert "max_duration_seconds = -5" in done.stderr
    assert not d.socket.exists()


def test_cli_import_stays_light() -> None:
    """The CLI package imports no aiohttp, uvloop, numpy or provider SDK."""
    code = (
        "import sys, voicecall_cli.main\n"
        "heavy = {'aiohttp','uvloop','twilio','telnyx','plivo','numpy','soxr','keyring',"
        "'tomlkit','mcp','nacl'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_concurrent_autostarts_end_with_one_daemon(make_daemon) -> None:
    """Six CLIs autostarting at once all succeed against one daemon; its socket stays."""
    d = make_daemon(FAST_MOCK, start=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "voicecall_cli", "--socket", str(d.socket), "status", "--json"],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    pid = d.rpc("daemon.status")["pid"]
    assert d.socket.exists()
    assert d.cli_json("daemon", "status")["pid"] == pid
    d.cli("daemon", "stop")
