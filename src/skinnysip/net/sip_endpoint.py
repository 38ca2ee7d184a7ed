"""The SIP endpoint: sockets, the transaction layer and one pump shared by every user.

:class:`SIPEndpoint` ties :class:`~skinnysip.net.sip_transport.SIPTransportLayer` (the
sockets) to :class:`~skinnysip.sip.transactions.TransactionLayer` (sans-IO) and runs one
timer task. Any number of operations, dialogs and user agents share one endpoint:

- a client transaction's events go to the :class:`ClientHandle` returned by
  :meth:`SIPEndpoint.send_request` (``await handle.next_event(deadline)``);
- everything else (new requests, CANCEL, ACK for a 2xx, 2xx retransmissions, unmatched
  responses, server transaction failures) is offered to the handlers registered with
  :meth:`SIPEndpoint.add_handler`, newest first; a handler returns True to take it.
  New requests first pass the UAS core checks (:class:`~skinnysip.sip.uas.UASCore`);
  what no handler takes gets the default answer (OPTIONS 200; 481 in-dialog; CANCEL 200
  plus 487 to the INVITE; 480 otherwise).

The received request's top Via gets ``received``/``rport`` (RFC 3261 §18.2.1, RFC 3581)
before matching; responses go where §18.2.2 says. Every message is in :attr:`trace`.
Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from skinnysip import __version__
from skinnysip import policy as target_policy
from skinnysip.addresses import hostport, is_ip, strip_brackets
from skinnysip.net import tls as tlsmod
from skinnysip.net.event_loop import set_once
from skinnysip.net.resolver import ResolveError, Resolver, ServerTarget
from skinnysip.net.sip_transport import SIPTransportError, SIPTransportLayer, Transport, uri_transport
from skinnysip.net.trace import Trace
from skinnysip.result import ExchangeLimit
from skinnysip.sip.auth import ChallengeRetry, DigestClient
from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import build_response, new_branch, new_tag
from skinnysip.sip.server_transaction import ServerTransaction
from skinnysip.sip.transaction import ClientTransaction, Flow, Timers
from skinnysip.sip.transactions import (
    AckReceived,
    CancelReceived,
    LayerEvent,
    LayerOutput,
    RequestReceived,
    ResponseReceived,
    TimedOut,
    TransactionLayer,
    TransportFailed,
    stamp_received,
)
from skinnysip.sip.uas import UASCore
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = [
    "USER_AGENT",
    "round_trip",
    "ClientHandle",
    "Exchange",
    "Handler",
    "Outcome",
    "SIPEndpoint",
    "SIPTransportError",
]

USER_AGENT = f"skinnysip/{__version__}"
HANDLE_QUEUE_LIMIT = 256  # events one client transaction can queue (bounded)
MAX_VIA_PREFIXES = 1024  # UDP flows whose Via prefix an endpoint keeps (then it starts again)
TIMER_SLACK = 0.002  # s a transaction timer may fire late, so close deadlines share one tick
HOUSEKEEPING_INTERVAL = 5.0  # s between checks for idle TCP/TLS connections
MAX_EXCHANGE_SENDS = 3  # a request and at most two digest retries (SIPEndpoint.exchange)
RESPONSE_CONNECT_TIMEOUT = 4.0  # s to open a new connection for a response (RFC 3261 §18.2.2)

Handler = Callable[[LayerEvent], bool]
ClientEvent = ResponseReceived | TimedOut | TransportFailed


def round_trip(request: Request, response: Response, fallback: float) -> float:
    """Seconds from the first transmission of ``request`` to the arrival of ``response``,
    both as the transport stamped them in the trace (:func:`~skinnysip.net.trace.wire_time`:
    the two points and the clock the ladder shows); ``fallback`` when either is unknown."""
    if request.sent_at is None or response.received_at is None:
        return fallback
    return max(0.0, response.received_at - request.sent_at)


class ClientHandle:
    """One client transaction as its user sees it: ``transaction``, ``flow``, the time it
    was started (``started``, loop clock, seconds) and its events in order."""

    __slots__ = ("transaction", "flow", "started", "_events", "_waiters", "listener")

    def __init__(self, transaction: ClientTransaction, flow: Flow, started: float) -> None:
        self.transaction = transaction
        self.flow = flow
        self.started = started
        #: the events not yet taken (made at the first one: a handle whose events go to
        #: a listener from the start, as every exchange's do, never needs it)
        self._events: deque[ClientEvent] | None = None
        #: the futures :meth:`next_event` calls wait on (usually one)
        self._waiters: list[asyncio.Future[None]] = []
        #: when set, events go to this callback (synchronously, from the pump) instead
        #: of the queue; e.g. re-ACKing 2xx retransmissions of an answered INVITE
        self.listener: Callable[[ClientEvent], None] | None = None

    def _push(self, event: ClientEvent) -> None:
        if self.listener is not None:
            self.listener(event)
            return
        if self._events is None:
            self._events = deque(maxlen=HANDLE_QUEUE_LIMIT)
        self._events.append(event)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def set_listener(self, listener: Callable[[ClientEvent], None]) -> None:
        """From now on hand events to ``listener`` (synchronously, from the pump); events
        already queued are handed to it first, in order."""
        self.listener = listener
        events = self._events
        while events:
            listener(events.popleft())

    async def next_event(self, deadline: float) -> ClientEvent | None:
        """The next event, or None once the loop clock passes ``deadline`` (seconds).
        One future and one loop timer per wait (no task): the deadline is a
        ``call_at`` that wakes the waiter."""
        if self._events:
            return self._events.popleft()
        loop = asyncio.get_running_loop()
        while not self._events:
            if deadline - loop.time() <= 0:
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(deadline, set_once, waiter, None)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.remove(waiter)
        return self._events.popleft()


@dataclass
class Outcome:
    """How one request ended (:meth:`SIPEndpoint.transact`): the final ``response`` (None
    if none), ``rtt`` (seconds from the first transmission of the last request sent to its
    final response), the ``provisional`` responses, the ``request`` last sent (after any
    digest retry), ``error`` (timeout or transport failure, one line), ``timer`` (B/F when
    the transaction's own timer ended it) and the ``auth`` rule state."""

    request: Request
    response: Response | None = None
    rtt: float | None = None  # s; see round_trip
    provisional: list[Response] = field(default_factory=list)
    error: str | None = None
    timer: str | None = None
    auth: ChallengeRetry | None = None


class _EventSink(Protocol):
    """Where the endpoint hands a client transaction's events (:class:`ClientHandle`,
    :class:`Exchange`), synchronously, from the pump."""

    def _push(self, event: ClientEvent) -> None: ...


class _Dropped:
    """The sink of a transaction whose exchange was cancelled: its late events go nowhere."""

    __slots__ = ()

    def _push(self, event: ClientEvent) -> None:
        pass


_DROPPED = _Dropped()
_SinkT = TypeVar("_SinkT", bound=_EventSink)


def _drop_outcome(outcome: Outcome) -> None:
    """What an ended exchange calls back: nothing."""


class Exchange:
    """One request run to its outcome by callbacks (:meth:`SIPEndpoint.exchange`): the
    exchange itself receives its client transaction's events (it is the transaction's
    sink, no :class:`ClientHandle` in between), a challenge is answered from there, and
    the deadline is one loop timer, moved on for each send when it fires."""

    __slots__ = ("endpoint", "flow", "timeout", "rule", "on_outcome", "outcome", "transaction", "started", "timer",
                 "deadline", "finished", "sends")

    def __init__(self, endpoint: SIPEndpoint, flow: Flow, timeout: float, rule: ChallengeRetry,
                 on_outcome: Callable[[Outcome], None]) -> None:
        self.endpoint, self.flow, self.timeout, self.rule = endpoint, flow, timeout, rule
        self.on_outcome = on_outcome
        self.outcome: Outcome | None = None
        self.transaction: ClientTransaction | None = None  # the one of the last send
        self.started = 0.0  # loop time of the last send
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = math.inf  # loop time the last send times out at
        self.finished = False
        self.sends = 0  # requests sent: the first and at most MAX_EXCHANGE_SENDS - 1 retries

    def send(self, request: Request) -> None:
        """Send ``request`` in a new client transaction (the first, or a digest retry).
        The first send raises what :meth:`SIPEndpoint.send_request` raises for a request
        without branch or CSeq; a retry's such failure ends the exchange instead."""
        first = self.outcome is None
        if self.outcome is None:
            self.outcome = Outcome(request=request, auth=self.rule)
        self.outcome.request = request
        self.sends += 1
        ep = self.endpoint
        try:
            if request.method == "ACK":
                raise ValueError("an ACK is not sent in a client transaction")
            ep._send_request(request, self.flow, self._started)
        except SIPTransportError as exc:
            self._end(exc.reason)
            return
        except (ValueError, SIPParseError) as exc:
            if first:
                raise
            self._end(f"cannot send the retry: {exc}")
            return
        if self.finished:  # the send failed at once (a transport error reached us)
            return
        # the deadline; one no shorter than Timer F is left to Timer F (it says so,
        # outcome.timer), this timer only a backstop just after it
        at = self.started + self.timeout
        if self.timeout >= ep.timers.timeout:
            at += 2 * TIMER_SLACK
        self.deadline = at
        if self.timer is None:  # else the armed (earlier) one moves on when it fires
            self.timer = asyncio.get_running_loop().call_at(at, self._expire)

    def _started(self, transaction: ClientTransaction, started: float) -> Exchange:
        """The sink of the transaction just started (:meth:`SIPEndpoint._send_request`): us."""
        self.transaction, self.started = transaction, started
        return self

    def cancel(self) -> None:
        """End it now, without calling back (idempotent). Lets go of the timer and of the
        transaction's events (they go nowhere from now on), so nothing keeps the exchange
        (and its messages) alive: thousands a second end by reference counting."""
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        tx = self.transaction
        if tx is not None:
            self.transaction = None
            handles = self.endpoint._handles
            if handles.get(id(tx)) is self:
                handles[id(tx)] = _DROPPED

    def _expire(self) -> None:
        self.timer = None
        if self.finished:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline - TIMER_SLACK:  # a later send moved the deadline on
            self.timer = loop.call_at(self.deadline, self._expire)
            return
        self._end("timeout")

    def _end(self, error: str | None = None, timer: str | None = None) -> None:
        if self.finished:
            return
        self.cancel()
        outcome = self.outcome
        assert outcome is not None
        if error is not None:
            outcome.error, outcome.timer = error, timer
        on_outcome, self.on_outcome = self.on_outcome, _drop_outcome
        try:
            on_outcome(outcome)
        except Exception as exc:  # runs inside the pump: a caller's bug must not stop it
            self.endpoint.errors.append(f"exchange callback failed: {exc!r}")

    def _push(self, event: ClientEvent) -> None:
        try:
            self._handle(event)
        except Exception as exc:  # runs inside the pump (a datagram's callback): end this exchange only
            self.endpoint.errors.append(f"exchange failed on {type(event).__name__}: {exc!r}")
            self._end(f"internal error: {exc!r}")

    def _handle(self, event: ClientEvent) -> None:
        outcome, tx = self.outcome, self.transaction
        if self.finished or outcome is None or tx is None or event.transaction is not tx:
            return  # a late event of an earlier (challenged) transaction, or after the end
        if isinstance(event, ResponseReceived):
            response = event.response
            if not event.final:
                outcome.provisional.append(response)
                return
            outcome.response = response
            outcome.rtt = round_trip(tx.request, response, self.endpoint.loop_time - self.started)
            rule = self.rule
            if self.sends < MAX_EXCHANGE_SENDS and rule.answers(response):  # else no retry: no Via to build
                retried = rule.retry(outcome.request, response, self.endpoint.via(self.flow))
                if retried is not None:
                    outcome.response = outcome.rtt = None
                    self.send(retried)
                    return
            rule.settle(outcome.request, response)
            self._end()
        elif isinstance(event, TimedOut):
            self._end("timeout", event.timer)
        else:
            self._end(event.reason)


class SIPEndpoint:
    """A SIP endpoint: listens and sends on UDP/TCP/TLS, IPv4/IPv6, with one transaction
    layer and one pump. Use as ``async with SIPEndpoint(...) as ep``.

    ``timers``: RFC 3261 T1/T2/T4. ``trying_delay``: seconds before an INVITE server
    transaction sends 100 Trying itself (None: never). ``trace``: record the wire (False
    for load). ``tls_cert``/``tls_key``: certificate for TLS listeners; ``tls_verify``/
    ``ca_file``: checking of servers we connect to. ``resolver``: RFC 3263 resolver
    (default: system DNS). ``uas``: the UAS core (default: all methods of
    :data:`~skinnysip.sip.uas.DEFAULT_ALLOW`). ``idle_timeout``: seconds before an idle
    TCP/TLS connection is closed. ``trace_limit``: the newest records kept (long-running
    users); ``exchange_limit``: instead, keep the first messages within this budget (one
    operation's exchange) and count the rest (``trace.dropped``). ``source_ip``/``source_port``:
    the local address outgoing flows start from (an IP literal of this host, SIPp ``-i``;
    port 0: any); None: the address the routing table picks for each target
    (:meth:`SIPTransportLayer.set_source`, which raises ``ValueError`` for a malformed one).
    ``udp_send_burst``: gather each loop round's UDP sends and send them together, at most
    this many at a time (0: each at once; load generation,
    :attr:`SIPTransportLayer.udp_send_burst`).
    """

    def __init__(
        self,
        *,
        timers: Timers | None = None,
        trying_delay: float | None = 0.2,
        trace: bool = True,
        trace_limit: int = 10000,
        exchange_limit: ExchangeLimit | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_verify: bool = True,
        ca_file: str | None = None,
        resolver: Resolver | None = None,
        uas: UASCore | None = None,
        user_agent: str = USER_AGENT,
        idle_timeout: float = 64.0,
        ws_path: str = "/",
        source_ip: str | None = None,
        source_port: int = 0,
        udp_send_burst: int = 0,
    ) -> None:
        self.timers = timers or Timers()
        self.layer = TransactionLayer(self.timers, trying_delay)
        self.trace = Trace(trace_limit, enabled=trace, exchange=exchange_limit)
        self.transport = SIPTransportLayer(self._on_message, self._on_lost, trace=self.trace,
                                           idle_timeout=idle_timeout, on_unreachable=self._on_lost,
                                           udp_send_burst=udp_send_burst)
        self.transport.agent = user_agent
        self.transport.set_source(source_ip, source_port)
        #: the resource our WebSocket handshakes ask for (``ws``/``wss`` flows; RFC 7118 §4.1)
        self.ws_path = ws_path
        #: a host our Via and Contact name on ``ws``/``wss`` flows instead of our address, as
        #: browser phones do (JsSIP: a random ``….invalid`` name, RFC 6761 §6.4): the server
        #: must route requests to us by the connection (RFC 7118 §5); None: our address
        self.ws_host: str | None = None
        self.user_agent = user_agent
        self.uas = uas or UASCore(server=user_agent)
        self.resolver = resolver or Resolver()
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.tls_verify, self.ca_file = tls_verify, ca_file
        self._tls_client: ssl.SSLContext | None = None
        self._handlers: list[Handler] = []
        self._handles: dict[int, _EventSink] = {}
        # "SIP/2.0/UDP host:port;rport;branch=" per UDP flow from a socket bound to one address
        self._via_prefixes: dict[Flow, str] = {}
        # the armed loop timer and the loop time it fires at (uvloop's call_at answers a
        # plain Handle, without when(), for a time already past)
        self._timer: asyncio.Handle | None = None
        self._timer_at = math.inf
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.errors: deque[str] = deque(maxlen=100)  # transport errors outside transactions
        self.default_answers = 0
        #: messages our transactions sent again (Timers A/E/G, responses to retransmitted
        #: requests; RFC 3261 §17): the load generator's Retransmissions counter
        self.retransmissions = 0
        self._resends: set[asyncio.Task[None]] = set()  # responses going over a new connection
        #: called with (flow, reason) when a TCP/TLS/WebSocket connection closes or breaks (after
        #: its transactions heard it): a phone registered over it registers again at once
        self.on_connection_lost: Callable[[Flow, str], None] | None = None

    # -- life -------------------------------------------------------------------------------
    async def __aenter__(self) -> SIPEndpoint:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the pump (idempotent; needs a running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def close(self) -> None:
        """Stop the pump and close every socket (idempotent)."""
        self._closed = True
        for task in list(self._resends):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.transport.close()

    @property
    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    # -- sockets ----------------------------------------------------------------------------
    async def listen(self, transport: Transport, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port) over ``transport``; returns the bound
        (IP, port). TLS and WSS need ``tls_cert``. Raises :class:`SIPTransportError`."""
        self.start()
        context = None
        if transport in ("tls", "wss"):
            if not self.tls_cert:
                raise SIPTransportError("a TLS listener needs a certificate (tls_cert) and key")
            try:
                context = tlsmod.server_context(self.tls_cert, self.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise SIPTransportError(f"cannot load TLS certificate/key {self.tls_cert!r}: {exc}") from exc
        return await self.transport.listen(transport, host, port, tls_server=context)

    def _client_context(self) -> ssl.SSLContext:
        if self._tls_client is None:
            try:
                self._tls_client = tlsmod.client_context(self.tls_verify, self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise SIPTransportError(f"cannot load CA file {self.ca_file!r}: {exc}") from exc
        return self._tls_client

    async def resolve(self, host: str, *, port: int | None, transport: Transport | None, secure: bool = False,
                      timeout: float = 10.0) -> list[ServerTarget]:
        """RFC 3263 targets for ``host`` (see :class:`~skinnysip.net.resolver.Resolver`).
        Raises :class:`SIPTransportError` with the resolver's reason."""
        try:
            return await self.resolver.resolve(host, port=port, transport=transport, secure=secure, timeout=timeout)
        except ResolveError as exc:
            raise SIPTransportError(exc.reason) from exc

    async def flow_to(self, target: ServerTarget, *, timeout: float = 10.0, server_name: str | None = None,
                      reuse: bool = True, ports: tuple[int, int] | None = None) -> Flow:
        """A flow to ``target``: a UDP flow from our socket, or an open (reused or new)
        TCP/TLS/WebSocket connection (a WebSocket asks for :attr:`ws_path`); ``reuse=False``:
        a new connection, or UDP socket (on a port of ``ports`` when given), of the caller's
        own, to end with :meth:`close_flow`. ``server_name``: the TLS name to check and the
        WebSocket's Host (default: the target's name). Raises :class:`SIPTransportError`."""
        self.start()
        if target.transport == "udp":
            return await self.transport.udp_flow((target.address, target.port), reuse=reuse, ports=ports)
        context = self._client_context() if target.transport in ("tls", "wss") else None
        conn = await self.transport.connect(target.transport, (target.address, target.port), timeout=timeout,
                                            tls_client=context, server_name=server_name or target.name, reuse=reuse,
                                            ws_path=self.ws_path)
        return conn.flow

    async def close_flow(self, flow: Flow) -> None:
        """Close ``flow``'s TCP/TLS connection, or the UDP socket it has of its own
        (:meth:`flow_to` with ``reuse=False``; a shared UDP socket stays open)."""
        if flow.transport == "udp":
            self.transport.close_udp(flow)
        else:
            await self.transport.close_connection(flow)

    def tls_info(self, flow: Flow) -> object | None:
        """The TLS handshake report of a TLS flow's connection (``TLSInfo``), else None."""
        conn = self.transport.connections.get(flow.connection or -1)
        return conn.tls if conn is not None else None

    def ignored_note(self) -> str:
        """What did arrive but could not be an answer, as ``"; note; note"`` (``""`` when
        nothing): malformed messages (dropped as RFC 3261 §18.1.2 says), responses matching
        no request of ours (§17.1.3) and the last ICMP error the socket reported — so a
        timeout is never told as "no response" of a server that did answer."""
        malformed = self.transport.malformed_count
        notes = []
        if malformed:
            notes.append(f"{malformed} malformed message{'s' if malformed > 1 else ''} "
                         f"ignored, last {self.transport.last_malformed}")
        n = self.layer.unmatched_responses
        if n:
            notes.append(f"{n} response{'s' if n > 1 else ''} matching no request of ours "
                         "(Via branch or CSeq method changed) ignored")
        if self.transport.udp_errors:
            notes.append(self.transport.udp_errors[-1][1])
        return f"; {'; '.join(notes)}" if notes else ""

    def local_address(self, flow: Flow) -> tuple[str, int]:
        """Our (IP, port) on ``flow``."""
        return self.transport.local_address(flow)

    def via(self, flow: Flow, branch: str | None = None) -> str:
        """A Via value for a request on ``flow``: our address on it, ``rport`` (RFC 3581),
        and ``branch`` (new if None; RFC 3261 §8.1.1.7)."""
        prefix = self._via_prefixes.get(flow)
        if prefix is None:
            if self.ws_host is not None and flow.transport in ("ws", "wss"):
                return f"SIP/2.0/{flow.transport.upper()} {self.ws_host};rport;branch={branch or new_branch()}"
            host, port = self.local_address(flow)
            prefix = f"SIP/2.0/{flow.transport.upper()} {hostport(host, port)};rport;branch="
            local = flow.local
            if flow.transport == "udp" and local is not None and local[0] not in ("0.0.0.0", "::"):
                # the socket's own address: what local_address gives for this flow, always
                if len(self._via_prefixes) >= MAX_VIA_PREFIXES:
                    self._via_prefixes.clear()
                self._via_prefixes[flow] = prefix
        return prefix + (branch or new_branch())

    def contact(self, flow: Flow, user: str | None = None, *, scheme: str = "sip") -> NameAddr:
        """A Contact for requests on ``flow``: our address on it, ``transport`` for streams
        (``ws`` for both WebSocket transports, RFC 7118 §5.2)."""
        if self.ws_host is not None and flow.transport in ("ws", "wss"):
            host, port = self.ws_host, None
        else:
            host, port = self.local_address(flow)
        params: dict[str, str | None] = {}
        if flow.transport != "udp" and scheme == "sip":
            params["transport"] = uri_transport(flow.transport)
        return NameAddr(None, SipURI(scheme, user, None, host, port, params))

    # -- sending ----------------------------------------------------------------------------
    def send_request(self, request: Request, flow: Flow) -> ClientHandle | None:
        """Send ``request`` on ``flow`` in a new client transaction (None for an ACK, which
        is sent as it is). Raises :class:`SIPTransportError` if the ACK cannot be sent,
        ``ValueError``/:class:`SIPParseError` for a request without branch or CSeq."""
        return self._send_request(request, flow, lambda tx, started: ClientHandle(tx, flow, started))

    def _send_request(self, request: Request, flow: Flow,
                      sink: Callable[[ClientTransaction, float], _SinkT]) -> _SinkT | None:
        """:meth:`send_request`, the transaction's events handed to ``sink(transaction,
        loop time it started)`` — made before anything is sent, so an error sending the
        request reaches it (a :class:`ClientHandle`, or an :class:`Exchange` itself)."""
        self.start()
        now = self.loop_time
        tx, out = self.layer.send_request(request, flow, now)
        made = None
        if tx is not None:
            made = self._handles[id(tx)] = sink(tx, now)
        elif out.send:
            self.transport.send(request, flow)
            out.send.clear()
        self._process(out)
        return made

    def send_response(self, transaction: ServerTransaction, response: Response) -> None:
        """Send the TU's ``response`` in ``transaction``. Raises ``ValueError`` if the
        transaction cannot send it."""
        self._process(self.layer.send_response(transaction, response, self.loop_time))

    def respond(self, transaction: ServerTransaction, code: int, *, to_tag: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"", content_type: str | None = None,
                contact: NameAddr | None = None, reason: str | None = None) -> Response:
        """Build (§8.2.6) and send a response to the transaction's request (``reason``: its
        reason phrase, default the usual one for ``code``); returns it."""
        response = build_response(transaction.request, code, reason, to_tag=to_tag, headers=headers or [], body=body,
                                  content_type=content_type, contact=contact, server=self.user_agent)
        self.send_response(transaction, response)
        return response

    def send_stateless(self, message: Request | Response, flow: Flow, note: str = "") -> None:
        """Send a message outside any transaction (a re-sent ACK, say). Raises
        :class:`SIPTransportError`."""
        self.transport.send(message, flow, note)

    # -- handlers -------------------------------------------------------------------------
    def add_handler(self, handler: Handler) -> Callable[[], None]:
        """Offer every non-client event to ``handler`` (newest handler first) until one
        returns True. Returns a function that removes it."""
        self._handlers.insert(0, handler)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.remove(handler)

        return remove

    # -- the UAC helper -------------------------------------------------------------------
    def exchange(self, request: Request, flow: Flow, *, timeout: float, auth: ChallengeRetry,
                 on_outcome: Callable[[Outcome], None]) -> Exchange:
        """Start ``request`` (not INVITE) and call ``on_outcome`` once with its
        :class:`Outcome` — from the pump, synchronously, with no task and no wake-up of a
        waiting coroutine: the load generator's path (thousands a second) and the one behind
        :meth:`transact`. 401/407 are answered by ``auth`` (:class:`ChallengeRetry`; at most
        two retries, :data:`MAX_EXCHANGE_SENDS`) in the receive path itself. ``timeout``:
        seconds from each send; one no shorter than Timer F (64·T1) leaves the end to Timer F
        (``outcome.timer`` is ``"F"``, RFC 3261 §17.1.2.2). A request that cannot be sent ends
        it at once (before this returns) with ``outcome.error``; one without branch or CSeq
        raises ``ValueError``/:class:`SIPParseError`. Returns the :class:`Exchange`
        (:meth:`Exchange.cancel` ends it without a callback)."""
        run = Exchange(self, flow, timeout, auth, on_outcome)
        run.send(auth.preempt(request))
        return run

    async def transact(self, request: Request, flow: Flow, *, timeout: float,
                       credentials: DigestClient | None = None, auth: ChallengeRetry | None = None) -> Outcome:
        """Run ``request`` (not INVITE) to its final response within ``timeout`` seconds,
        answering 401/407 by the core's one retry rule (:class:`ChallengeRetry`) when
        ``credentials`` (or ``auth``) are given. Never raises for network problems: the
        :class:`Outcome` says what happened. A ``timeout`` no shorter than Timer F (64·T1,
        RFC 3261 §17.1.2.2) leaves the end to Timer F: ``outcome.timer`` is then ``"F"``.
        Credentials the client cached for the request's Call-ID go with the first send, and
        the final response is filed in that cache (RFC 3261 §22.3,
        :meth:`ChallengeRetry.preempt`, :meth:`ChallengeRetry.settle`). The awaitable form of
        :meth:`exchange`."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        run = self.exchange(request, flow, timeout=timeout, auth=auth or ChallengeRetry(credentials),
                            on_outcome=functools.partial(set_once, done))
        try:
            return await done
        finally:
            run.cancel()  # cancelled while waiting: no callback into a future nobody awaits

    # -- the pump ---------------------------------------------------------------------------
    def _on_message(self, message: Request | Response, flow: Flow) -> None:
        if isinstance(message, Request):
            stamp_received(message, flow.remote)
        self._process(self.layer.receive(message, flow, self.loop_time))

    def _on_lost(self, flow: Flow, reason: str) -> None:
        self._process(self.layer.connection_lost(flow, reason, self.loop_time))
        if flow.connection is not None and self.on_connection_lost is not None:
            self.on_connection_lost(flow, reason)

    def _process(self, out: LayerOutput, depth: int = 0) -> None:
        for item in out.send:
            note = ""
            if item.kind == "retransmission":
                note = "retransmission"
                self.retransmissions += 1
            try:
                self.transport.send(item.message, item.flow, note)
            except SIPTransportError as exc:
                if self._resend_on_new_connection(item.message, item.flow, item.transaction, note):
                    continue
                if item.transaction is not None and depth < 4:
                    self._process(self.layer.transport_error(item.transaction, exc.reason, self.loop_time), depth + 1)
                else:
                    self.errors.append(exc.reason)
        for event in out.events:
            self._dispatch(event)
        for tx in out.ended:  # after its last event: the handle is no longer reachable from here
            self._handles.pop(id(tx), None)
        self._arm(out.deadline)

    def _resend_on_new_connection(self, message: Request | Response, flow: Flow,
                                  transaction: ClientTransaction | ServerTransaction | None, note: str) -> bool:
        """RFC 3261 §18.2.2: a response over TCP/TLS whose connection has closed goes over a
        new connection to the Via's ``received`` address (else its sent-by, when an IP
        address) at the sent-by port (default 5060, 5061 for TLS), opened within
        :data:`RESPONSE_CONNECT_TIMEOUT` s; the target policy applies. True when that was
        started (failing it, the transaction hears a transport error then)."""
        if not isinstance(message, Response) or flow.transport in ("udp", "ws", "wss") or self._closed:
            return False  # a WebSocket client cannot be connected to (RFC 7118 §5)
        try:
            via = message.top_via
        except SIPParseError:
            return False
        if via is None:
            return False
        host = via.params.get("received") or via.host
        policy = target_policy.active()
        if not host or not is_ip(host) or (policy is not None and not policy.decide_address(host).allowed):
            return False
        transport: Transport = "tls" if flow.transport == "tls" else "tcp"
        remote = (strip_brackets(host), via.port or (5061 if transport == "tls" else 5060))
        task = asyncio.get_running_loop().create_task(self._resend(message, transport, remote, transaction, note))
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)
        return True

    async def _resend(self, message: Response, transport: Transport, remote: tuple[str, int],
                      transaction: ClientTransaction | ServerTransaction | None, note: str) -> None:
        try:
            conn = await self.transport.connect(transport, remote, timeout=RESPONSE_CONNECT_TIMEOUT,
                                                tls_client=self._client_context() if transport == "tls" else None)
            self.transport.send(message, conn.flow, note or "on a new connection (RFC 3261 §18.2.2)")
        except SIPTransportError as exc:
            if transaction is not None and not self._closed:
                self._process(self.layer.transport_error(transaction, exc.reason, self.loop_time))
            else:
                self.errors.append(exc.reason)

    def _dispatch(self, event: LayerEvent) -> None:
        # a response is always a client transaction's (the usual event: tested first)
        if type(event) is ResponseReceived or (isinstance(event, TimedOut | TransportFailed)
                                               and isinstance(event.transaction, ClientTransaction)):
            handle = self._handles.get(id(event.transaction))
            if handle is not None:
                handle._push(event)
            return
        if isinstance(event, RequestReceived):
            try:
                branch = event.request.top_via.branch if event.request.top_via else None
            except SIPParseError:
                branch = None
            refusal = self.uas.check(event.request, branch=branch)
            if refusal is not None:
                self.send_response(event.transaction, refusal)
                return
        for handler in list(self._handlers):
            try:
                if handler(event):
                    return
            except Exception as exc:  # a handler's bug must not stop the pump
                self.errors.append(f"handler failed on {type(event).__name__}: {exc!r}")
                if isinstance(event, RequestReceived) and not event.transaction.final:
                    with contextlib.suppress(ValueError, SIPParseError):
                        self.respond(event.transaction, 500)
                return
        self._default(event)

    def _default(self, event: LayerEvent) -> None:
        """What the endpoint answers when no handler took an event."""
        with contextlib.suppress(ValueError, SIPParseError):
            if isinstance(event, RequestReceived):
                self.default_answers += 1
                request, tx = event.request, event.transaction
                if request.to_tag is not None:
                    self.respond(tx, 481)
                elif request.method == "OPTIONS":
                    self.send_response(tx, self.uas.options(request))
                else:
                    self.respond(tx, 480, to_tag=new_tag())
            elif isinstance(event, CancelReceived):
                self.respond(event.transaction, 200)
                if not event.invite.final:
                    self.respond(event.invite, 487, to_tag=new_tag())
            elif isinstance(event, AckReceived):
                pass  # an ACK nobody waits for: nothing to answer (§17.2.3)

    def _arm(self, deadline: float | None) -> None:
        """Make sure a loop timer fires at ``deadline`` (the layer's next timer; None:
        nothing to time) or earlier. One ``call_at`` handle at a time: a later deadline
        than the armed one needs nothing (the armed timer re-arms after its tick), an
        earlier one replaces it. Timers fire up to :data:`TIMER_SLACK` late so a burst
        of deadlines is handled by one tick."""
        if deadline is None or self._closed:
            return
        armed = self._timer
        if armed is not None:
            if self._timer_at <= deadline + TIMER_SLACK:
                return
            armed.cancel()
        self._timer_at = deadline + TIMER_SLACK
        self._timer = asyncio.get_running_loop().call_at(self._timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if not self._closed:
            self._process(self.layer.tick(self.loop_time))  # re-arms for the next deadline

    async def _pump(self) -> None:
        """Housekeeping every :data:`HOUSEKEEPING_INTERVAL` seconds: close idle streams
        (transaction timers are loop timers, :meth:`_arm`)."""
        while not self._closed:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            self._arm(self.layer.next_deadline())  # belt and braces: a lost timer is re-armed
            running: list[ClientTransaction | ServerTransaction] = [
                *self.layer.client.values(), *self.layer.server.values()]
            busy = {tx.flow.connection for tx in running if tx.flow is not None and tx.flow.connection is not None}
            await self.transport.close_idle(busy)
