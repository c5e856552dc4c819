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

import binascii
import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from daemon.media.codecs import FRAME_BYTES

if TYPE_CHECKING:
    from daemon.media.protocols import MediaFraming

SEND_BUFFER_LIMIT = 1024 * 1024
"""A peer whose unread data exceeds this has stopped reading: close it with 1013 (SPEC 9)."""

FRAME_B64_BYTES = (FRAME_BYTES + 2) // 3 * 4
"""Base64 of one 160-byte frame: 216 bytes."""

_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


def _header(size: int) -> bytes:
    """The header of one final, unmasked text frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return _LEN2(0x81, 126, size)
    return _LEN8(0x81, 127, size)


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame carrying ``text`` (server to client)."""
    data = text.encode()
    return _header(len(data)) + data


class AudioFrames:
    """Wire bytes of a stream's audio messages, built around the base64 payload as bytes.

    Every 160-byte frame of a stream becomes a message of the same length (its base64 is
    always 216 characters), so the websocket header and the message text around the payload
    are encoded once per stream: each frame then costs one base64 call and two joins, not
    a str round trip, a JSON concatenation and a header (SPEC 12: 20 000 frames a second).
    """

    __slots__ = ("_head", "_prefix", "_suffix", "_tail")

    def __init__(self) -> None:
        self._prefix: str | None = None
        self._suffix = ""
        self._head = b""
        self._tail = b""

    def build(self, framing: MediaFraming, frames: Iterable[bytes]) -> Iterator[bytes]:
        """The complete websocket frame of each audio frame, as ``framing`` words it: whole
        frames around the message text of :meth:`~MediaFraming.media_affixes`, a short one
        (an unpadded last frame) through :meth:`~MediaFraming.encode_media`."""
        prefix, suffix = framing.media_affixes()
        if prefix != self._prefix or suffix != self._suffix:
            self._prefix, self._suffix = prefix, suffix
            body, self._tail = prefix.encode(), suffix.encode()
            self._head = _header(len(body) + FRAME_B64_BYTES + len(self._tail)) + body
        head, tail, b2a = self._head, self._tail, binascii.b2a_base64
        for frame in frames:
            if len(frame) == FRAME_BYTES:
                yield head + b2a(frame, newline=False) + tail
            else:
                yield text_frame(framing.encode_media(b2a(frame, newline=False).decode("ascii")))


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
