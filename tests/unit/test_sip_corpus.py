"""The byte-exact SIP corpus (RFC 4475, RFC 5118, 40 real captures) through the parser.

* every ``real/`` message and every RFC 4475 / RFC 5118 message marked ``valid: true``
  parses, passes :func:`validate_message`, and re-serializes to an equivalent message;
* every ``valid: false`` message is rejected by :func:`parse_message`, by
  :func:`validate_message`, or is accepted where RFC 4475 says a parser may accept it —
  the table ``INVALID`` below says which, and why;
* nothing but :class:`SIPParseError` escapes, also on mutated corpus messages (hypothesis).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinnysip.sdp import SDPParseError, SessionDescription
from skinnysip.sip.message import (
    Request,
    Response,
    SIPParseError,
    StreamParser,
    parse_message,
    validate_message,
)
from skinnysip.sip.uri import NameAddr, SipURI

# The corpus lives in the repository (tests/data/sip-corpus, copied with its SOURCES.md from
# the project's shared corpus), so a fresh clone runs every corpus test. A missing corpus is a
# failure, never a skip.
CORPUS = Path(__file__).parents[1] / "data" / "sip-corpus"
assert (CORPUS / "rfc4475" / "index.json").is_file(), f"SIP corpus missing at {CORPUS}"
assert (CORPUS / "SOURCES.md").is_file(), f"SIP corpus without its SOURCES.md at {CORPUS}"


def _load(folder: str) -> dict[str, tuple[dict, bytes]]:
    index = json.loads((CORPUS / folder / "index.json").read_text())
    out = {}
    for name, meta in index.items():
        data = (CORPUS / folder / f"{name}.sip").read_bytes()
        if folder == "rfc5118":
            data = data.replace(b"\n", b"\r\n")  # published with LF line ends; SIP uses CRLF
        out[name] = (meta, data)
    return out


REAL = _load("real")
RFC4475 = _load("rfc4475")
RFC5118 = _load("rfc5118")

# ipv6-in-sdp: the archive's Content-Length (268) does not match its body (242 octets
# with LF, 251 with CRLF; the corpus README notes it). On a datagram RFC 3261 §18.3 makes
# that an error, so it is tested separately below with the length corrected.
VALID = (
    [("real", n, d) for n, (_, d) in REAL.items()]
    + [("rfc4475", n, d) for n, (m, d) in RFC4475.items() if m["valid"]]
    + [("rfc5118", n, d) for n, (m, d) in RFC5118.items() if m["valid"] and n != "ipv6-in-sdp"]
)

# name -> (where it is rejected: "parse" | "validate" | "accepted", why)
INVALID: dict[str, tuple[str, str]] = {
    "badinv01": ("validate", "empty ';;' parameters in Via/Contact are not generic-params (§3.1.2.1: 400)"),
    "clerr": ("parse", "datagram shorter than Content-Length: RFC 3261 §18.3 error (on a stream: wait)"),
    "ncl": ("parse", "Content-Length -999 is not 1*DIGIT"),
    "scalar02": ("validate", "CSeq number above 2**32-1 (§3.1.2.4: 400)"),
    "scalarlg": ("validate", "response with CSeq above 2**32-1 is discarded (§3.1.2.5)"),
    "quotbal": ("validate", "unterminated quoted display name in To (§3.1.2.6: 400)"),
    "ltgtruri": ("parse", "Request-URI enclosed in <> is not a Request-URI (§3.1.2.7)"),
    "lwsruri": ("parse", "LWS inside the Request-URI gives 4 Request-Line elements (§3.1.2.8)"),
    "lwsstart": ("parse", "several SP between Request-Line elements (§3.1.2.9)"),
    "trws": ("parse", "SP after SIP-Version on the Request-Line (§3.1.2.10)"),
    "escruri": ("accepted", "§3.1.2.11 lets an element ignore the escaped headers; they stay in SipURI.headers"),
    "baddate": ("accepted", "§3.1.2.12: a UA may ignore a bad Date value; the parser does not interpret Date"),
    "regbadct": ("validate", "SIP URI with '?' headers outside <> (RFC 3261 §20; §3.1.2.13: 400)"),
    "badaspec": ("accepted", "§3.1.2.14 allows liberal parsing of spaces inside <...>"),
    "baddn": ("validate", "unquoted comma in the From display name makes two From values (§3.1.2.15: 400)"),
    "badvers": ("accepted", "parses with version SIP/7.0; a UAS answers 505 (RFC 3261 §21.5.6, RFC 4475 §3.1.2.16)"),
    "mismatch01": ("validate", "CSeq method differs from the Request-Line method (§3.1.2.17: 400)"),
    "mismatch02": ("validate", "CSeq method differs from the unknown Request-Line method (§3.1.2.18: 400)"),
    "bigcode": ("parse", "Status-Code must be exactly three digits (§3.1.2.19)"),
    "insuf": ("validate", "Call-ID, From and To are missing (§3.3.1: 400)"),
    "multi01": ("validate", "two Call-ID/To/From/CSeq/Max-Forwards values (§3.3.8: 400)"),
    "mcl01": ("parse", "two different Content-Length values: framing undefined (§3.3.9)"),
    "ipv6-bad": ("parse", "IPv6 address without [] in the Request-URI (RFC 5118 §4.2)"),
}


def _invalid_cases() -> list[tuple[str, str, bytes]]:
    cases = [("rfc4475", n, d) for n, (m, d) in RFC4475.items() if not m["valid"]]
    cases += [("rfc5118", n, d) for n, (m, d) in RFC5118.items() if not m["valid"]]
    return cases


def _assert_equivalent(a: Request | Response, b: Request | Response) -> None:
    assert type(a) is type(b)
    if isinstance(a, Request):
        assert isinstance(b, Request)
        assert (a.method, a.uri, a.version) == (b.method, b.uri, b.version)
    else:
        assert isinstance(b, Response)
        assert (a.status_code, a.reason, a.version) == (b.status_code, b.reason, b.version)
    strip = [(n, v) for n, v in a.headers if n != "Content-Length"]
    assert strip == [(n, v) for n, v in b.headers if n != "Content-Length"]
    assert a.body == b.body


def test_corpus_is_complete() -> None:
    assert len(REAL) == 40 and len(RFC4475) == 49 and len(RFC5118) == 12
    names = {n for _, n, _ in _invalid_cases()}
    assert names == set(INVALID), "every invalid message needs a documented outcome"


@pytest.mark.parametrize(("folder", "name", "data"), VALID, ids=[f"{f}/{n}" for f, n, _ in VALID])
def test_valid_message_parses_validates_and_round_trips(folder: str, name: str, data: bytes) -> None:
    msg = parse_message(data)
    validate_message(msg)
    again = parse_message(msg.to_bytes())
    _assert_equivalent(msg, again)
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert again.to_bytes() == msg.to_bytes()
    # the structured views work on every valid message
    assert msg.cseq[0] >= 0 and msg.call_id
    assert msg.vias and msg.top_via == msg.vias[0]
    NameAddr.parse(msg.headers.get("From") or "")
    if folder == "real":
        meta = REAL[name][0]
        assert msg.summary.split(" ")[0] == meta["start_line"].split(" ")[0 if isinstance(msg, Request) else 1]


@pytest.mark.parametrize(("folder", "name", "data"), VALID, ids=[f"{f}/{n}" for f, n, _ in VALID])
def test_valid_message_frames_on_a_stream_byte_by_byte(folder: str, name: str, data: bytes) -> None:
    msg = parse_message(data)
    wire = msg.to_bytes()  # Content-Length is mandatory on streams; to_bytes() provides it
    parser = StreamParser()
    got: list[Request | Response] = []
    for i in range(len(wire)):
        got += parser.feed(wire[i:i + 1])
    assert len(got) == 1 and parser.buffered == 0
    _assert_equivalent(msg, got[0])


def test_real_messages_are_reproduced_line_for_line() -> None:
    """Serialization keeps every line; only header-name case and space after ':' normalise."""

    def norm(raw: bytes) -> list[str]:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        out = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(":")
            out.append(f"{name.strip().lower()}:{value.strip()}")
        return out + [body.decode("latin-1")]

    exact = 0
    for name, (_, data) in REAL.items():
        out = parse_message(data).to_bytes()
        assert norm(out) == norm(data), name
        exact += out == data
    assert exact >= 30  # most captures already use the canonical 'Name: value' form


@pytest.mark.parametrize(("folder", "name", "data"), _invalid_cases(), ids=[n for _, n, _ in _invalid_cases()])
def test_invalid_message_is_handled_as_the_rfc_says(folder: str, name: str, data: bytes) -> None:
    where, why = INVALID[name]
    if where == "parse":
        with pytest.raises(SIPParseError) as exc:
            parse_message(data)
        assert exc.value.reason
        return
    msg = parse_message(data)
    if where == "validate":
        with pytest.raises(SIPParseError) as exc:
            validate_message(msg)
        assert exc.value.reason
        return
    validate_message(msg)  # accepted
    if name == "escruri":
        assert isinstance(msg, Request)
        assert "Route" in SipURI.parse(msg.uri).headers
    elif name == "badvers":
        assert msg.version == "SIP/7.0"
    elif name == "badaspec":
        to = NameAddr.parse(msg.headers.get("To") or "")
        assert isinstance(to.uri, SipURI) and to.uri.host == "example.org"


def test_rfc4475_specific_semantics() -> None:
    wsinv = parse_message(RFC4475["wsinv"][1])
    assert isinstance(wsinv, Request)
    assert wsinv.cseq == (9, "INVITE")
    assert wsinv.headers.get("Subject") == ""
    assert [v.branch for v in wsinv.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert wsinv.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    contact = NameAddr.parse(wsinv.headers.get("m") or "")
    assert contact.display_name == 'Quoted string ""' and contact.params["q"] == "0.33"
    # esc02: RE%47IST%45R is an unknown method; C%6Fntact is an unknown header
    esc02 = parse_message(RFC4475["esc02"][1])
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert len(esc02.headers.values("Contact")) == 2 and "C%6Fntact" in esc02.headers
    # escnull: the two Contacts differ only by an escaped NUL
    escnull = parse_message(RFC4475["escnull"][1])
    users = [NameAddr.parse(v).uri.user for v in escnull.headers.values("Contact")]  # type: ignore[union-attr]
    assert users == ["\x00", "\x00\x00"]
    to = NameAddr.parse(escnull.headers.get("To") or "")
    assert isinstance(to.uri, SipURI) and to.uri.user == "null-\x00-null"
    assert str(to.uri) == "sip:null-%00-null@example.com"
    # dblreq: the INVITE after Content-Length: 0 is ignored
    dblreq = parse_message(RFC4475["dblreq"][1])
    assert isinstance(dblreq, Request) and dblreq.method == "REGISTER" and dblreq.body == b""
    # semiuri: the ';' belongs to the user part
    semi = parse_message(RFC4475["semiuri"][1])
    assert isinstance(semi, Request)
    assert SipURI.parse(semi.uri).user == "user;par=u@example.net"
    # transports: unknown transport tokens are kept
    transports = parse_message(RFC4475["transports"][1])
    assert {v.transport for v in transports.vias} == {"UDP", "SCTP", "TLS", "UNKNOWN", "TCP"}
    # noreason / unreason
    assert parse_message(RFC4475["noreason"][1]).summary == "100"
    unreason = parse_message(RFC4475["unreason"][1])
    assert isinstance(unreason, Response) and "=" in unreason.reason
    # unkscm / novelsc: unknown schemes parse, as opaque URIs
    unkscm = parse_message(RFC4475["unkscm"][1])
    assert isinstance(unkscm, Request) and unkscm.uri == "nobodyKnowsThisScheme:totallyopaquecontent"
    # cparam01 vs cparam02: header parameter vs URI parameter
    c1 = NameAddr.parse(parse_message(RFC4475["cparam01"][1]).headers.get("Contact") or "")
    c2 = NameAddr.parse(parse_message(RFC4475["cparam02"][1]).headers.get("Contact") or "")
    assert "unknownparam" in c1.params
    assert isinstance(c2.uri, SipURI) and "unknownparam" in c2.uri.params and "unknownparam" not in c2.params
    # mpart01: binary body octets intact
    mpart = parse_message(RFC4475["mpart01"][1])
    assert len(mpart.body) == int(mpart.headers.get("Content-Length") or -1)


def test_rfc4475_clerr_waits_on_a_stream() -> None:
    """§3.1.2.2: on a stream a too-large Content-Length means 'wait for more octets'."""
    parser = StreamParser()
    assert parser.feed(RFC4475["clerr"][1]) == []
    assert parser.buffered == len(RFC4475["clerr"][1])


def test_rfc4475_mcl01_fails_a_stream() -> None:
    parser = StreamParser()
    with pytest.raises(SIPParseError):
        parser.feed(RFC4475["mcl01"][1])


def test_rfc5118_ipv6_references() -> None:
    good = parse_message(RFC5118["ipv6-good"][1])
    assert isinstance(good, Request)
    assert SipURI.parse(good.uri).host == "2001:db8::10"
    amb = parse_message(RFC5118["port-ambiguous"][1])
    assert isinstance(amb, Request)
    assert (SipURI.parse(amb.uri).host, SipURI.parse(amb.uri).port) == ("2001:db8::10:5070", None)
    unamb = parse_message(RFC5118["port-unambiguous"][1])
    assert isinstance(unamb, Request)
    assert (SipURI.parse(unamb.uri).host, SipURI.parse(unamb.uri).port) == ("2001:db8::10", 5070)
    with_delim = parse_message(RFC5118["via-received-param-with-delim"][1]).top_via
    no_delim = parse_message(RFC5118["via-received-param-no-delim"][1]).top_via
    assert with_delim is not None and with_delim.received == "[2001:db8::9:255]"
    assert no_delim is not None and no_delim.received == "2001:db8::9:255"
    mixed = parse_message(RFC5118["mult-ip-in-header"][1])
    assert any(":" in v.host for v in mixed.vias) and any("." in v.host for v in mixed.vias)
    three = parse_message(RFC5118["ipv6-bug-abnf-3-colons"][1])
    assert isinstance(three, Request) and SipURI.parse(three.uri).host == "2001:db8:::192.0.2.1"


def test_rfc5118_ipv6_in_sdp_with_corrected_length() -> None:
    data = RFC5118["ipv6-in-sdp"][1]
    with pytest.raises(SIPParseError, match="Content-Length 268"):
        parse_message(data)  # archive length is wrong (see VALID above)
    head, _, body = data.partition(b"\r\n\r\n")
    fixed = head.replace(b"Content-Length: 268", b"Content-Length: %d" % len(body)) + b"\r\n\r\n" + body
    msg = parse_message(fixed)
    validate_message(msg)
    sdp = SessionDescription.parse(msg.body)
    assert sdp.origin.addrtype == "IP6" and sdp.connection is not None
    assert sdp.connection.address == "2001:db8::20"


def test_whole_corpus_as_one_tcp_stream_in_random_chunks() -> None:
    wires = [parse_message(d).to_bytes() for _, _, d in VALID]
    stream = b"\r\n\r\n".join(wires)  # with RFC 5626 double-CRLF keep-alives between
    rng = random.Random(4475)
    parser = StreamParser()
    got: list[Request | Response] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 700)
        got += parser.feed(stream[pos:pos + step])
        pos += step
    assert len(got) == len(wires)
    assert [m.to_bytes() for m in got] == wires


# ------------------------------------------------------------------ robustness (hypothesis)

_ALL = [d for _, d in REAL.values()] + [d for _, d in RFC4475.values()] + [d for _, d in RFC5118.values()]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_ALL)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "crlf"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 80))]
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n ", b";", b",", b"\"", b"<", b":"]))
    return bytes(data)


def _only_parse_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SIPParseError as exc:
        assert exc.reason
        return
    # whatever parsed must survive the structured accessors and a round trip
    for view in (validate_message, lambda m: m.vias, lambda m: m.from_tag, lambda m: m.to_tag,
                 lambda m: m.cseq):
        try:
            view(msg)
        except SIPParseError:
            pass
    if isinstance(msg, Request):
        try:
            SipURI.parse(msg.uri)
        except SIPParseError:
            pass
    for name in ("Contact", "Route", "Record-Route", "To"):
        try:
            for item in msg.headers.values(name):
                str(NameAddr.parse(item))
        except SIPParseError:
            pass
    try:
        SessionDescription.parse(msg.body)
    except SDPParseError:
        pass
    again = parse_message(msg.to_bytes())
    assert again.body == msg.body


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_raises_only_sip_parse_error(data: bytes) -> None:
    _only_parse_errors(data)


@settings(max_examples=300, deadline=None)
@given(mutated(), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_mutated_corpus_on_a_stream_raises_only_sip_parse_error(data: bytes, cuts: list[int]) -> None:
    parser = StreamParser(max_message_size=4096)
    pos = 0
    try:
        for cut in cuts * 100:
            if pos >= len(data):
                break
            for msg in parser.feed(data[pos:pos + cut]):
                msg.to_bytes()
            pos += cut
    except SIPParseError as exc:
        assert exc.reason
