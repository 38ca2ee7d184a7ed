"""G.711 µ-law and A-law (ITU-T Rec. G.711), vectorised with numpy table lookups.

Encoding takes 16-bit linear PCM (an ``int16`` array, or anything numpy converts to one) and
returns one byte per sample; decoding returns ``int16``.  The tables are built once at import
from the segment/quantisation rules of G.711: µ-law works on the top 14 bits of the sample with
a bias of 33 and inverts all bits; A-law works on the top 13 bits and inverts the even bits
(XOR 0x55).  Results are bit-exact with CPython's ``audioop`` (``lin2ulaw``/``ulaw2lin``/
``lin2alaw``/``alaw2lin``), which the tests check on every input.

Speed: whole buffers run at numpy speed (encoding is several times audioop's).  One 20 ms frame
(160 samples) costs about 1 µs each way, nearly all of it numpy's fixed cost per call (making
the result array, casting the index): decoding a frame stays several times slower than
audioop's C loop, which returns bytes rather than an array (``benchmarks/bench_g711.py``).

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

# Encode tables indexed by the sample's bit pattern read as uint16 (0..32767 are the positive
# samples, 32768..65535 the negative ones), so an int16 array is looked up through a zero-copy
# ``view`` with no index arithmetic.  One 20 ms frame is 160 samples: at that size the fixed cost
# of each numpy call dominates, so the hot paths below make as few calls as possible.
_ULAW_ENC_U16 = np.concatenate([_ULAW_ENC[32768:], _ULAW_ENC[:32768]])
_ALAW_ENC_U16 = np.concatenate([_ALAW_ENC[32768:], _ALAW_ENC[:32768]])
_INT16 = np.dtype(np.int16)
_UINT16 = np.dtype(np.uint16)
_UINT8 = np.dtype(np.uint8)
_frombuffer = np.frombuffer


def _as_uint16(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """The samples as a flat int16 array viewed as uint16 (no copy for a 1-D int16 array)."""
    arr = samples if type(samples) is np.ndarray else np.asarray(samples)
    if arr.dtype is not _INT16 and arr.dtype != _INT16:
        if arr.size and (arr.min() < -32768 or arr.max() > 32767):
            raise ValueError("samples must be 16-bit (-32768..32767)")
        arr = arr.astype(np.int16)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr.view(_UINT16)


def _codes(data: bytes) -> npt.NDArray[np.uint8]:
    try:
        return _frombuffer(data, _UINT8)
    except (TypeError, ValueError, BufferError):  # not a contiguous buffer (a list of ints, a strided view)
        return _frombuffer(bytes(data), _UINT8)


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array, shape (n,)) -> n bytes of µ-law.  ``ValueError`` if a
    non-int16 input has values outside the int16 range."""
    if type(samples) is np.ndarray and samples.dtype is _INT16 and samples.ndim == 1:  # one frame: fast path
        return _ULAW_ENC_U16.take(samples.view(_UINT16)).tobytes()
    return _ULAW_ENC_U16.take(_as_uint16(samples)).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """n bytes of µ-law -> int16 array of n samples."""
    if type(data) is bytes:
        return _ULAW_DEC.take(_frombuffer(data, _UINT8))
    return _ULAW_DEC.take(_codes(data))


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array) -> A-law bytes (one per sample)."""
    if type(samples) is np.ndarray and samples.dtype is _INT16 and samples.ndim == 1:
        return _ALAW_ENC_U16.take(samples.view(_UINT16)).tobytes()
    return _ALAW_ENC_U16.take(_as_uint16(samples)).tobytes()


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """A-law bytes -> int16 array."""
    if type(data) is bytes:
        return _ALAW_DEC.take(_frombuffer(data, _UINT8))
    return _ALAW_DEC.take(_codes(data))


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
