"""DTLS-SRTP offer/answer (RFC 5763 §5, RFC 8842, RFC 8122 §5, RFC 4145 §4): the SDP half; the
handshake itself is in test_media_dtls.py and against baresip in tests/peers."""

from __future__ import annotations

import pytest

from skinnysip import sdp
from skinnysip.sdp import SessionDescription, SRTPRefused, audio_answer, audio_offer_for, negotiate

FP_A = ("sha-256", ":".join(["AB"] * 32))
FP_B = ("sha-256", ":".join(["0C"] * 32))
G711 = (0, 8)

#: baresip 1.0's DTLS-SRTP offer as it sends it: the feedback profile, a=setup and
#: a=fingerprint at session level
BARESIP_DTLS_OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "a=fingerprint:sha-256 " + ":".join(["3f"] * 32) + "\r\na=setup:actpass\r\n"
    "m=audio 40000 UDP/TLS/RTP/SAVPF 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=sendrecv\r\na=rtcp-mux\r\n")


def dtls_offer(setup: str | None = "actpass", proto: str = "UDP/TLS/RTP/SAVP",
               fingerprint: str | None = "sha-256 " + ":".join(["AB"] * 32)) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 4000 {proto} 0 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"]
    if setup is not None:
        lines.append(f"a=setup:{setup}")
    if fingerprint is not None:
        lines.append(f"a=fingerprint:{fingerprint}")
    return SessionDescription.parse("\r\n".join(lines + ["a=sendrecv", ""]))


def test_a_dtls_offer_says_actpass_and_our_fingerprint() -> None:
    offer = audio_offer_for("127.0.0.1", 4000, codecs=G711, srtp="dtls", dtls_fingerprint=FP_A)
    m = offer.media[0]
    assert m.proto == "UDP/TLS/RTP/SAVP"
    assert m.attribute("setup") == "actpass" and m.attribute("fingerprint") == " ".join(FP_A)
    assert not m.attribute_values("crypto")
    with pytest.raises(ValueError, match="fingerprint"):
        audio_offer_for("127.0.0.1", 4000, srtp="dtls")


@pytest.mark.parametrize(("offered", "role", "ours"), [
    ("actpass", None, "active"),        # RFC 5763 §5: active RECOMMENDED
    ("actpass", "client", "active"),
    ("actpass", "server", "passive"),   # a re-offer: the association we have keeps its roles
    ("active", None, "passive"),
    ("passive", None, "active"),
    (None, None, "passive"),            # RFC 4145 §4.1: an offer's default is active
    ("holdconn", None, None),
])
def test_the_answers_setup(offered: str | None, role: str | None, ours: str | None) -> None:
    assert sdp.answer_setup(offered, role) == ours


@pytest.mark.parametrize(("offered", "setup", "role"), [
    ("actpass", "active", "client"), ("active", "passive", "server"), ("passive", "active", "client"),
])
def test_a_dtls_offer_is_answered_in_its_profile_with_our_fingerprint(offered: str, setup: str, role: str) -> None:
    answer, session = audio_answer(dtls_offer(offered), "127.0.0.1", 5000, codecs=G711, srtp="optional",
                                   dtls_fingerprint=FP_B)
    m = answer.media[0]
    assert (m.port, m.proto) == (5000, "UDP/TLS/RTP/SAVP") and not session.rejected
    assert m.attribute("setup") == setup and m.attribute("fingerprint") == " ".join(FP_B)
    assert session.dtls_role == role and session.dtls_fingerprints == (FP_A,)
    assert session.srtp_suite is None  # the keys come from the handshake


def test_baresips_offer_with_session_level_attributes_is_answered() -> None:
    offer = SessionDescription.parse(BARESIP_DTLS_OFFER)
    answer, session = audio_answer(offer, "127.0.0.1", 5000, codecs=G711, srtp="mandatory", dtls_fingerprint=FP_B)
    assert answer.media[0].proto == "UDP/TLS/RTP/SAVPF" and answer.media[0].attribute("rtcp-mux") == ""
    assert session.dtls_role == "client" and session.rtcp_mux
    assert session.dtls_fingerprints == (("sha-256", ":".join(["3F"] * 32)),)  # upper-cased


@pytest.mark.parametrize(("offer", "srtp", "fingerprint", "why"), [
    (dtls_offer(), "off", FP_B, "SRTP is off here"),
    (dtls_offer(), "optional", None, "no DTLS certificate here"),
    (dtls_offer(fingerprint=None), "optional", FP_B, "without a usable a=fingerprint"),
    (dtls_offer(fingerprint="sha-256 not-hex"), "optional", FP_B, "without a usable a=fingerprint"),
    (dtls_offer(fingerprint="sha-256 AB:CD"), "optional", FP_B, "without a usable a=fingerprint"),  # too short
    (dtls_offer("holdconn"), "optional", FP_B, "holdconn"),
])
def test_a_dtls_offer_we_cannot_answer_is_refused_with_its_reason(offer: SessionDescription, srtp: str,
                                                                   fingerprint: tuple[str, str] | None,
                                                                   why: str) -> None:
    answer, session = audio_answer(offer, "127.0.0.1", 5000, codecs=G711, srtp=srtp, dtls_fingerprint=fingerprint)
    assert answer.media[0].port == 0 and session.rejected
    assert session.refusal is not None and why in session.refusal and session.refusal_code == sdp.WARN_TRANSPORT


def test_dtls_mode_refuses_plain_rtp_and_takes_sdes() -> None:
    plain = audio_offer_for("127.0.0.1", 4000, codecs=G711)
    _, session = audio_answer(plain, "127.0.0.1", 5000, codecs=G711, srtp="dtls", dtls_fingerprint=FP_B)
    assert session.rejected and session.refusal is not None and "SRTP needed" in session.refusal
    sdes = audio_offer_for("127.0.0.1", 4000, codecs=G711, srtp="mandatory")
    _, session = audio_answer(sdes, "127.0.0.1", 5000, codecs=G711, srtp="dtls", dtls_fingerprint=FP_B)
    assert not session.rejected and session.srtp_suite is not None and session.dtls_role is None


@pytest.mark.parametrize(("their_setup", "role"), [("active", "server"), ("passive", "client"), (None, "client")])
def test_negotiate_takes_our_role_from_the_answers_setup(their_setup: str | None, role: str) -> None:
    offer = audio_offer_for("127.0.0.1", 4000, codecs=G711, srtp="dtls", dtls_fingerprint=FP_A)
    answer = dtls_offer(their_setup, fingerprint=" ".join(FP_B))
    session = negotiate(offer, answer)
    assert session.dtls_role == role and session.dtls_fingerprints == (FP_B,)


@pytest.mark.parametrize(("answer", "why"), [
    (dtls_offer("actpass", fingerprint=" ".join(FP_B)), "a=setup:actpass"),
    (dtls_offer("active", fingerprint=None), "no usable a=fingerprint"),
    (dtls_offer("active", proto="RTP/AVP", fingerprint=None), "with RTP/AVP"),
    (dtls_offer("active", proto="RTP/SAVP", fingerprint=None), "with RTP/SAVP"),
])
def test_an_answer_that_does_not_key_dtls_is_srtp_refused(answer: SessionDescription, why: str) -> None:
    offer = audio_offer_for("127.0.0.1", 4000, codecs=G711, srtp="dtls", dtls_fingerprint=FP_A)
    with pytest.raises(SRTPRefused, match="the far end refused SRTP") as info:
        negotiate(offer, answer)
    assert why in str(info.value)
    rejected = dtls_offer("active", fingerprint=" ".join(FP_B))
    rejected.media[0].port = 0
    with pytest.raises(SRTPRefused, match="rejected our UDP/TLS/RTP/SAVP"):
        negotiate(offer, rejected)


def test_fingerprints_are_bounded_and_malformed_ones_skipped() -> None:
    text = BARESIP_DTLS_OFFER.replace("a=rtcp-mux\r\n", "".join(
        f"a=fingerprint:sha-{n} " + ":".join(["01"] * 32) + "\r\n" for n in range(20)) + "a=fingerprint:x\r\n")
    offer = SessionDescription.parse(text)
    found = sdp.fingerprints(offer, offer.media[0])
    assert len(found) == 8 and found[0] == ("sha-0", ":".join(["01"] * 32))  # media level wins over session
