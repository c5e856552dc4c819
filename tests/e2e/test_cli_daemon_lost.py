"""CLI diagnostics when the daemon goes away mid-request (SPEC 4)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.harness import REPO, DaemonHarness, wait_for

SILENT_CALLER = """
[serve]
port = 0

[mock]
answer_delay_ms = 30
replies = []
"""


def test_continue_when_daemon_stops_prints_error_not_traceback(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """`continue` is waiting; the daemon stops. Expected: `Error: ...`, exit 1 (or 3).

    Today `call_or_fail` only maps RpcRemoteError/TimeoutError: the client's
    ConnectionError("the daemon closed the connection") escapes as a Python traceback.
    """
    harness = make_daemon(SILENT_CALLER)
    started = harness.rpc(
        "voicecall.initiate", {"message": "hi", "to": "+15550001234", "mode": "conversation"}
    )
    call_id = started["callId"]
    harness.wait_state(call_id, "active", "listening", "answered", "speaking")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voicecall_cli",
            "--socket",
            str(harness.socket),
            "--no-autostart",
            "continue",
            "--call-id",
            call_id,
            "--message",
            "still there?",
        ],
        env=harness.env,
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(
        lambda: any(
            t["text"] == "still there?" for t in harness.call_record(call_id)["transcript"]
        ),
        10,
        message="continue to be waiting",
    )
    harness.stop()
    _out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, f"CLI crashed with a traceback:\n{err}"
    assert err.startswith("Error: "), err
    assert proc.returncode in (1, 3)
