"""The Reason header field (RFC 3326): parsing what PBXs and proxies send, writing ours."""

from __future__ import annotations

from skinnysip.sip.message import Request, parse_message
from skinnysip.sip.reason import (
    COMPLETED_ELSEWHERE,
    MAX_REASONS,
    Reason,
    completed_elsewhere,
    describe,
    parse_reasons,
)
from skinnysip.sip.request import build_cancel


def test_q850_and_sip_reasons_as_pbxs_send_them() -> None:
    assert parse_reasons(['Q.850;cause=16;text="Normal call clearing"']) == [Reason("Q.850", 16, "Normal call clearing")]
    # one field line with two reason-values (one per protocol, RFC 3326 §2), and a second line
    got = parse_reasons(['SIP;cause=200;text="Call completed elsewhere", Q.850;cause=26', "X-Vendor ; cause = 7"])
    assert got == [COMPLETED_ELSEWHERE, Reason("Q.850", 26, None), Reason("X-Vendor", 7, None)]
    assert completed_elsewhere(got) and not completed_elsewhere([Reason("Q.850", 200)])
    assert str(got[0]) == "SIP cause 200 (Call completed elsewhere)" and str(got[1]) == "Q.850 cause 26"
    # a quoted text with a comma, an escaped quote and a semicolon stays one value
    assert parse_reasons(['Q.850;cause=17;text="User busy, \\"really\\"; sorry"']) == [
        Reason("Q.850", 17, 'User busy, "really"; sorry')]


def test_malformed_reasons_are_skipped_not_errors() -> None:
    assert parse_reasons(['"quoted";cause=1', ";cause=2", 'SIP;cause=200;text="unterminated', "Q.850;=3"]) == []
    assert parse_reasons(["SIP;cause=abc", "SIP;cause=99999999999999"]) == [Reason("SIP"), Reason("SIP")]
    assert len(parse_reasons(["Q.850;cause=16"] * 50)) == MAX_REASONS
    assert parse_reasons(['SIP;text="' + "x" * 1000 + '"'])[0].text == "x" * 200


def test_a_cancel_carries_the_reasons_it_is_given() -> None:
    invite = parse_message(
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc\r\n"
        b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n"
        b"CSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(invite, Request)
    cancel = build_cancel(invite, reasons=[COMPLETED_ELSEWHERE.header_value()])
    assert cancel.headers.get_all("Reason") == ['SIP;cause=200;text="Call completed elsewhere"']
    assert parse_reasons(cancel.headers.get_all("Reason")) == [COMPLETED_ELSEWHERE]
    assert build_cancel(invite).headers.get_all("Reason") == []
    assert Reason("Q.850", 16, 'say "hi"').header_value() == 'Q.850;cause=16;text="say \\"hi\\""'


def test_described_for_people() -> None:
    assert describe(parse_reasons(['Q.850;cause=16;text="Normal call clearing", SIP;cause=200'])) == \
        "Q.850 cause 16 (Normal call clearing); SIP cause 200"
    assert describe([]) is None
