"""RFC 3261 §18.2.2: a response whose TCP connection has closed goes over a new connection to
the Via's ``received`` address (else sent-by) at the sent-by port. The client here is a bare
socket UA listening on its own TCP port: it sends an INVITE to an auto-answering phone, closes
the connection after the first provisional response, and must get the 200 on a connection the phone opens."""

from __future__ import annotations

import asyncio
import socket

from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(phone_port: int, listen_port: int) -> bytes:
    head = (f"INVITE sip:alice@127.0.0.1:{phone_port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{listen_port};branch=z9hG4bK-reconnect-1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=b1\r\nTo: <sip:alice@127.0.0.1>\r\n"
            "Call-ID: reconnect-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:bob@127.0.0.1:{listen_port};transport=tcp>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n")
    return (head + SDP).encode()


async def read_response(reader: asyncio.StreamReader, timeout: float) -> str:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)).decode()
    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                   if line.lower().startswith("content-length:")), 0)
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout)
    return head


async def test_a_response_after_the_connection_closed_comes_on_a_new_one() -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    listen_port = server.sockets[0].getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    phone_port = probe.getsockname()[1]
    probe.close()
    account = SIPAccount(aor="sip:alice@127.0.0.1", register=False, transport="tcp", listen_host="127.0.0.1",
                         listen_port=phone_port, auto_answer=0.5, source="silence")
    async with server, SIPPhone(account) as phone:
        reader, writer = await asyncio.open_connection("127.0.0.1", phone_port)
        writer.write(invite(phone_port, listen_port))
        await writer.drain()
        provisional = await read_response(reader, 5)  # 100 Trying or 180 Ringing
        assert provisional.startswith("SIP/2.0 1"), provisional
        writer.close()  # gone before the phone answers
        await writer.wait_closed()
        new_reader, new_writer = await asyncio.wait_for(accepted.get(), 5)
        final = await read_response(new_reader, 5)
        while final.startswith("SIP/2.0 18"):
            final = await read_response(new_reader, 5)
        assert final.startswith("SIP/2.0 200 "), final
        assert "branch=z9hG4bK-reconnect-1" in final
        sent = [m for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("200")]
        assert sent and "new connection" in sent[0].summary, [m.summary for m in phone.endpoint.trace]
        new_writer.close()
