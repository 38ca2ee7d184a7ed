"""The audio codecs a media stream can use: G.711 (ours), G.722 and Opus (optional bindings).

Each :class:`Codec` describes one RTP audio encoding: its name as ``a=rtpmap`` writes it, its
payload type (static, RFC 3551 §6, or our default dynamic one), its RTP clock rate, its native
audio sample rate, the ``a=rtpmap`` channel count and ``a=fmtp`` we offer, the ITU-T G.113
figures the E-model needs, and encoder/decoder factories working on int16 numpy frames.

=======  =====  =========  ==========  ==============================================
codec    PT     RTP clock  audio rate  binding
=======  =====  =========  ==========  ==============================================
opus     111 d  48000      48000       ``opuslib`` (ctypes on the system's libopus)
G722     9      8000       16000       ``g722`` (import name ``G722``, libg722)
PCMU     0      8000       8000        :mod:`skinnysip.rtp.g711`
PCMA     8      8000       8000        :mod:`skinnysip.rtp.g711`
=======  =====  =========  ==========  ==============================================

RFC 3551 §4.5.2: G.722's RTP clock is 8000 Hz although it samples at 16 kHz (one octet per
clock tick at 64 kbit/s).  RFC 7587 §4.1: Opus's RTP clock is always 48000 Hz and its rtpmap is
always ``opus/48000/2`` (the stream may still be mono: we send mono).

:meth:`Codec.encoder` / :meth:`Codec.decoder` take the PCM ``rate`` the caller works at: the
codec's audio rate by default, or any rate in :attr:`Codec.rates`.  Both bindings convert
internally: libg722's 8000 Hz mode codes/decodes the lower sub-band only (0–4 kHz, bit-compatible
with 16 kHz terminals), libopus accepts and produces 8/12/16/24/48 kHz PCM for any stream.  That
is how a stream whose sources and recordings are 8 kHz speaks these codecs without a resampler.

:func:`available` lists the codecs whose binding imports here, in our order of preference
(wideband first).  A missing binding (or libopus) only leaves its codec out; importing this
module never fails for it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # numpy and the codec bindings load when a coder is made, not at import
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = ["PTIME_RANGE", "Codec", "FrameDecoder", "FrameEncoder", "KNOWN", "OPUS", "G722", "PCMU", "PCMA", "available",
           "by_name", "for_payload_type", "matching", "payload_types"]


class FrameEncoder(Protocol):
    def encode(self, samples: Samples) -> bytes: ...


class FrameDecoder(Protocol):
    def decode(self, payload: bytes) -> Samples: ...


#: the packet durations (s) our media streams send, shortest and longest
PTIME_RANGE = (0.01, 0.06)


@dataclass(frozen=True)
class Codec:
    """One RTP audio encoding.  ``name`` as rtpmap writes it; ``payload_type`` static
    (``static``) or our default dynamic one; ``clock_rate`` RTP timestamp units per second;
    ``audio_rate`` the codec's own sample rate; ``rates`` PCM rates its binding accepts;
    ``channels`` the rtpmap channel count (None = none written); ``fmtp`` what we offer;
    ``ptimes`` frame durations (s) it can code, None = any; ``ie``/``bpl`` equipment impairment
    and packet-loss robustness for the G.107 E-model (see :data:`IMPAIRMENT_NOTE`);
    ``binding`` the module to import (None = always there)."""

    name: str
    payload_type: int
    static: bool
    clock_rate: int
    audio_rate: int
    rates: tuple[int, ...]
    ie: float
    bpl: float
    channels: int | None = None
    fmtp: str | None = None
    ptimes: tuple[float, ...] | None = None
    binding: str | None = None
    _make_encoder: Callable[[Codec, int], FrameEncoder] = field(default=lambda c, r: _G711(c.payload_type),
                                                                repr=False, compare=False)
    _make_decoder: Callable[[Codec, int], FrameDecoder] = field(default=lambda c, r: _G711(c.payload_type),
                                                                repr=False, compare=False)

    def _rate(self, rate: int | None) -> int:
        rate = self.audio_rate if rate is None else rate
        if rate not in self.rates:
            raise ValueError(f"{self.name}: PCM at {rate} Hz is not supported (use {self.rates})")
        return rate

    def encoder(self, rate: int | None = None) -> FrameEncoder:
        """A new (stateful) encoder of int16 frames at ``rate`` Hz (default: the audio rate).
        ``ValueError`` for another rate, ``ImportError`` if the binding is missing."""
        return self._make_encoder(self, self._rate(rate))

    def decoder(self, rate: int | None = None) -> FrameDecoder:
        """A new (stateful) decoder to int16 frames at ``rate`` Hz (default: the audio rate)."""
        return self._make_decoder(self, self._rate(rate))

    def rtpmap(self, payload_type: int | None = None) -> str:
        """The ``a=rtpmap`` value, e.g. ``111 opus/48000/2`` or ``9 G722/8000``."""
        pt = self.payload_type if payload_type is None else payload_type
        tail = f"/{self.channels}" if self.channels else ""
        return f"{pt} {self.name}/{self.clock_rate}{tail}"

    def ticks(self, samples: int, rate: int) -> int:
        """RTP timestamp units of ``samples`` PCM samples at ``rate`` Hz."""
        return samples * self.clock_rate // rate

    def ptime_problem(self, ptime: float) -> str | None:
        """Why our media streams cannot send this codec in packets of ``ptime`` seconds, or None
        when they can: :data:`PTIME_RANGE` (RFC 3551 §4.2: 20 ms by default), a whole number of
        8000 Hz samples (the media clock's), and one of the codec's frame durations."""
        if not PTIME_RANGE[0] - 1e-9 <= ptime <= PTIME_RANGE[1] + 1e-9:
            return f"ptime {ptime!r} s is outside {PTIME_RANGE[0]}..{PTIME_RANGE[1]} s"
        if abs(ptime * 8000 - round(ptime * 8000)) > 1e-6:
            return f"ptime {ptime} s is not a whole number of 8000 Hz samples"
        if self.ptimes is not None and not any(abs(ptime - p) < 1e-9 for p in self.ptimes):
            return f"ptime {ptime} s: {self.name} codes frames of {self.ptimes} s"
        return None

    def matches(self, encoding: str, clock_rate: int, channels: int | None) -> bool:
        """True if an rtpmap ``encoding/clock_rate[/channels]`` names this codec (names are
        case-insensitive, RFC 4855 §3; a missing channel count means 1, RFC 4566 §6)."""
        return (encoding.lower() == self.name.lower() and clock_rate == self.clock_rate
                and (channels or 1) == (self.channels or 1))

    @property
    def is_available(self) -> bool:
        """True if its binding imports here."""
        return self.binding is None or _binding(self.binding) is not None


#: How ``ie``/``bpl`` were chosen.  G.711 (with PLC): G.113 Appendix I.  G.113 gives G.722 and
#: Opus only on the wideband scale (G.107.1, R up to 129), which :mod:`skinnysip.rtp.quality`
#: does not implement; on its narrowband scale we assume G.722 and Opus are no worse than G.711
#: (Ie 0, Bpl of G.711 with PLC): an assumption, not a G.113 figure.
IMPAIRMENT_NOTE = "G.711: G.113 App. I; G.722/Opus: assumed equal to G.711 on the narrowband E-model"


class _G711:
    """G.711 µ-law (PCMU) or A-law (PCMA): ``encode``/``decode`` are :mod:`skinnysip.rtp.g711`'s
    functions themselves (C when its extension is built), so a frame costs no Python call here."""

    def __init__(self, payload_type: int) -> None:
        from skinnysip.rtp import g711

        if payload_type not in (g711.PT_PCMU, g711.PT_PCMA):
            raise ValueError(f"not a G.711 payload type: {payload_type}")
        self.payload_type = payload_type
        ulaw = payload_type == g711.PT_PCMU
        self.encode: Callable[[Samples], bytes] = g711.ulaw_encode if ulaw else g711.alaw_encode
        self.decode: Callable[[bytes], Samples] = g711.ulaw_decode if ulaw else g711.alaw_decode


class _G722:
    """libg722 at 64 kbit/s (the RTP mode, RFC 3551 §4.5.2); ``rate`` 8000 or 16000."""

    def __init__(self, rate: int) -> None:
        module = _binding("G722")
        if module is None:
            raise ImportError("G.722 needs the 'g722' package (pip install 'skinnysip[codecs]')")
        import numpy

        self._np = numpy
        self._codec = module.G722(rate, 64000)

    def encode(self, samples: Samples) -> bytes:
        return bytes(self._codec.encode(self._np.ascontiguousarray(samples, dtype=self._np.int16)))

    def decode(self, payload: bytes) -> Samples:
        return self._np.asarray(self._codec.decode(payload), dtype=self._np.int16)


#: the longest Opus packet (RFC 6716 §3.2.5: 120 ms)
_OPUS_MAX_SECONDS = 0.12


class _OpusEncoder:
    def __init__(self, rate: int) -> None:
        import numpy

        opuslib = _opuslib()
        self._np = numpy
        self._enc = opuslib.Encoder(rate, 1, opuslib.APPLICATION_VOIP)

    def encode(self, samples: Samples) -> bytes:
        frame = self._np.ascontiguousarray(samples, dtype="<i2")
        return bytes(self._enc.encode(frame.tobytes(), len(frame)))


class _OpusDecoder:
    def __init__(self, rate: int) -> None:
        import numpy

        self._np = numpy
        self._dec = _opuslib().Decoder(rate, 1)
        self._max = int(rate * _OPUS_MAX_SECONDS)

    def decode(self, payload: bytes) -> Samples:
        """A packet's samples (mono: a stereo stream is downmixed by libopus).  A corrupt
        packet raises ``ValueError``."""
        try:
            pcm = self._dec.decode(bytes(payload), self._max)
        except Exception as exc:  # opuslib.OpusError: corrupt or empty packet
            raise ValueError(f"opus: {exc}") from None
        return self._np.frombuffer(pcm, dtype="<i2").astype(self._np.int16)


def _opuslib() -> Any:
    module = _binding("opuslib")
    if module is None:
        raise ImportError("Opus needs the 'opuslib' package and libopus (pip install 'skinnysip[codecs]', "
                          "apt-get install libopus0)")
    return module


@functools.cache
def _binding(name: str) -> Any:
    """The imported binding, or None when it (or the C library under it) is missing."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or opuslib's bare Exception when libopus is not found
        return None


PCMU = Codec("PCMU", 0, True, 8000, 8000, (8000,), ie=0.0, bpl=25.1)
PCMA = Codec("PCMA", 8, True, 8000, 8000, (8000,), ie=0.0, bpl=25.1)
G722 = Codec("G722", 9, True, 8000, 16000, (8000, 16000), ie=0.0, bpl=25.1, binding="G722",
             _make_encoder=lambda c, r: _G722(r), _make_decoder=lambda c, r: _G722(r))
OPUS = Codec("opus", 111, False, 48000, 48000, (8000, 12000, 16000, 24000, 48000), ie=0.0, bpl=25.1,
             channels=2, fmtp="useinbandfec=1", ptimes=(0.01, 0.02, 0.04, 0.06), binding="opuslib",
             _make_encoder=lambda c, r: _OpusEncoder(r), _make_decoder=lambda c, r: _OpusDecoder(r))

#: every codec we can describe, in our order of preference (wideband first)
KNOWN: tuple[Codec, ...] = (OPUS, G722, PCMU, PCMA)


def available() -> tuple[Codec, ...]:
    """The codecs whose binding imports here, in our order of preference."""
    return tuple(c for c in KNOWN if c.is_available)


def by_name(name: str) -> Codec | None:
    """The known codec with this encoding name (case-insensitive), or None."""
    return next((c for c in KNOWN if c.name.lower() == name.lower()), None)


def payload_types(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """The payload types of codecs named as rtpmap writes them (any case), in the given order,
    duplicates dropped. ``ValueError`` for an empty list, an unknown name, or a codec whose
    binding is missing here (:attr:`Codec.is_available`)."""
    chosen: list[int] = []
    for name in names:
        codec = by_name(name)
        if codec is None:
            raise ValueError(f"codecs: unknown codec {name[:20]!r} (one of {', '.join(c.name for c in KNOWN)})")
        if not codec.is_available:
            raise ValueError(f"codecs: {codec.name} is not available here (its binding does not import)")
        if codec.payload_type not in chosen:
            chosen.append(codec.payload_type)
    if not chosen:
        raise ValueError("codecs: name at least one codec")
    return tuple(chosen)


def for_payload_type(payload_type: int) -> Codec | None:
    """The codec a payload type means without SDP: a static one (RFC 3551), or the known
    codec whose default dynamic type it is (111: opus); None otherwise."""
    return next((c for c in KNOWN if c.payload_type == payload_type), None)


def matching(encoding: str, clock_rate: int, channels: int | None,
             among: tuple[Codec, ...] | None = None) -> Codec | None:
    """The codec (of ``among``, default :data:`KNOWN`) an rtpmap names, or None."""
    return next((c for c in (KNOWN if among is None else among) if c.matches(encoding, clock_rate, channels)), None)
