"""Sans-IO SIP client transactions (RFC 3261 §17.1, with the RFC 6026 "Accepted" state).

A client transaction is fed three kinds of input and never touches a socket or a clock:

- ``start(now)``: the request is handed to the transport for the first time;
- ``receive(response, now)``: a response that :meth:`ClientTransaction.matches` (§17.1.3);
- ``transport_error(reason, now)``: the transport could not deliver (§17.1.4);
- ``tick(now)``: the time is now ``now``; due timers fire.

Each call returns a :class:`TransactionOutput`: the messages to transmit (the request, its
retransmissions, the ACK for a non-2xx final response), the events for the transaction user
(:class:`ResponseReceived`, :class:`TimedOut`, :class:`TransportFailed`, :class:`Terminated`)
and the next deadline at which ``tick`` must be called. All times are seconds (float) on a
clock chosen by the caller (the drivers use the event loop's monotonic clock).

Timers (§17.1.1.2, §17.1.2.2, Table 4): A and E retransmit on unreliable transports only
(A doubles without limit, E doubles up to T2, and is T2 once a provisional arrived), B and F
time the transaction out after 64·T1 on every transport, D (≥ 32 s, unreliable) and K (T4,
unreliable) absorb retransmitted final responses; on reliable transports D and K are zero.
RFC 6026 §7.2: a 2xx moves an INVITE transaction to "Accepted", where further 2xx responses
are passed up (so the UA core can re-send its ACK) until Timer M (64·T1) fires.

The requests themselves (ACK for a non-2xx, CANCEL, new branches) are built by
:mod:`skinnysip.sip.request`, re-exported here for the code that imported them from this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import build_ack_for_failure as build_ack
from skinnysip.sip.request import build_cancel, new_branch

__all__ = [
    "ClientTransaction",
    "Event",
    "Flow",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "ResponseReceived",
    "State",
    "Terminated",
    "TimedOut",
    "Timers",
    "TransactionOutput",
    "Transmit",
    "TransportFailed",
    "build_ack",
    "build_cancel",
    "new_branch",
    "new_transaction",
]

@dataclass(frozen=True)
class Flow:
    """Where a message came from or goes to (RFC 3261 §18; RFC 5626 "flow").

    ``transport``: ``udp``/``tcp``/``tls``; ``remote``: (IP, port) of the peer;
    ``connection``: the stream connection's id (TCP/TLS; None: any connection to
    ``remote``, opened if needed); ``local``: (IP, port) of our socket, when it matters
    (an endpoint with several listening sockets). The transport layer owns the sockets;
    this is only an address book entry.
    """

    transport: str
    remote: tuple[str, int]
    connection: int | None = None
    local: tuple[str, int] | None = None

    @property
    def reliable(self) -> bool:
        """True for TCP/TLS: no retransmissions, Timers D/K/I/J zero (§17.1.1.2, §17.2.2)."""
        return self.transport != "udp"

    def back(self) -> Flow:
        """The flow for new requests back to the peer a message came from on this flow: over
        a stream this flow (its connection); over UDP the peer's address from the same local
        socket, without any connection id (RFC 5626's flow reuse, as a proxy reaches a
        registered UA behind a NAT)."""
        return self if self.transport != "udp" else Flow("udp", self.remote, local=self.local)


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer values in seconds (§17, Table 4): T1 (RTT estimate), T2 (maximum
    retransmit interval for non-INVITE requests), T4 (maximum time a message stays in the
    network), and D for unreliable transports (at least 32 s)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0 and self.d >= 0):
            raise ValueError("timers: need T1 > 0, T2 >= T1, T4 >= 0, D >= 0")

    @property
    def timeout(self) -> float:
        """Timers B, F and M: 64·T1."""
        return 64 * self.t1


class State(enum.Enum):
    """Client transaction states (§17.1.1.2 Figure 5, §17.1.2.2 Figure 6, RFC 6026 Figure 5)."""

    CALLING = "Calling"  # INVITE, before any response
    TRYING = "Trying"  # non-INVITE, before any response
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # INVITE after a 2xx (RFC 6026)
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


# the members as plain module names: on Python 3.11 ``State.X`` goes through a descriptor
# on every access, and the state is tested several times per message
_CALLING, _TRYING, _PROCEEDING, _ACCEPTED, _COMPLETED, _TERMINATED = (
    State.CALLING, State.TRYING, State.PROCEEDING, State.ACCEPTED, State.COMPLETED, State.TERMINATED)


@dataclass(frozen=True)
class Transmit:
    """A message to hand to the transport. ``kind``: ``"request"`` (first transmission),
    ``"retransmission"`` (timer A/E; for server transactions Timer G, the 2xx timer or a
    response re-sent for a retransmitted request), ``"ack"`` (ACK for a non-2xx final
    response, including re-sent ACKs), or ``"response"`` (a server transaction's response)."""

    message: Request | Response
    kind: str


@dataclass(frozen=True)
class ResponseReceived:
    """A response for the transaction user: provisional (1xx) or final (≥ 200).
    Retransmitted final responses are absorbed and not reported again, except 2xx to an
    INVITE in the Accepted state (RFC 6026 §7.2), which the UA core must re-ACK."""

    response: Response

    @property
    def final(self) -> bool:
        return self.response.status_code >= 200


@dataclass(frozen=True)
class TimedOut:
    """Timer B (INVITE) or F (non-INVITE) fired: no final response within 64·T1."""

    timer: str


@dataclass(frozen=True)
class TransportFailed:
    """The transport reported an error (§17.1.1.2 / §17.1.2.2 "transport error")."""

    reason: str


@dataclass(frozen=True)
class Terminated:
    """The transaction reached the Terminated state and can be forgotten."""


Event = ResponseReceived | TimedOut | TransportFailed | Terminated


@dataclass
class TransactionOutput:
    """What one input produced: messages to transmit (in order), events for the
    transaction user (in order), and the absolute time of the next timer (None: no timer
    is running, nothing to ``tick``)."""

    transmit: list[Transmit] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # Event here; ServerEvent for server transactions
    deadline: float | None = None


class ClientTransaction:
    """Common part of the INVITE and non-INVITE client transactions.

    ``request`` must carry a top Via with an RFC 3261 branch (``z9hG4bK…``) and a CSeq;
    ``reliable`` is true for TCP/TLS (no retransmissions, D/K zero). Raises
    :class:`SIPParseError` if the request has no branch or CSeq.
    """

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers or Timers()
        top = request.top_via
        branch = top.branch if top is not None else None
        if not branch:
            raise SIPParseError("request has no Via branch")
        self.branch: str = branch
        self.method: str = request.method
        self.cseq: tuple[int, str] = request.cseq
        self.state: State = _TERMINATED
        self.flow: Flow | None = None  # set by the transaction layer
        self.final_response: Response | None = None
        self.retransmissions: int = 0
        self._timers: dict[str, float] = {}
        self._interval: float = self.timers.t1

    # -- matching (§17.1.3) ---------------------------------------------------------
    def matches(self, response: Response) -> bool:
        """True if ``response`` belongs to this transaction: its top Via branch equals the
        request's branch and its CSeq method equals the request's method (§17.1.3)."""
        try:
            top = response.top_via
            method = response.cseq[1]
        except SIPParseError:
            return False
        return top is not None and top.branch == self.branch and method == self.method

    @property
    def deadline(self) -> float | None:
        """Absolute time of the next timer, or None."""
        return min(self._timers.values()) if self._timers else None

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    # -- inputs ------------------------------------------------------------------------
    #: set by each kind (§17.1.1.2 INVITE: Calling, A, B; §17.1.2.2 non-INVITE: Trying, E, F)
    _initial_state: State
    _retransmit_timer: str
    _timeout_timer: str

    def start(self, now: float) -> TransactionOutput:
        """Send the request for the first time and start the timers: the retransmission timer
        (A or E, T1, unreliable transports only) and the timeout timer (B or F, 64·T1). Call once."""
        self.state = self._initial_state
        out = TransactionOutput(transmit=[Transmit(self.request, "request")])
        if not self.reliable:
            self._interval = self.timers.t1
            self._timers[self._retransmit_timer] = now + self._interval
        self._timers[self._timeout_timer] = now + self.timers.timeout
        out.deadline = self.deadline
        return out

    def receive(self, response: Response, now: float) -> TransactionOutput:
        """Feed a response; one that does not :meth:`matches` this transaction is ignored."""
        if not self.terminated and not self.matches(response):
            return TransactionOutput(deadline=self.deadline)
        return self.receive_matched(response, now)

    def receive_matched(self, response: Response, now: float) -> TransactionOutput:
        """Feed a response the caller has already matched to this transaction by its top
        Via branch and CSeq method (§17.1.3; the transaction layer's lookup), so it is
        not parsed again."""
        out = TransactionOutput()
        if self.state is not _TERMINATED:
            if response.status_code < 200:
                self._on_provisional(response, now, out)
            else:
                self._on_final(response, now, out)
        out.deadline = self.deadline
        return out

    def transport_error(self, reason: str, now: float) -> TransactionOutput:
        """The transport failed to send (or the connection broke): report and terminate."""
        out = TransactionOutput()
        if self.state in (_CALLING, _TRYING, _PROCEEDING):
            out.events.append(TransportFailed(reason))
        if not self.terminated:
            self._terminate(out)
        return out

    def tick(self, now: float) -> TransactionOutput:
        """Fire every timer due at or before ``now`` (in due order)."""
        out = TransactionOutput()
        # Each firing either removes its timer or moves it strictly later, so this ends.
        for _ in range(1000):
            due = [(t, name) for name, t in self._timers.items() if t <= now]
            if not due or self.terminated:
                break
            _, name = min(due)
            self._fire(name, now, out)
        out.deadline = self.deadline
        return out

    # -- helpers -----------------------------------------------------------------------
    def _terminate(self, out: TransactionOutput) -> None:
        self.state = _TERMINATED
        self._timers.clear()
        out.events.append(Terminated())

    def _retransmit(self, out: TransactionOutput) -> None:
        self.retransmissions += 1
        out.transmit.append(Transmit(self.request, "retransmission"))

    def _on_provisional(self, response: Response, now: float, out: TransactionOutput) -> None:
        raise NotImplementedError  # pragma: no cover

    def _on_final(self, response: Response, now: float, out: TransactionOutput) -> None:
        raise NotImplementedError  # pragma: no cover

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        raise NotImplementedError  # pragma: no cover


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 INVITE client transaction (Figure 5), with RFC 6026's Accepted state.

    Calling —1xx→ Proceeding —2xx→ Accepted —Timer M→ Terminated; Calling/Proceeding
    —300-699→ Completed (ACK sent) —Timer D→ Terminated; Calling —Timer B→ Terminated
    (:class:`TimedOut`). Timer A retransmits the INVITE in Calling on unreliable transports.
    """

    _initial_state = _CALLING
    _retransmit_timer = "A"
    _timeout_timer = "B"

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        if request.method != "INVITE":
            raise ValueError("InviteClientTransaction needs an INVITE")
        super().__init__(request, reliable=reliable, timers=timers)
        self.ack: Request | None = None

    def _on_provisional(self, response: Response, now: float, out: TransactionOutput) -> None:
        if self.state in (_CALLING, _PROCEEDING):
            self.state = _PROCEEDING
            self._timers.pop("A", None)
            self._timers.pop("B", None)
            out.events.append(ResponseReceived(response))

    def _on_final(self, response: Response, now: float, out: TransactionOutput) -> None:
        code = response.status_code
        if self.state in (_CALLING, _PROCEEDING):
            self._timers.pop("A", None)
            self._timers.pop("B", None)
            self.final_response = response
            out.events.append(ResponseReceived(response))
            if code < 300:
                self.state = _ACCEPTED
                self._timers["M"] = now + self.timers.timeout
            else:
                self.state = _COMPLETED
                self.ack = build_ack(self.request, response)
                out.transmit.append(Transmit(self.ack, "ack"))
                wait = 0.0 if self.reliable else self.timers.d
                if wait <= 0:
                    self._terminate(out)
                else:
                    self._timers["D"] = now + wait
        elif self.state is _ACCEPTED and code < 300:
            out.events.append(ResponseReceived(response))  # the UA core re-sends its ACK
        elif self.state is _COMPLETED and code >= 300 and self.ack is not None:
            out.transmit.append(Transmit(self.ack, "ack"))  # retransmitted final: ACK again

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        del self._timers[name]
        if name == "A" and self.state is _CALLING:
            self._retransmit(out)
            self._interval *= 2
            self._timers["A"] = now + self._interval
        elif name == "B" and self.state is _CALLING:
            out.events.append(TimedOut("B"))
            self._terminate(out)
        elif name in ("D", "M"):
            self._terminate(out)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2 non-INVITE client transaction (Figure 6).

    Trying —1xx→ Proceeding; Trying/Proceeding —final→ Completed —Timer K→ Terminated;
    Timer F (64·T1) in Trying/Proceeding → :class:`TimedOut`. Timer E retransmits on
    unreliable transports: T1, doubling up to T2 in Trying, T2 in Proceeding.
    """

    _initial_state = _TRYING
    _retransmit_timer = "E"
    _timeout_timer = "F"

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError("NonInviteClientTransaction cannot carry INVITE or ACK")
        super().__init__(request, reliable=reliable, timers=timers)

    def _on_provisional(self, response: Response, now: float, out: TransactionOutput) -> None:
        if self.state in (_TRYING, _PROCEEDING):
            self.state = _PROCEEDING
            out.events.append(ResponseReceived(response))

    def _on_final(self, response: Response, now: float, out: TransactionOutput) -> None:
        if self.state not in (_TRYING, _PROCEEDING):
            return  # Completed: retransmissions of the final response are absorbed
        self.final_response = response
        self._timers.pop("E", None)
        self._timers.pop("F", None)
        self.state = _COMPLETED
        out.events.append(ResponseReceived(response))
        wait = 0.0 if self.reliable else self.timers.t4
        if wait <= 0:
            self._terminate(out)
        else:
            self._timers["K"] = now + wait

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        del self._timers[name]
        if name == "E" and self.state in (_TRYING, _PROCEEDING):
            self._retransmit(out)
            if self.state is _TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            self._timers["E"] = now + self._interval
        elif name == "F" and self.state in (_TRYING, _PROCEEDING):
            out.events.append(TimedOut("F"))
            self._terminate(out)
        elif name == "K":
            self._terminate(out)

    def release(self) -> float | None:
        """Hand the Completed state's Timer K to the caller and terminate: returns K's expiry
        (seconds, the caller's clock), or None when the transaction is not in Completed
        waiting on K (nothing changes then). Completed only absorbs retransmissions of the
        final response (§17.1.2.2); the transaction layer does that for the rest of T4 with
        the transaction's key alone, so the request and response need not stay alive."""
        expiry = self._timers.get("K") if self.state is _COMPLETED else None
        if expiry is not None:
            self.state = _TERMINATED
            self._timers.clear()
        return expiry


def new_transaction(request: Request, *, reliable: bool, timers: Timers | None = None) -> ClientTransaction:
    """The right client transaction for ``request``: INVITE → :class:`InviteClientTransaction`,
    anything else but ACK → :class:`NonInviteClientTransaction` (an ACK for a 2xx is not a
    transaction, RFC 3261 §17.1; send it directly). Raises ``ValueError`` for ACK."""
    if request.method == "INVITE":
        return InviteClientTransaction(request, reliable=reliable, timers=timers)
    return NonInviteClientTransaction(request, reliable=reliable, timers=timers)
