"""G.711 mu-law and A-law for 16-bit little-endian PCM, by table lookup.

Pure and synchronous, no ``audioop`` (deprecated in 3.11, removed in 3.13). The tables are
built once at import from the ITU-T G.711 segment rules, in the same integer arithmetic as the
reference C code (and ``audioop``), so results are bit-exact with it; the tests check every
input. A frame costs one ``numpy.take`` (about a microsecond for 160 samples), and the
mu-law <-> A-law transcodes are a single ``bytes.translate``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final = 8000
"""G.711 telephony sample rate (Hz)."""
FRAME_MS: Final = 20
"""Duration of one media frame: what Twilio, Telnyx and Plivo send and expect."""
FRAME_BYTES: Final = SAMPLE_RATE * FRAME_MS // 1000
"""One 20 ms frame of 8-bit G.711: 160 bytes (also 160 samples)."""
ULAW_SILENCE: Final = 0xFF
"""mu-law code of PCM 0: the byte to pad frames with."""
ALAW_SILENCE: Final = 0xD5
"""A-law code of PCM 0."""

BytesLike = bytes | bytearray | memoryview

_ULAW_BIAS = 0x84  # 132: the G.711 mu-law bias, in 16-bit units
_ULAW_CLIP = 8159  # 32635 >> 2: largest magnitude mu-law represents, in 14-bit units
_SEG_ULAW_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_SEG_ALAW_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    """Index: int16 sample viewed as uint16; value: its mu-law code (14-bit reference rule)."""
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    negative = pcm < 0
    mag = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_ULAW_END, mag)  # first segment whose end >= mag
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    """Index: int16 sample viewed as uint16; value: its A-law code (13-bit reference rule)."""
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    negative = pcm < 0
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_SEG_ALAW_END, mag)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x55, 0xD5)).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    """Index: mu-law code; value: the PCM16 sample it stands for, little-endian."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype("<i2")


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    """Index: A-law code; value: the PCM16 sample it stands for, little-endian."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype("<i2")


_ULAW_ENCODE: Final = _build_ulaw_encode()
_ALAW_ENCODE: Final = _build_alaw_encode()
_ULAW_DECODE: Final = _build_ulaw_decode()
_ALAW_DECODE: Final = _build_alaw_decode()
# Transcodes go through the linear value, exactly like audioop's ulaw2lin + lin2alaw.
_ULAW_TO_ALAW: Final = _ALAW_ENCODE[_ULAW_DECODE.view(np.uint16)].tobytes()
_ALAW_TO_ULAW: Final = _ULAW_ENCODE[_ALAW_DECODE.view(np.uint16)].tobytes()


def _samples(pcm16le: BytesLike) -> npt.NDArray[np.uint16]:
    if len(pcm16le) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm16le)}")
    return np.frombuffer(pcm16le, dtype="<u2")


def pcm16_to_ulaw(pcm16le: BytesLike) -> bytes:
    """Encode 16-bit little-endian PCM to mu-law, one byte per sample.

    Raises:
        ValueError: the input has an odd number of bytes.
    """
    return _ULAW_ENCODE.take(_samples(pcm16le)).tobytes()


def pcm16_to_alaw(pcm16le: BytesLike) -> bytes:
    """Encode 16-bit little-endian PCM to A-law, one byte per sample.

    Raises:
        ValueError: the input has an odd number of bytes.
    """
    return _ALAW_ENCODE.take(_samples(pcm16le)).tobytes()


def ulaw_to_pcm16(ulaw: BytesLike) -> bytes:
    """Decode mu-law to 16-bit little-endian PCM (two bytes per input byte)."""
    return _ULAW_DECODE.take(np.frombuffer(ulaw, dtype=np.uint8)).tobytes()


def alaw_to_pcm16(alaw: BytesLike) -> bytes:
    """Decode A-law to 16-bit little-endian PCM (two bytes per input byte)."""
    return _ALAW_DECODE.take(np.frombuffer(alaw, dtype=np.uint8)).tobytes()


def ulaw_to_alaw(ulaw: bytes) -> bytes:
    """Transcode mu-law to A-law byte by byte (for PCMA legs); no PCM in between."""
    return ulaw.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(alaw: bytes) -> bytes:
    """Transcode A-law to mu-law byte by byte."""
    return alaw.translate(_ALAW_TO_ULAW)
