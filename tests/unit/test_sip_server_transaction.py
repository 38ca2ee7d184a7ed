"""RFC 3261 §17.2 server transactions driven with fake time (plain floats, no sockets):
INVITE (§17.2.1, with RFC 6026's Accepted state) and non-INVITE (§17.2.2); Timers G, H, I,
J, L, the 2xx retransmission timer (§13.3.1.4) and the 100 Trying sent after 200 ms."""

from __future__ import annotations

import pytest
from test_sip_transaction import run_until, times_of

from skinnysip.sip.message import Request, Response, parse_message
from skinnysip.sip.request import build_response
from skinnysip.sip.server_transaction import (
    AckTimedOut,
    FinalResponseTimedOut,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerState,
    ServerTransportFailed,
    new_server_transaction,
)
from skinnysip.sip.transaction import Timers, TransactionOutput

BRANCH = "z9hG4bK776asdhds"


def sip_request(method: str = "INVITE", *, branch: str = BRANCH, cseq: int = 314159,
                to_tag: str | None = None, cseq_method: str | None = None) -> Request:
    """A realistic request (RFC 3261 §24.2 shape), parsed from text as a driver would."""
    to = "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch={branch};received=192.0.2.101\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def respond(request: Request, code: int) -> Response:
    return build_response(request, code, to_tag="a6c85cf")


def kinds(out: TransactionOutput) -> list[str]:
    return [item.kind for item in out.transmit]


def codes(out: TransactionOutput) -> list[int]:
    return [item.message.status_code for item in out.transmit]  # type: ignore[union-attr]


# ----------------------------------------------------------------- INVITE: 100 Trying (§17.2.1)


def test_invite_sends_100_trying_after_200_ms_when_tu_is_silent() -> None:
    """RFC 3261 §17.2.1: the server transaction MUST generate a 100 (Trying) unless it knows
    the TU will answer within 200 ms; §8.2.6.1: the 100 copies Timestamp and has no To tag."""
    invite = sip_request()
    invite.headers.add("Timestamp", "54")
    tx = InviteServerTransaction(invite, reliable=False)
    out = tx.start(10.0)
    assert tx.state is ServerState.PROCEEDING and out.transmit == []
    assert out.deadline == pytest.approx(10.2)
    assert tx.tick(10.19).transmit == []
    out = tx.tick(10.2)
    assert kinds(out) == ["response"] and codes(out) == [100]
    trying = out.transmit[0].message
    assert isinstance(trying, Response)
    assert trying.to_tag is None
    assert trying.headers.get("Timestamp") == "54"
    assert trying.headers.values("Via") == invite.headers.values("Via")
    assert out.deadline is None and tx.state is ServerState.PROCEEDING
    assert tx.last_response is trying


def test_invite_no_100_trying_when_tu_sent_a_provisional_first() -> None:
    """§17.2.1: the 100 is only for a TU that stays silent; a 180 within 200 ms replaces it."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    out = tx.send_response(respond(invite, 180), 0.1)
    assert kinds(out) == ["response"] and codes(out) == [180]
    assert out.deadline is None
    assert tx.tick(0.2).transmit == [] and tx.tick(5.0).transmit == []


def test_invite_trying_delay_none_never_sends_100() -> None:
    """§17.2.1: the TU that answers itself can switch the automatic 100 off."""
    tx = InviteServerTransaction(sip_request(), reliable=False, trying_delay=None)
    assert tx.start(0.0).deadline is None
    assert tx.tick(1.0).transmit == []


def test_invite_retransmission_in_proceeding_resends_last_provisional() -> None:
    """§17.2.1: a retransmitted INVITE in Proceeding is answered with the most recent
    provisional response; before any response it is absorbed."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    assert tx.receive_request(sip_request(), 0.1).transmit == []  # nothing sent yet
    tx.send_response(respond(invite, 180), 0.15)
    ringing = respond(invite, 183)
    tx.send_response(ringing, 0.3)
    out = tx.receive_request(sip_request(), 0.5)
    assert kinds(out) == ["retransmission"]
    assert out.transmit[0].message is ringing
    assert tx.retransmissions == 1 and tx.state is ServerState.PROCEEDING


def test_invite_retransmission_after_automatic_100_resends_it() -> None:
    """§17.2.1: the 100 the transaction sent is the last provisional response."""
    tx = InviteServerTransaction(sip_request(), reliable=False)
    tx.start(0.0)
    tx.tick(0.2)
    out = tx.receive_request(sip_request(), 0.5)
    assert codes(out) == [100] and kinds(out) == ["retransmission"]


# ----------------------------------------------------------- INVITE: non-2xx, G, H, I (§17.2.1)


def test_invite_non_2xx_timer_g_doubles_to_t2_and_timer_h_at_64_t1() -> None:
    """§17.2.1: Timer G fires at T1, then doubles up to T2 (0.5, 1, 2, 4, 4 … s after each
    send); Timer H at 64·T1 = 32 s ends the transaction with a timeout for the TU."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(100.0)
    busy = respond(invite, 486)
    out = tx.send_response(busy, 100.0)
    assert kinds(out) == ["response"] and tx.state is ServerState.COMPLETED
    assert out.deadline == pytest.approx(100.5)
    outputs = run_until(tx, 0.0, 1000.0)
    assert times_of(outputs, "retransmission") == [100.5, 101.5, 103.5, 107.5, 111.5, 115.5, 119.5, 123.5, 127.5, 131.5]
    assert all(item.message is busy for _, o in outputs for item in o.transmit)
    last_t, last = outputs[-1]
    assert last_t == pytest.approx(132.0)
    assert last.events == [FinalResponseTimedOut()]
    assert last.events[0].timer == "H"
    assert tx.terminated and tx.deadline is None
    assert tx.retransmissions == 10


def test_invite_timer_g_with_custom_t1_t2() -> None:
    """§17.2.1 / Table 4: G = T1, 2·T1 … capped at T2, H = 64·T1, for any configured T1/T2."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False, timers=Timers(t1=0.1, t2=0.3))
    tx.start(0.0)
    tx.send_response(respond(invite, 603), 0.0)
    outputs = run_until(tx, 0.0, 100.0)
    assert times_of(outputs, "retransmission")[:5] == [0.1, 0.3, 0.6, 0.9, 1.2]
    assert outputs[-1][0] == pytest.approx(6.4)
    assert outputs[-1][1].events == [FinalResponseTimedOut()]


def test_invite_ack_confirms_stops_g_and_h_then_timer_i_at_t4() -> None:
    """§17.2.1: the ACK moves Completed → Confirmed, stops G and H; Timer I (T4 on UDP)
    absorbs further ACKs and then terminates without an event."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    busy = respond(invite, 486)
    tx.send_response(busy, 1.0)
    tx.tick(1.5)  # one G retransmission
    again = tx.receive_request(sip_request(), 1.7)  # retransmitted INVITE: final again
    assert kinds(again) == ["retransmission"] and again.transmit[0].message is busy
    ack = sip_request("ACK", to_tag="a6c85cf", cseq_method="ACK")
    out = tx.receive_request(ack, 2.0)
    assert tx.state is ServerState.CONFIRMED and tx.ack is ack
    assert out.transmit == [] and out.events == []
    assert out.deadline == pytest.approx(7.0)  # I = T4 = 5 s
    assert tx.receive_request(ack, 3.0).transmit == []  # ACK retransmission absorbed
    assert tx.receive_request(sip_request(), 3.5).transmit == []  # INVITE absorbed in Confirmed
    assert tx.tick(6.99).events == [] and not tx.terminated
    out = tx.tick(7.0)
    assert out.events == [] and out.transmit == []
    assert tx.terminated


def test_invite_reliable_non_2xx_no_timer_g_and_timer_i_zero() -> None:
    """§17.2.1: on reliable transports G is not started and I is zero; H still runs."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.start(0.0)
    out = tx.send_response(respond(invite, 404), 0.0)
    assert out.deadline == pytest.approx(32.0)  # only H
    assert tx.tick(31.9).transmit == []
    tx.receive_request(sip_request("ACK", to_tag="a6c85cf", cseq_method="ACK"), 1.0)
    assert tx.terminated and tx.deadline is None


def test_invite_reliable_timer_h_fires() -> None:
    """§17.2.1: Timer H = 64·T1 on every transport."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=True, timers=Timers(t1=0.25))
    tx.start(0.0)
    tx.send_response(respond(invite, 480), 0.0)
    assert tx.tick(15.9).events == []
    assert tx.tick(16.0).events == [FinalResponseTimedOut()]


# -------------------------------------------------- INVITE: 2xx, Accepted, Timer L (RFC 6026)


def test_invite_2xx_retransmitted_until_acknowledged_then_timer_l() -> None:
    """§13.3.1.4: the 2xx is retransmitted at T1, 2·T1 … T2 on unreliable transports until
    the ACK arrives; RFC 6026 §7.1: Timer L (64·T1) ends the Accepted state."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    ok = respond(invite, 200)
    out = tx.send_response(ok, 1.0)
    assert tx.state is ServerState.ACCEPTED and kinds(out) == ["response"]
    assert out.deadline == pytest.approx(1.5)
    sent = [(t, o) for t, o in [(1.5, tx.tick(1.5)), (2.5, tx.tick(2.5)), (4.5, tx.tick(4.5))]]
    assert times_of(sent, "retransmission") == [1.5, 2.5, 4.5]
    assert all(o.transmit[0].message is ok for _, o in sent)
    assert tx.receive_request(sip_request(), 5.0).transmit == []  # INVITE absorbed in Accepted
    ack = sip_request("ACK", branch="z9hG4bKnewack", to_tag="a6c85cf", cseq_method="ACK")
    tx.acknowledged(ack)
    assert tx.state is ServerState.ACCEPTED and tx.ack is ack  # the ACK, not the INVITE
    outputs = run_until(tx, 0.0, 1000.0)
    assert times_of(outputs, "retransmission") == []  # the ACK stopped the 2xx retransmissions
    assert outputs[-1][0] == pytest.approx(33.0)  # L = 1.0 + 64·T1
    assert outputs[-1][1].events == []  # acknowledged: no AckTimedOut
    assert tx.terminated


def test_invite_2xx_without_ack_reports_timer_l() -> None:
    """§13.3.1.4: a 2xx never acknowledged is retransmitted (capped at T2) until Timer L,
    which reports the missing ACK (the TU should send BYE)."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.send_response(respond(invite, 200), 0.0)
    outputs = run_until(tx, 0.0, 1000.0)
    assert times_of(outputs, "retransmission") == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert outputs[-1][0] == pytest.approx(32.0)
    assert outputs[-1][1].events == [AckTimedOut()]
    assert outputs[-1][1].events[0].timer == "L"
    assert tx.terminated


def test_invite_acknowledged_without_the_ack_still_silences_timer_l() -> None:
    """§13.3.1.4: the TU may only know that the ACK came; Timer L then reports nothing.
    RFC 2543 ACK for the 2xx matched by the transaction itself (§17.2.3) does the same."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.send_response(respond(invite, 200), 0.0)
    tx.acknowledged()
    assert tx.ack is None
    assert [o.events for _, o in run_until(tx, 0.0, 100.0)] == [[]]
    other = InviteServerTransaction(invite, reliable=False)
    other.start(0.0)
    other.send_response(respond(invite, 200), 0.0)
    ack = sip_request("ACK", to_tag="a6c85cf", cseq_method="ACK")
    assert other.receive_request(ack, 0.1).transmit == []
    assert other.ack is ack
    assert [o.events for _, o in run_until(other, 0.0, 100.0)] == [[]]


def test_invite_2xx_reliable_no_retransmission_timer_l_still_runs() -> None:
    """§13.3.1.4: the 2xx is retransmitted on unreliable transports only; RFC 6026 §8.7:
    Timer L is 64·T1 whatever the transport."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=True)
    tx.start(0.0)
    out = tx.send_response(respond(invite, 200), 0.0)
    assert out.deadline == pytest.approx(32.0)
    assert tx.tick(31.0).transmit == []
    assert tx.tick(32.0).events == [AckTimedOut()]


def test_invite_cannot_send_after_final_and_checks_cseq() -> None:
    """§17.2.1: one final response per transaction; §8.2.6.2: the response CSeq is the request's."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    with pytest.raises(ValueError):
        tx.send_response(respond(sip_request(cseq=2), 180), 0.0)
    tx.send_response(respond(invite, 486), 0.0)
    with pytest.raises(ValueError):
        tx.send_response(respond(invite, 200), 0.1)
    with pytest.raises(ValueError):
        InviteServerTransaction(sip_request("OPTIONS"), reliable=False)


def test_invite_transport_error_terminates() -> None:
    """§17.2.4: a transport failure to send a response terminates the transaction."""
    invite = sip_request()
    tx = InviteServerTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.send_response(respond(invite, 500), 0.0)
    out = tx.transport_error("ICMP port unreachable", 0.6)
    assert out.events == [ServerTransportFailed("ICMP port unreachable")]
    assert tx.terminated and tx.tick(100.0).transmit == []


# --------------------------------------------------------------------- non-INVITE (§17.2.2)


def test_non_invite_trying_absorbs_retransmissions() -> None:
    """§17.2.2: in Trying, retransmissions of the request are discarded."""
    tx = NonInviteServerTransaction(sip_request("OPTIONS"), reliable=False)
    out = tx.start(0.0)
    assert tx.state is ServerState.TRYING and out.deadline is None
    assert tx.receive_request(sip_request("OPTIONS"), 0.5).transmit == []
    assert tx.tick(100.0).transmit == []


def test_non_invite_proceeding_and_completed_resend_last_response_timer_j() -> None:
    """§17.2.2: Proceeding resends the last provisional, Completed the final, for every
    retransmitted request; Timer J = 64·T1 on unreliable transports ends Completed."""
    request = sip_request("BYE", to_tag="a6c85cf")
    tx = NonInviteServerTransaction(request, reliable=False)
    tx.start(0.0)
    provisional = respond(request, 100)
    tx.send_response(provisional, 0.1)
    assert tx.state is ServerState.PROCEEDING
    out = tx.receive_request(sip_request("BYE", to_tag="a6c85cf"), 0.6)
    assert kinds(out) == ["retransmission"] and out.transmit[0].message is provisional
    final = respond(request, 200)
    out = tx.send_response(final, 2.0)
    assert tx.state is ServerState.COMPLETED and kinds(out) == ["response"]
    assert out.deadline == pytest.approx(34.0)  # J = 64·T1
    out = tx.receive_request(sip_request("BYE", to_tag="a6c85cf"), 3.0)
    assert kinds(out) == ["retransmission"] and out.transmit[0].message is final
    assert tx.tick(33.99).events == [] and not tx.terminated
    out = tx.tick(34.0)
    assert out.events == [] and out.transmit == [] and tx.terminated
    with pytest.raises(ValueError):
        tx.send_response(respond(request, 500), 35.0)


def test_non_invite_reliable_timer_j_zero() -> None:
    """§17.2.2: Timer J is zero on reliable transports: the final response terminates."""
    request = sip_request("REGISTER")
    tx = NonInviteServerTransaction(request, reliable=True)
    tx.start(0.0)
    out = tx.send_response(respond(request, 200), 0.0)
    assert tx.terminated and out.deadline is None


def test_non_invite_custom_t1_sets_timer_j() -> None:
    """Table 4: J = 64·T1 for unreliable transports."""
    request = sip_request("MESSAGE")
    tx = NonInviteServerTransaction(request, reliable=False, timers=Timers(t1=0.1, t2=0.4))
    tx.start(0.0)
    assert tx.send_response(respond(request, 202), 1.0).deadline == pytest.approx(7.4)


def test_new_server_transaction_picks_kind() -> None:
    """§17.2: INVITE → INVITE server transaction; others → non-INVITE; ACK never creates one."""
    assert isinstance(new_server_transaction(sip_request(), reliable=False), InviteServerTransaction)
    assert isinstance(new_server_transaction(sip_request("CANCEL"), reliable=False), NonInviteServerTransaction)
    with pytest.raises(ValueError):
        new_server_transaction(sip_request("ACK"), reliable=False)
