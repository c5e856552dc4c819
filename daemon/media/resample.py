"""Streaming sample-rate conversion of 16-bit PCM, for TTS output and wide-band legs.

Wraps :class:`soxr.ResampleStream`, which keeps filter state between chunks: resampling each
network chunk on its own would click at every boundary and drift in length. Chunks may split a
sample (an HTTP body arrives in arbitrary pieces), so an odd trailing byte is carried to the
next call. "HQ" is ample for 8 kHz telephony; "VHQ" costs more and is inaudible on a phone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from daemon.media.codecs import BytesLike


class StreamResampler:
    """Converts a PCM16LE mono stream from ``in_rate`` to ``out_rate``, chunk by chunk.

    One instance per stream (it holds filter state). ``feed`` returns whatever output the
    input so far allows, and everything that is left once called with ``last=True``; the
    total output length then equals ``round(total_in * out_rate / in_rate)`` samples.
    """

    __slots__ = ("_carry", "_done", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )
        self._carry = b""
        self._done = False

    def feed(self, pcm16le: BytesLike, last: bool = False) -> bytes:
        """Resample the next chunk; with ``last=True`` also flush the filter's tail.

        Raises:
            ValueError: fed after the stream was finished with ``last=True``.
        """
        if self._done:
            raise ValueError("resampler already finished; create a new one per stream")
        data = self._carry + pcm16le if self._carry else pcm16le
        usable = len(data) & ~1
        # A stream that ends on half a sample drops that byte: it cannot be a sample.
        self._carry = b"" if last else bytes(data[usable:])
        self._done = last
        if self._stream is None:
            return bytes(data[:usable])
        samples = np.frombuffer(data, dtype="<i2", count=usable // 2)
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(samples, last=last)
        return out.astype("<i2", copy=False).tobytes()
