"""SIP over WebSocket (RFC 7118) at the edges a real server does not show: a server that
answers the handshake wrongly or not at all, a client that offers no ``sip`` subprotocol or
sends fragments, pings, keep-alives and oversized messages, and how targets are written.
Everything runs on 127.0.0.1; the misbehaving peers are raw sockets that send exact bytes."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinnysip.cli.common import parse_target
from skinnysip.net import sip_transport
from skinnysip.net.resolver import Resolver, default_port
from skinnysip.net.websocket import WebSocketError, WebSocketFraming
from skinnysip.probes import sip as probes
from skinnysip.probes.listen import ListenConfig, Responder

pytestmark = pytest.mark.timeout(60)

OPTIONS = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS client.invalid;branch=z9hG4bK-ws-1\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:a@client.invalid>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
           b"Call-ID: ws-unit-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One RFC 6455 §5.2 frame (a client's are masked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def unmasked_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the server's (unmasked) frames in ``data``."""
    out = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        out.append((opcode, data[offset:offset + size]))
        data = data[offset + size:]
    return out


async def upgrade(port: int, protocol: str | None = "sip") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A raw client's handshake with our listener; the reader, writer and the HTTP answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /any/path HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, answer


async def read_frames(reader: asyncio.StreamReader, want: int = 1, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    data = b""
    async with asyncio.timeout(timeout):
        while len(unmasked_frames(data)) < want:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return unmasked_frames(data)


@pytest.fixture
async def listener() -> Responder:
    responder = Responder(ListenConfig(host="127.0.0.1", port=0, transport="ws"))
    await responder.start()
    yield responder
    await responder.close()


async def test_our_listener_answers_a_sip_message_sent_in_fragments(listener: Responder) -> None:
    """RFC 6455 §5.4: a message may come in fragments (text, then continuation frames); it is
    one SIP message all the same (RFC 7118 §5), answered in one text frame."""
    reader, writer, answer = await upgrade(listener.local[1])
    assert answer.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: sip" in answer, answer
    writer.write(frame(0x1, OPTIONS[:40], fin=False) + frame(0x0, OPTIONS[40:100], fin=False)
                 + frame(0x0, OPTIONS[100:]))
    (opcode, payload), = await read_frames(reader)
    assert opcode == 0x1 and payload.startswith(b"SIP/2.0 200 OK\r\n"), payload
    assert b"Via: SIP/2.0/WS client.invalid;branch=z9hG4bK-ws-1;received=127.0.0.1" in payload, payload
    writer.close()


async def test_a_client_without_the_sip_subprotocol_is_refused(listener: Responder) -> None:
    """RFC 7118 §4.1: the handshake must name ``sip``; without it the answer is 400 and the
    connection is not used for SIP."""
    for protocol in (None, "msrp"):
        _, writer, answer = await upgrade(listener.local[1], protocol)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        writer.close()


async def test_ping_gets_pong_and_crlf_keepalive_gets_crlf(listener: Responder) -> None:
    """RFC 6455 §5.5.2: a ping is answered with a pong carrying its data; a message of CRLF CRLF
    (the keep-alive SIP.js and JsSIP send) is answered with CRLF (RFC 5626 §4.4.1)."""
    reader, writer, _ = await upgrade(listener.local[1])
    writer.write(frame(0x9, b"are you there"))
    assert await read_frames(reader) == [(0xA, b"are you there")]
    writer.write(frame(0x1, b"\r\n\r\n"))
    assert await read_frames(reader) == [(0x1, b"\r\n")]
    writer.close()


async def test_an_oversized_message_fails_the_websocket_with_1009(listener: Responder) -> None:
    """Every read has a cap: a message over the SIP size limit (65536 octets) is refused with
    close code 1009 (message too big) and the connection ends."""
    reader, writer, _ = await upgrade(listener.local[1])
    writer.write(frame(0x1, b"x" * (sip_transport.MAX_MESSAGE_SIZE + 1)))
    frames = await read_frames(reader)
    assert frames and frames[0][0] == 0x8 and struct.unpack("!H", frames[0][1][:2])[0] == 1009, frames
    writer.close()


async def test_a_malformed_sip_message_is_dropped_and_the_websocket_goes_on(listener: Responder) -> None:
    """The WebSocket frames each message, so a malformed one is dropped like a bad datagram
    (RFC 3261 §18.1.2) and the next one is answered."""
    reader, writer, _ = await upgrade(listener.local[1])
    writer.write(frame(0x1, b"OPTIONS nonsense\r\n\r\n") + frame(0x1, OPTIONS))
    (opcode, payload), = await read_frames(reader)
    assert payload.startswith(b"SIP/2.0 200 OK"), payload
    assert listener.endpoint.transport.malformed_count == 1
    writer.close()


async def test_a_client_that_never_completes_its_handshake_is_closed(listener: Responder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip_transport, "WS_HANDSHAKE_TIMEOUT", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.local[1])
    writer.write(b"GET / HTTP/1.1\r\n")  # and nothing more
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the listener
    writer.close()


async def raw_server(answer: bytes | None) -> tuple[asyncio.Server, int]:
    """A TCP server that reads a request and sends ``answer`` (None: says nothing)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def switching_protocols(*, subprotocol: bool) -> Any:
    """A raw server's handler: a 101 to the client's handshake (with ``Sec-WebSocket-Protocol:
    sip`` or without), then nothing — it reads until the client goes and answers no frame."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        agreed = "Sec-WebSocket-Protocol: sip\r\n" if subprotocol else ""
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept_value(key)}\r\n{agreed}\r\n".encode())
        await reader.read()
        writer.close()

    return handle


def accept_value(request_key: str) -> str:
    import hashlib

    digest = hashlib.sha1((request_key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize(("answer", "wanted"), [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "refused the WebSocket upgrade with HTTP 404 Not Found"),
    (b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "WebSocket handshake with"),
    (None, "no WebSocket handshake answer from"),
    (b"", "closed the connection during the WebSocket handshake"),
], ids=["http-404", "a-sip-server", "silent", "closes"])
async def test_a_server_that_is_not_a_websocket_server_is_one_clear_error(answer: bytes | None, wanted: str) -> None:
    if answer == b"":
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        server, port = await raw_server(answer)
    async with server:
        result = await probes.options(probes.ProbeRequest(host="127.0.0.1", port=port, transport="ws", timeout=1.0))
    assert result.success is False and result.error is not None and wanted in result.error, result.error
    assert "Traceback" not in result.error


async def test_a_server_that_drops_the_sip_subprotocol_is_refused() -> None:
    """RFC 7118 §4.1: a 101 without ``Sec-WebSocket-Protocol: sip`` is not a SIP WebSocket; the
    client must not use it."""
    server = await asyncio.start_server(switching_protocols(subprotocol=False), "127.0.0.1", 0)
    async with server:
        result = await probes.options(probes.ProbeRequest(host="127.0.0.1", port=server.sockets[0].getsockname()[1],
                                                          transport="ws", timeout=2.0))
    assert result.error is not None and "not the 'sip' subprotocol" in result.error, result.error


async def test_the_client_handshake_names_the_path_host_and_subprotocol() -> None:
    ws = WebSocketFraming.client("pbx.example.com", 8089, "/ws?token=1", secure=True, user_agent="skinnysip/test")
    request = ws.outgoing().decode()
    assert request.startswith("GET /ws?token=1 HTTP/1.1\r\n"), request
    assert "Host: pbx.example.com:8089\r\n" in request and "Sec-WebSocket-Protocol: sip\r\n" in request
    assert "User-Agent: skinnysip/test\r\n" in request
    with pytest.raises(WebSocketError, match="must start with '/'"):
        WebSocketFraming.client("127.0.0.1", 80, "ws")


def test_websocket_targets_as_people_write_them() -> None:
    """RFC 6455 §3 URLs and RFC 7118 §5.2 URIs: ``transport=ws`` in a ``sips:`` URI is WSS."""
    target = parse_target("wss://PBX.example.com:8089/ws")
    assert (target.host, target.port, target.transport, target.path) == ("pbx.example.com", 8089, "wss", "/ws")
    target = parse_target("ws://[::1]/")
    assert (target.host, target.port, target.transport, target.path) == ("::1", None, "ws", "/")
    assert parse_target("sips:example.com;transport=ws").transport == "wss"
    assert parse_target("sip:example.com;transport=WS").transport == "ws"
    for bad in ("ws://host/#frag", "ws://user@host/", "ws://:80/", "ws://host:99999/"):
        with pytest.raises(click.BadParameter):
            parse_target(bad)


async def test_websocket_ports_and_no_srv() -> None:
    """80 and 443 by default (RFC 6455 §3); an IP literal needs no DNS, and ``sips:`` with
    ``transport=ws`` resolves to ``wss``."""
    assert default_port("ws") == 80 and default_port("wss") == 443
    resolver = Resolver()
    (target,) = await resolver.resolve("127.0.0.1", transport="ws", secure=True)
    assert (target.transport, target.port) == ("wss", 443)


def _open_server_framing() -> WebSocketFraming:
    """A server-side framing whose handshake is done (a client's request fed)."""
    client = WebSocketFraming.client("127.0.0.1", 80, "/")
    server = WebSocketFraming.server("fuzz")
    assert server.handshake_step(client.outgoing())
    server.outgoing()
    return server


#: masked client frames of any opcode, either fin, payloads from empty to past the SIP cap
_FRAMES = st.builds(lambda opcode, fin, payload, pad: frame(opcode, payload + b"x" * pad, fin=fin),
                    st.integers(0, 15), st.booleans(), st.binary(max_size=200),
                    st.sampled_from([0, 0, 0, 130, 70000]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), _FRAMES), max_size=8))
def test_any_bytes_after_the_handshake_are_messages_or_one_websocket_error(chunks: list[bytes]) -> None:
    """Whatever a peer sends once the WebSocket is open — fragments of frames, bad opcodes,
    unmasked client frames, lengths that lie — the framing gives whole messages (none over the
    cap) or raises :class:`WebSocketError`; never another exception."""
    server = _open_server_framing()
    for chunk in chunks:
        try:
            messages = server.feed(chunk)
        except WebSocketError:
            return
        assert all(len(m) <= sip_transport.MAX_MESSAGE_SIZE for m in messages)
        server.outgoing()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_answer_to_our_handshake_completes_it_or_is_one_websocket_error(answer: bytes) -> None:
    client = WebSocketFraming.client("127.0.0.1", 80, "/")
    client.outgoing()
    try:
        client.handshake_step(answer)
    except WebSocketError:
        pass


async def test_an_unanswered_ping_fails_the_connection_an_answered_one_does_not(
        listener: Responder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our keep-alive on a WebSocket is a ping; a peer that answers it (our listener) keeps the
    connection, one that completed the handshake but then says nothing loses it, with why."""
    monkeypatch.setattr(sip_transport, "PONG_TIMEOUT", 0.3)
    lost: list[str] = []
    layer = sip_transport.SIPTransportLayer(lambda message, flow: None, lambda flow, reason: lost.append(reason))
    try:
        alive = await layer.connect("ws", listener.local, timeout=2.0)
        layer.send_keepalive(alive.flow)
        await asyncio.sleep(0.6)
        assert not alive.closed and lost == []

        server = await asyncio.start_server(switching_protocols(subprotocol=True), "127.0.0.1", 0)  # mute after
        async with server:
            silent = await layer.connect("ws", ("127.0.0.1", server.sockets[0].getsockname()[1]), timeout=2.0)
            layer.send_keepalive(silent.flow)
            await asyncio.sleep(0.6)
            assert silent.closed and lost and "no answer to a WebSocket ping" in lost[-1], lost
    finally:
        await layer.close()
