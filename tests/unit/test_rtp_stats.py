"""RTP sender numbering and receiver statistics (RFC 3550 A.1 sequence tracking, A.8 jitter)."""

from __future__ import annotations

import random

import pytest

from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.stats import RTPReceiverStats, RTPSender


def test_sender_numbers_and_wraps():
    s = RTPSender(0, ssrc=7, sequence_number=65534, timestamp=2**32 - 160)
    pkts = [s.packet(b"x" * 160) for _ in range(4)]
    assert [p.sequence_number for p in pkts] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in pkts] == [2**32 - 160, 0, 160, 320]
    assert [p.marker for p in pkts] == [True, False, False, False]
    assert {p.ssrc for p in pkts} == {7} and {p.payload_type for p in pkts} == {0}
    assert (s.packets_sent, s.octets_sent) == (4, 640)
    assert s.packet(b"", marker=True).marker
    s.skip(800)
    assert s.packet(b"").timestamp == 480 + 160 + 800


def test_sender_random_start():
    a, b = RTPSender(8, rng=random.Random(1)), RTPSender(8, rng=random.Random(2))
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)
    with pytest.raises(ValueError):
        RTPSender(128)


def feed(stats, seqs, start_ts=1000, ssrc=5, spacing=0.02, jitter=None):
    for i, seq in enumerate(seqs):
        arrival = i * spacing + (jitter[i] if jitter else 0.0)
        stats.update(RTPPacket(0, seq % 65536, (start_ts + (seq - seqs[0]) * 160) % 2**32, ssrc), arrival)


def test_in_order_stream():
    st = RTPReceiverStats()
    feed(st, list(range(100, 150)))
    assert (st.received, st.expected, st.lost, st.duplicates, st.reordered) == (49, 49, 0, 0, 0)
    assert st.packets == 50  # the first packet is in probation (MIN_SEQUENTIAL = 2)
    assert st.max_seq == 149 and st.cycles == 0
    assert st.jitter == pytest.approx(0.0, abs=1e-9)


def test_count_from_first_packet():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, [10, 11, 12])
    assert (st.received, st.expected, st.lost) == (3, 3, 0)


def test_loss_duplicates_reordering():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, [1, 2, 3, 5, 4, 6, 6, 9, 10])
    assert st.reordered == 1 and st.duplicates == 1
    assert st.expected == 10  # 1..10
    assert st.received == 9 and st.lost == 1  # 7 and 8 missing, one duplicate counted


def test_sequence_wrap_counts_cycles():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, list(range(65530, 65536 + 10)))
    assert st.cycles == 65536 and st.max_seq == 9
    assert st.extended_max_seq == 65536 + 9
    assert (st.received, st.expected, st.lost) == (16, 16, 0)


def test_big_jump_resyncs_after_two_packets():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, [1, 2, 3, 20000, 20001, 20002])
    assert st.base_seq == 20001 and st.received == 2


def test_other_ssrc_is_counted_apart():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, [1, 2])
    assert not st.update(RTPPacket(0, 3, 0, ssrc=99), 1.0)
    assert st.foreign_packets == 1 and st.received == 2


def test_jitter_rfc3550_a8():
    st = RTPReceiverStats(min_sequential=1)
    # constant 2 ms extra delay on odd packets: |D| = 16 timestamp units for every pair
    delays = [0.002 if i % 2 else 0.0 for i in range(400)]
    feed(st, list(range(400)), jitter=delays)
    assert st.jitter == pytest.approx(16.0, rel=1e-3)
    assert st.jitter_seconds == pytest.approx(0.002, rel=1e-3)


def test_jitter_across_timestamp_wrap():
    st = RTPReceiverStats(min_sequential=1)
    feed(st, list(range(50)), start_ts=2**32 - 160 * 10)
    assert st.jitter == pytest.approx(0.0, abs=1e-6)
