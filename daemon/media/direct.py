"""Inbound media messages delivered to the session as aiohttp parses them, without a task wake.

With ``await ws.receive()`` every 20 ms caller frame of every stream costs a future result, a
scheduled callback and a task step through two coroutines before ``MediaSession.feed`` runs:
at 400 streams that is 20 000 wake-ups a second on the one event loop (SPEC 12). Here the
websocket's message queue is a subclass whose ``feed_data`` hands text messages straight to a
*sink* (the session's ``feed``) from aiohttp's own ``data_received``; the socket owner's
``receive()`` loop then wakes only for control frames (close), for a ``stop``, and for text
that arrived before the sink was attached (it drains those first, so order is kept).

This reaches into aiohttp's websocket internals (the reader's queue class and the point where
``WebSocketResponse`` builds it), so it is feature-checked once: on an aiohttp whose internals
differ, :func:`direct_response` returns a plain ``WebSocketResponse`` and every message goes
through ``receive()`` as before (slower, same behaviour).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from daemon.errors import forget_tracebacks

logger = logging.getLogger(__name__)

Sink = Callable[[str], bool]
"""Takes one text message; returns False for a message that ends the stream (``stop``)."""

try:  # aiohttp >= 3.11 layout (reader_py: the pure-Python twin, for its signatures)
    from aiohttp._websocket import reader_py
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
except ImportError:  # pragma: no cover - older or newer aiohttp: the plain path
    WebSocketDataQueue = WebSocketReader = reader_py = None  # type: ignore[assignment,misc]


def _supported() -> bool:
    if reader_py is None:
        return False
    try:
        post_start = inspect.signature(web.WebSocketResponse._post_start)
        reader = inspect.signature(reader_py.WebSocketReader)
        queue = inspect.signature(reader_py.WebSocketDataQueue)
    except (AttributeError, TypeError, ValueError):
        return False
    return (
        list(post_start.parameters) == ["self", "request", "protocol", "writer"]
        and list(reader.parameters) == ["queue", "max_msg_size", "compress", "decode_text"]
        and list(queue.parameters) == ["protocol", "limit", "loop"]
    )


SUPPORTED = _supported()
QUEUE_LIMIT = 2**16
"""Bytes of queued (non-direct) messages before aiohttp pauses reading the socket."""


if SUPPORTED:

    class _DirectQueue(WebSocketDataQueue):  # type: ignore[misc,valid-type]
        """aiohttp's message queue, except that text goes to the sink once one is attached."""

        sink: Sink | None = None

        def feed_data(self, data: Any, size: int) -> None:
            sink = self.sink
            if sink is not None and data[0] is WSMsgType.TEXT:
                try:
                    if sink(data[1]):
                        return
                except Exception:  # one bad message must not kill the socket's parser
                    logger.exception("media stream: a message could not be handled")
                    return
                self.sink = None  # `stop`: the receive() loop sees it and ends the stream
            super().feed_data(data, size)

    class DirectResponse(web.WebSocketResponse):
        """A ``WebSocketResponse`` whose text messages can bypass ``receive()``."""

        answered = False
        """True: the 101 went out from the sibling worker that passed this connection on."""

        async def _write_headers(self) -> None:
            if not self.answered:
                await super()._write_headers()

        def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
            # Bytes that came right behind the upgrade request (a client must wait for the
            # 101, so normally none; a connection a sibling passed on brings its first
            # messages) are held back from aiohttp's own reader and fed to ours.
            handler = request.protocol
            early = getattr(handler, "_message_tail", b"")
            if early:
                handler._message_tail = b""
            super()._post_start(request, protocol, writer)
            # aiohttp built its own queue and reader above; swap both before any byte of the
            # websocket is parsed (this runs before prepare() first yields to the loop).
            queue = _DirectQueue(handler, QUEUE_LIMIT, loop=handler._loop)
            parser = WebSocketReader(
                queue, self._max_msg_size, bool(self._compress), getattr(self, "_decode_text", True)
            )
            self._reader = queue
            if hasattr(self, "_parser"):
                self._parser = parser
            handler._payload_parser = parser
            if early and parser.feed_data(early)[0]:
                handler.close()  # a protocol error in them: aiohttp does the same

        def attach(self, sink: Sink) -> bool:
            """Deliver text straight to ``sink`` from now on, if nothing is queued (queued
            messages must reach the session first: call again after draining them)."""
            queue = self._reader
            if not isinstance(queue, _DirectQueue) or queue._buffer:
                return False
            queue.sink = sink
            return True


def direct_response(**kwargs: Any) -> web.WebSocketResponse:
    """A websocket response that supports :func:`attach` where aiohttp allows it."""
    if SUPPORTED:
        return DirectResponse(**kwargs)
    return web.WebSocketResponse(**kwargs)


def answered_response(**kwargs: Any) -> web.WebSocketResponse | None:
    """:func:`direct_response` for an upgrade answered already (by the sibling worker that
    passed the connection on): ``prepare()`` does not send the 101 again. None when this
    aiohttp cannot do that (the siblings then never pass a stream on: `SUPPORTED`)."""
    if not SUPPORTED:
        return None
    ws = DirectResponse(**kwargs)
    ws.answered = True
    return ws


def attach(ws: web.WebSocketResponse, sink: Sink) -> bool:
    """Start direct delivery on ``ws``; False while it cannot (yet) be done."""
    if SUPPORTED and isinstance(ws, DirectResponse):
        return ws.attach(sink)
    return False


def release_cycles(ws: web.WebSocketResponse) -> None:
    """Break what keeps a closed stream socket in reference cycles: the direct sink (the
    session's bound method, while the session holds the socket), and the error it stored (a
    peer that reset the connection while it closed) whose traceback's frames refer to the
    socket. While calls are live the daemon freezes what lived 100 ms
    (``daemon.media.gcpolicy``), so a cycle would stay until the daemon is idle."""
    if SUPPORTED and isinstance(ws, DirectResponse):
        queue = ws._reader
        if isinstance(queue, _DirectQueue):
            queue.sink = None
    forget_tracebacks(ws.exception())
