"""The C header-field loop (``skinnysip.sip._fields.split_head``) gives what the Python loop
gives (RFC 3261 §7.3: ``name: value`` lines, CRLF line ends; folding and bare LFs left to the
Python path), on generated heads of every string width, and keeps no reference it should not.
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
    for _ in range(200):
        parse_message(data)
    entry = message_mod._NAME_CACHE["Via"]
    count = sys.getrefcount(entry)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            parse_message(data)
            with pytest.raises(SIPParseError):
                parse_message(data.replace(b"CSeq:", b"CS eq:"))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after 20000 parses"
    assert sys.getrefcount(entry) == count
