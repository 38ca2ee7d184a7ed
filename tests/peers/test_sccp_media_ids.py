"""Media control messages whose ids do not name the open stream.

Reference §3.22 / §7 item 16: Asterisk puts conferenceId 0 in StopMediaTransmission and
CloseReceiveChannel; other call managers are looser still. A station must still stop sending
and close the right socket. The call manager here is a short script (no real program sends
these on demand); the station, its RTP socket and the RTP it sends are real."""

from __future__ import annotations

import asyncio

import pytest

from skinnysip.probes.sccp import StationSession
from skinnysip.sccp.messages import FrameDecoder, encode
from skinnysip.sccp.station import StationConfig

pytestmark = pytest.mark.peer


class Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


@pytest.mark.parametrize("stop_ids", [(0, 0), (0, 9)], ids=["no-ids", "call-reference-only"])
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
                        writer.write(encode("OpenReceiveChannel", {
                            "conferenceId": 9, "passThruPartyId": 77, "millisecondPacketSize": 20,
                            "compressionType": 4, "callReference": 9}))
                    elif msg.name == "OpenReceiveChannelAck":
                        acks.append(msg.fields)
                        writer.write(encode("StartMediaTransmission", {
                            "conferenceId": 9, "passThruPartyId": 77, "remoteIpAddr": "127.0.0.1",
                            "remotePortNumber": rtp_port, "millisecondPacketSize": 20, "compressionType": 4,
                            "callReference": 9}))
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
    session = await StationSession.connect("127.0.0.1", port, StationConfig(), timeout=3.0, media_seconds=5.0)
    try:
        assert type(await session.register()).__name__ == "Registered"
        await session.pump(None, 0.4)
        assert acks and acks[0]["passThruPartyId"] == 77
        assert counter.packets >= 5, "the station never sent RTP"
        assert list(session.media) == [77]
        stop.set()
        session.station.send_keepalive(session.now())  # makes the script read again and send Stop/Close
        await session.pump(None, 0.3)
        assert session.media == {}, "CloseReceiveChannel did not close the stream"
        [closed] = session.finished_media
        assert closed.closed and closed.request.pass_thru_party_id == 77
        before = counter.packets
        await asyncio.sleep(0.2)
        assert counter.packets == before, "RTP still sent after StopMediaTransmission"
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
        rtp.close()
