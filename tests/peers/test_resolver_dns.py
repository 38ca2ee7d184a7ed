"""RFC 3263 server location (skinnysip.net.resolver) against a real DNS server: dnsmasq on
127.0.0.1 on a free port, serving a small zone ``skinnysip.test`` (NAPTR, SRV, A, AAAA).

Also plain unit tests of the RFC 2782 weighted SRV ordering and the NAPTR filtering.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import dns.asyncresolver
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from dns_peer import DnsServer, dnsmasq_server

from skinnysip.net.resolver import (
    NaptrRecord,
    ResolveError,
    Resolver,
    ServerTarget,
    SrvRecord,
    order_naptr,
    order_srv,
)

ZONE = "skinnysip.test"

# The zone, as dnsmasq options. Records are listed in an order that differs from the expected
# result order, so a passing test proves the sorting, not the listing.
ZONE_OPTIONS = [
    f"--local=/{ZONE}/",  # answer NXDOMAIN/NODATA for the zone from local data, ask nobody
    # NAPTR (order, preference, flags, service, regexp, replacement); SIP+D2S (SCTP) and a
    # "u" flag record are unsupported and must be skipped.
    f"--naptr-record={ZONE},30,50,s,SIP+D2U,,_sip._udp.{ZONE}",
    f"--naptr-record={ZONE},5,50,s,SIP+D2S,,_sip._sctp.{ZONE}",
    f"--naptr-record={ZONE},20,50,s,SIP+D2T,,_sip._tcp.{ZONE}",
    f"--naptr-record={ZONE},10,50,s,SIPS+D2T,,_sips._tcp.{ZONE}",
    f"--naptr-record={ZONE},1,50,u,SIP+D2U,!^.*$!sip:x@example.test!,",
    f"--srv-host=_sip._sctp.{ZONE},sctp.{ZONE},5999,0,0",
    # SRV (name, target, port, priority, weight): the priority-20 one is listed first.
    f"--srv-host=_sip._udp.{ZONE},pbx-b.{ZONE},5081,20,0",
    f"--srv-host=_sip._udp.{ZONE},pbx-a.{ZONE},5080,10,0",
    f"--srv-host=_sip._tcp.{ZONE},tcp1.{ZONE},5070,10,0",
    f"--srv-host=_sips._tcp.{ZONE},tls1.{ZONE},5062,10,0",
    # srvonly: SRV for TCP and UDP, no NAPTR, no A.
    f"--srv-host=_sip._udp.srvonly.{ZONE},pbx-a.{ZONE},5073,10,0",
    f"--srv-host=_sip._tcp.srvonly.{ZONE},tcp1.{ZONE},5072,10,0",
    # v6: SRV to an IPv6-only target and to a dual-stack target.
    f"--srv-host=_sip._udp.v6.{ZONE},six.{ZONE},5090,10,0",
    f"--srv-host=_sip._udp.v6.{ZONE},dual.{ZONE},5091,20,0",
    # dead: SRV target "." = service decidedly not available (RFC 2782), though it has an A.
    f"--srv-host=_sip._udp.dead.{ZONE}",
    # broken: SRV to a target that does not exist.
    f"--srv-host=_sip._udp.broken.{ZONE},missing.{ZONE},5060,10,0",
    f"--host-record={ZONE},127.0.0.10",
    f"--host-record=tls1.{ZONE},127.0.0.11",
    f"--host-record=tcp1.{ZONE},127.0.0.12",
    f"--host-record=pbx-a.{ZONE},127.0.0.13",
    f"--host-record=pbx-b.{ZONE},127.0.0.14",
    f"--host-record=sctp.{ZONE},127.0.0.15",
    f"--host-record=plain.{ZONE},127.0.0.20",
    f"--host-record=dead.{ZONE},127.0.0.21",
    f"--host-record=six.{ZONE},::1",
    f"--host-record=dual.{ZONE},127.0.0.30,::2",
]


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with dnsmasq_server(ZONE_OPTIONS, f"plain.{ZONE}") as server:
        yield server


@pytest.fixture
def silent_nameserver() -> Iterator[tuple[str, int]]:
    """A bound UDP socket on 127.0.0.1 that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield ("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def t(address: str, port: int, transport: str, name: str) -> ServerTarget:
    return ServerTarget(address, port, transport, name)  # type: ignore[arg-type]


# ---------------------------------------------------------------- against dnsmasq


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_naptr_srv_a_order(dns_server: DnsServer) -> None:
    targets = await dns_server.resolver().resolve(ZONE)
    assert targets == [
        t("127.0.0.11", 5062, "tls", f"tls1.{ZONE}"),
        t("127.0.0.12", 5070, "tcp", f"tcp1.{ZONE}"),
        t("127.0.0.13", 5080, "udp", f"pbx-a.{ZONE}"),
        t("127.0.0.14", 5081, "udp", f"pbx-b.{ZONE}"),
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_srv_priority_order(dns_server: DnsServer) -> None:
    targets = await dns_server.resolver().resolve(ZONE, transport="udp")
    assert targets == [
        t("127.0.0.13", 5080, "udp", f"pbx-a.{ZONE}"),  # priority 10
        t("127.0.0.14", 5081, "udp", f"pbx-b.{ZONE}"),  # priority 20
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_explicit_port_skips_naptr_and_srv(dns_server: DnsServer) -> None:
    resolver = dns_server.resolver()
    offset = dns_server.log_size()
    assert await resolver.resolve(ZONE, port=5099) == [t("127.0.0.10", 5099, "udp", ZONE)]
    assert await resolver.resolve(ZONE, port=5099, transport="tcp") == [t("127.0.0.10", 5099, "tcp", ZONE)]
    assert await resolver.resolve(ZONE, port=5099, secure=True) == [t("127.0.0.10", 5099, "tls", ZONE)]
    assert sorted(set(dns_server.queries_since(offset))) == [f"query[AAAA] {ZONE}", f"query[A] {ZONE}"]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_transport_given_uses_only_that_srv(dns_server: DnsServer) -> None:
    resolver = dns_server.resolver()
    offset = dns_server.log_size()
    assert await resolver.resolve(ZONE, transport="tcp") == [t("127.0.0.12", 5070, "tcp", f"tcp1.{ZONE}")]
    queries = set(dns_server.queries_since(offset))
    assert queries == {f"query[SRV] _sip._tcp.{ZONE}", f"query[A] tcp1.{ZONE}", f"query[AAAA] tcp1.{ZONE}"}
    assert await resolver.resolve(ZONE, transport="tls") == [t("127.0.0.11", 5062, "tls", f"tls1.{ZONE}")]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_transport_given_without_srv_uses_a_and_default_port(dns_server: DnsServer) -> None:
    resolver = dns_server.resolver()
    assert await resolver.resolve(f"plain.{ZONE}", transport="tcp") == [
        t("127.0.0.20", 5060, "tcp", f"plain.{ZONE}")
    ]
    assert await resolver.resolve(f"plain.{ZONE}", transport="tls") == [
        t("127.0.0.20", 5061, "tls", f"plain.{ZONE}")
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_secure_uses_only_sips_tcp(dns_server: DnsServer) -> None:
    resolver = dns_server.resolver()
    assert await resolver.resolve(ZONE, secure=True) == [t("127.0.0.11", 5062, "tls", f"tls1.{ZONE}")]
    # sips: with transport=tcp means TLS over TCP; transport=udp is refused.
    assert await resolver.resolve(ZONE, secure=True, transport="tcp") == [
        t("127.0.0.11", 5062, "tls", f"tls1.{ZONE}")
    ]
    with pytest.raises(ResolveError, match="needs TLS"):
        await resolver.resolve(ZONE, secure=True, transport="udp")
    # No NAPTR and no _sips._tcp SRV: A record on 5061 over TLS, never the _sip._ SRVs.
    assert await resolver.resolve(f"plain.{ZONE}", secure=True) == [
        t("127.0.0.20", 5061, "tls", f"plain.{ZONE}")
    ]
    with pytest.raises(ResolveError, match="srvonly"):
        await resolver.resolve(f"srvonly.{ZONE}", secure=True)


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_no_naptr_but_srv(dns_server: DnsServer) -> None:
    targets = await dns_server.resolver().resolve(f"srvonly.{ZONE}")
    assert targets == [
        t("127.0.0.12", 5072, "tcp", f"tcp1.{ZONE}"),
        t("127.0.0.13", 5073, "udp", f"pbx-a.{ZONE}"),
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_no_naptr_no_srv_gives_a_on_5060(dns_server: DnsServer) -> None:
    assert await dns_server.resolver().resolve(f"plain.{ZONE}") == [
        t("127.0.0.20", 5060, "udp", f"plain.{ZONE}")
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_ipv6_aaaa_target(dns_server: DnsServer) -> None:
    targets = await dns_server.resolver().resolve(f"v6.{ZONE}")
    assert targets == [
        t("::1", 5090, "udp", f"six.{ZONE}"),
        t("127.0.0.30", 5091, "udp", f"dual.{ZONE}"),  # A before AAAA for one target
        t("::2", 5091, "udp", f"dual.{ZONE}"),
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_nxdomain_is_a_clear_error(dns_server: DnsServer) -> None:
    with pytest.raises(ResolveError) as info:
        await dns_server.resolver().resolve(f"nope.{ZONE}")
    assert info.value.reason == f"cannot resolve 'nope.{ZONE}': no such domain (NXDOMAIN)"
    assert "\n" not in str(info.value)


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_srv_target_dot_means_not_available(dns_server: DnsServer) -> None:
    with pytest.raises(ResolveError, match="not available"):
        await dns_server.resolver().resolve(f"dead.{ZONE}")
    with pytest.raises(ResolveError, match="not available"):
        await dns_server.resolver().resolve(f"dead.{ZONE}", transport="udp")
    # An explicit port bypasses SRV, so the A record is used.
    assert await dns_server.resolver().resolve(f"dead.{ZONE}", port=5060) == [
        t("127.0.0.21", 5060, "udp", f"dead.{ZONE}")
    ]


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_srv_target_without_address_is_an_error(dns_server: DnsServer) -> None:
    with pytest.raises(ResolveError) as info:
        await dns_server.resolver().resolve(f"broken.{ZONE}")
    assert f"missing.{ZONE}" in info.value.reason
    assert "NXDOMAIN" in info.value.reason


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_silent_nameserver_times_out(silent_nameserver: tuple[str, int]) -> None:
    resolver = Resolver([silent_nameserver], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ResolveError) as info:
        await resolver.resolve(ZONE)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    host, port = silent_nameserver
    assert (
        info.value.reason == f"cannot resolve '{ZONE}': no answer from DNS server {host}:{port} within 500 ms"
    )
    # A per-call timeout overrides the resolver's.
    started = time.monotonic()
    with pytest.raises(ResolveError, match="within 200 ms"):
        await resolver.resolve(f"plain.{ZONE}", port=5060, timeout=0.2)
    assert time.monotonic() - started < 1.0


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_numeric_ip_does_no_dns(silent_nameserver: tuple[str, int]) -> None:
    resolver = Resolver([silent_nameserver], timeout=5.0)
    started = time.monotonic()
    assert await resolver.resolve("127.0.0.1") == [t("127.0.0.1", 5060, "udp", "127.0.0.1")]
    assert await resolver.resolve("127.0.0.1", secure=True) == [t("127.0.0.1", 5061, "tls", "127.0.0.1")]
    assert await resolver.resolve("[::1]", port=5070, transport="tcp") == [t("::1", 5070, "tcp", "::1")]
    assert await resolver.resolve("::1", transport="tls") == [t("::1", 5061, "tls", "::1")]
    assert await resolver.resolve("[2001:DB8::1]") == [t("2001:db8::1", 5060, "udp", "2001:db8::1")]
    assert time.monotonic() - started < 0.2


@pytest.mark.peer
@pytest.mark.timeout(30)
async def test_invalid_names_send_no_query() -> None:
    """RFC 6761 §6.4: ``.invalid`` names fail at once and no query reaches the name server;
    a ``.test`` name (no such rule) does reach it, so the socket would see a leak."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)

    def queries() -> int:
        count = 0
        while True:
            try:
                server.recv(4096)
            except BlockingIOError:
                return count
            count += 1

    try:
        resolver = Resolver([server.getsockname()], timeout=0.3)
        for name in ("no-such-host.invalid", "INVALID.", "sip.Example.Invalid"):
            started = time.monotonic()
            with pytest.raises(ResolveError) as info:
                await resolver.resolve(name, secure=True)
            assert time.monotonic() - started < 0.1
            assert "RFC 6761" in info.value.reason and name.rstrip(".") in info.value.reason
        assert queries() == 0
        with pytest.raises(ResolveError, match="no answer from DNS server"):
            await resolver.resolve("sip.example.test")
        assert queries() > 0
    finally:
        server.close()


# ---------------------------------------------------------------- without a DNS server


async def test_system_resolver_localhost_via_getaddrinfo() -> None:
    targets = await Resolver(timeout=3.0).resolve("localhost", transport="tcp")
    assert targets
    assert all(x.port == 5060 and x.transport == "tcp" and x.name == "localhost" for x in targets)
    assert {x.address for x in targets} & {"127.0.0.1", "::1"}


async def test_system_without_resolver_config_falls_back_to_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dnspython finds no resolv.conf: NAPTR/SRV count as absent, getaddrinfo answers."""
    hostname = socket.gethostname()
    try:
        socket.getaddrinfo(hostname, None)
    except OSError:
        pytest.skip(f"this machine's own name {hostname!r} does not resolve")
    calls: list[str] = []

    def no_config(*args: object, **kwargs: object) -> None:
        calls.append("Resolver()")
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.asyncresolver, "Resolver", no_config)
    targets = await Resolver(timeout=3.0).resolve(hostname, secure=True)
    assert calls == ["Resolver()"]
    assert targets and all(x.port == 5061 and x.transport == "tls" and x.name == hostname for x in targets)


async def test_bad_arguments_are_resolve_errors() -> None:
    resolver = Resolver(timeout=1.0)
    for kwargs, text in [
        ({"port": 0}, "invalid port"),
        ({"port": 70000}, "invalid port"),
        ({"transport": "sctp"}, "unsupported transport"),
    ]:
        with pytest.raises(ResolveError, match=text):
            await resolver.resolve("127.0.0.1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ResolveError, match="empty host"):
        await resolver.resolve("[]")
    with pytest.raises(ValueError):
        await resolver.resolve("127.0.0.1", timeout=0)


def test_srv_priority_then_weighted_order_is_reproducible() -> None:
    records = [
        SrvRecord(20, 0, 5060, "late"),
        SrvRecord(10, 60, 5060, "a"),
        SrvRecord(10, 30, 5060, "b"),
        SrvRecord(10, 10, 5060, "c"),
        SrvRecord(10, 0, 5060, "zero"),
    ]
    first = order_srv(records, random.Random(7))
    assert first == order_srv(records, random.Random(7))
    assert sorted(first[:4], key=lambda r: r.target) == sorted(records[1:], key=lambda r: r.target)
    assert first[-1].target == "late"
    random.seed(7)  # the default generator is the random module
    assert order_srv(records) == order_srv(records, random.Random(7))


def test_srv_weights_bias_the_first_pick() -> None:
    records = [SrvRecord(10, 90, 5060, "heavy"), SrvRecord(10, 10, 5060, "light")]
    rng = random.Random(12345)
    firsts = [order_srv(records, rng)[0].target for _ in range(2000)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.85 < share < 0.95  # RFC 2782: ~ weight / sum of weights


def test_srv_weight_zero_entries_are_kept() -> None:
    records = [SrvRecord(10, 0, 5060, "x"), SrvRecord(10, 0, 5061, "y"), SrvRecord(10, 5, 5062, "z")]
    for seed in range(20):
        out = order_srv(records, random.Random(seed))
        assert sorted(r.target for r in out) == ["x", "y", "z"]
    # With all weights 0 each record is equally likely to come first.
    zeros = [SrvRecord(10, 0, 5060, "p"), SrvRecord(10, 0, 5060, "q")]
    rng = random.Random(3)
    firsts = {order_srv(zeros, rng)[0].target for _ in range(50)}
    assert firsts == {"p", "q"}


def test_naptr_filter_and_order() -> None:
    records = [
        NaptrRecord(30, 50, "s", "SIP+D2U", "", "_sip._udp.x"),
        NaptrRecord(5, 50, "s", "SIP+D2S", "", "_sip._sctp.x"),
        NaptrRecord(20, 60, "S", "sip+d2t", "", "_sip._tcp.b"),
        NaptrRecord(20, 50, "s", "SIP+D2T", "", "_sip._tcp.a"),
        NaptrRecord(10, 50, "s", "SIPS+D2T", "", "_sips._tcp.x"),
        NaptrRecord(1, 50, "u", "SIP+D2U", "!^.*$!sip:x@y!", ""),
    ]
    assert order_naptr(records, secure=False) == [
        ("tls", "_sips._tcp.x"),
        ("tcp", "_sip._tcp.a"),
        ("tcp", "_sip._tcp.b"),
        ("udp", "_sip._udp.x"),
    ]
    assert order_naptr(records, secure=True) == [("tls", "_sips._tcp.x")]
