"""UDP sends gathered per loop round (``udp_send_burst``, the load generator's setting), on
either event loop, against a plain socket on 127.0.0.1: nothing leaves before the round ends
(or the cap is reached), everything leaves then, in order; a gathered datagram's error still
fails its transaction; closing sends what was gathered."""

from __future__ import annotations

import asyncio
import socket

import pytest

from skinnysip.addresses import hostport
from skinnysip.net import event_loop as event_loops
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.net.sip_transport import SIPTransportLayer
from skinnysip.sip.message import Request
from skinnysip.sip.request import new_request
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import NameAddr, SipURI

pytestmark = pytest.mark.timeout(30)

LOOPS = ["asyncio", "uvloop"]


def _options(remote: tuple[str, int], n: int) -> Request:
    uri = SipURI.parse(f"sip:{hostport(*remote)}")
    return new_request("OPTIONS", str(uri), from_=NameAddr(None, SipURI.parse("sip:probe@127.0.0.1")),
                       to=NameAddr(None, uri), via=f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{n:08d}",
                       call_id=f"burst-{n}")


def _read_all(peer: socket.socket) -> list[str]:
    """The Call-IDs of the datagrams waiting on ``peer`` now, in arrival order."""
    got = []
    while True:
        try:
            data = peer.recv(65536)
        except BlockingIOError:
            return got
        got.append(data.split(b"\r\nCall-ID: ", 1)[1].split(b"\r\n", 1)[0].decode())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_rounds_sends_leave_together_at_its_end_or_at_the_cap(loop_name: str) -> None:
    async def main() -> None:
        layer = SIPTransportLayer(lambda m, f: None, lambda f, r: None, udp_send_burst=4)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            remote = peer.getsockname()
            local = await layer.listen("udp", "127.0.0.1", 0)
            flow = Flow("udp", remote, local=local)
            try:
                for n in range(3):
                    layer.send(_options(remote, n), flow)
                assert _read_all(peer) == []  # gathered: loopback would have delivered a sent one at once
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert _read_all(peer) == ["burst-0", "burst-1", "burst-2"]
                for n in range(3, 9):  # six in one round, the cap four: four at the fourth send
                    layer.send(_options(remote, n), flow)
                    if n == 6:
                        assert _read_all(peer) == ["burst-3", "burst-4", "burst-5", "burst-6"]
                assert _read_all(peer) == []
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert _read_all(peer) == ["burst-7", "burst-8"]
                layer.send(_options(remote, 9), flow)
                layer.send(_options(remote, 10), flow)
            finally:
                await layer.close()  # what the round gathered still goes
            assert _read_all(peer) == ["burst-9", "burst-10"]

    event_loops.run(main(), loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_gathered_datagrams_own_error_ends_its_exchange_as_an_immediate_one_does(loop_name: str) -> None:
    """A destination the socket cannot send to (IPv6 from an IPv4 socket: the kernel refuses
    it, nothing leaves): sent at once, the exchange ends before ``transact`` first waits;
    gathered, from the end of the round. The same reason either way, and a request to a live
    peer in the same round still leaves."""

    async def run(burst: int) -> str | None:
        async with SIPEndpoint(trace=False, udp_send_burst=burst) as client:
            local = await client.listen("udp", "127.0.0.1", 0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind(("127.0.0.1", 0))
                peer.setblocking(False)
                bad = Flow("udp", ("::1", 5060), local=local)
                good = Flow("udp", peer.getsockname(), local=local)
                failing = asyncio.ensure_future(client.transact(_options(bad.remote, 1), bad, timeout=2.0))
                going = asyncio.ensure_future(client.transact(_options(good.remote, 2), good, timeout=0.3))
                outcome = await asyncio.wait_for(failing, 1.0)
                assert outcome.response is None
                assert (await going).error == "timeout"  # unanswered, but its request left
                assert _read_all(peer) == ["burst-2"]
                return outcome.error

    async def main() -> None:
        at_once, gathered = await run(0), await run(16)
        assert at_once is not None and "[::1]:5060/udp" in at_once, at_once
        assert gathered == at_once

    event_loops.run(main(), loop_name)


def test_a_negative_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SIPTransportLayer(lambda m, f: None, lambda f, r: None, udp_send_burst=-1)
