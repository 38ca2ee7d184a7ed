"""The target policy (skinnysip.policy), judged by its decision function: no test here lets a
connection attempt leave the machine. Every default range, the cloud metadata addresses,
IPv4-mapped/compatible/NAT64 IPv6, the numeric forms inet_aton(3) accepts, names on the lists,
and names resolving to denied addresses — through the system resolver (``localhost``) and
through the RFC 3263 resolver asking a real DNS server (dnsmasq on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from peers.dns_peer import dnsmasq_server
from skinnysip import policy
from skinnysip.net.resolver import ResolveError, Resolver
from skinnysip.policy import TargetPolicy, TargetRefused, parse_address, parse_numeric_ipv4

EXPOSED = TargetPolicy()  # a server listening beyond loopback, no lists

# one address inside (and the network of) every default denial
DENIED_SAMPLES = [
    ("169.254.169.254", "metadata"), ("169.254.170.2", "metadata"), ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"), ("168.63.129.16", "metadata"), ("192.0.0.192", "metadata"),
    ("169.254.1.1", "link-local"), ("169.254.255.255", "link-local"), ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("ff0e::fb", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("10.255.255.255", "private"), ("172.16.0.1", "private"),
    ("172.31.255.254", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space"), ("100.127.255.254", "shared address space"),
    ("fc00::1", "unique local"), ("fd12:3456::1", "unique local"), ("fec0::1", "site-local"),
]


@pytest.mark.parametrize(("address", "why"), DENIED_SAMPLES)
def test_exposed_server_denies_every_default_range(address: str, why: str) -> None:
    d = EXPOSED.decide_address(address)
    assert not d.allowed
    assert why in d.reason and address in d.reason


@pytest.mark.parametrize("address", ["192.0.2.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "11.0.0.1",
                                     "2001:db8::1", "2a00:1450::1", "169.253.255.255", "223.255.255.255"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert EXPOSED.decide_address(address).allowed


def test_every_listed_range_is_covered_by_the_samples() -> None:
    for net_text, _ in policy.DEFAULT_DENIED:
        net = ipaddress.ip_network(net_text)
        assert any(ipaddress.ip_address(a) in net for a, _ in DENIED_SAMPLES), net_text


@pytest.mark.parametrize(("form", "meant"), [
    ("0xa9fea9fe", "169.254.169.254"),
    ("2130706433", "127.0.0.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("0251.0xfe.43518", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("127.1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x7f.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("2852039166", "169.254.169.254"),
    ("169.254.169.254.", "169.254.169.254"),
])
def test_numeric_forms_mean_what_the_c_library_reads(form: str, meant: str) -> None:
    assert str(parse_numeric_ipv4(form)) == meant
    if not form.endswith("."):  # the C library is the reference
        assert socket.inet_ntoa(socket.inet_aton(form)) == meant
    d = EXPOSED.decide(form)
    assert not d.allowed and meant in d.reason


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "256.1.1.1", "0x1g", "08", "1..2", "",
                                  "4294967296", "1.16777216", "a.0x10"])
def test_non_numeric_forms_are_names(text: str) -> None:
    assert parse_numeric_ipv4(text) is None
    with pytest.raises(OSError):
        socket.inet_aton(text)


@pytest.mark.parametrize(("address", "why"), [
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:a9fe:a9fe", "metadata"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::169.254.169.254", "metadata"),  # IPv4-compatible
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 well-known prefix (RFC 6052)
    ("64:ff9b::7f00:1", "loopback"),
    ("fe80::1%eth0", "link-local"),
])
def test_ipv6_forms_embedding_ipv4_are_judged_as_that_address(address: str, why: str) -> None:
    d = EXPOSED.decide(address)
    assert not d.allowed and why in d.reason


def test_mapped_public_address_is_allowed() -> None:
    assert EXPOSED.decide("::ffff:192.0.2.7").allowed
    assert parse_address("[::ffff:192.0.2.7]") == ipaddress.ip_address("::ffff:192.0.2.7")


def test_allow_lifts_a_default_denial_only_as_far_as_it_reaches() -> None:
    pol = TargetPolicy(allow=["127.0.0.1", "10.0.0.0/8", "0.0.0.0/0"])
    assert pol.decide("127.0.0.1").allowed
    assert not pol.decide("127.0.0.2").allowed  # /8 default beats the /0 allow
    assert pol.decide("10.9.8.7").allowed
    assert pol.decide("::ffff:10.9.8.7").allowed
    assert not pol.decide("169.254.169.254").allowed  # the /32 metadata rule is more specific
    assert "allow it with --allow 169.254.169.254/32" in pol.decide("169.254.169.254").reason
    assert TargetPolicy(allow=["169.254.169.254"]).decide("0xa9fea9fe").allowed  # explicit /32 wins


def test_explicit_deny_and_allowlist_only() -> None:
    pol = TargetPolicy(allow=["192.0.2.0/24"], deny=["0.0.0.0/0", "::/0"], restrict=False)
    assert pol.decide("192.0.2.9").allowed
    assert not pol.decide("198.51.100.1").allowed
    assert not pol.decide("2001:db8::1").allowed
    assert not pol.decide("::ffff:198.51.100.1").allowed
    tie = TargetPolicy(allow=["192.0.2.0/24"], deny=["192.0.2.0/24"], restrict=False)
    assert not tie.decide("192.0.2.1").allowed  # same network both ways: deny wins
    assert "--deny 192.0.2.0/24" in tie.decide("192.0.2.1").reason


def test_loopback_server_without_lists_restricts_nothing() -> None:
    assert policy.from_env(listen_host="127.0.0.1", environ={}) is None
    assert policy.from_env(listen_host="::1", environ={}) is None
    assert policy.from_env(listen_host="localhost", environ={}) is None
    exposed = policy.from_env(listen_host="0.0.0.0", environ={})
    assert exposed is not None and exposed.restrict
    assert not exposed.decide("127.0.0.1").allowed
    env = policy.from_env(listen_host="::", environ={"SKINNYSIP_ALLOW": "127.0.0.1, 10.0.0.0/8",
                                                      "SKINNYSIP_DENY": "192.0.2.0/24"})
    assert env is not None and env.decide("127.0.0.1").allowed and not env.decide("192.0.2.1").allowed
    local = policy.from_env(deny=["192.0.2.1"], listen_host="127.0.0.1", environ={})
    assert local is not None and not local.restrict and local.decide("127.0.0.1").allowed
    with pytest.raises(ValueError):
        TargetPolicy(allow=["not a host!"])
    with pytest.raises(ValueError):
        TargetPolicy(deny=["10.0.0.0/33"])


def test_names_on_the_lists_and_metadata_names() -> None:
    pol = TargetPolicy(allow=["pbx.lab.example"], deny=["*.evil.example", "bad.example"])
    assert not pol.decide("x.evil.example", ["192.0.2.1"]).allowed
    assert not pol.decide("EVIL.example.", ["192.0.2.1"]).allowed
    assert not pol.decide("bad.example", ["192.0.2.1"]).allowed
    assert pol.decide("notbad.example", ["192.0.2.1"]).allowed
    # an allowed name lifts loopback/private for its addresses, never metadata or link-local
    assert pol.decide("pbx.lab.example", ["10.1.2.3", "127.0.0.1"]).allowed
    assert not pol.decide("pbx.lab.example", ["169.254.169.254"]).allowed
    assert not pol.decide("other.example", ["10.1.2.3"]).allowed
    assert not pol.decide("metadata.google.internal", ["192.0.2.1"]).allowed
    # a name is refused if any address it resolves to is denied
    d = EXPOSED.decide("mixed.example", ["192.0.2.1", "169.254.169.254"])
    assert not d.allowed and "mixed.example resolves to 169.254.169.254" in d.reason


async def test_resolve_checks_what_getaddrinfo_returns() -> None:
    # "localhost" resolves (system resolver, /etc/hosts) to loopback: refused when exposed
    with pytest.raises(TargetRefused, match="localhost resolves to .*loopback"):
        await EXPOSED.resolve("localhost", timeout=2)
    with pytest.raises(TargetRefused, match="169.254.169.254"):
        await EXPOSED.resolve("0xa9fea9fe", timeout=2)
    allowed = TargetPolicy(allow=["127.0.0.0/8", "::1"])
    addresses = await allowed.resolve("localhost", timeout=2)
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    assert await allowed.resolve("2130706433") == ["127.0.0.1"]  # connect to the checked address
    with pytest.raises(TargetRefused, match="cannot resolve.*RFC 6761"):  # no query sent
        await allowed.resolve("no-such-host.invalid", timeout=2)


ZONE = "policy.test"


def test_rfc3263_resolver_drops_denied_targets_from_a_real_dns_server() -> None:
    """dnsmasq on 127.0.0.1 serves names pointing at denied addresses; the SIP resolver (the
    one the probes and phones use) returns only checked targets. Nothing is sent to them."""
    zone = [
        f"--local=/{ZONE}/",
        f"--host-record=meta.{ZONE},169.254.169.254",
        f"--host-record=lan.{ZONE},10.0.0.5",
        f"--host-record=mapped.{ZONE},::ffff:169.254.169.254",
        f"--host-record=pub.{ZONE},192.0.2.10",
        f"--host-record=probe.{ZONE},127.0.0.1",
        f"--srv-host=_sip._udp.{ZONE},meta.{ZONE},5060,10,0",
        f"--srv-host=_sip._udp.{ZONE},pub.{ZONE},5060,20,0",
        f"--srv-host=_sip._udp.bad.{ZONE},meta.{ZONE},5060,10,0",
    ]

    async def run(resolver: Resolver) -> None:
        with policy.applied(EXPOSED):
            for name, why in ((f"meta.{ZONE}", "metadata"), (f"lan.{ZONE}", "private"),
                              (f"probe.{ZONE}", "loopback")):
                with pytest.raises(ResolveError, match=why):
                    await resolver.resolve(name, port=5060, transport="udp")
            # SRV: the metadata target is dropped, the public one kept
            targets = await resolver.resolve(ZONE, transport="udp")
            assert [t.address for t in targets] == ["192.0.2.10"]
            with pytest.raises(ResolveError, match="metadata"):
                await resolver.resolve(f"bad.{ZONE}", transport="udp")
            with pytest.raises(ResolveError, match="metadata"):
                await resolver.resolve("::ffff:169.254.169.254", port=5060, transport="udp")
        # no policy (CLI, Python API): everything as before
        targets = await resolver.resolve(f"meta.{ZONE}", port=5060, transport="udp")
        assert [t.address for t in targets] == ["169.254.169.254"]

    with dnsmasq_server(zone, f"probe.{ZONE}") as server:
        asyncio.run(run(server.resolver()))


async def test_sccp_transport_connects_only_to_a_checked_address() -> None:
    """The SCCP driver under a policy: a refused host never gets a connection attempt; an
    allowed numeric form connects to the address it means (a listener on 127.0.0.1)."""
    from skinnysip.net.sccp_transport import SCCPConnectionError, SCCPTransport

    accepted: list[object] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with policy.applied(EXPOSED):
            for host in ("127.0.0.1", "2130706433", "localhost"):
                with pytest.raises(SCCPConnectionError, match="loopback"):
                    await SCCPTransport.connect(host, port, timeout=2)
        await asyncio.sleep(0.05)
        assert accepted == []
        with policy.applied(TargetPolicy(allow=["127.0.0.1"])):
            transport = await SCCPTransport.connect("2130706433", port, timeout=2)
            assert transport.remote_ip == "127.0.0.1"
            transport.writer.close()
    finally:
        server.close()
        await server.wait_closed()
