"""RFC 3264 offer/answer for one audio stream: codec intersection in the offerer's order,
telephone-event, direction reversal and hold (§6.1, §8.4), rejection with port 0 (§6),
rtcp-mux echo (RFC 5761), and reading the answer to our offer (§7)."""

from __future__ import annotations

import pytest

from skinnysip import sdp
from skinnysip.rtp import codecs
from skinnysip.sdp import (
    SessionDescription,
    audio_answer,
    audio_offer_for,
    combine_directions,
    negotiate,
    reverse_direction,
)

BARESIP_OFFER = (
    "v=0\r\no=- 1234 5678 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 96 9 8 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "m=video 40002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
)
#: these tests are about G.711 only; the default codec list puts opus/G.722 first where they install
G711 = (0, 8)


def test_answer_picks_first_common_codec_in_offer_order_and_refuses_video() -> None:
    offer = SessionDescription.parse(BARESIP_OFFER)
    answer, session = audio_answer(offer, "127.0.0.1", 5000, session_id=7, version=3, codecs=G711)
    audio = answer.media[0]
    assert audio.port == 5000 and audio.formats == ["8", "101"]  # PCMA came before PCMU
    assert audio.attribute("rtcp-mux") == ""  # echoed (RFC 5761)
    assert [m.port for m in answer.media[1:]] == [0] and answer.media[1].media == "video"  # refused
    assert answer.origin.session_id == 7 and answer.origin.session_version == 3
    assert session.payload_type == 8 and session.telephone_event == 101 and session.rtcp_mux
    assert session.remote == ("192.0.2.10", 40000) and session.direction == "sendrecv"
    assert session.ptime == pytest.approx(0.02)
    again = SessionDescription.parse(answer.to_bytes())  # what we send parses
    assert again.media[0].rtpmaps()[101].encoding == "telephone-event"


def test_hold_offer_is_answered_recvonly_and_inactive_stays_inactive() -> None:
    """RFC 3264 §8.4 / RFC 6337: sendonly offer (hold) → recvonly answer; inactive →
    inactive; a c=0.0.0.0 (RFC 2543 hold) has no remote address to send to."""
    held = SessionDescription.parse(BARESIP_OFFER.replace("a=sendrecv", "a=sendonly"))
    answer, session = audio_answer(held, "127.0.0.1", 5000)
    assert answer.media[0].direction == "recvonly" and session.direction == "recvonly"
    off = SessionDescription.parse(BARESIP_OFFER.replace("a=sendrecv", "a=inactive"))
    assert audio_answer(off, "127.0.0.1", 5000)[1].direction == "inactive"
    old = SessionDescription.parse(BARESIP_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"))
    answer, session = audio_answer(old, "127.0.0.1", 5000)
    # "neither RTP nor RTCP should be sent to the peer": we only receive, whatever a= says;
    # the answer still says what we are willing to do (sendrecv, as RFC 2543 peers expect)
    assert session.remote is None and session.direction == "recvonly"
    assert answer.media[0].direction == "sendrecv"
    v6 = SessionDescription.parse(BARESIP_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP6 ::"))
    assert audio_answer(v6, "::1", 5000)[1].direction == "recvonly"
    both = SessionDescription.parse(BARESIP_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")
                                    .replace("a=sendrecv", "a=sendonly"))
    assert audio_answer(both, "127.0.0.1", 5000)[1].direction == "recvonly"
    assert audio_answer(old, "127.0.0.1", 5000, direction="sendonly")[1].direction == "inactive"
    # our own hold while they offer sendrecv: we answer sendonly
    assert audio_answer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 5000,
                        direction="sendonly")[1].direction == "sendonly"


def test_no_common_codec_refuses_the_stream_with_port_zero() -> None:
    only_opus = BARESIP_OFFER.replace("m=audio 40000 RTP/AVP 96 9 8 0 101", "m=audio 40000 RTP/AVP 96")
    answer, session = audio_answer(SessionDescription.parse(only_opus), "127.0.0.1", 5000, codecs=G711)
    assert answer.media[0].port == 0 and session.rejected
    with pytest.raises(ValueError):
        audio_answer(SessionDescription.parse(BARESIP_OFFER.split("m=audio")[0]), "127.0.0.1", 5000)


def test_our_offer_and_their_answer() -> None:
    offer = audio_offer_for("127.0.0.1", 4000, direction="sendonly", version=2, telephone_event=96, codecs=G711)
    media = offer.media[0]
    assert media.formats == ["0", "8", "96"] and media.direction == "sendonly"
    assert media.rtpmaps()[96].encoding == "telephone-event" and media.fmtps()[96] == "0-16"
    assert offer.origin.session_version == 2
    answer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\na=recvonly\r\n")
    session = negotiate(offer, answer)
    assert session.payload_type == 8 and session.telephone_event == 96
    assert session.direction == "sendonly" and session.remote == ("10.0.0.2", 7000)
    with pytest.raises(ValueError):
        negotiate(offer, SessionDescription.parse(answer.to_bytes().replace(b"RTP/AVP 8 96", b"RTP/AVP 18")))
    # an answer at c=0.0.0.0 (RFC 2543's hold, RFC 3264 §8.4): we send nothing
    ours = audio_offer_for("127.0.0.1", 4000, codecs=G711)
    held = negotiate(ours, SessionDescription.parse(answer.to_bytes().replace(b"IN IP4 10.0.0.2\r\nt=", b"IN IP4 0.0.0.0\r\nt=")
                                                    .replace(b"a=recvonly", b"a=sendrecv")))
    assert held.remote is None and held.direction == "recvonly"


@pytest.mark.parametrize(("ours", "theirs", "result"), [
    ("sendrecv", "sendrecv", "sendrecv"), ("sendrecv", "sendonly", "sendonly"), ("sendonly", "recvonly", "inactive"),
    ("recvonly", "sendrecv", "recvonly"), ("inactive", "sendrecv", "inactive"),
])
def test_direction_rules(ours: str, theirs: str, result: str) -> None:
    assert combine_directions(ours, theirs) == result
    assert reverse_direction("sendonly") == "recvonly" and reverse_direction("recvonly") == "sendonly"


@pytest.mark.parametrize(("remote", "expected"), [
    (None, 0.02), (30.0, 0.03), (10.0, 0.01), (60.0, 0.06),      # what we can send is taken
    (0.0, 0.02), (-5.0, 0.02), (100000.0, 0.02), (61.0, 0.02),   # a wish we cannot follow is ignored
    (20.0625, 0.02),                                             # not a whole number of 8 kHz samples
])
def test_agreed_ptime_takes_the_far_ends_wish_only_when_we_can_send_it(remote, expected):
    assert sdp.agreed_ptime(remote, 20, codecs.PCMU) == pytest.approx(expected)


def test_agreed_ptime_follows_the_codecs_frame_sizes():
    opus = codecs.by_name("opus")
    assert opus is not None
    assert sdp.agreed_ptime(40, 20, opus) == pytest.approx(0.04)
    assert sdp.agreed_ptime(30, 20, opus) == pytest.approx(0.02)  # opus has no 30 ms frame


@pytest.mark.parametrize(("remote", "local", "expected", "refused"), [
    (("192.0.2.1", 4000), "127.0.0.1", ("192.0.2.1", 4000), False),
    (("::ffff:192.0.2.1", 4000), "127.0.0.1", ("192.0.2.1", 4000), False),  # RFC 4291 §2.5.5.2
    (("2001:db8::1", 4000), "127.0.0.1", None, True),
    (("192.0.2.1", 4000), "::1", None, True),
    (("2001:db8::1", 4000), "::1", ("2001:db8::1", 4000), False),
    (("media.example.com", 4000), "127.0.0.1", ("media.example.com", 4000), False),  # names: the policy's
    (None, "127.0.0.1", None, False),
])
def test_same_family_remote(remote, local, expected, refused):
    got, why = sdp.same_family_remote(remote, local)
    assert got == expected and (why is not None) == refused
    if refused:
        assert "incompatible network address formats" in why


def test_an_offer_of_the_other_family_is_refused_and_odd_ptime_ignored():
    v6 = sdp.SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=ptime:30\r\n")
    answer, session = sdp.audio_answer(v6, "127.0.0.1", 5000)
    assert session.rejected and "IPv6" in (session.refusal or "") and answer.media[0].port == 0
    odd = sdp.SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=ptime:0\r\n")
    _, session = sdp.audio_answer(odd, "127.0.0.1", 5000)
    assert not session.rejected and session.ptime == pytest.approx(0.02) and session.remote == ("192.0.2.1", 4000)


@pytest.mark.parametrize(("c_line", "local", "expected"), [
    ("IN IP6 ::1", "127.0.0.1", "::1"),  # an IPv6 offer over IPv4 signalling: answered from IPv6
    ("IN IP4 127.0.0.1", "::1", "127.0.0.1"),  # and the reverse
    ("IN IP4 127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ("IN IP6 ::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1"),  # IPv4-mapped: stays IPv4
    ("IN IP4 0.0.0.0", "::1", "::1"),  # on hold (RFC 2543): nothing to route to
    ("IN IP4 media.example.com", "::1", "::1"),  # a name: the policy's, not resolved here
])
def test_a_dual_stack_phone_answers_in_the_offers_family(c_line: str, local: str, expected: str) -> None:
    from skinnysip.phone.sip_phone import media_ip_for

    offer = sdp.SessionDescription.parse(f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc={c_line}\r\nt=0 0\r\n"
                                         "m=audio 4000 RTP/AVP 0\r\n".encode())
    assert media_ip_for(offer, local) == expected


@pytest.mark.parametrize(("line", "expected"), [
    (None, None),
    ("a=rtcp:53020", ("192.0.2.10", 53020)),  # RFC 3605 §2.1: the RTP address, another port
    ("a=rtcp:53020 IN IP4 198.51.100.7", ("198.51.100.7", 53020)),
    ("a=rtcp:53020 IN IP6 2001:db8::7", None),  # another family than the RTP address
    ("a=rtcp:53020 IN IP4 rtcp.example.net", None),  # a name: RTCP stays at the RTP port + 1
    ("a=rtcp:0", None),
    ("a=rtcp:x", None),
    ("a=rtcp:53020 IN IP4", None),
])
def test_the_far_ends_rtcp_attribute(line: str | None, expected: tuple[str, int] | None) -> None:
    audio_only = BARESIP_OFFER.split("m=video")[0].replace("a=rtcp-mux\r\n", "")
    offer_text = audio_only + (line + "\r\n" if line else "")
    answer, session = audio_answer(SessionDescription.parse(offer_text.encode()), "192.0.2.1", 30000)
    assert session.remote == ("192.0.2.10", 40000) and session.remote_rtcp == expected
    ours = audio_offer_for("192.0.2.1", 30000)
    answer_text = (answer.to_bytes().decode().replace("192.0.2.1", "192.0.2.10").replace("m=audio 30000", "m=audio 40000")
                   + (line + "\r\n" if line else ""))
    assert negotiate(ours, SessionDescription.parse(answer_text.encode())).remote_rtcp == expected
    mux = SessionDescription.parse((offer_text + "a=rtcp-mux\r\n").encode())
    assert audio_answer(mux, "192.0.2.1", 30000)[1].remote_rtcp is None  # muxed: RTCP on the RTP port


def _offer_with_video_first(audio_proto: str = "RTP/AVP") -> SessionDescription:
    video, audio = BARESIP_OFFER.split("m=video")[1], BARESIP_OFFER.split("m=video")[0].split("m=audio")[1]
    head = BARESIP_OFFER.split("m=audio")[0]
    return SessionDescription.parse(f"{head}m=video{video}m=audio{audio}".replace(
        "m=audio 40000 RTP/AVP", f"m=audio 40000 {audio_proto}"))


def test_the_answer_keeps_the_offers_m_line_order() -> None:
    """RFC 3264 §6: streams are matched by order, so an offer whose audio comes after video is
    answered video (refused) first, then audio; a refused audio stream too."""
    offer = _offer_with_video_first()
    answer, session = audio_answer(offer, "127.0.0.1", 5000, codecs=G711)
    assert [(m.media, m.port) for m in answer.media] == [("video", 0), ("audio", 5000)]
    assert session.remote == ("192.0.2.10", 40000) and not session.rejected
    refused, session = audio_answer(offer, "127.0.0.1", 5000, codecs=(18,))  # G.729: nothing in common
    assert [(m.media, m.port) for m in refused.media] == [("video", 0), ("audio", 0)]
    assert session.rejected and session.refusal == "no common codec"
    assert session.refusal_code == sdp.WARN_MEDIA_FORMAT  # 305 incompatible media format
    again = SessionDescription.parse(refused.to_bytes())
    assert [(m.media, m.proto) for m in again.media] == [("video", "RTP/AVP"), ("audio", "RTP/AVP")]


@pytest.mark.parametrize("proto", ["RTP/AVPF", "RTP/SAVPF", "RTP/AVP"])
def test_the_answer_is_in_the_offered_rtp_profile(proto: str) -> None:
    """AVPF (RFC 4585) is answered as AVPF: we keep to its regular RTCP mode, which it allows
    (§3.1); an AVP/AVPF answer to an AVPF/AVP offer would change the profile."""
    text = BARESIP_OFFER.replace("RTP/AVP 96", f"{proto} 96")
    if "S" in proto:
        text = text.replace("a=ptime:20", "a=ptime:20\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                            "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")
    answer, session = audio_answer(SessionDescription.parse(text), "127.0.0.1", 5000, codecs=G711,
                                   srtp="optional")
    assert answer.media[0].proto == proto and answer.media[0].port == 5000 and not session.rejected


@pytest.mark.parametrize("proto", ["UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF", "TCP/RTP/AVP", "udp"])
def test_an_audio_stream_in_another_transport_is_refused_with_its_reason(proto: str) -> None:
    """DTLS-SRTP (RFC 5764), RTP over TCP (RFC 4571) or raw UDP are not answered as if they were
    RTP/AVP: the stream is refused with port 0 in its own profile, and the refusal says why."""
    offer = SessionDescription.parse(BARESIP_OFFER.replace("RTP/AVP 96", f"{proto} 96"))
    answer, session = audio_answer(offer, "127.0.0.1", 5000, codecs=G711, srtp="optional")
    assert [(m.media, m.port, m.proto) for m in answer.media] == [("audio", 0, proto), ("video", 0, "RTP/AVP")]
    assert session.rejected and session.refusal is not None and proto in session.refusal
    assert session.refusal_code == sdp.WARN_TRANSPORT  # 302
    # DTLS-SRTP is answered only with a certificate fingerprint to give (tests/unit/test_sdp_dtls.py)
    assert ("no DTLS certificate here" if "TLS" in proto else "RTP over UDP only") in session.refusal


def test_the_first_audio_stream_we_can_speak_is_answered() -> None:
    """An offer with a DTLS-SRTP audio stream and, after it, a plain RTP one (alternatives, as
    some gateways offer): the second is answered, the first refused in place."""
    audio = BARESIP_OFFER.split("m=video")[0].split("m=audio")[1]
    head = BARESIP_OFFER.split("m=audio")[0]
    dtls = "m=audio" + audio.replace("40000 RTP/AVP", "40010 UDP/TLS/RTP/SAVP")
    offer = SessionDescription.parse(f"{head}{dtls}m=audio{audio}")
    answer, session = audio_answer(offer, "127.0.0.1", 5000, codecs=G711)
    assert [(m.port, m.proto) for m in answer.media] == [(0, "UDP/TLS/RTP/SAVP"), (5000, "RTP/AVP")]
    assert session.remote == ("192.0.2.10", 40000)


def test_an_answer_in_another_transport_is_an_error() -> None:
    offer = audio_offer_for("127.0.0.1", 5000, codecs=G711)
    answer = SessionDescription.parse(BARESIP_OFFER.replace("RTP/AVP 96", "TCP/RTP/AVP 96"))
    with pytest.raises(ValueError, match="TCP/RTP/AVP, not RTP over UDP"):
        negotiate(offer, answer)


def test_an_unchanged_sdp_keeps_its_version_and_a_changed_one_goes_up_by_one() -> None:
    """RFC 3264 §8: a new SDP that modifies the session has the previous sess-version + 1;
    one that does not is the previous SDP itself, version and all (a keep-alive or session
    refresh re-INVITE's answer must not look like a change: peers restart media on one)."""
    first, _ = sdp.audio_answer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 40000, session_id=7, version=3)
    again, _ = sdp.audio_answer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 40000, session_id=7, version=9)
    assert sdp.versioned(again, first) is first
    assert sdp.versioned(first, None) is first
    held, _ = sdp.audio_answer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 40000, session_id=7, version=9,
                               direction="sendonly")
    sent = sdp.versioned(held, first)
    assert sent.origin.session_version == 4 and sent.media[0].direction == "sendonly"
    moved, _ = sdp.audio_answer(SessionDescription.parse(BARESIP_OFFER), "127.0.0.1", 40002, session_id=7, version=0)
    assert sdp.versioned(moved, sent).origin.session_version == 5
    assert b" 7 5 IN IP4 127.0.0.1\r\n" in sdp.versioned(moved, sent).to_bytes()
