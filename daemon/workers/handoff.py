"""Passing an accepted connection to a sibling worker (SCM_RIGHTS over a private Unix socket).

SO_REUSEPORT spreads the provider's connections over the workers by source address, not by
call, so about half of a call's webhooks and its media websocket reach a worker that does not
run the call. Instead of relaying every message, the worker that got the connection hands the
socket itself to the one that runs the call, with the bytes it has read from it so far; the
owner adopts it into its own web server as if the client had connected to it.

The channel: each worker listens on ``handoff-<hash of its cluster id>.sock`` beside the RPC
socket (a folder only the daemon's user can enter; the socket is mode 0600), and accepts only
peers that run as its own user and, under a parent, are children of that same parent
(``SO_PEERCRED``). One hand-over is one connection:

    sender -> owner   b"VCH2" kind(1) ref length(2) raw length(4) ref raw   + 1 fd (SCM_RIGHTS)
    owner  -> sender  b"A" (adopted: the owner holds the connection now) or b"R" (refused:
                      it does not run call `ref`, or cannot take the connection now)

(lengths big-endian; `ref` names the call, our id or the provider's, as UTF-8).

The owner answers ``A`` before its event loop reads a byte of the adopted socket, so a sender
that sees the channel close without an answer knows nothing was read or written by the owner
and keeps serving the connection itself (the relay). After ``A`` the sender drops its copy of
the socket without writing (the kernel socket lives on in the owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MAGIC = b"VCH2"
HEADER = struct.Struct(">4sBHI")
MAX_REF_BYTES = 512
MAX_RAW_BYTES = 256 * 1024
"""The most bytes already read that may travel with a connection (headers, a webhook body, a
media stream's first messages); a connection that read more is not handed over."""
ACK_SECONDS = 5.0
"""How long the sender waits for the owner's answer."""
READ_SECONDS = 5.0
"""How long the owner waits for a whole hand-over message once a sibling connects."""

KIND_WEBHOOK = 1
KIND_MEDIA = 2
KINDS = frozenset({KIND_WEBHOOK, KIND_MEDIA})

ADOPTED = b"A"
REFUSED = b"R"

Answer = Callable[[bool], bool]
"""Tell the sender the outcome (once); False when it could not be told (it left: let go)."""
Adopt = Callable[[int, str, socket.socket, bytes, Answer], Awaitable[bool]]
"""(kind, call ref, the connection's socket, bytes read so far, answer) -> adopted? It
feeds the bytes to its protocol and calls `answer(True)` before the loop reads the socket, so
a sender that hears nothing knows the socket was not touched; a refusal may be left unsaid
(the listener answers it)."""


def handoff_path(folder: Path, daemon_id: str) -> Path:
    """The hand-over socket of the worker whose cluster id is `daemon_id` (`folder`: the RPC
    socket's private folder)."""
    return folder / f"handoff-{hashlib.sha256(daemon_id.encode()).hexdigest()[:16]}.sock"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (from /proc), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


class HandoffRefused(Exception):
    """The hand-over did not happen: the sender still holds the connection, untouched (unless
    `closed`: the sibling did not answer in time and the connection was shut down).
    `declined`: the sibling answered no (it does not run the call): not a failure."""

    def __init__(self, reason: str, *, closed: bool = False, declined: bool = False) -> None:
        super().__init__(reason)
        self.closed = closed
        self.declined = declined


class HandoffListener:
    """A worker's end of the channel: adopts the connections its siblings pass it."""

    def __init__(self, path: Path, adopt: Adopt, *, parent_pid: int | None) -> None:
        """`parent_pid` set: only children of that process may pass connections."""
        self.path = path
        self._adopt = adopt
        self._parent_pid = parent_pid
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused_peers = 0
        """Connections refused for their credentials (another user, not a sibling)."""

    def start(self) -> None:
        """Bind (mode 0600; a stale file of a dead worker with the same id is replaced)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        self.path.chmod(0o600)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    async def stop(self) -> None:
        """Stop accepting, forget the socket file, finish the hand-overs under way."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _peer_ok(self, conn: socket.socket) -> bool:
        try:
            pid, uid, _gid = peer_credentials(conn)
        except OSError:
            return False
        if uid != os.geteuid():
            return False
        return self._parent_pid is None or parent_of(pid) == self._parent_pid

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):  # a burst of hand-overs; the rest on the next iteration
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("hand-over socket: accept failed: %s", exc)
                return
            if not self._peer_ok(conn):
                self.refused_peers += 1
                if self.refused_peers == 1 or self.refused_peers % 1000 == 0:
                    logger.warning(
                        "hand-over socket %s: refused a peer that is not a sibling worker "
                        "of this user (%d so far)",
                        self.path,
                        self.refused_peers,
                    )
                conn.close()
                continue
            conn.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._serve(conn), name="handoff-in")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            async with asyncio.timeout(READ_SECONDS):
                kind, ref, raw = await _read_message(conn, fds)
            if len(fds) != 1:
                raise HandoffRefused(f"{len(fds)} descriptors")
            tcp = _tcp_socket(fds.pop())
            answered = False

            def answer(adopted: bool) -> bool:
                nonlocal answered
                if answered:
                    return False
                answered = True
                try:
                    conn.send(ADOPTED if adopted else REFUSED)
                except OSError:
                    # The sender gave up waiting (it shut the connection down).
                    logger.warning("hand-over: the sending worker left before the answer")
                    return False
                return True

            try:
                adopted = await self._adopt(kind, ref, tcp, raw, answer)
            except Exception:
                logger.exception("hand-over: adopting a connection failed")
                adopted = False
            if not adopted:
                tcp.close()  # the sender still holds it
                answer(False)
        except (HandoffRefused, OSError, TimeoutError) as exc:
            logger.warning("hand-over refused: %s", exc)
            with contextlib.suppress(OSError):
                conn.send(REFUSED)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


async def _read_message(conn: socket.socket, fds: list[int]) -> tuple[int, str, bytes]:
    """One hand-over message from `conn` (its descriptors appended to `fds` as they come)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    need = HEADER.size
    kind = 0
    while len(data) < need:
        await _readable(loop, conn)
        try:
            chunk, got, _flags, _addr = socket.recv_fds(conn, max(need - len(data), 4096), 4)
        except (BlockingIOError, InterruptedError):
            continue
        fds.extend(got)
        if not chunk:
            raise HandoffRefused("the sender closed before the whole message")
        data += chunk
        if need == HEADER.size and len(data) >= HEADER.size:
            magic, kind, ref_length, length = HEADER.unpack_from(data)
            if (
                magic != MAGIC
                or kind not in KINDS
                or ref_length > MAX_REF_BYTES
                or length > MAX_RAW_BYTES
            ):
                raise HandoffRefused("not a hand-over message")
            need = HEADER.size + ref_length + length
    if len(data) != need:
        raise HandoffRefused("more bytes than announced")
    try:
        ref = bytes(data[HEADER.size : HEADER.size + ref_length]).decode("utf-8")
    except UnicodeDecodeError:
        raise HandoffRefused("not a hand-over message") from None
    return kind, ref, bytes(data[HEADER.size + ref_length :])


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await future
    finally:
        loop.remove_reader(fd)


def _tcp_socket(fd: int) -> socket.socket:
    """The received descriptor as a socket, if it is a TCP stream (else refused, closed)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        os.close(fd)
        raise HandoffRefused(f"not a socket ({exc})") from None
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.close()
        raise HandoffRefused("not a TCP connection")
    sock.setblocking(False)
    return sock


async def hand_over(path: Path, kind: int, fd: int, raw: bytes, ref: str = "") -> None:
    """Pass the connection `fd` and the bytes read from it to the worker listening at `path`,
    for call `ref` (the worker declines a call it does not run).

    Returns once that worker holds it (drop this copy then, writing nothing). Raises
    HandoffRefused when it did not take it: nothing was read or written by it, so this
    process serves the connection itself. When the answer does not come within
    :data:`ACK_SECONDS` the connection is shut down (the client sees it close, never a hang)
    and HandoffRefused is raised with `shut = True`.
    """
    encoded = ref.encode("utf-8")
    if len(raw) > MAX_RAW_BYTES or len(encoded) > MAX_REF_BYTES:
        raise HandoffRefused("too many bytes read already")
    loop = asyncio.get_running_loop()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.setblocking(False)
    try:
        try:
            await loop.sock_connect(conn, str(path))
            _pid, uid, _gid = peer_credentials(conn)
        except OSError as exc:
            raise HandoffRefused(f"cannot reach the sibling ({exc.strerror or exc})") from None
        if uid != os.geteuid():
            raise HandoffRefused("the hand-over socket belongs to another user")
        message = HEADER.pack(MAGIC, kind, len(encoded), len(raw)) + encoded + raw
        try:
            sent = _send_with_fd(conn, message, fd)
            if sent < len(message):
                await loop.sock_sendall(conn, message[sent:])
        except OSError as exc:
            raise HandoffRefused(f"sending failed ({exc.strerror or exc})") from None
        try:
            async with asyncio.timeout(ACK_SECONDS):
                answer = await loop.sock_recv(conn, 1)
        except TimeoutError:
            # The sibling may still adopt it later: neither side may go on reading, so the
            # connection is closed for both (the provider retries a webhook, reopens a stream).
            _shut_down(fd)
            raise HandoffRefused(
                "the sibling did not answer in time: connection closed", closed=True
            ) from None
        except OSError as exc:
            raise HandoffRefused(f"the sibling failed ({exc.strerror or exc})") from None
        if answer == REFUSED:
            raise HandoffRefused("the sibling refused it", declined=True)
        if answer != ADOPTED:
            raise HandoffRefused("the sibling left")
    finally:
        conn.close()


def _send_with_fd(conn: socket.socket, message: bytes, fd: int) -> int:
    """Send the start of `message` with `fd` attached (a fresh connection: never blocks on a
    first write); returns the bytes sent."""
    first = message[: 64 * 1024]
    while True:
        try:
            return socket.send_fds(conn, [first], [fd])
        except InterruptedError:
            continue


def _shut_down(fd: int) -> None:
    """Close the connection for every process holding it (not just this descriptor)."""
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
