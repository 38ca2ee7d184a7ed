"""RFC 3261 §17.1 client transactions driven with fake time: timers A/B/D/E/F/K (and RFC 6026
M), state changes, ACK for non-2xx (§17.1.1.3), CANCEL (§9.1), and the UAC dialog (§12, §13)."""

from __future__ import annotations

import pytest

from skinnysip.sip.dialog import Dialog, new_call_id, new_tag
from skinnysip.sip.message import Headers, Request, Response, SIPParseError, parse_message
from skinnysip.sip.transaction import (
    InviteClientTransaction,
    NonInviteClientTransaction,
    ResponseReceived,
    State,
    Terminated,
    TimedOut,
    Timers,
    TransactionOutput,
    TransportFailed,
    build_ack,
    build_cancel,
    new_branch,
    new_transaction,
)

VIA = "SIP/2.0/UDP 127.0.0.1:40000;rport;branch="


def make_request(method: str = "OPTIONS", branch: str | None = None, cseq: int = 1) -> Request:
    h = Headers()
    h.add("Via", VIA + (branch or new_branch()))
    h.add("Route", "<sip:proxy.example.com;lr>")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@example.com>;tag=abc123")
    h.add("To", "<sip:bob@example.com>")
    h.add("Call-ID", "call-1")
    h.add("CSeq", f"{cseq} {method}")
    h.add("User-Agent", "skinnysip-test")
    body = b"v=0\r\n" if method == "INVITE" else b""
    if body:
        h.add("Content-Type", "application/sdp")
    return Request(method, "sip:bob@example.com", h, body)


def make_response(request: Request, code: int, reason: str = "X", to_tag: str | None = "srv1",
                  method: str | None = None, branch: str | None = None) -> Response:
    h = Headers()
    via = request.headers.values("Via")[0]
    if branch is not None:
        via = VIA + branch
    h.add("Via", via + ";received=127.0.0.1")
    h.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    h.add("To", to + (f";tag={to_tag}" if to_tag and code > 100 else ""))
    h.add("Call-ID", request.call_id or "")
    h.add("CSeq", f"{request.cseq[0]} {method or request.method}")
    if 200 <= code < 300 and request.method == "INVITE":
        h.add("Contact", "<sip:bob@192.0.2.7:5070;transport=udp>")
        h.add("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    # go through the wire format, as the driver does
    return parse_message(Response(code, reason, h).to_bytes())  # type: ignore[return-value]


def sends(out: TransactionOutput) -> list[str]:
    return [t.kind for t in out.transmit]


def run_until(tx, start: float, end: float) -> list[tuple[float, TransactionOutput]]:
    """Tick at each deadline until ``end`` (exclusive) or until nothing is scheduled."""
    outputs = []
    t = tx.deadline
    while t is not None and t < end:
        out = tx.tick(t)
        outputs.append((t, out))
        t = out.deadline
    return outputs


def times_of(outputs, kind: str) -> list[float]:
    return [round(t, 6) for t, out in outputs for item in out.transmit if item.kind == kind]


# --------------------------------------------------------------------- non-INVITE (§17.1.2)


def test_non_invite_udp_timer_e_schedule_and_timer_f() -> None:
    tx = NonInviteClientTransaction(make_request(), reliable=False)
    out = tx.start(100.0)
    assert sends(out) == ["request"]
    assert tx.state is State.TRYING
    assert out.deadline == pytest.approx(100.5)
    outputs = run_until(tx, 100.0, 1000.0)
    # E: 0.5, 1, 2, 4, 4, 4 … (capped at T2); F at 64·T1 = 32 s
    assert times_of(outputs, "retransmission") == [
        100.5, 101.5, 103.5, 107.5, 111.5, 115.5, 119.5, 123.5, 127.5, 131.5,
    ]
    last_t, last = outputs[-1]
    assert last_t == pytest.approx(132.0)
    assert last.events == [TimedOut("F"), Terminated()]
    assert tx.state is State.TERMINATED and tx.deadline is None
    assert tx.retransmissions == 10


def test_non_invite_provisional_moves_to_proceeding_and_e_becomes_t2() -> None:
    req = make_request("REGISTER")
    tx = NonInviteClientTransaction(req, reliable=False)
    tx.start(0.0)
    tx.tick(0.5)  # first retransmission, next E at 1.5
    out = tx.receive(make_response(req, 100, "Trying"), 0.7)
    assert tx.state is State.PROCEEDING
    assert out.events == [ResponseReceived(out.events[0].response)]
    assert not out.events[0].final
    outputs = run_until(tx, 0.7, 20.0)
    assert times_of(outputs, "retransmission")[:4] == [1.5, 5.5, 9.5, 13.5]


def test_non_invite_final_response_completed_then_timer_k() -> None:
    req = make_request()
    tx = NonInviteClientTransaction(req, reliable=False, timers=Timers(t1=0.1, t4=2.0))
    tx.start(0.0)
    out = tx.receive(make_response(req, 200, "OK"), 0.05)
    assert tx.state is State.COMPLETED
    assert [type(e) for e in out.events] == [ResponseReceived]
    assert out.events[0].final
    assert out.deadline == pytest.approx(2.05)  # K = T4
    again = tx.receive(make_response(req, 200, "OK"), 0.5)  # retransmitted final: absorbed
    assert again.events == [] and again.transmit == []
    assert tx.tick(1.0).events == []
    assert tx.tick(2.05).events == [Terminated()]
    assert tx.terminated


def test_non_invite_reliable_no_retransmission_k_zero() -> None:
    req = make_request()
    tx = NonInviteClientTransaction(req, reliable=True)
    out = tx.start(0.0)
    assert out.deadline == pytest.approx(32.0)  # only F runs
    assert tx.tick(10.0).transmit == []
    out = tx.receive(make_response(req, 404, "Not Found"), 11.0)
    assert [type(e) for e in out.events] == [ResponseReceived, Terminated]
    assert tx.terminated and out.deadline is None


def test_non_invite_timer_f_on_reliable() -> None:
    tx = NonInviteClientTransaction(make_request(), reliable=True, timers=Timers(t1=0.25))
    tx.start(0.0)
    out = tx.tick(16.0)
    assert out.events == [TimedOut("F"), Terminated()]
    assert out.transmit == []


def test_configurable_t1_scales_schedule() -> None:
    tx = NonInviteClientTransaction(make_request(), reliable=False, timers=Timers(t1=0.1, t2=0.3))
    tx.start(0.0)
    outputs = run_until(tx, 0.0, 100.0)
    assert times_of(outputs, "retransmission")[:5] == [0.1, 0.3, 0.6, 0.9, 1.2]
    assert outputs[-1][0] == pytest.approx(6.4)
    assert outputs[-1][1].events[0] == TimedOut("F")


def test_transport_error_terminates_with_event() -> None:
    tx = NonInviteClientTransaction(make_request(), reliable=False)
    tx.start(0.0)
    out = tx.transport_error("connection refused", 0.1)
    assert out.events == [TransportFailed("connection refused"), Terminated()]
    assert tx.terminated
    assert tx.tick(50.0).events == []  # nothing left to fire


def test_matching_rules_branch_and_method() -> None:
    req = make_request("REGISTER")
    tx = NonInviteClientTransaction(req, reliable=False)
    tx.start(0.0)
    assert tx.matches(make_response(req, 200))
    assert not tx.matches(make_response(req, 200, branch=new_branch()))
    assert not tx.matches(make_response(req, 200, method="OPTIONS"))
    # a non-matching response is ignored
    out = tx.receive(make_response(req, 200, branch=new_branch()), 0.1)
    assert out.events == [] and tx.state is State.TRYING


def test_request_without_branch_rejected() -> None:
    req = make_request()
    req.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5060")
    with pytest.raises(SIPParseError):
        NonInviteClientTransaction(req, reliable=False)
    with pytest.raises(ValueError):
        NonInviteClientTransaction(make_request("INVITE"), reliable=False)
    with pytest.raises(ValueError):
        Timers(t1=0)


# ------------------------------------------------------------------------ INVITE (§17.1.1)


def test_invite_udp_timer_a_doubles_and_timer_b() -> None:
    tx = InviteClientTransaction(make_request("INVITE"), reliable=False)
    assert sends(tx.start(0.0)) == ["request"]
    assert tx.state is State.CALLING
    outputs = run_until(tx, 0.0, 100.0)
    assert times_of(outputs, "retransmission") == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    t, last = outputs[-1]
    assert t == pytest.approx(32.0)
    assert last.events == [TimedOut("B"), Terminated()]


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    req = make_request("INVITE")
    tx = InviteClientTransaction(req, reliable=False)
    tx.start(0.0)
    out = tx.receive(make_response(req, 180, "Ringing"), 0.2)
    assert tx.state is State.PROCEEDING
    assert out.deadline is None  # A and B stopped; the TU decides when to give up (CANCEL)
    assert out.events[0].response.status_code == 180
    assert tx.tick(100.0).transmit == []


def test_invite_non_2xx_final_sends_ack_and_timer_d() -> None:
    req = make_request("INVITE")
    tx = InviteClientTransaction(req, reliable=False)
    tx.start(0.0)
    tx.receive(make_response(req, 100, "Trying"), 0.1)
    final = make_response(req, 486, "Busy Here", to_tag="t-486")
    out = tx.receive(final, 0.3)
    assert tx.state is State.COMPLETED
    assert sends(out) == ["ack"]
    ack = out.transmit[0].message
    assert ack.method == "ACK" and ack.uri == req.uri
    assert ack.cseq == (req.cseq[0], "ACK")
    assert ack.top_via.branch == req.top_via.branch  # same transaction, hop by hop
    assert len(ack.headers.values("Via")) == 1
    assert ack.to_tag == "t-486"
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.body == b""
    assert out.deadline == pytest.approx(32.3)  # D ≥ 32 s on UDP
    # a retransmitted final response gets the ACK again, not passed up
    again = tx.receive(final, 1.0)
    assert sends(again) == ["ack"] and again.events == []
    assert tx.tick(32.3).events == [Terminated()]


def test_invite_non_2xx_reliable_terminates_at_once() -> None:
    req = make_request("INVITE")
    tx = InviteClientTransaction(req, reliable=True)
    tx.start(0.0)
    out = tx.receive(make_response(req, 401, "Unauthorized"), 0.1)
    assert sends(out) == ["ack"]
    assert [type(e) for e in out.events] == [ResponseReceived, Terminated]


def test_invite_2xx_accepted_state_passes_retransmissions_until_timer_m() -> None:
    req = make_request("INVITE")
    tx = InviteClientTransaction(req, reliable=False)
    tx.start(0.0)
    ok = make_response(req, 200, "OK")
    out = tx.receive(ok, 0.2)
    assert tx.state is State.ACCEPTED
    assert out.transmit == []  # the ACK for a 2xx is the UA core's, not the transaction's
    assert out.events[0].final
    again = tx.receive(ok, 0.7)
    assert [type(e) for e in again.events] == [ResponseReceived]  # UA core re-ACKs
    assert tx.tick(32.2).events == [Terminated()]


def test_new_transaction_picks_kind() -> None:
    assert isinstance(new_transaction(make_request("INVITE"), reliable=True), InviteClientTransaction)
    assert isinstance(new_transaction(make_request("BYE"), reliable=True), NonInviteClientTransaction)
    with pytest.raises(ValueError):
        new_transaction(make_request("ACK"), reliable=True)


# --------------------------------------------------------------------------- CANCEL (§9.1)


def test_build_cancel_matches_invite() -> None:
    req = make_request("INVITE", cseq=7)
    cancel = build_cancel(req)
    assert cancel.method == "CANCEL" and cancel.uri == req.uri
    assert cancel.cseq == (7, "CANCEL")
    assert cancel.headers.values("Via") == [req.headers.values("Via")[0]]
    assert cancel.headers.get("To") == req.headers.get("To")
    assert cancel.headers.get("From") == req.headers.get("From")
    assert cancel.call_id == req.call_id
    assert cancel.headers.get_all("Route") == req.headers.get_all("Route")
    assert cancel.body == b"" and "Content-Type" not in cancel.headers
    tx = NonInviteClientTransaction(cancel, reliable=False)
    itx = InviteClientTransaction(req, reliable=False)
    resp = make_response(cancel, 200, "OK")
    assert tx.matches(resp) and not itx.matches(resp)  # same branch, method tells them apart
    # and it survives the wire
    assert parse_message(cancel.to_bytes()).cseq == (7, "CANCEL")


def test_build_ack_requires_headers() -> None:
    req = make_request("INVITE")
    req.headers.remove("Call-ID")
    with pytest.raises(SIPParseError):
        build_ack(req, make_response(make_request("INVITE"), 486))


# ------------------------------------------------------------------- dialog (§12, §13.2.2.4)


def test_dialog_from_2xx_ack_and_bye_loose_routing() -> None:
    req = make_request("INVITE", cseq=3)
    req.headers.add("Authorization", 'Digest username="alice"')
    ok = make_response(req, 200, "OK", to_tag="remote-9")
    dialog = Dialog.from_2xx(req, ok)
    assert dialog.remote_target == "sip:bob@192.0.2.7:5070;transport=udp"
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert dialog.local_tag == "abc123" and dialog.remote_tag == "remote-9"
    branch = new_branch()
    ack = dialog.ack(VIA + branch)
    assert ack.method == "ACK" and ack.uri == dialog.remote_target
    assert ack.cseq == (3, "ACK")
    assert ack.top_via.branch == branch != req.top_via.branch
    assert ack.headers.get_all("Route") == dialog.route_set
    assert ack.headers.get("Authorization") == 'Digest username="alice"'
    assert ack.to_tag == "remote-9" and ack.from_tag == "abc123"
    bye = dialog.bye(VIA + new_branch(), user_agent="ua")
    assert bye.cseq == (4, "BYE") and bye.uri == dialog.remote_target
    assert bye.headers.get("User-Agent") == "ua"
    assert parse_message(bye.to_bytes()).method == "BYE"


def test_dialog_strict_routing_and_missing_contact() -> None:
    req = make_request("INVITE")
    h = Headers()
    for name, value in make_response(req, 200, "OK").headers:
        if name not in ("Record-Route", "Contact"):
            h.add(name, value)
    h.add("Record-Route", "<sip:strict.example.com>")
    ok = Response(200, "OK", h)
    dialog = Dialog.from_2xx(req, ok)
    assert dialog.remote_target == req.uri  # no Contact: fall back to the Request-URI
    bye = dialog.bye(VIA + new_branch())
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == [f"<{req.uri}>"]


def test_dialog_needs_to_tag() -> None:
    req = make_request("INVITE")
    with pytest.raises(SIPParseError):
        Dialog.from_2xx(req, make_response(req, 200, "OK", to_tag=None))
    with pytest.raises(ValueError):
        Dialog.from_2xx(req, make_response(req, 486))


def test_identifiers_are_random_and_well_formed() -> None:
    branches = {new_branch() for _ in range(50)}
    assert len(branches) == 50 and all(b.startswith("z9hG4bK") for b in branches)
    assert new_tag() != new_tag() and len(new_tag()) >= 8
    assert new_call_id() != new_call_id()


def test_the_flow_back_to_a_peer() -> None:
    """Over a stream the flow itself (its connection); over UDP the peer from the same socket."""
    from skinnysip.sip.transaction import Flow

    stream = Flow("tcp", ("127.0.0.1", 5060), connection=7, local=("127.0.0.1", 5070))
    assert stream.back() is stream
    udp = Flow("udp", ("127.0.0.1", 5060), connection=3, local=("127.0.0.1", 5070))
    assert udp.back() == Flow("udp", ("127.0.0.1", 5060), local=("127.0.0.1", 5070))
