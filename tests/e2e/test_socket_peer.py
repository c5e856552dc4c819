"""The daemon refuses socket peers of another uid (SO_PEERCRED), beyond the 0600 mode."""

from __future__ import annotations

import os
import socket

import pytest

from tests.harness import FAST_MOCK

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid"),
]

NOBODY = 65534


def test_other_uid_is_refused_even_if_the_mode_lets_it_in(make_daemon) -> None:
    """With the socket made world-writable on purpose, another uid still gets no answer."""
    d = make_daemon(FAST_MOCK)
    d.socket.chmod(0o666)
    d.socket.parent.chmod(0o755)
    d.home.chmod(0o755)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, connect, report what happened
        os.close(read_fd)
        outcome = b"?"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(str(d.socket))
            try:
                sock.sendall(b'{"jsonrpc":"2.0","method":"daemon.status","id":1}\n')
                outcome = b"closed" if sock.recv(4096) == b"" else b"answered"
            except (BrokenPipeError, ConnectionResetError):
                outcome = b"closed"  # the daemon hung up before we finished writing
        except OSError as exc:
            outcome = f"error:{exc.errno}".encode()
        finally:
            os.write(write_fd, outcome)
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    outcome = os.read(read_fd, 100)
    os.close(read_fd)
    assert outcome == b"closed"
    d.socket.parent.chmod(0o700)  # our own client trusts only a private folder (SPEC 2)
    assert d.rpc("daemon.status")["running"] is True  # our own uid is still served
