"""Media control messages whose ids do not name the open stream.

Reference §3.22 / §7 item 16: Asterisk puts conferenceId 0 in StopMediaTransmission and
CloseReceiveChannel; other call managers are looser still. The SCCP phone must still stop sending
and close the right stream. The call manager here is a short script (no real program sends
these on demand); the phone, its media stream and the RTP it sends are real."""

from __future__ import annotations

import asyncio

import pytest

from skinnysip.phone.api import CallState
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.sccp.messages import FrameDecoder, encode

pytestmark = pytest.mark.peer

REF = 9


class Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


async def wait_for(condition, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return bool(condition())


@pytest.mark.parametrize("stop_ids", [(0, 0), (0, REF)], ids=["no-ids", "call-reference-only"])
async def test_stop_and_close_without_pass_thru_party_id(stop_ids: tuple[int, int]) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter()
    rtp, _ = await loop.create_datagram_endpoint(lambda: counter, local_addr=("127.0.0.1", 0))
    rtp_port = rtp.get_extra_info("sockname")[1]
    acks: list[dict] = []
    stop = asyncio.Event()

    async def cm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                for msg in decoder.feed(data):
                    if msg.name == "Register":
                        writer.write(encode("RegisterAck", {"keepAliveInterval": 30}))
                        # a call rings in, and the CM opens its media at once
                        writer.write(encode("CallState", {"callState": 4, "lineInstance": 1, "callReference": REF}))
                        writer.write(encode("OpenReceiveChannel", {
                            "conferenceId": REF, "passThruPartyId": 77, "millisecondPacketSize": 20,
                            "compressionType": 4, "callReference": REF}))
                    elif msg.name == "OpenReceiveChannelAck":
                        acks.append(msg.fields)
                        writer.write(encode("StartMediaTransmission", {
                            "conferenceId": REF, "passThruPartyId": 77, "remoteIpAddr": "127.0.0.1",
                            "remotePortNumber": rtp_port, "millisecondPacketSize": 20, "compressionType": 4,
                            "callReference": REF}))
                    elif msg.name == "KeepAlive":
                        writer.write(encode("KeepAliveAck"))
                    elif msg.name == "Unregister":
                        writer.write(encode("UnregisterAck", {"status": 0}))
                    elif msg.name in ("SoftKeyEvent", "OnHook"):  # the phone rejects the call on close
                        writer.write(encode("CallState", {"callState": 2, "lineInstance": 1, "callReference": REF}))
                    await writer.drain()
                if stop.is_set():
                    pass_thru, ref = stop_ids
                    fields = {"conferenceId": 0, "passThruPartyId": pass_thru, "callReference": ref}
                    writer.write(encode("StopMediaTransmission", fields) + encode("CloseReceiveChannel", fields))
                    await writer.drain()
                    stop.clear()
        finally:
            writer.close()

    server = await asyncio.start_server(cm, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=port, timeout=3.0, source="tone:440"))
    try:
        await phone.connect()
        assert type(await phone.register(configuration=0)).__name__ == "Registered"
        assert await wait_for(lambda: bool(phone.calls) and bool(phone.calls[0].streams))  # type: ignore[attr-defined]
        call = phone.calls[0]
        assert isinstance(call, SCCPCall) and call.state is CallState.INCOMING and call.call_reference == REF
        assert await wait_for(lambda: counter.packets >= 5), "the phone never sent RTP"
        assert acks and acks[0]["passThruPartyId"] == 77 and acks[0]["callReference"] == REF
        assert list(call.streams) == [77]
        stop.set()
        assert await phone.keepalive(3.0) is not None  # the script reads again and sends Stop/Close
        assert await wait_for(lambda: not call.streams and bool(call.reports)), \
            "CloseReceiveChannel did not close the stream"
        [report] = call.reports
        assert report["final"] and report["sent"]["packets"] >= 5
        before = counter.packets
        await asyncio.sleep(0.2)
        assert counter.packets == before, "RTP still sent after StopMediaTransmission"
    finally:
        await phone.close()
        server.close()
        await server.wait_closed()
        rtp.close()
