"""What the probes on the new core hear that a connected UDP socket did not: a server that
answers from another port (multi-homed, or a stateless front end), and a server that sends a
request back to the address in our Via during a call; plus the RFC 5626 CRLF keep-alive on a
stream. No real program does this on demand, so the servers are a few lines of asyncio."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.probes.sip import ProbeRequest, invite, options

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


def _header(text: str, name: str) -> str:
    m = re.search(rf"^{name}:(.*)$", text, re.M | re.I)
    return m.group(1).strip() if m else ""


def _reply(request: str, status: str, extra: str = "", body: str = "") -> bytes:
    return (f"SIP/2.0 {status}\r\nVia: {_header(request, 'Via')}\r\nFrom: {_header(request, 'From')}\r\n"
            f"To: {_header(request, 'To')};tag=srv\r\nCall-ID: {_header(request, 'Call-ID')}\r\n"
            f"CSeq: {_header(request, 'CSeq')}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()


async def test_response_from_another_port_is_heard() -> None:
    """The request goes to port A; the answer comes from port B (RFC 3261 §18.2.2 lets a
    server send from any socket). The unconnected UDP socket hears it."""
    loop = asyncio.get_running_loop()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    other_port = out.getsockname()[1]

    class Front(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            out.sendto(_reply(data.decode(), "200 OK"), addr)

    transport, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        result = await options(ProbeRequest(host="127.0.0.1", port=port, timeout=3))
    finally:
        transport.close()
        out.close()
    assert result.success, result.error
    assert result.status_code == 200
    assert [m.remote for m in result.exchange] == [f"127.0.0.1:{port}", f"127.0.0.1:{other_port}"]


async def test_request_from_the_server_is_answered_during_a_call() -> None:
    """While the INVITE is ringing the server sends OPTIONS to the address in our Via; the
    probe's endpoint answers it (200 with Allow), then the call is rejected as usual."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    answered = loop.create_future()

    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            text = data.decode()
            seen.append(text.split("\r\n", 1)[0])
            if text.startswith("INVITE"):
                self.invite = text
                via = _header(text, "Via")
                sent_by = via.split()[1].split(";")[0]
                host, _, vport = sent_by.rpartition(":")
                ping = ("OPTIONS sip:probe@" + sent_by + " SIP/2.0\r\n"
                        "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKsrvping1\r\n"
                        "From: <sip:server@127.0.0.1>;tag=p1\r\nTo: <sip:probe@%s>\r\n"
                        "Call-ID: ping-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                        ) % (self.transport.get_extra_info("sockname")[1], sent_by)
                self.transport.sendto(_reply(text, "180 Ringing"), addr)
                self.transport.sendto(ping.encode(), (host, int(vport)))
            elif text.startswith("SIP/2.0 200") and "ping-1" in text:
                if not answered.done():
                    answered.set_result(text)
                self.transport.sendto(_reply(self.invite, "603 Decline"), addr)

    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        result = await invite(ProbeRequest(host="127.0.0.1", port=port, timeout=5))
        reply = await asyncio.wait_for(answered, 1)
    finally:
        transport.close()
    assert result.success, result.error
    assert result.status_code == 603 and result.provisional == [180]
    assert "Allow:" in reply and "INVITE" in _header(reply, "Allow")
    received = [m.summary for m in result.exchange if m.direction == "received"]
    assert any(s.startswith("OPTIONS sip:probe@") for s in received)  # on the record too
    assert received[-1] == "603 Decline"


async def test_crlf_keepalive_is_answered_on_a_stream() -> None:
    """RFC 5626 §4.4.1: a CRLF CRLF ping on a TCP connection gets a CRLF pong, and a request
    on the same connection afterwards is still answered."""
    async with SIPEndpoint() as ep:
        host, port = await ep.listen("tcp", "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"\r\n\r\n")
            pong = await asyncio.wait_for(reader.readexactly(2), 2)
            writer.write(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP client.invalid:1;branch=z9hG4bKka1\r\n"
                          b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ka-1\r\n"
                          b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        finally:
            writer.close()
    assert pong == b"\r\n"
    assert head.startswith(b"SIP/2.0 200 OK")
    # received stamped on the Via we sent (RFC 3261 §18.2.1: its host is not the source)
    assert b"received=127.0.0.1" in head


async def test_a_udp_socket_of_a_flows_own_is_closed_with_it_and_never_borrowed() -> None:
    """``flow_to(reuse=False)`` over UDP (the load generator's SIPp ``-t un``): a socket of
    the flow's own, on a port of the range asked for, that :meth:`close_flow` closes while
    the shared socket stays; a message sent on the closed flow is an error, not a datagram
    from another attempt's socket."""
    from skinnysip.net.resolver import ServerTarget
    from skinnysip.net.sip_transport import SIPTransportError
    from skinnysip.sip.message import parse_message

    heard: list[tuple[str, int]] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            heard.append(addr)

    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    target = ServerTarget("127.0.0.1", server.get_extra_info("sockname")[1], "udp", "127.0.0.1")
    ep = SIPEndpoint()
    try:
        shared = await ep.flow_to(target)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
        probe.close()
        own = [await ep.flow_to(target, reuse=False, ports=(first, first + 2)) for _ in range(2)]
        assert [f.local for f in own] == [("127.0.0.1", first), ("127.0.0.1", first + 1)]
        assert await ep.flow_to(target) == shared  # the shared socket is not one of them
        message = parse_message(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa\r\n"
                                b"Call-ID: a\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@b>\r\n\r\n")
        ep.send_stateless(message, own[0])
        await ep.close_flow(own[0])
        await ep.close_flow(shared)  # shared: stays open
        with pytest.raises(SIPTransportError):
            ep.send_stateless(message, own[0])
        ep.send_stateless(message, shared)
        ep.send_stateless(message, own[1])
        third = await ep.flow_to(target, reuse=False, ports=(first, first + 2))
        assert third.local == ("127.0.0.1", first + 2)  # the range is searched on from the last
        with pytest.raises(SIPTransportError, match="no free UDP port"):
            await ep.flow_to(target, reuse=False, ports=(first + 1, first + 2))
        await asyncio.sleep(0.2)
        assert [port for _, port in heard] == [first, shared.local[1], first + 1]  # type: ignore[index]
    finally:
        await ep.close()
        server.close()
