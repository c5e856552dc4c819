"""Ctrl-C, scriptable `call` output and the terminal status line (SPEC section 4).

Ctrl-C is a real SIGINT from a real pseudo-terminal (pexpect), against a real daemon.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pexpect
import pytest

from daemon.rpc.protocol import RpcRemoteError
from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

# The first `continue` hears nothing (an empty utterance is ignored), the second hears a reply.
SILENT_THEN_REPLY = FAST_MOCK + 'replies = ["", "Second answer"]\n'


def _spawn(d: DaemonHarness, *args: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "voicecall_cli", "--socket", str(d.socket), *args],
        env=env or d.env,
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        dimensions=(24, 200),
    )


def _conversation(d: DaemonHarness) -> str:
    done = d.cli("call", "--to", "+15550001234", "-m", "Hi there", "--mode", "conversation")
    assert done.returncode == 0, done.stderr
    call_id = done.stdout.strip()
    d.wait_state(call_id, "speaking", "active", "answered")
    return call_id


def test_call_prints_the_bare_id_on_stdout_for_shell_capture(make_daemon) -> None:
    """`ID=$(voicecall call ...)` captures exactly the id; progress goes to stderr."""
    d = make_daemon(SILENT_THEN_REPLY)
    script = (
        'ID=$("$PY" -m voicecall_cli --socket "$SOCK" call --to +15550001234 -m Hello '
        '--mode conversation) && "$PY" -m voicecall_cli --socket "$SOCK" status '
        '--call-id "$ID" --json'
    )
    env = {**d.env, "PY": sys.executable, "SOCK": str(d.socket)}
    done = subprocess.run(
        ["sh", "-c", script],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"found":true' in done.stdout
    assert "Calling +15550001234 (conversation): call " in done.stderr
    # not a terminal: no status line at all
    assert "placing the call" not in done.stderr


def test_ctrl_c_during_continue_exits_130_and_frees_the_call(make_daemon) -> None:
    """SIGINT during `continue`: exit 130, no `Aborted!`; the call stays up and the next
    `continue` works at once instead of failing with "already waiting"."""
    d = make_daemon(SILENT_THEN_REPLY)
    call_id = _conversation(d)
    child = _spawn(d, "continue", "--call-id", call_id, "-m", "Are you still there?")
    child.expect("waiting for the caller's reply on call")  # the status line, on the terminal
    d.wait_state(call_id, "listening")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)
    assert "Aborted" not in (child.before or "")
    started = time.monotonic()
    again = d.cli("continue", "--call-id", call_id, "-m", "Hello?", "--timeout", "20")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "Second answer"
    assert time.monotonic() - started < 15
    assert d.call_record(call_id)["endedAt"] is None


def test_cancel_rpc_fails_the_pending_continue_at_once(make_daemon) -> None:
    """`voicecall.cancel` answers the pending `continue` with -32005 immediately."""
    d = make_daemon(SILENT_THEN_REPLY)
    call_id = _conversation(d)
    outcome: dict[str, Any] = {}

    def wait() -> None:
        try:
            d.rpc("voicecall.continue", {"callId": call_id, "message": "Hello?"}, timeout=120)
        except RpcRemoteError as exc:
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    d.wait_state(call_id, "listening")
    assert d.rpc("voicecall.cancel", {"callId": call_id}) == {"success": True, "cancelled": True}
    cancelled_at = time.monotonic()
    waiter.join(30)
    assert outcome["error"].code == -32005
    assert "cancelled" in outcome["error"].message
    assert outcome["at"] - cancelled_at < 5
    # nothing pending any more: a second cancel is a no-op success; the call is still up
    assert d.rpc("voicecall.cancel", {"callId": call_id})["cancelled"] is False
    assert d.call_record(call_id)["endedAt"] is None
    with pytest.raises(RpcRemoteError) as unknown:
        d.rpc("voicecall.cancel", {"callId": "no-such-call"})
    assert unknown.value.code == -32001


def test_ctrl_c_while_following_a_call_exits_130(make_daemon) -> None:
    """`call --wait` interrupted: exit 130, the call stays up."""
    d = make_daemon(SILENT_THEN_REPLY)
    child = _spawn(
        d, "call", "--to", "+15550001234", "-m", "Hi", "--mode", "conversation", "--wait"
    )
    child.expect("following call")
    child.expect("call.speaking")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Aborted" not in (child.before or "")
    calls = d.rpc("voicecall.status")["calls"]
    assert len(calls) == 1 and calls[0]["endedAt"] is None


def test_status_line_respects_no_color(make_daemon) -> None:
    """On a terminal the wait is shown; with NO_COLOR it carries no colour escape."""
    d = make_daemon(SILENT_THEN_REPLY)
    call_id = _conversation(d)
    child = _spawn(
        d, "continue", "--call-id", call_id, "-m", "Still there?", env={**d.env, "NO_COLOR": "1"}
    )
    child.expect(r"\| waiting for the caller's reply on call " + call_id)
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert "\x1b[" not in (child.before or "")
    assert child.exitstatus == 130


def test_autostart_shows_what_it_waits_for_on_a_terminal(make_daemon) -> None:
    """Starting the daemon on first use says so on the terminal."""
    d = make_daemon(FAST_MOCK, start=False)
    child = _spawn(d, "status")
    child.expect("starting the voicecall daemon")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    wait_for(lambda: d.socket.exists(), message="the autostarted daemon")
