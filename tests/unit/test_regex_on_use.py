"""``skinnysip._regex.compile_on_use``: a module-level pattern compiled at its first use
(issue 12's start-up), then answering exactly as the compiled pattern does."""

from __future__ import annotations

import re
from unittest import mock

import pytest

from skinnysip._regex import compile_on_use
from skinnysip.sip import headers, syntax, uri


def test_nothing_is_compiled_until_first_use_then_once() -> None:
    with mock.patch("skinnysip._regex.re.compile", wraps=re.compile) as compiled:
        pattern = compile_on_use(r"([0-9]+)-([a-z]+)", re.I)
        assert compiled.call_count == 0
        assert pattern.pattern == r"([0-9]+)-([a-z]+)"  # at hand: other patterns are built from it
        assert compiled.call_count == 0
        assert pattern.fullmatch("12-AB") is not None
        assert pattern.search("x 7-q").groups() == ("7", "q")  # type: ignore[union-attr]
        assert pattern.groups == 2
        assert compiled.call_count == 1


def test_every_method_and_attribute_answers_as_the_compiled_pattern() -> None:
    text = "a1b22c333"
    ours, theirs = compile_on_use(r"([a-z])([0-9]+)"), re.compile(r"([a-z])([0-9]+)")
    assert ours.match(text).groups() == theirs.match(text).groups()  # type: ignore[union-attr]
    assert ours.fullmatch(text) is None and theirs.fullmatch(text) is None
    assert ours.findall(text) == theirs.findall(text)
    assert [m.span() for m in ours.finditer(text)] == [m.span() for m in theirs.finditer(text)]
    assert ours.sub(r"\2\1", text) == theirs.sub(r"\2\1", text)
    assert ours.subn("-", text) == theirs.subn("-", text)
    assert ours.split(text) == theirs.split(text)
    assert (ours.flags, ours.groups, ours.groupindex) == (theirs.flags, theirs.groups, theirs.groupindex)
    assert ours.scanner(text).match().group() == "a1"
    raw = compile_on_use(rb"\r?\n")
    assert raw.split(b"a\r\nb\nc") == [b"a", b"b", b"c"]


def test_a_bad_pattern_fails_at_its_first_use() -> None:
    pattern = compile_on_use(r"(unclosed")
    with pytest.raises(re.error):
        pattern.match("x")


def test_the_sip_core_patterns_all_compile_and_the_built_ones_match() -> None:
    """Every compile_on_use pattern of the modules that use it compiles (a typo would only
    show at its first use otherwise), and those built from others' ``.pattern`` still match."""
    import importlib

    for name in ("skinnysip.sip.uri", "skinnysip.sip.syntax", "skinnysip.sip.message", "skinnysip.sip.headers",
                 "skinnysip.sip.auth", "skinnysip.probes.sip", "skinnysip.policy", "skinnysip.net.sip_transport",
                 "skinnysip.cli.common", "skinnysip.addresses"):
        module = importlib.import_module(name)
        stand_ins = [value for value in vars(module).values() if type(value).__name__ == "_PatternOnUse"]
        assert stand_ins, name
        for value in stand_ins:
            assert isinstance(value.groups, int)  # compiles it
    assert syntax.is_media_type('text/plain;charset="utf-8"') and not syntax.is_media_type("text plain")
    assert headers.parse_warning('399 pbx.example.com "Max-Forwards reached"') == [
        (399, "pbx.example.com", "Max-Forwards reached")]
    assert uri.parse_uri("sip:alice@[::1]:5070;transport=tcp").port == 5070  # type: ignore[union-attr]
