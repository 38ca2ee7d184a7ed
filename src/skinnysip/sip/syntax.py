"""Lexical pieces of SIP shared by messages, header values and URIs (RFC 3261 §7.3.1, §25.1).

:class:`SIPParseError` (the one exception the SIP parsers raise on bad input),
:func:`split_comma` and :func:`parse_params`. This module imports nothing from the rest of
:mod:`skinnysip.sip`, so :mod:`~skinnysip.sip.uri`, :mod:`~skinnysip.sip.headers` and
:mod:`~skinnysip.sip.message` can all build on it without an import cycle. The names are
re-exported by :mod:`skinnysip.sip.message`.
"""

from __future__ import annotations

import re

__all__ = ["TOKEN_RE", "SIPParseError", "parse_params", "split_comma"]


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
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_COMMA_PARTS_RE = re.compile(r'"(?:[^"\\]|\\.)*"|<[^>]*>|[^,"<]+|,|["<]', re.S)


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


_PARAM_RE = re.compile(
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
