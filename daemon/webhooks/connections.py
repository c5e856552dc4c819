"""Connection hygiene of the public port: header timeout, idle timeout, connection caps (SPEC 8).

aiohttp on its own keeps a connection that never completes its headers for an hour, and accepts
connections until the process runs out of file descriptors; then genuine webhooks fail. Here
every accepted socket is wrapped in a :class:`GuardedProtocol` before aiohttp's request handler:

- beyond `max_connections` in all, or `max_connections_per_ip` from one address, a new connection
  is closed at once (reset, before any byte is read or a handler is built);
- a request's headers must be complete within `header_timeout` of the connection opening, or of
  the first byte of the next request on a kept-alive connection (slow-loris clients are closed);
- an idle keep-alive connection is closed after `idle_timeout` (aiohttp's keep-alive timer);
- one connection cannot starve the event loop: the event loop (libuv reads up to 32 buffers per
  readable socket in one go) may hand over megabytes at once, and a media stream flooding audio
  at 1000x real time then kept the loop busy for seconds. A connection's bytes reach aiohttp
  at most :data:`SLICE_BYTES` per loop iteration; the rest waits, with the socket paused, for
  the next iteration (after every other ready callback: RPC, other streams, timers).

"Headers complete" is learnt from :func:`request_started_middleware`, which runs when aiohttp
hands the parsed request to the application. A websocket (media stream) is a request that never
ends: once started, its own limits (SPEC 9) apply.

The per-address cap counts socket peers. A peer that forwards many clients (a trusted proxy, or
the loopback agent of an ngrok / Tailscale tunnel) is bounded only by `max_connections`, since
capping it would let one client behind it lock out every other, the provider included.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from daemon.webhooks.rejections import RejectionLog
from daemon.webhooks.urls import parse_ip

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The `[serve]` connection keys, in seconds and counts."""

    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_connections: int = 1024
    max_connections_per_ip: int = 64


class ConnectionGuard:
    """Counts open connections (in all and per address) and owns the guards of live ones.

    `exempt(address)` names peers that the per-address cap does not apply to (proxies and tunnel
    agents); it is asked on every connection so it follows a policy that changes at run time.
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        exempt: Callable[[str], bool] = lambda _address: False,
        rejections: RejectionLog | None = None,
    ) -> None:
        """Enforce `limits`; rejections are summarised through `rejections`."""
        self.limits = limits
        self._exempt = exempt
        self.rejections = rejections or RejectionLog(logger)
        self.total = 0
        self.record = False
        """Keep every byte each connection read since its current request began, so the
        connection can be handed to a sibling worker (:mod:`daemon.workers.handoff`)."""
        self._per_address: dict[str, int] = {}
        self._by_transport: dict[asyncio.BaseTransport, GuardedProtocol] = {}
        self.after_read: Callable[[], None] | None = None
        """Called after each read of an admitted media stream (the pacer's due-tick check)."""

    def open_for(self, address: str) -> int:
        """Connections open from one address."""
        return self._per_address.get(address, 0)

    def admit(self, address: str) -> str | None:
        """Count a new connection, or return why it must be closed at once."""
        if self.total >= self.limits.max_connections:
            return "over serve.max_connections"
        count = self._per_address.get(address, 0)
        if count >= self.limits.max_connections_per_ip and not self._exempt(address):
            return "over serve.max_connections_per_ip"
        self.total += 1
        self._per_address[address] = count + 1
        return None

    def release(self, address: str, *, per_address_only: bool = False) -> None:
        """Forget a connection counted by `admit` (only its per-address slot when told)."""
        if not per_address_only:
            self.total -= 1
        count = self._per_address.get(address, 0) - 1
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)

    def protocol_factory(
        self, handler_factory: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """What to give `loop.create_server`: guarded aiohttp request handlers."""
        return lambda: GuardedProtocol(self, handler_factory)

    def adopting_factory(
        self,
        handler_factory: Callable[[], asyncio.Protocol],
        raw: bytes,
        made: Callable[[GuardedProtocol], None],
        *,
        upgraded: bool,
    ) -> Callable[[], asyncio.Protocol]:
        """For `loop.connect_accepted_socket` of a connection a sibling worker passed on:
        `raw` (what it read) is fed first, then `made` runs, before the socket is read.
        `upgraded`: the sibling answered the websocket upgrade in `raw` already."""

        def build() -> GuardedProtocol:
            protocol = GuardedProtocol(self, handler_factory, adopted=(raw, made))
            protocol.upgraded_elsewhere = upgraded
            return protocol

        return build

    def guard_of(self, transport: asyncio.BaseTransport | None) -> GuardedProtocol | None:
        """The guard of a live connection, by its transport."""
        return self._by_transport.get(transport) if transport is not None else None


RECORD_BYTES = 256 * 1024
"""The most bytes of one request kept for a hand-over (a webhook body is at most 64 KiB)."""
SLICE_BYTES = 8 * 1024
"""The most of one connection's input handed to aiohttp per loop iteration (about 35 media
messages: a few milliseconds of parsing), so others get a turn between slices."""


class _PausableTransport:
    """The transport as aiohttp sees it: its read pauses are remembered, not lost.

    The guard pauses the socket itself while it holds a backlog; when it resumes, it must not
    undo a pause aiohttp asked for (its buffers are full). Everything else goes straight to the
    real transport (the hot write path is bound once, no per-call indirection).
    """

    def __init__(self, real: asyncio.Transport, guard: GuardedProtocol) -> None:
        self._real = real
        self._guard = guard
        self.inner_paused = False
        self.write = real.write
        self.writelines = real.writelines
        self.is_closing = real.is_closing
        self.get_write_buffer_size = real.get_write_buffer_size
        self.get_extra_info = real.get_extra_info
        self.close = real.close
        self.abort = real.abort

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def pause_reading(self) -> None:
        self.inner_paused = True
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self.inner_paused = False
        if not self._guard.holding:
            self._real.resume_reading()

    def is_reading(self) -> bool:
        return not self.inner_paused and self._real.is_reading()


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,9})[ \t]*(?=\r\n|$)")


def after_request(record: bytearray) -> bytearray | None:
    """What follows the first request in `record` (bytes read from a connection, starting at a
    request), or None when its end cannot be told from its headers (chunked body, no or
    several lengths, not all of it read)."""
    end = record.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(record[:end]).lower()
    if b"\r\ntransfer-encoding:" in head or head.count(b"\r\ncontent-length:") > 1:
        return None
    found = _CONTENT_LENGTH.search(head)
    if found is None and b"\r\ncontent-length:" in head:
        return None
    total = end + 4 + (int(found.group(1)) if found is not None else 0)
    if len(record) < total:
        return None
    return record[total:]


class GuardedProtocol(asyncio.Protocol):
    """Admits a connection, times its headers, slices its input, then passes it to aiohttp."""

    __slots__ = (
        "_address",
        "_adopted",
        "_backlog",
        "_eof",
        "_feed",
        "_guard",
        "_handler",
        "_inner",
        "_inner_factory",
        "_per_address",
        "_pinned",
        "_proxy",
        "_record",
        "_timer",
        "_transport",
        "_waiting",
        "holding",
        "upgraded_elsewhere",
    )

    def __init__(
        self,
        guard: ConnectionGuard,
        inner_factory: Callable[[], asyncio.Protocol],
        *,
        adopted: tuple[bytes, Callable[[GuardedProtocol], None]] | None = None,
    ) -> None:
        self._guard = guard
        self._adopted = adopted
        """(bytes a sibling read, callback): a connection a sibling worker passed on."""
        self._record: bytearray | None = None
        """The bytes read since the current request began (see `ConnectionGuard.record`);
        None once that cannot be told (then the connection is never handed over)."""
        self._pinned = adopted is not None
        """Serving the request a sibling passed this connection on for: not passed again."""
        self.upgraded_elsewhere = False
        """The first request is a websocket upgrade the sibling that passed the connection
        on answered already (the media server takes this back when it serves it)."""
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._per_address = True
        """The connection holds a slot of its address's `max_connections_per_ip`."""
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = True
        """No request is being handled: the next bytes start one, under the header timer."""
        self._proxy: _PausableTransport | None = None
        self._backlog = bytearray()
        self._eof = False
        self.holding = False
        """Input is held back (socket paused) until later loop iterations hand it over."""
        self._feed: Callable[[bytes], tuple[bool, bytes]] | None = None
        """An admitted media stream's websocket parser (see :meth:`_media_fast_path`)."""
        self._handler: Any = None
        """aiohttp's request handler of this connection (``_inner``, untyped)."""

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Close at once beyond the caps; else build aiohttp's handler and start the clock."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        parsed = parse_ip(host) if isinstance(host, str) else None
        self._address = str(parsed) if parsed is not None else str(host or "unknown")
        refusal = self._guard.admit(self._address)
        if refusal is not None:
            self._guard.rejections.record(
                "connection", None, refusal + ": closed at once", self._address
            )
            transport.abort()
            return
        self._transport = transport
        self._proxy = _PausableTransport(transport, self)
        self._guard._by_transport[cast(asyncio.BaseTransport, self._proxy)] = self
        self._inner = self._inner_factory()
        self._arm()
        self._inner.connection_made(cast(asyncio.Transport, self._proxy))
        if self._guard.record:
            self._record = bytearray()
        if self._adopted is not None:
            raw, made = self._adopted
            if raw:
                self.data_received(raw)
            made(self)  # before the loop reads the socket

    def data_received(self, data: bytes) -> None:
        """Forward at most a slice now; the first byte after an idle spell starts the header
        clock."""
        feed = self._feed
        if feed is not None and not self.holding and len(data) <= SLICE_BYTES:
            # An admitted media stream (50 packets a second each): straight to its websocket
            # parser, as aiohttp's own data_received would do after its checks.
            handler = self._handler
            if handler._close or handler._force_close:
                return
            if feed(data)[0]:  # the parser failed: aiohttp closes the connection then
                self._feed = None
                handler.close()
            after = self._guard.after_read
            if after is not None:
                after()
            return
        inner = self._inner
        if inner is None:
            return
        record = self._record
        if record is not None:
            if len(record) + len(data) > RECORD_BYTES:
                self._record = None
            else:
                record += data
        if self._waiting and self._timer is None:
            self._arm()
        if not self.holding and len(data) <= SLICE_BYTES:
            inner.data_received(data)
            return
        self._backlog += data
        if not self.holding:
            self.holding = True
            assert self._transport is not None
            self._transport.pause_reading()
            self._hand_over()

    def _hand_over(self) -> None:
        """Give aiohttp the next slice; come back next iteration while more is held."""
        inner = self._inner
        if inner is None or self._transport is None:
            return
        piece = bytes(self._backlog[:SLICE_BYTES])
        del self._backlog[:SLICE_BYTES]
        inner.data_received(piece)
        if self._backlog:
            asyncio.get_running_loop().call_soon(self._hand_over)
            return
        self.holding = False
        if self._eof:
            if not inner.eof_received():
                self._transport.close()
        elif self._proxy is not None and not self._proxy.inner_paused:
            self._transport.resume_reading()

    def eof_received(self) -> bool | None:
        """Forward (after any held input: keep the transport open until it is handed over)."""
        if self._inner is None:
            return None
        if self.holding:
            self._eof = True
            return True
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forward, and give the connection's slot back."""
        if self._inner is None:
            return
        self._disarm()
        self._backlog.clear()
        if self._proxy is not None:
            self._guard._by_transport.pop(cast(asyncio.BaseTransport, self._proxy), None)
            self._proxy = None  # it refers back to us: no cycle left for the collector
        if self._per_address:
            self._guard.release(self._address)
        else:
            self._guard.total -= 1  # its per-address slot went back in `authenticated`
        inner, self._inner = self._inner, None
        self._feed = self._handler = None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Forward (aiohttp's flow control)."""
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward (aiohttp's flow control)."""
        if self._inner is not None:
            self._inner.resume_writing()

    def authenticated(self) -> None:
        """The peer proved itself (a media stream's authorised `start`): its per-address slot
        is given back, so a provider's media servers, which open every call's stream from a
        handful of addresses, are bounded by `max_connections` and the stream limits alone."""
        self._record = None
        if self._per_address and self._inner is not None:
            self._per_address = False
            self._guard.release(self._address, per_address_only=True)
        self._media_fast_path()

    @property
    def media_fast_path(self) -> bool:
        """True once input goes straight to the websocket parser (an admitted media stream)."""
        return self._feed is not None

    def _media_fast_path(self) -> None:
        """From now on hand this upgraded websocket's input straight to its parser.

        Per inbound packet aiohttp's ``RequestHandler.data_received`` (a Python frame with a
        handful of checks) stood between the guard and the websocket parser (C); at 400 media
        streams that is 20 000 calls a second (SPEC 12). The slicing above still applies: a
        packet over :data:`SLICE_BYTES`, or any input while a backlog is held, takes the
        ordinary path. This mirrors what aiohttp does for an upgraded connection with a
        payload parser, and is used only when the handler looks exactly like that (an aiohttp
        whose internals differ keeps the ordinary path); a ``data_received_cb`` (websocket
        heartbeat) keeps it too.
        """
        handler = self._inner
        parser = getattr(handler, "_payload_parser", None)
        if (
            parser is None
            or getattr(handler, "_upgraded", False) is not True
            or getattr(handler, "_data_received_cb", True) is not None
            or bool(getattr(handler, "_message_tail", None))
            or not all(hasattr(handler, name) for name in ("_close", "_force_close", "close"))
        ):
            return
        self._handler = handler
        self._feed = parser.feed_data

    # ------------------------------------------------------------------ request boundaries

    def request_started(self) -> None:
        """aiohttp parsed a request's headers: the header clock stops."""
        self._waiting = False
        self._disarm()

    def request_finished(self) -> None:
        """The answer is out: the connection is idle (aiohttp's keep-alive timer runs)."""
        self._waiting = True
        self._pinned = False  # a later request may be passed on again
        record, self._record = self._record, None
        if record is not None:
            # The next request's bytes start where this one's end (requests pipelined behind
            # it are kept); when that cannot be told, nothing more is kept.
            self._record = after_request(record)

    # ------------------------------------------------------------------ hand-over

    def take(self) -> tuple[int, bytes] | None:
        """Stop reading and give (socket descriptor, every byte read since the current request
        began); None when the connection cannot be handed over (those bytes not all kept,
        input held back, or it is serving the request a sibling passed it on for)."""
        record, transport = self._record, self._transport
        if record is None or transport is None or transport.is_closing() or self._eof:
            return None
        if self.holding:
            return None  # input held back is still being fed to aiohttp, which resumes reads
        if self._pinned:
            return None  # the request it was passed on for is served here, never passed back
        sock = transport.get_extra_info("socket")
        fileno = getattr(sock, "fileno", None)
        fd = fileno() if fileno is not None else -1
        if fd < 0:
            return None
        transport.pause_reading()
        return fd, bytes(record)

    def keep(self) -> None:
        """The hand-over failed: read on (the connection is still this process's)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self.holding and (self._proxy is None or not self._proxy.inner_paused):
            transport.resume_reading()

    def drop(self) -> None:
        """A sibling holds the connection now: close this process's descriptor, writing
        nothing (the kernel socket lives on in the sibling)."""
        self._record = None
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if not self._waiting or self._transport is None:
            return
        self._guard.rejections.record(
            "connection",
            None,
            "headers not complete within serve.header_timeout_ms: closed",
            self._address,
        )
        self._transport.abort()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GUARD_KEY = web.AppKey("voicecall_connection_guard", ConnectionGuard)


@web.middleware
async def request_started_middleware(request: web.Request, handler: Handler) -> Any:
    """Tell the connection's guard that headers arrived, and when the answer is done."""
    guard = request.app[GUARD_KEY].guard_of(request.transport)
    if guard is None:
        return await handler(request)
    guard.request_started()
    try:
        return await handler(request)
    finally:
        guard.request_finished()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose accepted sockets go through a :class:`ConnectionGuard` first."""

    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        reuse_address: bool = True,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=reuse_address, reuse_port=reuse_port)
        self._guard = guard

    async def start(self) -> None:
        """Listen like `TCPSite.start`, with the guard in front of aiohttp's handler."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


FD_HEADROOM = 1024
"""Descriptors the daemon needs besides public connections: store, RPC, vendor sockets, logs."""


def ensure_fd_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE so `max_connections` cannot exhaust descriptors.

    Outside systemd (whose unit sets `LimitNOFILE=`) the soft limit is often 1024, equal to the
    default cap: the daemon raises it toward the hard limit, and warns when even the hard limit
    is too low. Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                logger.warning("cannot raise the open-file limit to %d: %s", target, exc)
        if soft < needed:
            logger.warning(
                "serve.max_connections = %d needs about %d open files but the limit is %d: "
                "raise it (LimitNOFILE= in the systemd unit, `ulimit -n`) or lower "
                "serve.max_connections",
                max_connections,
                needed,
                soft,
            )
    return int(soft)


class MalformedRequestSummary(logging.Filter):
    """Turns aiohttp's traceback per malformed request into the rejection summaries.

    aiohttp logs every unparsable request (bad header, bad length...) with a traceback on the
    `aiohttp.server` logger: a few bytes from anyone on the internet bought several log lines.
    Such records are counted per reason and address instead (`RejectionLog`); every other
    record passes untouched.
    """

    def __init__(self, rejections: RejectionLog) -> None:
        super().__init__()
        self.rejections = rejections

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a malformed-request record, after counting it."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not str(record.msg).startswith(
            "Error handling request"
        ):
            return True
        address = record.args[0] if isinstance(record.args, tuple) and record.args else None
        self.rejections.record(
            "HTTP request", exc.code or 400, f"malformed ({type(exc).__name__})", str(address)
        )
        return False


def install_guard(app: web.Application, guard: ConnectionGuard) -> None:
    """Attach `guard` to `app` (before the app is frozen) so requests report their start, and
    summarise aiohttp's malformed-request tracebacks (one filter per process)."""
    app[GUARD_KEY] = guard
    app.middlewares.append(request_started_middleware)
    server_logger = logging.getLogger("aiohttp.server")
    for old in [f for f in server_logger.filters if isinstance(f, MalformedRequestSummary)]:
        server_logger.removeFilter(old)
    server_logger.addFilter(MalformedRequestSummary(guard.rejections))
