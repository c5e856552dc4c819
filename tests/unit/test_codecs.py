"""G.711 tables against the reference `audioop` (stdlib up to 3.12; from 3.13 the `audioop-lts`
package of the test extra provides the same module), golden bytes."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from daemon.media import codecs


def _audioop() -> types.ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop


Codec = Callable[[bytes], bytes]
ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_for_every_sample() -> None:
    """All 65536 int16 values encode exactly as audioop.lin2ulaw."""
    assert codecs.pcm16_to_ulaw(ALL_PCM) == _audioop().lin2ulaw(ALL_PCM, 2)


def test_alaw_encode_matches_audioop_for_every_sample() -> None:
    """All 65536 int16 values encode exactly as audioop.lin2alaw."""
    assert codecs.pcm16_to_alaw(ALL_PCM) == _audioop().lin2alaw(ALL_PCM, 2)


def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    """All 256 codes decode exactly as audioop.ulaw2lin."""
    assert codecs.ulaw_to_pcm16(ALL_CODES) == _audioop().ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_matches_audioop_for_every_code() -> None:
    """All 256 codes decode exactly as audioop.alaw2lin."""
    assert codecs.alaw_to_pcm16(ALL_CODES) == _audioop().alaw2lin(ALL_CODES, 2)


def test_transcodes_match_decode_then_encode() -> None:
    """mu-law <-> A-law translate tables equal audioop's decode + encode."""
    audioop = _audioop()
    assert codecs.ulaw_to_alaw(ALL_CODES) == audioop.lin2alaw(audioop.ulaw2lin(ALL_CODES, 2), 2)
    assert codecs.alaw_to_ulaw(ALL_CODES) == audioop.lin2ulaw(audioop.alaw2lin(ALL_CODES, 2), 2)


def test_silence_golden_bytes() -> None:
    """A frame of PCM zeros is 160 x 0xFF in mu-law and 160 x 0xD5 in A-law."""
    frame = bytes(2 * codecs.FRAME_BYTES)
    assert codecs.pcm16_to_ulaw(frame) == b"\xff" * 160
    assert codecs.pcm16_to_alaw(frame) == b"\xd5" * 160
    assert codecs.ULAW_SILENCE == 0xFF and codecs.ALAW_SILENCE == 0xD5
    assert codecs.ulaw_to_pcm16(b"\xff") == b"\x00\x00"
    assert codecs.alaw_to_pcm16(b"\xd5") == b"\x08\x00"  # A-law has no exact zero


def test_frame_constants() -> None:
    """20 ms at 8 kHz is 160 one-byte samples."""
    assert (codecs.SAMPLE_RATE, codecs.FRAME_MS, codecs.FRAME_BYTES) == (8000, 20, 160)


@pytest.mark.parametrize(
    ("encode", "decode"),
    [
        (codecs.pcm16_to_ulaw, codecs.ulaw_to_pcm16),
        (codecs.pcm16_to_alaw, codecs.alaw_to_pcm16),
    ],
)
def test_code_round_trip_is_identity(encode: Codec, decode: Codec) -> None:
    """Decoding then encoding gives every code back (G.711 codes are canonical)..."""
    codes = ALL_CODES
    roundtrip = encode(decode(codes))
    if encode is codecs.pcm16_to_ulaw:
        # ...except mu-law's negative zero (0x7F), which decodes to 0 and encodes as 0xFF.
        assert roundtrip == codes.replace(b"\x7f", b"\xff")
    else:
        assert roundtrip == codes


@pytest.mark.parametrize("encode", [codecs.pcm16_to_ulaw, codecs.pcm16_to_alaw])
def test_sample_round_trip_error_is_bounded(encode: Codec) -> None:
    """PCM -> G.711 -> PCM stays within the quantisation step (about 3% of the magnitude)."""
    decode = codecs.ulaw_to_pcm16 if encode is codecs.pcm16_to_ulaw else codecs.alaw_to_pcm16
    pcm = np.frombuffer(ALL_PCM, dtype="<i2").astype(np.int32)
    back = np.frombuffer(decode(encode(ALL_PCM)), dtype="<i2").astype(np.int32)
    error = np.abs(back - pcm)
    assert np.all(error <= np.maximum(np.abs(pcm) // 16, 64))


def test_accepts_bytearray_and_memoryview() -> None:
    """Any buffer works, so callers need not copy into bytes first."""
    pcm = np.array([0, 1000, -1000, 32767], dtype="<i2").tobytes()
    expected = codecs.pcm16_to_ulaw(pcm)
    assert codecs.pcm16_to_ulaw(bytearray(pcm)) == expected
    assert codecs.pcm16_to_ulaw(memoryview(pcm)) == expected


def test_odd_pcm_length_is_rejected() -> None:
    """Half a sample is a caller bug: say so instead of guessing."""
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        codecs.pcm16_to_ulaw(b"\x00\x00\x00")


def test_empty_input() -> None:
    """Empty in, empty out."""
    assert codecs.pcm16_to_ulaw(b"") == b""
    assert codecs.ulaw_to_pcm16(b"") == b""
    assert codecs.ulaw_to_alaw(b"") == b""
