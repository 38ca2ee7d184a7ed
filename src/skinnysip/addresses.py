"""Small helpers for host names and IP literals, shared by SIP, SCCP, the API and the CLI.

Convention: a host is kept *without* IPv6 brackets internally (``"::1"``) and gets them
only where it is written next to a port or into a URI (RFC 3986 §3.2.2, RFC 3261 §25.1).
The SIP ``hostport`` grammar (parsing ``host[:port]``) lives in :mod:`skinnysip.sip.uri`.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from skinnysip._regex import compile_on_use

__all__ = ["HOSTNAME_RE", "check_host", "format_host", "hostport", "is_ip", "is_ipv6", "strip_brackets"]

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
#: RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, optional final dot.
HOSTNAME_RE = compile_on_use(rf"{_LABEL}(?:\.{_LABEL})*\.?")


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: an IPv4 dotted quad (no leading zeros), as a JSON Schema / Python regex fragment
IPV4_PATTERN = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9a-fA-F]{1,4}"
#: an IPv6 address in its full or compressed hex form (no embedded IPv4), as a regex fragment
IPV6_PATTERN = "(?:" + "|".join([
    f"(?:{_H}:){{7}}{_H}", f"(?:{_H}:){{1,7}}:", f"(?:{_H}:){{1,6}}:{_H}", f"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
    f"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}", f"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}", f"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
    f"{_H}:(?::{_H}){{1,6}}", f":(?:(?::{_H}){{1,7}}|:)"]) + ")"
#: the JSON Schema of an IP literal field (an API's ``localIp``): IPv4, or IPv6 with or without brackets
IP_LITERAL_SCHEMA: dict[str, Any] = {"pattern": rf"^(?:{IPV4_PATTERN}|{IPV6_PATTERN}|\[{IPV6_PATTERN}\])$"}


def strip_brackets(host: str) -> str:
    """``host`` without enclosing IPv6 brackets; anything else unchanged.

    >>> strip_brackets("[::1]")
    '::1'
    >>> strip_brackets("example.com")
    'example.com'
    """
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def format_host(host: str) -> str:
    """``host`` as written before ``:port`` or in a URI: IPv6 literals in brackets.

    Already-bracketed hosts, IPv4 literals and names are returned unchanged.

    >>> format_host("::1")
    '[::1]'
    >>> format_host("[::1]")
    '[::1]'
    >>> format_host("192.0.2.1")
    '192.0.2.1'
    """
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def hostport(host: str, port: int) -> str:
    """Format ``host:port``, bracketing IPv6 literals (RFC 3986 §3.2.2).

    >>> hostport("::1", 5060)
    '[::1]:5060'
    >>> hostport("192.0.2.1", 5060)
    '192.0.2.1:5060'
    >>> hostport("example.com", 5060)
    'example.com:5060'
    """
    return f"{format_host(host)}:{port}"


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return None


def normal_host(host: str) -> str:
    """``host`` in one spelling, for comparing: an IP literal as :mod:`ipaddress` writes it
    (brackets dropped, IPv6 compressed), a name in lower case.

    >>> normal_host("[2001:DB8:0::1]"), normal_host("PBX.example.com")
    ('2001:db8::1', 'pbx.example.com')
    """
    address = _ip_address(host)
    return str(address) if address is not None else host.lower()


def is_ip(host: str) -> bool:
    """True if ``host`` is an IPv4 or IPv6 literal (IPv6 brackets allowed).

    >>> is_ip("192.0.2.1"), is_ip("[::1]"), is_ip("example.com")
    (True, True, False)
    """
    return _ip_address(host) is not None


def ip_literal(value: str) -> str:
    """``value`` as an IPv4 or IPv6 literal in :mod:`ipaddress`'s spelling (brackets dropped,
    IPv6 compressed). Raises ``ValueError`` ("not an IPv4 or IPv6 address") for anything else.

    >>> ip_literal("[2001:DB8::1]"), ip_literal(" 127.0.0.2 ")
    ('2001:db8::1', '127.0.0.2')
    """
    address = _ip_address(value.strip())
    if address is None:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address")
    return str(address)


def is_ipv6(host: str) -> bool:
    """True if ``host`` is an IPv6 literal (brackets allowed).

    >>> is_ipv6("::1"), is_ipv6("[2001:db8::1]"), is_ipv6("192.0.2.1")
    (True, True, False)
    """
    return isinstance(_ip_address(host), ipaddress.IPv6Address)


def check_host(value: str) -> str:
    """Validate a host: an RFC 1123 name, an IPv4 or an IPv6 address (brackets optional).

    Surrounding whitespace is ignored. Returns the host without brackets; raises
    ``ValueError`` otherwise (brackets around anything but IPv6, all-digit names, names
    longer than 253 characters, ports).

    >>> check_host(" example.com ")
    'example.com'
    >>> check_host("[2001:db8::1]")
    '2001:db8::1'
    >>> check_host("host:5060")
    Traceback (most recent call last):
        ...
    ValueError: not a host name, IPv4 or IPv6 address
    """
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        ipaddress.IPv6Address(v[1:-1])  # raises ValueError
        return v[1:-1]
    if is_ip(v):
        return v
    if len(v) > 253 or not HOSTNAME_RE.fullmatch(v) or v.replace(".", "").isdigit():
        raise ValueError("not a host name, IPv4 or IPv6 address")
    return v


_SOURCE_PROBLEMS = {errno.EADDRNOTAVAIL: "not an address of this host", errno.EADDRINUSE: "port in use",
                    errno.EACCES: "permission denied (a port below 1024 needs privileges)"}


def source_problem(exc: BaseException | None) -> str | None:
    """Why a local (source) address could not be bound (an ``OSError`` from ``bind`` or a
    connect with a local address), in a few words; None when ``exc`` is no such problem."""
    code = getattr(exc, "errno", None)
    return _SOURCE_PROBLEMS.get(code) if isinstance(code, int) else None


def family_mismatch(source: str, remote: str) -> str | None:
    """Why ``source`` (an IP literal) cannot send to ``remote`` (an IP literal or a name): they
    are of different families; None when they are not (or ``remote`` is a name).

    >>> family_mismatch("127.0.0.2", "[::1]")
    'the source address 127.0.0.2 is IPv4; ::1 is IPv6 (different families)'
    >>> family_mismatch("::1", "::1"), family_mismatch("127.0.0.2", "pbx.example.net")
    (None, None)
    """
    if not is_ip(remote) or is_ipv6(source) == is_ipv6(remote):
        return None
    return (f"the source address {strip_brackets(source)} is IPv{6 if is_ipv6(source) else 4}; "
            f"{strip_brackets(remote)} is IPv{6 if is_ipv6(remote) else 4} (different families)")
