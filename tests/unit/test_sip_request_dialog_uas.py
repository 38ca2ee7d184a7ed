"""The request/response builder (RFC 3261 §8.1.1, §8.2.6, §9.1, §12.2.1.1, §17.1.1.3),
dialogs for both roles (§12), the UAS core checks (§8.2, §11.2, §12.2.2) and the one
digest challenge-retry rule (§8.1.3.5, §22.2, RFC 7616)."""

from __future__ import annotations

import pytest

from skinnysip.sip.auth import ChallengeRetry, DigestClient
from skinnysip.sip.dialog import Dialog, DialogState, dialog_id
from skinnysip.sip.message import Request, Response, SIPParseError, parse_message
from skinnysip.sip.request import (
    apply_route_set,
    build_ack_for_failure,
    build_cancel,
    build_response,
    min_expires_retry,
    new_branch,
    new_request,
    reason_phrase,
)
from skinnysip.sip.uas import UASCore, is_session_body
from skinnysip.sip.uri import NameAddr

# RFC 3261 §24.2 (F1), with two proxies that recorded the route and a Timestamp.
INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3\r\n"
    "Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:server10.biloxi.example.com;lr>\r\n"
    "Record-Route: <sip:bigbox3.site3.atlanta.example.com;lr>\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Timestamp: 12.5\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n"
)

# What Alice's phone sent before the proxies touched it.
ALICE_INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    "Route: <sip:bigbox3.site3.atlanta.example.com;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def parse(text: str) -> Request | Response:
    return parse_message(text.encode())


def request(text: str = INVITE, *, add: tuple[str, ...] = (), **replace: str) -> Request:
    """Parse ``text`` after replacing whole header lines (``CSeq="2 BYE"``; ``_`` for ``-``;
    an empty value removes the line) and adding the ``add`` lines after the first one."""
    lines = text.split("\r\n")
    lines[1:1] = add
    for name, value in replace.items():
        name = name.replace("_", "-")
        lines = [(f"{name}: {value}" if value else None) if line.startswith(f"{name}:") else line
                 for line in lines]
        lines = [line for line in lines if line is not None]
    message = parse("\r\n".join(lines))
    assert isinstance(message, Request)
    return message


def bobs_answer(code: int, *, to_tag: str = "a6c85cf", contact: str = "<sip:bob@192.0.2.4>",
                record_route: tuple[str, ...] = ("<sip:server10.biloxi.example.com;lr>",
                                                 "<sip:bigbox3.site3.atlanta.example.com;lr>")) -> Response:
    """Bob's response as it reaches Alice (RFC 3261 §24.2 F8/F9 shape)."""
    text = (
        f"SIP/2.0 {code} {reason_phrase(code)}\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
        + "".join(f"Record-Route: {rr}\r\n" for rr in record_route)
        + f"To: Bob <sip:bob@biloxi.example.com>;tag={to_tag}\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse(text)
    assert isinstance(message, Response)
    return message


# ------------------------------------------------------------------------ build_response


def test_build_response_copies_vias_in_order_and_adds_to_tag() -> None:
    """§8.2.6.2: Via (all, in order, with received), From, Call-ID and CSeq copied; a To tag
    added; §12.1.1: Record-Route copied into a 2xx to INVITE."""
    invite = request()
    ok = build_response(invite, 200, to_tag="a6c85cf", contact=NameAddr.parse("<sip:bob@192.0.2.4>"))
    assert ok.headers.values("Via") == invite.headers.values("Via")
    assert ok.headers.get_all("Record-Route") == invite.headers.get_all("Record-Route")
    assert ok.to_tag == "a6c85cf" and ok.from_tag == "1928301774"
    assert ok.call_id == invite.call_id and ok.cseq == (314159, "INVITE")
    assert ok.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    assert ok.reason == "OK" and "Timestamp" not in ok.headers
    again = parse_message(ok.to_bytes())
    assert isinstance(again, Response) and again.headers.values("Via") == invite.headers.values("Via")


def test_build_response_100_has_no_to_tag_and_echoes_timestamp() -> None:
    """§8.2.6.1: a 100 Trying never gets a To tag and copies the Timestamp."""
    trying = build_response(request(), 100, to_tag="ignored")
    assert trying.to_tag is None and trying.headers.get("Timestamp") == "12.5"
    assert "Record-Route" not in trying.headers


def test_build_response_record_route_only_for_dialog_creating_18x_2xx() -> None:
    """§12.1.1: Record-Route goes into responses that establish a dialog (18x, 2xx to a
    dialog-creating request), not into failures or answers to OPTIONS."""
    invite = request()
    assert build_response(invite, 183, to_tag="t").headers.get_all("Record-Route")
    assert build_response(invite, 180, to_tag="t").headers.get_all("Record-Route")
    assert not build_response(invite, 486, to_tag="t").headers.get_all("Record-Route")
    options = request(CSeq="314160 OPTIONS")
    options.method = "OPTIONS"
    assert not build_response(options, 200, to_tag="t").headers.get_all("Record-Route")


def test_build_response_keeps_an_existing_to_tag_and_checks_input() -> None:
    """§8.2.6.2: an in-dialog request's To tag is kept; a request lacking Call-ID cannot
    be answered; codes are 100-699."""
    bye = request(To="Bob <sip:bob@biloxi.example.com>;tag=a6c85cf")
    assert build_response(bye, 200, to_tag="other").to_tag == "a6c85cf"
    with pytest.raises(SIPParseError):
        build_response(request(Call_ID=""), 400)
    with pytest.raises(ValueError):
        build_response(bye, 700)


# --------------------------------------------------------------- new_request, route sets


def test_new_request_out_of_dialog_with_loose_outbound_proxy() -> None:
    """§8.1.1: To without tag, From with a tag, Call-ID, CSeq, Max-Forwards 70, Via, Contact;
    §8.1.2 with a loose router: the Request-URI stays the target, Route = the route set."""
    branch = new_branch()
    req = new_request(
        "INVITE", "sip:bob@biloxi.example.com",
        from_=NameAddr.parse("Alice <sip:alice@atlanta.example.com>"),
        to=NameAddr.parse("Bob <sip:bob@biloxi.example.com>;tag=stale"),
        via=f"SIP/2.0/UDP pc33.atlanta.example.com;branch={branch}",
        cseq=314159, contact=NameAddr.parse("<sip:alice@pc33.atlanta.example.com>"),
        route_set=["<sip:bigbox3.site3.atlanta.example.com;lr>"],
        body=b"v=0\r\n", content_type="application/sdp",
    )
    assert req.uri == "sip:bob@biloxi.example.com"
    assert req.headers.get_all("Route") == ["<sip:bigbox3.site3.atlanta.example.com;lr>"]
    assert req.from_tag and req.to_tag is None
    assert req.top_via.branch == branch and branch.startswith("z9hG4bK")
    assert req.cseq == (314159, "INVITE") and req.headers.get("Max-Forwards") == "70"
    assert req.call_id and req.headers.get("Content-Type") == "application/sdp"
    wire = parse_message(req.to_bytes())
    assert isinstance(wire, Request) and wire.body == b"v=0\r\n"


def test_apply_route_set_loose_and_strict() -> None:
    """§12.2.1.1: first route with lr → Request-URI = remote target, Route = route set;
    strict first route → Request-URI = that URI without maddr/ttl/method/lr, Route = the
    rest of the set then the remote target."""
    target = "sip:bob@192.0.2.4"
    assert apply_route_set(target, []) == (target, [])
    assert apply_route_set(target, ["<sip:p1.example.com;lr>", "<sip:p2.example.com>"]) == (
        target, ["<sip:p1.example.com;lr>", "<sip:p2.example.com>"])
    uri, routes = apply_route_set(target, ["<sip:p1.example.com;maddr=192.0.2.9;transport=tcp>",
                                           "<sip:p2.example.com;lr>"])
    assert uri == "sip:p1.example.com;transport=tcp"
    assert routes == ["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.4>"]
    with pytest.raises(SIPParseError):
        apply_route_set(target, ["<sip:unterminated"])


# ------------------------------------------------------------------------ ACK and CANCEL


def test_ack_for_failure_and_cancel_from_realistic_invite() -> None:
    """§17.1.1.3: the ACK for a non-2xx has the INVITE's Request-URI, top Via (same branch),
    Route, From, Call-ID, CSeq number and the response's To (with tag); §9.1: the CANCEL
    has the same Request-URI, To (no tag), From, Call-ID, CSeq number and top Via."""
    invite = request(ALICE_INVITE)
    busy = bobs_answer(486, record_route=())
    ack = build_ack_for_failure(invite, busy)
    assert ack.uri == invite.uri and ack.cseq == (314159, "ACK")
    assert ack.headers.values("Via") == ["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8"]
    assert ack.headers.get_all("Route") == ["<sip:bigbox3.site3.atlanta.example.com;lr>"]
    assert ack.to_tag == "a6c85cf" and ack.from_tag == "1928301774" and ack.body == b""
    cancel = build_cancel(invite)
    assert cancel.uri == invite.uri and cancel.cseq == (314159, "CANCEL")
    assert cancel.headers.values("Via") == ack.headers.values("Via")
    assert cancel.to_tag is None and cancel.call_id == invite.call_id
    assert cancel.headers.get_all("Route") == ack.headers.get_all("Route")


# --------------------------------------------------------------------------- dialogs (§12)


def test_uac_dialog_early_on_180_then_confirmed_on_200() -> None:
    """§12.1.2: a 1xx with a To tag creates an early dialog; route set = Record-Route
    reversed, remote target = Contact, local CSeq = the INVITE's; §13.2.2.4: the 2xx
    confirms it and its route set and target win."""
    invite = request(ALICE_INVITE)
    dialog = Dialog.uac(invite, bobs_answer(180, contact="<sip:bob@192.0.2.99>"))
    assert dialog.state is DialogState.EARLY and dialog.role == "uac"
    assert dialog.route_set == ["<sip:bigbox3.site3.atlanta.example.com;lr>",
                                "<sip:server10.biloxi.example.com;lr>"]
    assert dialog.remote_target == "sip:bob@192.0.2.99"
    assert dialog.local_cseq == 314159 and dialog.remote_cseq is None
    ok = bobs_answer(200, record_route=("<sip:server10.biloxi.example.com;lr>",))
    dialog.confirm(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ["<sip:server10.biloxi.example.com;lr>"]
    assert dialog.remote_target == "sip:bob@192.0.2.4"
    assert dialog.id == dialog_id(ok, local_is_from=True)
    with pytest.raises(SIPParseError):
        Dialog.uac(invite, parse_message(bobs_answer(180).to_bytes().replace(b";tag=a6c85cf", b"")))
    with pytest.raises(ValueError):
        Dialog.uac(invite, bobs_answer(100))


def test_uac_ack_and_bye_in_dialog() -> None:
    """§13.2.2.4: the ACK for the 2xx has the INVITE's CSeq number, a new branch, the route
    set and the remote target; §15.1.1: BYE takes the next CSeq; §12.2.1.1: From/To with
    both tags and the dialog's Call-ID."""
    invite = request(ALICE_INVITE)
    dialog = Dialog.uac(invite, bobs_answer(200))
    branch = new_branch()
    ack = dialog.ack(f"SIP/2.0/UDP pc33.atlanta.example.com;branch={branch}")
    assert ack.cseq == (314159, "ACK") and ack.top_via.branch == branch != "z9hG4bKnashds8"
    assert ack.uri == "sip:bob@192.0.2.4"
    assert ack.headers.get_all("Route") == dialog.route_set
    bye = dialog.bye(f"SIP/2.0/UDP pc33.atlanta.example.com;branch={new_branch()}")
    assert bye.cseq == (314160, "BYE") and bye.uri == "sip:bob@192.0.2.4"
    assert (bye.from_tag, bye.to_tag, bye.call_id) == ("1928301774", "a6c85cf", invite.call_id)
    assert dialog_id(bye, local_is_from=True) == dialog.id


def test_forking_gives_one_dialog_per_remote_tag() -> None:
    """§12.1.2 / §13.2.2.4: responses from two forks (different To tags) create two
    dialogs with the same Call-ID and local tag."""
    invite = request(ALICE_INVITE)
    one = Dialog.uac(invite, bobs_answer(180, to_tag="fork1", contact="<sip:bob@192.0.2.4>"))
    two = Dialog.uac(invite, bobs_answer(183, to_tag="fork2", contact="<sip:bob@192.0.2.5>"))
    assert one.id != two.id
    assert (one.id.call_id, one.id.local_tag) == (two.id.call_id, two.id.local_tag)
    assert {one.remote_target, two.remote_target} == {"sip:bob@192.0.2.4", "sip:bob@192.0.2.5"}
    assert dialog_id(bobs_answer(200, to_tag="fork2"), local_is_from=True) == two.id


def test_uas_dialog_route_set_in_order_remote_cseq_and_requests() -> None:
    """§12.1.1: the UAS's route set is Record-Route in order, remote target = Contact,
    remote CSeq = the request's, local CSeq starts random (< 2**31, §8.1.1.5); its
    requests carry From = our To with our tag and To = the peer's From."""
    invite = request()
    dialog = Dialog.uas(invite, "a6c85cf")
    assert dialog.role == "uas" and dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ["<sip:server10.biloxi.example.com;lr>",
                                "<sip:bigbox3.site3.atlanta.example.com;lr>"]
    assert dialog.remote_target == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_cseq == 314159 and dialog.local_cseq is None
    assert dialog.id == dialog_id(request(To="Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"),
                                  local_is_from=False)
    bye = dialog.bye("SIP/2.0/UDP 192.0.2.4;branch=" + new_branch())
    assert 1 <= bye.cseq[0] < 2**31 and bye.cseq[1] == "BYE"
    assert bye.from_tag == "a6c85cf" and bye.to_tag == "1928301774"
    assert bye.uri == "sip:alice@pc33.atlanta.example.com"
    assert bye.headers.get_all("Route") == dialog.route_set
    assert dialog.request("INFO", "SIP/2.0/UDP 192.0.2.4;branch=" + new_branch()).cseq[0] == bye.cseq[0] + 1
    with pytest.raises(SIPParseError):
        Dialog.uas(request(Contact=""), "x")
    assert Dialog.uas(invite, "t", early=True).state is DialogState.EARLY


def test_dialog_rejects_lower_cseq_with_500_and_refreshes_target() -> None:
    """§12.2.2: a request with a CSeq lower than the remote CSeq is answered 500 and
    changes nothing; ACK/CANCEL are not counted; a re-INVITE or UPDATE with a Contact
    refreshes the remote target (§12.2, RFC 3311), other methods do not."""
    dialog = Dialog.uas(request(), "a6c85cf")
    in_dialog = "Alice <sip:alice@atlanta.example.com>;tag=1928301774"

    def peer(method: str, cseq: int, contact: str) -> Request:
        r = request(CSeq=f"{cseq} {method}", Contact=contact, From=in_dialog,
                    To="Bob <sip:bob@biloxi.example.com>;tag=a6c85cf")
        r.method = method
        return r

    assert dialog.receive_request(peer("INVITE", 314158, "<sip:alice@198.51.100.1>")) == 500
    assert dialog.remote_target == "sip:alice@pc33.atlanta.example.com" and dialog.remote_cseq == 314159
    assert dialog.receive_request(peer("ACK", 1, "<sip:x@198.51.100.9>")) is None
    assert dialog.receive_request(peer("INFO", 314160, "<sip:alice@198.51.100.2>")) is None
    assert dialog.remote_target == "sip:alice@pc33.atlanta.example.com"  # INFO is no target refresh
    assert dialog.receive_request(peer("INVITE", 314161, "<sip:alice@198.51.100.3>")) is None
    assert dialog.remote_target == "sip:alice@198.51.100.3" and dialog.remote_cseq == 314161
    assert dialog.receive_request(peer("UPDATE", 314162, "<sip:alice@198.51.100.4>")) is None
    assert dialog.remote_target == "sip:alice@198.51.100.4"
    assert dialog.receive_request(peer("BYE", 314160, "")) == 500


# ------------------------------------------------------------------------ UAS core (§8.2)


def test_uas_core_405_with_allow_before_anything_else() -> None:
    """§8.2.1: an unsupported method → 405 with Allow (checked before the URI scheme)."""
    core = UASCore(allow=("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"))
    publish = request(CSeq="1 PUBLISH")
    publish.method = "PUBLISH"
    publish.uri = "mailto:bob@biloxi.example.com"
    response = core.check(publish)
    assert response is not None and response.status_code == 405
    assert response.headers.get("Allow") == "INVITE, ACK, BYE, CANCEL, OPTIONS"
    assert response.to_tag  # a final response gets a To tag


def test_uas_core_416_for_unknown_scheme() -> None:
    """§8.2.2.1: a Request-URI scheme the UAS does not understand → 416."""
    invite = request()
    invite.uri = "mailto:bob@biloxi.example.com"
    response = UASCore().check(invite)
    assert response is not None and response.status_code == 416


def test_uas_core_482_for_merged_request() -> None:
    """§8.2.2.2: same From tag, Call-ID and CSeq as a request that came by another path
    (another branch), no To tag → 482; a retransmission (same branch) is not merged."""
    core = UASCore()
    assert core.check(request(), branch="z9hG4bK4b43c2ff8.1") is None
    assert core.check(request(), branch="z9hG4bK4b43c2ff8.1") is None
    merged = core.check(request(), branch="z9hG4bKviaotherproxy")
    assert merged is not None and merged.status_code == 482
    in_dialog = request(To="Bob <sip:bob@biloxi.example.com>;tag=a6c85cf")
    assert core.check(in_dialog, branch="z9hG4bKviaotherproxy", in_dialog_known=True) is None


def test_uas_core_420_with_unsupported_for_unknown_require() -> None:
    """§8.2.2.3: an option tag in Require the UAS does not support → 420 listing it in
    Unsupported; supported ones pass."""
    core = UASCore(supported=("replaces", "timer"))
    assert core.check(request(add=("Require: timer",))) is None
    response = core.check(request(add=("Require: 100rel, timer", "Require: foo")))
    assert response is not None and response.status_code == 420
    assert response.headers.get("Unsupported") == "100rel, foo"


def test_uas_core_415_with_accept_for_unknown_body() -> None:
    """§8.2.3: a body type (or encoding) the UAS cannot read → 415 with Accept and
    Accept-Encoding."""
    core = UASCore(accept=("application/sdp",))
    assert core.check(request()) is None
    response = core.check(request(Content_Type="application/x-unknown"))
    assert response is not None and response.status_code == 415
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Accept-Encoding") == "identity"
    gzipped = core.check(request(add=("Content-Encoding: gzip",)))
    assert gzipped is not None and gzipped.status_code == 415


def test_uas_core_481_for_unknown_dialog_and_ack_cancel_pass() -> None:
    """§12.2.2: a request with a To tag that matches no dialog → 481; ACK and CANCEL are
    never refused by the core (§8.2)."""
    core = UASCore()
    bye = request(CSeq="314160 BYE", To="Bob <sip:bob@biloxi.example.com>;tag=gone")
    bye.method = "BYE"
    response = core.check(bye, in_dialog_known=False)
    assert response is not None and response.status_code == 481
    assert core.check(bye, in_dialog_known=True) is None
    ack = request(CSeq="314159 ACK", add=("Require: foo",))
    ack.method = "ACK"
    assert core.check(ack) is None


def test_uas_core_options_answer() -> None:
    """§11.2: 200 to OPTIONS with Allow, Accept and Supported."""
    core = UASCore(server="skinnysip-test")
    options = request(CSeq="63104 OPTIONS")
    options.method = "OPTIONS"
    ok = core.options(options)
    assert ok.status_code == 200 and ok.to_tag
    assert "INVITE" in (ok.headers.get("Allow") or "")
    assert ok.headers.get("Accept") == "application/sdp, text/plain, application/dtmf-relay, message/sipfrag"
    assert ok.headers.get("Supported") == "replaces, norefersub, timer"
    assert ok.headers.get("Server") == "skinnysip-test"


# --------------------------------------------------------------------- ChallengeRetry (§22)


REGISTER = (
    "REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    "Call-ID: 843817637684230@998sdasdh09\r\n"
    "CSeq: 1826 REGISTER\r\n"
    "Contact: <sip:bob@192.0.2.4>\r\n"
    "Expires: 7200\r\n"
    "Content-Length: 0\r\n\r\n"
)


def challenge(code: int = 401, *, stale: bool = False, nonce: str = "ea9c8e88df84f1cec4341ae6cbe5a359") -> Response:
    header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    text = (
        f"SIP/2.0 {code} {reason_phrase(code)}\r\n"
        "Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;received=192.0.2.4\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=2493k59kd\r\n"
        "From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
        "Call-ID: 843817637684230@998sdasdh09\r\n"
        "CSeq: 1826 REGISTER\r\n"
        f'{header}: Digest realm="biloxi.example.com", qop="auth", nonce="{nonce}", '
        f'opaque="", algorithm=MD5{", stale=true" if stale else ""}\r\n'
        "Content-Length: 0\r\n\r\n"
    )
    message = parse(text)
    assert isinstance(message, Response)
    return message


def test_challenge_retry_once_with_new_via_and_next_cseq() -> None:
    """§8.1.3.5 / §22.2: a 401 is answered once: same request, new branch, CSeq + 1,
    Authorization for the challenge; Call-ID and From tag unchanged."""
    rule = ChallengeRetry(DigestClient("bob", "zanzibar"))
    first = request(REGISTER)
    via = f"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch={new_branch()}"
    retried = rule.retry(first, challenge(), via)
    assert retried is not None and rule.attempts == 1
    assert retried.headers.values("Via") == [via]
    assert retried.cseq == (1827, "REGISTER")
    assert (retried.call_id, retried.from_tag) == (first.call_id, first.from_tag)
    auth = retried.headers.get("Authorization") or ""
    assert auth.startswith("Digest ") and 'realm="biloxi.example.com"' in auth and 'username="bob"' in auth
    assert first.cseq == (1826, "REGISTER") and "Authorization" not in first.headers  # not mutated
    # the same challenge again: the credentials were refused
    assert rule.retry(retried, challenge(nonce="00ff"), via) is None
    assert rule.refused == "credentials refused" and len(rule.challenged) == 2


def test_challenge_retry_once_more_only_when_stale() -> None:
    """RFC 7616 §3.3 / §22.2: a second challenge with stale=true means the nonce expired:
    retried once more with the new nonce; a third is refused."""
    rule = ChallengeRetry(DigestClient("bob", "zanzibar"))
    via = f"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch={new_branch()}"
    second = rule.retry(request(REGISTER), challenge(), via)
    assert second is not None
    third = rule.retry(second, challenge(stale=True, nonce="fresh"), via)
    assert third is not None and third.cseq == (1828, "REGISTER")
    assert third.headers.get_all("Authorization") and len(third.headers.get_all("Authorization")) == 1
    assert 'nonce="fresh"' in (third.headers.get("Authorization") or "")
    assert rule.retry(third, challenge(stale=True, nonce="again"), via) is None
    assert rule.refused == "credentials refused"


def test_challenge_retry_407_proxy_authorization_and_refusals() -> None:
    """§22.3: a 407 is answered with Proxy-Authorization; no credentials or no Digest
    challenge → no retry (with the reason); other codes are not challenges."""
    via = f"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch={new_branch()}"
    retried = ChallengeRetry(DigestClient("bob", "zanzibar")).retry(request(REGISTER), challenge(407), via)
    assert retried is not None and retried.headers.get("Proxy-Authorization")
    assert "Authorization" not in retried.headers
    nobody = ChallengeRetry(None)
    assert nobody.retry(request(REGISTER), challenge(), via) is None and nobody.refused == "no credentials"
    basic = parse_message(challenge().to_bytes().replace(b"WWW-Authenticate: Digest", b"WWW-Authenticate: Basic"))
    assert isinstance(basic, Response)
    rule = ChallengeRetry(DigestClient("bob", "zanzibar"))
    assert rule.retry(request(REGISTER), basic, via) is None
    assert rule.refused == "no supported Digest challenge"
    assert rule.retry(request(REGISTER), bobs_answer(403), via) is None and rule.attempts == 0


def test_challenge_retry_proxy_then_registrar_realms() -> None:
    """§22.3: an outbound proxy's 407 (realm A) then the registrar's 401 (realm B): each realm
    is answered once; the second retry carries both credentials (Proxy-Authorization for A,
    Authorization for B); a further non-stale 401 for B is a refusal."""
    rule = ChallengeRetry(DigestClient("bob", "zanzibar"))
    via = f"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch={new_branch()}"
    proxy = parse_message(challenge(407).to_bytes().replace(b'realm="biloxi.example.com"', b'realm="proxy.example"'))
    assert isinstance(proxy, Response)
    second = rule.retry(request(REGISTER), proxy, via)
    assert second is not None and 'realm="proxy.example"' in (second.headers.get("Proxy-Authorization") or "")
    third = rule.retry(second, challenge(401), via)
    assert third is not None and third.cseq == (1828, "REGISTER") and rule.attempts == 2
    assert 'realm="proxy.example"' in (third.headers.get("Proxy-Authorization") or "")
    assert 'realm="biloxi.example.com"' in (third.headers.get("Authorization") or "")
    assert rule.retry(third, challenge(401, nonce="other"), via) is None and rule.refused == "credentials refused"


@pytest.mark.parametrize(("status", "min_expires", "asked", "retry"), [
    ("423 Interval Too Brief", "Min-Expires: 60\r\n", 20, 60),
    ("423 Interval Too Brief", "Min-Expires: 4294967295\r\n", 3600, 4294967295),
    ("423 Interval Too Brief", "Min-Expires: 20\r\n", 20, None),  # not longer: retrying cannot help
    ("423 Interval Too Brief", "", 20, None),  # §10.2.8 needs the Min-Expires it names
    ("423 Interval Too Brief", "Min-Expires: soon\r\n", 20, None),
    ("423 Interval Too Brief", "Min-Expires: 4294967296\r\n", 20, None),  # beyond §20.23's range
    ("200 OK", "Min-Expires: 60\r\n", 20, None),
])
def test_min_expires_retry_after_423(status: str, min_expires: str, asked: int, retry: int | None) -> None:
    """RFC 3261 §10.2.8: after a 423 a REGISTER may be sent again with the Min-Expires of it."""
    response = parse_message((f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bKx\r\n"
                              "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\n"
                              f"CSeq: 2 REGISTER\r\n{min_expires}Content-Length: 0\r\n\r\n").encode())
    assert isinstance(response, Response)
    assert min_expires_retry(response, asked) == retry


@pytest.mark.parametrize(("content_type", "session"), [
    ("application/sdp", True), ("Application/SDP; charset=utf-8", True), ("", True),
    ("text/plain", False), ("multipart/mixed;boundary=unique-boundary-1", False), ("application/pidf+xml", False),
])
def test_is_session_body_takes_sdp_and_a_body_without_a_type(content_type: str, session: bool) -> None:
    """RFC 3261 §8.2.3: an INVITE's body of another type is for a 415, not for the SDP parser
    (a body without Content-Type is read as SDP, §20.15 being the sender's error)."""
    assert is_session_body(request(Content_Type=content_type)) is session
    assert is_session_body(request(ALICE_INVITE)) is True  # no body at all
