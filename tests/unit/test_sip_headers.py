"""skinnysip.sip.headers: Via (RFC 3261 §20.42, RFC 3581, RFC 5118) and CSeq."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.headers import Via, parse_cseq, parse_params, parse_warning, split_comma
from skinnysip.sip.message import Headers, SIPParseError, canonical_name


def test_via_fields() -> None:
    v = Via.parse("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK776asdhds;rport=5062;received=198.51.100.2")
    assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0", "UDP", "192.0.2.1", 5062)
    assert v.branch == "z9hG4bK776asdhds" and v.rport == 5062 and v.received == "198.51.100.2"
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK776asdhds;rport=5062;received=198.51.100.2"
    assert v.sent_by == "192.0.2.1:5062"


def test_via_rport_flag_and_absent() -> None:
    assert Via.parse("SIP/2.0/TCP h;rport;branch=z9hG4bK1").rport is True
    assert Via.parse("SIP/2.0/TCP h;branch=z9hG4bK1").rport is None


def test_via_ipv6_and_lws() -> None:
    v = Via.parse("SIP / 2.0 / tls [2001:db8::9:1] : 5061 ; branch = z9hG4bKx ; received=[2001:db8::9:255]")
    assert (v.transport, v.host, v.port) == ("TLS", "2001:db8::9:1", 5061)
    assert v.received == "[2001:db8::9:255]" and v.branch == "z9hG4bKx"
    assert str(v) == "SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKx;received=[2001:db8::9:255]"
    assert str(Via(transport="UDP", host="::1", port=5060, params={"branch": "z9hG4bK1", "rport": None})) == (
        "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport"
    )


def test_via_parse_all_splits_fields_and_lists() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070;branch=z9hG4bK2"),
                 ("v", "SIP/2.0/SCTP c;branch=z9hG4bK3")])
    assert [(v.host, v.transport) for v in Via.parse_all(h)] == [("a", "UDP"), ("b", "TCP"), ("c", "SCTP")]


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0 UDP host", "SIP/2.0/UDP", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host;;",
     "SIP/2.0/UDP host;rport=abc", "SIP/2.0/UDP [::1", "SIP/2.0/UDP host junk"],
)
def test_bad_via_raises(text: str) -> None:
    with pytest.raises(SIPParseError):
        Via.parse(text)


def test_cseq() -> None:
    assert parse_cseq("0009 INVITE") == (9, "INVITE")
    assert parse_cseq(" 4294967295  REGISTER ") == (4294967295, "REGISTER")
    for bad in ("4294967296 INVITE", "INVITE", "1", "-1 INVITE", "1 IN VITE"):
        with pytest.raises(SIPParseError):
            parse_cseq(bad)


def test_params_and_split_helpers() -> None:
    assert parse_params(' ; Tag = abc ;lr; q=0.5;x="a;b"') == {"tag": "abc", "lr": None, "q": "0.5", "x": '"a;b"'}
    assert parse_params("") == {}
    with pytest.raises(SIPParseError):
        parse_params(";=x")
    assert split_comma('a, "b,c" , <d,e>;p, f') == ["a", '"b,c"', "<d,e>;p", "f"]


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.text(max_size=80),
                 st.text(alphabet="SIP/2.0UDPTCPhost[]:;=,rportbranch 0123456789\"\t", max_size=80)))
def test_via_and_cseq_raise_only_sip_parse_error(text: str) -> None:
    try:
        v = Via.parse(text)
        assert Via.parse(str(v)) == v
    except SIPParseError:
        pass
    try:
        parse_cseq(text)
    except SIPParseError:
        pass


# ------------------------------------------------------------------ the lookup index (issue 11)

_NAMES = st.sampled_from(["Via", "v", "via", "Contact", "m", "CSeq", "Call-ID", "i", "X-Custom", "x-custom", "To"])
_VALUES = st.sampled_from(["a", "b, c", "SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g", "<sip:x@y>", "1 INVITE"])
_OPS = st.lists(st.tuples(st.sampled_from(["add", "set", "remove", "replace_top", "copy"]), _NAMES, _VALUES),
                max_size=30)


@settings(max_examples=300, deadline=None)
@given(_OPS, st.lists(_NAMES, min_size=1, max_size=5))
def test_lookups_agree_with_a_plain_scan_after_any_edits(ops: list[tuple[str, str, str]], probes: list[str]) -> None:
    """The index built on first lookup must follow add/set/remove/replace_top/copy: every
    lookup answers what a scan of the fields in order answers."""
    h = Headers()
    for op, name, value in ops:
        if op == "copy":
            h = h.copy()
        elif op == "remove":
            h.remove(name)
        else:
            getattr(h, op)(name, value)
        for probe in probes:  # lookups between edits build and use the index
            key = canonical_name(probe).lower()
            expected = [v for n, v in h if n.lower() == key]  # a plain scan in wire order
            assert h.get_all(probe) == expected
            assert h.get(probe) == (expected[0] if expected else None)
            assert (probe in h) == bool(expected)


def test_first_value_splits_only_the_first_field() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("Via", 'SIP/2.0/UDP c;x="unterminated')])
    assert h.first_value("v") == "SIP/2.0/UDP a;branch=z9hG4bK1"  # the broken second field is never split
    assert h.first_value("CSeq") is None
    assert Headers([("From", "<sip:a@b>, <sip:c@d>")]).first_value("From") == "<sip:a@b>, <sip:c@d>"  # not a list


def test_parse_warning_reads_each_warning_value() -> None:
    # RFC 3261 §20.43's examples: a host agent, a pseudonym; quoted-pairs undone, comma lists split
    assert parse_warning('307 isi.edu "Session parameter \'foo\' not understood"') == [
        (307, "isi.edu", "Session parameter 'foo' not understood")]
    assert parse_warning('301 isi.edu "Incompatible network address type \'E.164\'", 399 [::1]:5060 "a \\"b\\""') == [
        (301, "isi.edu", "Incompatible network address type 'E.164'"), (399, "[::1]:5060", 'a "b"')]
    assert parse_warning('399 pbx "Max-Forwards, exceeded"') == [(399, "pbx", "Max-Forwards, exceeded")]


@pytest.mark.parametrize("value", ["", "30 isi.edu \"x\"", "307 isi.edu x", "307 \"x\"", '307 a "x" junk', '307 a "x'])
def test_parse_warning_refuses_what_is_no_warning_value(value: str) -> None:
    with pytest.raises(SIPParseError):
        parse_warning(value)
