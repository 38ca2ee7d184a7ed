"""SIP, SIPS and tel URIs and the name-addr form (RFC 3261 §19.1, §20.10, §25.1; RFC 3966).

``SipURI.parse("sips:alice%40home@[::1]:5061;transport=tcp?Subject=hi")`` gives
``scheme="sips", user="alice@home", host="::1", port=5061, params={"transport": "tcp"},
headers={"Subject": "hi"}``; ``str()`` serializes it back (equivalently, RFC 3261 §19.1.4).

Conventions:

* ``user`` and ``password`` are stored unescaped (``%40`` → ``@``); ``str()`` escapes
  every character the user/password grammar does not allow unescaped.
* ``host`` is stored without IPv6 brackets (``"::1"``); ``str()`` adds them.
* Parameter names are lower-cased (case-insensitive, RFC 3261 §19.1.4); parameter and
  URI-header values are kept as written (escapes included); a flag parameter maps to
  ``None``.
* For ``tel:`` (RFC 3966) the number is in ``user`` and ``host`` is ``""``.

Errors: :class:`~skinnysip.sip.syntax.SIPParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skinnysip._regex import compile_on_use
from skinnysip.addresses import format_host
from skinnysip.sip.syntax import (
    TOKEN_RE,
    SIPParseError,
    parse_params,
    quote_string,
    split_checked_params,
    unquote_string,
)

__all__ = ["NameAddr", "SipURI", "check_uri", "is_user", "parse_uri", "uri_of", "user_of"]

_SCHEME_RE = compile_on_use(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_ABSOLUTE_RE = compile_on_use(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
# RFC 3261 §25.1 user / password, plus '#' accepted liberally (phones send "*97#").
# (written unrolled, "(?=first char)C*(?:%XX C*)*", for speed: the same language as "(?:C|%XX)+")
_USER_RE = compile_on_use(
    r"(?=[A-Za-z0-9\-_.!~*'()&=+$,;?/#%])[A-Za-z0-9\-_.!~*'()&=+$,;?/#]*(?:%[0-9A-Fa-f]{2}[A-Za-z0-9\-_.!~*'()&=+$,;?/#]*)*"
)
_PASSWORD_RE = compile_on_use(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_HOSTNAME_RE = compile_on_use(r"[A-Za-z0-9_](?:[A-Za-z0-9\-_.]*)")
# hex digits, '.' and ':' with at least one ':' — written so that no input backtracks
# (the look-ahead finds the ':', the possessive run takes the rest), also inside longer patterns
_IPV6_RE = compile_on_use(r"(?=[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]*+")
_PORT_RE = compile_on_use(r"[0-9]{1,5}")
_TEL_RE = compile_on_use(r"\+?[0-9A-Fa-f*#\-.()]+")
_HEADER_RE = compile_on_use(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")


def is_user(text: str) -> bool:
    """Whether ``text`` is the user part of a SIP URI as written (RFC 3261 §25.1 ``user``:
    unreserved, user-unreserved and ``%XX`` escapes, ``#`` too): what a URI's ``user@`` may
    hold, so no ``@``, ``:``, blank or control character."""
    return _USER_RE.fullmatch(text) is not None


# Fast path: the common ``sip:``/``sips:`` URI, ``[user@]host[:port]*(;name[=value])``,
# built from the very patterns the full parser checks (user, host, IPv6 reference, port
# number, parameter name) with *narrower* classes where the full parser is liberal (no
# password, no ``?headers``, no blanks, parameter values of RFC 3261 §25.1 ``paramchar``
# only, no ``@``/``?``/``=``/``"`` in them). Whatever it matches the full parser accepts,
# giving the same fields; whatever it does not match goes to the full parser, which judges
# it exactly as before.
#: a port 0..65535 in one to five digits (leading zeros allowed, as ``_PORT_RE`` + range check)
_PORT_NUMBER = r"(?:[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PLAIN_SIP_URI_RE = compile_on_use(
    r"([Ss][Ii][Pp][Ss]?):"
    rf"(?:(?=[^@]*@)({_USER_RE.pattern})@)?"  # (the look-ahead spares a backtrack when there is no '@')
    rf"(?:({_HOSTNAME_RE.pattern})|\[({_IPV6_RE.pattern})\])"
    rf"(?::({_PORT_NUMBER}))?"
    rf"((?:;{TOKEN_RE.pattern}(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]*)?)*+)"  # possessive: linear on a miss
)

_USER_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/")
_PASSWORD_SAFE = _USER_SAFE - frozenset(";?/")


def _escape(text: str, safe: frozenset[str]) -> str:
    if safe.issuperset(text):  # the usual case, checked in C
        return text
    out = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    from urllib.parse import unquote  # here: urllib.parse is ~1 ms of every start-up, escapes are rare

    return unquote(text, encoding="utf-8", errors="surrogateescape")


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (IPv6 in brackets); return host without brackets and the port.

    Raises :class:`SIPParseError` on a bad host or port (RFC 3261 §25.1 ``hostport``;
    the three-colon form of RFC 5118 §4.10 is tolerated).
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SIPParseError(f"unterminated IPv6 reference in {text[:60]!r}")
        host = text[1:close]
        if not _IPV6_RE.fullmatch(host):
            raise SIPParseError(f"bad IPv6 reference {host[:60]!r}")
        rest = text[close + 1:]
    else:
        host, colon, port_text = text.partition(":")
        if not _HOSTNAME_RE.fullmatch(host):
            raise SIPParseError(f"bad host {host[:60]!r}")
        rest = colon + port_text
    if not rest:
        return host, None
    if rest[0] != ":" or not _PORT_RE.fullmatch(rest[1:]):
        raise SIPParseError(f"bad port in {text[:60]!r}")
    port = int(rest[1:])
    if port > 65535:
        raise SIPParseError(f"port {port} out of range")
    return host, port


@dataclass
class SipURI:
    """A ``sip:``, ``sips:`` or ``tel:`` URI (RFC 3261 §19.1.1, RFC 3966).

    ``port`` is ``None`` when not written; ``params`` holds uri-parameters in order
    (flags → ``None``); ``headers`` holds the ``?name=value&...`` URI headers.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipURI:
        """Parse a sip/sips/tel URI; raises :class:`SIPParseError` if malformed or another scheme."""
        if not isinstance(text, str):
            raise SIPParseError("URI must be text")
        plain = _PLAIN_SIP_URI_RE.fullmatch(text)
        if plain is not None:
            scheme_text, user_text, hostname, ipv6, port_text, ptext = plain.groups()
            return cls(scheme_text.lower(), None if user_text is None else _unescape(user_text), None,
                       ipv6 if hostname is None else hostname, None if port_text is None else int(port_text),
                       split_checked_params(ptext), {})
        m = _SCHEME_RE.match(text)
        if m is None:
            raise SIPParseError(f"no URI scheme in {text[:60]!r}")
        scheme = m.group(1).lower()
        rest = text[m.end():]
        if scheme == "tel":
            number, semi, ptext = rest.partition(";")
            if not _TEL_RE.fullmatch(number):
                raise SIPParseError(f"bad telephone number {number[:40]!r}")
            return cls("tel", number, None, "", None, parse_params(semi + ptext) if semi else {})
        if scheme not in ("sip", "sips"):
            raise SIPParseError(f"unsupported URI scheme {scheme!r} (sip, sips or tel expected)")
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            user_text, colon, pw_text = userinfo.partition(":")
            if not _USER_RE.fullmatch(user_text):
                raise SIPParseError(f"bad user part {user_text[:40]!r}")
            user = _unescape(user_text)
            if colon:
                if not _PASSWORD_RE.fullmatch(pw_text):
                    raise SIPParseError("bad password part")
                password = _unescape(pw_text)
        rest, q, htext = rest.partition("?")
        hostport, semi, ptext = rest.partition(";")
        host, port = parse_hostport(hostport)
        params = parse_params(";" + ptext) if semi else {}
        headers: dict[str, str] = {}
        if q:
            for item in htext.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq or not _HEADER_RE.fullmatch(name) or not _HEADER_RE.fullmatch(value):
                    raise SIPParseError(f"bad URI header {item[:40]!r}")
                headers[name] = value
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(_escape(self.user, _USER_SAFE))
                if self.password is not None:
                    parts.append(":")
                    parts.append(_escape(self.password, _PASSWORD_SAFE))
                parts.append("@")
            parts.append(format_host(self.host))
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    @property
    def transport(self) -> str | None:
        """The ``transport`` uri-parameter, lower-cased, or ``None``."""
        value = self.params.get("transport")
        return value.lower() if value else None


def parse_uri(text: str) -> SipURI | str:
    """Parse any URI: sip/sips/tel → :class:`SipURI`; other schemes → the checked text.

    Raises :class:`SIPParseError` if ``text`` is not ``scheme ":" non-space-chars``.
    """
    m = _SCHEME_RE.match(text)
    if m is None:
        raise SIPParseError(f"no URI scheme in {text[:60]!r}")
    if m.group(1).lower() in ("sip", "sips", "tel"):
        return SipURI.parse(text)
    if not _ABSOLUTE_RE.fullmatch(text):
        raise SIPParseError(f"bad URI {text[:60]!r}")
    return text


def check_uri(text: str) -> None:
    """Check ``text`` as :func:`parse_uri` does (same acceptance, same errors) without
    building the result — for the Request-URI, which is kept as text (RFC 3261 §25.1
    ``Request-URI``). Common ``sip:``/``sips:`` URIs are recognised by one regex; anything
    else is parsed in full. Raises :class:`SIPParseError`."""
    if _PLAIN_SIP_URI_RE.fullmatch(text) is None:
        parse_uri(text)


_QUOTED_RE = compile_on_use(r'"((?:[^"\\]|\\.)*)"', re.S)


@dataclass
class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters (RFC 3261 §20.10, §20.20).

    Used for From, To, Contact, Route, Record-Route, Refer-To, ... ``display_name`` is
    unquoted and unescaped (``None`` if absent); ``uri`` is a :class:`SipURI` for
    sip/sips/tel and the URI text for other schemes; ``params`` are the header
    parameters after the URI (``tag``, ``expires``, ``q``, ...), names lower-cased.
    """

    display_name: str | None
    uri: SipURI | str
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one value; raises :class:`SIPParseError` if malformed.

        Liberal where RFC 4475 allows it: an unquoted display name may hold any
        characters but ``"`` and ``<`` (§3.1.2.15), and spaces just inside ``<...>`` are
        ignored (§3.1.2.14). In addr-spec form (no ``<>``) the URI ends at the first
        ``;`` (RFC 3261 §20.10), and a SIP URI with ``?`` headers is rejected.
        """
        if not isinstance(text, str):
            raise SIPParseError("name-addr must be text")
        s = text.strip(" \t")
        display: str | None = None
        if s.startswith('"'):
            m = _QUOTED_RE.match(s)
            if m is None:
                raise SIPParseError("unterminated quoted display name")
            display = unquote_string(m.group(0))
            rest = s[m.end():].lstrip(" \t")
            if not rest.startswith("<"):
                raise SIPParseError("quoted display name not followed by '<'")
        else:
            lt = s.find("<")
            if lt < 0:
                uri_text, semi, ptext = s.partition(";")
                uri_text = uri_text.rstrip(" \t")
                if uri_text[:4].lower() in ("sip:", "sips") and "?" in uri_text:
                    raise SIPParseError("SIP URI with headers must be enclosed in <> (RFC 3261 §20)")
                if "," in uri_text:
                    raise SIPParseError("URI with a comma must be enclosed in <> (RFC 3261 §20)")
                return cls(None, parse_uri(uri_text), parse_params(semi + ptext) if semi else {})
            display = s[:lt].strip(" \t") or None
            if display is not None and '"' in display:
                raise SIPParseError("stray '\"' in display name")
            rest = s[lt:]
        gt = rest.find(">")
        if gt < 0:
            raise SIPParseError("unterminated '<' in name-addr")
        uri = parse_uri(rest[1:gt].strip(" \t"))
        ptext = rest[gt + 1:]
        return cls(display, uri, parse_params(ptext) if ptext.strip(" \t") else {})

    def __str__(self) -> str:
        parts = []
        if self.display_name is not None:
            parts.append(quote_string(self.display_name) + " ")
        parts.append(f"<{self.uri}>")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(parts)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or ``None``."""
        return self.params.get("tag")

    @property
    def instance(self) -> str | None:
        """The instance-id of a Contact's ``+sip.instance`` parameter (RFC 5626 §4.1, RFC 5627
        §4.1): the quoted ``"<urn:…>"`` without its quotes and angle brackets, as given
        (compared case-sensitively); None when absent or empty."""
        raw = self.params.get("+sip.instance")
        if raw is None:
            return None
        value = unquote_string(raw.strip())
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        return value.strip() or None


def uri_of(value: str | None) -> str:
    """The URI of a name-addr or addr-spec header value (From, To…; RFC 3261 §20.10) as text,
    its parameters (tag…) cut; the value as it is when it does not parse, "" for none."""
    if not value:
        return ""
    try:
        return str(NameAddr.parse(value).uri)
    except SIPParseError:
        return value


def user_of(value: str | None) -> str | None:
    """The user part of the SIP/SIPS URI in a name-addr or addr-spec header value (From, To,
    Refer-To…; RFC 3261 §20.10), None when the value has none or does not parse."""
    try:
        uri = NameAddr.parse(value or "").uri
    except SIPParseError:
        return None
    return uri.user if isinstance(uri, SipURI) else None
