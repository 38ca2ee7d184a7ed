"""The target policy on media destinations (issue 11): the pure decision on an SDP ``c=`` /
SCCP ``remoteIpAddr`` address, and each call site's use of it on the numeric address only."""

from __future__ import annotations

import pytest

from skinnysip import policy as target_policy
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.policy import TargetPolicy, media_refusal, sdp_media_refusal
from skinnysip.sdp import AudioSession, SessionDescription
from skinnysip.sip.request import warning_field

DENY_2 = TargetPolicy(deny=["127.0.0.2"], restrict=False)
EXPOSED = TargetPolicy(restrict=True)


def _sdp(session_c: str | None, media: list[tuple[str, int, str | None]]) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-"]
    if session_c:
        lines.append(f"c=IN IP4 {session_c}")
    lines.append("t=0 0")
    for kind, port, c in media:
        lines.append(f"m={kind} {port} RTP/AVP 0")
        if c:
            lines.append(f"c=IN IP{6 if ':' in c else 4} {c}")
    return SessionDescription.parse(("\r\n".join(lines) + "\r\n").encode())


def test_no_policy_refuses_nothing() -> None:
    assert media_refusal("169.254.169.254", None) is None
    assert media_refusal("pbx.example.com", None) is None
    assert sdp_media_refusal(_sdp("169.254.169.254", [("audio", 4000, None)]), None) is None


def test_a_denied_address_is_refused_naming_address_and_rule() -> None:
    reason = media_refusal("127.0.0.2", DENY_2)
    assert reason == "media address 127.0.0.2 refused by the target policy: 127.0.0.2 is denied by --deny 127.0.0.2"
    assert media_refusal("127.0.0.1", DENY_2) is None


@pytest.mark.parametrize("written", ["0x7f.0.0.2", "2130706434", "::ffff:127.0.0.2", "127.0.2"])
def test_other_spellings_are_judged_as_the_address_they_mean(written: str) -> None:
    reason = media_refusal(written, DENY_2)
    assert reason is not None and "--deny 127.0.0.2" in reason


def test_exposed_defaults_apply_to_media() -> None:
    meta = media_refusal("169.254.169.254", EXPOSED, what="SDP c= address")
    assert meta is not None and meta.startswith("SDP c= address 169.254.169.254 refused") and "metadata" in meta
    private = media_refusal("10.1.2.3", EXPOSED)
    assert private is not None and "private" in private and "--allow 10.0.0.0/8" in private
    assert media_refusal("192.0.2.10", EXPOSED) is None


def test_a_host_name_is_refused_without_dns_when_a_policy_is_set() -> None:
    reason = media_refusal("localhost", DENY_2)
    assert reason is not None and "'localhost'" in reason and "host name" in reason


def test_sdp_session_level_and_media_level_connection() -> None:
    assert sdp_media_refusal(_sdp("127.0.0.2", [("audio", 4000, None)]), DENY_2) is not None
    # the media-level c= overrides the session's (RFC 4566 §5.7)
    assert sdp_media_refusal(_sdp("127.0.0.2", [("audio", 4000, "127.0.0.1")]), DENY_2) is None
    assert sdp_media_refusal(_sdp("127.0.0.1", [("audio", 4000, "127.0.0.2")]), DENY_2) is not None


def test_sdp_rejected_streams_hold_and_other_media_are_not_destinations() -> None:
    assert sdp_media_refusal(_sdp("127.0.0.2", [("audio", 0, None)]), DENY_2) is None  # port 0: rejected
    assert sdp_media_refusal(_sdp("0.0.0.0", [("audio", 4000, None)]), EXPOSED) is None  # hold (RFC 3264 §8.4)
    assert sdp_media_refusal(_sdp("127.0.0.1", [("video", 4002, "127.0.0.2")]), DENY_2) is None
    assert sdp_media_refusal(_sdp("127.0.0.1", [("audio", 4000, None), ("audio", 4002, "127.0.0.2")]),
                             DENY_2) is not None


def test_sdp_name_in_c_line_is_refused() -> None:
    reason = sdp_media_refusal(_sdp("media.example.com", [("audio", 4000, None)]), DENY_2)
    assert reason is not None and reason.startswith("SDP c= address 'media.example.com' refused")


def test_sip_phone_keeps_the_policy_it_was_made_under() -> None:
    account = SIPAccount(aor="sip:alice@127.0.0.1", register=False)
    with target_policy.applied(DENY_2):
        phone = SIPPhone(account)
    assert phone.policy is DENY_2
    assert SIPPhone(account).policy is None  # made outside: no policy (the CLI)
    refused = phone._media_refusal(AudioSession(("127.0.0.2", 4000), 0, None, 0.02, "sendrecv"))
    assert refused is not None and refused.startswith("SDP c= address 127.0.0.2 refused")
    assert phone._media_refusal(AudioSession(("127.0.0.1", 4000), 0, None, 0.02, "sendrecv")) is None
    assert phone._media_refusal(AudioSession(None, 0, None, 0.02, "inactive")) is None


def test_sccp_phone_keeps_the_policy_it_was_made_under() -> None:
    from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone

    with target_policy.applied(DENY_2):
        phone = SCCPPhone(SCCPAccount(host="127.0.0.1"))
    assert phone.policy is DENY_2


def test_warning_header_quotes_the_reason() -> None:
    """RFC 3261 §20.43: warn-code SP warn-agent SP quoted-string."""
    assert warning_field('a "b" \\ c') == ("Warning", '399 skinnysip "a \\"b\\" \\\\ c"')
    assert warning_field("no common codec", 305) == ("Warning", '305 skinnysip "no common codec"')
    assert warning_field("x", 200)[1].startswith("399 ")  # not a warn-code: miscellaneous


def test_an_rtcp_attribute_naming_another_address_is_a_destination_too() -> None:
    """RFC 3605: ``a=rtcp:port IN IP4 address`` sends RTCP elsewhere than the c= address."""
    sdp = _sdp("127.0.0.1", [("audio", 4000, None)])
    sdp.media[0].attributes.append(("rtcp", "4001 IN IP4 127.0.0.2"))
    reason = sdp_media_refusal(sdp, DENY_2)
    assert reason is not None and reason.startswith("SDP a=rtcp address 127.0.0.2 refused")
    sdp.media[0].attributes[-1] = ("rtcp", "4001")  # the c= address, another port: nothing new
    assert sdp_media_refusal(sdp, DENY_2) is None
