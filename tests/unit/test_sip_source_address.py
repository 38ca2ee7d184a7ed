"""The transport layer's source address (SIPp ``-i``, sipsak ``-l``): which local address and
port outgoing UDP flows and TCP connections start from, and the errors for an address the
host lacks, a port in use, or a source of the other family. Real sockets on loopback only
(127.0.0.2 is this host's too)."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.net.sip_transport import SIPTransportError, SIPTransportLayer


def _layer() -> SIPTransportLayer:
    return SIPTransportLayer(lambda message, flow: None, lambda flow, reason: None)


def _free_udp_port(host: str = "127.0.0.2") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def test_set_source_normalises_and_refuses_what_is_no_address() -> None:
    layer = _layer()
    layer.set_source("[::0001]", 5070)
    assert (layer.source_ip, layer.source_port) == ("::1", 5070)
    layer.set_source("0.0.0.0")  # a wildcard: the routed address again
    assert (layer.source_ip, layer.source_port) == (None, 0)
    for bad in ("alice", "127.0.0.256", "fe80::1%"):
        with pytest.raises(ValueError, match="is not an IPv4 or IPv6 address"):
            layer.set_source(bad)
    with pytest.raises(ValueError, match="source port 70000"):
        layer.set_source("127.0.0.1", 70000)


def test_local_ip_for_is_the_source_or_the_route() -> None:
    layer = _layer()
    assert layer.local_ip_for("127.0.0.1") == "127.0.0.1"
    layer.set_source("127.0.0.2")
    assert layer.local_ip_for("127.0.0.1") == "127.0.0.2"
    with pytest.raises(SIPTransportError, match=r"the source address 127\.0\.0\.2 is IPv4; ::1 is IPv6"):
        layer.local_ip_for("::1")


async def test_udp_flows_start_from_the_source_address_and_port_and_share_its_socket() -> None:
    layer = _layer()
    port = _free_udp_port()
    layer.set_source("127.0.0.2", port)
    try:
        first = await layer.udp_flow(("127.0.0.1", 5060))
        second = await layer.udp_flow(("127.0.0.1", 5080))
        assert first.local == second.local == ("127.0.0.2", port)
        assert list(layer.udp) == [("127.0.0.2", port)]
        assert layer.local_address(first) == ("127.0.0.2", port)
    finally:
        await layer.close()


async def test_a_udp_socket_elsewhere_is_not_taken_for_the_source() -> None:
    layer = _layer()
    try:
        await layer.listen("udp", "0.0.0.0", 0)  # a wildcard listener (as a phone's)
        layer.set_source("127.0.0.2")
        flow = await layer.udp_flow(("127.0.0.1", 5060))
        assert flow.local is not None and flow.local[0] == "127.0.0.2"
    finally:
        await layer.close()


async def test_an_address_the_host_lacks_and_a_busy_port_are_clear_errors() -> None:
    layer = _layer()
    try:
        layer.set_source("192.0.2.1")  # TEST-NET-1: no address of this host
        with pytest.raises(SIPTransportError, match=r"cannot send from 192\.0\.2\.1:0/udp: not an address of this host"):
            await layer.udp_flow(("127.0.0.1", 5060))
        with pytest.raises(SIPTransportError, match=r"from 192\.0\.2\.1:0: not an address of this host"):
            await layer.connect("tcp", ("127.0.0.1", 9), timeout=2)
        assert not layer.udp and not layer.connections
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.2", 0))
            layer.set_source("127.0.0.2", busy.getsockname()[1])
            with pytest.raises(SIPTransportError, match="port in use"):
                await layer.udp_flow(("127.0.0.1", 5060))
    finally:
        await layer.close()


async def test_a_tcp_connection_comes_from_the_source_address() -> None:
    peers: list[tuple[str, int]] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    layer = _layer()
    layer.set_source("127.0.0.3")
    try:
        conn = await layer.connect("tcp", ("127.0.0.1", port), timeout=2)
        assert conn.local[0] == "127.0.0.3"
        for _ in range(100):
            if peers:
                break
            await asyncio.sleep(0.01)
        assert peers and peers[0][0] == "127.0.0.3"
    finally:
        await layer.close()
        server.close()
        await server.wait_closed()


async def test_the_endpoints_via_and_contact_name_the_source() -> None:
    async with SIPEndpoint(source_ip="127.0.0.2") as ep:
        flow = await ep.transport.udp_flow(("127.0.0.1", 5060))
        contact = ep.contact(flow, "alice")
        assert str(contact.uri).startswith("sip:alice@127.0.0.2:")
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        SIPEndpoint(source_ip="example.com")


def test_the_source_rules_are_one_for_sip_sccp_and_the_command_line() -> None:
    from skinnysip.addresses import family_mismatch, source_problem

    assert family_mismatch("127.0.0.2", "[::1]") == "the source address 127.0.0.2 is IPv4; ::1 is IPv6 (different families)"
    assert family_mismatch("::1", "::1") is None and family_mismatch("::1", "pbx.example.net") is None
    assert source_problem(OSError(errno.EADDRNOTAVAIL, "x")) == "not an address of this host"
    assert source_problem(OSError(errno.EADDRINUSE, "x")) == "port in use"
    assert source_problem(ConnectionRefusedError(errno.ECONNREFUSED, "x")) is None  # not a source problem
