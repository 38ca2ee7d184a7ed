"""SIP messages: parse and serialize requests and responses (RFC 3261 §7, §18.3, §25).

Sans-IO: bytes in, :class:`Request` / :class:`Response` out, and back to bytes.

* :func:`parse_message` parses one datagram (UDP) or one already framed message.
* :class:`StreamParser` frames messages on a byte stream (TCP/TLS, RFC 3261 §18.3):
  feed it whatever a read returned; it returns every complete message.
* :class:`Headers` is the ordered multi-map of header fields: names are
  case-insensitive, compact forms (RFC 3261 §7.3.3 and later RFCs) are expanded,
  repeated fields keep their wire order.
* :func:`validate_message` applies the RFC 3261 §8.1.1 / §8.2 checks a UA makes before
  it acts on a message (mandatory single-valued fields, CSeq range and method, ...).

Text is decoded as UTF-8 with ``surrogateescape``: any byte sequence survives a
parse / serialize round trip unchanged. The one exception raised on bad bytes is
:class:`SIPParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from skinnysip._regex import compile_on_use
from skinnysip.sip.headers import Via, parse_cseq
from skinnysip.sip.syntax import (
    COMMON_METHODS,
    TOKEN_RE,
    SIPParseError,
    first_in_list,
    parse_params,
    split_comma,
)
from skinnysip.sip.uri import NameAddr, check_uri

__all__ = [
    "COMPACT_FORMS",
    "IMPLEMENTATION",
    "Headers",
    "Request",
    "Response",
    "SIPParseError",
    "StreamParser",
    "canonical_name",
    "parse_message",
    "parse_params",
    "split_comma",
    "validate_message",
]

_ENC = "utf-8"
_ERRORS = "surrogateescape"


# --------------------------------------------------------------------------- names

#: Compact header names (RFC 3261 §7.3.3 and §20; later: RFC 6665 o/u, RFC 3515 r,
#: RFC 3892 b, RFC 4028 x, RFC 8224 y (was RFC 4474), RFC 4474 n, RFC 3841 a/j/d).
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "y": "Identity",
    "n": "Identity-Info",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
}

_KNOWN_NAMES = (
    # RFC 3261 §20
    "Accept Accept-Encoding Accept-Language Alert-Info Allow Authentication-Info "
    "Authorization Call-ID Call-Info Contact Content-Disposition Content-Encoding "
    "Content-Language Content-Length Content-Type CSeq Date Error-Info Expires From "
    "In-Reply-To Max-Forwards Min-Expires MIME-Version Organization Priority "
    "Proxy-Authenticate Proxy-Authorization Proxy-Require Record-Route Reply-To Require "
    "Retry-After Route Server Subject Supported Timestamp To Unsupported User-Agent Via "
    "Warning WWW-Authenticate "
    # later RFCs, as registered at IANA
    "Event Allow-Events Subscription-State Refer-To Referred-By Replaces Session-Expires "
    "Min-SE Identity Identity-Info Accept-Contact Reject-Contact Request-Disposition "
    "RAck RSeq Path Service-Route Privacy P-Asserted-Identity P-Preferred-Identity "
    "Reason SIP-ETag SIP-If-Match History-Info Diversion Security-Client "
    "Security-Server Security-Verify Join Target-Dialog Max-Breadth Flow-Timer "
    "Content-ID Recv-Info Info-Package Geolocation Geolocation-Routing Session-ID "
    "Feature-Caps Refer-Sub P-Access-Network-Info P-Charging-Vector "
    "P-Called-Party-ID P-Associated-URI P-Visited-Network-ID Proxy-Authentication-Info "
    "Remote-Party-ID"
).split()

_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update(COMPACT_FORMS)


def canonical_name(name: str) -> str:
    """Return the canonical spelling of a header name.

    Compact forms are expanded (``"v"`` → ``"Via"``), known names get their RFC
    spelling (``"call-id"`` → ``"Call-ID"``), unknown names are returned unchanged.
    """
    return _CANONICAL.get(name.lower(), name)


# name as asked (any spelling) -> lower-case canonical key; a bounded memo
_KEYS: dict[str, str] = {}


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = _CANONICAL.get(name.lower(), name).lower()
        if len(_KEYS) < 4096:
            _KEYS[name] = key
    return key


# Header fields whose grammar is not a comma-separated list and whose values may
# contain commas: :meth:`Headers.values` returns them unsplit (RFC 3261 §7.3.1).
_NOT_LISTS = frozenset(
    k.lower()
    for k in (
        "WWW-Authenticate Authorization Proxy-Authenticate Proxy-Authorization "
        "Authentication-Info Proxy-Authentication-Info Date Subject Organization Server "
        "User-Agent Retry-After Timestamp Call-ID CSeq From To Content-Type "
        "Content-Disposition Reply-To Identity Identity-Info Max-Forwards Content-Length "
        "Expires Min-Expires MIME-Version Priority Refer-To Referred-By Replaces "
        "Session-Expires Event Subscription-State RAck RSeq"
    ).split()
)


# --------------------------------------------------------------------------- headers


class Headers:
    """Ordered multi-map of SIP header fields, wire order kept (RFC 3261 §7.3).

    Names are case-insensitive and compact forms are expanded both when stored and
    when looked up (``h.get("i") == h.get("Call-ID")``). Known names are stored in their
    canonical spelling; unknown names as given. Values are strings without the folding
    (RFC 3261 §7.3.1) and without leading/trailing whitespace.
    """

    __slots__ = ("_dups", "_first", "_index", "_items")

    # _items: (key, name, value) per field in wire order, key the lower-case canonical name;
    # changed only by appending (add) or replaced by a new list, never edited in place (a
    # message caches its parsed top Via and CSeq per list: _MessageMixin.top_via/cseq).
    # _first: key -> position of its first field; _dups: the keys with more than one field,
    # None when there is none (both built on the first lookup, or by the parser when every
    # name comes once; dropped by set/remove); _index: key -> every position, built on the
    # first lookup of a repeated key. So k lookups in n fields cost O(n + k), not O(n·k):
    # a message with 10⁵ Via lines stays linear.

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._first: dict[str, int] | None = {}
        self._dups: set[str] | None = None
        self._index: dict[str, list[int]] | None = None
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._first = h._dups = h._index = None
        return h

    def _first_positions(self) -> dict[str, int]:
        first = self._first
        if first is None:
            first = {}
            dups = set()
            for i, item in enumerate(self._items):
                if first.setdefault(item[0], i) != i:
                    dups.add(item[0])
            self._first, self._dups = first, dups or None
        return first

    def _positions(self, key: str) -> list[int]:
        """Where the fields with lower-case canonical name ``key`` are, in wire order."""
        first = self._first_positions()
        if self._dups is None or key not in self._dups:
            i = first.get(key)
            return [] if i is None else [i]
        index = self._index
        if index is None:
            index = {}
            for i, item in enumerate(self._items):
                index.setdefault(item[0], []).append(i)
            self._index = index
        return index[key]

    def add(self, name: str, value: str) -> None:
        """Append a header field ``name: value``."""
        entry = _NAME_CACHE.get(name)  # canonical spellings are in it from the start
        if entry is None:
            canon = _CANONICAL.get(name.lower(), name)
            key = canon.lower()
        else:
            key, canon = entry
        n = len(self._items)
        self._items.append((key, canon, value))
        if self._first is not None and self._first.setdefault(key, n) != n:
            if self._dups is None:
                self._dups = set()
            self._dups.add(key)
        if self._index is not None:
            self._index.setdefault(key, []).append(n)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first field called ``name``, or ``default``."""
        key = _KEYS.get(name)
        first = self._first
        i = (self._first_positions() if first is None else first).get(_key(name) if key is None else key)
        return default if i is None else self._items[i][2]

    def get_all(self, name: str) -> list[str]:
        """Every field line's value for ``name``, in wire order (not comma-split)."""
        items = self._items
        return [items[i][2] for i in self._positions(_key(name))]

    def option_tags(self, name: str) -> set[str]:
        """The option tags of ``name`` (``Supported``, ``Require``, ``Proxy-Require``,
        ``Unsupported``; RFC 3261 §19.2), lower-cased (their comparison is case-insensitive).
        Raises :class:`SIPParseError` as :meth:`values` does."""
        return {v.strip().lower() for v in self.values(name) if v.strip()}

    def values(self, name: str) -> list[str]:
        """All values of ``name``, comma-separated lists split (RFC 3261 §7.3.1).

        Fields whose grammar is not a list (``WWW-Authenticate``, ``Date``, ``From``, ...)
        are returned one value per field line. Raises :class:`SIPParseError` on an
        unterminated quoted string or ``<``. Linear in the length of the fields.
        """
        key = _key(name)
        fields = self.get_all(key)
        if key in _NOT_LISTS:
            return fields
        out: list[str] = []
        for v in fields:
            out.extend(split_comma(v))
        return out

    def first_value(self, name: str) -> str | None:
        """The first value of ``name`` (the first field's first comma-separated element, e.g.
        the top Via), splitting only that field; None if absent."""
        key = _key(name)
        first = self.get(key)
        if first is None or key in _NOT_LISTS:
            return first
        return first_in_list(first)

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one field (at the first one's place)."""
        canon = _CANONICAL.get(name.lower(), name)
        key = canon.lower()
        new: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    new.append((key, canon, value))
                    placed = True
            else:
                new.append(item)
        if not placed:
            new.append((key, canon, value))
        self._items = new
        self._first = self._index = None

    def replace_top(self, name: str, value: str) -> None:
        """Replace the first value of the first field called ``name`` (the top Via, say),
        keeping any further comma-separated values of that field. Adds the field if absent."""
        key = _key(name)
        positions = self._positions(key)
        if positions:
            i = positions[0]
            k, canon, old = self._items[i]
            rest = split_comma(old)[1:] if key not in _NOT_LISTS else []
            # a new list, never the old one changed in place: a message's parsed top Via and
            # CSeq are cached for its field list (_MessageMixin.top_via)
            items = list(self._items)
            items[i] = (k, canon, ", ".join([value, *rest]))
            self._items = items
            return
        self.add(name, value)

    def remove(self, name: str) -> None:
        """Remove every field called ``name`` (no error if there is none)."""
        key = _key(name)
        self._items = [item for item in self._items if item[0] != key]
        self._first = self._index = None

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers._from_parsed(list(self._items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(self._positions(_key(name)))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


# --------------------------------------------------------------------------- messages


class _MessageMixin:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str | None:
        """The ``Call-ID`` value, or ``None`` when absent."""
        return self.headers.get("Call-ID")

    @property
    def media_type(self) -> str:
        """The body's media type from ``Content-Type`` — ``type/subtype``, lower-cased, its
        parameters left out (RFC 3261 §20.15, RFC 2045 §5.1) — or ``""`` without the field."""
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from ``CSeq``; :class:`SIPParseError` if absent/bad.
        Parsed once per distinct header text (cached, as :attr:`top_via`)."""
        cached = self.__dict__.get("_cseq")
        items = self.headers._items
        if cached is not None and cached[0] is items:
            return cached[2]  # type: ignore[no-any-return]
        value = self.headers.get("CSeq")
        if value is None:
            raise SIPParseError("no CSeq header field")
        if cached is not None and cached[1] is value:
            parsed = cached[2]
        else:
            parsed = parse_cseq(value)
        self.__dict__["_cseq"] = (items, value, parsed)
        return parsed  # type: ignore[no-any-return]

    def _tag(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            return None
        tag = NameAddr.parse(value).params.get("tag")
        return tag

    @property
    def from_tag(self) -> str | None:
        """The ``tag`` parameter of ``From`` (None if absent); SIPParseError if malformed."""
        return self._tag("From")

    @property
    def to_tag(self) -> str | None:
        """The ``tag`` parameter of ``To`` (None if absent); SIPParseError if malformed."""
        return self._tag("To")

    @property
    def vias(self) -> list[Via]:
        """Every ``Via`` value, top first; :class:`SIPParseError` if one is malformed."""
        return Via.parse_all(self.headers)

    @property
    def top_via(self) -> Via | None:
        """The first ``Via`` value, or ``None`` if there is none. Parsed once per distinct
        header text (cached): treat the result as read-only, copy it to change it."""
        cached = self.__dict__.get("_top_via")
        items = self.headers._items
        if cached is not None and cached[0] is items:
            return cached[2]  # type: ignore[no-any-return]
        raw = self.headers.get("Via")
        if raw is None:
            return None
        if cached is not None and cached[1] is raw:
            self.__dict__["_top_via"] = (items, raw, cached[2])
            return cached[2]  # type: ignore[no-any-return]
        if "," not in raw:
            via = Via._parse_plain(raw)
        elif '"' not in raw and "<" not in raw:
            # a plain Via (no blanks, commas, quotes or '<') before the first comma is the
            # first value (a quote or '<' further on: a list split_comma must read)
            via = Via._parse_plain(raw.partition(",")[0])
        else:
            via = None
        if via is None:
            top = first_in_list(raw)  # only the first value of the first field is split off
            via = None if top is None else Via.parse(top)
        self.__dict__["_top_via"] = (items, raw, via)
        return via

    def _serialize(self, start_line: str) -> bytes:
        clen = str(len(self.body))
        lines = [start_line]
        has_cl = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if has_cl:
                    continue
                has_cl = True
                value = clen
            lines.append(f"{name}: {value}")
        if not has_cl:
            lines.append(f"Content-Length: {clen}")
        lines.append("\r\n")  # joined: the last field's CRLF, then the empty line
        return "\r\n".join(lines).encode(_ENC, _ERRORS) + self.body


@dataclass(eq=True)
class Request(_MessageMixin):
    """A SIP request (RFC 3261 §7.1). ``uri`` is the Request-URI text exactly as sent."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"
    #: when the transport first sent it (``net.trace.wire_time``, s) — set by the driver
    sent_at: float | None = field(default=None, init=False, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Serialize; ``Content-Length`` is set to ``len(body)`` (added if absent)."""
        return self._serialize(f"{self.method} {self.uri} {self.version}")

    @property
    def summary(self) -> str:
        """One line for ladders: ``"INVITE sip:bob@example.com"``."""
        return f"{self.method} {self.uri}"


@dataclass(eq=True)
class Response(_MessageMixin):
    """A SIP response (RFC 3261 §7.2)."""

    status_code: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"
    #: when the transport received it (``net.trace.wire_time``, s) — set by the driver
    received_at: float | None = field(default=None, init=False, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Serialize; ``Content-Length`` is set to ``len(body)`` (added if absent)."""
        return self._serialize(f"{self.version} {self.status_code} {self.reason}")

    @property
    def summary(self) -> str:
        """One line for ladders: ``"200 OK"``."""
        return f"{self.status_code} {self.reason}".rstrip()


Message = Request | Response

# --------------------------------------------------------------------------- parsing

_VERSION_RE = compile_on_use(r"SIP/[0-9]+\.[0-9]+", re.I)
_FOLD_RE = compile_on_use(r"\r?\n[ \t]+")
_LINE_SPLIT_RE = compile_on_use(r"\r?\n")
_HEAD_END_RE = compile_on_use(rb"\r?\n\r?\n")
_LEADING_CRLF_RE = compile_on_use(rb"(?:\r?\n)+")
_DIGITS_RE = compile_on_use(r"[0-9]{1,30}")  # bounded: int() of huge strings is slow/refused


def _build(line: str, headers: Headers, body: bytes) -> Request | Response:
    """The message of start line ``line`` (RFC 3261 §7.1, §7.2) with ``headers`` and ``body``."""
    if line[:4].upper() == "SIP/":
        version, sp, rest = line.partition(" ")
        if version != "SIP/2.0" and not _VERSION_RE.fullmatch(version):
            raise SIPParseError(f"bad SIP-Version {version[:20]!r} in Status-Line")
        code, _, reason = rest.partition(" ")
        if not sp or len(code) != 3 or not (code.isdigit() and code.isascii()):  # 3 ASCII digits
            raise SIPParseError(f"bad Status-Code {code[:20]!r} (three digits required)")
        status = int(code)
        if status < 100:
            raise SIPParseError(f"Status-Code {status} out of range 100-699")
        return Response(status, reason, headers, body, version)
    parts = line.split(" ")
    if len(parts) != 3:
        raise SIPParseError(
            "Request-Line must be 'Method SP Request-URI SP SIP-Version' "
            f"(got {len(parts)} space-separated elements)"
        )
    method, uri, version = parts
    if method not in COMMON_METHODS and not TOKEN_RE.fullmatch(method):
        raise SIPParseError(f"bad Method {method[:20]!r}")
    if version != "SIP/2.0" and not _VERSION_RE.fullmatch(version):
        raise SIPParseError(f"bad SIP-Version {version[:20]!r} in Request-Line")
    try:
        check_uri(uri)  # sip/sips/tel fully checked; other schemes: scheme ":" non-space
    except SIPParseError as exc:
        raise SIPParseError(f"bad Request-URI {uri[:40]!r}: {exc.reason}") from None
    return Request(method, uri, headers, body, version)


def _parse_head(head: bytes) -> tuple[str, Headers]:
    """Parse the start line and header fields (``head`` excludes the empty line)."""
    return _parse_text(head.decode(_ENC, _ERRORS))


def _split_lines(text: str) -> list[str]:
    lines = text.split("\r\n")
    if "\n" in "".join(lines):  # a "\n" that is not part of a CRLF (faster than a count)
        lines = _LINE_SPLIT_RE.split(text)  # bare LF line ends (tolerated)
    return lines


def _parse_text(text: str) -> tuple[str, Headers]:
    """:func:`_parse_head` of the decoded head."""
    try:
        parsed = _parse_crlf_text(text)
        return _parse_lines(_LINE_SPLIT_RE.split(text)) if parsed is None else parsed
    except SIPParseError:
        # A folded line (RFC 3261 §7.3.1: a line starting with SP/HT continues the one
        # before) never parses as a header field (no ':' or a name starting with a blank),
        # so only a head that failed can hold one: unfold and parse that.
        if "\n " not in text and "\n\t" not in text:
            raise
    return _parse_lines(_split_lines(_FOLD_RE.sub(" ", text)))


def _parse_crlf_text(text: str) -> tuple[str, Headers] | None:
    """:func:`_parse_text` of a head whose lines all end with CRLF (no folded line), or None
    when a ``"\n"`` in ``text`` is not part of a CRLF. The C loop when it is built."""
    if _split_head is not None:
        split = _split_head(text, _NAME_CACHE, _name_entry)
        if split is not None:
            return split[0], _headers(split[1], split[2])
        # else a bare LF or a line without ':': the Python loop tells which
    lines = text.split("\r\n")
    if "\n" in "".join(lines):
        return None
    return _parse_lines(lines)


def _parse_lines(lines: list[str]) -> tuple[str, Headers]:
    """The start line and the header fields of the head's lines (no folded line).
    ``skinnysip.sip._fields.split_head`` does the same in C, when it is built."""
    items: list[tuple[str, str, str]] = []
    last: dict[str, int] = {}
    cache = _NAME_CACHE
    for i, line in enumerate(lines[1:]):
        name, colon, value = line.partition(":")
        if not colon:
            raise SIPParseError(f"header line without ':' {line[:40]!r}")
        try:
            key, canon = cache[name]
        except KeyError:
            key, canon = _name_entry(name)
        items.append((key, canon, value.strip(" \t")))
        last[key] = i
    return lines[0], _headers(items, last)


def _headers(items: list[tuple[str, str, str]], last: dict[str, int]) -> Headers:
    """The parsed fields ``items`` as :class:`Headers` (``last``: key → its last position)."""
    headers = _new_headers(Headers)  # as Headers._from_parsed, without the call
    # every name once (the common case): the last positions are the first ones; else the
    # first lookup builds them
    headers._items, headers._first, headers._dups, headers._index = (
        items, last if len(last) == len(items) else None, None, None)
    return headers


_new_headers = object.__new__

try:  # the C loop (setup.py builds it where a compiler is)
    from skinnysip.sip._fields import split_head as _split_head
except ImportError:  # pragma: no cover - depends on the build
    _split_head = None

#: which header-field loop the parser runs: ``"c"`` (``skinnysip.sip._fields``) or
#: ``"python"``; both give the same result
IMPLEMENTATION = "python" if _split_head is None else "c"

# raw header name as written (before ':') -> (key, canonical name); bounded memo of names
# known to be tokens: the parser's, which :meth:`Headers.add` reads too (seeded with every
# canonical spelling, so building a request finds its names here)
_NAME_CACHE: dict[str, tuple[str, str]] = {n: (n.lower(), n) for n in _KNOWN_NAMES}


def _name_entry(raw: str) -> tuple[str, str]:
    name = raw.rstrip(" \t")
    if not TOKEN_RE.fullmatch(name):
        raise SIPParseError(f"bad header name {name[:40]!r}")
    canon = _CANONICAL.get(name.lower(), name)
    entry = (canon.lower(), canon)
    if len(_NAME_CACHE) < 4096:
        _NAME_CACHE[raw] = entry
    return entry


def _content_length(headers: Headers) -> int | None:
    first = headers._first
    i = (headers._first_positions() if first is None else first).get("content-length")
    if i is None:
        return None
    value = headers._items[i][2]
    if headers._dups is not None and "content-length" in headers._dups:
        values = headers.get_all("Content-Length")
        if len(set(values)) > 1:
            raise SIPParseError(f"several different Content-Length values {values[:4]!r}")
    if len(value) <= 30 and value.isdigit() and value.isascii():  # 1*30 ASCII digits
        return int(value)
    raise SIPParseError(f"bad Content-Length {value[:20]!r}")


def _find_head_end(buf: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """``(end of header section, start of body)`` or ``None``; CRLF, bare LF or a mix."""
    i = buf.find(b"\r\n\r\n", start)
    j = buf.find(b"\n\n", start, len(buf) if i < 0 else i)
    if j >= 0:
        return (j - 1 if j > 0 and buf[j - 1] == 13 else j), j + 2
    if i >= 0:
        return i, i + 4
    m = _HEAD_END_RE.search(buf, start)  # "\n\r\n"
    return (m.start(), m.end()) if m else None


def parse_message(data: bytes, max_size: int = 65536) -> Request | Response:
    """Parse one SIP message from a datagram (or one already framed message).

    Datagram rules (RFC 3261 §18.3): CRLFs before the start line are skipped; without
    ``Content-Length`` the body is the rest of the datagram; octets beyond
    ``Content-Length`` are discarded; a ``Content-Length`` larger than what is present
    is an error. Tolerated: bare LF line ends, and a datagram whose header section ends
    with its last line (no empty line, as in the RFC 5118 archive).

    Raises :class:`SIPParseError` (with ``reason``) on anything malformed, on an empty
    or keep-alive-only datagram, and on ``len(data) > max_size`` octets.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SIPParseError("message must be bytes")
        data = bytes(data)
    if len(data) > max_size:
        raise SIPParseError(f"message of {len(data)} octets exceeds the {max_size}-octet limit")
    if data[:1] in b"\r\n":  # also b"": empty
        m = _LEADING_CRLF_RE.match(data)
        if m:
            data = data[m.end():]
    if not data:
        raise SIPParseError("empty message (keep-alive)")
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        text = data[:i].decode(_ENC, _ERRORS)
        try:
            parsed = _parse_crlf_text(text)
        except SIPParseError:
            parsed = _parse_text(text)  # a folded line? (else the same error)
        if parsed is None:  # a bare LF: the head ends at the CRLF CRLF unless a "\n\n" comes first
            i = -1
        else:
            start, headers = parsed
            rest = data[i + 4:]
    if i < 0:
        end = _find_head_end(data, 0)
        if end is None:
            if data.endswith(b"\n"):
                head, rest = data.rstrip(b"\r\n"), b""
            else:
                raise SIPParseError("no end of header section (missing empty line)")
        else:
            head, rest = data[: end[0]], data[end[1]:]
        start, headers = _parse_head(head)
    clen = _content_length(headers)
    if clen is None:
        body = rest
    elif clen > len(rest):
        raise SIPParseError(f"Content-Length {clen} larger than the {len(rest)} body octets present")
    else:
        body = rest[:clen]
    return _build(start, headers, body)


class StreamParser:
    """Incremental SIP framing on a stream transport (TCP/TLS, RFC 3261 §18.3).

    Feed bytes as they arrive; :meth:`feed` returns the messages completed so far and
    keeps the rest. CRLF keep-alives between messages (RFC 5626 §4.4.1) are skipped.
    ``Content-Length`` is mandatory on streams. ``max_message_size`` caps the header
    section and header+body of one message (octets).

    After :meth:`feed` raised :class:`SIPParseError` the stream cannot be resynchronised:
    the caller must close the connection.
    """

    def __init__(self, max_message_size: int = 65536) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._scan_from = 0
        self._pending: tuple[str, Headers, int, int] | None = None  # start, headers, body start, length
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as part of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add ``data``; return the complete messages (possibly none).

        Raises :class:`SIPParseError` on a malformed or oversize message, or when called
        again after an error.
        """
        if self._failed is not None:
            raise SIPParseError(f"stream already failed: {self._failed}")
        try:
            return self._feed(data)
        except SIPParseError as exc:
            self._failed = exc.reason
            raise

    def _feed(self, data: bytes) -> list[Request | Response]:
        buf = self._buf
        buf += data
        out: list[Request | Response] = []
        while True:
            if self._pending is None:
                # skip keep-alive CRLFs before a message
                i = 0
                n = len(buf)
                while i < n and buf[i] in (13, 10):
                    i += 1
                if i:
                    del buf[:i]
                    self._scan_from = 0
                if not buf:
                    return out
                m = _find_head_end(buf, max(0, self._scan_from - 3))
                if m is None:
                    if len(buf) > self.max_message_size:
                        raise SIPParseError(
                            f"header section exceeds the {self.max_message_size}-octet limit"
                        )
                    self._scan_from = len(buf)
                    return out
                head_end, body_start = m
                if body_start > self.max_message_size:
                    raise SIPParseError(
                        f"header section exceeds the {self.max_message_size}-octet limit"
                    )
                start, headers = _parse_head(bytes(buf[:head_end]))
                clen = _content_length(headers)
                if clen is None:
                    raise SIPParseError("no Content-Length on a stream transport (RFC 3261 §18.3)")
                if body_start + clen > self.max_message_size:
                    raise SIPParseError(
                        f"message of {body_start + clen} octets exceeds the "
                        f"{self.max_message_size}-octet limit"
                    )
                self._pending = (start, headers, body_start, clen)
            start, headers, body_start, clen = self._pending
            if len(buf) < body_start + clen:
                return out
            body = bytes(buf[body_start: body_start + clen])
            del buf[: body_start + clen]
            self._pending = None
            self._scan_from = 0
            out.append(_build(start, headers, body))


# --------------------------------------------------------------------------- validation

_SINGLE = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type", "Expires")


def validate_message(message: Request | Response) -> None:
    """Check what a UA checks before acting on a message (RFC 3261 §8.1.3, §8.2, §20).

    * ``Call-ID``, ``CSeq``, ``From``, ``To`` and at least one ``Via`` present; those
      and ``Max-Forwards``, ``Content-Type``, ``Expires`` not repeated;
    * ``CSeq`` number 0..2**32-1 and (requests) method equal to the Request-Line's;
    * ``Max-Forwards`` 0..255, ``Expires`` 0..2**32-1;
    * ``From``, ``To``, ``Contact``, ``Route``, ``Record-Route`` parse as name-addr /
      addr-spec (RFC 3261 §20.10), every ``Via`` parses.

    The SIP version is not checked here (a UAS answers 505, RFC 3261 §21.5.6).
    Raises :class:`SIPParseError` naming the first problem.
    """
    h = message.headers
    for name in ("Call-ID", "CSeq", "From", "To"):
        if name not in h:
            raise SIPParseError(f"missing {name} header field")
    for name in _SINGLE:
        got = h.get_all(name)
        if len(got) > 1:
            raise SIPParseError(f"{name} header field appears {len(got)} times")
    for name in ("From", "To"):
        values = split_comma(h.get(name) or "")
        if len(values) != 1:
            raise SIPParseError(f"{name} must hold exactly one value")
        NameAddr.parse(values[0])
    number, method = message.cseq
    if isinstance(message, Request) and method != message.method:
        raise SIPParseError(f"CSeq method {method!r} differs from Request-Line method {message.method!r}")
    for name, upper in (("Max-Forwards", 255), ("Expires", 2**32 - 1)):
        value = h.get(name)
        if value is not None and (not _DIGITS_RE.fullmatch(value) or int(value) > upper):
            raise SIPParseError(f"{name} value {value[:20]!r} is not an integer 0..{upper}")
    if not message.vias:
        raise SIPParseError("missing Via header field")
    for name in ("Contact", "Route", "Record-Route"):
        for value in h.values(name):
            if name == "Contact" and value == "*":
                continue
            addr = NameAddr.parse(value)
            expires = addr.params.get("expires")
            if expires is not None and (not _DIGITS_RE.fullmatch(expires) or int(expires) > 2**32 - 1):
                raise SIPParseError(f"Contact expires {expires[:20]!r} is not an integer 0..2**32-1")
