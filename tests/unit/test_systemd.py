"""sd_notify and socket activation against real sockets and a real child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.ops import systemd


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket on a short path, and the environment that points sd_notify at it."""
    folder = tempfile.mkdtemp(prefix="vc-")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, {"NOTIFY_SOCKET": path}
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def test_messages_reach_the_socket(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    """Each helper sends its sd_notify line as one datagram."""
    sock, env = notify_socket
    assert systemd.ready(env=env)
    assert sock.recv(4096) == b"READY=1"
    assert systemd.ready("serving 2 calls", env=env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 calls"
    assert systemd.status("line one\nline two", env=env)
    assert sock.recv(4096) == b"STATUS=line one line two"
    assert systemd.watchdog(env=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert systemd.stopping(env=env)
    assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_namespace() -> None:
    """A leading '@' in NOTIFY_SOCKET addresses the abstract namespace."""
    name = f"voicecall-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_not_under_systemd() -> None:
    """Without NOTIFY_SOCKET, or with nobody listening, notify is a quiet False."""
    assert systemd.notify("READY=1", env={}) is False
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/notify"}) is False


def test_watchdog_interval() -> None:
    """Half of WATCHDOG_USEC, only for our pid."""
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd.watchdog_interval(mine) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_listen_fds_ignores_other_pids() -> None:
    """Variables inherited from a parent (another LISTEN_PID) are not ours to use."""
    assert systemd.listen_fds({}) == []
    assert systemd.listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []


CHILD = """
import fcntl, os, sys
from daemon.ops import systemd
socks = systemd.listen_fds()
assert [s.fileno() for s in socks] == [3], socks
assert fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
socks[0].sendall(b"hello from %d" % os.getpid())
"""


def test_listen_fds_takes_the_passed_socket() -> None:
    """A socket passed at fd 3 with LISTEN_PID = the child's pid comes back usable and CLOEXEC."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        fd = theirs.fileno()
        # Like systemd: the socket goes to fd 3 and LISTEN_PID names the process that execs
        # the daemon (exec keeps the pid).
        wrapper = (
            "import os, sys; "
            f"os.dup2({fd}, 3); os.close({fd}); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])"
        )
        root = Path(__file__).resolve().parents[2]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        proc = subprocess.run(
            [sys.executable, "-c", wrapper, CHILD],
            pass_fds=[fd],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        ours.settimeout(5)
        assert ours.recv(100).startswith(b"hello from ")
