"""Lexical pieces of SIP shared by messages, header values and URIs (RFC 3261 §7.3.1, §25.1).

:class:`SIPParseError` (the one exception the SIP parsers raise on bad input),
:func:`split_comma`, :func:`parse_params` and the numbers of header values
(:func:`parse_uint`, :func:`uint_or_none`: ASCII digits only, bounded). This module imports nothing from the rest of
:mod:`skinnysip.sip`, so :mod:`~skinnysip.sip.uri`, :mod:`~skinnysip.sip.headers` and
:mod:`~skinnysip.sip.message` can all build on it without an import cycle. The names are
re-exported by :mod:`skinnysip.sip.message`.
"""

from __future__ import annotations

import re

from skinnysip._regex import compile_on_use

__all__ = [
    "COMMON_METHODS",
    "TOKEN_RE",
    "first_in_list",
    "SIPParseError",
    "parse_params",
    "parse_uint",
    "quote_string",
    "split_checked_params",
    "split_comma",
    "uint_or_none",
    "unquote_string",
]


class SIPParseError(ValueError):
    """Malformed SIP text (message, header field, URI, challenge).

    ``reason`` is a short human-readable explanation, also used as the message.
    It is the only exception the SIP parsers raise on bad input.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- lexing

#: RFC 3261 §25.1 ``token``
TOKEN_RE = compile_on_use(r"[A-Za-z0-9\-.!%*_+`'~]+")
#: a Content-Type value (RFC 3261 §20.15 ``media-type``): type "/" subtype *(";" parameter),
#: a parameter's value a token or a quoted-string, on one line (the pattern's text, which the
#: API's schema also gives)
MEDIA_TYPE_PATTERN = (
    rf"{TOKEN_RE.pattern}/{TOKEN_RE.pattern}"
    rf'(?:[ \t]*;[ \t]*{TOKEN_RE.pattern}=(?:{TOKEN_RE.pattern}|"(?:[^"\\\r\n]|\\[^\r\n])*"))*')

_MEDIA_TYPE_RE = compile_on_use(MEDIA_TYPE_PATTERN)


def is_media_type(value: str) -> bool:
    """True if ``value`` is a whole :data:`MEDIA_TYPE_PATTERN` (``text/plain;charset=UTF-8``)."""
    return _MEDIA_TYPE_RE.fullmatch(value) is not None

#: Methods of RFC 3261 and its extensions (RFC 3262, 3265/6665, 3311, 3428, 3515, 3903,
#: 6086): all of them RFC 3261 §25.1 ``token``\s, so a parser that finds a method here
#: needs no :data:`TOKEN_RE` check (a fast path; other tokens are checked as usual).
COMMON_METHODS = frozenset(
    "INVITE ACK BYE CANCEL REGISTER OPTIONS PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)
_QUOTED_PAIR_RE = compile_on_use(r"\\(.)", re.S)


def quote_string(text: str) -> str:
    """``text`` as an RFC 3261 §25.1 ``quoted-string``: in double quotes, ``\\`` and ``"``
    escaped as quoted-pairs."""
    if '"' not in text and "\\" not in text:  # the usual case: nothing to escape
        return f'"{text}"'
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_string(value: str) -> str:
    """The text of a ``quoted-string`` (quotes removed, quoted-pairs undone); a value that is
    not one (no surrounding double quotes) comes back as it is."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return value


_COMMA_PARTS_RE = compile_on_use(r'"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<]+|,|["<]', re.S)


def split_comma(value: str) -> list[str]:
    """Split a header value at commas that are outside quoted strings and ``<...>``.

    Returns the stripped, non-empty elements (RFC 3261 §7.3.1).
    Raises :class:`SIPParseError` on an unterminated quoted string or ``<``.
    """
    if "," not in value:
        v = value.strip()
        if '"' not in v and "<" not in v:
            return [v] if v else []
    out: list[str] = []
    cur: list[str] = []
    for m in _COMMA_PARTS_RE.finditer(value):
        part = m.group(0)
        if part == ",":
            item = "".join(cur).strip()
            if item:
                out.append(item)
            cur = []
        elif part == '"':
            raise SIPParseError("unterminated quoted string")
        elif part == "<":
            raise SIPParseError("unterminated '<'")
        else:
            cur.append(part)
    item = "".join(cur).strip()
    if item:
        out.append(item)
    return out


def first_in_list(value: str) -> str | None:
    """``split_comma(value)[0]``, or None when that list is empty: the first element of a
    comma-separated field (the top Via of a field holding several), splitting no further
    than it when ``value`` holds no quote or ``<``. Raises as :func:`split_comma`."""
    if '"' in value or "<" in value:
        parts = split_comma(value)
        return parts[0] if parts else None
    rest = value
    while True:
        item, comma, rest = rest.partition(",")
        item = item.strip()
        if item or not comma:
            return item or None


_PARAM_RE = compile_on_use(
    r'[ \t]*;[ \t]*([^;=\s"]*)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*"|[^;\s"]*))?[ \t]*', re.S
)


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` generic parameters (RFC 3261 §25.1 ``generic-param``).

    Names are lower-cased (parameter names are case-insensitive, RFC 3261 §7.3.1);
    values are kept as written (quoted strings keep their quotes); a parameter without
    ``=`` maps to ``None``. ``text`` must be empty or start with ``;`` (leading LWS ok).
    Raises :class:`SIPParseError` on an empty name, a bad character or trailing junk.
    """
    params: dict[str, str | None] = {}
    if not text or text.isspace():
        return params
    pos = 0
    n = len(text)
    while pos < n:
        m = _PARAM_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise SIPParseError(f"bad parameter syntax near {text[pos:pos + 20]!r}")
        name = m.group(1)
        if not name or not TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"bad parameter name {name!r}")
        params[name.lower()] = m.group(2)
        pos = m.end()
    return params


def split_checked_params(text: str) -> dict[str, str | None]:
    """:func:`parse_params` for text already known to be ``*( ";" token [ "=" value ] )``
    with no blanks, quotes or ``;`` inside a value (a fast path's regex matched it): the same
    result (names lower-cased, later duplicates win, a flag maps to ``None``), without the
    per-parameter checks. Raises nothing; never call it on unchecked text."""
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return params


# --------------------------------------------------------------------------- numbers

#: RFC 3261 §25.1 ``1*DIGIT``: ASCII digits only (``str.isdigit`` also takes "²", "٣"…);
#: at most 30 of them (leading zeros allowed), so ``int()`` never sees a huge string
_UINT_RE = compile_on_use(r"[0-9]{1,30}")


def parse_uint(value: str, name: str, upper: int = 2**32 - 1) -> int:
    """The number in a header value or parameter written ``1*DIGIT`` (Expires,
    Content-Length, Max-Forwards, RSeq, Min-SE, rport, …; RFC 3261 §25.1, §20).

    Only ASCII digits, surrounding blanks ignored, value 0..``upper``. Raises
    :class:`SIPParseError` naming ``name`` and quoting (the start of) the value — the
    peer's fault, not ours."""
    text = value.strip(" \t")
    if not _UINT_RE.fullmatch(text):
        # octets that are not UTF-8 (kept as surrogates) are shown as \xNN
        start = text[:20].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        shown = f"'{start}'" + (f"… ({len(text)} characters)" if len(text) > 20 else "")
        raise SIPParseError(f"bad {name} value {shown}: not a number 0..{upper}")
    number = int(text)
    if number > upper:
        raise SIPParseError(f"bad {name} value {text[:20]}: larger than {upper}")
    return number


def uint_or_none(value: str | None, upper: int = 2**32 - 1) -> int | None:
    """:func:`parse_uint` for values where a bad one is ignored: None when absent or bad."""
    if value is None:
        return None
    try:
        return parse_uint(value, "", upper)
    except SIPParseError:
        return None
