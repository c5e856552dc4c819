"""Other users of the same machine (SPEC section 2), played by a real second local account.

- the daemon's files are private from the first byte (umask 077): another user can read no
  transcript line, whatever the mode of the home folder above them;
- a socket folder that another user pre-created (the `/tmp/voicecall-<uid>/` attack) never
  receives a request: the CLI refuses to connect, the daemon refuses to start, both naming the
  folder, its owner and mode and the fix, and the daemon does not chmod it;
- the CLI checks who listens (SO_PEERCRED) and sends nothing to another uid.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import FAST_MOCK, DaemonHarness, wait_for
from tests.hostile.conftest import OtherUser

pytestmark = pytest.mark.e2e

ATTACKER = r"""
import os, socket, sys
role, path = sys.argv[1], sys.argv[2]
folder = os.path.dirname(path)
if role == "folder":  # only a loose folder, planted before the victim's daemon starts
    os.mkdir(folder)
    os.chmod(folder, 0o777)
    print("ready", flush=True)
    sys.exit(0)
if role == "plant":  # the folder and a listener in it, ready to answer the victim
    os.mkdir(folder)
    os.chmod(folder, 0o755)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
else:  # "fd": listen on a socket bound in the victim's folder, handed over as a descriptor
    server = socket.socket(fileno=int(sys.argv[3]))
server.listen(8)
server.settimeout(60)
print("ready", flush=True)
while True:
    try:
        conn, _ = server.accept()
    except OSError:
        break
    print("connected", flush=True)
    conn.settimeout(5)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    print("received", repr(data), flush=True)
    if data:  # answer like a daemon would: the victim would believe it
        conn.sendall(b'{"jsonrpc":"2.0","id":1,"result":{"calls":[]}}\n')
    conn.close()
    if role == "fd":
        break
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A private copy of /tmp: world-writable and sticky, where any user may create folders."""
    base = Path(tempfile.mkdtemp(prefix="vc-tmp-", dir="/tmp"))
    base.chmod(0o1777)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def start_attacker(
    user: OtherUser, role: str, path: Path, *extra: str, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[str]:
    attacker = user.python(
        ATTACKER,
        role,
        str(path),
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    assert attacker.stdout is not None
    line = attacker.stdout.readline().strip()
    assert line == "ready", f"attacker did not start: {line!r} {attacker.stderr}"
    return attacker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_from_the_first_byte(
    make_daemon: Callable[..., DaemonHarness], other_user: OtherUser
) -> None:
    """Started by the real CLI in a home readable by all (0755, as many homes are): the state
    folder is 0700; the store, its -wal and -shm, the log and the lock are 0600; the other
    user cannot read the WAL that holds a transcript line."""
    d = make_daemon(FAST_MOCK, start=False)
    d.home.chmod(0o755)
    started = d.cli("daemon", "start")
    assert started.returncode == 0, started.stderr
    call = d.cli(
        "call", "--to", "+15550001234", "-m", "The door code is 4711", "--mode", "conversation"
    )
    assert call.returncode == 0, call.stderr
    call_id = call.stdout.strip()
    wait_for(
        lambda: any(
            t["text"] == "The door code is 4711" for t in d.call_record(call_id)["transcript"]
        ),
        15,
        message="the transcript line",
    )
    state = d.home / "state"
    wal = state / "voicecall.db-wal"
    expected = {"voicecall.db", "voicecall.db-wal", "voicecall.db-shm", "daemon.log", "daemon.lock"}
    assert expected <= {p.name for p in state.iterdir()}
    assert mode(state) == 0o700
    modes = {p.name: oct(mode(p)) for p in state.iterdir()}
    assert all(m == oct(0o600) for m in modes.values()), modes
    assert mode(d.socket.parent) == 0o700 and mode(d.socket) == 0o600
    assert b"The door code is 4711" in wal.read_bytes()  # the secret is really in there
    peek = subprocess.run(other_user.argv("cat", str(wal)), capture_output=True, check=False)
    assert peek.returncode != 0 and b"4711" not in peek.stdout
    assert b"Permission denied" in peek.stderr


def test_cli_refuses_a_socket_folder_another_user_created(
    make_daemon: Callable[..., DaemonHarness], other_user: OtherUser, shared_tmp: Path
) -> None:
    """The attacker pre-creates `voicecall-<uid>/` with a listener that answers like a daemon.
    The CLI (autostart on) names the folder, its owner and mode and the fix, exits 1, and the
    attacker never even sees a connection."""
    d = make_daemon(FAST_MOCK, start=False)
    d.socket = shared_tmp / f"voicecall-{os.getuid()}" / "daemon.sock"
    attacker = start_attacker(other_user, "plant", d.socket)
    try:
        done = d.cli("status")
    finally:
        attacker.terminate()
        seen, _ = attacker.communicate(timeout=20)
    assert "connected" not in seen, seen
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("Error: refusing the socket folder "), done.stderr
    folder = str(d.socket.parent)
    assert folder in done.stderr and f"{other_user.name} (uid {other_user.uid})" in done.stderr
    assert "mode 0755" in done.stderr and "sudo rm -r" in done.stderr and "--socket" in done.stderr
    assert "Traceback" not in done.stderr


def test_daemon_refuses_a_loose_or_foreign_socket_folder_and_leaves_it_alone(
    make_daemon: Callable[..., DaemonHarness], other_user: OtherUser, shared_tmp: Path
) -> None:
    """A folder another user planted, and our own folder left open to others: the daemon
    exits with an error naming folder, owner, mode and fix; it neither chmods nor binds."""
    d = make_daemon(FAST_MOCK, start=False)
    d.socket = shared_tmp / f"voicecall-{os.getuid()}" / "daemon.sock"
    start_attacker(other_user, "folder", d.socket).wait(10)
    d.start(expect_ready=False)
    assert d.proc is not None and d.proc.wait(30) == 1
    log = d.log_text()
    assert f"refusing the socket folder {d.socket.parent}" in log, log
    assert f"{other_user.name} (uid {other_user.uid})" in log and "mode 0777" in log
    assert "Traceback" not in log
    folder = d.socket.parent.stat()
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode)) == (other_user.uid, 0o777)
    assert list(d.socket.parent.iterdir()) == []

    own = make_daemon(FAST_MOCK, start=False)
    own.socket.parent.mkdir()
    own.socket.parent.chmod(0o755)
    own.start(expect_ready=False)
    assert own.proc is not None and own.proc.wait(30) == 1
    assert "other users have access to it" in own.log_text()
    assert f"chmod 700 {own.socket.parent}" in own.log_text()
    assert mode(own.socket.parent) == 0o755 and not own.socket.exists()


def test_cli_sends_nothing_to_a_listener_of_another_uid(
    make_daemon: Callable[..., DaemonHarness], other_user: OtherUser
) -> None:
    """The folder is ours and private, but the process listening on the socket is the other
    user's: SO_PEERCRED names it, and the CLI hangs up before sending a byte."""
    d = make_daemon(FAST_MOCK, start=False)
    d.socket.parent.mkdir(mode=0o700)
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(d.socket))
    os.chmod(d.socket, 0o666)
    try:
        attacker = start_attacker(
            other_user, "fd", d.socket, str(bound.fileno()), pass_fds=(bound.fileno(),)
        )
    finally:
        bound.close()
    try:
        done = d.cli("status")
        seen, _ = attacker.communicate(timeout=20)
    finally:
        attacker.kill()
    assert "connected" in seen and "received b''" in seen, seen  # connected, got nothing
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"runs as {other_user.name} (uid {other_user.uid})" in done.stderr, done.stderr
    assert "nothing was sent" in done.stderr and "Traceback" not in done.stderr
