"""``SIPEndpoint.exchange``: a non-INVITE request run to its outcome by callbacks, on
loopback (127.0.0.1 only) against small scripted UDP peers — the digest retry answered from
the receive path (at most two retries), the deadline, cancelling, and a failing callback that
must not stop the endpoint's pump."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from skinnysip.net.sip_endpoint import MAX_EXCHANGE_SENDS, Outcome, SIPEndpoint
from skinnysip.sip.auth import ChallengeRetry, DigestClient
from skinnysip.sip.message import Request, Response, parse_message
from skinnysip.sip.request import build_response, new_call_id, new_request
from skinnysip.sip.transaction import Flow, Timers
from skinnysip.sip.uri import NameAddr, SipURI

pytestmark = pytest.mark.timeout(30)

FAST = Timers(t1=0.02, t2=0.08, t4=0.1)  # Timer F = 64·T1 = 1.28 s


class Scripted(asyncio.DatagramProtocol):
    """Answers each new request (by Via branch) with the next response ``script`` builds;
    retransmissions get the same answer again. ``script`` empty: silent."""

    def __init__(self, script: list[Callable[[Request], Response]]) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.answers: dict[str, bytes] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        assert isinstance(request, Request) and request.top_via is not None
        branch = request.top_via.branch or ""
        if branch not in self.answers:
            if not self.script:
                return
            self.requests.append(request)
            self.answers[branch] = self.script.pop(0)(request).to_bytes()
        assert self.transport is not None
        self.transport.sendto(self.answers[branch], addr)


def challenge(code: int, realm: str, *, stale: bool = False) -> Callable[[Request], Response]:
    name = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
    value = f'Digest realm="{realm}", nonce="n-{realm}-{int(stale)}", qop="auth", algorithm=MD5'
    return lambda request: build_response(request, code, to_tag="t1",
                                          headers=[(name, value + (", stale=true" if stale else ""))])


def ok(request: Request) -> Response:
    return build_response(request, 200, to_tag="t1")


@contextlib.asynccontextmanager
async def peer(script: list[Callable[[Request], Response]]) -> AsyncIterator[tuple[SIPEndpoint, Flow, Scripted]]:
    loop = asyncio.get_running_loop()
    transport, scripted = await loop.create_datagram_endpoint(lambda: Scripted(script), local_addr=("127.0.0.1", 0))
    try:
        async with SIPEndpoint(timers=FAST, trace=False) as ep:
            await ep.listen("udp", "127.0.0.1", 0)
            yield ep, Flow("udp", transport.get_extra_info("sockname"), local=ep.transport.listeners[0].local), scripted
    finally:
        transport.close()


def register(ep: SIPEndpoint, flow: Flow) -> Request:
    aor = SipURI.parse("sip:alice@example.test")
    return new_request("REGISTER", "sip:example.test", from_=NameAddr(None, aor), to=NameAddr(None, aor),
                       via=ep.via(flow), call_id=new_call_id(), headers=[("Expires", "60")])


async def test_the_challenges_are_answered_from_the_receive_path_at_most_twice() -> None:
    """A proxy's 407, the registrar's 401, then a stale 401: the first two are answered
    (each retry carrying every realm's credentials so far), the third would be a third retry
    and ends the exchange with that 401 (RFC 3261 §22.3; :data:`MAX_EXCHANGE_SENDS`)."""
    async with peer([challenge(407, "proxy"), challenge(401, "registrar"), challenge(401, "registrar", stale=True),
                     ok]) as (ep, flow, scripted):
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        rule = ChallengeRetry(DigestClient("alice", "secret"))
        ep.exchange(register(ep, flow), flow, timeout=5.0, auth=rule, on_outcome=done.set_result)
        outcome = await asyncio.wait_for(done, 5.0)
    assert MAX_EXCHANGE_SENDS == 3 and len(scripted.requests) == 3 and rule.attempts == 2
    assert outcome.response is not None and outcome.response.status_code == 401 and outcome.error is None
    first, second, third = scripted.requests
    assert [r.cseq[0] for r in scripted.requests] == [1, 2, 3]
    assert "Proxy-Authorization" not in first.headers and "Authorization" not in first.headers
    assert "Proxy-Authorization" in second.headers and "Authorization" not in second.headers
    assert "Proxy-Authorization" in third.headers and "Authorization" in third.headers
    assert outcome.request.cseq[0] == 3


async def test_a_challenge_then_success_gives_the_200_with_its_round_trip() -> None:
    async with peer([challenge(401, "registrar"), ok]) as (ep, flow, scripted):
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ep.exchange(register(ep, flow), flow, timeout=5.0, auth=ChallengeRetry(DigestClient("alice", "secret")),
                    on_outcome=done.set_result)
        outcome = await asyncio.wait_for(done, 5.0)
    assert outcome.response is not None and outcome.response.status_code == 200
    assert outcome.rtt is not None and 0 <= outcome.rtt < 5.0
    assert len(scripted.requests) == 2 and "Authorization" in scripted.requests[1].headers


async def test_a_deadline_shorter_than_timer_f_ends_it_and_a_cancelled_one_never_calls_back() -> None:
    async with peer([]) as (ep, flow, _):
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()
        calls: list[Outcome] = []
        started = loop.time()
        ep.exchange(register(ep, flow), flow, timeout=0.2, auth=ChallengeRetry(None), on_outcome=done.set_result)
        cancelled = ep.exchange(register(ep, flow), flow, timeout=0.2, auth=ChallengeRetry(None),
                                on_outcome=calls.append)
        cancelled.cancel()
        outcome = await asyncio.wait_for(done, 5.0)
        assert outcome.error == "timeout" and outcome.timer is None and outcome.response is None
        assert 0.15 <= loop.time() - started < 1.0  # its own deadline, not Timer F (1.28 s)
        await asyncio.sleep(0.3)
        assert calls == []
        # a deadline no shorter than Timer F is left to Timer F, which says so
        late = await ep.transact(register(ep, flow), flow, timeout=FAST.timeout)
        assert late.error == "timeout" and late.timer == "F"


async def test_a_failing_callback_is_recorded_and_the_endpoint_goes_on() -> None:
    async with peer([ok, ok]) as (ep, flow, _):
        def broken(outcome: Outcome) -> None:
            raise RuntimeError("a bug in the caller")

        ep.exchange(register(ep, flow), flow, timeout=5.0, auth=ChallengeRetry(None), on_outcome=broken)
        for _ in range(100):
            if ep.errors:
                break
            await asyncio.sleep(0.02)
        assert any("exchange callback failed" in error and "a bug in the caller" in error for error in ep.errors)
        after = await ep.transact(register(ep, flow), flow, timeout=5.0)
        assert after.response is not None and after.response.status_code == 200


class SlowChallenger(asyncio.DatagramProtocol):
    """Answers the first request with a 401 after ``delay`` seconds; every later one gets
    nothing."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[Request] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        assert isinstance(request, Request)
        if any(r.top_via == request.top_via for r in self.requests):
            return  # a retransmission
        self.requests.append(request)
        if len(self.requests) == 1:
            answer = challenge(401, "registrar")(request).to_bytes()
            assert self.transport is not None
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, answer, addr)


async def test_the_deadline_of_a_retry_counts_from_its_own_send() -> None:
    # the exchange keeps one timer: armed for the first send, it moves on to the retry's
    # deadline when it fires (a retry 0.25 s in, a 0.3 s timeout: the end comes ~0.55 s in)
    loop = asyncio.get_running_loop()
    transport, slow = await loop.create_datagram_endpoint(lambda: SlowChallenger(0.25), local_addr=("127.0.0.1", 0))
    try:
        async with SIPEndpoint(timers=FAST, trace=False) as ep:
            await ep.listen("udp", "127.0.0.1", 0)
            flow = Flow("udp", transport.get_extra_info("sockname"), local=ep.transport.listeners[0].local)
            done: asyncio.Future[Outcome] = loop.create_future()
            started = loop.time()
            ep.exchange(register(ep, flow), flow, timeout=0.3, auth=ChallengeRetry(DigestClient("alice", "secret")),
                        on_outcome=done.set_result)
            outcome = await asyncio.wait_for(done, 5.0)
            elapsed = loop.time() - started
            assert outcome.error == "timeout" and outcome.response is None
            assert len(slow.requests) == 2 and "Authorization" in slow.requests[1].headers
            assert 0.5 <= elapsed < 1.2, elapsed  # the retry's deadline, not the first send's (0.3 s)
    finally:
        transport.close()


async def test_a_cancelled_exchange_leaves_nothing_behind_once_its_transaction_ends() -> None:
    async with peer([]) as (ep, flow, _):
        calls: list[Outcome] = []
        run = ep.exchange(register(ep, flow), flow, timeout=5.0, auth=ChallengeRetry(None), on_outcome=calls.append)
        assert len(ep._handles) == 1
        run.cancel()
        await asyncio.sleep(FAST.timeout + 0.3)  # Timer F ends the silent transaction
        assert calls == [] and ep._handles == {}
