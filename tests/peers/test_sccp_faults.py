"""Faulty call managers: each gives a clear ``success: false`` error within the timeout, never a hang.

RegisterReject comes from the lab CM. The other faults (close mid-frame, oversize length, silence,
garbage, refusal) are tiny asyncio servers written here, since no real program misbehaves that
way on demand.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from peertools import free_port
from skinnysip.lab.callmanager import LabCallManager, LabConfig
from skinnysip.probes.sccp import SCCPRequest, SCCPResult, run_operation
from skinnysip.sccp.messages import encode

pytestmark = pytest.mark.peer

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
GUARD = 20.0  # a hang-guard for the test itself, far above every timeout used here


async def _serve(behaviour: Behaviour) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def run(op: str, port: int, **kw: object) -> SCCPResult:
    request = SCCPRequest.model_validate({"host": "127.0.0.1", "port": port, "timeout": 800, **kw})
    return await asyncio.wait_for(run_operation(op, request), GUARD)


async def _read_register(reader: asyncio.StreamReader) -> None:
    header = await reader.readexactly(12)
    length = struct.unpack_from("<I", header)[0]
    await reader.readexactly(length - 4)


async def test_register_reject_reports_reason() -> None:
    async with LabCallManager(LabConfig.demo()) as cm:
        res = await run("register", cm.port, deviceName="SEP0000DEADBEEF")
    assert not res.success and not res.registered
    assert res.rejected and res.status == "rejected"
    assert res.reject_reason == "No Authority: SEP0000DEADBEEF"
    assert res.error == "registration rejected: No Authority: SEP0000DEADBEEF"
    assert [m.summary for m in res.exchange] == ["Register", "RegisterReject"]


async def test_server_closing_mid_frame() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_register(reader)
        ack = encode("RegisterAck", {"keepAliveInterval": 30})
        writer.write(ack[:15])  # header + 3 payload bytes, then hang up
        await writer.drain()

    async for port in _serve(behaviour):
        res = await run("register", port)
    assert not res.success and not res.registered
    assert "closed the connection mid-frame" in (res.error or "")
    assert "(15 bytes of an incomplete frame)" in (res.error or "")


async def test_server_sending_oversize_length() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_register(reader)
        writer.write(struct.pack("<III", 1_000_000, 0, 0x81) + b"\x00" * 64)
        await writer.drain()
        await asyncio.sleep(5)

    async for port in _serve(behaviour):
        res = await run("register", port)
    assert not res.success
    assert (res.error or "").startswith("malformed data from 127.0.0.1:")
    assert "1000000" in (res.error or "") or "1000008" in (res.error or "")


async def test_silent_server_times_out() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        await asyncio.sleep(10)

    async for port in _serve(behaviour):
        res = await run("register", port)
        probe = await run("probe", port)
    assert not res.success and res.error == "no RegisterAck or RegisterReject within 800 ms"
    assert not probe.success and probe.keep_alive_ack is False
    assert probe.error == "no KeepAliveAck within 800 ms"


async def test_garbage_speaking_server() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async for port in _serve(behaviour):
        res = await run("probe", port)
    assert not res.success and "malformed data" in (res.error or "")


async def test_short_length_field() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack("<III", 2, 0, 0x100))  # length < 4 cannot hold a message ID
        await writer.drain()
        await asyncio.sleep(5)

    async for port in _serve(behaviour):
        res = await run("probe", port)
    assert not res.success and "malformed data" in (res.error or "")


async def test_connection_refused() -> None:
    port = free_port()
    res = await run("call-setup", port, dialNumber="600")
    assert not res.success and res.error == f"connection refused by 127.0.0.1:{port}"
    assert res.exchange == [] and res.connect_ms is None


async def test_server_that_hangs_up_right_after_register() -> None:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_register(reader)

    async for port in _serve(behaviour):
        res = await run("register", port)
    assert not res.success and res.error == f"127.0.0.1:{port} closed the connection"


async def test_extreme_u32_values_from_the_call_manager() -> None:
    """Issue 11 audit: every u32 at its maximum (keepalive interval, line instance, call
    reference, packet size, port, counts) — the phone stays registered, keeps the call, and says
    which field it could not use; nothing raises."""
    from skinnysip.phone.api import ErrorEvent
    from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone
    from skinnysip.sccp.messages import FrameDecoder

    top = 0xFFFFFFFF
    media = {"conferenceId": top, "passThruPartyId": top, "millisecondPacketSize": top, "callReference": top}

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(4096):
            for msg in decoder.feed(data):
                if msg.name == "Register":
                    writer.write(encode("RegisterAck", {"keepAliveInterval": top, "maxProtocolVer": 255})
                                 + encode("CallState", {"callState": 4, "lineInstance": top, "callReference": top})
                                 + encode("OpenReceiveChannel", {**media, "compressionType": top})
                                 + encode("StartMediaTransmission", {**media, "compressionType": 4,
                                                                     "remoteIpAddr": "127.0.0.1",
                                                                     "remotePortNumber": top})
                                 + encode("ButtonTemplate", {"buttonCount": top, "totalButtonCount": top}))
                elif msg.name == "Unregister":
                    writer.write(encode("UnregisterAck", {"status": 0}))
            await writer.drain()

    async for port in _serve(behaviour):
        phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=port, timeout=2.0))
        try:
            await phone.connect()
            registered = await phone.register(configuration=0)
            assert registered is not None and registered.keep_alive_interval == top
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while loop.time() < deadline and not (phone.calls and phone.calls[0].media_error):  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
            [call] = phone.calls
            assert call.call_reference == top and call.line_instance == top  # type: ignore[attr-defined]
            assert call.media_error == f"StartMediaTransmission: remotePortNumber {top} is not a UDP port"  # type: ignore[attr-defined]
            events = []
            while (ev := await phone.next_event(0.01)) is not None:
                events.append(ev)
            assert not [e for e in events if isinstance(e, ErrorEvent) and "internal error" in e.reason]
            assert phone.connection_error == "" and phone.station is not None
            assert phone.station.state == "registered"
        finally:
            await asyncio.wait_for(phone.close(), GUARD)


async def test_tls_port_that_never_completes_the_handshake() -> None:
    """Issue 11: TCP is accepted but no ServerHello ever comes: the error names the TLS handshake
    and the time it was given, not a lost connection."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # the ClientHello, never answered
        await asyncio.sleep(5)

    async for port in _serve(behaviour):
        res = await run("probe", port, tls=True, tlsVerify=False)
    assert not res.success and res.transport == "tls"
    assert res.error == f"TLS handshake with 127.0.0.1:{port} did not complete within 800 ms"
    assert res.exchange == [] and res.connect_ms is None
