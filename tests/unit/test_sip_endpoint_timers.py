"""The endpoint's driving of the transaction layer on loopback (127.0.0.1 only): timers are
loop timers (retransmissions and Timer F still fire, RFC 3261 §17.1.2.2), a wait ends at its
deadline, and a client transaction's handle is dropped once the transaction has ended, also
when it ends by Timer K with no event (no handle kept per request for the endpoint's life)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from skinnysip.net import event_loop as event_loops
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.sip.request import new_call_id, new_request
from skinnysip.sip.transaction import Flow, Timers
from skinnysip.sip.uri import NameAddr, SipURI

pytestmark = pytest.mark.timeout(30)

FAST = Timers(t1=0.02, t2=0.08, t4=0.1)  # Timer F = 64·T1 = 1.28 s, K = T4 = 0.1 s


def _options(ep: SIPEndpoint, flow: Flow):
    uri = SipURI.parse(f"sip:{flow.remote[0]}:{flow.remote[1]}")
    return new_request("OPTIONS", str(uri), from_=NameAddr(None, SipURI.parse("sip:load@127.0.0.1")),
                       to=NameAddr(None, uri), via=ep.via(flow), call_id=new_call_id())


@contextlib.asynccontextmanager
async def _to_a_silent_peer() -> AsyncIterator[tuple[SIPEndpoint, Flow, socket.socket]]:
    """An endpoint (FAST timers) and a UDP flow from it to a bound socket that never answers."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        async with SIPEndpoint(timers=FAST, trace=False) as client:
            await client.listen("udp", "127.0.0.1", 0)
            yield client, Flow("udp", silent.getsockname(), local=client.transport.listeners[0].local), silent
    finally:
        silent.close()


async def test_handles_are_dropped_at_the_final_response_and_timer_k_absorbs() -> None:
    """OPTIONS to another endpoint (its default 200): with the final response the endpoint
    keeps no handle and no transaction; a retransmission of that 200 within T4 (Timer K) is
    absorbed, one after T4 is an unmatched response (RFC 3261 §17.1.2.2)."""
    async with SIPEndpoint(timers=FAST, trace=False) as server, SIPEndpoint(timers=FAST, trace=False) as client:
        _, port = await server.listen("udp", "127.0.0.1", 0)
        await client.listen("udp", "127.0.0.1", 0)
        local = client.transport.listeners[0].local
        flow = Flow("udp", ("127.0.0.1", port), local=local)
        outcomes = await asyncio.gather(*(client.transact(_options(client, flow), flow, timeout=5.0)
                                          for _ in range(20)))
        assert [o.response.status_code for o in outcomes if o.response] == [200] * 20
        assert len(client._handles) == 0 and len(client.layer) == 0
        late = outcomes[0].response
        assert late is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(late.to_bytes(), local)
            await asyncio.sleep(0.03)
            assert client.layer.unmatched_responses == 0  # absorbed in Completed
            await asyncio.sleep(0.15)  # T4 = 0.1 s
            raw.sendto(late.to_bytes(), local)
            await asyncio.sleep(0.03)
            assert client.layer.unmatched_responses == 1


async def test_silent_server_retransmissions_then_timer_f() -> None:
    """A UDP peer that never answers: Timer E retransmits (T1, 2·T1, … up to T2) from the
    loop timer, Timer F (64·T1) ends the transaction as a timeout; the handle is dropped."""
    async with _to_a_silent_peer() as (client, flow, silent):
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await client.transact(_options(client, flow), flow, timeout=10.0)
        elapsed = loop.time() - started
        assert outcome.error == "timeout" and outcome.timer == "F"
        assert 1.2 <= elapsed < 3.0
        assert client.retransmissions >= 15  # 0.02, 0.04, 0.08 then every 0.08 s up to 1.28 s
        assert len(client._handles) == 0 and len(client.layer) == 0
        received = 0
        while True:
            try:
                silent.recv(65536)
            except BlockingIOError:
                break
            received += 1
        assert received == 1 + client.retransmissions


async def test_a_timeout_equal_to_timer_f_is_reported_as_timer_f() -> None:
    """``transact`` with ``timeout`` = 64·T1 (the default 32 s of every command): the
    transaction's own Timer F and the wait's deadline fall together, and Timer F is what the
    outcome names (SIPp's FailedMaxUDPRetrans in ``load``), not the deadline."""
    async with _to_a_silent_peer() as (client, flow, _):
        for _ in range(3):
            outcome = await client.transact(_options(client, flow), flow, timeout=FAST.timeout)
            assert outcome.error == "timeout" and outcome.timer == "F"


async def test_next_event_returns_none_at_its_deadline() -> None:
    """A wait for an event that never comes ends at the deadline given (loop clock)."""
    async with _to_a_silent_peer() as (client, flow, _):
        handle = client.send_request(_options(client, flow), flow)
        assert handle is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.15
        assert await handle.next_event(deadline) is None
        assert deadline <= loop.time() < deadline + 0.1
        outcome = await client.transact(_options(client, flow), flow, timeout=0.1)
        assert outcome.error == "timeout" and outcome.timer is None  # our deadline, not Timer F


async def test_two_waiters_on_one_handle_each_get_an_event() -> None:
    """Two coroutines waiting on one handle: each event wakes them, one takes it, the other
    waits on for the next; a cancelled waiter leaves the other waiting."""
    from skinnysip.net.sip_endpoint import ClientHandle
    from skinnysip.sip.transactions import TimedOut

    loop = asyncio.get_running_loop()
    handle = ClientHandle(None, Flow("udp", ("127.0.0.1", 9)), loop.time())  # type: ignore[arg-type]
    deadline = loop.time() + 5.0
    first, second = (loop.create_task(handle.next_event(deadline)) for _ in range(2))
    doomed = loop.create_task(handle.next_event(deadline))
    await asyncio.sleep(0.01)
    doomed.cancel()
    events = [TimedOut(None, "F"), TimedOut(None, "B")]  # type: ignore[arg-type]
    handle._push(events[0])
    await asyncio.sleep(0.01)
    assert first.done() != second.done()
    handle._push(events[1])
    assert sorted([await first, await second], key=lambda e: e.timer) == [events[1], events[0]]
    assert handle._waiters == []


def test_timers_on_uvloop_when_a_deadline_has_already_passed() -> None:
    """uvloop's ``call_at`` for a time already past (the loop was busy: a deadline overdue
    when the layer hands it over) answers a plain ``Handle``, which has no ``when()``. The
    endpoint keeps the armed time itself: arming again afterwards raises nothing, and the
    retransmissions and Timer F of a transaction to a silent peer still fire on time."""
    pytest.importorskip("uvloop")

    async def main() -> None:
        async with _to_a_silent_peer() as (client, flow, _):
            loop = asyncio.get_running_loop()
            assert event_loops.loop_name(loop) == "uvloop"
            started = loop.time()
            waiting = asyncio.ensure_future(client.transact(_options(client, flow), flow, timeout=10.0))
            await asyncio.sleep(0.01)
            client._arm(loop.time() - 1.0)  # overdue: uvloop answers a Handle, not a TimerHandle
            client._arm(loop.time() + 5.0)  # the armed time is ours, not the handle's when()
            outcome = await waiting
            assert outcome.error == "timeout" and outcome.timer == "F"
            assert 1.2 <= loop.time() - started < 3.0
            assert client.retransmissions >= 15

    event_loops.run(main(), "uvloop")
