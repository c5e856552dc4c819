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

from typing import Any

import aiohttp

_TEXT = int(aiohttp.WSMsgType.TEXT)


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
