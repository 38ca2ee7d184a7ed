"""The SIP parsers' fast paths agree with the full parsers (RFC 3261 §7.3, §19.1, §20.16, §20.42).

Each fast path (the plain SIP URI and Via regexes, the CSeq shortcut, the head split that
unfolds only on failure, the header index built while splitting) must accept exactly a subset
of what the full parser accepts and give the same result; everything else must fall back and
be judged as before. Each test runs the same input through both ways — the full way by
switching the fast path off — on generated inputs built to hit the edges (near misses: a
port of 65536, ``%`` escapes, ``@``/``?``/``=``/blanks in parameters, folded lines, bare LFs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip import headers as headers_mod
from skinnysip.sip import message as message_mod
from skinnysip.sip import uri as uri_mod
from skinnysip.sip.headers import Via, parse_cseq
from skinnysip.sip.message import Headers, SIPParseError, canonical_name, parse_message
from skinnysip.sip.syntax import TOKEN_RE, first_in_list, split_comma
from skinnysip.sip.uri import SipURI, check_uri, parse_uri

_NEVER = re.compile(r"(?!)")


@contextmanager
def _full_parsers() -> Iterator[None]:
    """Switch every fast path off: the full parsers judge alone."""
    with mock.patch.object(uri_mod, "_PLAIN_SIP_URI_RE", _NEVER), \
            mock.patch.object(headers_mod, "_PLAIN_VIA_RE", _NEVER), \
            mock.patch.object(headers_mod, "COMMON_METHODS", frozenset()):
        yield


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except SIPParseError as exc:
        return "error", exc.reason


def _both(fn: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    fast = _outcome(fn)
    with _full_parsers():
        full = _outcome(fn)
    return fast, full


def _params_in_order(value: Any) -> Any:
    """Dict equality ignores order; the parameters' order is part of the result."""
    return (value, list(value.params.items())) if hasattr(value, "params") else value


# --------------------------------------------------------------------------- URIs

_USER_PIECES = ["alice", "bob.smith", "+1-212", "%40", "%4", "%zz", "a;b=c", "x?y", "*97#", "a:pw", "", "ü", "a b", "a@b"]
_HOST_PIECES = ["example.com", "192.0.2.4", "h", "_srv.x", "-bad", "[::1]", "[2001:db8::9]", "[::1", "[v]", "a..b", "",
                "é.com", "a b"]
_PORT_PIECES = ["", ":5060", ":0", ":65535", ":65536", ":99999", ":123456", ":", ":5a", ": 5060", ":05060"]
_PARAM_PIECES = ["", ";lr", ";transport=udp", ";TRANSPORT=TCP", ";maddr=[::1]", ";a=", ";=x", ";;", ";", ";a=b=c",
                 ";a=x@y", ";a=x?y", ';a="q"', ";a b", ";a=%41", ";x-y.z!=~*'()", ";ü=1", ";a=1;a=2", ";a=b;lr"]
_TAIL_PIECES = ["", "?subject=hi", "?a=b&c=d", "?", " ", "\t", ">", ","]
_SCHEMES = ["sip:", "sips:", "SIP:", "SiPs:", "tel:", "sipx:", "http:", "sip", ""]


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


def _pieces(pieces: list[str], most: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=most).map("".join)


_uri_texts = _joined(st.sampled_from(_SCHEMES), st.sampled_from(_USER_PIECES) | st.text(max_size=6),
                     st.sampled_from(["@", "", "@", "@@"]), st.sampled_from(_HOST_PIECES),
                     st.sampled_from(_PORT_PIECES), _pieces(_PARAM_PIECES, 3), st.sampled_from(_TAIL_PIECES))


@settings(max_examples=1500, deadline=None)
@given(_uri_texts | st.text(alphabet="sip:@;=?[]%0a.-_ \"<>,+~", max_size=30))
def test_plain_sip_uri_fast_path_agrees_with_the_full_parser(text: str) -> None:
    fast, full = _both(lambda: _params_in_order(SipURI.parse(text)))
    assert fast == full
    checked = _outcome(lambda: check_uri(text))
    with _full_parsers():
        reference = _outcome(lambda: parse_uri(text))
    assert checked[0] == reference[0]
    if checked[0] == "error":
        assert checked == reference


@pytest.mark.parametrize("text", [
    "sip:alice@example.com", "sips:bob@192.0.2.4:5061;transport=tcp", "sip:[2001:db8::1]:5060;lr",
    "SIP:Alice%20Smith@example.com", "sip:example.com;maddr=[::1];lr", "sip:alice;day=tuesday@atlanta.com",
])
def test_fast_path_takes_common_uris(text: str) -> None:
    assert uri_mod._PLAIN_SIP_URI_RE.fullmatch(text) is not None
    assert _both(lambda: _params_in_order(SipURI.parse(text)))[0][0] == "ok"


@pytest.mark.parametrize("text", [
    "sip:a@h:65536", "sip:@h", "sip:a:pw@h", "sip:h;", "sip:h;a=x?y", "sip:h?x=y", "sip:h;a b", "sip:a%4@h",
    "sip:[::1", "sip:-h", "tel:+1-201-555-0123", "sip:h;a=b=c", "sip:a@b@c",
])
def test_near_misses_fall_back_to_the_full_parser(text: str) -> None:
    m = uri_mod._PLAIN_SIP_URI_RE.fullmatch(text)
    assert m is None or int(m.group(5)) > 65535
    fast, full = _both(lambda: _params_in_order(SipURI.parse(text)))
    assert fast == full


_OLD_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/#]|%[0-9A-Fa-f]{2})+")


@settings(max_examples=800, deadline=None)
@given(st.text(alphabet="aZ9-_.!~*'()&=+$,;?/#%fG:@ ü", max_size=12))
def test_unrolled_user_pattern_is_the_same_language(text: str) -> None:
    assert bool(uri_mod._USER_RE.fullmatch(text)) == bool(_OLD_USER_RE.fullmatch(text))


_OLD_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


@settings(max_examples=800, deadline=None)
@given(st.text(alphabet="0aF:.g]", max_size=12))
def test_ipv6_pattern_without_backtracking_is_the_same_language(text: str) -> None:
    assert bool(uri_mod._IPV6_RE.fullmatch(text)) == bool(_OLD_IPV6_RE.fullmatch(text))


def test_port_number_pattern_is_one_to_five_digits_up_to_65535() -> None:
    port = re.compile(uri_mod._PORT_NUMBER)
    for width in range(1, 7):
        for n in [*range(0, 10 ** min(width, 5)), 65535, 65536, 99999, 123456]:
            text = str(n).zfill(width)
            expected = bool(uri_mod._PORT_RE.fullmatch(text)) and int(text) <= 65535
            assert bool(port.fullmatch(text)) == expected, text


@settings(max_examples=800, deadline=None)
@given(st.text(alphabet='ab ,"<>\\\t', max_size=14))
def test_first_in_list_is_the_first_of_split_comma(text: str) -> None:
    def first() -> str | None:
        parts = split_comma(text)
        return parts[0] if parts else None
    assert _outcome(lambda: first_in_list(text)) == _outcome(first)


# --------------------------------------------------------------------------- Via

_VIA_HEADS = ["SIP/2.0/UDP ", "SIP/2.0/tcp ", "SIP/2.0/TLS  ", "SIP/2.0/UDP\t", "SIP / 2.0 / UDP ", "sip/2.0/UDP ",
              "SIP/2.0/WSS ", "SIP/2.0/ ", "SIP/2.0/U@P ", " SIP/2.0/UDP ", "SIP/3.0/UDP "]
_VIA_PARAMS = ["", ";branch=z9hG4bK776", ";rport", ";rport=5060", ";rport=65536", ";rport=", ";rport=abc",
               ";received=192.0.2.1", ";received=[2001:db8::1]", ";BRANCH=Z9hG4bKx", ";ttl=16", ";maddr=h", ";;", ";",
               ";a b", ";a=b,c", ';a="x"', ";=v", ";a=b=c", ";a= b", " ;lr", ";a=1;a=2", ";ü", ";a=ü"]


_via_texts = _joined(st.sampled_from(_VIA_HEADS), st.sampled_from(_HOST_PIECES), st.sampled_from(_PORT_PIECES),
                     _pieces(_VIA_PARAMS, 4), st.sampled_from(["", " ", "\t", ",", " junk"]))


@settings(max_examples=1500, deadline=None)
@given(_via_texts | st.text(alphabet="SIP/2.0UD h:5;rpot=b[]\"", max_size=30))
def test_plain_via_fast_path_agrees_with_the_full_parser(text: str) -> None:
    fast, full = _both(lambda: _params_in_order(Via.parse(text)))
    assert fast == full


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport", "SIP/2.0/TCP [::1]:5061;branch=z9hG4bK2;received=::1",
    "SIP/2.0/udp host;rport=5060;branch=z9hG4bK3",
])
def test_via_fast_path_takes_common_values(text: str) -> None:
    assert headers_mod._PLAIN_VIA_RE.fullmatch(text) is not None
    fast, full = _both(lambda: _params_in_order(Via.parse(text)))
    assert fast == full and fast[0] == "ok"


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP h:65536", "SIP/2.0/UDP h;rport=65536", "SIP/2.0/UDP h;rport=", "SIP/2.0/UDP h;rport=x1",
    "SIP/2.0/UDP h ;branch=z9hG4bK1", "SIP/2.0/UDP h;branch=a,b", "SIP/2.0/UDP  h",
])
def test_via_near_misses_are_judged_by_the_full_parser(text: str) -> None:
    fast, full = _both(lambda: _params_in_order(Via.parse(text)))
    assert fast == full


# --------------------------------------------------------------------------- CSeq

@settings(max_examples=800, deadline=None)
@given(st.sampled_from(["", "0", "1", "00000001", "999999999", "1000000000", "4294967295", "4294967296", "٣", "-1",
                        " 7", "12345678901234567890123456789012"]),
       st.sampled_from([" ", "  ", "\t", "", " \t"]),
       st.sampled_from(["INVITE", "ACK", "invite", "FOO-BAR", "IN VITE", "", "INVITE ", "ÜBER", "MESSAGE"]))
def test_cseq_fast_path_agrees_with_the_full_parser(number: str, blank: str, method: str) -> None:
    text = f"{number}{blank}{method}"
    fast, full = _both(lambda: parse_cseq(text))
    assert fast == full


# --------------------------------------------------------------------------- head split

def _oracle_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The head parse as it was before the fast path: unfold first, then split the lines
    (CRLF, or CRLF/LF when a bare LF is present), then each ``name: value``."""
    text = re.sub(r"\r?\n[ \t]+", " ", head.decode("utf-8", "surrogateescape"))
    lines = re.split(r"\r?\n", text) if re.search(r"(?<!\r)\n", text) else text.split("\r\n")
    fields = []
    for line in lines[1:]:
        m = re.fullmatch(r"([^:]*):(.*)", line, re.S)
        if m is None or not TOKEN_RE.fullmatch(m.group(1).rstrip(" \t")):
            raise SIPParseError("bad header line")
        fields.append((canonical_name(m.group(1).rstrip(" \t")), m.group(2).strip(" \t")))
    return lines[0], fields


_LINES = ["Via: SIP/2.0/UDP h;branch=z9hG4bK1", "v:SIP/2.0/TCP h2 ", "Call-ID: abc", "i: abc", "CSeq: 1 INVITE",
          "Content-Length: 0", "l: 3", "Content-Length: 2", "From: <sip:a@b>;tag=1", "To:\t<sip:b@c>",
          "X-Custom : yes", " continued", "\tcontinued", "no colon", " Via: x", "Bad Name: 1", ":empty", "Max-Forwards: 70",
          "Subject:", "Ümlaut: 1"]
_SEPARATORS = ["\r\n", "\r\n", "\r\n", "\n", "\r\n ", "\n\t"]


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    start = draw(st.sampled_from(["INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK", "REGISTER sip:x SIP/2.0"]))
    out = start
    for line in draw(st.lists(st.sampled_from(_LINES), max_size=8)):
        out += draw(st.sampled_from(_SEPARATORS)) + line
    out += draw(st.sampled_from(["\r\n\r\n", "\n\n", "\r\n\n", "\n\r\n", "\r\n"]))
    out += draw(st.sampled_from(["", "abc", "ab\r\n\r\nc"]))
    return out.encode("utf-8", "surrogateescape")


def _oracle_message(data: bytes) -> tuple[str, Any]:
    """(start line, fields, octets after the head) as parsed before the fast path."""
    def run() -> Any:
        end = message_mod._find_head_end(data, 0)
        if end is None:
            if not data.endswith(b"\n"):
                raise SIPParseError("no end")
            head, rest = data.rstrip(b"\r\n"), b""
        else:
            head, rest = data[:end[0]], data[end[1]:]
        start, fields = _oracle_head(head)
        lengths = {v for n, v in fields if n == "Content-Length"}
        if len(lengths) > 1 or not all(re.fullmatch(r"[0-9]{1,30}", v) for v in lengths):
            raise SIPParseError("bad Content-Length")
        return start, fields, rest
    return _outcome(run)


def _agrees_with_the_oracle(data: bytes) -> None:
    oracle = _oracle_message(data)
    got = _outcome(lambda: parse_message(data))
    if oracle[0] == "error":
        assert got[0] == "error"
        return
    start, fields, rest = oracle[1]
    declared = [int(v) for n, v in fields if n == "Content-Length"]
    if declared and declared[0] > len(rest):
        assert got[0] == "error"
        return
    body = rest[:declared[0]] if declared else rest
    if got[0] == "error":  # then only the start line may be at fault (a line folded into it)
        with pytest.raises(SIPParseError):
            message_mod._build(start, Headers(fields), body)
        return
    message = got[1]
    assert list(message.headers) == fields and message.body == body
    assert message.to_bytes().split(b"\r\n", 1)[0] == start.encode("utf-8", "surrogateescape")


@settings(max_examples=1500, deadline=None)
@given(_messages())
def test_head_split_agrees_with_unfolding_first(data: bytes) -> None:
    _agrees_with_the_oracle(data)


@pytest.mark.parametrize("data", [
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n b\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\tb\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\nCall-ID: a\nCSeq: 1 OPTIONS\n\n",
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\nCSeq: 1 OPTIONS\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\n\nCSeq: 1 OPTIONS\r\n\r\nbody",
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\n\r\nCSeq: 1 OPTIONS\r\n\r\nbody",
    b"OPTIONS sip:x SIP/2.0\r\n folded: start\r\nCall-ID: a\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n Via: folded\r\nl: 1\r\n\r\nxy",
])
def test_folds_and_bare_lfs_take_the_full_way(data: bytes) -> None:
    _agrees_with_the_oracle(data)


# --------------------------------------------------------------------------- header index

_NAMES = ["Via", "v", "VIA", "Call-ID", "i", "Contact", "X-A", "x-a", "Route"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "set", "remove", "replace_top", "get", "get_all", "copy"]),
                          st.sampled_from(_NAMES), st.sampled_from(["1", "2, 3", "4"])), max_size=25),
       st.booleans())
def test_header_index_matches_a_plain_list(ops: list[tuple[str, str, str]], parsed: bool) -> None:
    """Whatever the order of changes and lookups, the index answers as a scan of the fields."""
    if parsed:
        h = parse_message(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nv: SIP/2.0/UDP b\r\nX-A: 0\r\n\r\n").headers
    else:
        h = Headers([("Via", "SIP/2.0/UDP a"), ("v", "SIP/2.0/UDP b"), ("X-A", "0")])
    model = [(canonical_name(n), v) for n, v in h]

    def same(a: str, b: str) -> bool:
        return canonical_name(a).lower() == canonical_name(b).lower()

    for op, name, value in ops:
        if op == "add":
            h.add(name, value)
            model.append((canonical_name(name), value))
        elif op == "set":
            h.set(name, value)
            at = next((i for i, (n, _) in enumerate(model) if same(n, name)), None)
            model = [f for f in model if not same(f[0], name)]
            model.insert(len(model) if at is None else at, (canonical_name(name), value))
        elif op == "remove":
            h.remove(name)
            model = [f for f in model if not same(f[0], name)]
        elif op == "replace_top":
            h.replace_top(name, value)
            at = next((i for i, (n, _) in enumerate(model) if same(n, name)), None)
            if at is None:
                model.append((canonical_name(name), value))
            else:
                rest = [x.strip() for x in model[at][1].split(",")[1:]]
                if canonical_name(name).lower() == "call-id":
                    rest = []
                model[at] = (model[at][0], ", ".join([value, *rest]))
        elif op == "copy":
            h = h.copy()
        expected = [v for n, v in model if same(n, name)]
        assert h.get_all(name) == expected
        assert h.get(name) == (expected[0] if expected else None)
        assert (name in h) == bool(expected)
        assert list(h) == model
