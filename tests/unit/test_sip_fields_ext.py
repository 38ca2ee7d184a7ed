"""The C header-field loop (``skinnysip.sip._fields.split_head``) gives what the Python loop
gives (RFC 3261 §7.3: ``name: value`` lines, CRLF line ends; folding and bare LFs left to the
Python path), on generated heads of every string width, and keeps no reference it should not;
so does the C plain Via value (``plain_via``) beside the regex it stands for.
"""

from __future__ import annotations

import gc
import shutil
import sys
import sysconfig
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip import headers as headers_mod
from skinnysip.sip import message as message_mod
from skinnysip.sip.message import SIPParseError, parse_message

split_head = message_mod._split_head
needs_ext = pytest.mark.skipif(split_head is None, reason="skinnysip.sip._fields is not built here")


def test_the_extension_is_built_where_a_compiler_is() -> None:
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the Python loop is expected")
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        pytest.skip("no Python headers here (Debian: python3-dev): the Python loop is expected")
    assert message_mod.IMPLEMENTATION == "c", "a C compiler is here but skinnysip.sip._fields did not build or import"


def test_implementation_names_the_loop_in_use() -> None:
    assert message_mod.IMPLEMENTATION == ("python" if split_head is None else "c")


# --------------------------------------------------------------------------- C and Python agree

_NAMES = ["Via", "v", "VIA", "Call-ID", "i", "CSeq", "Content-Length", "l", "From", "To", "X-Custom", "x-custom",
          "X-Custom ", "X-Custom\t", " Via", "Bad Name", "", "Ümlaut", "Nämé", "名前", "\U0001f600", "X-\udcff",
          "a" * 64, "b" * 65, "Max-Forwards", "Subject", "X:Y"]
_VALUES = ["SIP/2.0/UDP h;branch=z9hG4bK1", "", " ", "\t", "  spaced  ", "\tx\t", "70", "1 INVITE", "0", "a:b:c",
           "ü", "日本語", "\U0001f600 smile", "\udcff\udcfe", "x\ry", "<sip:a@b>;tag=1", "2", "10"]
_LINE_ENDS = ["\r\n", "\r\n", "\r\n", "\r\n", "\n", "\r\n ", "\r\n\t", "\r"]


@st.composite
def _heads(draw: st.DrawFn) -> str:
    start = draw(st.sampled_from(["INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK", "OPTIONS sip:ü@x SIP/2.0",
                                  "SIP/2.0 180 Ringing \U0001f600", ""]))
    out = start
    for _ in range(draw(st.integers(0, 10))):
        out += draw(st.sampled_from(_LINE_ENDS))
        if draw(st.integers(0, 9)) == 0:
            out += draw(st.sampled_from(["no colon", "", " continued", ":", "::"]))
        else:
            out += draw(st.sampled_from(_NAMES)) + ":" + draw(st.sampled_from(_VALUES) | st.text(max_size=6))
    return out


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except SIPParseError as exc:
        return "error", exc.reason


def _described(parsed: tuple[str, message_mod.Headers] | None) -> Any:
    if parsed is None:
        return None
    start, headers = parsed
    return start, headers._items, headers._first, headers._dups, headers._index


@contextmanager
def _python_loop() -> Iterator[None]:
    """The parser without the C loop."""
    with mock.patch.object(message_mod, "_split_head", None):
        yield


@needs_ext
@settings(max_examples=1500, deadline=None)
@given(_heads())
def test_c_and_python_loops_read_every_head_alike(text: str) -> None:
    c = _outcome(lambda: _described(message_mod._parse_crlf_text(text)))
    with _python_loop():
        python = _outcome(lambda: _described(message_mod._parse_crlf_text(text)))
    assert c == python


@needs_ext
@settings(max_examples=800, deadline=None)
@given(_heads(), st.sampled_from(["\r\n\r\n", "\r\n\r\n", "\n\n", "\r\n"]),
       st.sampled_from([b"", b"body", b"ab\r\n\r\nc"]))
def test_parse_message_is_the_same_with_and_without_the_c_loop(head: str, end: str, body: bytes) -> None:
    data = (head + end).encode("utf-8", "surrogateescape") + body

    def parsed() -> Any:
        m = parse_message(data)
        return type(m).__name__, m.to_bytes(), list(m.headers), m.headers._first

    c = _outcome(parsed)
    with _python_loop():
        python = _outcome(parsed)
    assert c == python


@needs_ext
@pytest.mark.parametrize("text", [
    "", "OPTIONS sip:x SIP/2.0", "SIP/2.0 200 OK\r\nVia: a\r\nv: b\r\nVia:c", "X\r\nA:1\r\nno colon\r\nB:2",
    "X\r\nA:1\nB:2", "X\nA:1", "\nA:1", "X\r\n", "X\r\nA:1\r\n", "X\r\n\r\nA:1", "X\r\nBad Name: 1\r\nno colon",
    "X\r\nno colon\r\nBad Name: 1", "X\r\n \t: 1", "X\r\nA: \t \t", "X\r\nA:\r\rB", "é\r\n名前:値\r\n\U0001f600: \U0001f600 ",
])
def test_edges_read_alike(text: str) -> None:
    c = _outcome(lambda: _described(message_mod._parse_crlf_text(text)))
    with _python_loop():
        python = _outcome(lambda: _described(message_mod._parse_crlf_text(text)))
    assert c == python


# --------------------------------------------------------------------------- the C function itself

def _entry(name: str) -> tuple[str, str]:
    return name.lower(), name


@needs_ext
def test_results_lines_and_last_positions() -> None:
    assert split_head("S\r\nA: 1\r\nb:\t2 \r\nA:3", {}, _entry) == (
        "S", [("a", "A", "1"), ("b", "b", "2"), ("a", "A", "3")], {"a": 2, "b": 1})
    assert split_head("S", {}, _entry) == ("S", [], {})
    assert split_head("S\r\nA:1\nB:2", {}, _entry) is None  # a bare LF
    assert split_head("S\r\nA:1\r\nB", {}, _entry) is None  # a line without ':'


@needs_ext
def test_the_memo_never_answers_for_another_cache() -> None:
    first = {"Via": ("via", "Via")}
    assert split_head("S\r\nVia: 1", first, _entry)[1] == [("via", "Via", "1")]
    other = {"Via": ("other", "Other")}
    assert split_head("S\r\nVia: 1", other, _entry)[1] == [("other", "Other", "1")]
    asked: list[str] = []

    def counting(name: str) -> tuple[str, str]:
        asked.append(name)
        return "k-" + name, name

    empty: dict[str, tuple[str, str]] = {}
    assert split_head("S\r\nVia: 1\r\nVia: 2", empty, counting)[1] == [("k-Via", "Via", "1"), ("k-Via", "Via", "2")]
    assert asked == ["Via"]  # the second line's name came from the memo: same answer, no call


@needs_ext
def test_many_names_widths_and_long_names_each_get_their_own_entry() -> None:
    names = [f"X-{i}" for i in range(600)] + ["é" * 3, "名" * 3, "\U0001f600" * 3, "n" * 64, "n" * 65, "n" * 300,
                                            "\udcff", "ÿ", "Ā"]
    text = "S\r\n" + "\r\n".join(f"{n}: {i}" for i, n in enumerate(names))
    cache: dict[str, tuple[str, str]] = {}
    for _ in range(3):  # the second and third passes read the memo where it kept the name
        start, items, last = split_head(text, cache, _entry)
        assert [(k, n, v) for k, n, v in items] == [(n.lower(), n, str(i)) for i, n in enumerate(names)]
        assert last == {n.lower(): i for i, n in enumerate(names)}


@needs_ext
def test_errors_go_through_and_leave_nothing_half_done() -> None:
    def refusing(name: str) -> tuple[str, str]:
        raise SIPParseError(f"bad header name {name!r}")

    with pytest.raises(SIPParseError, match="Bad"):
        split_head("S\r\nBad: 1", {}, refusing)
    with pytest.raises(ZeroDivisionError):
        split_head("S\r\nA: 1", {}, lambda name: 1 / 0)
    with pytest.raises(TypeError, match="entry"):
        split_head("S\r\nA: 1", {}, lambda name: ["a", "A"])
    with pytest.raises(TypeError, match="entry"):
        split_head("S\r\nA: 1", {"A": ("a",)}, _entry)
    with pytest.raises(TypeError):
        split_head(b"S\r\nA: 1", {}, _entry)
    with pytest.raises(TypeError):
        split_head("S", [], _entry)
    with pytest.raises(TypeError):
        split_head("S", {}, None)
    with pytest.raises(TypeError):
        split_head("S", {})  # type: ignore[call-arg]


@needs_ext
def test_no_reference_is_kept_or_lost() -> None:
    """Ten thousand parses, their results dropped: memory stays where it was (a leaked tuple
    or string per field would add megabytes), and the names' entries keep their counts."""
    data = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:bob@example.com>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nX-Name: \xe5\x90\x8d\r\n"
            b"Content-Length: 0\r\n\r\n")
    bad = data.replace(b"CSeq:", b"CS eq:")

    def parse_both() -> None:
        parse_message(data)
        with pytest.raises(SIPParseError):
            parse_message(bad)

    for _ in range(200):
        parse_both()
    entry = message_mod._NAME_CACHE["Via"]
    count = sys.getrefcount(entry)
    grown = _memory_grown(parse_both, 10_000)
    assert grown < 64 * 1024, f"{grown} bytes more after 20000 parses"
    assert sys.getrefcount(entry) == count


def _memory_grown(step: Any, times: int) -> int:
    """Bytes of traced memory more after ``times`` calls of ``step`` (collected before and after)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            step()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- plain Via values

plain_via = headers_mod._plain_via if headers_mod._plain_via is not headers_mod._plain_via_python else None
needs_via = pytest.mark.skipif(plain_via is None, reason="skinnysip.sip._fields is not built here")

# pieces of Via values around the plain grammar's edges (RFC 3261 §20.42, §25.1): tokens,
# host names, IPv4 and IPv6 references, ports at and past 65535, parameters with and
# without values, and what a plain value may not hold (blanks, quotes, commas, '=' in a
# value, non-ASCII, NUL)
_PREFIXES = ["SIP/2.0/", "SIP/2.0/", "SIP/2.0/", "sip/2.0/", "SIP/2.0 /", "SIP/2.1/", "SIP/2.0", ""]
_TRANSPORTS = ["UDP", "udp", "TcP", "TLS", "SCTP", "WS", "x-y.z!%*_+`'~", "", "U DP", "ü", "U/P"]
_HOSTS = ["h", "192.168.1.2", "example.com", "a-b_c.d.", "_x", "-x", ".x", "[::1]", "[2001:db8::1]", "[fe80::1.2.3.4]",
          "[1.2.3.4]", "[]", "[::g]", "[::1", "::1", "h\u00e9", "h h", "", "h]", "[::1]x"]
_PORTS = ["", ":5060", ":0", ":00000", ":065535", ":65535", ":65536", ":99999", ":123456", ":", ":5a", " :5060",
          ": 5060", ":\u0665"]
_PARAMS = ["", ";branch=z9hG4bK776asdhds", ";rport", ";rport=5060", ";RPort=0", ";received=1.2.3.4",
           ";maddr=[::1]", ";x=", ";X-Y=a:b[c]", ";a=b=c", ";", ";;a", ";=x", ";a b", ";a=\"q\"", ";a=b,c",
           ";ttl=1;TTL=2", ";a=\u00fc", "\x00", " ", ";a;b;c=d;e", ";rport=99999"]


@st.composite
def _via_values(draw: st.DrawFn) -> str:
    out = draw(st.sampled_from(_PREFIXES)) + draw(st.sampled_from(_TRANSPORTS))
    out += draw(st.sampled_from([" ", " ", " ", "  ", "\t", ""])) + draw(st.sampled_from(_HOSTS))
    out += draw(st.sampled_from(_PORTS))
    for _ in range(draw(st.integers(0, 4))):
        out += draw(st.sampled_from(_PARAMS))
    if draw(st.integers(0, 7)) == 0:
        out += draw(st.text(max_size=4))
    return out


@needs_via
@settings(max_examples=3000, deadline=None)
@given(_via_values())
def test_c_and_python_read_every_via_value_alike(value: str) -> None:
    assert plain_via(value) == headers_mod._plain_via_python(value)


@needs_via
@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="SIP/2.0UDPudph19:[];=branchz-._ \t,\"\u00fc", max_size=40))
def test_c_and_python_read_any_text_alike(value: str) -> None:
    assert plain_via(value) == headers_mod._plain_via_python(value)


@needs_via
def test_plain_via_results_and_refusals() -> None:
    assert plain_via("SIP/2.0/udp 192.0.2.1:05060;Branch=z9hG4bK1;rport;branch=z9hG4bK2;maddr=[::1]") == (
        "UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK2", "rport": None, "maddr": "[::1]"})  # later duplicate wins
    assert plain_via("SIP/2.0/TLS [2001:db8::1]:5061") == ("TLS", "2001:db8::1", 5061, {})
    for value in ("SIP/2.0/UDP h:65536", "SIP/2.0/UDP h:123456", "SIP/2.0/UDP h;a=b=c", "SIP/2.0/UDP  h",
                  "SIP/2.0/UDP h, SIP/2.0/UDP g", "SIP/2.0/UDP [1.2.3.4]", "SIP/2.0/UDP h\u00e9", "SIP/2.0/ h"):
        assert plain_via(value) is None, value
    with pytest.raises(TypeError):
        plain_via(b"SIP/2.0/UDP h")  # type: ignore[arg-type]


@needs_via
def test_plain_via_keeps_no_reference() -> None:
    value = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport;received=192.0.2.9"
    for _ in range(200):
        plain_via(value)
    count = sys.getrefcount(value)

    def both() -> None:
        plain_via(value)
        plain_via("SIP/2.0/UDP h;a=b=c")

    grown = _memory_grown(both, 20_000)
    assert grown < 64 * 1024, f"{grown} bytes more after 40000 calls"
    assert sys.getrefcount(value) == count
