"""Target policy: which hosts an operation may connect to (SIP probes, SCCP probes, phones).

A probe service is an SSRF tool by nature (OWASP "Server-Side Request Forgery"): whoever can
reach the HTTP API can make the server connect anywhere. :class:`TargetPolicy` decides, for a
host name and the addresses it resolves to, whether a connection is allowed, and why not.

The decision (:meth:`TargetPolicy.decide_address`) is pure: an address in, a :class:`Decision`
out. Rules, in order:

1. The address is taken for what it *means*: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible
   (``::a.b.c.d``) and NAT64 (``64:ff9b::/96``, RFC 6052) IPv6 addresses are judged as the IPv4
   address inside; the numeric forms the C library accepts for a "host name" — one to four
   parts in decimal, ``0x`` hex or ``0`` octal (``2130706433``, ``0xa9fea9fe``,
   ``0xa9.0xfe.0xa9.0xfe``, ``0251.0376.0251.0376``, ``127.1``; inet_aton(3)) — are the IPv4
   address they stand for (:func:`parse_address`).
2. Every rule is a network with an action (allow/deny): the explicit ``allow``/``deny`` lists
   and, when ``restrict`` is on (the server listens beyond loopback), the default denials of
   :data:`DEFAULT_DENIED` (cloud metadata addresses, link-local, multicast, broadcast,
   unspecified/"this network", reserved, loopback, private, shared CGNAT, IPv6 ULA/site-local).
   The most specific network containing the address decides (longest prefix, as a routing
   table); on a tie an explicit rule beats a default one and deny beats allow. No rule: allowed.
   So ``--allow 10.0.0.0/8`` lifts the default denial of 10/8 but not of 169.254.169.254, and
   ``--deny 0.0.0.0/0 --deny ::/0 --allow 192.0.2.0/24`` allows that one network only.
3. Host names: an explicit ``deny`` name (``pbx.example.com``, or ``*.example.com`` /
   ``.example.com`` for the domain and everything under it) refuses the target; an explicit
   ``allow`` name lifts the *default* loopback/private denials for its addresses (not the
   metadata, link-local, multicast, broadcast, unspecified or reserved ones, and not explicit
   address denials). With ``restrict`` the cloud metadata names (``metadata.google.internal``…)
   are refused by name too.

Resolution (:meth:`TargetPolicy.resolve`) asks the system resolver (``getaddrinfo``) *once*
and returns the checked addresses; callers connect to those, not to the name again, so a DNS
answer that changes between check and connect (DNS rebinding) cannot bypass the policy. The
name stays the TLS server name (SNI, certificate check). The SIP resolver (RFC 3263,
:mod:`skinnysip.net.resolver`) checks every target it returns the same way
(:func:`check_targets`).

Where it applies: :func:`active` is the policy of the current context (a
:class:`contextvars.ContextVar`, so a task inherits it from the request that started it —
phone sessions keep the policy of the request that created them). ``None`` (the default, the
CLI and the Python API) means no restriction; the HTTP API sets the server's policy for every
request (``skinnysip serve --allow/--deny``, :func:`from_env`).

Media (RTP/RTCP) goes where the far end's signalling says: an SDP ``c=``/``m=`` address from a
SIP peer (RFC 4566 §5.7, RFC 3264 §5), an SCCP StartMediaTransmission's ``remoteIpAddr``. A
hostile PBX could aim it anywhere, so the phones and the probes that send media check every
such destination with :func:`media_refusal` / :func:`sdp_media_refusal` before a packet goes
there: the pure address decision, no DNS (with a policy, a name in ``c=`` is refused).

Errors: :class:`TargetRefused` (``reason``: one line naming the host, address and rule);
``ValueError`` for a malformed allow/deny entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from skinnysip._regex import compile_on_use

if TYPE_CHECKING:
    from skinnysip.sdp import SessionDescription

__all__ = [
    "DEFAULT_DENIED",
    "METADATA_NAMES",
    "Decision",
    "TargetPolicy",
    "TargetRefused",
    "UnresolvedTarget",
    "active",
    "applied",
    "check_targets",
    "effective_address",
    "from_env",
    "is_loopback_bind",
    "media_refusal",
    "parse_address",
    "parse_numeric_ipv4",
    "sdp_media_refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Action = Literal["allow", "deny"]

#: Addresses of cloud instance-metadata services (they hand out credentials): AWS/GCP/Azure/
#: OpenStack IMDS 169.254.169.254, AWS ECS task metadata 169.254.170.2, AWS IMDS over IPv6
#: fd00:ec2::254, Alibaba 100.100.100.200, Azure WireServer 168.63.129.16, Oracle 192.0.0.192.
METADATA_ADDRESSES = (
    "169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128",
    "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32",
)
#: Names of metadata services (refused by name when the policy restricts).
METADATA_NAMES = ("metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                  "instance-data.ec2.internal")

# (network, reason, liftable by an allowed host name)
_DEFAULTS: list[tuple[str, str, bool]] = [
    *((n, "a cloud metadata address", False) for n in METADATA_ADDRESSES),
    ("169.254.0.0/16", "link-local", False),
    ("fe80::/10", "link-local", False),
    ("224.0.0.0/4", "multicast", False),
    ("ff00::/8", "multicast", False),
    ("255.255.255.255/32", "broadcast", False),
    ("0.0.0.0/8", "unspecified ('this network')", False),
    ("::/128", "unspecified", False),
    ("240.0.0.0/4", "reserved", False),
    ("127.0.0.0/8", "loopback", True),
    ("::1/128", "loopback", True),
    ("10.0.0.0/8", "private (RFC 1918)", True),
    ("172.16.0.0/12", "private (RFC 1918)", True),
    ("192.168.0.0/16", "private (RFC 1918)", True),
    ("100.64.0.0/10", "shared address space (RFC 6598)", True),
    ("fc00::/7", "unique local (RFC 4193)", True),
    ("fec0::/10", "site-local", True),
]
#: The default denials of a restricting policy: ``(network, reason)``.
DEFAULT_DENIED: tuple[tuple[str, str], ...] = tuple((n, r) for n, r, _ in _DEFAULTS)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_PART = compile_on_use(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_NAME_RE = compile_on_use(r"^(\*\.|\.)?([A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?)\.?$")


class TargetRefused(Exception):
    """The target policy refuses a host; ``reason`` is one line for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnresolvedTarget(TargetRefused):
    """The host name did not resolve (in time): not a policy decision, the connection simply
    cannot be made."""


@dataclass(frozen=True)
class Decision:
    """``allowed`` and, when refused, the ``reason`` (e.g. ``169.254.169.254 is link-local``)."""

    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class _Rule:
    network: IPNetwork
    action: Action
    explicit: bool
    reason: str
    liftable: bool = False


def parse_numeric_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric "host name" stands for, as inet_aton(3) reads it, or None.

    One to four dot-separated parts, each decimal, ``0x`` hex or ``0``-prefixed octal; the
    last part fills the remaining bytes (``127.1`` = 127.0.0.1, ``2130706433`` = 127.0.0.1,
    ``0xa9fea9fe`` = 169.254.169.254). A trailing dot is allowed, as resolvers do.

    >>> str(parse_numeric_ipv4("0xa9.0xfe.0xa9.0xfe")), parse_numeric_ipv4("example.com")
    ('169.254.169.254', None)
    """
    text = text[:-1] if text.endswith(".") else text
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2] in ("0x", "0X"):
            values.append(int(p[2:] or "0", 16))
        elif p.startswith("0"):
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, v in enumerate(head):
        number += v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in any form a resolver would accept, else None.

    IPv6 with or without brackets and with a zone (``fe80::1%lo``: the zone is dropped), IPv4
    dotted quads and the numeric forms of :func:`parse_numeric_ipv4`.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return parse_numeric_ipv4(text)


def effective_address(address: IPAddress) -> IPAddress:
    """The address a packet really goes to: the IPv4 address inside an IPv4-mapped
    (``::ffff:0:0/96``), IPv4-compatible (``::/96`` except ``::`` and ``::1``) or NAT64
    (``64:ff9b::/96``, RFC 6052) IPv6 address; any other address unchanged."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        value = int(address)
        if value >> 32 == 0 and value > 1:
            return ipaddress.IPv4Address(value)
        if address in _NAT64:
            return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address


def _parse_network(entry: str) -> IPNetwork | None:
    text = entry.strip()
    addr_text, slash, length = text.partition("/")
    addr = parse_address(addr_text)
    if addr is None:
        return None
    addr = effective_address(addr)
    if not slash:
        return ipaddress.ip_network(addr)
    if not length.isdigit():
        raise ValueError(f"bad prefix length in {entry!r}")
    try:
        return ipaddress.ip_network(f"{addr}/{int(length)}", strict=False)
    except ValueError as exc:
        raise ValueError(f"bad network {entry!r}: {exc}") from None


def _norm_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("."):
        return name == pattern[1:] or name.endswith(pattern)
    return name == pattern


class TargetPolicy:
    """Allow/deny lists of networks and host names, plus the default denials when ``restrict``.

    ``allow``/``deny`` entries: an IP address (any form of :func:`parse_address`), a CIDR
    network (``10.0.0.0/8``, ``fd00::/8``), a host name (``pbx.example.com``) or a domain
    (``*.example.com`` or ``.example.com``: the name and every name under it). ``restrict``:
    apply :data:`DEFAULT_DENIED` and :data:`METADATA_NAMES` (on when the server listens
    beyond loopback). Raises ``ValueError`` for an entry that is none of these.
    """

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (), *, restrict: bool = True) -> None:
        self.restrict = restrict
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self._rules: list[_Rule] = []
        self._allow_names: list[str] = []
        self._deny_names: list[str] = []
        for action, entries in (("allow", self.allow), ("deny", self.deny)):
            for entry in entries:
                net = _parse_network(entry)
                if net is not None:
                    reason = f"denied by --deny {entry}" if action == "deny" else ""
                    self._rules.append(_Rule(net, action, True, reason))  # type: ignore[arg-type]
                    continue
                m = _NAME_RE.match(entry.strip())
                if not m:
                    raise ValueError(f"not an address, network or host name: {entry!r}")
                pattern = ("." if m.group(1) else "") + _norm_name(m.group(2))
                (self._allow_names if action == "allow" else self._deny_names).append(pattern)
        if restrict:
            for net_text, reason, liftable in _DEFAULTS:
                self._rules.append(_Rule(ipaddress.ip_network(net_text), "deny", False, reason, liftable))

    def __repr__(self) -> str:
        return f"TargetPolicy(allow={list(self.allow)}, deny={list(self.deny)}, restrict={self.restrict})"

    # ---- decisions (pure) --------------------------------------------------------------

    def decide_name(self, name: str) -> Decision | None:
        """The decision a host name alone forces: refused (deny list, or a metadata name when
        restricting), or None when the name's addresses decide."""
        n = _norm_name(name)
        for pattern in self._deny_names:
            if _name_matches(pattern, n):
                return Decision(False, f"{name} is denied by --deny {pattern if not pattern.startswith('.') else '*' + pattern}")
        if self.restrict and n in METADATA_NAMES:
            return Decision(False, f"{name} is a cloud metadata service name")
        return None

    def name_allowed(self, name: str) -> bool:
        """True if ``name`` is on the allow list (exactly or under an allowed domain)."""
        n = _norm_name(name)
        return any(_name_matches(p, n) for p in self._allow_names)

    def decide_address(self, address: str | IPAddress, *, allowed_name: bool = False) -> Decision:
        """Allowed or refused (with the reason) for one address; ``allowed_name``: the address
        came from a name on the allow list (lifts the default loopback/private denials).
        A string that is no address at all is refused."""
        addr = parse_address(address) if isinstance(address, str) else address
        if addr is None:
            return Decision(False, f"{address!r} is not an IP address")
        real = effective_address(addr)
        shown = str(addr) if real == addr else f"{addr} (= {real})"
        best: _Rule | None = None
        for rule in self._rules:
            if rule.network.version != real.version or real not in rule.network:
                continue
            if best is None or _stronger(rule, best):
                best = rule
        if best is None or best.action == "allow":
            return Decision(True)
        if allowed_name and best.liftable:
            return Decision(True)
        if best.explicit:
            return Decision(False, f"{shown} is {best.reason}")
        return Decision(False, f"{shown} is {best.reason} (allow it with --allow {best.network})")

    def decide(self, host: str, addresses: Iterable[str | IPAddress] = ()) -> Decision:
        """The decision for ``host`` (name or address) reaching ``addresses`` (what it
        resolved to; ignored when ``host`` is itself an address): refused if the name is
        refused or any address is."""
        literal = parse_address(host)
        if literal is not None:
            return self.decide_address(literal)
        forced = self.decide_name(host)
        if forced is not None:
            return forced
        lift = self.name_allowed(host)
        for a in addresses:
            d = self.decide_address(a, allowed_name=lift)
            if not d.allowed:
                return Decision(False, f"{host} resolves to {d.reason}")
        return Decision(True)

    # ---- resolution --------------------------------------------------------------------

    async def resolve(self, host: str, *, timeout: float = 5.0) -> list[str]:
        """Resolve ``host`` once (``getaddrinfo``; IP literals and numeric forms need no DNS)
        and return its addresses (normalised text, IPv6 without brackets) if every one is
        allowed. Connect to these, keep ``host`` for TLS.

        Raises :class:`TargetRefused` when the policy refuses the name or any address, and its
        subclass :class:`UnresolvedTarget` when the name does not resolve within ``timeout`` s.
        """
        literal = parse_address(host)
        if literal is not None:
            d = self.decide_address(literal)
            if not d.allowed:
                raise TargetRefused(f"target {host} refused: {d.reason}")
            return [str(effective_address(literal))]
        forced = self.decide_name(host)
        if forced is not None:
            raise TargetRefused(f"target refused: {forced.reason}")
        addresses = await lookup(host, timeout=timeout)
        d = self.decide(host, addresses)
        if not d.allowed:
            raise TargetRefused(f"target refused: {d.reason}")
        return addresses


async def lookup(host: str, *, timeout: float = 5.0) -> list[str]:
    """``host``'s addresses, with no policy: an IP literal (brackets allowed) as it is, a name
    through the system resolver (``getaddrinfo``) within ``timeout`` s — normalised text, no
    IPv6 zone, each once. Names under ``.invalid`` fail at once (RFC 6761 §6.4). Raises
    :class:`UnresolvedTarget` when nothing resolves. :meth:`TargetPolicy.resolve` checks
    what this returns."""
    name = host.strip().strip("[]")
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(name))]
    if is_invalid_name(name):
        raise UnresolvedTarget(f"cannot resolve {host!r}: {INVALID_NAME_REASON}")
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnresolvedTarget(f"cannot resolve {host!r} within {timeout * 1000:.0f} ms") from None
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnresolvedTarget(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


INVALID_NAME_REASON = "no such host (names under .invalid never resolve, RFC 6761 §6.4)"


def is_invalid_name(name: str) -> bool:
    """True for ``invalid`` and names under it (case-insensitive, a final dot allowed).

    RFC 6761 §6.4: name resolution APIs should answer such names negatively at once, without
    sending a query; the resolvers here do (no DNS traffic leaves for them).
    """
    lowered = name.lower().rstrip(".")
    return lowered == "invalid" or lowered.endswith(".invalid")


def _stronger(a: _Rule, b: _Rule) -> bool:
    """True if rule ``a`` takes precedence over ``b`` for an address both contain."""
    if a.network.prefixlen != b.network.prefixlen:
        return a.network.prefixlen > b.network.prefixlen
    if a.explicit != b.explicit:
        return a.explicit
    return a.action == "deny" and b.action == "allow"


class _Target(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Target)


def check_targets(host: str, targets: Sequence[T], policy: TargetPolicy | None = None) -> list[T]:
    """The targets (objects with ``address`` and ``name``, e.g. RFC 3263
    :class:`~skinnysip.net.resolver.ServerTarget`) the policy allows; ``policy`` defaults
    to :func:`active` (None: all of them). Raises :class:`TargetRefused` when it allows none."""
    pol = policy if policy is not None else active()
    if pol is None:
        return list(targets)
    forced = pol.decide_name(host) if parse_address(host) is None else None
    if forced is not None:
        raise TargetRefused(f"target refused: {forced.reason}")
    kept: list[T] = []
    reasons: list[str] = []
    for t in targets:
        lift = pol.name_allowed(host) or pol.name_allowed(t.name)
        named = pol.decide_name(t.name) if parse_address(t.name) is None else None
        d = named or pol.decide_address(t.address, allowed_name=lift)
        if d.allowed:
            kept.append(t)
        else:
            reasons.append(d.reason)
    if not kept:
        raise TargetRefused(f"target {host} refused: {reasons[0] if reasons else 'no address'}")
    return kept


#: ``c=`` addresses that mean "no media to send" (hold, RFC 3264 §8.4): never a destination
HOLD_ADDRESSES = ("0.0.0.0", "::")


def media_refusal(address: str, policy: TargetPolicy | None, *, what: str = "media address") -> str | None:
    """Why media must not be sent to ``address`` (an IP address as written in SDP ``c=`` or an
    SCCP StartMediaTransmission), or None when it may (always None without a policy).

    Pure: :meth:`TargetPolicy.decide_address` on the numeric address, no DNS. A host name is
    refused when a policy is set (media goes only to addresses the policy has judged; resolving
    the name would let DNS choose the destination). ``what`` starts the reason, e.g.
    ``"SDP c= address 127.0.0.2 refused by the target policy: 127.0.0.2 is denied by --deny
    127.0.0.2"``.
    """
    if policy is None:
        return None
    if parse_address(address) is None:
        return (f"{what} {address!r} refused by the target policy: a host name, not an IP address "
                "(media destinations are not resolved)")
    d = policy.decide_address(address)
    return None if d.allowed else f"{what} {address} refused by the target policy: {d.reason}"


def sdp_media_refusal(sd: SessionDescription, policy: TargetPolicy | None, *, media: str = "audio") -> str | None:
    """Why the SDP ``sd`` (an offer or an answer) names a media destination the policy refuses:
    the ``c=`` (media-level, else session-level, RFC 4566 §5.7) of every ``m=<media>`` line with a
    non-zero port that is not a hold address (``0.0.0.0``/``::``), and the address of its
    ``a=rtcp`` (RFC 3605) when it names one; None when all may be used or there is no policy."""
    if policy is None:
        return None
    for m in sd.media:
        if m.media != media or m.port == 0:
            continue
        conn = sd.connection_for(m)
        if conn is None or conn.host in HOLD_ADDRESSES:
            continue
        reason = media_refusal(conn.host, policy, what="SDP c= address")
        if reason is not None:
            return reason
        rtcp = (m.attribute("rtcp") or "").split()
        if len(rtcp) == 4:  # RFC 3605: RTCP to another address
            reason = media_refusal(rtcp[3], policy, what="SDP a=rtcp address")
            if reason is not None:
                return reason
    return None


_active: ContextVar[TargetPolicy | None] = ContextVar("skinnysip_target_policy", default=None)


def active() -> TargetPolicy | None:
    """The policy of the current context (None: no restriction)."""
    return _active.get()


@contextmanager
def applied(policy: TargetPolicy | None) -> Iterator[None]:
    """Within the block (and tasks started in it), :func:`active` is ``policy``."""
    token = _active.set(policy)
    try:
        yield
    finally:
        _active.reset(token)


def is_loopback_bind(host: str) -> bool:
    """True if a server bound to ``host`` is reachable from this machine only (127/8, ::1,
    ``localhost``); ``0.0.0.0``, ``::`` and any other address or name are beyond loopback."""
    if _norm_name(host) == "localhost":
        return True
    addr = parse_address(host)
    return addr is not None and effective_address(addr).is_loopback


def _split(value: str | None) -> list[str]:
    return [p for p in re.split(r"[,\s]+", value or "") if p]


def from_env(allow: Sequence[str] = (), deny: Sequence[str] = (), *, listen_host: str = "127.0.0.1",
             environ: dict[str, str] | None = None) -> TargetPolicy | None:
    """The server's policy from ``--allow``/``--deny`` values (each may list several, comma- or
    space-separated) plus ``SKINNYSIP_ALLOW`` /
    ``SKINNYSIP_DENY`` (comma- or space-separated). A server listening beyond loopback always
    restricts (default denials on); on loopback only the given lists apply, and with none
    there is no policy (None). Raises ``ValueError`` for a malformed entry."""
    env = os.environ if environ is None else environ
    allow_all = [p for v in [*allow, env.get("SKINNYSIP_ALLOW")] for p in _split(v)]
    deny_all = [p for v in [*deny, env.get("SKINNYSIP_DENY")] for p in _split(v)]
    restrict = not is_loopback_bind(listen_host)
    if not restrict and not allow_all and not deny_all:
        return None
    return TargetPolicy(allow_all, deny_all, restrict=restrict)
