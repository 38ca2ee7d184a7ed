"""RTP data packets (RFC 3550 §5.1, header extension §5.3.1, padding §5.1 "P"), sans-IO.

Wire layout (network byte order)::

    V=2 | P | X | CC(4) | M | PT(7) | sequence number (16) | timestamp (32) | SSRC (32)
    CSRC list (CC x 32) | [extension: profile (16), length in 32-bit words (16), data]
    payload | [padding, last octet = padding count]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["RTPParseError", "RTPPacket", "RTP_VERSION", "HEADER_SIZE"]

RTP_VERSION = 2
HEADER_SIZE = 12
#: RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_FIXED_HEADER = struct.Struct("!BBHII")


class RTPParseError(ValueError):
    """Bytes that are not a valid RTP packet (RFC 3550 §5.1).  ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RTPPacket:
    """One RTP packet.

    ``payload_type`` 0..127, ``sequence_number`` 0..65535, ``timestamp`` and ``ssrc`` 0..2**32-1
    (timestamp in clock-rate units, e.g. 8000 Hz samples for G.711), ``csrcs`` up to 15 IDs,
    ``extension`` ``(profile, data)`` with ``len(data)`` a multiple of 4 (RFC 3550 §5.3.1).
    Padding is removed by :meth:`parse` and can be added by :meth:`to_bytes`.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def to_bytes(self, padding: int = 0) -> bytes:
        """Serialise.  ``padding`` (0..255) octets are appended with the P bit set (the last
        octet holds the count).  ``ValueError`` if a field is out of range."""
        pt, seq, ts, ssrc = self.payload_type, self.sequence_number, self.timestamp, self.ssrc
        if (not padding and not self.csrcs and self.extension is None
                and type(pt) is int and type(seq) is int and type(ts) is int and type(ssrc) is int
                and 0 <= pt <= 0x7F and 0 <= seq <= 0xFFFF and 0 <= ts <= 0xFFFFFFFF and 0 <= ssrc <= 0xFFFFFFFF):
            # the usual packet (audio, DTMF): the fixed header and the payload
            return _FIXED_HEADER.pack(RTP_VERSION << 6, (0x80 if self.marker else 0) | pt, seq, ts, ssrc) + self.payload
        _check("payload_type", self.payload_type, 0x7F)
        _check("sequence_number", self.sequence_number, 0xFFFF)
        _check("timestamp", self.timestamp, 0xFFFFFFFF)
        _check("ssrc", self.ssrc, 0xFFFFFFFF)
        if len(self.csrcs) > 15:
            raise ValueError(f"at most 15 CSRCs, got {len(self.csrcs)}")
        for csrc in self.csrcs:
            _check("csrc", csrc, 0xFFFFFFFF)
        if not 0 <= padding <= 0xFF:
            raise ValueError(f"padding {padding} out of range 0..255")
        first = (RTP_VERSION << 6) | (0x20 if padding else 0) | (0x10 if self.extension else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [struct.pack("!BBHII", first, second, self.sequence_number, self.timestamp, self.ssrc)]
        parts += [struct.pack("!I", c) for c in self.csrcs]
        if self.extension is not None:
            profile, data = self.extension
            _check("extension profile", profile, 0xFFFF)
            if len(data) % 4 or len(data) // 4 > 0xFFFF:
                raise ValueError("extension data must be a multiple of 4 bytes, at most 262140")
            parts.append(struct.pack("!HH", profile, len(data) // 4) + bytes(data))
        parts.append(bytes(self.payload))
        if padding:
            parts.append(bytes(padding - 1) + bytes([padding]))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> RTPPacket:
        """Parse one datagram.  Raises :class:`RTPParseError` if it is shorter than its header,
        CSRC list or extension, the version is not 2, or the padding count is 0 or too large."""
        data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise RTPParseError(f"{len(data)} bytes is shorter than the 12-byte RTP header")
        first, second, seq, ts, ssrc = _FIXED_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RTPParseError(f"RTP version {first >> 6}, expected 2")
        end = len(data)
        if first & 0x20:
            pad = data[-1]
            if pad == 0:
                raise RTPParseError("padding bit set but padding count is 0")
            if pad > len(data) - HEADER_SIZE:
                raise RTPParseError(f"padding count {pad} exceeds the packet")
            end -= pad
        pos = HEADER_SIZE
        cc = first & 0x0F
        if pos + 4 * cc > end:
            raise RTPParseError(f"CSRC count {cc} does not fit in {len(data)} bytes")
        csrcs = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        extension = None
        if first & 0x10:
            if pos + 4 > end:
                raise RTPParseError("extension bit set but no room for the extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RTPParseError(f"extension of {words} words does not fit")
            extension = (profile, data[pos:pos + 4 * words])
            pos += 4 * words
        if end < pos:
            raise RTPParseError("padding count exceeds the packet")  # overlaps CSRC/extension
        return cls(second & 0x7F, seq, ts, ssrc, data[pos:end], bool(second & 0x80), tuple(csrcs), extension)


def _check(name: str, value: int, top: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{name} {value!r} out of range 0..{top}")
