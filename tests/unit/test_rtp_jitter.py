"""Adaptive jitter buffer: in-order playout, reordering, duplicates, late and lost packets,
delay adaptation to jitter, resets (SSRC, timestamp jumps), silence suppression, caller stalls,
bounded memory.  All with fake time and fixed seeds."""

from __future__ import annotations

import random

import pytest

from skinnysip.rtp.jitter import JitterBuffer
from skinnysip.rtp.packet import RTPPacket

PT = 0.02


def pkt(i, ssrc=1, ts0=5000, seq0=100, marker=False, ts=None):
    return RTPPacket(0, (seq0 + i) % 65536, ts0 + 160 * i if ts is None else ts, ssrc, i.to_bytes(4, "big"),
                     marker)


def num(payload):
    return None if payload is None else int.from_bytes(payload, "big")


def simulate(jb, arrivals, duration, phase=0.007, start=0.0):
    """Feed (arrival, packet) events in time order and call get every ptime; returns played ids."""
    events = sorted(arrivals, key=lambda x: x[0])
    out = []
    t = start + phase
    k = 0
    while t < start + duration:
        while k < len(events) and events[k][0] <= t:
            jb.put(events[k][1], events[k][0])
            k += 1
        out.append(num(jb.get(t)))
        t += PT
    return out


def test_nothing_before_first_packet():
    jb = JitterBuffer()
    assert jb.get(0.0) is None and jb.get(1.0) is None
    assert (jb.played, jb.concealed) == (0, 0)


def test_perfect_stream_plays_in_order_with_min_delay():
    jb = JitterBuffer()
    out = simulate(jb, [(i * PT, pkt(i)) for i in range(100)], 2.2)
    played = [x for x in out if x is not None]
    assert played == list(range(100))
    assert (jb.late, jb.duplicates, jb.reordered, jb.overflow, jb.skipped) == (0, 0, 0, 0, 0)
    assert jb.delay == pytest.approx(0.02)
    first = out.index(0)
    assert out[first:first + 100] == list(range(100))  # no gap once started
    assert first * PT + 0.007 <= 0.02 + 0.01 + 1e-9  # starts within min_delay (+ half a frame)


def test_reordering_and_duplicates():
    jb = JitterBuffer(min_delay=0.06)
    arrivals = []
    for i in range(50):
        j = i + 1 if i % 2 == 0 else i - 1  # swap pairs: 1 0 3 2 ...
        arrivals.append((i * PT + 0.001, pkt(j)))
    arrivals.append((0.5, pkt(20)))  # a duplicate of an early packet, after it was played
    arrivals.append((0.63, pkt(30)))  # a duplicate while still buffered (first copy at 0.621)
    out = simulate(jb, arrivals, 1.5)
    assert [x for x in out if x is not None] == list(range(50))
    assert jb.reordered == 25 and jb.duplicates == 2 and jb.late == 0


def test_same_slot_other_sequence_number_is_duplicate():
    jb = JitterBuffer()
    jb.put(pkt(0), 0.0)
    jb.put(RTPPacket(0, 999, 5000, 1, b"x"), 0.001)
    assert jb.duplicates == 1 and jb.buffered == 1


def test_late_packet_dropped_and_delay_grows():
    jb = JitterBuffer()
    arrivals = [(i * PT, pkt(i)) for i in range(60) if i != 10]
    arrivals.append((10 * PT + 0.15, pkt(10)))  # 150 ms late
    out = simulate(jb, arrivals, 1.5)
    assert 10 not in out
    assert jb.late == 1
    assert jb.delay >= 0.15  # a packet this late would now fit
    played = [x for x in out if x is not None]
    assert played == [i for i in range(60) if i != 10]
    assert jb.skipped == 0  # the delay only grew: frames were held, not dropped


def test_loss_is_concealed():
    jb = JitterBuffer()
    out = simulate(jb, [(i * PT, pkt(i)) for i in range(40) if i not in (5, 6, 20)], 0.9)
    start = out.index(0)
    assert out[start:start + 40] == [None if i in (5, 6, 20) else i for i in range(40)]
    assert jb.concealed >= 3 and jb.late == 0


def test_adapts_to_jitter_then_decays():
    rng = random.Random(5)
    jb = JitterBuffer(max_delay=0.3)
    arrivals = [(i * PT + rng.uniform(0, 0.08), pkt(i)) for i in range(500)]  # 10 s, 0..80 ms
    arrivals += [(i * PT + 0.0, pkt(i)) for i in range(500, 1500)]             # then 20 s clean
    t_out = []
    events = sorted(arrivals, key=lambda x: x[0])
    k, t = 0, 0.007
    delays = {}
    while t < 30.5:
        while k < len(events) and events[k][0] <= t:
            jb.put(events[k][1], events[k][0])
            k += 1
        t_out.append(num(jb.get(t)))
        if abs(t - 9.007) < PT / 2:
            delays["jittery"] = jb.delay
        t += PT
    assert 0.05 <= delays["jittery"] <= 0.3
    assert jb.late <= 15  # < 3 % of the jittery packets, while the delay learns
    played = [x for x in t_out if x is not None]
    assert played == sorted(played) and len(set(played)) == len(played)
    assert len(played) + jb.late + jb.skipped == 1500
    assert jb.delay == pytest.approx(0.02)  # back to the minimum after the jitter stopped
    assert jb.jitter < 0.001


def test_ssrc_change_resets():
    jb = JitterBuffer()
    a = [(i * PT, pkt(i)) for i in range(10)]
    b = [(0.2 + i * PT, pkt(100 + i, ssrc=2, ts0=777, seq0=40000 - 100)) for i in range(10)]
    out = simulate(jb, a + b, 0.6)
    played = [x for x in out if x is not None]
    assert played[:9] == list(range(9)) and played[-10:] == list(range(100, 110))
    assert jb.resets == 1


def test_timestamp_jump_with_marker_resets():
    jb = JitterBuffer()
    a = [(i * PT, pkt(i)) for i in range(10)]
    b = [(0.2 + i * PT, pkt(50 + i, ts=9_000_000 + 160 * i, marker=i == 0)) for i in range(10)]
    out = simulate(jb, a + b, 0.6)
    assert [x for x in out if x is not None][-10:] == list(range(50, 60))
    assert jb.resets == 1 and jb.late == 0


def test_timestamp_jump_without_marker_resets_after_three():
    jb = JitterBuffer()
    a = [(i * PT, pkt(i)) for i in range(10)]
    b = [(0.2 + i * PT, pkt(50 + i, ts=9_000_000 + 160 * i)) for i in range(10)]
    out = simulate(jb, a + b, 0.6)
    assert [x for x in out if x is not None][-8:] == list(range(52, 60))
    assert jb.resets == 1 and jb.late + jb.overflow == 2


def test_silence_suppression_and_timestamp_wrap():
    jb = JitterBuffer()
    talk1 = [(i * PT, pkt(i, ts0=2**32 - 800)) for i in range(10)]
    # 2 s of silence: timestamps jump by 16000 (no packets), new talkspurt with the marker bit
    talk2 = [(2.2 + i * PT, pkt(10 + i, ts=(2**32 - 800 + 160 * (110 + i)) % 2**32, marker=i == 0))
             for i in range(10)]
    out = simulate(jb, talk1 + talk2, 2.7)
    assert [x for x in out if x is not None] == list(range(20))
    assert jb.resets == 0 and jb.late == 0 and jb.skipped == 0


def test_caller_stall_jumps_to_schedule():
    jb = JitterBuffer()
    arrivals = sorted(((i * PT, pkt(i)) for i in range(200)), key=lambda x: x[0])
    out = []
    k = 0
    for t in [0.027 + PT * n for n in range(20)] + [2.0 + 0.027 + PT * n for n in range(60)]:
        while k < len(arrivals) and arrivals[k][0] <= t:
            jb.put(arrivals[k][1], arrivals[k][0])
            k += 1
        out.append(num(jb.get(t)))
    assert out[:20] == list(range(20))
    assert out[20] is not None and out[20] >= 95  # the newest packets were kept  # skipped the stale second
    assert out[21:25] == [out[20] + 1, out[20] + 2, out[20] + 3, out[20] + 4]


def test_memory_bounded_without_playout():
    jb = JitterBuffer()
    for i in range(5000):
        jb.put(pkt(i), 0.0 + i * 0.0001)  # a burst, nobody calls get
    assert jb.buffered <= jb.capacity
    assert jb.overflow == 5000 - jb.capacity
    assert len(jb._seen) <= 4 * jb.capacity and len(jb._window) <= jb._window_len
    # once playing, a packet 10 s ahead of its time is not taken as audio
    jb2 = JitterBuffer()
    jb2.put(pkt(0), 0.0)
    assert jb2.get(0.02) == (0).to_bytes(4, "big")
    jb2.put(pkt(500), 0.03)
    assert jb2.overflow == 1 and jb2.buffered == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        JitterBuffer(min_delay=0.3, max_delay=0.2)
    with pytest.raises(ValueError):
        JitterBuffer(ptime=0)
