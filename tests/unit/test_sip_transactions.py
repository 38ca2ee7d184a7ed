"""The transaction layer (RFC 3261 §17) with fake time and no sockets: matching of responses
to client transactions (§17.1.3) and of requests to server transactions (§17.2.3, with the
RFC 2543 fallback), ACK/CANCEL pairing (§9.2, §13.3.1.4, §17.2.1), RFC 6026 stray 2xx,
the stateless 400, the transport's Via rules (§18.2.1, §18.2.2, RFC 3581), failures, and
thousands of transactions in one layer."""

from __future__ import annotations

import random

import pytest

from skinnysip.sip.message import Request, Response, parse_message
from skinnysip.sip.request import build_response, new_branch
from skinnysip.sip.server_transaction import InviteServerTransaction, ServerState
from skinnysip.sip.transaction import Flow, InviteClientTransaction, State
from skinnysip.sip.transactions import (
    AckReceived,
    CancelReceived,
    Discarded,
    LayerOutput,
    RequestReceived,
    ResponseReceived,
    SuccessRetransmission,
    TimedOut,
    TransactionLayer,
    TransportFailed,
    UnmatchedResponse,
    response_flow,
    stamp_received,
)

PEER = ("192.0.2.10", 5060)
UDP = Flow("udp", PEER)
NATTED = Flow("udp", ("198.51.100.7", 40123))  # the source a NAT shows us


def wire(method: str, *, branch: str | None = "z9hG4bKnashds8", host: str = "192.0.2.10",
         port: int | None = 5060, call_id: str = "3848276298220188511@atlanta.example.com",
         cseq: int = 1, cseq_method: str | None = None, from_tag: str = "9fxced76sl",
         to_tag: str | None = None, uri: str = "sip:bob@biloxi.example.com",
         transport: str = "UDP", omit: tuple[str, ...] = (), source: tuple[str, int] | None = None) -> Request:
    """A request as the server transport hands it up: text parsed, then stamped (§18.2.1)."""
    sent_by = host if port is None else f"{host}:{port}"
    fields = {
        "Via": f"SIP/2.0/{transport} {sent_by};rport" + (f";branch={branch}" if branch else ""),
        "Max-Forwards": "70",
        "From": f"Alice <sip:alice@atlanta.example.com>;tag={from_tag}",
        "To": "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID": call_id,
        "CSeq": f"{cseq} {cseq_method or method}",
        "Contact": f"<sip:alice@{sent_by};transport={transport.lower()}>",
    }
    text = f"{method} {uri} SIP/2.0\r\n"
    text += "".join(f"{name}: {value}\r\n" for name, value in fields.items() if name not in omit)
    message = parse_message((text + "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    stamp_received(message, source or (host, port or 5060))
    return message


def answer(request: Request, code: int, to_tag: str | None = "314159") -> Response:
    """The far end's response to one of our requests, through the wire format."""
    response = parse_message(build_response(request, code, to_tag=to_tag).to_bytes())
    assert isinstance(response, Response)
    return response


def only(out: LayerOutput, kind: type) -> list:
    return [e for e in out.events if isinstance(e, kind)]


def drain(layer: TransactionLayer, start: float = 0.0, limit: int = 1_000_000) -> list[tuple[float, LayerOutput]]:
    """Tick at every deadline until no timer runs."""
    outputs = []
    for _ in range(limit):
        deadline = layer.next_deadline()
        if deadline is None:
            break
        outputs.append((deadline, layer.tick(max(deadline, start))))
    return outputs


def new_server(layer: TransactionLayer, request: Request, flow: Flow = UDP, now: float = 0.0):
    out = layer.receive(request, flow, now)
    (event,) = out.events
    assert isinstance(event, RequestReceived)
    return event.transaction, out


# ------------------------------------------------------------------- server side (§17.2.3)


def test_new_request_creates_server_transaction_and_retransmissions_are_absorbed() -> None:
    """§17.2.3: a retransmitted INVITE (same branch, sent-by, method) matches its
    transaction: nothing goes up; the 100 comes after 200 ms (§17.2.1); a later
    retransmission gets the last provisional response again."""
    layer = TransactionLayer()
    tx, out = new_server(layer, wire("INVITE"))
    assert isinstance(tx, InviteServerTransaction) and len(layer) == 1
    assert tx.flow == Flow("udp", PEER)
    assert out.deadline == pytest.approx(0.2)
    again = layer.receive(wire("INVITE"), UDP, 0.1)
    assert again.events == [] and again.send == []
    assert layer.retransmissions_received == 1
    out = layer.tick(0.2)
    assert [s.message.status_code for s in out.send] == [100]
    assert out.send[0].transaction is tx and out.send[0].flow == tx.flow
    out = layer.send_response(tx, build_response(tx.request, 180, to_tag="bobs"), 0.3)
    assert [(s.kind, s.message.status_code) for s in out.send] == [("response", 180)]
    out = layer.receive(wire("INVITE"), UDP, 0.5)
    assert [(s.kind, s.message.status_code) for s in out.send] == [("retransmission", 180)]


def test_non_invite_retransmissions_trying_then_completed_then_timer_j() -> None:
    """§17.2.2: absorbed in Trying, answered with the final response in Completed until Timer
    J (64·T1) fires; over UDP the layer keeps Completed by key and final response alone (the
    transaction ends with its final response: ``ended``), then the same request is new."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("OPTIONS"))
    assert layer.receive(wire("OPTIONS"), UDP, 0.5).send == []
    ok = build_response(tx.request, 200, to_tag="x")
    out = layer.send_response(tx, ok, 1.0)
    assert [(s.kind, s.message) for s in out.send] == [("response", ok)] and out.ended == [tx]
    assert tx.terminated and len(layer) == 0 and tx.last_response is ok
    for now in (2.0, 32.9):
        out = layer.receive(wire("OPTIONS"), UDP, now)
        assert [(s.kind, s.message, s.flow) for s in out.send] == [("retransmission", ok, tx.flow)]
        assert out.events == []
    assert layer.retransmissions_received == 3
    layer.tick(33.0)  # Timer J: the same request is new again
    new_server(layer, wire("OPTIONS"), now=33.1)


def test_rfc2543_non_invite_keeps_its_transaction_through_completed() -> None:
    """A request without the z9hG4bK cookie is matched with its To tag (§17.2.3), so its
    Completed state stays a whole transaction, ended by Timer J."""
    layer = TransactionLayer()
    old = wire("OPTIONS", branch="oldstyle1")
    tx, _ = new_server(layer, old)
    ok = build_response(tx.request, 200, to_tag="x")
    assert layer.send_response(tx, ok, 1.0).ended == [] and len(layer) == 1
    out = layer.receive(wire("OPTIONS", branch="oldstyle1"), UDP, 2.0)
    assert [(s.kind, s.message) for s in out.send] == [("retransmission", ok)]
    assert layer.next_deadline() == pytest.approx(33.0)
    assert layer.tick(33.0).ended == [tx] and len(layer) == 0


def test_reliable_server_transactions_have_no_retransmissions_and_zero_j() -> None:
    """§17.2.1, §17.2.2: over TCP no Timer G or 2xx retransmission; J and I are zero."""
    layer = TransactionLayer(trying_delay=None)
    tcp = Flow("tcp", PEER, connection=3)
    tx, _ = new_server(layer, wire("INVITE", transport="TCP"), tcp)
    assert tx.flow == tcp  # responses go back on the same connection (§18.2.2)
    layer.send_response(tx, build_response(tx.request, 486, to_tag="t"), 0.0)
    assert layer.next_deadline() == pytest.approx(32.0)  # H only
    assert layer.tick(31.0).send == []
    layer.receive(wire("ACK", transport="TCP", to_tag="t"), tcp, 1.0)
    assert len(layer) == 0  # I = 0
    tx2, _ = new_server(layer, wire("BYE", transport="TCP", to_tag="t", cseq=2), tcp)
    layer.send_response(tx2, build_response(tx2.request, 200), 2.0)
    assert len(layer) == 0 and layer.next_deadline() is None  # J = 0


def test_ack_for_non_2xx_with_same_branch_matches_invite_transaction() -> None:
    """§17.2.3: the ACK for a non-2xx carries the INVITE's branch and matches its server
    transaction (method ACK matches INVITE): Confirmed, Timer G stops, Timer I runs; the
    TU sees no event (§17.2.1: the ACK is not passed up)."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE"))
    out = layer.send_response(tx, build_response(tx.request, 486, to_tag="busy1"), 0.0)
    assert out.deadline == pytest.approx(0.5)
    assert [s.kind for s in layer.tick(0.5).send] == ["retransmission"]
    out = layer.receive(wire("ACK", to_tag="busy1"), UDP, 0.7)
    assert out.events == [] and out.send == []
    assert tx.state is ServerState.CONFIRMED
    assert out.deadline == pytest.approx(5.7)  # Timer I = T4
    assert layer.tick(5.6).send == []
    layer.tick(5.7)
    assert len(layer) == 0


def test_timer_h_reported_as_timed_out() -> None:
    """§17.2.1: no ACK within 64·T1: Timer H, the TU is told, the transaction is gone."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE"))
    layer.send_response(tx, build_response(tx.request, 404, to_tag="nf"), 0.0)
    outputs = drain(layer)
    assert sum(len(o.send) for _, o in outputs) == 10  # G: 0.5 1.5 3.5 7.5 11.5 … 31.5
    assert outputs[-1][0] == pytest.approx(32.0)
    assert outputs[-1][1].events == [TimedOut(tx, "H")]
    assert len(layer) == 0


def test_ack_for_2xx_with_new_branch_is_ack_received_and_stops_2xx_retransmissions() -> None:
    """§13.3.1.4 / §17.1.1.3: the ACK for a 2xx has a new branch (its own "transaction");
    the layer pairs it with the Accepted INVITE server transaction (Call-ID, CSeq number,
    From tag), hands it up as AckReceived and stops the 2xx retransmissions; Timer L
    (RFC 6026 §7.1) then ends the transaction without a timeout."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE", cseq=7))
    ok = build_response(tx.request, 200, to_tag="ok1")
    layer.send_response(tx, ok, 1.0)
    assert tx.state is ServerState.ACCEPTED
    out = layer.tick(1.5)
    assert [(s.kind, s.message) for s in out.send] == [("retransmission", ok)]
    ack = wire("ACK", branch=new_branch(), cseq=7, to_tag="ok1", uri="sip:bob@192.0.2.4")
    out = layer.receive(ack, UDP, 2.0)
    assert out.events == [AckReceived(ack, UDP, tx)]
    assert tx.ack is ack
    outputs = drain(layer)
    assert all(o.send == [] for _, o in outputs)  # no more 2xx
    assert outputs[-1][0] == pytest.approx(33.0)  # L = 1.0 + 64·T1
    assert all(o.events == [] for _, o in outputs)
    assert len(layer) == 0
    # a late ACK (after L) still goes up, with no transaction
    late = layer.receive(ack, UDP, 40.0)
    assert late.events == [AckReceived(ack, UDP, None)]


def test_2xx_never_acknowledged_times_out_with_timer_l() -> None:
    """§13.3.1.4: retransmissions at T1 … T2 for 64·T1, then the TU is told (it sends BYE)."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE"))
    layer.send_response(tx, build_response(tx.request, 200, to_tag="ok"), 0.0)
    outputs = drain(layer)
    sent = [round(t, 6) for t, o in outputs for _ in o.send]
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert outputs[-1][1].events == [TimedOut(tx, "L")]
    assert len(layer) == 0


def test_ack_for_2xx_of_another_cseq_or_call_is_not_paired() -> None:
    """§13.3.1.4: the ACK acknowledges the 2xx of the INVITE with its CSeq number in its
    dialog; an ACK of another CSeq or Call-ID does not stop the retransmissions."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE", cseq=7))
    layer.send_response(tx, build_response(tx.request, 200, to_tag="ok1"), 0.0)
    for other in (wire("ACK", branch=new_branch(), cseq=8, to_tag="ok1"),
                  wire("ACK", branch=new_branch(), cseq=7, to_tag="ok1", call_id="other@x")):
        out = layer.receive(other, UDP, 0.1)
        assert out.events == [AckReceived(other, UDP, None)]
    assert [s.kind for s in layer.tick(0.5).send] == ["retransmission"]


def test_cancel_is_paired_with_its_invite() -> None:
    """§9.2: a CANCEL is its own non-INVITE server transaction, matched to the INVITE it
    cancels by the §17.2.3 rule (same branch and sent-by, method INVITE); with two pending
    INVITEs, the right one is named."""
    layer = TransactionLayer()
    first, _ = new_server(layer, wire("INVITE", branch="z9hG4bKfirst", call_id="c1"))
    second, _ = new_server(layer, wire("INVITE", branch="z9hG4bKsecond", call_id="c2"))
    cancel = wire("CANCEL", branch="z9hG4bKsecond", call_id="c2")
    out = layer.receive(cancel, UDP, 0.1)
    (event,) = out.events
    assert isinstance(event, CancelReceived)
    assert event.invite is second and event.transaction is not second
    assert event.transaction.method == "CANCEL" and len(layer) == 3
    layer.send_response(event.transaction, build_response(cancel, 200, to_tag="t2"), 0.1)
    layer.send_response(second, build_response(second.request, 487, to_tag="t2"), 0.1)
    # a retransmitted CANCEL is answered by its own transaction, the INVITE is untouched
    out = layer.receive(wire("CANCEL", branch="z9hG4bKsecond", call_id="c2"), UDP, 0.3)
    assert [(s.message.status_code, s.message.cseq[1]) for s in out.send] == [(200, "CANCEL")]
    assert first.state is ServerState.PROCEEDING


def test_cancel_for_nothing_is_a_plain_request() -> None:
    """§9.2: a CANCEL matching no INVITE goes up as a request (the TU answers 481)."""
    layer = TransactionLayer()
    out = layer.receive(wire("CANCEL", branch="z9hG4bKnobody"), UDP, 0.0)
    (event,) = out.events
    assert isinstance(event, RequestReceived) and event.transaction.method == "CANCEL"


def test_same_branch_different_sent_by_are_distinct_transactions() -> None:
    """§17.2.3: the sent-by is part of the match (two UACs may pick the same branch)."""
    layer = TransactionLayer()
    a, _ = new_server(layer, wire("OPTIONS", host="192.0.2.10"))
    b, _ = new_server(layer, wire("OPTIONS", host="192.0.2.11"), Flow("udp", ("192.0.2.11", 5060)))
    c, _ = new_server(layer, wire("OPTIONS", host="192.0.2.10", port=5070), Flow("udp", ("192.0.2.10", 5070)))
    assert len({id(a), id(b), id(c)}) == 3 and len(layer) == 3
    assert (a.flow.remote, b.flow.remote, c.flow.remote) == (PEER, ("192.0.2.11", 5060), ("192.0.2.10", 5070))
    out = layer.receive(wire("OPTIONS", host="192.0.2.11"), Flow("udp", ("192.0.2.11", 5060)), 0.1)
    assert out.events == [] and layer.retransmissions_received == 1


def test_same_branch_different_method_are_distinct_transactions() -> None:
    """§17.2.3: the method is part of the match (ACK excepted, which matches INVITE)."""
    layer = TransactionLayer()
    invite, _ = new_server(layer, wire("INVITE", branch="z9hG4bKsame"))
    options, _ = new_server(layer, wire("OPTIONS", branch="z9hG4bKsame", cseq=2))
    assert invite is not options and len(layer) == 2


def test_rfc2543_requests_match_by_uri_tags_call_id_cseq_and_via() -> None:
    """§17.2.3 (RFC 2543 fallback, no z9hG4bK branch): an INVITE matches when the
    Request-URI, From tag, Call-ID, CSeq number and top Via equal the original's; the ACK
    also needs the To tag of the response the transaction sent; a CANCEL pairs the same way."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE", branch=None, cseq=5))
    assert layer.receive(wire("INVITE", branch=None, cseq=5), UDP, 0.1).events == []  # retransmission
    for different in (wire("INVITE", branch=None, cseq=6),
                      wire("INVITE", branch=None, cseq=5, from_tag="other"),
                      wire("INVITE", branch=None, cseq=5, uri="sip:carol@biloxi.example.com"),
                      wire("INVITE", branch=None, cseq=5, port=5062)):
        assert isinstance(layer.receive(different, UDP, 0.1).events[0], RequestReceived)
    out = layer.receive(wire("CANCEL", branch=None, cseq=5), UDP, 0.15)
    assert isinstance(out.events[0], CancelReceived) and out.events[0].invite is tx
    layer.send_response(tx, build_response(tx.request, 486, to_tag="b1"), 0.2)
    wrong = wire("ACK", branch=None, cseq=5, to_tag="zz")
    assert layer.receive(wrong, UDP, 0.3).events == [AckReceived(wrong, UDP, None)]
    assert tx.state is ServerState.COMPLETED
    out = layer.receive(wire("ACK", branch=None, cseq=5, to_tag="b1"), UDP, 0.4)
    assert out.events == [] and tx.state is ServerState.CONFIRMED


def test_rfc2543_ack_for_2xx_matches_the_transaction() -> None:
    """§17.2.3 / §13.3.1.4: an RFC 2543 peer's ACK for a 2xx reuses the INVITE's Via;
    matched with the To tag of our 2xx, it stops the retransmissions."""
    layer = TransactionLayer()
    tx, _ = new_server(layer, wire("INVITE", branch=None))
    layer.send_response(tx, build_response(tx.request, 200, to_tag="ok"), 0.0)
    ack = wire("ACK", branch=None, to_tag="ok")
    assert layer.receive(ack, UDP, 0.2).events == [AckReceived(ack, UDP, tx)]
    assert all(o.send == [] for _, o in drain(layer))


def test_request_lacking_mandatory_header_is_discarded_with_400() -> None:
    """§8.1.1 / §8.2: Call-ID, From, To and CSeq are mandatory; such a request is answered
    400 statelessly (to the §18.2.2 address) and no transaction is created. An ACK is
    never answered, and a request without Via cannot be."""
    layer = TransactionLayer()
    for missing in ("Call-ID", "From", "To", "CSeq"):
        request = wire("OPTIONS", omit=(missing,), source=("203.0.113.9", 6000))
        out = layer.receive(request, Flow("udp", ("203.0.113.9", 6000)), 0.0)
        (event,) = out.events
        assert isinstance(event, Discarded)
        (send,) = out.send
        assert send.message.status_code == 400 and send.transaction is None
        assert send.flow.remote == ("203.0.113.9", 6000)  # received + rport
        assert send.message.headers.values("Via") == request.headers.values("Via")
    out = layer.receive(wire("ACK", omit=("Call-ID",)), UDP, 0.0)
    assert isinstance(out.events[0], Discarded) and out.send == []
    out = layer.receive(wire("OPTIONS", omit=("Via",)), UDP, 0.0)
    assert isinstance(out.events[0], Discarded) and out.send == []
    assert len(layer) == 0


# ------------------------------------------------------------------- client side (§17.1.3)


def test_client_responses_match_by_branch_and_cseq_method() -> None:
    """§17.1.3: a response matches the client transaction whose branch and CSeq method it
    carries: the INVITE and its CANCEL share the branch and are told apart by method."""
    layer = TransactionLayer()
    invite = wire("INVITE", branch=new_branch())
    itx, out = layer.send_request(invite, UDP, 0.0)
    assert [s.kind for s in out.send] == ["request"] and isinstance(itx, InviteClientTransaction)
    layer.receive(answer(invite, 180), UDP, 0.1)
    from skinnysip.sip.request import build_cancel

    cancel = build_cancel(invite)
    ctx, _ = layer.send_request(cancel, UDP, 0.2)
    out = layer.receive(answer(cancel, 200), UDP, 0.3)
    assert [(type(e), e.transaction) for e in out.events] == [(ResponseReceived, ctx)]
    out = layer.receive(answer(invite, 487), UDP, 0.4)
    assert [(type(e), e.transaction) for e in out.events] == [(ResponseReceived, itx)]
    assert [s.kind for s in out.send] == ["ack"] and out.send[0].message.method == "ACK"
    assert itx.state is State.COMPLETED
    stray = answer(wire("INVITE", branch=new_branch()), 486)
    out = layer.receive(stray, UDP, 0.5)
    assert out.events == [UnmatchedResponse(stray, UDP)] and layer.unmatched_responses == 1
    with pytest.raises(ValueError):
        layer.send_request(wire("INVITE", branch=invite.top_via.branch), UDP, 0.6)


def test_2xx_after_timer_m_is_success_retransmission() -> None:
    """RFC 6026 §7.2: in Accepted, 2xx retransmissions reach the TU; after Timer M (64·T1)
    a 2xx matching no transaction goes up as SuccessRetransmission (§13.2.2.4: re-ACK)."""
    layer = TransactionLayer()
    invite = wire("INVITE", branch=new_branch())
    itx, _ = layer.send_request(invite, UDP, 0.0)
    ok = answer(invite, 200)
    assert isinstance(layer.receive(ok, UDP, 1.0).events[0], ResponseReceived)
    assert isinstance(layer.receive(ok, UDP, 1.5).events[0], ResponseReceived)
    assert layer.next_deadline() == pytest.approx(33.0)  # M
    layer.tick(33.0)
    assert len(layer) == 0
    assert layer.receive(ok, UDP, 34.0).events == [SuccessRetransmission(ok, UDP)]
    busy = answer(invite, 486)
    assert layer.receive(busy, UDP, 34.0).events == [UnmatchedResponse(busy, UDP)]


def test_ended_names_transactions_terminated_without_an_event() -> None:
    """``LayerOutput.ended`` names a transaction the driver may forget: a non-INVITE client
    transaction with its final response (over UDP its Completed state, Timer K = T4, is kept
    by the layer by key: a retransmitted final response is absorbed until T4 has passed,
    §17.1.2.2), and a server transaction with its final response (its Completed state is
    kept by key as well, §17.2.2)."""
    layer = TransactionLayer()
    register = wire("REGISTER", branch=new_branch())
    tx, out = layer.send_request(register, UDP, 0.0)
    assert out.ended == []
    ok = answer(register, 200)
    out = layer.receive(ok, UDP, 0.1)
    assert isinstance(out.events[0], ResponseReceived) and out.ended == [tx] and len(layer) == 0
    assert tx is not None and tx.terminated and tx.request is register and tx.final_response is ok
    for now in (0.2, 5.0):  # Completed: absorbed, no event
        assert layer.receive(ok, UDP, now).events == [] and layer.unmatched_responses == 0
    assert layer.tick(5.1).events == []
    assert layer.receive(ok, UDP, 5.2).events == [UnmatchedResponse(ok, UDP)]  # Timer K has fired
    again, _ = layer.send_request(register, UDP, 6.0)  # the same branch again: a transaction of its own
    assert again is not None and isinstance(layer.receive(ok, UDP, 6.1).events[0], ResponseReceived)
    stx, _ = new_server(layer, wire("OPTIONS", branch=new_branch()), now=6.0)
    assert layer.send_response(stx, build_response(stx.request, 200, to_tag="x"), 6.0).ended == [stx]
    assert [t for _, o in drain(layer) for t in o.ended] == []
    tcp = Flow("tcp", PEER, connection=7)
    options = wire("OPTIONS", branch=new_branch(), transport="TCP")
    ttx, _ = layer.send_request(options, tcp, 40.0)
    assert layer.receive(answer(options, 200), tcp, 40.1).ended == [ttx]


def test_ack_is_sent_without_transaction() -> None:
    """§17.1: the ACK for a 2xx is not a transaction; it is simply sent."""
    layer = TransactionLayer()
    ack = wire("ACK", branch=new_branch(), to_tag="x")
    tx, out = layer.send_request(ack, UDP, 0.0)
    assert tx is None and [(s.kind, s.message) for s in out.send] == [("ack", ack)]
    assert len(layer) == 0


# ------------------------------------------------------------------------------ failures


def test_connection_lost_fails_the_client_transactions_on_the_connection() -> None:
    """§17.1.4: a closed TCP connection fails the client transactions using it (their
    responses would have come on it), and only them. Server transactions live on (§17.2.4):
    a response is sent over a new connection (§18.2.2), and only a failed send fails them."""
    layer = TransactionLayer()
    conn7, conn8 = Flow("tcp", PEER, connection=7), Flow("tcp", PEER, connection=8)
    ctx, _ = layer.send_request(wire("OPTIONS", branch=new_branch(), transport="TCP"), conn7, 0.0)
    ctx8, _ = layer.send_request(wire("OPTIONS", branch=new_branch(), transport="TCP"), conn8, 0.0)
    stx, _ = new_server(layer, wire("INVITE", transport="TCP"), conn7)
    out = layer.connection_lost(conn7, "connection reset", 1.0)
    assert out.events == [TransportFailed(ctx, "connection reset")]
    assert not stx.terminated and not ctx8.terminated and len(layer) == 2
    out = layer.transport_error(stx, "no new connection", 1.5)
    assert out.events == [TransportFailed(stx, "no new connection")] and len(layer) == 1


def test_icmp_error_fails_client_transactions_to_that_destination() -> None:
    """§18.4: an ICMP error for a UDP destination fails the client transactions sending
    there; server transactions (and other destinations) are left alone."""
    layer = TransactionLayer()
    ctx, _ = layer.send_request(wire("OPTIONS", branch=new_branch()), UDP, 0.0)
    ctx2, _ = layer.send_request(wire("OPTIONS", branch=new_branch()), Flow("udp", ("192.0.2.99", 5060)), 0.0)
    stx, _ = new_server(layer, wire("INVITE"))
    out = layer.connection_lost(Flow("udp", PEER), "port unreachable", 0.2)
    assert out.events == [TransportFailed(ctx, "port unreachable")]
    assert not ctx2.terminated and not stx.terminated and len(layer) == 2
    out = layer.transport_error(stx, "no route", 0.3)
    assert out.events == [TransportFailed(stx, "no route")] and len(layer) == 1


# ------------------------------------------------------------------ transport rules (§18.2)


def test_stamp_received_adds_received_and_rport() -> None:
    """§18.2.1: received= when the sent-by host is not the source address; RFC 3581 §4:
    with rport, rport= the source port and received= always."""
    def request(via: str) -> Request:
        message = parse_message(
            (f"OPTIONS sip:x@example.com SIP/2.0\r\nVia: {via}, SIP/2.0/UDP proxy.example.com\r\n"
             "From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
        assert isinstance(message, Request)
        return message

    r = request("SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK1")
    stamp_received(r, ("192.0.2.1", 5060))
    assert r.top_via.received == "192.0.2.1"
    assert [v.host for v in r.vias] == ["pc.example.com", "proxy.example.com"]  # comma list kept
    r = request("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK1")
    stamp_received(r, ("198.51.100.7", 40123))
    assert r.top_via.params["rport"] == "40123" and r.top_via.received == "198.51.100.7"
    r = request("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1")
    before = r.headers.get("Via")
    stamp_received(r, ("192.0.2.1", 5060))
    assert r.headers.get("Via") == before  # same host, no rport: untouched


def test_response_flow_follows_18_2_2() -> None:
    """§18.2.2 / RFC 3581 §4: reliable → same connection; maddr; received + rport;
    received + sent-by port; sent-by host and port (default 5060)."""
    def flow_for(via: str, flow: Flow = NATTED) -> Flow:
        request = parse_message((f"BYE sip:x@example.com SIP/2.0\r\nVia: {via}\r\n\r\n").encode())
        assert isinstance(request, Request)
        return response_flow(request, flow)

    tcp = Flow("tcp", ("198.51.100.7", 40123), connection=9)
    assert flow_for("SIP/2.0/TCP pc.example.com;branch=z9hG4bK1", tcp) == tcp
    assert flow_for("SIP/2.0/UDP pc.example.com:5062;maddr=239.1.1.1;branch=z9hG4bK1").remote == ("239.1.1.1", 5062)
    assert flow_for("SIP/2.0/UDP pc.example.com;rport=40123;received=198.51.100.7").remote == ("198.51.100.7", 40123)
    assert flow_for("SIP/2.0/UDP pc.example.com:5062;received=198.51.100.7").remote == ("198.51.100.7", 5062)
    assert flow_for("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1").remote == ("192.0.2.1", 5060)


# ------------------------------------------------------------------------------ scale


def test_thousand_client_and_thousand_server_transactions_in_one_layer() -> None:
    """§17.1.3 / §17.2.3 at scale: 1000 client and 1000 server transactions run at once,
    every response and request reaches its own transaction whatever the order, and every
    transaction is forgotten when its timers have run (D/K/M, G/H/I/J/L)."""
    rng = random.Random(3261)
    layer = TransactionLayer()
    clients = []
    for i in range(1000):
        method = "INVITE" if i % 2 else "OPTIONS"
        request = wire(method, branch=f"z9hG4bKc{i}", call_id=f"client-{i}", cseq=i + 1)
        tx, _ = layer.send_request(request, UDP, 0.0)
        clients.append((tx, request))
    servers = []
    for i in range(1000):
        method = "INVITE" if i % 2 else "REGISTER"
        request = wire(method, branch=f"z9hG4bKs{i}", call_id=f"server-{i}", cseq=i + 1)
        tx, _ = new_server(layer, request, now=0.01)
        servers.append((tx, request))
    assert len(layer) == 2000
    for index in rng.sample(range(1000), 1000):
        tx, request = clients[index]
        code = 200 if index % 4 < 2 else 486
        out = layer.receive(answer(request, code, to_tag=f"t{index}"), UDP, 0.1)
        assert [e.transaction for e in out.events] == [tx]
        assert out.events[0].response.call_id == f"client-{index}"
    for index in rng.sample(range(1000), 1000):
        tx, request = servers[index]
        # a retransmission reaches its own transaction before the answer …
        assert layer.receive(wire(request.method, branch=f"z9hG4bKs{index}", call_id=f"server-{index}",
                                  cseq=index + 1), UDP, 0.1).events == []
        out = layer.send_response(tx, build_response(request, 200 if index % 4 < 2 else 603,
                                                     to_tag=f"u{index}"), 0.1)
        assert [s.transaction for s in out.send] == [tx]
        assert out.send[0].message.call_id == f"server-{index}"
    for index in rng.sample(range(1000), 1000):
        tx, request = servers[index]
        if request.method != "INVITE":
            continue
        ack_branch = f"z9hG4bKs{index}" if index % 4 >= 2 else new_branch()  # non-2xx: same branch
        ack = wire("ACK", branch=ack_branch, call_id=f"server-{index}", cseq=index + 1, to_tag=f"u{index}")
        out = layer.receive(ack, UDP, 0.2)
        if index % 4 < 2:
            assert out.events == [AckReceived(ack, UDP, tx)]
        else:
            assert out.events == [] and tx.state is ServerState.CONFIRMED
    outputs = drain(layer)
    assert len(layer) == 0 and layer.next_deadline() is None
    timeouts = [e for _, o in outputs for e in o.events if isinstance(e, TimedOut)]
    assert timeouts == []  # every final was ACKed, every client got its answer
    assert outputs[-1][0] < 40.0


def test_completed_states_kept_by_key_are_bounded() -> None:
    """At most ``limit`` Completed states are kept by key (MAX_ABSORBING, MAX_ANSWERED): the
    oldest goes early, so its late retransmission is unmatched, the newer ones are absorbed."""
    layer = TransactionLayer()
    layer._absorbing.limit = 2
    oks = []
    for i in range(3):
        request = wire("REGISTER", branch=new_branch())
        layer.send_request(request, UDP, float(i))
        oks.append(answer(request, 200))
        layer.receive(oks[-1], UDP, i + 0.1)
    assert layer.receive(oks[0], UDP, 3.0).events == [UnmatchedResponse(oks[0], UDP)]
    assert [layer.receive(ok, UDP, 3.0).events for ok in oks[1:]] == [[], []]
    layer._answered.limit = 1
    answered = []
    for i, branch in enumerate(("z9hG4bKfirst", "z9hG4bKsecond")):
        stx, _ = new_server(layer, wire("OPTIONS", branch=branch), now=4.0 + i)
        answered.append(build_response(stx.request, 200, to_tag="x"))
        layer.send_response(stx, answered[-1], 4.0 + i)
    again = layer.receive(wire("OPTIONS", branch="z9hG4bKsecond"), UDP, 6.0)
    assert [s.message for s in again.send] == [answered[1]]
    first = layer.receive(wire("OPTIONS", branch="z9hG4bKfirst"), UDP, 6.0)
    assert first.send == [] and isinstance(first.events[0], RequestReceived)  # a new transaction
