"""The transaction layer: many client and server transactions behind one object (sans-IO).

:class:`TransactionLayer` is what an endpoint drives (RFC 3261 §17, PJSIP's "transaction
layer"). Inputs: :meth:`~TransactionLayer.receive` (a parsed message and the
:class:`~skinnysip.sip.transaction.Flow` it came on), :meth:`~TransactionLayer.send_request`,
:meth:`~TransactionLayer.send_response`, :meth:`~TransactionLayer.transport_error`,
:meth:`~TransactionLayer.connection_lost` and :meth:`~TransactionLayer.tick`. Each returns a
:class:`LayerOutput`: the messages to transmit, each with the flow to send it on; the
events for the transaction users; the next deadline. Nothing here opens a socket or reads
a clock; times are seconds on the caller's monotonic clock.

Matching, in dicts (no scans):

- responses to client transactions: top Via ``branch`` + CSeq method (§17.1.3);
- requests to server transactions: top Via ``branch`` + ``sent-by`` + method, the ACK
  matching the INVITE (§17.2.3); a CANCEL is its own transaction and is paired with the
  INVITE it cancels by the same rule (§9.2); for branches without the ``z9hG4bK`` cookie,
  the RFC 2543 rule (Request-URI, From tag, Call-ID, CSeq number, top Via, and the To tag);
- an ACK for a 2xx (a new branch, no transaction) is paired with the INVITE server
  transaction in the Accepted state by Call-ID, CSeq number and From tag, which stops that
  transaction's 2xx retransmissions (§13.3.1.4), and handed up as :class:`AckReceived`.

Timers: one heap, lazily cleaned; ``tick(now)`` fires what is due. Non-INVITE transactions
over UDP are ended (``LayerOutput.ended``) once their final response is received or sent; the
Completed state that follows is kept here by key, so a load of thousands of transactions per
second does not keep every request alive for it:

- client (§17.1.2.2, Timer K = T4): only the key; a retransmission of the final response is
  absorbed (:data:`MAX_ABSORBING` keys at most);
- server (§17.2.2, Timer J = 64·T1): the key, the final response and its flow; a
  retransmission of the request gets the response again (:data:`MAX_ANSWERED` at most; an
  RFC 2543 request, matched with its To tag, keeps its whole transaction instead).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from skinnysip.sip.headers import Via
from skinnysip.sip.message import Headers, Request, Response, SIPParseError
from skinnysip.sip.request import BRANCH_COOKIE
from skinnysip.sip.server_transaction import (
    AckTimedOut,
    FinalResponseTimedOut,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerState,
    ServerTransaction,
    ServerTransportFailed,
    new_server_transaction,
)
from skinnysip.sip.syntax import uint_or_none
from skinnysip.sip.transaction import (
    ClientTransaction,
    Flow,
    NonInviteClientTransaction,
    State,
    Timers,
    TransactionOutput,
    new_transaction,
)
from skinnysip.sip.transaction import ResponseReceived as _TxResponse
from skinnysip.sip.transaction import TimedOut as _TxTimedOut
from skinnysip.sip.transaction import TransportFailed as _TxTransportFailed

__all__ = [
    "AckReceived",
    "CancelReceived",
    "Discarded",
    "LayerEvent",
    "LayerOutput",
    "MAX_ABSORBING",
    "MAX_ANSWERED",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "SuccessRetransmission",
    "TimedOut",
    "TransactionLayer",
    "TransportFailed",
    "UnmatchedResponse",
    "response_flow",
    "stamp_received",
]

Transaction = ClientTransaction | ServerTransaction

# the states the layer tests per message, as plain names (an enum member is a descriptor
# look-up on every ``State.X`` on Python 3.11)
_CLIENT_COMPLETED, _CLIENT_TERMINATED = State.COMPLETED, State.TERMINATED
_SERVER_COMPLETED, _SERVER_TERMINATED = ServerState.COMPLETED, ServerState.TERMINATED

#: Completed states of non-INVITE client transactions kept by key at most (10 000/s for T4 = 5 s)
MAX_ABSORBING = 50_000
#: Completed states of non-INVITE server transactions kept (key, final response) at most
#: (3000/s for 64·T1 = 32 s); beyond it the oldest stop answering retransmissions early
MAX_ANSWERED = 100_000

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _CompletedStates(Generic[_K, _V]):
    """Completed states kept by transaction key until their timer (K or J) fires: key →
    (expiry, value), and the keys in expiry order (a layer's T4 and 64·T1 are fixed, so the
    order they were added in). At most ``limit``: beyond it the oldest go early."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_key: dict[_K, tuple[float, _V]] = {}
        self._order: deque[tuple[float, _K]] = deque()

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def add(self, key: _K, expiry: float, value: _V) -> None:
        while len(self._order) >= self.limit:
            self._drop_oldest()
        self._by_key[key] = (expiry, value)
        self._order.append((expiry, key))

    def find(self, key: _K, now: float) -> tuple[float, _V] | None:
        """(expiry, value) of ``key`` if its timer has not fired by ``now``."""
        self.purge(now)
        return self._by_key.get(key)

    def discard(self, key: _K) -> None:
        self._by_key.pop(key, None)

    def purge(self, now: float) -> None:
        """Forget the states whose timer has fired by ``now``."""
        order = self._order
        while order and order[0][0] <= now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        expiry, key = self._order.popleft()
        entry = self._by_key.get(key)
        if entry is not None and entry[0] == expiry:  # not re-added later under the same key
            del self._by_key[key]


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class RequestReceived:
    """A new request (not ACK) created the server ``transaction``; the TU answers it with
    :meth:`TransactionLayer.send_response`."""

    request: Request
    flow: Flow
    transaction: ServerTransaction


@dataclass(frozen=True)
class CancelReceived:
    """A CANCEL matching a pending INVITE server transaction (§9.2). ``transaction`` is the
    CANCEL's own server transaction (answer it 200), ``invite`` the INVITE's (answer it
    487 if no final response was sent yet)."""

    request: Request
    flow: Flow
    transaction: ServerTransaction
    invite: InviteServerTransaction


@dataclass(frozen=True)
class AckReceived:
    """An ACK for a 2xx (§13.3.1.4), for the dialog. ``invite`` is the INVITE server
    transaction whose 2xx it acknowledges, when it is still known."""

    request: Request
    flow: Flow
    invite: InviteServerTransaction | None


@dataclass(frozen=True)
class ResponseReceived:
    """A response for client ``transaction`` (provisional or final; a retransmitted 2xx to
    an INVITE in the Accepted state is reported again so the UA core re-sends its ACK)."""

    response: Response
    flow: Flow
    transaction: ClientTransaction

    @property
    def final(self) -> bool:
        return self.response.status_code >= 200


@dataclass(frozen=True)
class SuccessRetransmission:
    """A 2xx to an INVITE that matched no client transaction (it ended: §13.2.2.4, the UA
    core must ACK it again if it belongs to one of its dialogs)."""

    response: Response
    flow: Flow


@dataclass(frozen=True)
class UnmatchedResponse:
    """Any other response that matched no client transaction (§17.1.3; dropped)."""

    response: Response
    flow: Flow


@dataclass(frozen=True)
class TimedOut:
    """A transaction timer ran out: B/F (client, no final response), H (server, no ACK for
    a non-2xx) or L (server, no ACK for the 2xx, §13.3.1.4)."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True)
class TransportFailed:
    """The transport could not deliver one of ``transaction``'s messages (§17.1.4, §17.2.4)."""

    transaction: Transaction
    reason: str


@dataclass(frozen=True)
class Discarded:
    """A received request that could not be handled (no usable Via, CSeq, From, To or
    Call-ID). A 400 was sent back when the Via allowed it."""

    request: Request
    flow: Flow
    reason: str


LayerEvent = (
    RequestReceived | CancelReceived | AckReceived | ResponseReceived | SuccessRetransmission
    | UnmatchedResponse | TimedOut | TransportFailed | Discarded
)


@dataclass(frozen=True)
class Send:
    """A message to transmit on ``flow``. ``transaction`` is None for a message outside any
    transaction (ACK for a 2xx, a stateless 400); ``kind`` as in
    :class:`~skinnysip.sip.transaction.Transmit`."""

    message: Request | Response
    flow: Flow
    kind: str
    transaction: Transaction | None = None


@dataclass
class LayerOutput:
    """What one input produced: messages to send (in order), events (in order), the
    transactions that reached Terminated and were forgotten (``ended``: a driver drops what
    it kept for them; a non-INVITE one ends with its final response, its Completed state
    kept by the layer), and the layer's next deadline (None: no timer)."""

    send: list[Send] = field(default_factory=list)
    events: list[LayerEvent] = field(default_factory=list)
    deadline: float | None = None
    ended: list[Transaction] = field(default_factory=list)


# --------------------------------------------------------------------------- transport rules


def stamp_received(request: Request, source: tuple[str, int]) -> None:
    """What the server transport does to every request it receives (RFC 3261 §18.2.1,
    RFC 3581 §4): add ``received=<source IP>`` to the top Via when its sent-by host differs
    from the source address, or when ``rport`` is present (then ``rport`` gets the source
    port). Modifies ``request`` in place; a malformed Via is left alone."""
    values = request.headers.values("Via")
    if not values:
        return
    try:
        top = request.top_via
    except SIPParseError:
        return
    if top is None:
        return
    top = Via(top.protocol, top.transport, top.host, top.port, dict(top.params))  # the parsed one is cached
    ip, port = source
    changed = False
    if "rport" in top.params:
        top.params["rport"] = str(port)
        top.params["received"] = ip
        changed = True
    elif top.host.lower() != ip.lower():
        top.params["received"] = ip
        changed = True
    if changed:
        request.headers.replace_top("Via", str(top))


def response_flow(request: Request, flow: Flow) -> Flow:
    """Where the responses to ``request`` (received on ``flow``) go (RFC 3261 §18.2.2,
    RFC 3581 §4). Reliable: back on the same connection. UDP: ``maddr`` if present, else
    the ``received`` address with the ``rport`` port when ``rport`` was requested (the
    source of the request), else ``received`` (or the sent-by host) and the sent-by port
    (default 5060)."""
    if flow.reliable:
        return flow
    try:
        top = request.top_via
    except SIPParseError:
        top = None
    if top is None:
        return flow
    maddr = top.params.get("maddr")
    port = top.port or 5060
    if maddr:
        return Flow(flow.transport, (maddr, port), local=flow.local)
    rport = top.params.get("rport")
    host = top.params.get("received") or top.host
    port_from_rport = uint_or_none(rport, 65535)
    if port_from_rport:
        return Flow(flow.transport, (host, port_from_rport), local=flow.local)
    return Flow(flow.transport, (host, port), local=flow.local)


# --------------------------------------------------------------------------- the layer


_ServerKey = tuple[str, ...]


def _server_key(request: Request) -> tuple[_ServerKey, bool]:
    """(key, rfc3261) of a request for server matching; the ACK uses the INVITE's method.
    Raises SIPParseError when the request lacks what matching needs."""
    top = request.top_via
    if top is None:
        raise SIPParseError("no Via header field")
    method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        return (branch, top.host.lower(), str(top.port or ""), method), True
    number, _ = request.cseq
    return ("2543", method, request.uri, request.from_tag or "", request.call_id or "", str(number),
            request.headers.values("Via")[0].strip()), False


class TransactionLayer:
    """Client and server transactions sharing one transport (RFC 3261 §17).

    ``timers``: T1/T2/T4 (seconds). ``trying_delay``: seconds after which an INVITE server
    transaction sends 100 Trying on its own (§17.2.1; None: never, the TU does it).
    Counters: ``unmatched_responses``, ``retransmissions_received`` (absorbed requests).
    """

    def __init__(self, timers: Timers | None = None, trying_delay: float | None = 0.2) -> None:
        self.timers = timers or Timers()
        self.trying_delay = trying_delay
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.server: dict[_ServerKey, ServerTransaction] = {}
        self._accepted: dict[tuple[str, int, str], InviteServerTransaction] = {}
        self._client_keys: dict[int, tuple[str, str]] = {}
        self._server_keys: dict[int, _ServerKey] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._scheduled: dict[int, float] = {}
        self._seq = itertools.count()
        #: Completed states kept by key: client (Timer K, §17.1.2.2) and server (Timer J,
        #: §17.2.2, with the final response and its flow)
        self._absorbing: _CompletedStates[tuple[str, str], None] = _CompletedStates(MAX_ABSORBING)
        self._answered: _CompletedStates[_ServerKey, tuple[Response, Flow]] = _CompletedStates(MAX_ANSWERED)
        self.unmatched_responses = 0
        self.retransmissions_received = 0

    # -- outgoing -----------------------------------------------------------------------
    def send_request(self, request: Request, flow: Flow, now: float) -> tuple[ClientTransaction | None, LayerOutput]:
        """Send ``request`` on ``flow``: in a new client transaction, except an ACK (for a
        2xx: transaction-less, §17.1), which is simply sent. Returns (transaction or None,
        output). Raises ``ValueError`` if a transaction with the same branch and method is
        running, :class:`SIPParseError` if the request has no Via branch or CSeq."""
        out = LayerOutput()
        if request.method == "ACK":
            out.send.append(Send(request, flow, "ack"))
            out.deadline = self.next_deadline()
            return None, out
        tx = new_transaction(request, reliable=flow.reliable, timers=self.timers)
        tx.flow = flow
        key = (tx.branch, tx.method)
        if key in self.client:
            raise ValueError(f"a {tx.method} client transaction with branch {tx.branch} is already running")
        self.client[key] = tx
        self._absorbing.discard(key)  # a branch used again (not by us): the new one gets the responses
        self._client_keys[id(tx)] = key
        self._apply(tx, tx.start(now), out)
        out.deadline = self.next_deadline()
        return tx, out

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> LayerOutput:
        """Send the TU's ``response`` in ``transaction``. Raises ``ValueError`` if the
        transaction cannot send it (final already sent, CSeq mismatch)."""
        out = LayerOutput()
        self._apply(transaction, transaction.send_response(response, now), out)
        if isinstance(transaction, InviteServerTransaction) and transaction.state is ServerState.ACCEPTED:
            key = self._dialog_key(transaction.request)
            if key is not None:
                self._accepted[key] = transaction
        out.deadline = self.next_deadline()
        return out

    def send_stateless(self, message: Request | Response, flow: Flow) -> LayerOutput:
        """A message outside any transaction (e.g. a 2xx re-sent by the UA core)."""
        return LayerOutput(send=[Send(message, flow, "response" if isinstance(message, Response) else "request")],
                           deadline=self.next_deadline())

    # -- incoming -----------------------------------------------------------------------
    def receive(self, message: Request | Response, flow: Flow, now: float) -> LayerOutput:
        """A message the transport received on ``flow`` (requests already stamped with
        :func:`stamp_received`)."""
        out = LayerOutput()
        if isinstance(message, Response):
            self._receive_response(message, flow, now, out)
        else:
            self._receive_request(message, flow, now, out)
        out.deadline = self.next_deadline()
        return out

    def _receive_response(self, response: Response, flow: Flow, now: float, out: LayerOutput) -> None:
        try:
            top = response.top_via
            method = response.cseq[1]
        except SIPParseError:
            top, method = None, ""
        key = (top.branch or "", method) if top is not None else None
        tx = self.client.get(key) if key is not None else None
        if tx is None:
            if key is not None and self._absorbing and self._absorbing.find(key, now) is not None:
                return  # a retransmission of a final response, in its transaction's Completed state
            self.unmatched_responses += 1
            if 200 <= response.status_code < 300 and method == "INVITE":
                out.events.append(SuccessRetransmission(response, flow))
            else:
                out.events.append(UnmatchedResponse(response, flow))
            return
        self._apply(tx, tx.receive_matched(response, now), out, flow)  # matched by the key above

    def _receive_request(self, request: Request, flow: Flow, now: float, out: LayerOutput) -> None:
        try:
            key, _rfc3261 = _server_key(request)
            request.cseq  # noqa: B018 - validates CSeq
            if request.call_id is None or request.headers.get("From") is None or request.headers.get("To") is None:
                raise SIPParseError("request lacks Call-ID, From or To")
            to_tag = request.to_tag
            request.from_tag  # noqa: B018 - validates From
        except SIPParseError as exc:
            self._discard(request, flow, exc.reason, out)
            return
        tx = self.server.get(key)
        if key[0] == "2543" and tx is not None and request.method != "ACK":
            if tx.request.to_tag != to_tag:
                tx = None
        if request.method == "ACK":
            self._receive_ack(request, flow, key, tx, to_tag, now, out)
            return
        if tx is not None:
            self.retransmissions_received += 1
            self._apply(tx, tx.receive_request(request, now), out)
            return
        answered = self._answered.find(key, now) if self._answered else None
        if answered is not None:  # a retransmission, in its transaction's Completed state
            response, response_to = answered[1]
            self.retransmissions_received += 1
            out.send.append(Send(response, response_to, "retransmission"))
            return
        stx = new_server_transaction(request, reliable=flow.reliable, timers=self.timers,
                                     trying_delay=self.trying_delay)
        stx.flow = response_flow(request, flow)
        self.server[key] = stx
        self._server_keys[id(stx)] = key
        self._apply(stx, stx.start(now), out)
        if request.method == "CANCEL":
            invite_key = (*key[:-1], "INVITE") if key[0] != "2543" else ("2543", "INVITE", *key[2:])
            invite = self.server.get(invite_key)
            if isinstance(invite, InviteServerTransaction):
                out.events.append(CancelReceived(request, flow, stx, invite))
                return
        out.events.append(RequestReceived(request, flow, stx))

    def _receive_ack(self, request: Request, flow: Flow, key: _ServerKey, tx: ServerTransaction | None,
                     to_tag: str | None, now: float, out: LayerOutput) -> None:
        if isinstance(tx, InviteServerTransaction):
            if key[0] == "2543" and tx.last_response is not None and tx.last_response.to_tag != to_tag:
                tx = None
        if isinstance(tx, InviteServerTransaction) and tx.state is not ServerState.ACCEPTED:
            self._apply(tx, tx.receive_request(request, now), out)  # ACK for our non-2xx
            return
        invite = tx if isinstance(tx, InviteServerTransaction) else None
        if invite is None:
            dkey = self._dialog_key(request)
            invite = self._accepted.get(dkey) if dkey is not None else None
        if invite is not None:
            invite.acknowledged(request)
            self._schedule(invite)
        out.events.append(AckReceived(request, flow, invite))

    @staticmethod
    def _dialog_key(request: Request) -> tuple[str, int, str] | None:
        try:
            return (request.call_id or "", request.cseq[0], request.from_tag or "")
        except SIPParseError:
            return None

    def _discard(self, request: Request, flow: Flow, reason: str, out: LayerOutput) -> None:
        out.events.append(Discarded(request, flow, reason))
        if request.method == "ACK":
            return
        try:
            if request.top_via is None:
                return
        except SIPParseError:
            return
        h = Headers()
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.headers.get_all(name):
                h.add(name, value)
        out.send.append(Send(Response(400, f"Bad Request ({reason[:80]})", h), response_flow(request, flow),
                             "response"))

    # -- failures and time ----------------------------------------------------------------
    def transport_error(self, transaction: Transaction, reason: str, now: float) -> LayerOutput:
        """The transport could not send a message of ``transaction`` (§17.1.4, §17.2.4)."""
        out = LayerOutput()
        if not transaction.terminated:
            self._apply(transaction, transaction.transport_error(reason, now), out)
        out.deadline = self.next_deadline()
        return out

    def connection_lost(self, flow: Flow, reason: str, now: float) -> LayerOutput:
        """A flow failed: a stream connection closed (the client transactions on it fail: their
        answers would have come on it), or an ICMP error named a UDP destination (the client
        transactions sending there fail, RFC 3261 §18.4). Server transactions live on: their
        responses go over a new connection when they are sent (§18.2.2, the endpoint's part)."""
        out = LayerOutput()
        for tx in list(self.client.values()):
            f = tx.flow
            if f is None or tx.terminated:
                continue
            if flow.connection is not None:
                hit = f.reliable and f.connection == flow.connection
            else:
                hit = f.transport == flow.transport and f.remote == flow.remote
            if hit:
                self._apply(tx, tx.transport_error(reason, now), out)
        out.deadline = self.next_deadline()
        return out

    def tick(self, now: float) -> LayerOutput:
        """Fire every transaction timer due at or before ``now``."""
        out = LayerOutput()
        self._absorbing.purge(now)
        self._answered.purge(now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx = heapq.heappop(heap)
            if self._scheduled.get(id(tx)) != when:
                continue  # stale entry: rescheduled or terminated since
            del self._scheduled[id(tx)]
            self._apply(tx, tx.tick(now), out)
        out.deadline = self.next_deadline()
        return out

    def next_deadline(self) -> float | None:
        """The earliest running timer, or None."""
        heap = self._heap
        while heap and self._scheduled.get(id(heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        """Number of live transactions."""
        return len(self.client) + len(self.server)

    # -- internals ----------------------------------------------------------------------
    def _schedule(self, tx: Transaction) -> None:
        deadline = tx.deadline
        if deadline is None:
            self._scheduled.pop(id(tx), None)
            return
        if self._scheduled.get(id(tx)) != deadline:
            self._scheduled[id(tx)] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), tx))

    def _apply(self, tx: Transaction, result: TransactionOutput, out: LayerOutput, flow: Flow | None = None) -> None:
        target = tx.flow
        assert target is not None
        for item in result.transmit:
            out.send.append(Send(item.message, target, item.kind, tx))
        for event in result.events:
            if isinstance(event, _TxResponse):
                if isinstance(tx, ClientTransaction):
                    out.events.append(ResponseReceived(event.response, flow or target, tx))
            elif isinstance(event, _TxTimedOut | FinalResponseTimedOut | AckTimedOut):
                out.events.append(TimedOut(tx, event.timer))
            elif isinstance(event, _TxTransportFailed | ServerTransportFailed):
                out.events.append(TransportFailed(tx, event.reason))
        state = tx.state
        if state is _CLIENT_TERMINATED or state is _SERVER_TERMINATED:
            self._forget(tx)
            out.ended.append(tx)
        elif state is _CLIENT_COMPLETED and isinstance(tx, NonInviteClientTransaction):
            self._absorb(tx)
            out.ended.append(tx)
        elif (state is _SERVER_COMPLETED and isinstance(tx, NonInviteServerTransaction)
              and self._server_keys.get(id(tx), ("2543",))[0] != "2543"):
            self._keep_answer(tx)
            out.ended.append(tx)
        else:
            self._schedule(tx)

    def _keep_answer(self, tx: NonInviteServerTransaction) -> None:
        """Keep ``tx``'s Completed state (Timer J) as its key and final response; let it go."""
        key = self._server_keys.get(id(tx))
        flow = tx.flow
        released = tx.release()
        self._forget(tx)
        if key is not None and released is not None and flow is not None:
            expiry, response = released
            self._answered.add(key, expiry, (response, flow))

    def _absorb(self, tx: NonInviteClientTransaction) -> None:
        """Keep ``tx``'s Completed state (Timer K) by its key and let the transaction go."""
        key = self._client_keys.get(id(tx))
        expiry = tx.release()
        self._forget(tx)
        if key is not None and expiry is not None:
            self._absorbing.add(key, expiry, None)

    def _forget(self, tx: Transaction) -> None:
        self._scheduled.pop(id(tx), None)
        if isinstance(tx, ClientTransaction):
            ckey = self._client_keys.pop(id(tx), None)
            if ckey is not None and self.client.get(ckey) is tx:
                del self.client[ckey]
        else:
            skey = self._server_keys.pop(id(tx), None)
            if skey is not None and self.server.get(skey) is tx:
                del self.server[skey]
            if isinstance(tx, InviteServerTransaction):
                dkey = self._dialog_key(tx.request)
                if dkey is not None and self._accepted.get(dkey) is tx:
                    del self._accepted[dkey]
