"""ICMP errors on the endpoint's unconnected UDP socket (127.0.0.1 only), on either event loop.

With IP_RECVERR, Linux queues each ICMP error (with the datagram's destination) and also
hands the newest to the socket's next send or receive as its pending error; a send that
meets it sends nothing. RFC 3261 §18.4: the error fails the client transactions sending to
*its* destination — not the transaction whose send happened to meet it — and the datagram
that met it still goes out."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from skinnysip.addresses import hostport
from skinnysip.net import event_loop as event_loops
from skinnysip.net import sip_transport
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.sip.request import new_call_id, new_request
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import NameAddr, SipURI

pytestmark = pytest.mark.timeout(30)

LOOPS = ["asyncio", "uvloop"]  # uvloop: a declared dependency (skinnysip load runs on it)


def _closed_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _options(ep: SIPEndpoint, flow: Flow):
    uri = SipURI.parse(f"sip:{hostport(*flow.remote)}")
    return new_request("OPTIONS", str(uri), from_=NameAddr(None, SipURI.parse("sip:probe@127.0.0.1")),
                       to=NameAddr(None, uri), via=ep.via(flow), call_id=new_call_id())


@pytest.mark.parametrize("burst", [0, 16])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("loop_name", LOOPS)
def test_requests_sent_together_to_a_closed_port_all_fail_at_once(loop_name: str, host: str, burst: int) -> None:
    """Four OPTIONS in one loop round to a port nobody listens on (IPv4, and IPv6 whose
    errors come as IPV6_RECVERR control messages): each fails on its ICMP
    port unreachable within 0.4 s (before Timer E's first retransmission at T1 = 0.5 s),
    none is retransmitted. Before: the sends after the first met the first one's error and
    failed without being sent, the others waited for their retransmissions (0.5 s, 1.5 s).
    The same with the sends gathered and sent together at the round's end (``burst``)."""

    async def main() -> None:
        async with SIPEndpoint(trace=False, udp_send_burst=burst) as client:
            await client.listen("udp", host, 0)
            flow = Flow("udp", (host, _closed_udp_port(host)), local=client.transport.listeners[0].local)
            started = time.monotonic()
            outcomes = await asyncio.gather(*(client.transact(_options(client, flow), flow, timeout=5.0)
                                              for _ in range(4)))
            elapsed = time.monotonic() - started
            where = f"{hostport(*flow.remote)}/udp"
            assert [o.error for o in outcomes] == [f"connection refused by {where} (ICMP port unreachable)"] * 4
            assert elapsed < 0.4, elapsed
            assert client.retransmissions == 0

    event_loops.run(main(), loop_name)


@pytest.mark.parametrize("burst", [0, 16])
@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_icmp_error_fails_only_its_destination_and_the_next_datagram_still_goes(loop_name: str, burst: int) -> None:
    """OPTIONS to a closed port, then at once OPTIONS to a live endpoint (its default 200),
    from the same socket: the second send meets the first one's ICMP error. The live
    endpoint must still get its request and the 200 must come back; only the closed port's
    transaction fails. Before: on asyncio's loop the second transaction could fail
    "connection refused by" the live endpoint, whose request was never sent; on uvloop the
    socket heard nothing more after its first ICMP error (libuv stops a poll handle that
    reported POLLERR), so the 200 never arrived: ``timeout``."""

    async def main() -> None:
        async with SIPEndpoint(trace=False) as server, SIPEndpoint(trace=False, udp_send_burst=burst) as client:
            _, port = await server.listen("udp", "127.0.0.1", 0)
            await client.listen("udp", "127.0.0.1", 0)
            local = client.transport.listeners[0].local
            dead = Flow("udp", ("127.0.0.1", _closed_udp_port()), local=local)
            live = Flow("udp", ("127.0.0.1", port), local=local)
            for pause in (0.0, 0.01, 0.0, 0.01):
                # dead first; the live send right after it in the same loop round (the error
                # pending on the socket, no read in between), or 10 ms later
                to_dead = asyncio.ensure_future(client.transact(_options(client, dead), dead, timeout=5.0))
                await asyncio.sleep(pause)
                to_live = await client.transact(_options(client, live), live, timeout=5.0)
                failed = await to_dead
                assert to_live.error is None and to_live.response is not None, to_live.error
                assert to_live.response.status_code == 200
                assert failed.error is not None and "ICMP port unreachable" in failed.error
                assert f":{dead.remote[1]}/udp" in failed.error
            assert client.retransmissions == 0

    event_loops.run(main(), loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_queued_icmp_errors_do_not_keep_the_loop_busy(loop_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sends to a closed port, the second meeting the first's error: the errors left in
    the socket's error queue are read, not left to make the socket ready again and again.
    Before, on asyncio's loop, the reader ran ~58000 times in 0.4 s (a core at 100 %) until a
    retransmission's error was received."""
    calls = 0
    read_ready = sip_transport._DrainingDatagramTransport._read_ready

    def counted(self: sip_transport._DrainingDatagramTransport) -> None:
        nonlocal calls
        calls += 1
        read_ready(self)

    monkeypatch.setattr(sip_transport._DrainingDatagramTransport, "_read_ready", counted)

    async def main() -> None:
        async with SIPEndpoint(trace=False) as client:
            await client.listen("udp", "127.0.0.1", 0)
            flow = Flow("udp", ("127.0.0.1", _closed_udp_port()), local=client.transport.listeners[0].local)
            waits = [asyncio.ensure_future(client.transact(_options(client, flow), flow, timeout=5.0))
                     for _ in range(2)]
            await asyncio.sleep(0.3)
            assert all(w.done() for w in waits)
        assert calls <= 10, calls

    event_loops.run(main(), loop_name)
