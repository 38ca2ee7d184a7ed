"""G.711 µ-law and A-law (ITU-T Rec. G.711) by table lookup: a small C loop, or numpy.

Encoding takes 16-bit linear PCM (an ``int16`` array, or anything numpy converts to one) and
returns one byte per sample; decoding returns ``int16``.  The tables are built once at import
from the segment/quantisation rules of G.711: µ-law works on the top 14 bits of the sample with
a bias of 33 and inverts all bits; A-law works on the top 13 bits and inverts the even bits
(XOR 0x55).  Results are bit-exact with CPython's ``audioop`` (``lin2ulaw``/``ulaw2lin``/
``lin2alaw``/``alaw2lin``), which the tests check on every input.

Two implementations, the same results: the C extension ``skinnysip.rtp._g711`` (built by
``setup.py`` when a C compiler is there; it loops over these same tables, loaded into it at
import) and the numpy table lookups (``take``).  The public functions are the extension's own
built-ins when it imports (no Python frame on the hot path), the numpy ones otherwise;
:data:`IMPLEMENTATION` says which, :data:`NUMPY_FUNCTIONS` keeps the numpy ones.  The C encoders
take a C-contiguous native int16 ndarray directly and hand any other input (lists, other dtypes,
strided views) to the numpy encoders, so conversions and range errors are the same.

Speed (``benchmarks/bench_g711.py``, ours vs ``audioop`` timed alternately; ratios > 1 mean
faster).  With C, one 20 ms frame (160 samples) decodes in 0.16-0.17 µs (0.53-0.56x audioop,
which returns bytes where we return an ndarray: making and freeing the array is about 0.09 µs of
it, the loop 0.06 µs) and encodes in 0.08 µs (17-23x); whole buffers decode at 1.1x and encode
at 30-38x.  The numpy tables: 0.85-0.89 µs per frame decode (0.11-0.12x; ``np.frombuffer``
alone is 0.28 µs), 0.92-1.0 µs encode (1.5-2.1x), bulk decode 0.32-0.34x, bulk encode 7.5-8.6x.

RTP static payload types (RFC 3551 §6): PCMU = 0, PCMA = 8, both 8000 Hz.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PT_PCMU", "PT_PCMA", "CLOCK_RATE", "IMPLEMENTATION", "ulaw_encode", "ulaw_decode", "alaw_encode",
           "alaw_decode", "encode", "decode"]

#: what the decoders accept: any bytes-like object, or what ``bytes()`` turns into bytes (not an int)
Buffer = bytes | bytearray | memoryview | Iterable[int]

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


def _codes(data: Buffer) -> npt.NDArray[np.uint8]:
    """The codes of any bytes-like object, or of what ``bytes()`` accepts except an int (which
    ``bytes()`` would turn into that many zero bytes): ``TypeError``/``ValueError`` as ``bytes()``."""
    if isinstance(data, int):
        raise TypeError(f"expected a bytes-like object, not {type(data).__name__!r}")
    try:
        return _frombuffer(data, _UINT8)  # type: ignore[arg-type]  # an iterable fails here: below
    except (TypeError, ValueError, BufferError):  # not a contiguous buffer (a list of ints, a strided view)
        return _frombuffer(bytes(data), _UINT8)


def _numpy_ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array, shape (n,), or anything numpy converts to one) -> n bytes
    of µ-law.  ``ValueError`` if a non-int16 input has values outside the int16 range."""
    if type(samples) is np.ndarray and samples.dtype is _INT16 and samples.ndim == 1:  # one frame: fast path
        return _ULAW_ENC_U16.take(samples.view(_UINT16)).tobytes()
    return _ULAW_ENC_U16.take(_as_uint16(samples)).tobytes()


def _numpy_ulaw_decode(data: Buffer) -> npt.NDArray[np.int16]:
    """n bytes of µ-law (any bytes-like object, or what ``bytes()`` accepts) -> int16 array of n
    samples (shape (n,)).  ``TypeError`` for a str or an int, ``ValueError`` for ints outside 0..255."""
    if type(data) is bytes:
        return _ULAW_DEC.take(_frombuffer(data, _UINT8))
    return _ULAW_DEC.take(_codes(data))


def _numpy_alaw_encode(samples: npt.ArrayLike) -> bytes:
    """16-bit linear PCM (int16 array, shape (n,), or anything numpy converts to one) -> n bytes
    of A-law.  ``ValueError`` if a non-int16 input has values outside the int16 range."""
    if type(samples) is np.ndarray and samples.dtype is _INT16 and samples.ndim == 1:
        return _ALAW_ENC_U16.take(samples.view(_UINT16)).tobytes()
    return _ALAW_ENC_U16.take(_as_uint16(samples)).tobytes()


def _numpy_alaw_decode(data: Buffer) -> npt.NDArray[np.int16]:
    """n bytes of A-law (any bytes-like object, or what ``bytes()`` accepts) -> int16 array of n
    samples (shape (n,)).  ``TypeError`` for a str or an int, ``ValueError`` for ints outside 0..255."""
    if type(data) is bytes:
        return _ALAW_DEC.take(_frombuffer(data, _UINT8))
    return _ALAW_DEC.take(_codes(data))


def _numpy_encode(payload_type: int, samples: npt.ArrayLike) -> bytes:
    """Encode for an RTP payload type: 0 (PCMU) or 8 (PCMA), RFC 3551 §6.  ``ValueError`` for others."""
    if payload_type == PT_PCMU:
        return _numpy_ulaw_encode(samples)
    if payload_type == PT_PCMA:
        return _numpy_alaw_encode(samples)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def _numpy_decode(payload_type: int, data: Buffer) -> npt.NDArray[np.int16]:
    """Decode for an RTP payload type: 0 (PCMU) or 8 (PCMA), RFC 3551 §6.  ``ValueError`` for others."""
    if payload_type == PT_PCMU:
        return _numpy_ulaw_decode(data)
    if payload_type == PT_PCMA:
        return _numpy_alaw_decode(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


#: the numpy implementation, whichever one the public names below are bound to
NUMPY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ulaw_encode": _numpy_ulaw_encode, "ulaw_decode": _numpy_ulaw_decode, "alaw_encode": _numpy_alaw_encode,
    "alaw_decode": _numpy_alaw_decode, "encode": _numpy_encode, "decode": _numpy_decode}


def _load_extension() -> Any:
    """The C extension with our tables loaded, or None when it was not built (no compiler)."""
    try:
        from skinnysip.rtp import _g711  # type: ignore[attr-defined]
    except ImportError:
        return None
    _g711.load_tables(_ULAW_DEC, _ALAW_DEC,
                      _ULAW_ENC_U16, _ALAW_ENC_U16, _numpy_ulaw_encode, _numpy_alaw_encode)
    return _g711


_ext = _load_extension()
#: which implementation the public functions are: "c" (the extension) or "numpy" (the tables)
IMPLEMENTATION = "numpy" if _ext is None else "c"
_impl: Any = NUMPY_FUNCTIONS if _ext is None else vars(_ext)

ulaw_encode: Callable[[npt.ArrayLike], bytes] = _impl["ulaw_encode"]
ulaw_decode: Callable[[Buffer], npt.NDArray[np.int16]] = _impl["ulaw_decode"]
alaw_encode: Callable[[npt.ArrayLike], bytes] = _impl["alaw_encode"]
alaw_decode: Callable[[Buffer], npt.NDArray[np.int16]] = _impl["alaw_decode"]
encode: Callable[[int, npt.ArrayLike], bytes] = _impl["encode"]
decode: Callable[[int, Buffer], npt.NDArray[np.int16]] = _impl["decode"]
