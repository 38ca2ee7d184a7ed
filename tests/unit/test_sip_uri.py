"""skinnysip.sip.uri: SIP/SIPS/tel URIs and name-addr (RFC 3261 §19.1, §20.10, §25.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.message import SIPParseError
from skinnysip.sip.uri import NameAddr, SipURI, parse_uri


def test_full_sips_uri() -> None:
    u = SipURI.parse("sips:alice%40home:pw@[2001:db8::1]:5061;transport=TCP;lr?Subject=hi&Priority=urgent")
    assert u.scheme == "sips" and u.user == "alice@home" and u.password == "pw"
    assert u.host == "2001:db8::1" and u.port == 5061
    assert u.params == {"transport": "TCP", "lr": None} and u.transport == "tcp"
    assert u.headers == {"Subject": "hi", "Priority": "urgent"}
    assert str(u) == "sips:alice%40home:pw@[2001:db8::1]:5061;transport=TCP;lr?Subject=hi&Priority=urgent"


@pytest.mark.parametrize(
    "text",
    [
        "sip:example.com",
        "sip:bob@192.0.2.4:5060",
        "sip:[::1]",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice;day=tuesday@atlanta.com",
        "sips:1212@gateway.com",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "tel:+1-201-555-0123;phone-context=example.com",
    ],
)
def test_round_trip(text: str) -> None:
    u = SipURI.parse(text)
    assert SipURI.parse(str(u)) == u


def test_escapes_in_user_part_are_decoded_and_reencoded() -> None:
    u = SipURI.parse("sip:sips%3Auser%40example.com@example.net")
    assert u.user == "sips:user@example.com"
    assert str(u) == "sip:sips%3Auser%40example.com@example.net"
    assert SipURI.parse("sip:%61lice@atlanta.com").user == "alice"
    assert SipURI.parse("sip:caf%C3%A9@x").user == "café"
    assert str(SipURI(user="a b", host="x")) == "sip:a%20b@x"


def test_host_without_brackets_in_model() -> None:
    assert str(SipURI(host="::1", port=5060)) == "sip:[::1]:5060"
    assert SipURI.parse("sip:[2001:db8::10:5070]").port is None  # RFC 5118 §4.3


def test_tel_uri() -> None:
    u = SipURI.parse("tel:+358-555-1234567;postd=pp22")
    assert (u.scheme, u.user, u.host, u.params) == ("tel", "+358-555-1234567", "", {"postd": "pp22"})
    assert str(u) == "tel:+358-555-1234567;postd=pp22"


@pytest.mark.parametrize(
    "text",
    ["http://example.com", "sip:", "sip:@host", "sip:user@", "sip:host:port", "sip:host:70000",
     "sip:[::1", "sip:[zz::1]", "sip:host;", "sip:host;a;;b", "sip:us er@host", "sip:a%zz@h",
     "sip:h?noequals", "nocolon", "tel:xyz"],
)
def test_bad_uris_raise(text: str) -> None:
    with pytest.raises(SIPParseError):
        SipURI.parse(text)


def test_parse_uri_keeps_other_schemes_as_text() -> None:
    assert parse_uri("urn:service:sos") == "urn:service:sos"
    assert isinstance(parse_uri("SIP:a@b"), SipURI)
    with pytest.raises(SIPParseError):
        parse_uri("no scheme here")


def test_name_addr_forms() -> None:
    a = NameAddr.parse('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert a.display_name == 'J Rosenberg \\"' and a.tag == "98asjd8"
    assert isinstance(a.uri, SipURI) and a.uri.user == "jdrosen"
    assert NameAddr.parse(str(a)) == a
    b = NameAddr.parse("caller<sip:caller@example.com>;tag=323")  # no LWS before '<' (RFC 4475 §3.1.1.6)
    assert b.display_name == "caller" and b.tag == "323"
    c = NameAddr.parse("sip:user@example.com;tag=1;unknownparam")  # addr-spec: params are header params
    assert c.display_name is None and c.params == {"tag": "1", "unknownparam": None}
    assert isinstance(c.uri, SipURI) and c.uri.params == {}
    d = NameAddr.parse("<sip:user@example.com;unknownparam>;expires=60")
    assert isinstance(d.uri, SipURI) and d.uri.params == {"unknownparam": None} and d.params == {"expires": "60"}
    e = NameAddr.parse("<http://www.example.com>")
    assert e.uri == "http://www.example.com"
    assert str(NameAddr(None, SipURI(user="a", host="b"), {"tag": "x"})) == "<sip:a@b>;tag=x"


@pytest.mark.parametrize(
    "text",
    ['"unterminated <sip:a@b>', "<sip:a@b", '"x" sip:a@b', "sip:a@b?Route=x", "<sip:a@b>;;",
     "<sip:a@b>;tag=1 junk", "", "a\"b <sip:a@b>"],
)
def test_bad_name_addr_raises(text: str) -> None:
    with pytest.raises(SIPParseError):
        NameAddr.parse(text)


_URI_CHARS = st.text(alphabet="sip:@[];?=&%0123456789abcdefABCDEF.-_ <>\"\\,tel+", max_size=60)


@settings(max_examples=800, deadline=None)
@given(st.one_of(_URI_CHARS, st.text(max_size=60)))
def test_uri_and_name_addr_raise_only_sip_parse_error(text: str) -> None:
    for parse in (SipURI.parse, NameAddr.parse):
        try:
            value = parse(text)
        except SIPParseError:
            continue
        again = parse(str(value))
        assert str(again) == str(value)
