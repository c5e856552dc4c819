"""Cuts a byte stream of arbitrary chunks into fixed-size media frames.

TTS vendors deliver audio in whatever pieces the network gives; telephony media streams want
exactly 20 ms (160 bytes of G.711) per message. The Framer carries the remainder between
chunks. Each frame is copied once into its own ``bytes`` (it is handed to base64 next) and the
input is sliced through a memoryview, so the cost is linear in the bytes, not in the buffer.
"""

from __future__ import annotations

from daemon.media.codecs import FRAME_BYTES, ULAW_SILENCE, BytesLike


class Framer:
    """Accumulates chunks and hands out whole frames of ``frame_bytes`` each."""

    __slots__ = ("_partial", "frame_bytes")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._partial = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back because they do not yet fill a frame."""
        return len(self._partial)

    def push(self, chunk: BytesLike) -> list[bytes]:
        """Add a chunk; return the frames it completes (possibly none), in order."""
        size = self.frame_bytes
        view = memoryview(chunk)
        frames: list[bytes] = []
        partial = self._partial
        start = 0
        if partial:
            start = min(size - len(partial), len(view))
            partial += view[:start]
            if len(partial) < size:
                return frames
            frames.append(bytes(partial))
            partial.clear()
        end = start + (len(view) - start) // size * size
        frames.extend(view[i : i + size].tobytes() for i in range(start, end, size))
        partial += view[end:]
        return frames

    def flush(self, pad: int | None = ULAW_SILENCE) -> bytes | None:
        """Return the held-back remainder as a last frame, or None if nothing is held.

        Args:
            pad: byte value that fills the frame up to ``frame_bytes`` (mu-law silence by
                default); None returns the remainder unpadded.
        """
        if not self._partial:
            return None
        tail = bytes(self._partial)
        self._partial.clear()
        if pad is None:
            return tail
        return tail + bytes([pad]) * (self.frame_bytes - len(tail))

    def reset(self) -> None:
        """Drop the remainder (barge-in: the rest of the utterance is not played)."""
        self._partial.clear()
