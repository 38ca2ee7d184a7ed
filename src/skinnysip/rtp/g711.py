"""G.711 µ-law and A-law (ITU-T Rec. G.711), vectorised with numpy table lookups.

Encoding takes 16-bit linear PCM (an ``int16`` array, or anything numpy converts to one) and
returns one byte per sample; decoding returns ``int16``.  The tables are built once at import
from the segment/quantisation rules of G.711: µ-law works on the top 14 bits of the sample with
a bias of 33 and inverts all bits; A-law works on the top 13 bits and inverts the even bits
(XOR 0x55).  Results are bit-exact with CPython's ``audioop`` (``lin2ulaw``/``ulaw2lin``/
``lin2alaw``/``alaw2lin``), which the tests check on every input.

RTP static payload types (RFC 3551 §6): PCMU = 0, PCMA = 8, both 8000 Hz.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PT_PCMU", "PT_PCMA", "CLOCK_RATE", "ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode",
           "encode", "decode"]

PT_PCMU = 0
PT_PCMA = 8
CLOCK_RATE = 8000

_ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32)
_CODES = np.arange(256, dtype=np.int32)


def _segment(magnitude: npt.NDArray[np.int32], first_top: int) -> npt.NDArray[np.int32]:
    """Segment number 0..8 of each magnitude: segment k holds values up to first_top * 2**k + ..."""
    tops = np.array([(first_top + 1) * (1 << k) - 1 for k in range(8)], dtype=np.int32)
    return np.searchsorted(tops, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    value = _ALL_INT16 >> 2  # 14-bit sample
    negative = value < 0
    magnitude = np.where(negative, -value, value)
    magnitude = np.minimum(magnitude, 8159) + 33  # clip, then add the bias (0x84 >> 2)
    seg = _segment(magnitude, 0x3F)
    code = (seg << 4) | ((magnitude >> np.minimum(seg + 1, 8)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~_CODES & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    value = _ALL_INT16 >> 3  # 13-bit sample
    negative = value < 0
    magnitude = np.where(negative, -value - 1, value)
    seg = _segment(magnitude, 0x1F)
    quant = np.where(seg < 2, magnitude >> 1, magnitude >> np.minimum(seg, 8)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = _CODES ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()


def _index(samples: npt.ArrayLike) -> npt.NDArray[np.intp]:
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        if arr.size and (arr.min() < -32768 or arr.max() > 32767):
            raise ValueError("samples must be 16-bit (-32768..32767)")
        arr = arr.astype(np.int16)
    return arr.reshape(-1).astype(np.intp) + 32768


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array, shape (n,)) -> n bytes of µ-law.  ``ValueError`` if a
    non-int16 input has values outside the int16 range."""
    return _ULAW_ENC.take(_index(samples)).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """n bytes of µ-law -> int16 array of n samples."""
    return _ULAW_DEC.take(np.frombuffer(bytes(data), dtype=np.uint8).astype(np.intp))


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array) -> A-law bytes (one per sample)."""
    return _ALAW_ENC.take(_index(samples)).tobytes()


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """A-law bytes -> int16 array."""
    return _ALAW_DEC.take(np.frombuffer(bytes(data), dtype=np.uint8).astype(np.intp))


def encode(payload_type: int, samples: npt.ArrayLike) -> bytes:
    """Encode for an RTP payload type: 0 (PCMU) or 8 (PCMA).  ``ValueError`` for others."""
    if payload_type == PT_PCMU:
        return ulaw_encode(samples)
    if payload_type == PT_PCMA:
        return alaw_encode(samples)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def decode(payload_type: int, data: bytes) -> npt.NDArray[np.int16]:
    """Decode for an RTP payload type: 0 (PCMU) or 8 (PCMA).  ``ValueError`` for others."""
    if payload_type == PT_PCMU:
        return ulaw_decode(data)
    if payload_type == PT_PCMA:
        return alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")
