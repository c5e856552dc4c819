"""The daemon under systemd: sd_notify READY/WATCHDOG/STOPPING and socket activation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from daemon.rpc.client import RpcClient
from tests.harness import FAST_MOCK, REPO, DaemonHarness, short_home, wait_for

pytestmark = pytest.mark.e2e


def _messages(sock: socket.socket, until: str, timeout: float = 15.0) -> list[str]:
    sock.settimeout(timeout)
    seen: list[str] = []
    while not any(until in m for m in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def test_ready_watchdog_and_stopping_are_notified() -> None:
    """READY=1 once serving, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on shutdown."""
    d = DaemonHarness(short_home(), FAST_MOCK)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(d.home / "notify.sock"))
    d.env.update({"NOTIFY_SOCKET": str(d.home / "notify.sock"), "WATCHDOG_USEC": "200000"})
    try:
        d.start()
        ready = _messages(notify, "READY=1")
        assert any("READY=1" in m for m in ready)
        assert d.rpc("daemon.status")["running"] is True  # READY means the socket serves
        watchdog = _messages(notify, "WATCHDOG=1", timeout=5)
        assert any("WATCHDOG=1" in m for m in watchdog)
        d.rpc("daemon.shutdown")
        assert any("STOPPING=1" in m for m in _messages(notify, "STOPPING=1"))
        assert d.proc is not None and d.proc.wait(10) == 0
    finally:
        notify.close()
        d.cleanup()


def test_socket_activation_serves_the_passed_socket() -> None:
    """With LISTEN_FDS the daemon serves the socket systemd bound, and leaves its file alone."""
    home = short_home()
    (home / "config.toml").write_text(FAST_MOCK)
    path = home / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    env = {
        **os.environ,
        "VOICECALL_HOME": str(home),
        "VOICECALL_NO_KEYRING": "1",
        "LISTEN_FDS": "1",
    }
    fd = listener.fileno()

    def to_fd_3() -> None:
        os.dup2(fd, 3)  # systemd passes the first socket as fd 3 (kept open via pass_fds)

    script = f'LISTEN_PID=$$ exec "{sys.executable}" -m daemon --socket "{path}"'
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script],
        env=env,
        cwd=REPO,
        preexec_fn=to_fd_3,
        pass_fds=(fd, 3),
        stdout=subprocess.DEVNULL,
        stderr=open(home / "log", "wb"),  # noqa: SIM115
    )
    listener.close()
    try:

        def answers() -> bool:
            try:
                with RpcClient(path, timeout=2) as client:
                    return bool(client.call("daemon.status")["running"])
            except OSError:
                return False

        try:
            wait_for(answers, 20, message="the activated daemon to answer")
        except AssertionError:
            raise AssertionError((home / "log").read_text()) from None
        with RpcClient(path) as client:
            assert client.call("daemon.status")["pid"] == proc.pid
            client.call("daemon.shutdown")
        assert proc.wait(10) == 0
        assert path.exists()  # systemd owns the socket file, not the daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
