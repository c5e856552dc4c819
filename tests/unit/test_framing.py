"""Framer: exact 160-byte frames from arbitrary chunks, remainder carried, padded flush."""

from __future__ import annotations

import time

import pytest

from daemon.media.codecs import FRAME_BYTES, ULAW_SILENCE
from daemon.media.framing import Framer


def test_chunk_of_exact_frames() -> None:
    """Two frames in, two frames out, nothing held."""
    framer = Framer()
    data = bytes(range(160)) * 2
    assert framer.push(data) == [data[:160], data[160:]]
    assert framer.pending == 0
    assert framer.flush() is None


@pytest.mark.parametrize("chunk_size", [1, 7, 159, 160, 161, 333, 1000])
def test_arbitrary_chunks_reassemble_the_stream(chunk_size: int) -> None:
    """Whatever the chunk size, the frames concatenate to the input, all 160 bytes."""
    data = bytes(i % 251 for i in range(5000))
    framer = Framer()
    frames: list[bytes] = []
    for start in range(0, len(data), chunk_size):
        frames += framer.push(data[start : start + chunk_size])
    assert all(len(frame) == FRAME_BYTES for frame in frames)
    assert b"".join(frames) == data[: len(frames) * FRAME_BYTES]
    assert framer.pending == len(data) % FRAME_BYTES
    tail = framer.flush()
    assert tail == data[len(frames) * FRAME_BYTES :] + bytes([ULAW_SILENCE]) * (160 - 40)


def test_flush_pad_choices() -> None:
    """flush pads with the given byte, or returns the raw remainder with pad=None."""
    framer = Framer()
    framer.push(b"abc")
    assert framer.flush(pad=0xD5) == b"abc" + b"\xd5" * 157
    framer.push(b"abc")
    assert framer.flush(pad=None) == b"abc"
    assert framer.flush() is None


def test_reset_drops_the_remainder() -> None:
    """After barge-in the half frame of the old utterance must not prefix the next one."""
    framer = Framer()
    framer.push(b"x" * 100)
    framer.reset()
    assert framer.push(b"y" * 160) == [b"y" * 160]


def test_other_frame_sizes() -> None:
    """PCM16 at 16 kHz uses 640-byte frames."""
    framer = Framer(640)
    assert [len(f) for f in framer.push(bytes(1300))] == [640, 640]
    with pytest.raises(ValueError, match="positive"):
        Framer(0)


def test_accepts_memoryview_and_bytearray() -> None:
    """Chunks may be any buffer."""
    framer = Framer()
    assert framer.push(bytearray(100)) == []
    assert framer.push(memoryview(bytes(60))) == [bytes(160)]


def test_large_chunk_is_cheap() -> None:
    """A minute of audio in one chunk is framed in one linear pass (a copy per frame)."""
    framer = Framer()
    start = time.perf_counter()
    frames = framer.push(bytes(8000 * 60 + 10))
    assert time.perf_counter() - start < 0.5  # ~1 ms normally
    assert len(frames) == 3000 and framer.pending == 10
