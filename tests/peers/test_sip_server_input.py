"""Issue 11, input from servers: bad header values are the server's fault and say so, a
Latin-1 realm is hashed as sent, a malformed message mid-flow is dropped and noted, floods
neither hide the answer nor stretch the deadline nor eat memory, TLS that never shakes hands
says so, and ``rtt`` is the ladder's.

The servers are a thread with a raw socket (``rawsip.py``): no real program misbehaves like
this on demand."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time

import pytest

from rawsip import response, silent_tcp_server, udp_server
from skinnysip.probes.sip import ProbeRequest, digest_auth, invite, operation_budget, options, register

pytestmark = pytest.mark.peer


def _req(port: int, **kw: object) -> ProbeRequest:
    return ProbeRequest(host="127.0.0.1", port=port, timeout=float(kw.pop("timeout", 3.0)), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ bad header values


@pytest.mark.parametrize(("header", "says"), [
    ("Expires: \u00b2", "bad Expires value '²': not a number 0..4294967295"),
    ("Expires: \u0663", "bad Expires value '٣': not a number 0..4294967295"),
    ("Expires: " + "9" * 5000, "bad Expires value '99999999999999999999'… (5000 characters): not a number"
                                " 0..4294967295"),
    ("Expires: 4294967296", "bad Expires value 4294967296: larger than 4294967295"),
])
def test_bad_expires_is_the_servers_fault_naming_the_header(header: str, says: str) -> None:
    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, "200 OK", extra=header.encode().decode("latin-1") + "\r\n")]  # UTF-8 on the wire

    with udp_server(reply) as (port, _):
        result = asyncio.run(register(_req(port)))
    assert result.success is False and result.status_code == 200
    assert result.error == f"malformed message from the server 127.0.0.1:{port}/udp: {says}"
    assert "invalid literal" not in result.error and "int" not in result.error.split()


def test_unicode_digits_are_not_numbers_anywhere_in_the_core() -> None:
    from skinnysip.sip.message import parse_message
    from skinnysip.sip.syntax import SIPParseError, parse_uint, uint_or_none
    from skinnysip.sip.transaction import Flow
    from skinnysip.sip.transactions import response_flow

    assert [uint_or_none(v) for v in ("\u00b2", "\u0663", "\uff11\uff12", "7", " 42 ", "")] == [
        None, None, None, 7, 42, None]
    assert uint_or_none("70000", 65535) is None and parse_uint("0" * 25 + "5", "RSeq") == 5
    with pytest.raises(SIPParseError, match="bad RSeq value '１２': not a number"):
        parse_uint("\uff11\uff12", "RSeq")
    request = ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport=\u00b2;branch=z9hG4bK1\r\n"
               "CSeq: \u00b2 OPTIONS\r\nCall-ID: x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\r\n").encode()
    msg = parse_message(request)
    with pytest.raises(SIPParseError, match="bad CSeq"):
        msg.cseq  # noqa: B018
    with pytest.raises(SIPParseError, match="bad rport"):
        msg.vias  # noqa: B018
    flow = Flow("udp", ("10.0.0.1", 5060))
    assert response_flow(msg, flow) == flow  # the unusable Via is ignored, no int('²')


def test_unicode_digits_and_huge_numbers_in_sdp() -> None:
    from skinnysip.sdp import SDPParseError, SessionDescription

    base = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    for port in ("\u00b2", "9" * 5000, "70000"):
        with pytest.raises(SDPParseError, match="media port"):
            SessionDescription.parse(f"{base}m=audio {port} RTP/AVP 0\r\n".encode())
    sd = SessionDescription.parse(f"{base}m=audio 4000 RTP/AVP \u0663\r\na=rtpmap:\u0663 PCMU/8000\r\n".encode())
    assert sd.media[0].payload_types == [] and sd.media[0].rtpmaps() == {}  # '٣' is no payload type


# ------------------------------------------------------------------ digest with a Latin-1 realm

REALM = b"sip.c\xfcbercity.dk"
NONCE = b"n\xe9once-42"


def test_latin1_realm_is_hashed_and_echoed_as_the_server_sent_it() -> None:
    """RFC 7616 §3.4: the realm's quoted-string octets go into A1 unchanged; the
    Authorization echoes them byte for byte. The server here checks the hash itself."""
    checked: list[bytes] = []

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        head = data.split(b"\r\n\r\n", 1)[0]
        auth = re.search(rb"^Authorization: ([^\r\n]*)", head, re.M)
        if auth is None:
            challenge = b'WWW-Authenticate: Digest realm="' + REALM + b'", nonce="' + NONCE + b'", qop="auth"\r\n'
            return [response(f, "401 Unauthorized", extra=challenge.decode("latin-1"))]
        value = auth.group(1)
        params = dict(re.findall(rb'(\w+)="?([^",]*)"?', value))
        checked.append(value)
        ha1 = hashlib.md5(b"alice:" + REALM + b":secret").hexdigest()
        ha2 = hashlib.md5(b"REGISTER:" + params[b"uri"]).hexdigest()
        expected = hashlib.md5(f"{ha1}:".encode() + NONCE + b":" + params[b"nc"] + b":" + params[b"cnonce"]
                               + b":auth:" + ha2.encode()).hexdigest().encode()
        ok = params[b"realm"] == REALM and params[b"nonce"] == NONCE and params[b"response"] == expected
        return [response(f, "200 OK" if ok else "403 Wrong Hash")]

    with udp_server(reply) as (port, _):
        result = asyncio.run(digest_auth(_req(port, username="alice", password="secret", expires=0)))
    assert result.error is None and result.authenticated, result.status_text
    assert checked and b'realm="' + REALM + b'"' in checked[0] and b'nonce="' + NONCE + b'"' in checked[0]
    assert result.realm == REALM.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ a malformed message mid-flow


def test_response_without_cseq_while_waiting_for_the_byes_200_is_dropped_and_noted() -> None:
    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if f["method"] == "INVITE":
            return [response(f, "200 OK", extra="Contact: <sip:srv@127.0.0.1>\r\n")]
        if f["method"] == "BYE":
            # RFC 3261 §18.1.2: a response without CSeq is malformed and must be dropped
            return [response(f, "200 OK", omit=("CSeq",)), response(f, "200 OK")]
        return []

    with udp_server(reply) as (port, received):
        result = asyncio.run(invite(_req(port)))
    assert result.success, result.error
    assert result.cleanup == "ack+bye" and result.status_code == 200
    notes = [m.summary for m in result.exchange if m.direction == "received"]
    assert any(s.startswith("unparseable (") and "CSeq" in s for s in notes), notes
    assert [r.split(b" ", 1)[0] for r in received] == [b"INVITE", b"ACK", b"BYE"]


# ------------------------------------------------------------------ floods


def test_ten_thousand_garbage_datagrams_then_the_200() -> None:
    """The answer after a burst of garbage is still heard; the exchange stays bounded and
    says how many messages it did not keep."""
    garbage = [b"\x16\x03\x01garbage %05d " % i + b"x" * 200 for i in range(10_000)]

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [*garbage, response(f, "200 OK")]

    with udp_server(reply) as (port, _):
        result = asyncio.run(options(_req(port, timeout=5.0)))
    assert result.success and result.status_code == 200, result.error
    assert len(result.exchange) <= 1000
    # OPTIONS, 10,000 garbage datagrams and the 200 at least (more if OPTIONS was retransmitted meanwhile)
    assert result.dropped_messages >= 10_002 - len(result.exchange)
    assert result.to_api()["droppedMessages"] == result.dropped_messages
    assert len(json.dumps(result.to_api())) < 1_500_000


def test_exchange_bound_is_configurable() -> None:
    with udp_server(lambda data, f: [b"junk"] * 50 + [response(f, "200 OK")]) as (port, _):
        result = asyncio.run(options(_req(port, max_exchange_messages=10)))
        small = asyncio.run(options(_req(port, max_exchange_bytes=300)))
    assert result.success and len(result.exchange) == 10 and result.dropped_messages == 42
    assert small.success and sum(len(m.raw) for m in small.exchange) <= 300
    assert small.dropped_messages >= 2  # the OPTIONS (over 300 octets) and the 200 did not fit


def test_a_flood_of_provisionals_does_not_stretch_the_deadline() -> None:
    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if f["method"] == "INVITE":
            return [response(f, "180 Ringing", extra=f"X-N: {i}\r\n") for i in range(3000)]
        if f["method"] == "CANCEL":
            return [response(f, "200 OK")]
        return []

    with udp_server(reply) as (port, _):
        started = time.monotonic()
        result = asyncio.run(invite(_req(port, timeout=1.0)))
        took = time.monotonic() - started
    assert result.cancelled and len(result.exchange) <= 1000 and result.dropped_messages > 0
    assert took < operation_budget(_req(port, timeout=1.0), 8) + 1.0  # generous: the watchdog's bound


def test_the_watchdog_ends_an_operation_that_would_run_on() -> None:
    from skinnysip.probes import sip as probes

    async def forever(session: object, result: object) -> None:
        await asyncio.sleep(3600)

    with udp_server(lambda data, f: []) as (port, _):
        request = _req(port, timeout=0.2)
        started = time.monotonic()
        result = asyncio.run(probes._run(request, probes._new_result(probes.OptionsResult, request), forever,
                                         steps=2))
    assert time.monotonic() - started < 3.0
    assert result.success is False and result.error == "operation did not finish within 1400 ms (2 × timeout + 1 s)"


# ------------------------------------------------------------------ TLS that never completes


def test_tls_handshake_that_never_completes_says_so() -> None:
    with silent_tcp_server() as port:
        result = asyncio.run(options(_req(port, transport="tls", timeout=0.8)))
    assert result.success is False
    assert result.error == f"TLS handshake with 127.0.0.1:{port} did not complete within 800 ms"


# ------------------------------------------------------------------ rtt is the ladder's


def test_rtt_is_request_sent_to_final_response_on_the_ladder() -> None:
    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        time.sleep(0.05)
        return [response(f, "100 Trying"), response(f, "200 OK")]

    with udp_server(reply) as (port, _):
        result = asyncio.run(options(_req(port)))
    sent = next(m for m in result.exchange if m.direction == "sent")
    final = next(m for m in result.exchange if m.summary.startswith("200"))
    assert result.rtt == pytest.approx((final.time - sent.time) * 1000, abs=0.002)
    assert result.rtt >= 50
