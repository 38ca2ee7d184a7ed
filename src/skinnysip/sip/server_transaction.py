"""Sans-IO SIP server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state).

A server transaction is created for a request the transport received, and is fed:

- ``receive_request(request, now)``: a retransmission of its request (or the ACK, for an
  INVITE transaction), matched by the transaction layer (§17.2.3);
- ``send_response(response, now)``: the transaction user's response;
- ``transport_error(reason, now)`` and ``tick(now)``.

Each returns a :class:`~skinnysip.sip.transaction.TransactionOutput` whose ``transmit``
holds :class:`~skinnysip.sip.transaction.Transmit` items (responses: kind ``"response"``
for a first transmission, ``"retransmission"`` for Timer G, the 2xx timer or an absorbed
request retransmission) and whose ``events`` hold :class:`ServerEvent` values. Times are seconds
on the caller's clock.

INVITE (§17.2.1, RFC 6026 §7.1, Figure 7): Proceeding — the TU sends 1xx (a 100 Trying is
sent by the transaction itself if the TU sends nothing within ``trying_delay``, 200 ms) —
2xx → Accepted (the 2xx is retransmitted at T1, 2·T1 … T2 on unreliable transports until
the ACK for it arrives, §13.3.1.4; Timer L = 64·T1 ends the state), 300-699 → Completed
(Timer G retransmits the response on unreliable transports, T1 doubling up to T2; Timer H
= 64·T1 gives up) —ACK→ Confirmed (Timer I = T4, zero on reliable) → Terminated.
A retransmitted INVITE is absorbed and the last provisional or final response resent
(in Accepted it is absorbed silently: the 2xx is retransmitted by its own timer).

Non-INVITE (§17.2.2, Figure 8): Trying —1xx→ Proceeding —final→ Completed —Timer J
(64·T1 unreliable, zero reliable)→ Terminated. Retransmissions are absorbed in Trying and
answered with the last response in Proceeding and Completed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import build_response
from skinnysip.sip.transaction import Flow, Timers, TransactionOutput, Transmit

__all__ = [
    "AckTimedOut",
    "FinalResponseTimedOut",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "ServerEvent",
    "ServerState",
    "ServerTransaction",
    "ServerTransportFailed",
    "new_server_transaction",
]


class ServerState(enum.Enum):
    """Server transaction states (§17.2.1 Figure 7, §17.2.2 Figure 8, RFC 6026 Figure 7)."""

    TRYING = "Trying"  # non-INVITE, before any response
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # INVITE after a 2xx (RFC 6026)
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # INVITE after the ACK for a non-2xx
    TERMINATED = "Terminated"


@dataclass(frozen=True)
class FinalResponseTimedOut:
    """Timer H fired: no ACK for a non-2xx final response within 64·T1 (§17.2.1)."""

    timer: str = "H"


@dataclass(frozen=True)
class AckTimedOut:
    """Timer L fired without an ACK for the 2xx (RFC 3261 §13.3.1.4, RFC 6026 §7.1): the
    dialog is confirmed, but the session should be ended with BYE."""

    timer: str = "L"


@dataclass(frozen=True)
class ServerTransportFailed:
    """The transport could not deliver a response (§17.2.4)."""

    reason: str


ServerEvent = FinalResponseTimedOut | AckTimedOut | ServerTransportFailed


class ServerTransaction:
    """Common part of the INVITE and non-INVITE server transactions.

    ``request`` is the request that created it (with the ``received``/``rport`` the
    transport stamped on its top Via); ``reliable`` is true for TCP/TLS. Raises
    :class:`SIPParseError` if the request has no CSeq.
    """

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers or Timers()
        self.method = request.method
        self.cseq = request.cseq
        self.state = ServerState.TERMINATED
        self.flow: Flow | None = None  # where responses go (§18.2.2), set by the transaction layer
        self.last_response: Response | None = None
        self.retransmissions = 0
        self._timers: dict[str, float] = {}

    @property
    def deadline(self) -> float | None:
        """Absolute time of the next timer, or None."""
        return min(self._timers.values()) if self._timers else None

    @property
    def terminated(self) -> bool:
        return self.state is ServerState.TERMINATED

    @property
    def final(self) -> bool:
        """True once a final response has been sent."""
        return self.last_response is not None and self.last_response.status_code >= 200

    def start(self, now: float) -> TransactionOutput:
        raise NotImplementedError  # pragma: no cover

    def receive_request(self, request: Request, now: float) -> TransactionOutput:
        raise NotImplementedError  # pragma: no cover

    def send_response(self, response: Response, now: float) -> TransactionOutput:
        raise NotImplementedError  # pragma: no cover

    def transport_error(self, reason: str, now: float) -> TransactionOutput:
        """The transport failed to send a response: report and terminate (§17.2.4)."""
        out = TransactionOutput()
        if not self.terminated:
            out.events.append(ServerTransportFailed(reason))
            self._terminate()
        return out

    def tick(self, now: float) -> TransactionOutput:
        """Fire every timer due at or before ``now``, in due order."""
        out = TransactionOutput()
        for _ in range(1000):  # each firing removes its timer or moves it later
            due = [(t, name) for name, t in self._timers.items() if t <= now]
            if not due or self.terminated:
                break
            _, name = min(due)
            del self._timers[name]
            self._fire(name, now, out)
        out.deadline = self.deadline
        return out

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        raise NotImplementedError  # pragma: no cover

    def _terminate(self) -> None:
        self.state = ServerState.TERMINATED
        self._timers.clear()

    def _resend(self, out: TransactionOutput) -> None:
        if self.last_response is not None:
            self.retransmissions += 1
            out.transmit.append(Transmit(self.last_response, "retransmission"))

    def _check(self, response: Response) -> None:
        try:
            cseq = response.cseq
        except SIPParseError as exc:
            raise ValueError(f"response has no usable CSeq: {exc.reason}") from exc
        if cseq != self.cseq:
            raise ValueError(f"response CSeq {cseq} does not match the request's {self.cseq}")


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 INVITE server transaction with RFC 6026's Accepted state."""

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None,
                 trying_delay: float | None = 0.2) -> None:
        if request.method != "INVITE":
            raise ValueError("InviteServerTransaction needs an INVITE")
        super().__init__(request, reliable=reliable, timers=timers)
        self.trying_delay = trying_delay
        self.ack: Request | None = None
        self._acknowledged = False
        self._interval = self.timers.t1

    def start(self, now: float) -> TransactionOutput:
        """Enter Proceeding; arm the 100 Trying timer (§17.2.1: if the TU will not answer
        within 200 ms). ``trying_delay`` None: the TU sends its own 1xx."""
        self.state = ServerState.PROCEEDING
        out = TransactionOutput()
        if self.trying_delay is not None:
            self._timers["Trying"] = now + self.trying_delay
        out.deadline = self.deadline
        return out

    def receive_request(self, request: Request, now: float) -> TransactionOutput:
        """A retransmitted INVITE, or the ACK for a non-2xx final response."""
        out = TransactionOutput()
        if request.method == "ACK":
            if self.state is ServerState.COMPLETED:
                self.ack = request
                self.state = ServerState.CONFIRMED
                self._timers.pop("G", None)
                self._timers.pop("H", None)
                wait = 0.0 if self.reliable else self.timers.t4
                if wait <= 0:
                    self._terminate()
                else:
                    self._timers["I"] = now + wait
            elif self.state is ServerState.ACCEPTED:
                self.acknowledged(request)  # an RFC 2543 peer's ACK for the 2xx matched us
        elif self.state in (ServerState.PROCEEDING, ServerState.COMPLETED):
            self._resend(out)  # absorbed; last provisional or final response again
        out.deadline = self.deadline
        return out

    def acknowledged(self, ack: Request | None = None) -> None:
        """The ACK for our 2xx arrived (matched by dialog, not by this transaction): stop
        retransmitting the 2xx (§13.3.1.4) and keep ``ack`` in :attr:`ack` (the first one
        seen). The state stays Accepted until Timer L, which then reports nothing."""
        if self.state is ServerState.ACCEPTED:
            self._acknowledged = True
            self.ack = self.ack or ack
            self._timers.pop("2xx", None)

    def send_response(self, response: Response, now: float) -> TransactionOutput:
        """Send the TU's response. Raises ``ValueError`` if the transaction already sent
        its final response or the response's CSeq is not the request's."""
        self._check(response)
        if self.state is not ServerState.PROCEEDING:
            raise ValueError(f"INVITE server transaction in state {self.state.value} cannot send {response.status_code}")
        out = TransactionOutput(transmit=[Transmit(response, "response")])
        self.last_response = response
        self._timers.pop("Trying", None)
        code = response.status_code
        if code >= 300:
            self.state = ServerState.COMPLETED
            if not self.reliable:
                self._interval = self.timers.t1
                self._timers["G"] = now + self._interval
            self._timers["H"] = now + self.timers.timeout
        elif code >= 200:
            self.state = ServerState.ACCEPTED
            self._timers["L"] = now + self.timers.timeout
            if not self.reliable:
                self._interval = self.timers.t1
                self._timers["2xx"] = now + self._interval
        out.deadline = self.deadline
        return out

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        if name == "Trying" and self.state is ServerState.PROCEEDING and self.last_response is None:
            trying = build_response(self.request, 100)
            self.last_response = trying
            out.transmit.append(Transmit(trying, "response"))
        elif name in ("G", "2xx"):
            self._resend(out)
            self._interval = min(2 * self._interval, self.timers.t2)
            self._timers[name] = now + self._interval
        elif name == "H":
            out.events.append(FinalResponseTimedOut())
            self._terminate()
        elif name == "I":
            self._terminate()
        elif name == "L":
            if not self._acknowledged:
                out.events.append(AckTimedOut())
            self._terminate()


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 non-INVITE server transaction."""

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError("NonInviteServerTransaction cannot carry INVITE or ACK")
        super().__init__(request, reliable=reliable, timers=timers)

    def start(self, now: float) -> TransactionOutput:
        """Enter Trying (no timer runs until the TU answers)."""
        self.state = ServerState.TRYING
        return TransactionOutput()

    def receive_request(self, request: Request, now: float) -> TransactionOutput:
        """A retransmission: absorbed in Trying, answered with the last response after."""
        out = TransactionOutput()
        if self.state in (ServerState.PROCEEDING, ServerState.COMPLETED):
            self._resend(out)
        out.deadline = self.deadline
        return out

    def send_response(self, response: Response, now: float) -> TransactionOutput:
        """Send the TU's response. Raises ``ValueError`` after a final response."""
        self._check(response)
        if self.state not in (ServerState.TRYING, ServerState.PROCEEDING):
            raise ValueError(f"{self.method} server transaction in state {self.state.value} "
                             f"cannot send {response.status_code}")
        out = TransactionOutput(transmit=[Transmit(response, "response")])
        self.last_response = response
        if response.status_code < 200:
            self.state = ServerState.PROCEEDING
        else:
            self.state = ServerState.COMPLETED
            wait = 0.0 if self.reliable else self.timers.timeout
            if wait <= 0:
                self._terminate()
            else:
                self._timers["J"] = now + wait
        out.deadline = self.deadline
        return out

    def _fire(self, name: str, now: float, out: TransactionOutput) -> None:
        if name == "J":
            self._terminate()

    def release(self) -> tuple[float, Response] | None:
        """Hand the Completed state's Timer J and final response to the caller and terminate:
        (J's expiry in seconds on the caller's clock, the response), or None when the
        transaction is not in Completed waiting on J (nothing changes then). Completed only
        re-sends that response for a retransmitted request (§17.2.2); the transaction layer
        does that for the rest of 64·T1 by the request's key, without keeping the request."""
        expiry = self._timers.get("J") if self.state is ServerState.COMPLETED else None
        response = self.last_response
        if expiry is None or response is None:
            return None
        self._terminate()
        return expiry, response


def new_server_transaction(request: Request, *, reliable: bool, timers: Timers | None = None,
                           trying_delay: float | None = 0.2) -> ServerTransaction:
    """The server transaction for ``request``: INVITE → :class:`InviteServerTransaction`,
    others → :class:`NonInviteServerTransaction`. ACK never creates one (``ValueError``)."""
    if request.method == "INVITE":
        return InviteServerTransaction(request, reliable=reliable, timers=timers, trying_delay=trying_delay)
    return NonInviteServerTransaction(request, reliable=reliable, timers=timers)
