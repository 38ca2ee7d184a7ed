"""SRTP keyed by SDES (RFC 4568) in offer/answer, and the libsrtp round trip (RFC 3711):
``a=crypto`` build/parse (malformed lines rejected, lifetimes/MKI tolerated), RTP/SAVP and
best-effort RTP/AVP offers, answers keyed with our own fresh key under the offerer's tag,
refusals, reading the answer to our offer, and protect/unprotect through the keys the
offer/answer settled (:class:`SRTPConfig` / :class:`SRTPContext`)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skinnysip.cli.phone import fix_auto_answer
from skinnysip.net.media import MediaConfig, SRTPConfig, SRTPContext
from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.rtcp import ReceiverReport, SourceDescription, build_compound, parse_compound
from skinnysip.sdp import (
    SRTP_SUITES,
    CryptoAttribute,
    SDPParseError,
    SessionDescription,
    SRTPRefused,
    audio_answer,
    audio_offer_for,
    check_srtp_suites,
    crypto_attributes,
    negotiate,
    new_crypto,
)

#: RFC 4568 §4's example key (30 octets) with a lifetime and an MKI
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
KEY_A = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
KEY_B = "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"

SAVP_OFFER = (  # what baresip 1.0 with mediaenc=srtp-mand offers, give or take
    "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}{KEY_A[:16]}\r\n"
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
    f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}\r\n"
    "a=ptime:20\r\na=sendrecv\r\n"
)


def offer(text: str = SAVP_OFFER) -> SessionDescription:
    return SessionDescription.parse(text)


# ---------------------------------------------------------------------------- a=crypto


def test_crypto_attribute_parses_the_rfc_example_and_builds_back() -> None:
    c = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4")
    assert (c.tag, c.suite, c.lifetime, c.mki) == (1, "AES_CM_128_HMAC_SHA1_80", "2^20", "1:4")
    assert c.key == base64.b64decode(RFC_KEY) and len(c.key) == 30
    assert str(c) == f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"
    assert not c.usable  # an MKI in every packet: we do not key with MKIs
    assert CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20").usable
    assert CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:0").usable
    # session parameters are kept; those libsrtp would have to honour make the line unusable
    kdr = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} KDR=0 WSH=128")
    assert kdr.session_params == ("KDR=0", "WSH=128") and kdr.usable and str(kdr).endswith(" KDR=0 WSH=128")
    assert not CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} UNENCRYPTED_SRTP").usable
    assert not CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY} KDR=24").usable
    # a suite we do not know parses (to be skipped), with its own key length
    aes256 = CryptoAttribute.parse(f"2 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}{KEY_A[:16]}")
    assert len(aes256.key) == 42 and not aes256.usable
    # unpadded base64 of a key whose length is not a multiple of 3 is accepted
    assert len(CryptoAttribute.parse(f"2 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}{KEY_A[:15]}").key) == 41
    assert RFC_KEY not in repr(c) and "key=" not in repr(c)  # keys stay out of logs


@pytest.mark.parametrize("value", [
    "",
    "1 AES_CM_128_HMAC_SHA1_80",
    f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
    f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
    f"1 AES-CM! inline:{RFC_KEY}",
    f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}",
    "1 AES_CM_128_HMAC_SHA1_80 inline",
    "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-4]}",  # 27 octets
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}AAAA",  # 33 octets
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4|9",
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|forever",
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4|2^20",  # MKI before lifetime
])
def test_malformed_crypto_attributes_are_rejected(value: str) -> None:
    with pytest.raises(SDPParseError):
        CryptoAttribute.parse(value)


@given(st.text(max_size=120))
def test_crypto_parse_raises_nothing_but_sdp_parse_error(value: str) -> None:
    try:
        c = CryptoAttribute.parse(value)
    except SDPParseError:
        return
    assert CryptoAttribute.parse(str(c)).key == c.key


def test_new_crypto_keys_are_fresh_and_checked() -> None:
    keys = {new_crypto(1).key for _ in range(20)}
    assert len(keys) == 20 and all(len(k) == 30 for k in keys)
    assert [len(new_crypto(1, suite).key) for suite in ("AEAD_AES_128_GCM", "AEAD_AES_256_GCM")] == [28, 44]
    with pytest.raises(ValueError):
        new_crypto(1, "AES_256_CM_HMAC_SHA1_80")


# ---------------------------------------------------------------------------- offers


def test_offers_mandatory_savp_optional_avp_with_crypto_off_plain() -> None:
    mand = SessionDescription.parse(audio_offer_for("127.0.0.1", 4000, srtp="mandatory").to_bytes())
    m = mand.media[0]
    lines = crypto_attributes(m)
    assert m.proto == "RTP/SAVP" and [(c.tag, c.suite) for c in lines] == list(enumerate(SRTP_SUITES, 1))
    assert lines[0].key != lines[1].key and all(c.usable for c in lines)
    assert m.direction == "sendrecv" and m.ptime == 20
    opt = audio_offer_for("127.0.0.1", 4000, srtp="optional").media[0]
    assert opt.proto == "RTP/AVP" and len(crypto_attributes(opt)) == 2
    off = audio_offer_for("127.0.0.1", 4000).media[0]
    assert off.proto == "RTP/AVP" and off.attribute("crypto") is None
    keep = new_crypto(5, "AES_CM_128_HMAC_SHA1_32")
    again = audio_offer_for("127.0.0.1", 4000, srtp="mandatory", crypto=[keep]).media[0]
    assert crypto_attributes(again) == [keep]
    with pytest.raises(ValueError):
        audio_offer_for("127.0.0.1", 4000, srtp="maybe")


# ---------------------------------------------------------------------------- answers


def test_savp_offer_answered_with_first_supported_suite_and_our_own_key() -> None:
    answer, session = audio_answer(offer(), "127.0.0.1", 5000, srtp="optional")
    m = SessionDescription.parse(answer.to_bytes()).media[0]
    (ours,) = crypto_attributes(m)
    assert m.proto == "RTP/SAVP" and m.port == 5000
    assert (ours.tag, ours.suite) == (2, "AES_CM_128_HMAC_SHA1_32")  # AES-256-CM skipped; the offerer's order
    assert ours.key not in (base64.b64decode(KEY_A), base64.b64decode(KEY_B))
    assert session.srtp_suite == "AES_CM_128_HMAC_SHA1_32"
    assert session.srtp_local_key == ours.key and session.srtp_remote_key == base64.b64decode(KEY_A)
    # a second answer has another fresh key, unless asked to keep one (a re-offer)
    assert audio_answer(offer(), "127.0.0.1", 5000, srtp="mandatory")[1].srtp_local_key != ours.key
    kept = audio_answer(offer(), "127.0.0.1", 5000, srtp="mandatory", srtp_key=ours.key)[1]
    assert kept.srtp_local_key == ours.key


def test_avp_offer_with_crypto_is_keyed_unless_srtp_is_off() -> None:
    best_effort = offer(SAVP_OFFER.replace("RTP/SAVP", "RTP/AVP"))
    answer, session = audio_answer(best_effort, "127.0.0.1", 5000, srtp="optional")
    assert answer.media[0].proto == "RTP/AVP" and session.srtp_suite == "AES_CM_128_HMAC_SHA1_32"
    answer, session = audio_answer(best_effort, "127.0.0.1", 5000)
    assert answer.media[0].attribute("crypto") is None and session.srtp_suite is None and not session.rejected


@pytest.mark.parametrize(("text", "srtp", "why"), [
    (SAVP_OFFER, "off", "SRTP is off"),
    (SAVP_OFFER.replace("AES_CM_128_HMAC_SHA1", "AES_256_CM_HMAC_SHA1"), "mandatory", "no usable a=crypto"),
    ("".join(line + "\r\n" for line in SAVP_OFFER.split("\r\n") if line and "crypto" not in line),
     "optional", "no usable a=crypto"),
    (SAVP_OFFER.replace(f"inline:{KEY_A}\r", "inline:broken\r").replace(f"inline:{KEY_B}", "inline:!"),
     "optional", "no usable a=crypto"),
    ("".join(line + "\r\n" for line in SAVP_OFFER.replace("RTP/SAVP", "RTP/AVP").split("\r\n")
             if line and "crypto" not in line), "mandatory", "no usable a=crypto"),
])
def test_offers_we_cannot_key_are_refused_with_port_zero(text: str, srtp: str, why: str) -> None:
    answer, session = audio_answer(offer(text), "127.0.0.1", 5000, srtp=srtp)
    assert session.rejected and answer.media[0].port == 0 and session.srtp_suite is None
    assert session.refusal is not None and why in session.refusal
    assert answer.media[0].attribute("crypto") is None


def test_plain_offer_answered_plain_when_srtp_is_optional() -> None:
    plain = "".join(line + "\r\n" for line in SAVP_OFFER.replace("RTP/SAVP", "RTP/AVP").split("\r\n")
                    if line and "crypto" not in line)
    answer, session = audio_answer(offer(plain), "127.0.0.1", 5000, srtp="optional")
    assert not session.rejected and session.srtp_suite is None and answer.media[0].proto == "RTP/AVP"


# ---------------------------------------------------------------------------- reading the answer


def test_negotiate_crosses_the_keys_and_refuses_answers_without_crypto() -> None:
    ours = audio_offer_for("127.0.0.1", 4000, srtp="mandatory")
    answer, theirs = audio_answer(SessionDescription.parse(ours.to_bytes()), "127.0.0.1", 5000, srtp="mandatory")
    session = negotiate(ours, SessionDescription.parse(answer.to_bytes()))
    assert session.srtp_suite == theirs.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
    assert session.srtp_local_key == theirs.srtp_remote_key and session.srtp_remote_key == theirs.srtp_local_key
    # the far end answers plain RTP to our RTP/SAVP offer, or rejects the stream
    plain, _ = audio_answer(SessionDescription.parse(audio_offer_for("127.0.0.1", 4000).to_bytes()), "127.0.0.1", 5000)
    with pytest.raises(SRTPRefused, match="^the far end refused SRTP"):
        negotiate(ours, plain)
    refused, _ = audio_answer(SessionDescription.parse(ours.to_bytes()), "127.0.0.1", 5000)  # SRTP off there
    assert refused.media[0].port == 0
    with pytest.raises(SRTPRefused, match="^the far end refused SRTP"):
        negotiate(ours, refused)
    # another suite under our tag is not a key we can use
    wrong = SessionDescription.parse(answer.to_bytes().replace(b"AES_CM_128_HMAC_SHA1_80", b"AES_CM_128_HMAC_SHA1_32"))
    with pytest.raises(SRTPRefused):
        negotiate(ours, wrong)


def test_optional_offer_falls_back_to_plain_rtp() -> None:
    ours = audio_offer_for("127.0.0.1", 4000, srtp="optional")
    plain, _ = audio_answer(SessionDescription.parse(ours.to_bytes()), "127.0.0.1", 5000)  # SRTP off there
    session = negotiate(ours, plain)
    assert session.srtp_suite is None and session.srtp_local_key is None and not session.rejected
    keyed, _ = audio_answer(SessionDescription.parse(ours.to_bytes()), "127.0.0.1", 5000, srtp="optional")
    assert negotiate(ours, keyed).srtp_suite == "AES_CM_128_HMAC_SHA1_80"


# ---------------------------------------------------------------------------- libsrtp round trip


def _pair(suite_offer: str = "mandatory") -> tuple[SRTPContext, SRTPContext]:
    ours = audio_offer_for("127.0.0.1", 4000, srtp=suite_offer)
    answer, theirs = audio_answer(SessionDescription.parse(ours.to_bytes()), "127.0.0.1", 5000, srtp="mandatory")
    mine = negotiate(ours, answer)
    a, b = SRTPConfig.from_audio(mine), SRTPConfig.from_audio(theirs)
    assert a is not None and b is not None
    MediaConfig(srtp=a).validate()
    return SRTPContext(a), SRTPContext(b)


def test_protect_unprotect_round_trip_through_the_negotiated_keys() -> None:
    alice, bob = _pair()
    for seq in range(5):
        rtp = RTPPacket(0, 1000 + seq, 160 * seq, 0x1234, bytes([0x55]) * 160, seq == 0).to_bytes()
        srtp = alice.protect(rtp)
        assert srtp is not None and len(srtp) == len(rtp) + 10  # 80-bit tag (RFC 3711 §4.2)
        assert srtp[:12] == rtp[:12] and srtp[12:172] != rtp[12:]  # header in clear, payload not
        assert bob.unprotect(srtp) == rtp
    rtcp = build_compound([ReceiverReport(0x1234, ()), SourceDescription(chunks=((0x1234, "alice@test"),))])
    srtcp = alice.protect_rtcp(rtcp)
    assert srtcp is not None and len(srtcp) == len(rtcp) + 4 + 10  # E+index, tag (§3.4)
    plain = bob.unprotect_rtcp(srtcp)
    assert plain == rtcp and parse_compound(plain)
    # the other way too
    back = RTPPacket(8, 7, 0, 0x9999, b"\x01" * 160).to_bytes()
    assert alice.unprotect(bob.protect(back) or b"") == back
    assert alice.report() == {"suite": "AES_CM_128_HMAC_SHA1_80", "auth_failures": 0, "replays": 0,
                              "protect_errors": 0}


def test_unprotect_failures_are_counted_not_raised() -> None:
    alice, bob = _pair()
    rtp = RTPPacket(0, 1, 0, 0x42, b"\xff" * 160).to_bytes()
    srtp = alice.protect(rtp)
    assert srtp is not None
    tampered = bytearray(srtp)
    tampered[20] ^= 1
    assert bob.unprotect(bytes(tampered)) is None
    assert bob.unprotect(rtp) is None  # plain RTP is not authentic
    assert bob.unprotect(b"\x80") is None and bob.unprotect(b"\x80" * 4000) is None
    assert bob.unprotect(srtp) == rtp
    assert bob.unprotect(srtp) is None  # replayed
    assert bob.unprotect_rtcp(b"\x81\xc9\x00\x01" + b"\x00" * 4) is None
    assert bob.report()["auth_failures"] == 5 and bob.report()["replays"] == 1


def test_rekeying_changes_only_the_side_whose_key_changed() -> None:
    alice, bob = _pair()
    rtp = [RTPPacket(0, n, 160 * n, 0x42, b"\x11" * 160).to_bytes() for n in range(3)]
    assert bob.unprotect(alice.protect(rtp[0]) or b"") == rtp[0]
    fresh = new_crypto(1).key
    bob.update(SRTPConfig(bob.config.suite, bob.config.tx_key, fresh))  # alice's new key in a re-answer
    assert bob.unprotect(alice.protect(rtp[1]) or b"") is None  # alice still on her old key
    alice.update(SRTPConfig(alice.config.suite, fresh, alice.config.rx_key))
    assert bob.unprotect(alice.protect(rtp[2]) or b"") == rtp[2]
    with pytest.raises(ValueError):
        SRTPConfig("AES_CM_128_HMAC_SHA1_80", b"short", fresh).validate()
    with pytest.raises(ValueError):
        MediaConfig(srtp=SRTPConfig("NULL", fresh, fresh)).validate()
    assert "tx_key" not in repr(bob.config)


def test_cli_srtp_alone_means_mandatory() -> None:
    assert fix_auto_answer(["phone", "--srtp", "sip:a@b"]) == ["phone", "--srtp", "mandatory", "sip:a@b"]
    assert fix_auto_answer(["phone", "sip:a@b", "--srtp"]) == ["phone", "sip:a@b", "--srtp", "mandatory"]
    assert fix_auto_answer(["--srtp", "optional", "--auto-answer"]) == ["--srtp", "optional", "--auto-answer", "0"]
    assert fix_auto_answer(["--auto-answer", "1.5", "--srtp", "--json"]) == [
        "--auto-answer", "1.5", "--srtp", "mandatory", "--json"]


@pytest.mark.parametrize(("suite", "length"), [("AEAD_AES_128_GCM", 28), ("AEAD_AES_256_GCM", 44)])
def test_an_aes_gcm_offer_is_answered_with_a_key_of_its_length(suite: str, length: int) -> None:
    """RFC 7714's SDES suites (as rtpengine offers them first): 16 or 32 octets of key and 12
    of salt. Answered in the offerer's order with our own key of that length; a GCM line whose
    key has the AES-CM length is malformed and skipped (RFC 4568 §7.1.1)."""
    theirs = new_crypto(1, suite)
    text = SAVP_OFFER.replace("a=crypto:1 AES_256_CM_HMAC_SHA1_80", "a=crypto:9 AES_256_CM_HMAC_SHA1_80").replace(
        "a=crypto:2 ", f"a=crypto:{theirs}\r\na=crypto:2 ")
    answer, session = audio_answer(offer(text), "127.0.0.1", 5000, srtp="mandatory")
    (ours,) = crypto_attributes(SessionDescription.parse(answer.to_bytes()).media[0])
    assert (ours.tag, ours.suite, len(ours.key)) == (1, suite, length) and ours.usable
    assert session.srtp_suite == suite and session.srtp_remote_key == theirs.key
    assert audio_answer(offer(text), "127.0.0.1", 5000, srtp="mandatory", srtp_key=ours.key)[1].srtp_local_key \
        == ours.key  # kept on a re-offer
    with pytest.raises(SDPParseError, match=f"needs {length} octets"):
        CryptoAttribute.parse(f"1 {suite} inline:{KEY_A}")


def test_the_suites_offered_and_accepted_can_be_chosen() -> None:
    """``srtp_suites``: offered in that order with a key of each one's length; an answer takes
    only those (so an offer of none of them is refused when SRTP is mandatory); a bad list is
    a ValueError naming the bad suite."""
    mine = audio_offer_for("127.0.0.1", 4000, srtp="mandatory", srtp_suites=("AEAD_AES_256_GCM", "AEAD_AES_128_GCM"))
    lines = crypto_attributes(SessionDescription.parse(mine.to_bytes()).media[0])
    assert [(c.tag, c.suite, len(c.key)) for c in lines] == [(1, "AEAD_AES_256_GCM", 44), (2, "AEAD_AES_128_GCM", 28)]
    answer, session = audio_answer(offer(), "127.0.0.1", 5000, srtp="mandatory", srtp_suites=("AES_CM_128_HMAC_SHA1_80",))
    assert session.srtp_suite == "AES_CM_128_HMAC_SHA1_80"  # tag 3: tag 2's _32 is not among ours
    refused = audio_answer(offer(), "127.0.0.1", 5000, srtp="mandatory", srtp_suites=("AEAD_AES_128_GCM",))[1]
    assert refused.rejected and refused.refusal is not None and refused.refusal.startswith("SRTP needed")
    assert check_srtp_suites(["AEAD_AES_128_GCM"]) == ("AEAD_AES_128_GCM",)
    for bad, says in (([], "at least one"), (["AES_192_CM_HMAC_SHA1_80"], "AES_192"), (["AEAD_AES_128_GCM"] * 2, "once")):
        with pytest.raises(ValueError, match=says):
            check_srtp_suites(bad)
