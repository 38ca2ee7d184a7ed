"""UDP retransmission (RFC 3261 §17.1.2.2 Timer E, §17.1.1.2 Timer A) against a real Kamailio
behind a small UDP relay that drops the first request; silent / closed servers; and the TCP
driver's framing and failure reports against a scripted loopback server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from sip_peers import KamailioPeer

from peertools import free_port
from peertools import silent_udp as silent_socket
from skinnysip.probes.sip import ProbeRequest, digest_auth, invite, options

pytestmark = pytest.mark.peer


class DropFirstRelay:
    """Forwards datagrams between one client and Kamailio, dropping the first ``drop``
    datagrams from the client. Bounded: at most ``limit`` datagrams relayed."""

    def __init__(self, upstream: tuple[str, int], drop: int = 1, limit: int = 200) -> None:
        self.upstream = upstream
        self.drop = drop
        self.limit = limit
        self.dropped: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.client: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.client = addr
                if len(relay.dropped) < relay.drop:
                    relay.dropped.append(data)
                    return
                if len(relay.forwarded) < relay.limit and relay.back is not None:
                    relay.forwarded.append(data)
                    relay.back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.client is not None and relay.front is not None:
                    relay.front.sendto(data, relay.client)

        port = free_port(socket.SOCK_DGRAM)
        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", port))
        self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.upstream)
        return port

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


@pytest.fixture
async def relay(kamailio_md5: KamailioPeer) -> AsyncIterator[tuple[DropFirstRelay, int]]:
    r = DropFirstRelay((kamailio_md5.host, kamailio_md5.udp_port))
    port = await r.start()
    try:
        yield r, port
    finally:
        r.close()


@pytest.fixture
async def silent_udp() -> AsyncIterator[int]:
    """A bound UDP socket that reads nothing and answers nothing (no ICMP either)."""
    with silent_socket() as sock:
        yield sock.getsockname()[1]


async def test_lost_options_is_retransmitted_after_t1(relay) -> None:
    r, port = relay
    t1 = 0.2
    result = await options(ProbeRequest(host="127.0.0.1", port=port, timeout=5, t1=t1))
    assert result.success, result.error
    assert result.status_code == 200
    assert len(r.dropped) == 1 and len(r.forwarded) == 1
    sent = [m for m in result.exchange if m.direction == "sent"]
    assert [m.summary for m in sent] == [sent[0].summary, sent[0].summary + " (retransmission)"]
    assert sent[0].raw == sent[1].raw  # the same request, byte for byte (same branch)
    gap = sent[1].time - sent[0].time
    assert gap >= t1 * 0.9  # Timer E fired no earlier than T1
    assert [m.direction for m in result.exchange] == ["sent", "sent", "received"]


async def test_digest_auth_survives_a_lost_request(relay) -> None:
    r, port = relay
    result = await digest_auth(
        ProbeRequest(host="127.0.0.1", port=port, timeout=5, t1=0.1, username="alice", password="wonderland")
    )
    assert result.authenticated, result.error
    summaries = [m.summary for m in result.exchange if m.direction == "sent"]
    assert summaries[1].endswith("(retransmission)") and len(summaries) == 4


async def test_silent_server_times_out_with_retransmissions(silent_udp: int) -> None:
    result = await options(ProbeRequest(host="127.0.0.1", port=silent_udp, timeout=1.0, t1=0.1))
    assert result.success is False
    assert result.error == f"no response from 127.0.0.1:{silent_udp}/udp within 1000 ms"
    sent = [m for m in result.exchange if m.direction == "sent"]
    # Timer E: 0.1, 0.3, 0.7 s → at most 3 retransmissions within the 1 s timeout
    assert 2 <= len(sent) - 1 <= 3
    assert all(m.summary.endswith("(retransmission)") for m in sent[1:])


async def test_silent_server_invite_no_cancel_without_provisional(silent_udp: int) -> None:
    result = await invite(ProbeRequest(host="127.0.0.1", port=silent_udp, timeout=0.5, t1=0.1))
    assert result.success is False
    assert "no response" in (result.error or "")
    assert result.cancelled is False and result.cleanup == "none"  # RFC 3261 §9.1: no CANCEL before a 1xx
    assert {m.summary.split()[0] for m in result.exchange} == {"INVITE"}


async def test_closed_udp_port_is_connection_refused() -> None:
    port = free_port(socket.SOCK_DGRAM)
    result = await options(ProbeRequest(host="127.0.0.1", port=port, timeout=2))
    assert result.success is False
    assert result.error == f"connection refused by 127.0.0.1:{port}/udp (ICMP port unreachable)"


async def test_closed_tcp_port_is_connection_refused() -> None:
    port = free_port()
    result = await options(ProbeRequest(host="127.0.0.1", port=port, transport="tcp", timeout=2))
    assert result.success is False
    assert result.error == f"connection refused by 127.0.0.1:{port}/tcp"
    assert result.exchange == []


async def test_lost_invite_is_retransmitted_timer_a(sipp_uas) -> None:
    with sipp_uas("answer", "udp") as peer:
        r = DropFirstRelay((peer.host, peer.port))
        port = await r.start()
        try:
            result = await invite(ProbeRequest(host="127.0.0.1", port=port, timeout=5, t1=0.15))
        finally:
            r.close()
        stats = peer.finish()
    assert result.success, result.error
    assert result.cleanup == "ack+bye"
    sent = [m.summary.split()[0] + (" (r)" if m.summary.endswith("(retransmission)") else "")
            for m in result.exchange if m.direction == "sent"]
    assert sent == ["INVITE", "INVITE (r)", "ACK", "BYE"]
    assert stats.successful_calls == 1 and stats.failed_calls == 0


async def test_timer_f_ends_the_transaction_before_the_probe_timeout(silent_udp: int) -> None:
    result = await options(ProbeRequest(host="127.0.0.1", port=silent_udp, timeout=5.0, t1=0.01))
    assert result.success is False
    assert result.error == f"no response from 127.0.0.1:{silent_udp}/udp within 640 ms (RFC 3261 Timer F)"
    sent = [m for m in result.exchange if m.direction == "sent"]
    # at 0, 10, 30, 70, 150, 310, 630 ms and F at 640 ms; a late wake-up shifts later ones
    # (each interval counts from the firing), so never more than 7
    assert 5 <= len(sent) <= 7


# --- stream transport behaviour: a scripted TCP server on loopback sends what Kamailio never
# would (a response split across writes, two responses in one write, garbage, a hang-up).


async def scripted_tcp_server(script) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            await script(head.decode(), writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def response_to(request: str, status: str) -> bytes:
    keep = [line for line in request.split("\r\n") if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    return (f"SIP/2.0 {status}\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


async def test_tcp_response_split_and_coalesced() -> None:
    async def script(request: str, writer: asyncio.StreamWriter) -> None:
        trying, ok = response_to(request, "100 Trying"), response_to(request, "200 OK")
        writer.write(b"\r\n\r\n" + trying + ok[:20])  # keep-alive, one whole response, a piece
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(ok[20:])
        await writer.drain()
        await asyncio.sleep(0.2)

    server, port = await scripted_tcp_server(script)
    async with server:
        result = await options(ProbeRequest(host="127.0.0.1", port=port, transport="tcp", timeout=3))
    assert result.success, result.error
    assert result.status_code == 200
    received = [m for m in result.exchange if m.direction == "received"]
    assert [m.summary for m in received] == ["100 Trying", "200 OK"]
    assert received[1].raw.startswith("SIP/2.0 200 OK\r\n") and received[1].raw.endswith("\r\n\r\n")


async def test_tcp_garbage_and_hangup_are_clear_errors() -> None:
    async def garbage(request: str, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)

    async def hangup(request: str, writer: asyncio.StreamWriter) -> None:
        return None

    server, port = await scripted_tcp_server(garbage)
    async with server:
        result = await options(ProbeRequest(host="127.0.0.1", port=port, transport="tcp", timeout=3))
    assert result.success is False and result.error.startswith(f"malformed SIP from 127.0.0.1:{port}/tcp")
    assert result.exchange[-1].summary.startswith("unparseable")
    server, port = await scripted_tcp_server(hangup)
    async with server:
        result = await options(ProbeRequest(host="127.0.0.1", port=port, transport="tcp", timeout=3))
    assert result.success is False and result.error == f"connection closed by 127.0.0.1:{port}/tcp"


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_stream_tries_the_next_resolved_address(kamailio_md5: KamailioPeer, transport: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 3263 §4.3: a name resolving to a dead address first (here ::1 on a closed port
    is what the resolver gives first) and then the server: the probe connects to the second."""
    loop = asyncio.get_running_loop()
    port = kamailio_md5.port(transport)
    dead = free_port(socket.SOCK_STREAM, "::1")

    async def two_addresses(host: str, p: int, **kw: object) -> list[tuple]:
        assert host == "sip.skinnysip.test"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", dead, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]

    monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
    result = await options(ProbeRequest(host="sip.skinnysip.test", port=port, transport=transport,
                                        timeout=5.0, tls_verify=False))
    assert result.success, result.error
    assert result.status_code == 200
    assert result.exchange[0].remote == f"127.0.0.1:{port}"

    async def dead_only(host: str, p: int, **kw: object) -> list[tuple]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", p, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]

    monkeypatch.setattr(loop, "getaddrinfo", dead_only)
    # the explicit port is the one used on every address (RFC 3263 §4.2): closed on both
    failed = await options(ProbeRequest(host="sip.skinnysip.test", port=dead, transport=transport, timeout=5.0))
    assert not failed.success
    assert f"connection refused by [::1]:{dead}/{transport}" in (failed.error or "")
    assert "connection refused by 127.0.0.1:" in (failed.error or "")
