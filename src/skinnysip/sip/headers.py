"""Structured header values: Via (RFC 3261 §20.42, §18.2.1; RFC 3581 rport) and CSeq (§20.16).

Also re-exports the lexical helpers :func:`split_comma` and :func:`parse_params` from
:mod:`skinnysip.sip.syntax`. Errors: :class:`~skinnysip.sip.syntax.SIPParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from skinnysip._regex import compile_on_use
from skinnysip.addresses import format_host
from skinnysip.sip.syntax import (
    COMMON_METHODS,
    TOKEN_RE,
    SIPParseError,
    parse_params,
    split_checked_params,
    split_comma,
    unquote_string,
)
from skinnysip.sip.uri import _HOSTNAME_RE, _IPV6_RE, _PORT_NUMBER, _PORT_RE, parse_hostport

__all__ = ["BRANCH_MAGIC_COOKIE", "Via", "parse_cseq", "parse_params", "split_comma"]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 transactions start with this.
BRANCH_MAGIC_COOKIE = "z9hG4bK"

_TOKEN = TOKEN_RE.pattern
_VIA_RE = compile_on_use(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[^\]]*\]|[^\s:;\[\]]+)(?:[ \t]*:[ \t]*([0-9]+))?[ \t]*(;.*)?",
    re.S,
)
_CSEQ_RE = compile_on_use(rf"[ \t]*([0-9]{{1,30}})[ \t]+({_TOKEN})[ \t]*")
# warning-value (RFC 3261 §20.43, §25.1): 3DIGIT SP warn-agent SP warn-text (a quoted-string)
# (a pattern, compiled on first use: most runs never read a Warning)
_WARNING_RE = compile_on_use(r'([0-9]{3})[ \t]+([^ \t"]+)[ \t]+("(?:[^"\\]|\\.)*")')
# Fast path: the common ``SIP/2.0/transport host[:port]*(;name[=value])`` with single spaces,
# from the patterns the full parse checks (token, host name, IPv6 reference, port number)
# and parameter values narrower than the full parser's (token characters, ``:``, ``[``,
# ``]``: no blanks, commas, quotes, ``;``). What it matches the full parse accepts, with
# the same fields (rport's range checked after the match); the rest goes the full way.
_PLAIN_VIA_RE = compile_on_use(
    rf"SIP/2\.0/({_TOKEN}) (?:({_HOSTNAME_RE.pattern})|\[({_IPV6_RE.pattern})\])(?::({_PORT_NUMBER}))?"
    rf"((?:;{_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]*)?)*+)"  # possessive: linear on a miss
)


def _plain_via_python(value: str) -> tuple[str, str, int | None, dict[str, str | None]] | None:
    """The parts of a plain Via value — (transport upper-cased, host without brackets, port
    or None, parameters) — when ``_PLAIN_VIA_RE`` matches it, else None. The reference for
    the C extension's ``plain_via``, used in its place where it is not built."""
    plain = _PLAIN_VIA_RE.fullmatch(value)
    if plain is None:
        return None
    transport, hostname, ipv6, port_text, ptext = plain.groups()
    return (transport.upper(), ipv6 if hostname is None else hostname, None if port_text is None else int(port_text),
            split_checked_params(ptext))


try:  # the same in C (sip/_fields.c), built by setup.py where a compiler is
    from skinnysip.sip._fields import plain_via as _plain_via
except ImportError:  # pragma: no cover - the C extension is optional
    _plain_via = _plain_via_python


class _HasValues(Protocol):
    """What :meth:`Via.parse_all` needs of :class:`skinnysip.sip.message.Headers`."""

    def values(self, name: str) -> list[str]: ...


@dataclass
class Via:
    """One ``Via`` value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``.

    ``protocol`` is ``"SIP/2.0"``; ``transport`` is upper-cased (``"UDP"``, ``"TCP"``,
    ``"TLS"``, ``"SCTP"``, ``"WS"``, unknown tokens kept); ``host`` has no IPv6 brackets;
    ``port`` is ``None`` when absent; ``params`` are lower-cased names → values
    (``None`` for flags such as a bare ``rport``).
    """

    protocol: str = "SIP/2.0"
    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value (not a comma list); raises :class:`SIPParseError`."""
        if not isinstance(value, str):
            raise SIPParseError("Via must be text")
        via = cls._parse_plain(value)
        if via is not None:
            return via
        m = _VIA_RE.fullmatch(value)
        if m is None:
            raise SIPParseError(f"bad Via value {value[:60]!r}")
        name, version, transport, host_text, port_text, ptext = m.groups()
        hostport = host_text if port_text is None else f"{host_text}:{port_text}"
        host, port = parse_hostport(hostport)
        params = parse_params(ptext) if ptext else {}
        rport = params.get("rport")
        if rport is not None and not (_PORT_RE.fullmatch(rport) and int(rport) <= 65535):
            raise SIPParseError(f"bad rport value {rport[:20]!r}")
        return cls(f"{name}/{version}", transport.upper(), host, port, params)

    @classmethod
    def _parse_plain(cls, value: str) -> Via | None:
        """:meth:`parse`'s fast path: the Via when ``value`` is a plain one (see
        ``_PLAIN_VIA_RE``; then it is also a whole field's only value), else None."""
        plain = _plain_via(value)
        if plain is None:
            return None
        transport, host, port, params = plain
        rport = params.get("rport")
        if rport is not None and not (rport.isdigit() and len(rport) <= 5 and int(rport) <= 65535):
            return None
        return cls("SIP/2.0", transport, host, port, params)

    @staticmethod
    def parse_all(headers: _HasValues) -> list[Via]:
        """Every Via value of ``headers`` (all fields, comma lists split), top first."""
        return [Via.parse(v) for v in headers.values("Via")]

    def __str__(self) -> str:
        out = f"{self.protocol}/{self.transport} {format_host(self.host)}"
        if self.port is not None:
            out += f":{self.port}"
        for name, value in self.params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        return out

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (transaction ID, RFC 3261 §17.1.3), or ``None``."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (RFC 3261 §18.2.1), as written, or ``None``."""
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        """RFC 3581: ``None`` if absent, ``True`` for the bare flag, else the port number."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return True if value is None else int(value)

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as in the Via (IPv6 bracketed)."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"


def parse_cseq(value: str) -> tuple[int, str]:
    """Parse a ``CSeq`` value into ``(sequence number, method)`` (RFC 3261 §20.16).

    The number must fit in 32 bits unsigned (RFC 3261 §8.1.1.5). Raises
    :class:`SIPParseError`.
    """
    number_text, space, method = value.partition(" ")
    # fast path: "<at most 9 ASCII digits> <common method>" (always < 2**32, a token)
    if space and method in COMMON_METHODS and len(number_text) < 10 and number_text.isdigit() and number_text.isascii():
        return int(number_text), method
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SIPParseError(f"bad CSeq value {value[:40]!r}")
    number = int(m.group(1))
    if number > 2**32 - 1:
        raise SIPParseError(f"CSeq number {m.group(1)[:20]} larger than 2**32-1")
    return number, m.group(2)


def parse_warning(value: str) -> list[tuple[int, str, str]]:
    """The warning-values of a ``Warning`` header value (RFC 3261 §20.43): ``(warn-code,
    warn-agent, warn-text)`` each, the agent as written (``host[:port]`` or a pseudonym) and
    the text unquoted. Raises :class:`SIPParseError` for a value that is not a list of them.

    >>> parse_warning('399 pbx.example.com:5060 "Max-Forwards reached", 307 isi.edu "foo"')
    [(399, 'pbx.example.com:5060', 'Max-Forwards reached'), (307, 'isi.edu', 'foo')]
    """
    items = split_comma(value)
    if not items:
        raise SIPParseError("empty Warning value")
    out = []
    for item in items:
        m = _WARNING_RE.fullmatch(item)
        if m is None:
            raise SIPParseError(f"bad Warning value {item[:60]!r}")
        out.append((int(m.group(1)), m.group(2), unquote_string(m.group(3))))
    return out
