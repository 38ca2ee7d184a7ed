"""skinnysip.sip.message: Headers, Request/Response, datagram parsing, stream framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.message import (
    COMPACT_FORMS,
    Headers,
    Request,
    Response,
    SIPParseError,
    StreamParser,
    canonical_name,
    parse_message,
    validate_message,
)

REGISTER = (
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=f1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.1:5062>\r\n"
    b"Expires: 0\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RESPONSE_401 = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa1;rport=5062;received=198.51.100.7\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=f1\r\n"
    b"To: <sip:alice@example.com>;tag=t9\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"\r\n"
    b"WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n2\", algorithm=MD5, qop=\"auth\"\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


# ------------------------------------------------------------------ Headers


@pytest.mark.parametrize(("compact", "full"), sorted(COMPACT_FORMS.items()))
def test_every_compact_form_is_expanded_on_parse_and_lookup(compact: str, full: str) -> None:
    msg = parse_message(
        b"OPTIONS sip:a@example.com SIP/2.0\r\n" + f"{compact}: 0\r\n".encode() + b"\r\n"
    )
    assert list(msg.headers) == [(full, "0")]
    assert msg.headers.get(compact) == "0"
    assert msg.headers.get(compact.upper()) == "0"
    assert msg.headers.get(full.upper()) == "0"


def test_compact_forms_cover_rfc3261_and_later_rfcs() -> None:
    assert set("imelcfsktv") | set("ourbxyajd") <= set(COMPACT_FORMS)


def test_names_are_case_insensitive_and_canonicalised() -> None:
    h = Headers([("call-id", "x"), ("CSEQ", "1 INVITE"), ("www-authenticate", "Digest a=b"),
                 ("X-Custom-thing", "kept")])
    assert [n for n, _ in h] == ["Call-ID", "CSeq", "WWW-Authenticate", "X-Custom-thing"]
    assert h.get("CALL-ID") == "x" and h.get("i") == "x"
    assert "cseq" in h and "Cseq" in h and "nope" not in h
    assert h.get("x-custom-THING") == "kept"
    assert canonical_name("record-route") == "Record-Route"
    assert canonical_name("X-Unknown") == "X-Unknown"


def test_repeated_fields_keep_wire_order() -> None:
    msg = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nRecord-Route: <sip:p1;lr>\r\n"
        b"v: SIP/2.0/TCP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3\r\n"
        b"Record-Route: <sip:p2;lr>, <sip:p3;lr>\r\nContent-Length: 0\r\n\r\n"
    )
    assert msg.headers.get_all("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/TCP b;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert [v.host for v in msg.vias] == ["a", "b", "c"]
    assert msg.headers.values("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert [n for n, _ in msg.headers] == ["Via", "Record-Route", "Via", "Record-Route", "Content-Length"]


def test_values_split_commas_outside_quotes_and_angle_brackets() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@x;p=a,b>;q=0.5, <sip:k@y>'),
                 ("Allow", "INVITE, ACK,BYE ,, CANCEL")])
    assert h.values("Contact") == ['"Doe, John" <sip:j@x;p=a,b>;q=0.5', "<sip:k@y>"]
    assert h.values("Allow") == ["INVITE", "ACK", "BYE", "CANCEL"]


def test_values_keep_non_list_fields_whole() -> None:
    h = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
                 ("Date", "Sat, 13 Nov 2010 23:29:00 GMT")])
    assert h.values("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert h.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_values_rejects_unterminated_quote() -> None:
    with pytest.raises(SIPParseError, match="quoted"):
        Headers([("Contact", '"Doe <sip:a@b>')]).values("Contact")


def test_set_remove_add() -> None:
    h = Headers([("Via", "v1"), ("To", "t"), ("Via", "v2")])
    h.set("v", "v3")
    assert list(h) == [("Via", "v3"), ("To", "t")]
    h.set("Expires", "0")
    assert list(h)[-1] == ("Expires", "0")
    h.remove("VIA")
    assert "Via" not in h and len(h) == 2
    h.add("l", "0")
    assert h.get("Content-Length") == "0"
    assert h.get("missing", "dflt") == "dflt"


# ------------------------------------------------------------------ datagrams


def test_parse_request_fields_and_properties() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.version) == ("REGISTER", "sip:registrar.example.com", "SIP/2.0")
    assert msg.call_id == "c1@192.0.2.1"
    assert msg.cseq == (1, "REGISTER")
    assert msg.from_tag == "f1" and msg.to_tag is None
    assert msg.top_via is not None and msg.top_via.rport is True and msg.top_via.port == 5062
    assert msg.summary == "REGISTER sip:registrar.example.com"
    validate_message(msg)


def test_parse_response_fields_and_properties() -> None:
    msg = parse_message(RESPONSE_401)
    assert isinstance(msg, Response)
    assert (msg.status_code, msg.reason) == (401, "Unauthorized")
    assert msg.to_tag == "t9"
    assert msg.top_via is not None and msg.top_via.received == "198.51.100.7" and msg.top_via.rport == 5062
    assert len(msg.headers.get_all("WWW-Authenticate")) == 2
    assert msg.summary == "401 Unauthorized"


def test_folded_lines_are_unfolded() -> None:
    msg = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nSubject: first\r\n  second\r\n\tthird\r\nTo:\r\n <sip:a@b>\r\n\r\n"
    )
    assert msg.headers.get("Subject") == "first second third"
    assert msg.headers.get("To") == "<sip:a@b>"


def test_content_length_frames_the_datagram_body() -> None:
    base = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Type: text/plain\r\n"
    assert parse_message(base + b"Content-Length: 5\r\n\r\nhello, and junk").body == b"hello"
    assert parse_message(base + b"\r\nrest of datagram").body == b"rest of datagram"
    with pytest.raises(SIPParseError, match="larger than"):
        parse_message(base + b"Content-Length: 50\r\n\r\nshort")
    with pytest.raises(SIPParseError, match="Content-Length"):
        parse_message(base + b"Content-Length: 5x\r\n\r\nhello")
    with pytest.raises(SIPParseError, match="several"):
        parse_message(base + b"Content-Length: 5\r\nl: 6\r\n\r\nhello!")


def test_leading_crlf_and_bare_lf_are_tolerated() -> None:
    msg = parse_message(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\nCall-ID: x\nContent-Length: 2\n\nhi")
    assert isinstance(msg, Request) and msg.call_id == "x" and msg.body == b"hi"


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    raw = b"OPTIONS sip:a@b SIP/2.0\r\nSubject: caf\xe9 \xff\x00\r\nContent-Length: 3\r\n\r\n\x00\xff\x80"
    msg = parse_message(raw)
    assert msg.to_bytes() == raw


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nTo: x\r\n", None),  # no empty line, ends with CRLF: accepted
        (b"OPTIONS sip:a@b SIP/2.0\r\nTo: x", "missing empty line"),
        (b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n", "Request-Line"),
        (b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n", "Request-Line"),
        (b"OPTIONS <sip:a@b> SIP/2.0\r\n\r\n", "Request-URI"),
        (b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n", "SIP-Version"),
        (b"OPT(IONS sip:a@b SIP/2.0\r\n\r\n", "Method"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "Status-Code"),
        (b"SIP/2.0 099 Low\r\n\r\n", "Status-Code"),
        (b"SIP/2.0 OK\r\n\r\n", "Status-Code"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n", "':'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "header name"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n", "header name"),
        (b"OPTIONS sip:user@2001:db8::1 SIP/2.0\r\n\r\n", "port"),
    ],
)
def test_malformed_messages_raise_sip_parse_error(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert parse_message(data).headers.get("To") == "x"
        return
    with pytest.raises(SIPParseError) as exc:
        parse_message(data)
    assert reason in exc.value.reason


def test_status_line_with_empty_reason_and_spaces_in_reason() -> None:
    msg = parse_message(b"SIP/2.0 180 \r\n\r\n")
    assert isinstance(msg, Response) and msg.reason == ""
    msg = parse_message(b"SIP/2.0 100 trying -- your call is important\r\n\r\n")
    assert isinstance(msg, Response) and msg.reason == "trying -- your call is important"


def test_size_cap_on_datagrams() -> None:
    with pytest.raises(SIPParseError, match="limit"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 70000 + b"\r\n\r\n")


def test_to_bytes_sets_content_length_and_keeps_order() -> None:
    req = Request("MESSAGE", "sips:bob@example.com", Headers([("Call-ID", "x"), ("l", "99")]), b"hello")
    assert req.to_bytes() == (
        b"MESSAGE sips:bob@example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    resp = Response(200, "OK", Headers([("CSeq", "1 OPTIONS")]))
    assert resp.to_bytes() == b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    assert parse_message(resp.to_bytes()) == Response(
        200, "OK", Headers([("CSeq", "1 OPTIONS"), ("Content-Length", "0")])
    )


def test_cseq_property_errors() -> None:
    with pytest.raises(SIPParseError, match="no CSeq"):
        _ = Request("OPTIONS", "sip:a@b").cseq
    with pytest.raises(SIPParseError):
        _ = Request("OPTIONS", "sip:a@b", Headers([("CSeq", "x OPTIONS")])).cseq


def test_cseq_and_top_via_follow_a_changed_header_field() -> None:
    # both are parsed once per header text and kept; a new value must be read again
    req = Request("OPTIONS", "sip:a@b", Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("CSeq", "1 OPTIONS")]))
    assert req.cseq == (1, "OPTIONS") and req.top_via is not None and req.top_via.branch == "z9hG4bK1"
    req.headers.set("CSeq", "2 OPTIONS")
    req.headers.replace_top("Via", "SIP/2.0/UDP h;branch=z9hG4bK2")
    assert req.cseq == (2, "OPTIONS") and req.top_via.branch == "z9hG4bK2"
    req.headers.set("CSeq", "x OPTIONS")
    with pytest.raises(SIPParseError):
        _ = req.cseq
    req.headers.remove("CSeq")
    with pytest.raises(SIPParseError, match="no CSeq"):
        _ = req.cseq


def test_validate_message_rules() -> None:
    good = parse_message(REGISTER)
    validate_message(good)
    for mutate, reason in [
        (lambda h: h.remove("Call-ID"), "missing Call-ID"),
        (lambda h: h.add("To", "<sip:x@y>"), "To header field appears 2 times"),
        (lambda h: h.set("CSeq", "1 INVITE"), "CSeq method"),
        (lambda h: h.set("Max-Forwards", "256"), "Max-Forwards"),
        (lambda h: h.remove("Via"), "missing Via"),
        (lambda h: h.set("Contact", "<sip:a@b>;expires=99999999999"), "expires"),
        (lambda h: h.set("From", '"unterminated <sip:a@b>'), "quoted"),
    ]:
        msg = parse_message(REGISTER)
        mutate(msg.headers)
        with pytest.raises(SIPParseError) as exc:
            validate_message(msg)
        assert reason in exc.value.reason
    star = parse_message(REGISTER)
    star.headers.set("Contact", "*")
    validate_message(star)


# ------------------------------------------------------------------ streams


def test_stream_byte_by_byte_and_several_per_read() -> None:
    body_msg = Request("MESSAGE", "sip:b@x", Headers([("Call-ID", "m")]), b"0123456789" * 30).to_bytes()
    wire = REGISTER + RESPONSE_401 + body_msg
    p = StreamParser()
    got = []
    for i in range(len(wire)):
        got += p.feed(wire[i:i + 1])
    assert [m.summary for m in got] == ["REGISTER sip:registrar.example.com", "401 Unauthorized", "MESSAGE sip:b@x"]
    assert got[2].body == b"0123456789" * 30
    p2 = StreamParser()
    assert [m.to_bytes() for m in p2.feed(wire)] == [parse_message(x).to_bytes() for x in (REGISTER, RESPONSE_401, body_msg)]


def test_stream_keeps_partial_message_and_skips_keepalives() -> None:
    p = StreamParser()
    assert p.feed(b"\r\n\r\n") == []  # RFC 5626 ping
    assert p.feed(REGISTER[:50]) == []
    assert p.buffered == 50
    out = p.feed(REGISTER[50:] + b"\r\n" + RESPONSE_401[:10])
    assert len(out) == 1 and p.buffered == 10


def test_stream_requires_content_length() -> None:
    p = StreamParser()
    with pytest.raises(SIPParseError, match="Content-Length"):
        p.feed(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
    with pytest.raises(SIPParseError, match="already failed"):
        p.feed(REGISTER)


def test_stream_caps_header_and_body_size() -> None:
    p = StreamParser(max_message_size=1000)
    with pytest.raises(SIPParseError, match="header section"):
        for _ in range(20):
            p.feed(b"X-Filler: " + b"a" * 90 + b"\r\n")
    p = StreamParser(max_message_size=1000)
    with pytest.raises(SIPParseError, match="exceeds"):
        p.feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")


# ------------------------------------------------------------------ robustness


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SIPParseError:
        return
    parse_message(msg.to_bytes())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 200 OK", b"\r\n", b"\n", b" ", b":", b"Content-Length: 3",
    b"l: 0", b"l: -1", b"v: SIP/2.0/UDP h", b"Via:", b";", b",", b"\"", b"<", b">", b"\t", b"\xff", b"x",
]), max_size=40), st.integers(1, 16))
def test_sip_like_fragments_on_streams_raise_only_sip_parse_error(parts: list[bytes], chunk: int) -> None:
    data = b"".join(parts)
    try:
        parse_message(data)
    except SIPParseError:
        pass
    p = StreamParser(max_message_size=512)
    try:
        for i in range(0, len(data), chunk):
            for msg in p.feed(data[i:i + chunk]):
                msg.to_bytes()
    except SIPParseError:
        pass


def test_the_parsed_top_via_and_cseq_follow_every_change_of_the_fields() -> None:
    # both are cached per field list; every way the fields change must show
    msg = parse_message(
        b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa\r\n"
        b"From: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n")
    assert msg.top_via is not None and msg.top_via.branch == "z9hG4bKa" and msg.cseq == (1, "REGISTER")
    msg.headers.add("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKlower")  # a second field: the top stays
    msg.headers.add("CSeq", "9 REGISTER")
    assert msg.top_via.branch == "z9hG4bKa" and msg.cseq == (1, "REGISTER")
    msg.headers.replace_top("Via", "SIP/2.0/TCP 192.0.2.2;branch=z9hG4bKb")
    msg.headers.set("CSeq", "2 REGISTER")
    assert msg.top_via.branch == "z9hG4bKb" and msg.top_via.transport == "TCP" and msg.cseq == (2, "REGISTER")
    msg.headers.remove("Via")
    assert msg.top_via is None
    msg.headers = Headers([("Via", "SIP/2.0/UDP 192.0.2.3;branch=z9hG4bKc"), ("CSeq", "3 OPTIONS")])
    assert msg.top_via is not None and msg.top_via.branch == "z9hG4bKc" and msg.cseq == (3, "OPTIONS")
    msg.headers.remove("CSeq")
    with pytest.raises(SIPParseError, match="no CSeq"):
        msg.cseq  # noqa: B018


def test_a_built_request_knows_its_cseq_and_a_resent_one_the_next() -> None:
    from skinnysip.sip.request import new_request, resend_request
    from skinnysip.sip.uri import NameAddr

    aor = NameAddr.parse("<sip:a@example.test>")
    request = new_request("REGISTER", "sip:example.test", from_=aor, to=aor,
                          via="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa", cseq=41,
                          route_set=["<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"])
    assert request.cseq == (41, "REGISTER") and request.headers.get("CSeq") == "41 REGISTER"
    request.headers.add("Authorization", 'Digest username="a"')
    retry = resend_request(request, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb")
    assert retry.cseq == (42, "REGISTER") and retry.headers.get("CSeq") == "42 REGISTER"
    assert "Authorization" not in retry.headers and retry.top_via is not None and retry.top_via.branch == "z9hG4bKb"
    assert [name for name, _ in retry.headers][:3] == ["Via", "Route", "Route"]
    # a number past 32 bits is not taken on trust: the parse says what is wrong
    odd = new_request("REGISTER", "sip:example.test", from_=aor, to=aor, via="SIP/2.0/UDP h;branch=z9hG4bKc",
                      cseq=2**32)
    with pytest.raises(SIPParseError, match="larger than"):
        odd.cseq  # noqa: B018


_FIELDS = st.lists(st.sampled_from([
    ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP a;branch=z9hG4bK2, SIP/2.0/UDP b"),
    ("CSeq", "7 REGISTER"), ("CSeq", "8 REGISTER"), ("Authorization", 'Digest username="a"'),
    ("Proxy-Authorization", 'Digest username="b"'), ("Route", "<sip:p;lr>"), ("Expires", "60"),
    ("Contact", "<sip:a@192.0.2.1>"), ("X-Extra", "1"),
]), max_size=9)


@settings(max_examples=300, deadline=None)
@given(_FIELDS, st.booleans())
def test_resend_request_writes_the_fields_as_the_header_operations_would(fields: list[tuple[str, str]],
                                                                         next_cseq: bool) -> None:
    from skinnysip.sip.headers import parse_cseq
    from skinnysip.sip.request import resend_request

    if not any(name == "CSeq" for name, _ in fields):
        fields = [*fields, ("CSeq", "7 REGISTER")]
    request = Request("REGISTER", "sip:example.test", Headers(fields))
    via = "SIP/2.0/UDP 192.0.2.5;rport;branch=z9hG4bKnew"
    expected = request.headers.copy()  # the reference: the Headers operations one by one
    expected.remove("Authorization")
    expected.remove("Proxy-Authorization")
    expected.replace_top("Via", via)
    if next_cseq:
        number, method = request.cseq
        expected.set("CSeq", f"{number + 1} {method}")
    retry = resend_request(request, via, next_cseq=next_cseq)
    assert list(retry.headers) == list(expected)
    assert retry.cseq == parse_cseq(retry.headers.get("CSeq") or "")


@pytest.mark.parametrize("routes", [0, 1, 2])
@pytest.mark.parametrize("contact", [False, True])
@pytest.mark.parametrize("user_agent", [False, True])
def test_a_built_request_finds_each_field_as_headers_added_one_by_one_would(routes: int, contact: bool,
                                                                            user_agent: bool) -> None:
    from skinnysip.sip.request import new_request
    from skinnysip.sip.uri import NameAddr

    aor = NameAddr.parse("<sip:a@example.test>")
    extra = [("Expires", "60"), ("Contact", "<sip:other@192.0.2.7>"), ("Via", "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKx")]
    for _ in range(2):  # the second time from the memo of positions
        request = new_request("REGISTER", "sip:example.test", from_=aor, to=aor,
                              via="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa",
                              route_set=[f"<sip:p{i}.example.test;lr>" for i in range(routes)],
                              contact=NameAddr.parse("<sip:a@192.0.2.1>") if contact else None,
                              user_agent="ua/1" if user_agent else None, headers=extra)
        reference = Headers(list(request.headers))
        for name in ("Via", "Route", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "User-Agent",
                     "Expires", "X-None"):
            assert request.headers.get(name) == reference.get(name), name
            assert request.headers.get_all(name) == reference.get_all(name), name
