"""The daemon log is rotated by size (SPEC section 2): the live file plus at most 5 rotated ones,
whatever the traffic. The limit is lowered through VOICECALL_LOG_MAX_BYTES (default 10 MiB)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from tests.harness import FAST_MOCK, REPO, DaemonHarness, wait_for

pytestmark = pytest.mark.e2e

LIMIT = 2048
"""Bytes per file for the test (about 15 lines)."""


def test_daemon_log_is_rotated_by_size_and_keeps_five(
    make_daemon: Callable[..., DaemonHarness],
) -> None:
    """Each rejected inbound call logs a line; far more than six files' worth leaves the live
    file and daemon.log.1 to .5, each within the limit, and fds 1 and 2 on the live file."""
    d = make_daemon(FAST_MOCK, start=False)
    d.env["VOICECALL_LOG_MAX_BYTES"] = str(LIMIT)
    started = d.cli("daemon", "start")  # in the background, logging to state/daemon.log
    assert started.returncode == 0, started.stderr
    state = d.home / "state"
    live = state / "daemon.log"
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voicecall_cli",
            "--socket",
            str(d.socket),
            "daemon",
            "logs",
            "-n",
            "1",
            "--follow",
        ],
        env=d.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    followed: list[str] = []
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: followed.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        with d.client() as client:
            for count in range(1, 3001):
                accepted = client.call("mock.inbound", {"from": "+15550109999"})["accepted"]
                assert accepted is False  # inbound_policy defaults to disabled: a line per call
                if (state / "daemon.log.5").exists() and count % 50 == 0:
                    break
            for _ in range(100):  # well past the fifth rotation: the oldest must be dropped
                last = client.call("mock.inbound", {"from": "+15550109999"})["callId"]
            pid = client.call("daemon.status")["pid"]
        # `daemon logs --follow` followed the live file across every rotation.
        wait_for(
            lambda: any(f"inbound call {last} rejected" in line for line in followed),
            30,
            message="the follower to print the last line",
        )
    finally:
        follower.kill()
        follower.wait()
        reader.join(10)
    logs = sorted(p.name for p in state.iterdir() if p.name.startswith("daemon.log"))
    assert logs == ["daemon.log", *(f"daemon.log.{n}" for n in range(1, 6))], logs
    for name in logs:
        info = (state / name).stat()
        assert info.st_size <= LIMIT, (name, info.st_size)
        assert stat.S_IMODE(info.st_mode) == 0o600, name
    assert "rejected" in (state / "daemon.log.5").read_text()
    # What bypasses `logging` (a fatal traceback) still lands in the live file.
    for fd in (1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == str(live)
