"""Locating SIP servers (RFC 3263 §4) with NAPTR, SRV (RFC 2782) and A/AAAA records.

This is a driver: it does network I/O (DNS over UDP/TCP via ``dnspython``'s
:mod:`dns.asyncresolver`, or the system's ``getaddrinfo``) and is used by the SIP transport
layer to turn the host part of a ``sip:``/``sips:`` URI into an ordered list of
:class:`ServerTarget` objects. The caller tries them in order and moves to the next one on a
timeout or transport error (RFC 3263 §4.3, RFC 3261 §8.1.2).

Rules implemented (RFC 3263 §4.1 transport selection, §4.2 port and IP address):

* an IP literal (``192.0.2.1``, ``2001:db8::1`` or ``[2001:db8::1]``) needs no DNS at all;
  transport is the given one, else ``tls`` for ``sips:`` and ``udp`` otherwise; the port is
  the given one, else 5061 for TLS, 80 for ``ws``, 443 for ``wss`` and 5060 otherwise;
* a name with an explicit port: A/AAAA only;
* a name with ``transport=ws`` (``wss`` in a ``sips:`` URI, RFC 7118 §5.2): A/AAAA on 80 or
  443 (RFC 7118 names no SRV records; a WebSocket server is usually given with its port);
* a name without port but with a transport: SRV for that transport (``_sip._udp``,
  ``_sip._tcp``, ``_sips._tcp``), else A/AAAA on the default port;
* a name without port and transport: NAPTR (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``) → SRV →
  A/AAAA; without NAPTR, SRV for every supported transport; without SRV, A/AAAA on the
  default port over UDP (TLS for ``sips:``).

Without custom name servers, A/AAAA lookups use :meth:`asyncio.AbstractEventLoop.getaddrinfo`
(so ``/etc/hosts`` and ``localhost`` work) and NAPTR/SRV use dnspython with the system
configuration; a missing or silent system DNS makes NAPTR/SRV count as absent. With custom
name servers every query (A/AAAA included) goes to those servers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from skinnysip import policy as target_policy

if TYPE_CHECKING:
    import random

    import dns.asyncresolver
    import dns.name
    import dns.rdatatype
    import dns.resolver

# dnspython (~50 ms to import) is imported where a step needs it: an IP literal never does;
# a host name needs dns.name to be checked and the full resolver only for NAPTR/SRV records
# or custom name servers (the system path looks addresses up with getaddrinfo).

__all__ = [
    "MAX_TARGETS",
    "NaptrRecord",
    "ResolveError",
    "Resolver",
    "ServerTarget",
    "SrvRecord",
    "Transport",
    "default_port",
    "order_naptr",
    "order_srv",
]

Transport = Literal["udp", "tcp", "tls", "ws", "wss"]

#: At most this many targets are returned by :meth:`Resolver.resolve` (and at most this many
#: SRV records per SRV name are looked at).
MAX_TARGETS = 32

_TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls", "ws", "wss")

#: NAPTR service field (RFC 3263 §4.1) → transport, for the services we support.
_NAPTR_SERVICES: dict[str, Transport] = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}

#: SRV owner-name prefix per transport (RFC 3263 §4.1).
_SRV_PREFIX: dict[Transport, str] = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

#: Order of the SRV queries when there is no NAPTR record (RFC 3263 §4.1: the client may use
#: any transport it supports; secure ones first, then TCP, then UDP).
_SRV_FALLBACK_ORDER: tuple[Transport, ...] = ("tls", "tcp", "udp")


def default_port(transport: Transport) -> int:
    """The default port for ``transport``: 5061 for TLS, 5060 for UDP and TCP (RFC 3261
    §19.1.2); WebSocket's 80 for ``ws`` and 443 for ``wss`` (RFC 6455 §3, RFC 7118 §5.2)."""
    return {"tls": 5061, "ws": 80, "wss": 443}.get(transport, 5060)


@dataclass(frozen=True)
class ServerTarget:
    """One place to send a request: an IP address, a port and a transport.

    ``address`` is an IP literal without brackets; ``port`` is 1..65535; ``name`` is the host
    name the address came from (the SRV target, or the original host), for messages.
    """

    address: str
    port: int
    transport: Transport
    name: str


class ResolveError(Exception):
    """The server could not be located.

    ``reason`` is one line of user-facing text, e.g.
    ``cannot resolve 'x.test': no NAPTR, SRV or A/AAAA records``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SrvRecord:
    """An SRV record (RFC 2782): ``target`` is a host name without the trailing dot ("." = none)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class NaptrRecord:
    """A NAPTR record (RFC 3403) as far as RFC 3263 needs it.

    ``flags`` and ``service`` are as in the record (compared case-insensitively);
    ``replacement`` is a domain name without the trailing dot.
    """

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


def order_srv(records: Sequence[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """Order SRV records for use, as RFC 2782 ("Usage rules") says.

    Lowest priority first; within one priority, the weighted random selection of RFC 2782:
    weight-0 records are placed first, a running sum of weights is computed, a uniform random
    number in ``[0, sum]`` picks the first record whose running sum is ≥ it, and the selection
    repeats on the rest. Records of weight 0 are kept (they are picked rarely unless all are 0;
    if all left are 0, each is equally likely).
    ``rng`` defaults to the module-level :mod:`random` generator, so ``random.seed()`` makes the
    order reproducible in tests.
    """
    if rng is None:
        import random  # here: ~1 ms of every start-up, and only SRV answers draw

        rng = cast("random.Random", random)
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        pool = [r for r in records if r.priority == priority]
        while pool:
            pool.sort(key=lambda r: r.weight != 0)  # stable: weight 0 first, else as listed
            total = sum(r.weight for r in pool)
            if total == 0:  # all weight 0: the RFC's "any order" → an equal chance each
                chosen = rng.randrange(len(pool))
            else:
                pick = rng.randint(0, total)
                running = 0
                chosen = len(pool) - 1
                for i, record in enumerate(pool):
                    running += record.weight
                    if running >= pick:
                        chosen = i
                        break
            out.append(pool.pop(chosen))
    return out


def order_naptr(records: Sequence[NaptrRecord], *, secure: bool) -> list[tuple[Transport, str]]:
    """Usable NAPTR records as ``(transport, SRV name)``, by order then preference (RFC 3403 §4.1).

    Kept are records with flag ``s``, an empty regexp and a service we support (``SIP+D2U``,
    ``SIP+D2T``, ``SIPS+D2T``; only ``SIPS+D2T`` when ``secure``) — RFC 3263 §4.1.
    """
    usable: list[tuple[int, int, int, Transport, str]] = []
    for index, r in enumerate(records):
        transport = _NAPTR_SERVICES.get(r.service.upper())
        if transport is None or r.flags.lower() != "s" or r.regexp or not r.replacement:
            continue
        if secure and transport != "tls":
            continue
        usable.append((r.order, r.preference, index, transport, r.replacement))
    usable.sort()
    return [(transport, name) for _, _, _, transport, name in usable]


def _policy_checked(host: str, targets: list[ServerTarget]) -> list[ServerTarget]:
    """The targets the active target policy allows (:mod:`skinnysip.policy`; none active:
    all); the caller connects to these checked addresses only. A policy that allows none is
    a :class:`ResolveError` with its reason."""
    try:
        return target_policy.check_targets(host, targets)
    except target_policy.TargetRefused as exc:
        raise ResolveError(exc.reason) from None


def _strip_host(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _ip_literal(host: str) -> str | None:
    """``host`` as a normalised IP literal, or None if it is not one."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)} ms"


class _Timeout(Exception):
    """A DNS query got no answer in time (internal)."""


class _DnsFailed(Exception):
    """A DNS query failed in a way that is neither 'absent' nor a timeout (internal)."""


@dataclass
class _Ctx:
    """State of one :meth:`Resolver.resolve` call."""

    host: str
    deadline: float
    total: float
    dns_dead: bool = False  # the system DNS timed out once: skip further NAPTR/SRV queries
    not_available: bool = False  # some SRV set said "." (service decidedly not available)


class Resolver:
    """Locates SIP servers for a host (RFC 3263).

    ``nameservers`` is a list of ``(ip, port)`` DNS servers to ask for every record (A/AAAA
    too); ``None`` means the system configuration (``getaddrinfo`` for addresses, the system
    DNS via dnspython for NAPTR/SRV). ``timeout`` (seconds, > 0) bounds a whole
    :meth:`resolve` call unless that call gives its own. ``rng`` orders equal-priority SRV
    records (RFC 2782 weights); the default is the :mod:`random` module.

    A ``Resolver`` holds no per-call state and may be shared by concurrent calls.
    """

    def __init__(
        self,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 5.0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.timeout = timeout
        self._rng = rng
        self._custom = nameservers is not None
        self._servers_text = ""
        self._dns: dns.asyncresolver.Resolver | None = None
        self._system_loaded = False
        if nameservers is not None:
            if not nameservers:
                raise ValueError("nameservers must not be empty (use None for the system resolver)")
            import dns.asyncresolver
            import dns.nameserver

            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in nameservers]
            resolver.retry_servfail = False
            self._dns = resolver
            self._servers_text = ", ".join(
                f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip, port in nameservers
            )

    # ------------------------------------------------------------------ public

    async def resolve(
        self,
        host: str,
        *,
        port: int | None = None,
        transport: Transport | None = None,
        secure: bool = False,
        timeout: float | None = None,
    ) -> list[ServerTarget]:
        """Ordered targets for ``host`` (RFC 3263 §4.1 transport, §4.2 port and address).

        ``host`` is an IPv4 literal, an IPv6 literal (brackets optional) or a domain name;
        ``port`` and ``transport`` are the URI's port and ``transport=`` parameter if it has
        them; ``secure`` means a ``sips:`` URI (TLS only: ``transport="tcp"`` then means TLS
        over TCP, ``"udp"`` is an error). ``timeout`` (seconds) bounds the whole call; default
        the resolver's. Returns at least one and at most :data:`MAX_TARGETS` targets, without
        duplicates, in the order to try them.

        Every target is checked against the active target policy (:mod:`skinnysip.policy`);
        refused ones are dropped.

        Raises :class:`ResolveError` (with a one-line ``reason``) when nothing is found, the
        target policy refuses every target, a name
        does not exist (NXDOMAIN), the DNS does not answer in time, an SRV record says the
        service is not available (target "."), or the arguments are invalid. Raises
        ``ValueError`` only for a ``timeout`` ≤ 0.
        """
        total = self.timeout if timeout is None else timeout
        if total <= 0:
            raise ValueError("timeout must be > 0 seconds")
        name = _strip_host(host)
        if not name:
            raise ResolveError("cannot resolve '': empty host")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ResolveError(f"cannot resolve {name!r}: invalid port {port!r} (1-65535)")
        if transport is not None and transport not in _TRANSPORTS:
            raise ResolveError(
                f"cannot resolve {name!r}: unsupported transport {transport!r} (udp, tcp, tls, ws, wss)"
            )
        if secure:
            if transport == "udp":
                raise ResolveError(f"cannot resolve {name!r}: a sips: URI needs TLS, not transport=udp")
            if transport == "tcp":
                transport = "tls"
            if transport == "ws":  # RFC 7118 §5.2: transport=ws in a sips: URI means WebSocket over TLS
                transport = "wss"

        ip = _ip_literal(name)
        if ip is not None:  # RFC 3263 §4.1/§4.2: numeric IP, no DNS at all
            chosen: Transport = transport or ("tls" if secure else "udp")
            return _policy_checked(name, [ServerTarget(ip, port or default_port(chosen), chosen, ip)])

        import dns.exception
        import dns.name

        try:
            dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ResolveError(f"cannot resolve {name!r}: invalid host name ({exc})") from None

        if target_policy.is_invalid_name(name):
            raise ResolveError(f"cannot resolve {name!r}: {target_policy.INVALID_NAME_REASON}")

        loop = asyncio.get_running_loop()
        ctx = _Ctx(host=name, deadline=loop.time() + total, total=total)
        try:
            async with asyncio.timeout(total):
                targets = await self._locate(ctx, port, transport, secure)
        except TimeoutError:
            raise ResolveError(self._timeout_reason(ctx)) from None
        unique = list(dict.fromkeys(targets))
        return _policy_checked(name, unique[:MAX_TARGETS])

    # ------------------------------------------------------------------ RFC 3263 steps

    async def _locate(
        self, ctx: _Ctx, port: int | None, transport: Transport | None, secure: bool
    ) -> list[ServerTarget]:
        name = ctx.host
        if port is not None:  # §4.2: explicit port → A/AAAA only
            chosen: Transport = transport or ("tls" if secure else "udp")
            return await self._addresses_or_fail(ctx, name, port, chosen)

        if transport in ("ws", "wss"):  # RFC 7118 defines no SRV names: the address, WebSocket's port
            return await self._addresses_or_fail(ctx, name, default_port(transport), transport)
        if transport is not None:  # §4.1: transport known → SRV for it, then A/AAAA
            srv = await self._srv(ctx, _SRV_PREFIX[transport] + name)
            if srv is not None:
                return await self._srv_targets(ctx, [(transport, srv)])
            return await self._addresses_or_fail(ctx, name, default_port(transport), transport)

        # §4.1: neither → NAPTR, then SRV for each supported transport, then A/AAAA.
        naptr = await self._naptr(ctx, name)
        if naptr:
            sets: list[tuple[Transport, list[SrvRecord]]] = []
            for naptr_transport, srv_name in order_naptr(naptr, secure=secure):
                srv = await self._srv(ctx, srv_name)
                if srv is not None:
                    sets.append((naptr_transport, srv))
            if sets:
                return await self._srv_targets(ctx, sets)
        sets = []
        for srv_transport in _SRV_FALLBACK_ORDER:
            if secure and srv_transport != "tls":
                continue
            srv = await self._srv(ctx, _SRV_PREFIX[srv_transport] + name)
            if srv is not None:
                sets.append((srv_transport, srv))
        if sets:
            return await self._srv_targets(ctx, sets)
        chosen = "tls" if secure else "udp"
        return await self._addresses_or_fail(ctx, name, default_port(chosen), chosen)

    async def _srv_targets(
        self, ctx: _Ctx, sets: list[tuple[Transport, list[SrvRecord]]]
    ) -> list[ServerTarget]:
        """Each SRV set ordered (RFC 2782) and every target resolved to its addresses."""
        plan: list[tuple[Transport, SrvRecord]] = []
        for transport, records in sets:
            plan.extend((transport, r) for r in order_srv(records, self._rng))
        plan = plan[:MAX_TARGETS]
        hosts = list(dict.fromkeys(r.target for _, r in plan))
        results = await asyncio.gather(*(self._addresses(ctx, h) for h in hosts), return_exceptions=True)
        by_host: dict[str, list[str]] = {}
        failures: list[str] = []
        for h, result in zip(hosts, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, _Timeout):
                    raise ResolveError(self._timeout_reason(ctx, h)) from None
                if not isinstance(result, _DnsFailed):
                    raise result
                failures.append(f"{h} ({result})")
                continue
            by_host[h] = result
            if not result:
                failures.append(f"{h} (no A/AAAA records)")
        targets = [
            ServerTarget(addr, r.port, transport, r.target)
            for transport, r in plan
            for addr in by_host.get(r.target, [])
        ]
        if not targets:
            raise ResolveError(f"cannot resolve {ctx.host!r}: SRV targets not found: {', '.join(failures)}")
        return targets

    async def _addresses_or_fail(
        self, ctx: _Ctx, name: str, port: int, transport: Transport
    ) -> list[ServerTarget]:
        if ctx.not_available:
            raise ResolveError(f"cannot resolve {ctx.host!r}: SIP service not available (SRV target '.')")
        try:
            addresses = await self._addresses(ctx, name)
        except _Timeout:
            raise ResolveError(self._timeout_reason(ctx)) from None
        except _DnsFailed as exc:
            raise ResolveError(f"cannot resolve {name!r}: {exc}") from None
        if not addresses:
            raise ResolveError(f"cannot resolve {name!r}: no NAPTR, SRV or A/AAAA records")
        return [ServerTarget(a, port, transport, name) for a in addresses]

    # ------------------------------------------------------------------ queries

    def _remaining(self, ctx: _Ctx) -> float:
        return max(0.001, ctx.deadline - asyncio.get_running_loop().time())

    async def _query(
        self, ctx: _Ctx, qname: str, rdtype: dns.rdatatype.RdataType, lifetime: float
    ) -> list[Any]:
        """Records of one type (empty list if absent). Raises _Timeout, dns.resolver.NXDOMAIN, _DnsFailed."""
        import dns.exception
        import dns.resolver

        resolver = self._dns
        assert resolver is not None
        try:
            answer = await resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime
            )
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.Timeout:
            raise _Timeout() from None
        except dns.resolver.NoNameservers as exc:
            raise _DnsFailed(_no_nameservers_text(exc)) from None
        except dns.exception.DNSException as exc:
            raise _DnsFailed(str(exc) or type(exc).__name__) from None
        return list(answer.rrset) if answer.rrset is not None else []

    def _system_dns(self) -> dns.asyncresolver.Resolver | None:
        if not self._system_loaded:
            self._system_loaded = True
            import dns.asyncresolver
            import dns.resolver

            try:
                self._dns = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError):
                self._dns = None
        return self._dns

    async def _service_records(
        self, ctx: _Ctx, qname: str, rdtype: dns.rdatatype.RdataType
    ) -> list[Any] | None:
        """NAPTR or SRV records, or None if absent (including: the system DNS is unusable)."""
        import dns.resolver

        if not self._custom:
            if ctx.dns_dead or self._system_dns() is None or _is_localhost(ctx.host):
                return None
            # Leave the system path time for getaddrinfo afterwards: at most half the remainder.
            lifetime = self._remaining(ctx) / 2
        else:
            lifetime = self._remaining(ctx)
        try:
            records = await self._query(ctx, qname, rdtype, lifetime)
        except dns.resolver.NXDOMAIN:
            return None
        except _Timeout:
            if self._custom:
                raise ResolveError(self._timeout_reason(ctx)) from None
            ctx.dns_dead = True
            return None
        except _DnsFailed:
            return None  # SERVFAIL/REFUSED on NAPTR/SRV: treat as absent, A/AAAA decides
        return records or None

    async def _naptr(self, ctx: _Ctx, name: str) -> list[NaptrRecord] | None:
        import dns.rdatatype

        rrs = await self._service_records(ctx, name, dns.rdatatype.NAPTR)
        if rrs is None:
            return None
        return [
            NaptrRecord(
                order=rr.order,
                preference=rr.preference,
                flags=rr.flags.decode("ascii", "replace"),
                service=rr.service.decode("ascii", "replace"),
                regexp=rr.regexp.decode("ascii", "replace"),
                replacement=_name_text(rr.replacement),
            )
            for rr in rrs
        ]

    async def _srv(self, ctx: _Ctx, qname: str) -> list[SrvRecord] | None:
        """Usable SRV records at ``qname``; None if absent. A lone "." target marks ctx."""
        import dns.rdatatype

        rrs = await self._service_records(ctx, qname, dns.rdatatype.SRV)
        if rrs is None:
            return None
        records = [SrvRecord(rr.priority, rr.weight, rr.port, _name_text(rr.target)) for rr in rrs]
        usable = [r for r in records if r.target not in ("", ".") and r.port > 0][:MAX_TARGETS]
        if not usable:
            ctx.not_available = True  # RFC 2782: target "." → decidedly not available here
            return None
        return usable

    async def _addresses(self, ctx: _Ctx, name: str) -> list[str]:
        """IP addresses of ``name`` (maybe empty). Raises _Timeout or _DnsFailed (NXDOMAIN etc.)."""
        if not self._custom:
            return await self._getaddrinfo(name)
        import dns.rdatatype
        import dns.resolver

        lifetime = self._remaining(ctx)
        results = await asyncio.gather(
            self._query(ctx, name, dns.rdatatype.A, lifetime),
            self._query(ctx, name, dns.rdatatype.AAAA, lifetime),
            return_exceptions=True,
        )
        addresses: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                addresses.extend(str(rr.address) for rr in result)
        if addresses:
            return addresses
        for error in errors:
            if not isinstance(error, _Timeout | _DnsFailed | dns.resolver.NXDOMAIN):
                raise error
        if any(isinstance(e, _Timeout) for e in errors):
            raise _Timeout()
        if len(errors) == 2 and all(isinstance(e, dns.resolver.NXDOMAIN) for e in errors):
            raise _DnsFailed("no such domain (NXDOMAIN)")
        failed = [e for e in errors if isinstance(e, _DnsFailed)]
        if failed:
            raise failed[0]
        return []  # NODATA for both: the name exists without addresses

    async def _getaddrinfo(self, name: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise _DnsFailed("no such host") from None
            raise _DnsFailed(exc.strerror or str(exc)) from None
        except (OSError, UnicodeError) as exc:
            raise _DnsFailed(str(exc)) from None
        out: list[str] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                address = str(sockaddr[0])
                if address not in out:
                    out.append(address)
        return out

    def _timeout_reason(self, ctx: _Ctx, name: str | None = None) -> str:
        who = f"DNS server {self._servers_text}" if self._custom else "DNS"
        what = ctx.host if name is None else name
        return f"cannot resolve {what!r}: no answer from {who} within {_ms(ctx.total)}"


def _is_localhost(name: str) -> bool:
    lowered = name.lower().rstrip(".")
    return lowered == "localhost" or lowered.endswith(".localhost")  # RFC 6761 §6.3


def _name_text(name: dns.name.Name) -> str:
    text = name.to_text(omit_final_dot=True)
    return text if text else "."


def _no_nameservers_text(exc: dns.resolver.NoNameservers) -> str:
    """One line from dnspython's per-server error list, e.g. ``DNS server answered REFUSED``."""
    errors = exc.kwargs.get("errors") or []
    texts = list(dict.fromkeys(str(err[3]) for err in errors if len(err) > 3))
    if not texts:
        return "no DNS server could answer"
    if all(t.isalnum() and t.isupper() for t in texts):  # rcodes: SERVFAIL, REFUSED, ...
        return f"DNS server answered {'/'.join(texts)}"
    return f"DNS query failed: {'; '.join(texts)}"
