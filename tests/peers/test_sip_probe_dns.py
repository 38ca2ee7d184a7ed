"""The probes locate servers by RFC 3263 through a real DNS server (dnsmasq on 127.0.0.1)
and fail over to the next SRV target when one is down (§4.3), against our own listening
endpoint (``skinnysip sip listen``'s Responder) on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from dns_peer import DnsServer, dnsmasq_server

from peertools import free_port
from skinnysip.probes.listen import ListenConfig, Responder
from skinnysip.probes.sip import ProbeRequest, invite, options

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

ZONE = "skinnysip.test"
UDP_LIVE = free_port(socket.SOCK_DGRAM)
UDP_DEAD = free_port(socket.SOCK_DGRAM)  # nothing listens: ICMP port unreachable
UDP_SILENT = free_port(socket.SOCK_DGRAM)  # bound by a test, never answers
TCP_LIVE = free_port(socket.SOCK_STREAM)
TCP_DEAD = free_port(socket.SOCK_STREAM)


def zone() -> list[str]:
    return [
        f"--local=/{ZONE}/",
        # the zone apex: NAPTR → SRV (UDP preferred over TCP here) → A
        f"--naptr-record={ZONE},10,10,s,SIP+D2U,,_sip._udp.{ZONE}",
        f"--naptr-record={ZONE},20,10,s,SIP+D2T,,_sip._tcp.{ZONE}",
        f"--srv-host=_sip._udp.{ZONE},pbx.{ZONE},{UDP_LIVE},10,0",
        f"--srv-host=_sip._tcp.{ZONE},pbx.{ZONE},{TCP_LIVE},10,0",
        # failover.: the priority-10 target is down, the priority-20 one answers
        f"--srv-host=_sip._udp.failover.{ZONE},down.{ZONE},{UDP_DEAD},10,0",
        f"--srv-host=_sip._udp.failover.{ZONE},pbx.{ZONE},{UDP_LIVE},20,0",
        f"--srv-host=_sip._tcp.failover.{ZONE},down.{ZONE},{TCP_DEAD},10,0",
        f"--srv-host=_sip._tcp.failover.{ZONE},pbx.{ZONE},{TCP_LIVE},20,0",
        # silent.: the first target takes the request and never answers (timeout → next)
        f"--srv-host=_sip._udp.silent.{ZONE},down.{ZONE},{UDP_SILENT},10,0",
        f"--srv-host=_sip._udp.silent.{ZONE},pbx.{ZONE},{UDP_LIVE},20,0",
        f"--host-record={ZONE},127.0.0.1",
        f"--host-record=pbx.{ZONE},127.0.0.1",
        f"--host-record=down.{ZONE},127.0.0.1",
    ]


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with dnsmasq_server(zone(), f"pbx.{ZONE}") as server:
        yield server


@pytest.fixture
async def responders() -> AsyncIterator[tuple[Responder, Responder]]:
    udp = Responder(ListenConfig(port=UDP_LIVE, transport="udp"))
    tcp = Responder(ListenConfig(port=TCP_LIVE, transport="tcp"))
    await udp.start()
    await tcp.start()
    try:
        yield udp, tcp
    finally:
        await udp.close()
        await tcp.close()


async def test_naptr_srv_a_lead_to_the_server(dns: DnsServer, responders: tuple[Responder, Responder]) -> None:
    """sip:skinnysip.test with no port and no transport: NAPTR picks UDP, SRV the port."""
    result = await options(ProbeRequest(host=ZONE, transport=None, nameservers=dns.nameservers, timeout=3))
    assert result.success, result.error
    assert result.status_code == 200 and result.transport == "udp"
    assert result.server == f"{ZONE}:{UDP_LIVE}"
    assert result.exchange[0].remote == f"127.0.0.1:{UDP_LIVE}"
    # the Request-URI names the domain, not the address DNS gave
    assert result.exchange[0].summary == f"OPTIONS sip:{ZONE}"


async def test_transport_given_uses_its_srv(dns: DnsServer, responders: tuple[Responder, Responder]) -> None:
    result = await options(ProbeRequest(host=ZONE, transport="tcp", nameservers=dns.nameservers, timeout=3))
    assert result.success, result.error
    assert result.exchange[0].remote == f"127.0.0.1:{TCP_LIVE}" and result.transport == "tcp"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_failover_to_the_second_srv_target(dns: DnsServer, responders: tuple[Responder, Responder],
                                                 transport: str) -> None:
    """RFC 3263 §4.3: the first SRV target refuses (ICMP port unreachable / TCP RST); the
    probe goes on to the next one and gets its answer."""
    live, dead = (UDP_LIVE, UDP_DEAD) if transport == "udp" else (TCP_LIVE, TCP_DEAD)
    result = await options(ProbeRequest(host=f"failover.{ZONE}", transport=transport,  # type: ignore[arg-type]
                                        nameservers=dns.nameservers, timeout=3))
    assert result.success, result.error
    assert result.status_code == 200
    if transport == "udp":  # the request went to the dead target first, then to the live one
        sent = [m.remote for m in result.exchange if m.direction == "sent"]
        assert sent[0] == f"127.0.0.1:{dead}" and sent[-1] == f"127.0.0.1:{live}"
    assert [m.remote for m in result.exchange if m.direction == "received"] == [f"127.0.0.1:{live}"]


async def test_failover_after_a_timeout(dns: DnsServer, responders: tuple[Responder, Responder]) -> None:
    """A first target that swallows the request: after the timeout the next target is asked."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", UDP_SILENT))
    try:
        result = await options(ProbeRequest(host=f"silent.{ZONE}", nameservers=dns.nameservers, timeout=1.0, t1=0.1))
    finally:
        silent.close()
    assert result.success, result.error
    sent = [m.remote for m in result.exchange if m.direction == "sent"]
    assert sent.count(f"127.0.0.1:{UDP_SILENT}") >= 2  # retransmitted there (Timer E) before giving up
    assert sent[-1] == f"127.0.0.1:{UDP_LIVE}"


async def test_no_failover_once_the_server_answered(dns: DnsServer) -> None:
    """A target that answered (here: a rejection) ends the search: no second target."""
    async with Responder(ListenConfig(port=UDP_DEAD, transport="udp", answer="486")):
        result = await invite(ProbeRequest(host=f"failover.{ZONE}", nameservers=dns.nameservers, timeout=3))
    assert result.success, result.error
    assert result.status_code == 486
    assert {m.remote for m in result.exchange} == {f"127.0.0.1:{UDP_DEAD}"}
