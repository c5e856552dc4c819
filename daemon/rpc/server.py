"""The gateway socket: JSON-RPC 2.0, one JSON value per line, over a Unix socket.

Security: the socket's folder is 0700 (one that another user owns, or that has group/other bits,
is refused, never fixed: daemon.rpc.trust) and the socket 0600, and every connection's peer uid
(SO_PEERCRED) must be ours. Messages over 1 MiB are refused and the connection closed (there is
no way to find the next message boundary reliably after an over-long line).

Backpressure (SPEC 5): a connection has at most :data:`MAX_IN_FLIGHT` requests in flight (each
element of a batch counts). At the limit the server stops reading from that connection until
answers drain; a client that pipelines without ever reading its answers then finds its own
writes blocked by the kernel, instead of growing the daemon without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any

from daemon.errors import RpcCode, VoicecallError
from daemon.rpc import protocol
from daemon.rpc.protocol import RpcErrorInfo
from daemon.rpc.trust import check_socket_folder, peer_uid

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], "Connection"], Awaitable[Any]]

MAX_IN_FLIGHT = 64
"""Requests of one connection being handled or waiting to write their answer."""


class AfterReply:
    """A handler result whose follow-up runs once the reply is written (tail's backlog)."""

    def __init__(self, value: Any, then: Callable[[], Awaitable[None]]) -> None:
        self.value = value
        self.then = then


class SocketInUseError(VoicecallError):
    """Another daemon already answers on the socket."""


class Connection:
    """One client connection; handlers use it to push notifications."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self._cleanups: list[Callable[[], None]] = []

    async def send(self, message: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Write one message (serialised against other writers)."""
        if self.closed.is_set():
            return
        data = protocol.encode(message)
        async with self._lock:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                self.close()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notification without waiting (used from event callbacks)."""
        if self.closed.is_set():
            return
        if self._writer.transport.get_write_buffer_size() > 4 * protocol.MAX_MESSAGE_BYTES:
            logger.warning("dropping a subscriber that stopped reading")
            self.close()
            return
        self._writer.write(protocol.encode(protocol.notification(method, params)))

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` when the connection closes (unsubscribe and the like)."""
        self._cleanups.append(cleanup)

    def close(self) -> None:
        """Close the connection and run the cleanups once."""
        if self.closed.is_set():
            return
        self.closed.set()
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:
                logger.exception("connection cleanup failed")
        self._writer.close()


class RpcServer:
    """Serves a dispatch table on a Unix socket."""

    def __init__(self, path: Path, methods: Mapping[str, Handler]) -> None:
        self.path = Path(path)
        self.methods = methods
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sock: socket.socket | None = None
        self._owns_path = False
        self._lock: IO[str] | None = None
        self._inode = -1

    def bind(self, sock: socket.socket | None = None) -> None:
        """Claim the socket (or adopt one passed by systemd) without serving yet.

        Done first at start-up, so a second daemon fails before it touches anything.
        """
        if sock is None:
            sock = self._bind()
            self._owns_path = True
        self._sock = sock

    async def start(self) -> None:
        """Start serving on the bound socket."""
        if self._sock is None:
            self.bind()
        self._server = await asyncio.start_unix_server(
            self._serve, sock=self._sock, limit=protocol.MAX_MESSAGE_BYTES
        )

    def _bind(self) -> socket.socket:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Never chmod a folder found loose: a stranger may already have planted something in
        # it. Refuse it, naming it, its owner and mode and the fix (SPEC section 2).
        check_socket_folder(folder)
        # Two daemons started at once (two CLIs autostarting) must not both probe, unlink and
        # bind: the loser would later remove the winner's socket. A lock beside the socket,
        # held for the daemon's life, makes the second one fail at once.
        lock = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SocketInUseError(
                f"another voicecall daemon is already running on {self.path}; stop it with "
                "`voicecall daemon stop` or pick another socket with --socket"
            ) from None
        self._lock = lock
        if self.path.exists() or self.path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # stale: nothing listens
            else:
                raise SocketInUseError(
                    f"another voicecall daemon is already running on {self.path}; stop it with "
                    "`voicecall daemon stop` or pick another socket with --socket"
                )
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise SocketInUseError(f"cannot bind the socket {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        self.path.chmod(0o600)
        self._inode = self.path.stat().st_ino
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        """Stop accepting, close every connection, remove the socket file."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        elif self._sock is not None:
            self._sock.close()
        if self._owns_path:
            # Only our own socket file: never one another daemon has bound since.
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            self._owns_path = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            logger.warning("refused a connection from uid %s", uid)
            writer.close()
            return
        conn = Connection(writer)
        self._connections.add(conn)
        mine: set[asyncio.Task[Any]] = set()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        try:
            while not conn.closed.is_set():
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._dispatch_line(conn, exc.partial, MAX_IN_FLIGHT)
                    break
                except asyncio.LimitOverrunError:
                    await conn.send(
                        protocol.error(
                            None,
                            RpcErrorInfo.standard(
                                RpcCode.INVALID_REQUEST,
                                f"message larger than {protocol.MAX_MESSAGE_BYTES} bytes; closing",
                            ),
                        )
                    )
                    break
                except ConnectionError:
                    break
                if line.strip():
                    # Nothing more is read until this line's requests have slots.
                    weight = _weight(line)
                    for _ in range(weight):
                        await slots.acquire()
                    task = asyncio.create_task(self._dispatch_line(conn, line, weight))
                    self._tasks.add(task)
                    mine.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(mine.discard)
                    task.add_done_callback(functools.partial(_release, slots, weight))
            # Let requests already read finish before closing (a client may half-close).
            if mine and not conn.closed.is_set():
                await asyncio.wait(list(mine))
        finally:
            self._connections.discard(conn)
            conn.close()

    async def _dispatch_line(self, conn: Connection, line: bytes, slots: int) -> None:
        """Answer one line; a batch runs at most `slots` of its requests at once."""
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            await conn.send(
                protocol.error(
                    None, RpcErrorInfo.standard(RpcCode.PARSE_ERROR, f"not valid JSON: {reason}")
                )
            )
            return
        if isinstance(message, list):
            if not message:
                await conn.send(
                    protocol.error(
                        None, RpcErrorInfo.standard(RpcCode.INVALID_REQUEST, "an empty batch")
                    )
                )
                return
            limit = asyncio.Semaphore(max(1, slots))

            async def bounded(
                m: Any,
            ) -> tuple[dict[str, Any] | None, Callable[[], Awaitable[None]] | None]:
                async with limit:
                    return await self._handle(conn, m)

            outcomes = await asyncio.gather(*(bounded(m) for m in message))
            answered = [r for r, _ in outcomes if r is not None]
            if answered:
                await conn.send(answered)
            for _, then in outcomes:
                if then is not None:
                    await then()
            return
        reply, then = await self._handle(conn, message)
        if reply is not None:
            await conn.send(reply)
        if then is not None:
            await then()

    async def _handle(
        self, conn: Connection, message: Any
    ) -> tuple[dict[str, Any] | None, Callable[[], Awaitable[None]] | None]:
        reply = await self._reply(conn, message)
        if isinstance(reply, tuple):
            return reply
        return reply, None

    async def _reply(
        self, conn: Connection, message: Any
    ) -> dict[str, Any] | tuple[dict[str, Any] | None, Callable[[], Awaitable[None]]] | None:
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != protocol.JSONRPC
            or not isinstance(message.get("method"), str)
        ):
            req_id = message.get("id") if isinstance(message, dict) else None
            return protocol.error(
                req_id,
                RpcErrorInfo.standard(
                    RpcCode.INVALID_REQUEST,
                    'not a JSON-RPC 2.0 request: need {"jsonrpc":"2.0","method":...,"id":...}',
                ),
            )
        req_id = message.get("id")
        is_notification = "id" not in message
        # Numbers with fractions "SHOULD NOT" be ids (JSON-RPC 2.0 section 4): refused.
        if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, str | int)):
            return protocol.error(
                None,
                RpcErrorInfo.standard(
                    RpcCode.INVALID_REQUEST, "id must be a string, a number or null"
                ),
            )
        method = message["method"]
        handler = self.methods.get(method)
        if handler is None:
            info = RpcErrorInfo.standard(
                RpcCode.METHOD_NOT_FOUND,
                f"unknown method {method!r}; known: {', '.join(sorted(self.methods))}",
            )
            return None if is_notification else protocol.error(req_id, info)
        params = message.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            info = RpcErrorInfo.standard(
                RpcCode.INVALID_PARAMS, "params must be an object with named parameters"
            )
            return None if is_notification else protocol.error(req_id, info)
        try:
            value = await handler(params, conn)
        except VoicecallError as exc:
            info = RpcErrorInfo.from_exception(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("method %s failed", method)
            info = RpcErrorInfo.standard(
                RpcCode.INTERNAL_ERROR, f"internal error in {method}; see the daemon log"
            )
        else:
            if isinstance(value, AfterReply):
                return (
                    None if is_notification else protocol.result(req_id, value.value),
                    value.then,
                )
            return None if is_notification else protocol.result(req_id, value)
        return None if is_notification else protocol.error(req_id, info)


def _weight(line: bytes) -> int:
    """Slots a line takes: 1, or for a batch its element count up to MAX_IN_FLIGHT.

    Weighed without parsing: the number of `{` bounds the number of request objects from
    above (nested params add some), which errs on the side of fewer requests in flight; a batch
    never runs more than its weight at once.
    """
    text = line.lstrip()
    if not text.startswith(b"["):
        return 1
    return max(1, min(MAX_IN_FLIGHT, text.count(b"{")))


def _release(slots: asyncio.Semaphore, count: int, _task: asyncio.Task[Any]) -> None:
    for _ in range(count):
        slots.release()
