"""Caller audio taken from the kernel a few frames at a time (``SO_RCVLOWAT``), not per frame.

A provider sends one websocket message of caller audio every 20 ms per call. Read as it comes,
each one costs an epoll wake-up, a ``recv`` and a trip through the protocol callbacks on the
one event loop every call shares (SPEC 12): 20 000 a second at 400 calls. With the socket's
receive low-water mark at a few frames' worth of bytes, Linux reports the socket readable only
once that much has arrived, and one read takes them all (docs/benchmarks.md has the A/B). The
audio goes to the STT vendor in 100 ms appends anyway (``daemon.speech.stt.openai_realtime``),
so the few tens of milliseconds it now waits in the kernel are not heard anywhere; realtime
calls (SPEC 15, a budget of milliseconds per frame) are never batched.

What must not wait is a message the provider sends when no audio follows it (a mark echo or a
DTMF digit after the caller's media paused; ``stop`` is followed by the close, which the kernel
always reports). So every :data:`SWEEP_SECONDS` each socket is looked at: one that delivered
nothing since the last look gets its mark lowered to one byte (the kernel then reports at once
what is waiting: ``tcp_set_rcvlowat`` re-checks readiness), and one whose audio flows again gets
its batch back. A message therefore waits at most about two sweeps. Where the option does not
exist or is refused, the socket is simply read per message, as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 0.1
"""How often sockets are checked for messages held below their mark."""
BYTES_PER_FRAME = 240
"""The smallest a 20 ms media message can be on any provider (its base64 payload alone is 216
characters): the mark is this times the frames to gather, so a batch never spans more time
than asked, whatever the provider's JSON around the payload."""
FRAME_MS = 20
SUPPORTED = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVLOWAT")


class Counted(Protocol):
    """A stream that counts the messages it received (``MediaSession.received``)."""

    received: int


class _Entry:
    __slots__ = ("lowered", "seen", "sock")

    def __init__(self, sock: Any, seen: int) -> None:
        self.sock = sock
        self.seen = seen
        self.lowered = False


def batch_bytes(batch_ms: int) -> int:
    """The low-water mark for ``streaming.inbound_batch_ms`` (0 or 1 byte: no batching)."""
    return max(1, batch_ms // FRAME_MS * BYTES_PER_FRAME)


class ReadBatcher:
    """Keeps the media sockets' low-water marks: batched while audio flows, one byte when not."""

    def __init__(self, batch_ms: int, *, sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.mark = batch_bytes(batch_ms)
        self.sweep_seconds = sweep_seconds
        self._entries: dict[Counted, _Entry] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        """False when nothing is batched (``inbound_batch_ms`` below one frame, or no
        ``SO_RCVLOWAT`` on this system)."""
        return SUPPORTED and self.mark > 1

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, stream: Counted, transport: asyncio.BaseTransport | None) -> bool:
        """Batch the reads of ``stream``'s socket from now on; False when it cannot be."""
        if not self.enabled or transport is None or stream in self._entries:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or not _set(sock, self.mark):
            return False
        self._entries[stream] = _Entry(sock, stream.received)
        if self._timer is None:
            self._arm()
        return True

    def discard(self, stream: Counted) -> None:
        """Forget ``stream`` (its socket is closing: nothing to restore)."""
        self._entries.pop(stream, None)
        if not self._entries and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Stop sweeping and forget every socket."""
        self._entries.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.sweep_seconds, self.sweep)

    def sweep(self) -> None:
        """Lower the mark of every socket that delivered nothing since the last sweep, and
        restore it on those whose audio flows again."""
        self._timer = None
        mark = self.mark
        try:
            for stream, entry in self._entries.items():
                received = stream.received
                if received != entry.seen:
                    entry.seen = received
                    if entry.lowered and _set(entry.sock, mark):
                        entry.lowered = False
                elif not entry.lowered:
                    entry.lowered = _set(entry.sock, 1)
        finally:  # a sweep that stopped would leave messages held below a mark for good
            if self._entries:
                self._arm()


def _set(sock: Any, mark: int) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
    except (OSError, ValueError) as exc:
        # A socket closed under us (uvloop's stand-in socket then raises ValueError for its
        # fd of -1, asyncio's an OSError), or a system that refuses the value.
        logger.debug("SO_RCVLOWAT %d refused: %s", mark, exc)
        return False
    return True
