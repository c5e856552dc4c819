"""Server-to-client websocket text frames, built once and written straight to the transport.

Why not ``WebSocketResponse.send_str``: it is a coroutine, so every 20 ms frame of every stream
would cost a coroutine object and a resume on the shared event loop (SPEC 12). An outbound
frame is instead turned into its complete wire bytes (RFC 6455 header + UTF-8 payload) when the
audio is produced, and the pacer's tick only calls ``transport.write``. This is valid because
the websocket is opened with compression off (a server frame is then just an unmasked header and
the payload) and every write happens on the event loop between aiohttp's own whole-frame writes
(pong, close), so frames never interleave. Once aiohttp starts closing, nothing more is written.
"""

from __future__ import annotations

import struct
from typing import Protocol

SEND_BUFFER_LIMIT = 1024 * 1024
"""A peer whose unread data exceeds this has stopped reading: close it with 1013 (SPEC 9)."""

_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame carrying ``text`` (server to client)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return _LEN2(0x81, 126, size) + data
    return _LEN8(0x81, 127, size) + data


class Transport(Protocol):
    """What the writer needs of an asyncio (or uvloop) transport."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class FrameWriter:
    """Writes prepared frames to one connection and notices a peer that stopped reading."""

    __slots__ = ("_transport", "closed", "overflowed")

    def __init__(self, transport: Transport | None) -> None:
        self._transport = transport
        self.closed = transport is None
        self.overflowed = False
        """Set once the send buffer passed :data:`SEND_BUFFER_LIMIT`; the session closes 1013."""

    def write(self, frame: bytes) -> bool:
        """Write a prepared frame; False when the connection can take no more."""
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            self.closed = True
            return False
        transport.write(frame)
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.overflowed = True
            self.closed = True
            return False
        return True

    def close(self) -> None:
        """Stop writing (aiohttp takes over to send the close frame)."""
        self.closed = True
