"""RTCP (RFC 3550 §6): byte-exact compound packets, real captures, NTP time, RTT, the report
interval (§6.3.1 / A.7), reception report blocks (A.3), and fuzzing of the parser."""

from __future__ import annotations

import math
import random
import statistics
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionReporter,
    ReportBlock,
    RTCPParseError,
    SenderReport,
    SourceDescription,
    build_compound,
    middle32,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    rtcp_interval,
)
from skinnysip.rtp.stats import RTPReceiverStats

C = math.e - 1.5  # RFC 3550 §6.3.1 compensation
SR_SDES = SenderReport(
    ssrc=0x01020304, ntp_timestamp=0x0A0B0C0D_0E0F1011, rtp_timestamp=0x00001000, packet_count=3,
    octet_count=480,
    reports=(ReportBlock(ssrc=0xAABBCCDD, fraction_lost=0x40, cumulative_lost=-2, highest_seq=0x00010005,
                         jitter=17, lsr=0x0C0D0E0F, dlsr=0x00018000),),
)
SDES = SourceDescription(((0x01020304, "ab@c"),))

# Hand-assembled from the layouts of RFC 3550 §6.4.1 and §6.5.
SR_SDES_BYTES = bytes.fromhex(
    "81 c8 000c"            # V=2 P=0 RC=1, PT=200, length 12 words (13 words = 52 bytes)
    " 01020304"             # SSRC of sender
    " 0a0b0c0d 0e0f1011"    # NTP timestamp
    " 00001000"             # RTP timestamp
    " 00000003 000001e0"    # packet count, octet count
    " aabbccdd"             # report block: SSRC_1
    " 40 fffffe"            # fraction lost 64/256, cumulative lost -2 (24-bit two's complement)
    " 00010005 00000011"    # extended highest sequence number, jitter
    " 0c0d0e0f 00018000"    # LSR, DLSR (1.5 s)
    " 81 ca 0003"           # V=2 SC=1, PT=202, length 3 words (16 bytes)
    " 01020304"             # chunk SSRC
    " 01 04 61624063"       # CNAME, length 4, "ab@c"
    " 00 00"                # END, then one null octet up to the 32-bit boundary
)

# GStreamer SR + SDES (CNAME, TOOL) from a capture, as stored in membrane_rtp_plugin's
# test/fixtures/rtcp/packets.hex; Wireshark decoded it as below.
GSTREAMER_SR_SDES = bytes.fromhex(
    "80c8000662dbefd0e24d497f597a56de127379780000004200002bcf81ca000c62dbefd0011c7573657232343635"
    "33333039313040686f73742d343437656231366606094753747265616d6572000000")

# A receiver report with cumulative lost -1, from a capture quoted (with Wireshark's decode) in
# a public RTCP test (SHAO Liming's rtsp test/rtcp test).
CAPTURED_RR = bytes.fromhex("81c900074229847360ef152b00ffffff0001bc6f00000041a31f3980 0000adb3")
CAPTURED_BYE = bytes.fromhex("81cb000142298473")


def test_build_sr_sdes_byte_exact():
    assert build_compound([SR_SDES, SDES]) == SR_SDES_BYTES
    assert parse_compound(SR_SDES_BYTES) == [SR_SDES, SDES]


def test_parse_gstreamer_capture():
    sr, sdes = parse_compound(GSTREAMER_SR_SDES)
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sr.ssrc == 0x62DBEFD0
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (309_557_624, 66, 11215)
    assert sr.reports == ()
    # Wireshark: 2020-04-24 11:18:23.349522999 UTC
    assert sr.ntp_timestamp >> 32 == 1587727103 + 2208988800
    assert abs((sr.ntp_timestamp & 0xFFFFFFFF) / 2**32 - 0.349522999) < 1e-9
    assert sdes.chunks == ((0x62DBEFD0, "user2465330910@host-447eb16f"),)  # TOOL item skipped


def test_parse_captured_rr_and_bye():
    rr, bye = parse_compound(CAPTURED_RR + CAPTURED_BYE)
    assert rr == ReceiverReport(0x42298473, (ReportBlock(0x60EF152B, 0, -1, 113775, 65, 2736732544, 44467),))
    assert bye == Bye((0x42298473,), None)
    assert build_compound([rr, bye]) == CAPTURED_RR + CAPTURED_BYE


def test_bye_with_reason_and_rr_round_trip():
    pkts = [ReceiverReport(7), SourceDescription(((7, "x"), (8, "é@host"))), Bye((7, 8), "done")]
    data = build_compound(pkts)
    assert len(data) % 4 == 0
    assert data[-12:] == bytes.fromhex("00000008 04") + b"done" + b"\x00\x00\x00"
    assert parse_compound(data) == pkts
    assert parse_compound(build_compound([Bye((1,), "")])) == [Bye((1,), "")]


def test_unknown_types_skipped_and_padding():
    app = bytes.fromhex("80cc0002 00000001") + b"NAME"  # APP (§6.7)
    xr = bytes.fromhex("80cf0001 00000001")              # XR header (RFC 3611)
    padded_bye = bytes.fromhex("a1cb0002 00000009 00000004")  # P=1, 4 padding octets
    assert parse_compound(build_compound([ReceiverReport(1)]) + app + xr + padded_bye) == [
        ReceiverReport(1), Bye((9,))]


def test_sdes_other_items_and_empty_chunk():
    # chunk 1: NAME "n" then CNAME "c"; chunk 2: only NOTE -> left out.
    body = bytes.fromhex("00000001 02016e 010163 0000 00000002 07016e00")
    data = struct.pack("!BBH", 0x82, 202, len(body) // 4) + body
    assert parse_compound(data) == [SourceDescription(((1, "c"),))]


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (bytes.fromhex("40c90001 00000001"), "version"),
    (bytes.fromhex("80c90002 00000001"), "claims"),
    (bytes.fromhex("80c90001 00000001 0000"), "trailing"),
    (bytes.fromhex("a0c90001 00000001") + bytes.fromhex("80c90001 00000001"), "not the last"),
    (bytes.fromhex("a0c90001 00000000"), "padding count 0"),
    (bytes.fromhex("a0c90001 00000009"), "padding count 9"),
    (bytes.fromhex("81c90001 00000001"), "report blocks"),
    (bytes.fromhex("80c80001 00000001"), "sender info"),
    (bytes.fromhex("80c90000"), "RR shorter"),
    (bytes.fromhex("81ca0001 00000001"), "END"),
    (bytes.fromhex("81ca0002 00000001 010a6162"), "past the packet"),
    (bytes.fromhex("82cb0001 00000001"), "BYE with 2"),
    (bytes.fromhex("81cb0002 00000001 05616200"), "reason"),
])
def test_malformed(data, reason):
    with pytest.raises(RTCPParseError) as info:
        parse_compound(data)
    assert reason in info.value.reason


def test_build_rejects_out_of_range():
    with pytest.raises(ValueError):
        build_compound([ReceiverReport(1, (ReportBlock(1, 256, 0, 0, 0),))])
    with pytest.raises(ValueError):
        build_compound([ReceiverReport(1, (ReportBlock(1, 0, 1 << 23, 0, 0),))])
    with pytest.raises(ValueError):
        build_compound([ReceiverReport(1, tuple(ReportBlock(i, 0, 0, 0, 0) for i in range(32)))])
    with pytest.raises(ValueError):
        build_compound([SourceDescription(((1, "x" * 256),))])
    with pytest.raises(ValueError):
        build_compound([Bye((2**32,))])


def test_ntp_and_middle32():
    assert ntp_timestamp(0.0) == 2208988800 << 32
    assert ntp_timestamp(1.5) == ((2208988800 + 1) << 32) | 0x80000000
    assert middle32(0x0A0B0C0D_0E0F1011) == 0x0C0D0E0F


def test_round_trip_time_rfc_example():
    # RFC 3550 §6.4.1 figure: A = 0xb710:8000 (46864.500 s), DLSR = 0x0005:4000 (5.250 s),
    # LSR = 0xb705:2000 (46853.125 s) -> delay 0x0006:2000 = 6.125 s.
    arrival = (0xB44D_B710 - 2208988800) + 0.5  # NTP 0xb44db710.80000000 (10 Nov 1995)
    assert middle32(ntp_timestamp(arrival)) == 0xB7108000
    assert round_trip_time(arrival, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(arrival, 0, 0x00054000) is None
    assert round_trip_time(arrival, 0xB7108000, 10) == 0.0       # rounding: clamp to 0
    assert round_trip_time(arrival, 0xB7108000, 65536) is None   # 1 s in the future: bogus


def test_rtcp_interval_rules():
    rng = random.Random(3)
    # Small session: the 5 s minimum (2.5 s when initial), randomised in [0.5, 1.5) / (e - 1.5).
    vals = [rtcp_interval(2, 1, 500.0, True, 100.0, False, rng) for _ in range(2000)]
    assert min(vals) >= 5 * 0.5 / C - 1e-6 and max(vals) <= 5 * 1.5 / C + 1e-6
    assert statistics.mean(vals) == pytest.approx(5 / C, rel=0.03)
    first = [rtcp_interval(2, 1, 500.0, True, 100.0, True, rng) for _ in range(2000)]
    assert statistics.mean(first) == pytest.approx(2.5 / C, rel=0.03)
    # Large session: 1000 members, 10 senders, 1000 octets/s, 120-octet reports.
    fixed = random.Random(0)
    receiver = rtcp_interval(1000, 10, 1000.0, False, 120.0, False, fixed)
    r = random.Random(0).random() + 0.5
    assert receiver == pytest.approx(120 * 990 / 750 * r / C)
    sender = rtcp_interval(1000, 10, 1000.0, True, 120.0, False, random.Random(0))
    assert sender == pytest.approx(max(120 * 10 / 250, 5.0) * r / C)
    # Many senders: all members share the whole bandwidth.
    assert rtcp_interval(100, 50, 100.0, True, 100.0, False, random.Random(0)) == pytest.approx(
        100 * 100 / 100 * r / C)
    with pytest.raises(ValueError):
        rtcp_interval(0, 0, 100.0, False, 100.0, False)


def _feed(stats, seqs, ssrc=9):
    for i, seq in enumerate(seqs):
        stats.update(RTPPacket(0, seq, seq * 160, ssrc), i * 0.02)


def test_reception_reporter_fraction_lost_per_interval():
    stats = RTPReceiverStats()
    rep = ReceptionReporter(9)
    _feed(stats, range(0, 100))
    b1 = rep.block(stats, 1000.0)
    assert (b1.ssrc, b1.fraction_lost, b1.cumulative_lost, b1.highest_seq) == (9, 0, 0, 99)
    assert (b1.lsr, b1.dlsr) == (0, 0)
    # next interval: 100 expected (100..199), 25 lost -> 64/256
    _feed(stats, [s for s in range(100, 200) if s % 4 != 0])
    b2 = rep.block(stats, 1005.0)
    assert (b2.fraction_lost, b2.cumulative_lost, b2.highest_seq) == (64, 25, 199)
    # nothing new: fraction 0, cumulative stays
    b3 = rep.block(stats, 1010.0)
    assert (b3.fraction_lost, b3.cumulative_lost) == (0, 25)


def test_reception_reporter_lsr_dlsr_and_round_trip():
    stats = RTPReceiverStats()
    _feed(stats, range(10))
    rep = ReceptionReporter(9)
    sr_time = 1_700_000_000.25
    rep.sender_report_received(SenderReport(9, ntp_timestamp(sr_time), 0, 1, 160), sr_time + 0.04)
    rep.sender_report_received(SenderReport(77, ntp_timestamp(5.0), 0, 1, 160), sr_time + 0.5)  # ignored
    blk = rep.block(stats, sr_time + 0.04 + 1.5)
    assert blk.lsr == middle32(ntp_timestamp(sr_time))
    assert blk.dlsr == 98304  # 1.5 s
    # The sender gets the block back 0.04 s later: RTT = 0.04 + 0.04.
    rtt = round_trip_time(sr_time + 0.04 + 1.5 + 0.04, blk.lsr, blk.dlsr)
    assert rtt == pytest.approx(0.08, abs=1e-4)


def test_reception_reporter_clamps_cumulative_lost():
    class Fake(RTPReceiverStats):
        lost = -(1 << 30)  # type: ignore[assignment]

    blk = ReceptionReporter(1).block(Fake(), 0.0)
    assert blk.cumulative_lost == -0x800000
    assert build_compound([ReceiverReport(2, (blk,))])[12:16] == bytes.fromhex("00800000")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    try:
        parse_compound(data)
    except RTCPParseError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(SR_SDES_BYTES) - 1), st.integers(0, 255), st.integers(0, len(SR_SDES_BYTES)))
def test_fuzz_mutated_vector(index, value, cut):
    data = bytearray(SR_SDES_BYTES + CAPTURED_BYE)
    data[index] = value
    try:
        parse_compound(bytes(data[:cut]))
        parse_compound(bytes(data))
    except RTCPParseError:
        pass
