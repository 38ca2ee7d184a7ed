"""RTP packets (RFC 3550 §5.1, §5.3.1): byte layout, round trips, and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.net.stun import is_stun
from skinnysip.rtp.packet import RTPPacket, RTPParseError


def test_header_bytes():
    pkt = RTPPacket(payload_type=0, sequence_number=0x1234, timestamp=0x01020304, ssrc=0xDEADBEEF,
                    payload=b"\xff" * 160, marker=True)
    data = pkt.to_bytes()
    assert data[:12] == bytes.fromhex("80 80 1234 01020304 DEADBEEF")
    assert len(data) == 172
    assert RTPPacket.parse(data) == pkt


def test_csrc_and_extension():
    pkt = RTPPacket(8, 65535, 2**32 - 1, 1, b"abc", False, (10, 20, 30), (0xBEDE, b"\x01\x02\x03\x04" * 2))
    data = pkt.to_bytes()
    assert data[0] == 0x80 | 0x10 | 3
    assert data[12:24] == struct.pack("!III", 10, 20, 30)
    assert data[24:28] == struct.pack("!HH", 0xBEDE, 2)
    assert RTPPacket.parse(data) == pkt


def test_padding_is_removed():
    pkt = RTPPacket(0, 1, 2, 3, b"payload")
    data = pkt.to_bytes(padding=5)
    assert data[0] & 0x20 and data[-1] == 5 and len(data) == 12 + 7 + 5
    assert RTPPacket.parse(data) == pkt


@pytest.mark.parametrize(("data", "match"), [
    (b"", "shorter"),
    (b"\x80" * 11, "shorter"),
    (bytes([0x40]) + bytes(11), "version 1"),
    (bytes([0x00]) + bytes(11), "version 0"),
    (bytes([0x82]) + bytes(11) + bytes(4), "CSRC count 2"),
    (bytes([0x90]) + bytes(11), "extension"),
    (bytes([0x90]) + bytes(11) + struct.pack("!HH", 1, 5), "extension of 5 words"),
    (bytes([0xA0]) + bytes(11) + b"\x00", "padding count is 0"),
    (bytes([0xA0]) + bytes(11) + b"\x00\x09", "padding count 9 exceeds"),
])
def test_parse_errors(data, match):
    with pytest.raises(RTPParseError, match=match):
        RTPPacket.parse(data)


@pytest.mark.parametrize("kwargs", [
    {"payload_type": 128}, {"sequence_number": 65536}, {"timestamp": -1}, {"ssrc": 2**32},
    {"csrcs": tuple(range(16))}, {"extension": (1, b"abc")}, {"sequence_number": True}, {"ssrc": 1.0},
    {"payload_type": -1},
])
def test_to_bytes_rejects_out_of_range(kwargs):
    base = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    with pytest.raises(ValueError):
        RTPPacket(**{**base, **kwargs}).to_bytes()


def test_a_payload_in_any_buffer_serialises_to_the_same_bytes():
    for payload in (b"\x01\x02", bytearray(b"\x01\x02"), memoryview(b"\x01\x02")):
        data = RTPPacket(0, 1, 2, 3, payload).to_bytes()
        assert type(data) is bytes and data == bytes.fromhex("8000 0001 00000002 00000003 0102")


packets = st.builds(
    RTPPacket,
    payload_type=st.integers(0, 127), sequence_number=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1), ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200),
    marker=st.booleans(), csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 65535), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
)


@settings(max_examples=300, deadline=None)
@given(packets, st.integers(0, 255))
def test_round_trip_property(pkt, padding):
    assert RTPPacket.parse(pkt.to_bytes(padding)) == pkt


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes_only_raise_parse_error(data):
    try:
        pkt = RTPPacket.parse(data)
    except RTPParseError as exc:
        assert exc.reason
    else:
        assert RTPPacket.parse(pkt.to_bytes()) == pkt


def _stun(message_type: int, attributes: bytes = b"", cookie: bytes = b"\x21\x12\xa4\x42") -> bytes:
    """A STUN message as RFC 8489 §5 lays it out: type, length of the attributes, magic
    cookie, 96-bit transaction ID, attributes."""
    return struct.pack("!HH", message_type, len(attributes)) + cookie + bytes(range(12)) + attributes


# SOFTWARE (0x8022), 8 octets: "skinnysp"; USERNAME (0x0006), 4 octets
STUN_ATTRIBUTES = struct.pack("!HH", 0x8022, 8) + b"skinnysp" + struct.pack("!HH", 0x0006, 4) + b"a:bc"


@pytest.mark.parametrize("data", [
    _stun(0x0001),                                   # Binding request, no attribute
    _stun(0x0001, STUN_ATTRIBUTES),                  # with attributes (ICE checks carry several)
    _stun(0x0101, STUN_ATTRIBUTES),                  # Binding success response
    _stun(0x0011),                                   # Binding indication (RFC 7675-style keep-alive)
    _stun(0x0001, cookie=b"\x00\x01\x02\x03"),       # RFC 3489 classic STUN: no magic cookie
], ids=["request", "request+attributes", "success", "indication", "rfc3489"])
def test_stun_on_the_media_port_is_recognised(data):
    assert is_stun(data)


def test_rtp_rtcp_and_damaged_stun_are_not_stun():
    rtp = RTPPacket(payload_type=0, sequence_number=1, timestamp=160, ssrc=7, payload=b"\xff" * 160).to_bytes()
    rtcp_rr = struct.pack("!BBHI", 0x80, 201, 1, 7)
    assert not is_stun(rtp) and not is_stun(rtcp_rr)
    assert not is_stun(_stun(0x0001)[:19])                 # shorter than the header
    assert not is_stun(_stun(0x0001, STUN_ATTRIBUTES)[:-4])  # length field beyond the datagram
    assert not is_stun(_stun(0x0001) + b"\x00\x00")          # octets beyond the length field
    odd = struct.pack("!HH", 0x0001, 2) + b"\x21\x12\xa4\x42" + bytes(12) + b"ab"
    assert not is_stun(odd)                                  # a length that is no multiple of 4
    assert not is_stun(b"\x14" + _stun(0x0001)[1:])          # first octet 20: DTLS (RFC 7983 §7)
