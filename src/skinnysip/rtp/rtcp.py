"""RTCP (RFC 3550 §6), sans-IO: compound packets, NTP time, report intervals, reception reports.

* :func:`build_compound` / :func:`parse_compound` — SR (§6.4.1), RR (§6.4.2), SDES with CNAME
  (§6.5, §6.5.1) and BYE (§6.6) in one compound datagram (§6.1).  Other packet types (APP §6.7,
  XR RFC 3611, feedback RFC 4585, ...) are skipped when parsing.
* :func:`ntp_timestamp`, :func:`middle32`, :func:`round_trip_time` — the 64-bit NTP format of
  §4 and the round-trip computation of §6.4.1.
* :func:`rtcp_interval` — the transmission interval of §6.3.1 / Appendix A.7.
* :class:`ReceptionReporter` — report blocks from :class:`~skinnysip.rtp.stats.RTPReceiverStats`
  (fraction lost per interval, Appendix A.3; LSR/DLSR, §6.4.1).

Times are passed in as Unix seconds (floats); nothing here reads a clock or opens a socket.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from skinnysip.rtp.stats import RTPReceiverStats

__all__ = [
    "RTCPParseError", "ReportBlock", "SenderReport", "ReceiverReport", "SourceDescription", "Bye",
    "RTCPPacket", "build_compound", "parse_compound", "ntp_timestamp", "middle32", "round_trip_time",
    "rtcp_interval", "ReceptionReporter", "RTCP_SR", "RTCP_RR", "RTCP_SDES", "RTCP_BYE", "RTCP_APP",
    "SDES_CNAME", "NTP_UNIX_OFFSET", "RTCP_MIN_TIME",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
SDES_END = 0
SDES_CNAME = 1

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
#: Minimum RTCP interval in seconds (RFC 3550 §6.2, A.7).
RTCP_MIN_TIME = 5.0
_COMPENSATION = math.e - 1.5  # RFC 3550 §6.3.1 / A.7: e - 3/2 = 1.21828
_U32 = 0xFFFFFFFF
_MAX_REPORTS = 31  # the 5-bit RC / SC count
_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000
_RNG = random.Random()


class RTCPParseError(ValueError):
    """Bytes that are not a valid compound RTCP packet (RFC 3550 §6.1, A.2).  ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1).

    ``ssrc``: the source reported on; ``fraction_lost``: 0..255, lost/expected since the previous
    report as a fixed-point fraction x/256; ``cumulative_lost``: 24-bit signed packet count
    (negative when duplicates arrived); ``highest_seq``: extended highest sequence number (cycles
    in the top 16 bits); ``jitter``: interarrival jitter in RTP timestamp units; ``lsr``: middle
    32 bits of the NTP timestamp of the last SR received from the source (0 if none); ``dlsr``:
    delay since that SR in units of 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0


@dataclass(frozen=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1).  ``ntp_timestamp``: 64-bit NTP time (seconds << 32 | fraction) of
    the report; ``rtp_timestamp``: the same instant in RTP timestamp units; ``packet_count`` and
    ``octet_count``: RTP data packets and payload octets sent since the start (both mod 2**32)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2): the reporter's ``ssrc`` and up to 31 report blocks."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5): ``chunks`` of ``(SSRC, CNAME)``.  When parsing, items other than
    CNAME (NAME, TOOL, ...) are skipped and chunks without a CNAME are left out."""

    chunks: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Bye:
    """BYE (RFC 3550 §6.6): the SSRCs leaving and an optional reason (at most 255 UTF-8 octets)."""

    ssrcs: tuple[int, ...]
    reason: str | None = None


RTCPPacket = SenderReport | ReceiverReport | SourceDescription | Bye


# --------------------------------------------------------------------------- building

def _u32(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
        raise ValueError(f"{name} {value!r} out of range 0..{_U32}")
    return value


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    # RFC 3550 §6.4.1: length = packet size in 32-bit words minus one (header included).
    return struct.pack("!BBH", 0x80 | count, packet_type, (len(body) + 4) // 4 - 1) + body


def _report_blocks(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > _MAX_REPORTS:
        raise ValueError(f"at most {_MAX_REPORTS} report blocks in one SR/RR, got {len(reports)}")
    out = []
    for rb in reports:
        if not 0 <= rb.fraction_lost <= 255:
            raise ValueError(f"fraction_lost {rb.fraction_lost} out of range 0..255")
        if not _LOST_MIN <= rb.cumulative_lost <= _LOST_MAX:
            raise ValueError(f"cumulative_lost {rb.cumulative_lost} does not fit 24 signed bits")
        out.append(struct.pack("!IIIIII", _u32("ssrc", rb.ssrc),
                               (rb.fraction_lost << 24) | (rb.cumulative_lost & 0xFFFFFF),
                               _u32("highest_seq", rb.highest_seq), _u32("jitter", rb.jitter),
                               _u32("lsr", rb.lsr), _u32("dlsr", rb.dlsr)))
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _encode(packet: RTCPPacket) -> bytes:
    if isinstance(packet, SenderReport):
        if not 0 <= packet.ntp_timestamp < 1 << 64:
            raise ValueError(f"ntp_timestamp {packet.ntp_timestamp} is not a 64-bit value")
        body = struct.pack("!IQIII", _u32("ssrc", packet.ssrc), packet.ntp_timestamp,
                           _u32("rtp_timestamp", packet.rtp_timestamp),
                           _u32("packet_count", packet.packet_count),
                           _u32("octet_count", packet.octet_count))
        return _header(len(packet.reports), RTCP_SR, body + _report_blocks(packet.reports))
    if isinstance(packet, ReceiverReport):
        body = struct.pack("!I", _u32("ssrc", packet.ssrc)) + _report_blocks(packet.reports)
        return _header(len(packet.reports), RTCP_RR, body)
    if isinstance(packet, SourceDescription):
        if len(packet.chunks) > _MAX_REPORTS:
            raise ValueError(f"at most {_MAX_REPORTS} SDES chunks in one packet")
        chunks = []
        for ssrc, cname in packet.chunks:
            text = cname.encode("utf-8")
            if len(text) > 255:
                raise ValueError(f"CNAME of {len(text)} octets exceeds 255")
            # Items, then at least one null octet (END) up to the next 32-bit boundary (§6.5).
            chunk = struct.pack("!IBB", _u32("ssrc", ssrc), SDES_CNAME, len(text)) + text + b"\x00"
            chunks.append(_pad4(chunk))
        return _header(len(packet.chunks), RTCP_SDES, b"".join(chunks))
    if isinstance(packet, Bye):
        if len(packet.ssrcs) > _MAX_REPORTS:
            raise ValueError(f"at most {_MAX_REPORTS} SSRCs in one BYE")
        body = b"".join(struct.pack("!I", _u32("ssrc", s)) for s in packet.ssrcs)
        if packet.reason is not None:
            text = packet.reason.encode("utf-8")
            if len(text) > 255:
                raise ValueError(f"BYE reason of {len(text)} octets exceeds 255")
            body += _pad4(bytes([len(text)]) + text)
        return _header(len(packet.ssrcs), RTCP_BYE, body)
    raise TypeError(f"not an RTCP packet: {packet!r}")


def build_compound(packets: Sequence[RTCPPacket]) -> bytes:
    """Serialise RTCP packets into one compound datagram (RFC 3550 §6.1), in the given order.

    RFC 3550 wants an SR or RR first and an SDES with CNAME in every compound packet; this
    function does not insist (RFC 5506 reduced-size RTCP).  No padding is added.  Raises
    ``ValueError`` for a field out of range (32-bit values, ``fraction_lost`` 0..255,
    ``cumulative_lost`` 24-bit signed, more than 31 blocks/chunks/SSRCs, text over 255 octets).
    """
    return b"".join(_encode(p) for p in packets)


# --------------------------------------------------------------------------- parsing

def _parse_blocks(body: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    if pos + 24 * count > len(body):
        raise RTCPParseError(f"{count} report blocks do not fit in the packet")
    blocks = []
    for i in range(count):
        ssrc, word, ext, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", body, pos + 24 * i)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, word >> 24, lost, ext, jitter, lsr, dlsr))
    return tuple(blocks)


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks: list[tuple[int, str]] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RTCPParseError("SDES chunk truncated before its SSRC")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        cname: str | None = None
        while True:
            if pos >= len(body):
                raise RTCPParseError("SDES chunk without END item")
            item = body[pos]
            if item == SDES_END:
                pos += 1
                pos += -pos % 4  # null octets up to the next 32-bit boundary
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RTCPParseError("SDES item runs past the packet")
            text = body[pos + 2:pos + 2 + body[pos + 1]]
            if item == SDES_CNAME and cname is None:
                cname = text.decode("utf-8", errors="replace")
            pos += 2 + len(text)
        if pos > len(body):
            raise RTCPParseError("SDES chunk padding runs past the packet")
        if cname is not None:
            chunks.append((ssrc, cname))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if 4 * count > len(body):
        raise RTCPParseError(f"BYE with {count} SSRCs does not fit in the packet")
    ssrcs = struct.unpack_from(f"!{count}I", body, 0)
    reason = None
    pos = 4 * count
    if pos < len(body):
        size = body[pos]
        if pos + 1 + size > len(body):
            raise RTCPParseError("BYE reason runs past the packet")
        reason = body[pos + 1:pos + 1 + size].decode("utf-8", errors="replace")
    return Bye(tuple(ssrcs), reason)


def parse_compound(data: bytes) -> list[RTCPPacket]:
    """Parse a compound RTCP datagram (RFC 3550 §6.1) into SR, RR, SDES and BYE packets, in order.

    Checks (RFC 3550 A.2): version 2 in every packet; the length fields add up exactly to the
    datagram size; only the last packet may have the padding bit, and its padding count is
    non-zero and fits; each packet's contents fit in its length (report blocks, SDES items and
    chunk END, BYE SSRCs and reason).  Bytes after an SR/RR's report blocks (profile extensions)
    are ignored; packets of other types (APP, XR, feedback, ...) are skipped.  The first packet
    need not be SR/RR (RFC 5506).  Raises :class:`RTCPParseError`, and nothing else, on bad input.
    """
    data = bytes(data)
    if not data:
        raise RTCPParseError("empty datagram")
    out: list[RTCPPacket] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RTCPParseError(f"{len(data) - pos} trailing bytes are shorter than an RTCP header")
        first, packet_type, words = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise RTCPParseError(f"RTCP version {first >> 6} at offset {pos}, expected 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RTCPParseError(f"packet at offset {pos} claims {4 * (words + 1)} bytes, "
                                 f"only {len(data) - pos} left")
        body_end = end
        if first & 0x20:
            if end != len(data):
                raise RTCPParseError("padding bit set on a packet that is not the last")
            pad = data[end - 1]
            if pad == 0 or pad > end - pos - 4:
                raise RTCPParseError(f"padding count {pad} is invalid")
            body_end -= pad
        body = data[pos + 4:body_end]
        count = first & 0x1F
        if packet_type == RTCP_SR:
            if len(body) < 24:
                raise RTCPParseError("SR shorter than its sender info")
            ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body, 0)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count)))
        elif packet_type == RTCP_RR:
            if len(body) < 4:
                raise RTCPParseError("RR shorter than its SSRC")
            (ssrc,) = struct.unpack_from("!I", body, 0)
            out.append(ReceiverReport(ssrc, _parse_blocks(body, 4, count)))
        elif packet_type == RTCP_SDES:
            out.append(_parse_sdes(body, count))
        elif packet_type == RTCP_BYE:
            out.append(_parse_bye(body, count))
        pos = end
    return out


# --------------------------------------------------------------------------- time

def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4: seconds since 1900 in the top 32 bits, binary fraction
    in the low 32 bits) of a Unix time in seconds.  Wraps modulo 2**64 (era 0 ends in 2036)."""
    return round((unix_seconds + NTP_UNIX_OFFSET) * (1 << 32)) % (1 << 64)


def middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 fixed-point seconds), as carried in
    the LSR field of a report block (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & _U32


def round_trip_time(arrival_unix: float, lsr: int, dlsr: int) -> float | None:
    """Round-trip time in seconds from a report block received at ``arrival_unix`` (Unix s)
    carrying ``lsr`` (middle 32 bits of our SR's NTP time) and ``dlsr`` (1/65536 s):
    ``A - LSR - DLSR`` in 16.16 arithmetic modulo 2**32 (RFC 3550 §6.4.1).

    ``None`` when ``lsr`` is 0 (the peer has had no SR from us) or the result is negative by
    more than rounding (about 1 ms: a stale or bogus block); a tiny negative value gives 0.0.
    """
    if lsr == 0:
        return None
    diff = (middle32(ntp_timestamp(arrival_unix)) - lsr - dlsr) & _U32
    if diff >= 1 << 31:
        diff -= 1 << 32
    if diff < 0:
        return 0.0 if diff > -66 else None
    return diff / 65536.0


def rtcp_interval(members: int, senders: int, rtcp_bw: float, we_sent: bool, avg_rtcp_size: float,
                  initial: bool, rng: random.Random | None = None) -> float:
    """Seconds until the next RTCP packet (RFC 3550 §6.3.1, Appendix A.7 ``rtcp_interval``).

    ``members``: session members including us; ``senders``: how many of them sent RTP recently;
    ``rtcp_bw``: RTCP bandwidth for the whole session in octets per second (normally 5 % of the
    session bandwidth); ``we_sent``: we sent RTP since the last report; ``avg_rtcp_size``: average
    compound RTCP size in octets (with UDP/IP headers); ``initial``: no RTCP sent yet.

    When senders are at most 25 % of members, senders share 25 % of ``rtcp_bw`` and receivers
    75 %.  The deterministic interval has a minimum of 5 s (2.5 s when ``initial``); the result
    is that times a uniform random factor in [0.5, 1.5) divided by e - 3/2 (≈ 1.218), the
    compensation for timer reconsideration.  ``ValueError`` if ``members`` < 1, ``senders`` < 0
    or ``rtcp_bw`` / ``avg_rtcp_size`` are not positive.
    """
    if members < 1 or senders < 0 or not rtcp_bw > 0 or not avg_rtcp_size > 0:
        raise ValueError("members >= 1, senders >= 0, rtcp_bw > 0 and avg_rtcp_size > 0 required")
    min_time = RTCP_MIN_TIME / 2 if initial else RTCP_MIN_TIME
    n = members
    if senders <= members * 0.25:
        if we_sent:
            rtcp_bw *= 0.25
            n = max(senders, 1)
        else:
            rtcp_bw *= 0.75
            n = max(members - senders, 1)
    t = max(avg_rtcp_size * n / rtcp_bw, min_time)
    return t * ((rng or _RNG).random() + 0.5) / _COMPENSATION


# --------------------------------------------------------------------------- reception reports

class ReceptionReporter:
    """Report blocks about one remote source (RFC 3550 §6.4.1, Appendix A.3).

    ``ssrc`` is the remote source's SSRC (the one its :class:`RTPReceiverStats` follows).  Call
    :meth:`sender_report_received` with each SR that source sends (for LSR/DLSR) and
    :meth:`block` at each of our report times; the fraction lost covers the interval since the
    previous :meth:`block` call.
    """

    def __init__(self, ssrc: int):
        self.ssrc = ssrc
        self._expected_prior = 0
        self._received_prior = 0
        self._lsr = 0
        self._sr_arrival: float | None = None

    def sender_report_received(self, sr: SenderReport, arrival_unix: float) -> None:
        """Remember an SR of the source (arrival in Unix seconds).  SRs of other SSRCs are ignored."""
        if sr.ssrc != self.ssrc:
            return
        self._lsr = middle32(sr.ntp_timestamp)
        self._sr_arrival = arrival_unix

    def block(self, stats: RTPReceiverStats, now_unix: float) -> ReportBlock:
        """The report block for now (Unix seconds): fraction lost since the previous call (0 when
        nothing was lost or more arrived than expected, A.3), cumulative lost clamped to 24 bits,
        extended highest sequence number, jitter (timestamp units), LSR and DLSR (0 before any SR).
        """
        expected = stats.expected
        received = stats.received
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = received
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = max(_LOST_MIN, min(_LOST_MAX, stats.lost))
        dlsr = 0
        if self._sr_arrival is not None:
            dlsr = min(max(round((now_unix - self._sr_arrival) * 65536), 0), _U32)
        return ReportBlock(self.ssrc, fraction, lost, stats.extended_max_seq & _U32,
                           int(stats.jitter) & _U32, self._lsr, dlsr)
