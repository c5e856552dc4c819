"""The channel that passes an accepted connection between sibling workers
(daemon/workers/handoff.py): real TCP connections, real Unix sockets, real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.webhooks.connections import after_request
from daemon.workers import handoff
from daemon.workers.handoff import (
    KIND_MEDIA,
    KIND_WEBHOOK,
    Answer,
    HandoffListener,
    HandoffRefused,
    hand_over,
    handoff_path,
)


@pytest.fixture
def tcp() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted server side) of one loopback TCP connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    client.settimeout(10)
    yield client, accepted
    client.close()
    accepted.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    private = tmp_path / "run"
    private.mkdir(mode=0o700)
    return private


class Taker:
    """An adopt callback: keeps what it was given and answers `adopt`."""

    def __init__(self, adopt: bool = True) -> None:
        self.adopt = adopt
        self.got: list[tuple[int, socket.socket, bytes]] = []
        self.refs: list[str] = []

    async def __call__(
        self, kind: int, ref: str, sock: socket.socket, raw: bytes, answer: Answer
    ) -> bool:
        self.refs.append(ref)
        if not self.adopt:
            return False
        self.got.append((kind, sock, raw))
        assert answer(True)
        return True


async def test_the_connection_and_its_bytes_reach_the_sibling_which_then_holds_it(
    folder: Path, tcp: tuple[socket.socket, socket.socket]
) -> None:
    client, accepted = tcp
    taker = Taker()
    path = handoff_path(folder, "host-1234abcd")
    listener = HandoffListener(path, taker, parent_pid=None)
    listener.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raw = b"GET /voice/stream HTTP/1.1\r\n\r\n" + os.urandom(100_000)  # more than one send
        await hand_over(path, KIND_MEDIA, accepted.fileno(), raw, "call-ü-1")
        accepted.close()  # the sender drops its copy: the connection lives on in the taker
        [(kind, sock, got)] = taker.got
        assert kind == KIND_MEDIA and got == raw and taker.refs == ["call-ü-1"]
        sock.setblocking(True)
        sock.sendall(b"from the owner")
        assert client.recv(100) == b"from the owner"
        client.sendall(b"to the owner")
        assert sock.recv(100) == b"to the owner"
        sock.close()
        assert client.recv(100) == b"", "the owner's close reaches the client"
    finally:
        await listener.stop()
    assert not path.exists()


async def test_a_refusal_leaves_the_connection_with_the_sender(
    folder: Path, tcp: tuple[socket.socket, socket.socket]
) -> None:
    client, accepted = tcp
    path = handoff_path(folder, "host-1")
    listener = HandoffListener(path, Taker(adopt=False), parent_pid=None)
    listener.start()
    try:
        with pytest.raises(HandoffRefused) as refused:
            await hand_over(path, KIND_WEBHOOK, accepted.fileno(), b"POST / HTTP/1.1\r\n", "c")
        assert not refused.value.closed and refused.value.declined
        accepted.sendall(b"still mine")
        assert client.recv(100) == b"still mine"
    finally:
        await listener.stop()


async def test_a_process_that_is_not_a_sibling_is_refused(
    folder: Path, tcp: tuple[socket.socket, socket.socket]
) -> None:
    """Same user, but not a child of the listener's parent: refused before a byte is read."""
    client, accepted = tcp
    taker = Taker()
    path = handoff_path(folder, "host-2")
    listener = HandoffListener(path, taker, parent_pid=os.getpid())  # we are not our own child
    listener.start()
    try:
        with pytest.raises(HandoffRefused, match="sibling"):
            await hand_over(path, KIND_WEBHOOK, accepted.fileno(), b"POST / HTTP/1.1\r\n")
        assert listener.refused_peers == 1 and not taker.got
        accepted.sendall(b"still mine")
        assert client.recv(100) == b"still mine"
    finally:
        await listener.stop()


HOSTILE = textwrap.dedent(
    """
    import os, socket, sys
    victim = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    head = b"VCH2" + bytes([1]) + (0).to_bytes(2, "big") + (4).to_bytes(4, "big") + b"evil"
    os.setgid(65534)
    os.setuid(65534)  # from here on: another local user
    try:
        conn.connect(sys.argv[1])
    except PermissionError:
        print("EACCES")
        sys.exit(0)
    try:
        socket.send_fds(conn, [head], [victim.fileno()])
        answer = conn.recv(1)
    except OSError:
        answer = b""
    print("CLOSED" if answer == b"" else "ANSWERED")
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_user_cannot_pass_a_connection() -> None:
    """A hostile local user: the socket (0600 in a private folder) cannot be opened; even when
    it is made world-writable, the peer's credentials (SO_PEERCRED) get it refused."""
    base = Path(tempfile.mkdtemp(prefix="vc-hostile-"))
    base.chmod(0o711)  # (pytest's own temporary folders are closed to other users)
    folder = base / "run"
    folder.mkdir(mode=0o700)
    taker = Taker()
    path = handoff_path(folder, "host-3")
    listener = HandoffListener(path, taker, parent_pid=None)
    listener.start()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = str(server.getsockname()[1])

        async def attack() -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", HOSTILE, str(path), port, stdout=subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            return out.decode().strip()

        try:
            folder.chmod(0o755)  # even with the folder open, the socket's mode keeps it out
            assert await attack() == "EACCES"
            path.chmod(0o666)
            assert await attack() == "CLOSED"
            assert listener.refused_peers == 1 and not taker.got
        finally:
            await listener.stop()
            shutil.rmtree(base)


async def test_a_sibling_dying_mid_hand_over_leaves_the_connection_with_the_sender(
    folder: Path, tcp: tuple[socket.socket, socket.socket]
) -> None:
    """The sibling takes the descriptor and dies before answering: the sender learns it at
    once, and the client's connection is untouched (not closed, nothing lost)."""
    client, accepted = tcp
    path = folder / "dying.sock"
    script = textwrap.dedent(
        f"""
        import os, socket
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind({str(path)!r})
        listener.listen()
        print("READY", flush=True)
        conn, _ = listener.accept()
        socket.recv_fds(conn, 65536, 4)
        os.kill(os.getpid(), 9)
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"READY"
    with pytest.raises(HandoffRefused, match="sibling") as refused:
        await hand_over(path, KIND_MEDIA, accepted.fileno(), b"GET / HTTP/1.1\r\n\r\n")
    assert not refused.value.closed
    assert await proc.wait() == -signal.SIGKILL
    accepted.sendall(b"still mine")
    assert client.recv(100) == b"still mine"
    client.sendall(b"and still read here")
    assert accepted.recv(100) == b"and still read here"


async def test_no_answer_in_time_closes_the_connection_never_a_hang(
    folder: Path, tcp: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sibling that takes the descriptor but never answers (hung): after the deadline the
    connection is shut down for every holder, so the client sees it close."""
    client, accepted = tcp
    monkeypatch.setattr(handoff, "ACK_SECONDS", 0.5)
    path = folder / "hung.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(path))
    hung.listen()
    try:
        with pytest.raises(HandoffRefused) as refused:
            await hand_over(path, KIND_MEDIA, accepted.fileno(), b"GET / HTTP/1.1\r\n\r\n")
        assert refused.value.closed
        assert client.recv(100) == b"", "the client sees the connection close"
    finally:
        hung.close()


async def test_a_message_that_is_not_a_hand_over_is_refused(folder: Path) -> None:
    taker = Taker()
    path = handoff_path(folder, "host-4")
    listener = HandoffListener(path, taker, parent_pid=None)
    listener.start()
    loop = asyncio.get_running_loop()
    try:
        for message in (b"GET / HTTP/1.1\r\n\r\n", handoff.HEADER.pack(handoff.MAGIC, 9, 0, 0)):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.setblocking(False)
            await loop.sock_connect(conn, str(path))
            await loop.sock_sendall(conn, message)
            assert await asyncio.wait_for(loop.sock_recv(conn, 1), 10) == b"R"
            conn.close()
        # a whole message without a descriptor
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.setblocking(False)
        await loop.sock_connect(conn, str(path))
        header = handoff.HEADER.pack(handoff.MAGIC, KIND_WEBHOOK, 0, 2)
        await loop.sock_sendall(conn, header + b"hi")
        assert await asyncio.wait_for(loop.sock_recv(conn, 1), 10) == b"R"
        conn.close()
        assert not taker.got
    finally:
        await listener.stop()


async def test_too_many_bytes_are_not_sent(
    folder: Path, tcp: tuple[socket.socket, socket.socket]
) -> None:
    _client, accepted = tcp
    with pytest.raises(HandoffRefused, match="too many"):
        await hand_over(
            folder / "x.sock", KIND_WEBHOOK, accepted.fileno(), b"x" * (handoff.MAX_RAW_BYTES + 1)
        )


def test_the_bytes_kept_for_the_next_request_start_where_the_last_one_ended() -> None:
    """Keep-alive: what a connection read past an answered request is the next request's
    start (pipelined bytes kept); when the end cannot be told, nothing is kept."""
    post = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    assert after_request(bytearray(post)) == bytearray()
    assert after_request(bytearray(post + b"POST /b HT")) == bytearray(b"POST /b HT")
    assert after_request(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET")) == bytearray(b"GET")
    assert after_request(bytearray(post[:-1])) is None  # body not all read
    assert after_request(bytearray(b"POST / HTTP/1.1\r\nHost: x")) is None
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert after_request(bytearray(chunked)) is None
    twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab"
    assert after_request(bytearray(twice)) is None
    assert after_request(bytearray(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")) is None
