"""ICE lite (RFC 8445 §2.5, RFC 8839): the SDP half (credentials, candidates) and the answers
to a full agent's connectivity checks, built here with aioice's STUN messages as a full agent
builds them (USERNAME, ICE-CONTROLLING, PRIORITY, USE-CANDIDATE, MESSAGE-INTEGRITY,
FINGERPRINT). The media half against rtpengine is in tests/peers/test_phone_rtpengine.py."""

from __future__ import annotations

import pytest
from aioice import stun

from skinnysip import sdp
from skinnysip.net.ice import ICE_CHARS, ICECredentials, ICELiteResponder
from skinnysip.sdp import SessionDescription, audio_answer, audio_offer_for

OURS = ICECredentials("abcd1234", "0123456789abcdefghijklmn")
SOURCE = ("127.0.0.1", 40000)


def check(username: str, pwd: str, *, nominate: bool = False, integrity: bool = True) -> bytes:
    """A full (controlling) agent's Binding request (RFC 8445 §7.1.1)."""
    attributes = {"USERNAME": username, "ICE-CONTROLLING": 0x1234, "PRIORITY": 1853824767}
    if nominate:
        attributes["USE-CANDIDATE"] = None
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=attributes)
    if integrity:
        message.add_message_integrity(pwd.encode())
    else:
        message.add_fingerprint()
    return bytes(message)


def test_a_valid_check_is_answered_with_the_source_and_integrity() -> None:
    responder = ICELiteResponder(OURS, "peer")
    request = check("abcd1234:peer", OURS.pwd)
    response, nominated = responder.request(request, SOURCE)
    assert response is not None and not nominated
    parsed = stun.parse_message(response)  # checks the FINGERPRINT
    assert parsed.message_class == stun.Class.RESPONSE
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == SOURCE
    assert parsed.check_message_integrity(OURS.pwd.encode())
    assert parsed.transaction_id == stun.parse_message(request).transaction_id
    assert (responder.requests, responder.answered, responder.nominations) == (1, 1, 0)


def test_use_candidate_nominates_the_source() -> None:
    responder = ICELiteResponder(OURS, None)
    response, nominated = responder.request(check("abcd1234:anyone", OURS.pwd, nominate=True), SOURCE)
    assert response is not None and nominated and responder.nominated == SOURCE
    assert responder.report()["nominated"] == list(SOURCE)


@pytest.mark.parametrize(("username", "pwd", "integrity", "code"), [
    ("abcd1234:peer", "wrong-password-wrong-password", True, 401),   # MESSAGE-INTEGRITY fails
    ("someone1:peer", OURS.pwd, True, 401),                          # not our ufrag
    ("abcd1234:other", OURS.pwd, True, 401),                         # not the peer's ufrag
    ("abcd1234:peer", OURS.pwd, False, 400),                         # no MESSAGE-INTEGRITY
], ids=["bad-integrity", "not-our-ufrag", "not-their-ufrag", "no-integrity"])
def test_a_check_that_does_not_authenticate_gets_an_error_and_nominates_nothing(username: str, pwd: str,
                                                                                integrity: bool, code: int) -> None:
    responder = ICELiteResponder(OURS, "peer")
    response, nominated = responder.request(check(username, pwd, nominate=True, integrity=integrity), SOURCE)
    assert response is not None and not nominated and responder.nominated is None
    parsed = stun.parse_message(response)
    assert parsed.message_class == stun.Class.ERROR and parsed.error_code == code
    assert responder.refused == 1 and responder.answered == 0


def test_what_is_not_a_binding_request_is_left_alone() -> None:
    responder = ICELiteResponder(OURS, "peer")
    answer = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, attributes={"XOR-MAPPED-ADDRESS": SOURCE})
    for data in (bytes(answer), b"\x00\x01\x00\x00garbage", b"", bytes(20)):
        assert responder.request(data, SOURCE) == (None, False)
    assert responder.requests == 0


def test_new_credentials_are_ice_chars_of_the_allowed_lengths() -> None:
    creds = {ICECredentials.new() for _ in range(20)}
    assert len(creds) == 20
    for c in creds:
        assert len(c.ufrag) == 8 and len(c.pwd) == 24 and set(c.ufrag + c.pwd) <= set(ICE_CHARS)


def test_sdp_ice_lite_attributes_and_candidates() -> None:
    offer = audio_offer_for("192.0.2.1", 4000, codecs=(0,))
    sdp.with_ice_lite(offer, (OURS.ufrag, OURS.pwd), [(1, "192.0.2.1", 4000), (2, "192.0.2.1", 4001)])
    parsed = SessionDescription.parse(offer.to_bytes())
    assert ("ice-lite", None) in parsed.attributes
    m = parsed.media[0]
    assert sdp.ice_credentials(parsed, m) == (OURS.ufrag, OURS.pwd)
    assert m.attribute_values("candidate") == ["1 1 UDP 2130706431 192.0.2.1 4000 typ host",
                                               "1 2 UDP 2130706430 192.0.2.1 4001 typ host"]
    assert sdp.host_priority(1) == 2130706431  # RFC 8445 §5.1.2.1 with 126 and 65535


def test_the_peers_credentials_are_read_from_media_or_session_level_and_checked() -> None:
    base = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{session}"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{media}")
    pwd = "a" * 22
    cases = [("a=ice-ufrag:sess\r\na=ice-pwd:" + pwd + "\r\n", "", ("sess", pwd)),
             ("a=ice-ufrag:sess\r\na=ice-pwd:" + pwd + "\r\n", "a=ice-ufrag:medi\r\n", ("medi", pwd)),
             ("", "a=ice-ufrag:abc\r\na=ice-pwd:" + pwd + "\r\n", None),       # ufrag too short
             ("", "a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", None),            # pwd too short
             ("", "a=ice-ufrag:ab cd\r\na=ice-pwd:" + pwd + "\r\n", None),     # not ice-chars
             ("", "", None)]
    for session, media, wanted in cases:
        offer = SessionDescription.parse(base.format(session=session, media=media))
        assert sdp.ice_credentials(offer, offer.media[0]) == wanted, (session, media)
        _, audio = audio_answer(offer, "127.0.0.1", 5000, codecs=(0,))
        assert audio.ice_remote == wanted
