"""skinnysip.sdp: RFC 4566 parsing/serialization and the RFC 3264 audio offer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sdp import (
    Connection,
    MediaDescription,
    RtpMap,
    SDPParseError,
    SessionDescription,
    audio_offer,
)

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n"
    b"s=Call\r\n"
    b"i=info line\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"b=AS:64\r\n"
    b"t=0 0\r\n"
    b"a=sendonly\r\n"
    b"m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    b"a=rtpmap:97 iLBC/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:30\r\n"
    b"m=video 51372/2 RTP/AVP 31\r\n"
    b"c=IN IP6 2001:db8::2\r\n"
    b"a=recvonly\r\n"
)


def test_parse_fields() -> None:
    sd = SessionDescription.parse(OFFER)
    assert sd.origin.username == "alice" and sd.origin.session_id == 2890844526
    assert sd.session_name == "Call" and sd.connection == Connection("IN", "IP4", "192.0.2.10")
    assert sd.bandwidths == ["AS:64"] and sd.times == [(0, 0)] and sd.other == [("i", "info line")]
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 49170, "RTP/AVP", ["0", "8", "97", "101"])
    assert audio.payload_types == [0, 8, 97, 101]
    assert audio.rtpmaps()[0] == RtpMap(0, "PCMU", 8000)  # static type without rtpmap (RFC 3551)
    assert audio.rtpmaps()[97] == RtpMap(97, "iLBC", 8000)
    assert audio.fmtps() == {101: "0-15"}
    assert audio.ptime == 30.0 and audio.direction is None
    assert sd.direction_of(audio) == "sendonly"
    assert sd.connection_for(audio) == sd.connection
    assert (video.port, video.port_count) == (51372, 2)
    assert sd.connection_for(video) == Connection("IN", "IP6", "2001:db8::2")
    assert sd.direction_of(video) == "recvonly"


def test_round_trip_is_byte_exact_for_canonical_order() -> None:
    assert SessionDescription.parse(OFFER).to_bytes() == OFFER


def test_lf_line_ends_and_trailing_blank_lines() -> None:
    sd = SessionDescription.parse(OFFER.replace(b"\r\n", b"\n") + b"\n\n")
    assert sd == SessionDescription.parse(OFFER)


def test_audio_offer_ipv4_and_ipv6() -> None:
    offer = audio_offer("192.0.2.5", 40000, session_id=7)
    text = offer.to_bytes().decode()
    assert text == (
        "v=0\r\no=skinnysip 7 7 IN IP4 192.0.2.5\r\ns=skinnysip\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    assert SessionDescription.parse(offer.to_bytes()) == offer
    v6 = audio_offer("::1", 4000, payload_types=(8,), direction="recvonly", ptime=40)
    assert v6.origin.addrtype == "IP6" and v6.connection == Connection("IN", "IP6", "::1")
    assert v6.media[0].direction == "recvonly" and v6.media[0].ptime == 40.0
    assert v6.origin.session_id != audio_offer("::1", 4000).origin.session_id  # random by default
    with pytest.raises(ValueError):
        audio_offer("::1", 4000, payload_types=(96,))
    with pytest.raises(ValueError):
        audio_offer("::1", 70000)


def test_build_by_hand() -> None:
    sd = SessionDescription(media=[MediaDescription("audio", 5004, "RTP/AVP", ["0"], attributes=[("sendrecv", None)])])
    assert SessionDescription.parse(sd.to_bytes()) == sd


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "empty"),
        (b"o=a 1 1 IN IP4 h\r\ns=-\r\n", "v="),
        (b"v=1\r\no=a 1 1 IN IP4 h\r\ns=-\r\n", "version"),
        (b"v=0\r\ns=-\r\n", "o="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\n", "s="),
        (b"v=0\r\no=a 1 IN IP4 h\r\ns=-\r\n", "6 fields"),
        (b"v=0\r\no=a x 1 IN IP4 h\r\ns=-\r\n", "sess-id"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nm=audio\r\n", "m="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nm=audio 99999 RTP/AVP 0\r\n", "port"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\n", "c="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0\r\n", "t="),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nno equals\r\n", "type"),
        (b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\na=\r\n", "attribute"),
    ],
)
def test_malformed_sdp_raises(text: bytes, reason: str) -> None:
    with pytest.raises(SDPParseError) as exc:
        SessionDescription.parse(text)
    assert reason in exc.value.reason


@settings(max_examples=600, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"v=0", b"o=a 1 1 IN IP4 h", b"s=-", b"c=IN IP6 ::1", b"t=0 0", b"m=audio 1 RTP/AVP 0",
                              b"a=rtpmap:0 PCMU/8000", b"a=fmtp:x", b"a=rtpmap:99999999999999999999999999 x/1",
                              b"m=video 9/x RTP/AVP", b"\r\n", b"\n", b"=", b"x", b"\xff"]), max_size=20).map(b"\r\n".join),
))
def test_sdp_parse_raises_only_sdp_parse_error(data: bytes) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SDPParseError:
        return
    for m in sd.media:
        m.rtpmaps(), m.fmtps(), m.ptime, sd.direction_of(m)
    again = SessionDescription.parse(sd.to_bytes())
    assert len(again.media) == len(sd.media) and again.origin == sd.origin
    assert SessionDescription.parse(again.to_bytes()) == again
