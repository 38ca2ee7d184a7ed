"""DTMF three ways, sans-IO: RFC 4733 telephone-events, in-band tones, SIP INFO dtmf-relay.

* RFC 4733 §2.3 payload (:func:`encode_event`, :func:`decode_event`), the sender's packet plan
  for one key press (:func:`dtmf_packets`, §2.5.1) and a receiver that reports each press once
  (:class:`DTMFReceiver`, §2.5.2).
* In-band detection of ITU-T Q.23 dual tones with the Goertzel algorithm
  (:func:`goertzel_power`, :class:`InBandDTMFDetector`; acceptance in the spirit of Q.24).
* SIP INFO with ``application/dtmf-relay`` bodies (the de-facto Cisco format):
  :func:`dtmf_relay_body`, :func:`parse_dtmf_relay`.

Times are seconds (floats) passed in by the caller; durations inside RTP payloads are in RTP
timestamp units; the SIP INFO body speaks milliseconds, as it does on the wire.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.stats import RTPSender

__all__ = [
    "EVENTS", "TelephoneEvent", "encode_event", "decode_event", "DTMFPacketPlan", "dtmf_packets",
    "dtmf_rtp_packet", "DTMFEvent", "DTMFReceiver", "goertzel_power", "InBandDTMFDetector",
    "dtmf_relay_body", "parse_dtmf_relay", "ROW_FREQUENCIES", "COLUMN_FREQUENCIES", "MAX_DURATION",
    "END_REPEATS", "DEFAULT_RELAY_DURATION_MS",
]

#: RFC 4733 §3.2 event codes 0..15, in order: digits, ``*`` (10), ``#`` (11), ``A``..``D`` (12..15).
EVENTS = "0123456789*#ABCD"
#: Longest key press :func:`dtmf_packets` plans, in seconds (one RTP timestamp, no §2.5.1.3 segments).
MAX_DURATION = 8.0
#: How often the final (E bit) packet is sent (RFC 4733 §2.5.1.4 recommends three).
END_REPEATS = 3
#: ITU-T Q.23 low-group (row) and high-group (column) frequencies in Hz.
ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
#: Duration assumed by :func:`parse_dtmf_relay` when a body has no ``Duration`` line, in ms.
DEFAULT_RELAY_DURATION_MS = 250
_MAX_RELAY_BODY = 1024


def _event_code(digit: str) -> int:
    if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in EVENTS:
        raise ValueError(f"not a DTMF key: {digit!r} (expected one of {EVENTS})")
    return EVENTS.index(digit.upper())


# --------------------------------------------------------------------------- RFC 4733 payload

@dataclass(frozen=True)
class TelephoneEvent:
    """One decoded RFC 4733 §2.3 payload: ``event`` code 0..255, ``digit`` (``EVENTS[event]``
    for 0..15, else ``None``), ``end`` (E bit), ``volume`` 0..63 (-dBm0), ``duration`` in RTP
    timestamp units since the event's timestamp."""

    event: int
    digit: str | None
    end: bool
    volume: int
    duration: int


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """The 4-byte RFC 4733 §2.3 payload: event (8 bits), E, R=0, volume (6 bits, 0..63 meaning
    0..-63 dBm0), duration (16 bits, timestamp units).  ``ValueError`` if out of range."""
    for name, value, top in (("event", event, 255), ("volume", volume, 63), ("duration", duration, 0xFFFF)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{name} {value!r} out of range 0..{top}")
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def decode_event(payload: bytes) -> TelephoneEvent:
    """Decode an RFC 4733 §2.3 payload.  ``ValueError`` if shorter than 4 bytes; octets after the
    first event block are ignored; the reserved bit is ignored as the RFC says."""
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload of {len(payload)} bytes, need 4")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    digit = EVENTS[event] if event < len(EVENTS) else None
    return TelephoneEvent(event, digit, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True)
class DTMFPacketPlan:
    """One telephone-event packet to send: ``offset`` seconds after the key press starts,
    ``payload`` (4 bytes, RFC 4733 §2.3) and the RTP ``marker`` bit."""

    offset: float
    payload: bytes
    marker: bool


def dtmf_packets(digit: str, duration: float = 0.1, ptime: float = 0.02, volume: int = 10,
                 clock_rate: int = 8000) -> list[DTMFPacketPlan]:
    """The RFC 4733 §2.5.1 packets for one key press of ``duration`` seconds.

    The first packet has the marker bit; then one update every ``ptime`` seconds whose
    duration field grows by ``ptime`` (the duration covered so far); the last update is the end
    packet (E bit, full duration), sent :data:`END_REPEATS` times ``ptime`` apart with the same
    duration (§2.5.1.4).  All packets must carry the *same* RTP timestamp, the one the audio
    stream would have at the start of the press, and consecutive sequence numbers of the audio
    stream's SSRC (see :func:`dtmf_rtp_packet`).  ``duration`` is capped at :data:`MAX_DURATION`
    and at 65535 timestamp units (no §2.5.1.3 segments).  ``ValueError`` for a bad key, a
    non-positive ``duration``/``ptime``/``clock_rate`` or ``volume`` outside 0..63.
    """
    event = _event_code(digit)
    if not duration > 0 or not ptime > 0 or clock_rate <= 0:
        raise ValueError("duration, ptime and clock_rate must be positive")
    total = max(1, min(round(min(duration, MAX_DURATION) * clock_rate), 0xFFFF))
    step = max(1, round(ptime * clock_rate))
    plans: list[DTMFPacketPlan] = []
    k = 0
    while (k + 1) * step < total:
        plans.append(DTMFPacketPlan(k * ptime, encode_event(event, False, volume, (k + 1) * step), k == 0))
        k += 1
    end = encode_event(event, True, volume, total)
    for i in range(END_REPEATS):
        plans.append(DTMFPacketPlan((k + i) * ptime, end, k == 0 and i == 0))
    return plans


def dtmf_rtp_packet(sender: RTPSender, payload_type: int, plan: DTMFPacketPlan, timestamp: int) -> RTPPacket:
    """Wrap one planned payload for ``sender``'s stream: its SSRC and next sequence number,
    ``payload_type`` (the negotiated telephone-event PT, e.g. 101), the press's fixed
    ``timestamp``.  Advances the sender's sequence number and packet/octet counts, not its
    timestamp: after the press, the caller moves the audio timestamp on (``sender.skip``) by the
    time the press took."""
    pkt = RTPPacket(payload_type, sender.sequence_number, timestamp, sender.ssrc, plan.payload, plan.marker)
    sender.sequence_number = (sender.sequence_number + 1) % 65536
    sender.packets_sent += 1
    sender.octets_sent += len(plan.payload)
    return pkt


@dataclass(frozen=True)
class DTMFEvent:
    """A key press received: ``digit`` (one of :data:`EVENTS`), ``duration`` in seconds (the
    longest duration seen in its packets) and the RTP ``timestamp`` that identifies it."""

    digit: str
    duration: float
    timestamp: int


@dataclass
class _Pending:
    timestamp: int
    digit: str
    duration: int
    last_arrival: float


class DTMFReceiver:
    """Turns telephone-event RTP packets into one :class:`DTMFEvent` per key press (RFC 4733 §2.5.2).

    A press is identified by (SSRC, RTP timestamp).  It is reported when its first end packet
    arrives; repeated end packets and duplicates are absorbed.  A press whose end packets are all
    lost is reported when a packet of a newer press arrives from the same SSRC, or by
    :meth:`flush` once ``timeout`` seconds passed without its packets.  Packets of an older press
    than the current one, undecodable payloads (``malformed`` counts them) and events other than
    0..15 are ignored.  Memory is bounded: ``history`` identifiers are kept for de-duplication and
    state for at most ``history`` SSRCs (a press of the oldest is reported when a new one comes).
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 1.0, history: int = 64):
        if clock_rate <= 0 or timeout <= 0 or history < 1:
            raise ValueError("clock_rate, timeout and history must be positive")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.history = history
        self.malformed = 0
        self._pending: dict[int, _Pending] = {}
        self._done: deque[tuple[int, int]] = deque(maxlen=history)
        self._done_set: set[tuple[int, int]] = set()
        self._last_ts: dict[int, int] = {}

    def _report(self, ssrc: int, p: _Pending) -> DTMFEvent:
        key = (ssrc, p.timestamp)
        if len(self._done) == self._done.maxlen:
            self._done_set.discard(self._done[0])
        self._done.append(key)
        self._done_set.add(key)
        return DTMFEvent(p.digit, p.duration / self.clock_rate, p.timestamp)

    def feed(self, packet: RTPPacket, arrival: float) -> list[DTMFEvent]:
        """Account one telephone-event packet that arrived at ``arrival`` seconds; returns the
        presses completed by it (usually none or one; two when it starts a new press while the
        previous one never ended)."""
        try:
            ev = decode_event(packet.payload)
        except ValueError:
            self.malformed += 1
            return []
        if ev.digit is None:
            return []
        ssrc, ts = packet.ssrc, packet.timestamp
        if (ssrc, ts) in self._done_set:
            return []
        last = self._last_ts.get(ssrc)
        if last is not None and ts != last and (ts - last) % (1 << 32) >= 1 << 31:
            return []  # a packet of an older press, arriving late
        out: list[DTMFEvent] = []
        if last is None and len(self._last_ts) >= self.history:
            oldest = next(iter(self._last_ts))  # bound the per-SSRC state
            del self._last_ts[oldest]
            if oldest in self._pending:
                out.append(self._report(oldest, self._pending.pop(oldest)))
        self._last_ts[ssrc] = ts
        pending = self._pending.get(ssrc)
        if pending is not None and pending.timestamp != ts:
            out.append(self._report(ssrc, self._pending.pop(ssrc)))  # its end packets were lost
            pending = None
        if pending is None:
            pending = self._pending[ssrc] = _Pending(ts, ev.digit, ev.duration, arrival)
        else:
            pending.duration = max(pending.duration, ev.duration)
            pending.last_arrival = max(pending.last_arrival, arrival)
        if ev.end:
            out.append(self._report(ssrc, self._pending.pop(ssrc)))
        return out

    def flush(self, now: float, force: bool = False) -> list[DTMFEvent]:
        """Report presses that had no packet for ``timeout`` seconds before ``now`` (all pending
        presses if ``force``, e.g. when the call ends)."""
        out = []
        for ssrc, p in list(self._pending.items()):
            if force or now - p.last_arrival >= self.timeout:
                out.append(self._report(ssrc, self._pending.pop(ssrc)))
        return out


# --------------------------------------------------------------------------- in-band tones

def goertzel_power(samples: npt.ArrayLike, rate: int, freq: float) -> float:
    """Power of the ``freq`` Hz component of ``samples`` (linear PCM at ``rate`` Hz), as the
    Goertzel algorithm measures it: ``2·|X(freq)|² / N²`` where X is the DFT evaluated at
    exactly ``freq`` (not rounded to a bin).  The scale matches the mean square of the samples:
    a sine of amplitude A filling the block gives ≈ A²/2.  0.0 for an empty block.
    (Computed as one vectorised DFT term, which equals the Goertzel recurrence's result.)
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    n = x.size
    if n == 0:
        return 0.0
    w = 2.0 * np.pi * freq / rate
    idx = np.arange(n, dtype=np.float64)
    re = float(np.dot(x, np.cos(w * idx)))
    im = float(np.dot(x, np.sin(w * idx)))
    return 2.0 * (re * re + im * im) / (n * n)


class InBandDTMFDetector:
    """Detects DTMF key presses in audio (ITU-T Q.23 tones), each press reported once.

    Audio is cut into blocks of ``block`` seconds (160 samples at 8000 Hz by default).  A block
    holds a key when, with the strongest row and the strongest column frequency:

    * the block's level is above -45 dBFS (mean square of int16 samples);
    * each of the two tones is at least 6 dB above the other frequencies of its group;
    * the twist (column vs row power) is within +4 dB (reverse) and -8 dB (normal twist);
    * the two tones carry at least 60 % of the block's energy (speech, music, noise and single
      tones fail this).

    A key is reported after ``ceil(min_duration / block)`` consecutive blocks agree, and again
    only after a block without it.  A tone shorter than ``min_duration + block`` may be missed
    when it straddles block boundaries (partial blocks fail the energy test).
    """

    #: Minimum share of the block energy in the two tones.
    ENERGY_RATIO = 0.6
    #: Twist limits in dB: column minus row power.
    REVERSE_TWIST_DB = 4.0
    NORMAL_TWIST_DB = 8.0
    #: Minimum margin of each tone over the rest of its group, dB.
    GROUP_MARGIN_DB = 6.0
    #: Minimum block level, mean square of int16 samples (-45 dBFS).
    MIN_LEVEL = (32768.0 * 10 ** (-45 / 20)) ** 2

    def __init__(self, rate: int = 8000, block: float = 0.02, min_duration: float = 0.04):
        if rate <= 0 or not block > 0 or min_duration < 0:
            raise ValueError("rate and block must be positive, min_duration >= 0")
        self.rate = rate
        self.block_size = max(1, round(block * rate))
        self.needed = max(1, math.ceil(min_duration / block - 1e-9))
        self._buf = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._count = 0
        self._reported: str | None = None
        n = np.arange(self.block_size, dtype=np.float64)
        freqs = np.array(ROW_FREQUENCIES + COLUMN_FREQUENCIES)
        phase = 2.0 * np.pi * np.outer(freqs, n) / rate
        self._basis = np.concatenate([np.cos(phase), np.sin(phase)])  # (16, block_size)

    def _classify(self, x: npt.NDArray[np.float64]) -> str | None:
        n = x.size
        energy = float(np.dot(x, x)) / n
        if energy < self.MIN_LEVEL:
            return None
        # goertzel_power of all 8 frequencies in one product; the tests on 8 numbers are
        # cheaper in Python floats than as numpy calls on tiny arrays
        proj = (self._basis @ x).tolist()
        nn = n * n
        powers = [2.0 * (proj[i] * proj[i] + proj[i + 8] * proj[i + 8]) / nn for i in range(8)]
        rows, cols = powers[:4], powers[4:]
        pr, pc = max(rows), max(cols)
        if pr <= 0 or pc <= 0 or pr + pc < self.ENERGY_RATIO * energy:
            return None
        margin = 10 ** (self.GROUP_MARGIN_DB / 10)
        if sorted(rows)[-2] * margin > pr or sorted(cols)[-2] * margin > pc:
            return None
        twist = 10 * math.log10(pc / pr)
        if twist > self.REVERSE_TWIST_DB or twist < -self.NORMAL_TWIST_DB:
            return None
        return _KEYPAD[rows.index(pr)][cols.index(pc)]

    def feed(self, samples: npt.ArrayLike) -> list[str]:
        """Add int16 samples (any length); returns the keys whose presses were recognised."""
        x = np.asarray(samples).reshape(-1).astype(np.float64)
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        out: list[str] = []
        full = buf.size // self.block_size * self.block_size
        for start in range(0, full, self.block_size):
            key = self._classify(buf[start:start + self.block_size])
            if key is None or key != self._candidate:
                self._candidate, self._count = key, 0
                if key != self._reported:
                    self._reported = None
            if key is None:
                continue
            self._count += 1
            if self._count >= self.needed and self._reported != key:
                self._reported = key
                out.append(key)
        self._buf = buf[full:].copy()
        return out


# --------------------------------------------------------------------------- SIP INFO

def dtmf_relay_body(digit: str, duration_ms: int) -> bytes:
    """The ``application/dtmf-relay`` body of a SIP INFO: ``Signal=<key>\\r\\nDuration=<ms>\\r\\n``.
    Keys a-d are sent upper case.  ``ValueError`` for a bad key or a duration outside 1..65535 ms."""
    code = _event_code(digit)
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or not 0 < duration_ms <= 0xFFFF:
        raise ValueError(f"duration_ms {duration_ms!r} out of range 1..65535")
    return f"Signal={EVENTS[code]}\r\nDuration={duration_ms}\r\n".encode("ascii")


def parse_dtmf_relay(body: bytes) -> tuple[str, int]:
    """Parse an ``application/dtmf-relay`` body into ``(key, duration_ms)``.

    Lines are ``name=value`` (CRLF or LF), names case-insensitive, spaces around both allowed,
    unknown names ignored.  ``Signal`` is a key (``0-9 * # A-D``, a-d accepted) or the event
    number 10..15 some gateways send for ``* # A B C D`` (RFC 4733 codes); ``Duration`` (ms)
    defaults to :data:`DEFAULT_RELAY_DURATION_MS` when absent.  ``ValueError`` for a body over
    1 KiB, not UTF-8, a line without ``=``, no or a bad ``Signal``, or a bad ``Duration``.
    """
    if len(body) > _MAX_RELAY_BODY:
        raise ValueError(f"dtmf-relay body of {len(body)} bytes is too long")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("dtmf-relay body is not UTF-8") from None
    signal: str | None = None
    duration = DEFAULT_RELAY_DURATION_MS
    for line in text.splitlines():
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"dtmf-relay line without '=': {line[:40]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "signal":
            if value.isascii() and value.isdigit() and 10 <= int(value) <= 15:
                value = EVENTS[int(value)]
            signal = EVENTS[_event_code(value)]
        elif name == "duration":
            if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= 0xFFFF:
                raise ValueError(f"bad dtmf-relay Duration {value[:20]!r}")
            duration = int(value)
    if signal is None:
        raise ValueError("dtmf-relay body has no Signal")
    return signal, duration
