"""RTP sender state and receiver statistics (sans-IO; times are passed in, never read).

* :class:`RTPSender` numbers packets: SSRC, sequence number and timestamp with wrap-around, the
  marker bit on the first packet of a talkspurt (RFC 3550 §5.1, RFC 3551 §4.1).
* :class:`RTPReceiverStats` follows RFC 3550 Appendix A.1 (sequence-number validation, cycles,
  expected/lost) and A.8 (interarrival jitter), plus duplicate and reorder counts.
"""

from __future__ import annotations

import random
from collections import deque

from skinnysip.rtp.packet import RTPPacket

__all__ = ["RTPSender", "RTPReceiverStats", "RTP_SEQ_MOD", "MAX_DROPOUT", "MAX_MISORDER", "MIN_SEQUENTIAL"]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_TS_MOD = 1 << 32
_DUP_WINDOW = 512


class RTPSender:
    """Builds successive :class:`RTPPacket` s of one stream.

    ``ssrc``, ``sequence_number`` and ``timestamp`` start random unless given (RFC 3550 §5.1);
    every :meth:`packet` advances the sequence number by 1 (mod 2**16) and the timestamp by
    ``samples_per_packet`` (mod 2**32; 160 = 20 ms at ``clock_rate`` 8000 Hz).
    """

    def __init__(self, payload_type: int, *, ssrc: int | None = None, clock_rate: int = 8000,
                 samples_per_packet: int = 160, sequence_number: int | None = None,
                 timestamp: int | None = None, rng: random.Random | None = None):
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type {payload_type} out of range 0..127")
        if clock_rate <= 0 or samples_per_packet <= 0:
            raise ValueError("clock_rate and samples_per_packet must be positive")
        rand = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.samples_per_packet = samples_per_packet
        self.ssrc = rand.getrandbits(32) if ssrc is None else ssrc
        self.sequence_number = rand.getrandbits(16) if sequence_number is None else sequence_number % RTP_SEQ_MOD
        self.timestamp = rand.getrandbits(32) if timestamp is None else timestamp % _TS_MOD
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as RTCP SR counts them

    def packet(self, payload: bytes, marker: bool | None = None, samples: int | None = None) -> RTPPacket:
        """The next packet carrying ``payload``.  ``marker`` defaults to True on the first packet
        only; ``samples`` overrides how far the *next* timestamp advances."""
        if marker is None:
            marker = self.packets_sent == 0
        pkt = RTPPacket(self.payload_type, self.sequence_number, self.timestamp, self.ssrc, bytes(payload),
                        marker)
        self.sequence_number = (self.sequence_number + 1) % RTP_SEQ_MOD
        self.timestamp = (self.timestamp + (self.samples_per_packet if samples is None else samples)) % _TS_MOD
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pkt

    def skip(self, samples: int) -> None:
        """Advance the timestamp without sending (silence suppression, RFC 3551 §4.1)."""
        self.timestamp = (self.timestamp + samples) % _TS_MOD


class RTPReceiverStats:
    """Receive statistics of one RTP source (the first SSRC seen; other SSRCs are only counted
    in ``foreign_packets``).

    Call :meth:`update` with each packet and its arrival time in seconds (any monotonic origin).
    Attributes: ``packets`` (all packets of the source, even in probation), ``received``
    (RFC 3550 A.1 count of valid packets), ``expected``, ``lost`` (expected - received; may be
    negative with duplicates), ``duplicates``, ``reordered``, ``max_seq``, ``cycles``,
    ``extended_max_seq``, ``jitter`` (timestamp units) and ``jitter_seconds``.
    """

    def __init__(self, clock_rate: int = 8000, *, min_sequential: int = MIN_SEQUENTIAL):
        if clock_rate <= 0 or min_sequential < 1:
            raise ValueError("clock_rate must be positive and min_sequential >= 1")
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.ssrc: int | None = None
        self.packets = 0
        self.foreign_packets = 0
        self.duplicates = 0
        self.reordered = 0
        self.jitter = 0.0
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.probation = 0
        self._transit: float | None = None
        self._unwrapped_ts = 0.0
        self._last_ts = 0
        self._recent: deque[int] = deque(maxlen=_DUP_WINDOW)
        self._recent_set: set[int] = set()

    # --- RFC 3550 A.1
    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._recent.clear()
        self._recent_set.clear()

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) % RTP_SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % RTP_SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._remember(seq)
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        if self._extend(seq) in self._recent_set:
            self.duplicates += 1  # A.1 counts duplicates as received; so do we
            self.received += 1
            return True
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)  # the source restarted its sequence
            else:
                self.bad_seq = (seq + 1) % RTP_SEQ_MOD
                return False
        else:
            self.reordered += 1  # late, within MAX_MISORDER behind the maximum
        self.received += 1
        self._remember(seq)
        return True

    def _extend(self, seq: int) -> int:
        """Extended sequence number of ``seq`` relative to the current maximum."""
        diff = (seq - self.max_seq) % RTP_SEQ_MOD
        if diff >= RTP_SEQ_MOD // 2:
            diff -= RTP_SEQ_MOD
        return self.cycles + self.max_seq + diff

    def _remember(self, seq: int) -> None:
        ext = self._extend(seq)
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(ext)
        self._recent_set.add(ext)

    # --- public
    def update(self, packet: RTPPacket, arrival_s: float) -> bool:
        """Account one packet that arrived at ``arrival_s`` seconds.  Returns True if it counted
        as a valid packet of the source (RFC 3550 A.1 ``update_seq``)."""
        if self.ssrc is None:
            self.ssrc = packet.ssrc
            self._init_seq(packet.sequence_number)
            self.max_seq = (packet.sequence_number - 1) % RTP_SEQ_MOD
            self.probation = self.min_sequential
        elif packet.ssrc != self.ssrc:
            self.foreign_packets += 1
            return False
        self.packets += 1
        valid = self._update_seq(packet.sequence_number)
        if valid:
            self._update_jitter(packet.timestamp, arrival_s)
        return valid

    def _update_jitter(self, timestamp: int, arrival_s: float) -> None:
        # RFC 3550 A.8: transit = arrival (timestamp units) - RTP timestamp; J += (|D| - J) / 16.
        # The RTP timestamp is unwrapped against the previous one so a 2**32 wrap is no jump.
        arrival = arrival_s * self.clock_rate
        if self._transit is None:
            self._unwrapped_ts = float(timestamp)
            self._last_ts = timestamp
        else:
            step = (timestamp - self._last_ts) % _TS_MOD
            if step >= _TS_MOD // 2:
                step -= _TS_MOD
            self._unwrapped_ts += step
            self._last_ts = timestamp
        transit = arrival - self._unwrapped_ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended with the wrap count (RFC 3550 A.3)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first valid one (RFC 3550 A.3); 0 before any."""
        if self.received == 0:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost = expected - received (RFC 3550 A.3; negative if duplicated)."""
        return self.expected - self.received

    @property
    def jitter_seconds(self) -> float:
        """Interarrival jitter in seconds."""
        return self.jitter / self.clock_rate
