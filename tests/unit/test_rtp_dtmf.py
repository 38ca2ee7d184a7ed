"""DTMF: RFC 4733 payloads and packet plans, the de-duplicating receiver, in-band Goertzel
detection (Q.23 tones vs noise, single tones, speech-like signals), SIP INFO dtmf-relay bodies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.rtp import tones
from skinnysip.rtp.dtmf import (
    EVENTS,
    DTMFEvent,
    DTMFReceiver,
    InBandDTMFDetector,
    TelephoneEvent,
    decode_event,
    dtmf_packets,
    dtmf_relay_body,
    dtmf_rtp_packet,
    encode_event,
    goertzel_power,
    parse_dtmf_relay,
)
from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.stats import RTPSender

# --------------------------------------------------------------------------- RFC 4733 payload


def test_encode_event_bytes():
    # RFC 4733 §2.3: event 11 ('#'), E=1, volume 10, duration 800 (100 ms at 8 kHz)
    assert encode_event(11, True, 10, 800) == bytes.fromhex("0b 8a 0320")
    assert encode_event(5, False, 63, 0) == bytes.fromhex("05 3f 0000")
    assert decode_event(bytes.fromhex("0b 8a 0320")) == TelephoneEvent(11, "#", True, 10, 800)
    assert decode_event(bytes.fromhex("10 40 00a0 ffff")).digit is None  # flash; R bit, extra ignored
    assert decode_event(bytes.fromhex("10 40 00a0")).volume == 0


@pytest.mark.parametrize("args", [(256, False, 0, 0), (1, False, 64, 0), (1, False, 0, 65536),
                                  (-1, False, 0, 0), (True, False, 0, 0)])
def test_encode_event_range(args):
    with pytest.raises(ValueError):
        encode_event(*args)


def test_decode_short():
    with pytest.raises(ValueError):
        decode_event(b"\x01\x02\x03")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12))
def test_decode_fuzz(data):
    try:
        ev = decode_event(data)
    except ValueError:
        assert len(data) < 4
        return
    assert 0 <= ev.volume <= 63 and 0 <= ev.duration <= 0xFFFF
    assert encode_event(ev.event, ev.end, ev.volume, ev.duration) == bytes([data[0], data[1] & 0xBF]) + data[2:4]


def test_dtmf_packets_plan():
    plans = dtmf_packets("5", duration=0.1)
    events = [decode_event(p.payload) for p in plans]
    assert [p.offset for p in plans] == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12])
    assert [p.marker for p in plans] == [True] + [False] * 6
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {(e.event, e.volume) for e in events} == {(5, 10)}
    assert plans[-1].payload == plans[-2].payload == plans[-3].payload


def test_dtmf_packets_short_long_and_errors():
    short = dtmf_packets("a", duration=0.01)
    assert [p.marker for p in short] == [True, False, False]
    assert {decode_event(p.payload).duration for p in short} == {80}
    assert decode_event(short[0].payload).digit == "A"
    long = dtmf_packets("#", duration=30.0)
    assert decode_event(long[-1].payload).duration == 64000  # capped at 8 s
    wide = dtmf_packets("1", duration=8.0, clock_rate=16000)
    assert decode_event(wide[-1].payload).duration == 0xFFFF
    for bad in [dict(digit="x"), dict(digit="12"), dict(digit="1", duration=0), dict(digit="1", volume=64)]:
        with pytest.raises(ValueError):
            dtmf_packets(**bad)  # type: ignore[arg-type]


def test_dtmf_rtp_packet_keeps_timestamp():
    sender = RTPSender(0, ssrc=42, sequence_number=65535, timestamp=1000)
    pkts = [dtmf_rtp_packet(sender, 101, p, sender.timestamp) for p in dtmf_packets("9", 0.06)]
    assert [p.sequence_number for p in pkts] == [65535, 0, 1, 2, 3]
    assert {(p.timestamp, p.ssrc, p.payload_type) for p in pkts} == {(1000, 42, 101)}
    assert pkts[0].marker and sender.timestamp == 1000 and sender.packets_sent == 5


# --------------------------------------------------------------------------- receiver


def _stream(digit, ts, start, ssrc=1, duration=0.1, seq=0):
    return [(RTPPacket(101, (seq + i) % 65536, ts, ssrc, p.payload, p.marker), start + p.offset)
            for i, p in enumerate(dtmf_packets(digit, duration))]


def _run(rx, items):
    out = []
    for pkt, t in items:
        out += rx.feed(pkt, t)
    return out


def test_receiver_one_event_per_press():
    rx = DTMFReceiver()
    items = _stream("1", 1000, 0.0) + _stream("2", 3000, 0.5, seq=10)
    items.insert(3, items[2])  # a duplicate update
    assert _run(rx, items) == [DTMFEvent("1", 0.1, 1000), DTMFEvent("2", 0.1, 3000)]
    assert _run(rx, items) == []  # everything again: nothing new
    assert rx.flush(10.0) == []


def test_receiver_lost_end_packets():
    rx = DTMFReceiver()
    first = [x for x in _stream("7", 1000, 0.0) if not decode_event(x[0].payload).end]
    assert _run(rx, first) == []
    # the next press reports the unfinished one (duration so far: 640 units)
    out = _run(rx, _stream("8", 5000, 1.0, seq=10))
    assert out == [DTMFEvent("7", 0.08, 1000), DTMFEvent("8", 0.1, 5000)]
    # lost end packets and silence: flush after 1 s
    _run(rx, [x for x in _stream("9", 9000, 2.0, seq=20) if not decode_event(x[0].payload).end])
    assert rx.flush(2.5) == []
    assert rx.flush(3.1) == [DTMFEvent("9", 0.08, 9000)]
    assert rx.flush(9.0) == []


def test_receiver_reordering_late_old_press_and_ssrcs():
    rx = DTMFReceiver()
    a = _stream("1", 1000, 0.0)
    b = _stream("2", 2000, 0.0, ssrc=2)
    # interleaved SSRCs, reordered end packet first
    assert _run(rx, [a[6], b[0], a[0], b[6], b[1]]) == [DTMFEvent("1", 0.1, 1000), DTMFEvent("2", 0.1, 2000)]
    assert _run(rx, _stream("3", 4000, 1.0, seq=20)[:2]) == []
    late_old = _stream("4", 3000, 0.9, seq=15)[0]  # older timestamp than the current press
    assert _run(rx, [late_old]) == []
    assert rx.flush(0.0, force=True) == [DTMFEvent("3", 0.04, 4000)]
    assert rx.feed(RTPPacket(101, 99, 5, 1, b"\x01"), 0.0) == [] and rx.malformed == 1
    assert rx.feed(RTPPacket(101, 99, 5, 1, encode_event(16, True, 0, 80)), 0.0) == []  # flash ignored


def test_receiver_bounds_ssrc_state():
    rx = DTMFReceiver(history=4)
    out = []
    for ssrc in range(10):
        out += rx.feed(RTPPacket(101, 0, 100, ssrc, encode_event(1, False, 10, 160)), 0.0)
    assert len(rx._pending) <= 4 and len(out) == 6


# --------------------------------------------------------------------------- in-band


def test_goertzel_power_scale():
    x = tones.sine(1000, 0.02, amplitude=0.5)
    assert goertzel_power(x, 8000, 1000) == pytest.approx((0.5 * 32767) ** 2 / 2, rel=0.01)
    assert goertzel_power(x, 8000, 1633) < 1e-3 * goertzel_power(x, 8000, 1000)
    assert goertzel_power(np.zeros(0, dtype=np.int16), 8000, 1000) == 0.0


@pytest.mark.parametrize("key", list(EVENTS))
def test_inband_each_key(key):
    det = InBandDTMFDetector()
    signal = np.concatenate([tones.silence(0.013), tones.dtmf(key, 0.1, amplitude=0.3), tones.silence(0.1)])
    assert det.feed(signal) == [key]


def test_inband_sequence_in_odd_chunks_with_noise():
    rng = np.random.default_rng(7)
    parts = []
    for key in "1234567890*#":
        parts += [tones.dtmf(key, 0.07, amplitude=0.4), tones.silence(0.05)]
    parts.append(tones.dtmf("5", 0.1, amplitude=0.4))  # the same key twice with a pause
    signal = np.concatenate(parts).astype(np.float64)
    signal += rng.normal(0, 300, signal.size)  # about -35 dB below the tones
    pcm = np.clip(signal, -32768, 32767).astype(np.int16)
    det = InBandDTMFDetector()
    out: list[str] = []
    pos = 0
    for size in rng.integers(1, 400, 1000):
        out += det.feed(pcm[pos:pos + size])
        pos += size
    assert "".join(out) == "1234567890*#5"


def test_inband_rejects_noise_single_tone_and_non_dtmf_pairs():
    rng = np.random.default_rng(11)
    det = InBandDTMFDetector()
    noise = np.clip(rng.normal(0, 6000, 8000 * 5), -32768, 32767).astype(np.int16)
    assert det.feed(noise) == []
    assert det.feed(tones.sine(440, 2.0)) == []
    assert det.feed(tones.sine(697, 1.0)) == []          # one DTMF row tone alone
    assert det.feed(tones.dual_tone(350, 440, 1.0)) == []  # dial tone (North America)
    assert det.feed(tones.dual_tone(440, 480, 1.0)) == []  # ringback
    # "speech-like": harmonics of a 150 Hz voice
    n = np.arange(8000 * 2) / 8000
    voiced = sum(np.sin(2 * np.pi * 150 * k * n) / k for k in range(1, 20))
    assert det.feed((voiced / np.max(np.abs(voiced)) * 12000).astype(np.int16)) == []
    # too much twist: the column tone 12 dB below the row tone
    low, high = tones.sine(770, 0.2, amplitude=0.4), tones.sine(1336, 0.2, amplitude=0.1)
    assert det.feed(low + high) == []
    # too quiet
    assert det.feed(tones.dtmf("5", 0.2, amplitude=0.003)) == []


def test_inband_min_duration():
    det = InBandDTMFDetector()
    assert det.feed(np.concatenate([tones.dtmf("3", 0.02), tones.silence(0.1)])) == []
    assert det.feed(np.concatenate([tones.dtmf("3", 0.04), tones.silence(0.1)])) == ["3"]  # block-aligned
    with pytest.raises(ValueError):
        InBandDTMFDetector(block=0)


# --------------------------------------------------------------------------- SIP INFO


def test_dtmf_relay_body():
    assert dtmf_relay_body("5", 160) == b"Signal=5\r\nDuration=160\r\n"
    assert dtmf_relay_body("d", 100) == b"Signal=D\r\nDuration=100\r\n"
    for digit, ms in [("x", 100), ("5", 0), ("5", 70000), ("", 100)]:
        with pytest.raises(ValueError):
            dtmf_relay_body(digit, ms)


@pytest.mark.parametrize("body, expected", [
    (b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
    (b"signal= 1\nduration = 250", ("1", 250)),
    (b"Signal=*\r\nDuration=100\r\n", ("*", 100)),
    (b"SIGNAL=b\r\n", ("B", 250)),
    (b"Signal=11\r\nDuration=100\r\n", ("#", 100)),
    (b"Signal=#\r\nDuration=100\r\nX-Other=1\r\n\r\n", ("#", 100)),
])
def test_parse_dtmf_relay(body, expected):
    assert parse_dtmf_relay(body) == expected


@pytest.mark.parametrize("body", [b"", b"Duration=100", b"Signal=\r\n", b"Signal=X", b"Signal=16",
                                  b"Signal=5\r\nDuration=abc", b"Signal=5\r\nDuration=-5", b"hello",
                                  b"Signal=5\r\nDuration=\xd9\xa1", b"\xff\xfe", b"Signal=5\n" * 200])
def test_parse_dtmf_relay_garbage(body):
    with pytest.raises(ValueError):
        parse_dtmf_relay(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_dtmf_relay_fuzz(body):
    try:
        key, ms = parse_dtmf_relay(body)
    except ValueError:
        return
    assert key in EVENTS and 0 < ms <= 0xFFFF
