"""The SCCP phone's keep-alive against a call manager that stops answering (reference §3.4).

The CM is a few lines of asyncio (no real program goes silent on demand): RegisterAck with a
1 s keepalive interval, two KeepAliveAcks, then silence on an open connection. The phone must
notice within one interval plus its ack timeout, drop the connection and register again with
exponential backoff while the CM refuses (it hangs up on the next two Registers), and be
registered again on the fourth connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from skinnysip.phone.api import RegistrationChanged, RegistrationState
from skinnysip.phone.sccp_phone import LAST_LOOK, SCCPAccount, SCCPPhone
from skinnysip.sccp.messages import FrameDecoder, encode

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

INTERVAL = 1
ACK_TIMEOUT = 0.5
#: room for a loaded 2-core machine on top of the one interval + ack timeout the phone promises
#: (the silence-based check before gave up only after 3 intervals + 1 s)
SLACK = 1.0


@dataclass
class SilentCM:
    acks: int = 2
    refuse: int = 2  # connections after the first that hang up on Register
    connected_at: list[float] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.connected_at.append(loop.time())
        n = len(self.connected_at)
        decoder = FrameDecoder()
        try:
            while data := await asyncio.wait_for(reader.read(4096), 30):
                for msg in decoder.feed(data):
                    if msg.name == "Register":
                        if 1 < n <= 1 + self.refuse:
                            return
                        writer.write(encode("RegisterAck", {"keepAliveInterval": INTERVAL}))
                    elif msg.name == "KeepAlive" and (n > 1 or len(self.acked_at) < self.acks):
                        writer.write(encode("KeepAliveAck"))
                        if n == 1:
                            self.acked_at.append(loop.time())
                    elif msg.name == "Unregister":
                        writer.write(encode("UnregisterAck", {"status": 0}))
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


async def test_dead_call_manager_noticed_within_an_interval_and_re_registered_with_backoff() -> None:
    cm = SilentCM()
    server = await asyncio.start_server(cm.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    account = SCCPAccount(host="127.0.0.1", port=port, timeout=1.0, reconnect_min=0.3, reconnect_max=5.0,
                          keepalive_ack_timeout=ACK_TIMEOUT)
    changes: list[tuple[float, RegistrationChanged]] = []
    try:
        async with SCCPPhone(account) as phone:
            assert phone.registration is RegistrationState.REGISTERED
            deadline = loop.time() + 30
            while loop.time() < deadline and not (phone.connections == 4
                                                  and phone.registration is RegistrationState.REGISTERED):
                ev = await phone.next_event(0.5)
                if isinstance(ev, RegistrationChanged):
                    changes.append((loop.time(), ev))
            assert phone.connections == 4 and phone.registration is RegistrationState.REGISTERED, changes
            # the keep-alive followed the RegisterAck's interval: acks about 1 s apart
            assert len(cm.acked_at) == 2 and cm.acked_at[1] - cm.acked_at[0] == pytest.approx(INTERVAL, abs=0.5)
            # the dead CM was noticed within one interval + the ack timeout of its last ack
            lost_at, lost = next((t, c) for t, c in changes if c.state is RegistrationState.FAILED)
            assert "no KeepAliveAck from the call manager within 0.5 s (keepalive interval 1 s)" in lost.reason
            silence = lost_at - cm.acked_at[-1]
            assert INTERVAL <= silence <= INTERVAL + ACK_TIMEOUT + LAST_LOOK + SLACK, silence
            # two refused registrations, then success: the gaps between attempts doubled
            gaps = [b - a for a, b in zip(cm.connected_at[1:], cm.connected_at[2:], strict=False)]
            assert cm.connected_at[1] - lost_at >= 0.3 * 0.9
            assert gaps[0] >= 0.6 * 0.9 and gaps[1] >= 1.2 * 0.9, gaps
            assert gaps[1] > gaps[0]
            reasons = [c.reason for _, c in changes if c.state is RegistrationState.FAILED]
            assert any("closed the connection" in r for r in reasons), reasons
    finally:
        server.close()
        await server.wait_closed()
