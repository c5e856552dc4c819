"""Streaming resampler: exact lengths over many chunks, frequencies preserved, no seams."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.media.resample import StreamResampler
from tests.fakes._server import sine_pcm16

RATE_PAIRS = [(24000, 8000), (22050, 8000), (16000, 8000), (8000, 16000), (8000, 24000)]


def _peak_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def _chunked(resampler: StreamResampler, pcm: bytes, size: int) -> bytes:
    out = bytearray()
    for start in range(0, len(pcm), size):
        out += resampler.feed(pcm[start : start + size])
    out += resampler.feed(b"", last=True)
    return bytes(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_no_length_drift_over_many_chunks(in_rate: int, out_rate: int) -> None:
    """500 chunks of 20 ms come out at exactly the output rate's sample count."""
    chunk = bytes(2 * in_rate // 50)
    resampler = StreamResampler(in_rate, out_rate)
    total = sum(len(resampler.feed(chunk)) for _ in range(500))
    total += len(resampler.feed(b"", last=True))
    assert total // 2 == round(500 * len(chunk) // 2 * out_rate / in_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_sine_frequency_survives(in_rate: int, out_rate: int) -> None:
    """A 440 Hz tone is still 440 Hz (within one FFT bin) after conversion."""
    pcm = sine_pcm16(440.0, 1.0, in_rate)
    out = _chunked(StreamResampler(in_rate, out_rate), pcm, 1000)
    assert abs(_peak_hz(out, out_rate) - 440.0) <= 1.0


def test_tone_above_new_nyquist_is_filtered() -> None:
    """Downsampling removes a 6 kHz tone instead of aliasing it to 2 kHz."""
    pcm = sine_pcm16(6000.0, 0.5, 24000)
    out = np.frombuffer(_chunked(StreamResampler(24000, 8000), pcm, 960), dtype="<i2")
    assert np.sqrt(np.mean(out[400:-400].astype(np.float64) ** 2)) < 100  # input RMS ~11600


def test_chunked_equals_one_shot() -> None:
    """Odd-sized chunks (splitting samples) give the same audio as one big call."""
    pcm = sine_pcm16(300.0, 0.5, 24000) + sine_pcm16(1200.0, 0.5, 24000)
    one_shot = np.frombuffer(StreamResampler(24000, 8000).feed(pcm, last=True), dtype="<i2")
    chunked = np.frombuffer(_chunked(StreamResampler(24000, 8000), pcm, 777), dtype="<i2")
    assert len(chunked) == len(one_shot)
    assert np.max(np.abs(chunked.astype(np.int32) - one_shot)) <= 2


def test_odd_byte_is_carried_to_the_next_chunk() -> None:
    """A chunk ending mid-sample holds that byte back instead of corrupting the stream."""
    resampler = StreamResampler(8000, 8000)
    assert resampler.feed(b"\x01\x02\x03") == b"\x01\x02"
    assert resampler.feed(b"\x04") == b"\x03\x04"
    assert resampler.feed(b"\x05", last=True) == b""


def test_equal_rates_pass_through() -> None:
    """No conversion and no delay when the rates already match."""
    pcm = sine_pcm16(440.0, 0.1, 8000)
    assert StreamResampler(8000, 8000).feed(pcm) == pcm


def test_feed_after_last_is_an_error() -> None:
    """A finished stream cannot be reused: its filter state is gone."""
    resampler = StreamResampler(24000, 8000)
    resampler.feed(bytes(960), last=True)
    with pytest.raises(ValueError, match="already finished"):
        resampler.feed(bytes(960))


def test_bad_rate_is_rejected() -> None:
    """A zero rate is reported with both rates."""
    with pytest.raises(ValueError, match="0 -> 8000"):
        StreamResampler(0, 8000)
