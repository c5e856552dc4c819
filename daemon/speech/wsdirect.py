"""Text frames on a vendor websocket written without a coroutine (the caller-audio hot path).

Every streamed call forwards caller audio to a vendor socket (STT, or the Realtime API) many
times a second. ``ClientWebSocketResponse.send_str`` is a coroutine, so the audio went through
a writer task: an event set, a task wake-up and two coroutine frames per send, on the one event
loop every call shares (SPEC 12). For an uncompressed socket, ``send_frame`` does nothing more
than build the frame and write it to the transport, then waits only when the transport is
paused; so while the socket's own writer task is idle, the audio can be written at once from
the caller's packet handler. This reaches into aiohttp's websocket writer (3.11+ layout), so it
is feature-checked per socket: where the internals differ, :func:`direct_writer` returns None
and the caller keeps its task path (slower, same behaviour).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp

from daemon.errors import forget_tracebacks

logger = logging.getLogger(__name__)

_TEXT = int(aiohttp.WSMsgType.TEXT)
_TEXT_TYPE = aiohttp.WSMsgType.TEXT


def direct_writer(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """aiohttp's frame writer of ``ws`` if :func:`write_text` may use it, else None."""
    writer = getattr(ws, "_writer", None)
    protocol = getattr(writer, "protocol", None)
    if (
        writer is None
        or getattr(writer, "compress", None) != 0
        or not callable(getattr(writer, "_write_websocket_frame", None))
        or not all(hasattr(writer, name) for name in ("_closing", "_output_size", "_limit"))
        or not isinstance(getattr(protocol, "_paused", None), bool)
    ):
        return None
    return writer


def write_text(writer: Any, text: str) -> bool:
    """Write one text frame now, as ``send_str`` would; False when it cannot be written here
    (the socket is closing or its transport paused, or the write failed): the caller then
    queues it for its writer task, which waits for the socket or reports the failure."""
    if writer._closing or writer.protocol._paused:
        return False
    try:
        writer._write_websocket_frame(text.encode(), _TEXT, 0)
    except (aiohttp.ClientError, ConnectionError):
        return False
    if writer._output_size > writer._limit:
        writer._output_size = 0  # as send_frame does when the transport is not paused
    return True


# ---------------------------------------------------------------------- reading without a task

# Every vendor message through ``async for message in ws`` costs a future result, a scheduled
# callback and a task step before its handler runs; at 100 realtime calls that is 5 000 task
# wake-ups a second for the model's audio alone, and a burst of deltas read in one loop turn
# is handled only in the next one, after all of them were read (SPEC 12, toolkit latency per
# frame). A socket opened under :func:`direct_reading` instead gets a message queue whose
# ``feed_data`` hands text straight to a sink once one is attached (:func:`attach_reader`),
# from aiohttp's own ``data_received``, as :mod:`daemon.media.direct` does for the media
# streams' inbound side. The owner's ``receive()`` loop still sees control frames (close,
# ping), and text that arrived before the sink was attached (drain it, then attach again).
# The queue and parser are swapped in when aiohttp binds them to the connection, before any
# byte of the websocket is parsed. Feature-checked: where aiohttp's internals differ, the
# socket keeps aiohttp's own queue and every message goes through ``receive()``.

_DIRECT_READING: ContextVar[int | None] = ContextVar("vc_direct_reading", default=None)
"""The max message size of the sockets opened under :func:`direct_reading` (else None)."""


def _reader_supported() -> bool:
    if reader_py is None:
        return False
    try:
        reader = inspect.signature(reader_py.WebSocketReader)
        queue = inspect.signature(reader_py.WebSocketDataQueue)
        init = inspect.signature(aiohttp.ClientWebSocketResponse.__init__)
    except (AttributeError, TypeError, ValueError):
        return False
    return (
        list(reader.parameters) == ["queue", "max_msg_size", "compress", "decode_text"]
        and list(queue.parameters) == ["protocol", "limit", "loop"]
        and list(init.parameters)[:5] == ["self", "reader", "writer", "protocol", "response"]
    )


try:  # aiohttp >= 3.11 layout (reader_py: the pure-Python twin, for its signatures)
    from aiohttp._websocket import reader_py
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
except ImportError:  # pragma: no cover - older or newer aiohttp: the plain path
    WebSocketDataQueue = WebSocketReader = reader_py = None  # type: ignore[assignment,misc]

READER_SUPPORTED = _reader_supported()
_HEARTBEAT_SUPPORTED = all(
    callable(getattr(aiohttp.ClientWebSocketResponse, name, None))
    for name in ("_on_data_received", "_send_heartbeat", "_reset_heartbeat")
)
"""aiohttp's heartbeat hooks that :class:`DirectClientWebSocketResponse` coalesces."""

TextSink = Callable[[str], None]


@contextmanager
def direct_reading(max_msg_size: int) -> Iterator[None]:
    """Sockets opened (``ws_connect``) in this block, in this task, by a session whose
    ``ws_response_class`` is :class:`DirectClientWebSocketResponse`, can take a sink."""
    token = _DIRECT_READING.set(max_msg_size)
    try:
        yield
    finally:
        _DIRECT_READING.reset(token)


if READER_SUPPORTED:

    class DirectClientQueue(WebSocketDataQueue):  # type: ignore[misc,valid-type]
        """aiohttp's message queue, except that text goes to the sink once one is attached."""

        sink: TextSink | None = None

        def feed_data(self, data: Any, size: int) -> None:
            sink = self.sink
            if sink is not None and data[0] is _TEXT_TYPE:
                try:
                    sink(data[1])
                except Exception:  # one bad message must not kill the socket's parser
                    logger.exception("vendor socket: a message could not be handled")
                return
            super().feed_data(data, size)

    class DirectClientWebSocketResponse(aiohttp.ClientWebSocketResponse):
        """A client websocket that swaps in :class:`DirectClientQueue` when opened under
        :func:`direct_reading` (otherwise exactly aiohttp's).

        Such a socket also keeps its heartbeat without a callback per read: aiohttp schedules
        a ``call_soon`` (a handle, a loop callback and two Python calls re-arming the ping
        timer) for every read that brings data, which on a model socket is every audio delta.
        Here a read only sets a flag; when the ping timer fires and data came since it was
        armed, it is re-armed instead of pinging. So a ping goes out between one and two
        heartbeat periods after the last data (aiohttp: exactly one), and a peer that stops
        answering is still found (the pong wait itself takes aiohttp's own path)."""

        _direct_heartbeat = False
        _data_seen = False

        def _on_data_received(self) -> None:
            if self._direct_heartbeat and self._pong_response_cb is None:
                self._data_seen = True
                return
            super()._on_data_received()

        def _send_heartbeat(self) -> None:
            if self._data_seen:
                self._data_seen = False
                self._heartbeat_cb = None
                self._reset_heartbeat()  # re-armed one period from now
                return
            super()._send_heartbeat()

        async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
            """aiohttp's close, then the socket's reference cycles broken (see
            :func:`release_cycles`)."""
            try:
                return await super().close(code=code, message=message)
            finally:
                release_cycles(self)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            max_size = _DIRECT_READING.get()
            connection = getattr(self, "_conn", None)
            protocol = getattr(connection, "protocol", None)
            if max_size is None or protocol is None or getattr(self, "_compress", 1) != 0:
                return
            own = type(protocol).set_parser

            def set_parser(parser: Any, payload: Any, data_received_cb: Any = None) -> None:
                del protocol.set_parser  # once: back to the class's method
                if payload is self._reader and not payload._buffer:
                    payload = DirectClientQueue(protocol, payload._limit // 2, loop=self._loop)
                    parser = WebSocketReader(payload, max_size, False, True)
                    self._reader = payload
                    self._parser = parser
                    self._direct_heartbeat = _HEARTBEAT_SUPPORTED
                own(protocol, parser, payload, data_received_cb=data_received_cb)

            protocol.set_parser = set_parser

else:  # pragma: no cover - aiohttp internals differ: the plain class, never a sink
    DirectClientWebSocketResponse = aiohttp.ClientWebSocketResponse  # type: ignore[misc,assignment]


def attach_reader(ws: aiohttp.ClientWebSocketResponse, sink: TextSink) -> bool:
    """Deliver ``ws``'s text messages straight to ``sink`` from now on; False when it cannot
    (yet): not a direct socket, or messages are queued (drain them with ``receive()`` first,
    then call again, so the order is kept)."""
    queue = getattr(ws, "_reader", None)
    if not READER_SUPPORTED or not isinstance(queue, DirectClientQueue) or queue._buffer:
        return False
    queue.sink = sink
    return True


def detach_reader(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Stop delivering to the sink (text queues for ``receive()`` again)."""
    queue = getattr(ws, "_reader", None)
    if READER_SUPPORTED and isinstance(queue, DirectClientQueue):
        queue.sink = None


def reader_attached(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """True while ``ws``'s text goes straight to a sink."""
    queue = getattr(ws, "_reader", None)
    return READER_SUPPORTED and isinstance(queue, DirectClientQueue) and queue.sink is not None


def release_cycles(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Break what keeps a closed client socket in a reference cycle.

    With a heartbeat, aiohttp's connection protocol keeps the socket's data callback (a bound
    method), and the socket keeps the protocol through its response; an error the socket
    stored carries a traceback whose frames refer to the socket. While calls are live the
    daemon freezes what lived 100 ms (``daemon.media.gcpolicy``), so such a cycle would stay
    until the daemon is idle: one per call's vendor socket.
    """
    protocol = getattr(getattr(ws, "_response", None), "_protocol", None)
    if protocol is not None and getattr(protocol, "_data_received_cb", None) is not None:
        protocol._data_received_cb = None
    forget_tracebacks(ws.exception())
