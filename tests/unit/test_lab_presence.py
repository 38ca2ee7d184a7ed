"""The lab as presence server and busy-lamp-field notifier (``lab/presence.py`` over
``lab/notifier.py``), driving a real :class:`~skinnysip.lab.runner.Lab` on 127.0.0.1.

With our own phones (``SIPPhone.watch``, ``SIPPhone.publish_presence``): a watcher's busy lamp
of a callee goes idle → ringing → busy → idle through a call between two other phones, and the
caller's lamp calling → busy → idle, each subscription with its own dialog-info version count
(RFC 4235 §4.1); a rejected and a cancelled call put the lamp out again; a presentity's
presence is ``closed`` before it registers, ``open`` once it has, what it PUBLISHes (note,
RPID activity) after that, and back to the registrar's view when it removes its publication
and unregisters; a binding that expires closes it; the voicemail's ``message-summary``
notifier works on the shared RFC 6665 code. Sans-IO: the dialog tracker's states, events,
tags, ids and bound from call records.

With a raw UDP socket (exact bytes; digest answered by hand): the refusals — 404 for a user
that does not exist, 489 with ``Allow-Events`` for another package (SUBSCRIBE and PUBLISH),
403 for a PUBLISH to someone else's AOR, 400 with a ``Warning`` for a PIDF that does not parse,
415 for another body type, 412 for an unknown entity-tag, 503 past the per-watcher bound — the
PUBLISH life (SIP-ETag, refresh without a body, removal), a fetch (``Expires: 0`` → 200 and a
terminated NOTIFY), a refresh and an unsubscribe in the dialog (versions 0, 1, 2; a CSeq out
of order 500), expiry without refresh (``terminated;reason=timeout``), a NOTIFY answered 481
or not answered ending the subscription, OPTIONS' ``Allow-Events``, and the counts in
``GET /api/lab``.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from skinnysip.api.app import create_app
from skinnysip.lab import notifier as lab_notifier
from skinnysip.lab.config import LabSettings
from skinnysip.lab.presence import MAX_DIALOGS_PER_USER, DialogTracker, PresenceNotifier
from skinnysip.lab.proxy import CallRecord
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import DialogStateChanged, IncomingCall, MessageWaiting, PresenceChanged
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.phone.subscription import DialogSubscription
from skinnysip.sip.auth import DigestChallenge, DigestClient
from skinnysip.sip.message import Headers, Request, Response, parse_message
from skinnysip.sip.presence import build_pidf, parse_dialog_info, parse_pidf
from skinnysip.sip.request import build_response

pytestmark = pytest.mark.timeout(60)

DOMAIN = "lab.test"
_numbers = itertools.count(1)


def settings(**kw: Any) -> LabSettings:
    base: dict[str, Any] = dict(domain=DOMAIN, realm=DOMAIN, hosts=("127.0.0.1",), sip_port=0, sips_port=0,
                                sccp_port=0)
    base.update(kw)
    return LabSettings(**base)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


def udp_port(lab: Lab) -> int:
    return int(lab.sip["udp"].rsplit(":", 1)[1])


def account(lab: Lab, user: str, **kw: Any) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{DOMAIN}", password=f"demo{user}", registrar=f"127.0.0.1:{udp_port(lab)}",
                      expires=60, timeout=5.0, **kw)


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


async def registered(lab: Lab, user: str, timeout: float = 10.0) -> None:
    assert lab.proxy is not None
    for _ in range(int(timeout / 0.05)):
        if any(b["user"] == user for b in lab.proxy.bindings()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} never registered")


async def wait_for(phone: SIPPhone, match: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """The first event of ``phone`` that ``match`` accepts within ``timeout`` s, among those
    read before and not taken yet, then the new ones; every event read is kept in
    ``phone.seen``."""
    seen: list[Any] = phone.__dict__.setdefault("seen", [])
    untaken: list[Any] = phone.__dict__.setdefault("untaken", [])
    for event in untaken:
        if match(event):
            untaken.remove(event)
            return event
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        event = await phone.next_event(0.1)
        if event is None:
            continue
        seen.append(event)
        if match(event):
            return event
        untaken.append(event)
        del untaken[:-200]
    raise AssertionError(f"no such event within {timeout} s; seen: {seen[-10:]}")


def lamp(uri: str, state: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, DialogStateChanged) and e.uri == uri and e.state == state


def presence(uri: str, basic: str, notes: tuple[str, ...] | None = None) -> Callable[[Any], bool]:
    return lambda e: (isinstance(e, PresenceChanged) and e.uri == uri and e.basic == basic
                      and (notes is None or e.notes == notes))


def lamps(phone: SIPPhone, uri: str) -> list[str]:
    """The lamp states ``phone`` was told for ``uri``, repeats of one state folded."""
    states = [e.state for e in phone.__dict__.get("seen", []) if isinstance(e, DialogStateChanged) and e.uri == uri]
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


# -- with our phones ---------------------------------------------------------------------------

async def test_a_busy_lamp_follows_a_call_through_the_lab(lab: Lab) -> None:
    """1001 watches the lamps of 1002 and 1003; 1003 calls 1002, which rings, answers, and the
    caller hangs up: 1002's lamp idle → ringing → busy → idle (its dialog ``recipient``, the
    caller as remote identity, the call's Call-ID), 1003's calling → busy → idle. Four NOTIFYs
    on 1002's subscription: versions 0 to 3; a new watcher's subscription starts at 0."""
    assert lab.proxy is not None
    async with SIPPhone(account(lab, "1001")) as a, SIPPhone(account(lab, "1002")) as b, \
            SIPPhone(account(lab, "1003")) as c:
        await registered(lab, "1002")
        watch_b = a.watch("1002", "dialog")
        a.watch("1003", "dialog")
        await wait_for(a, lamp(aor("1002"), "idle"))
        await wait_for(a, lamp(aor("1003"), "idle"))
        assert lab.proxy.subscriptions()["dialog"] == 2
        call = await c.call("1002")
        incoming = await wait_for(b, lambda e: isinstance(e, IncomingCall))
        ringing = await wait_for(a, lamp(aor("1002"), "ringing"))
        [dialog] = ringing.dialogs
        assert dialog.direction == "recipient" and dialog.state == "early"
        assert dialog.remote_identity == aor("1003") and dialog.local_identity == aor("1002")
        assert dialog.call_id == call.call_id and dialog.local_tag and dialog.remote_tag
        await incoming.call.answer()
        busy = await wait_for(a, lamp(aor("1002"), "busy"))
        assert busy.dialogs[0].state == "confirmed" and busy.dialogs[0].id == dialog.id  # the same dialog id
        assert await call.wait_connected(5)
        await call.hangup()
        await wait_for(a, lamp(aor("1002"), "idle"))
        await wait_for(a, lamp(aor("1003"), "idle"))
        assert lamps(a, aor("1002")) == ["idle", "ringing", "busy", "idle"]
        assert lamps(a, aor("1003")) == ["idle", "calling", "busy", "idle"]
        assert isinstance(watch_b, DialogSubscription) and watch_b.view.version == 3
        second = c.watch("1002", "dialog")  # RFC 4235 §4.1: each subscription counts from 0
        await wait_for(c, lamp(aor("1002"), "idle"))
        assert isinstance(second, DialogSubscription) and second.view.version == 0
    assert lab.proxy.subscriptions()["dialog"] == 0  # the phones unsubscribed when they closed


async def test_a_rejected_call_and_a_cancelled_one_end_the_dialog(lab: Lab) -> None:
    """A call refused with 486 and one the caller CANCELs while it rings: the callee's lamp
    goes back to idle each time (a terminated dialog is told, then forgotten)."""
    async with SIPPhone(account(lab, "1001")) as a, SIPPhone(account(lab, "1002")) as b, \
            SIPPhone(account(lab, "1003")) as c:
        await registered(lab, "1002")
        a.watch("1002", "dialog")
        await wait_for(a, lamp(aor("1002"), "idle"))
        first = await c.call("1002")
        incoming = await wait_for(b, lambda e: isinstance(e, IncomingCall))
        await wait_for(a, lamp(aor("1002"), "ringing"))
        await incoming.call.reject(486)
        await wait_for(a, lamp(aor("1002"), "idle"))
        assert await first.wait_ended(5)
        second = await c.call("1002")
        await wait_for(b, lambda e: isinstance(e, IncomingCall))
        await wait_for(a, lamp(aor("1002"), "ringing"))
        await second.hangup()  # a CANCEL while it rings
        await wait_for(a, lamp(aor("1002"), "idle"))
        assert lamps(a, aor("1002")) == ["idle", "ringing", "idle", "ringing", "idle"]


async def test_presence_from_registration_and_publication(lab: Lab) -> None:
    """1001 watches 1002: ``closed`` while 1002 is not registered, ``open`` once it is; 1002
    publishes ``closed`` with a note and an activity (RFC 3903) and 1001 hears them; a
    modification to ``open``; when 1002 closes (removes its publication, unregisters) the
    lab's own view comes back: ``closed``, no note."""
    assert lab.proxy is not None
    async with SIPPhone(account(lab, "1001")) as a:
        a.watch("1002", "presence")
        await wait_for(a, presence(aor("1002"), "closed"))
        async with SIPPhone(account(lab, "1002")) as b:
            await wait_for(a, presence(aor("1002"), "open"))
            await b.publish_presence("closed", note="in a meeting", activity="meeting")
            told = await wait_for(a, presence(aor("1002"), "closed", ("in a meeting",)))
            assert told.activities == ("meeting",)
            assert lab.proxy.subscriptions()["publications"] == 1
            await b.publish_presence("open", note="back")
            await wait_for(a, presence(aor("1002"), "open", ("back",)))
            # /api/lab/calls says how the lab answered them (not the challenge's 407)
            records = {c["callId"]: c["state"] for c in lab.proxy.calls()}
            assert b.publication is not None and records[b.publication._call_id] == "published", records
            [watch] = a.watches.values()
            assert records[watch._call_id] == "subscribed", records
        await wait_for(a, presence(aor("1002"), "closed", ()))
        assert lab.proxy.subscriptions() == {"message-summary": 0, "presence": 1, "dialog": 0, "publications": 0}


async def test_an_expired_binding_closes_the_presence() -> None:
    """A REGISTER for 2 s (the lab's min_expires lowered to 1): the watcher hears ``open``,
    then ``closed`` when the binding expires unrefreshed (the lab looks when it is due)."""
    async with Lab(settings(min_expires=1)) as lab, SIPPhone(account(lab, "1001")) as a, Raw(lab, "1002") as raw:
        a.watch("1002", "presence")
        await wait_for(a, presence(aor("1002"), "closed"))
        ok = await raw.authed("REGISTER", f"sip:{DOMAIN}", to=aor("1002"), extra="Expires: 2\r\n")
        assert ok.status_code == 200
        await wait_for(a, presence(aor("1002"), "open"))
        await wait_for(a, presence(aor("1002"), "closed"), timeout=6)


async def test_the_mailbox_notifier_on_the_shared_code(lab: Lab) -> None:
    """The voicemail's ``message-summary`` notifier now runs on the shared RFC 6665 code: the
    owner's phone hears its mailbox at once and after a deposit; another user's SUBSCRIBE to
    it is still 403; the 200 names every package the lab serves in Allow-Events."""
    assert lab.proxy is not None
    async with SIPPhone(account(lab, "1001", mwi=True)) as owner:
        first = await wait_for(owner, lambda e: isinstance(e, MessageWaiting))
        assert first.waiting is False and first.account == aor("1001")
        lab.proxy.mailboxes.deposit("1001", "1002", np.ones(800, dtype=np.int16))
        lit = await wait_for(owner, lambda e: isinstance(e, MessageWaiting) and e.waiting)
        assert dict(lit.counts) == {"voice-message": (1, 0, 0, 0)}
        assert lab.proxy.subscriptions()["message-summary"] == 1
        ok = next(m for m in owner.endpoint.trace if m.direction == "received" and m.summary == "200 OK"
                  and b"CSeq: 2 SUBSCRIBE" in m.raw)
        assert b"Allow-Events: message-summary, presence, dialog\r\n" in ok.raw
    async with Raw(lab, "1002") as raw:
        other = await raw.authed("SUBSCRIBE", aor("1001"), extra="Event: message-summary\r\n")
        assert other.status_code == 403
    assert lab.proxy.subscriptions()["message-summary"] == 0


def test_the_dialog_tracker_follows_call_records() -> None:
    """Sans-IO: :class:`DialogTracker` fed call records as the proxy changes them — a
    challenged INVITE tells nothing; the caller's dialog is ``trying`` first, the callee's
    appears when it rings; ids are stable per call and side; the BYE's sender has
    ``local-bye``; a failure is ``rejected`` with its code (408: ``timeout``); calls with
    someone outside the lab's users show only the lab user's side; at most
    MAX_DIALOGS_PER_USER dialogs a user, the oldest forgotten."""
    tracker = DialogTracker({"1001", "1002"})
    call = CallRecord("c1", aor("1001"), aor("1002"), "INVITE", 0.0, from_tag="ft")
    invite = Request("INVITE", aor("1002"), Headers([("From", f"<{aor('1001')}>;tag=ft"), ("Call-ID", "c1")]))

    def step(state: str, request: Request = invite) -> list[str]:
        call.state = state
        return tracker.update(call, request)

    assert step("failed (407 Proxy Authentication Required)") == []  # never told: nothing to end
    assert step("trying") == ["1001"] and tracker.dialogs("1002") == ()
    [trying] = tracker.dialogs("1001")
    assert (trying.state, trying.direction, trying.remote_tag) == ("trying", "initiator", None)
    call.to_tag = "tt"
    assert step("ringing") == ["1001", "1002"] and step("ringing") == []  # no change, no NOTIFY
    [caller], [callee] = tracker.dialogs("1001"), tracker.dialogs("1002")
    assert caller.id == trying.id and caller.state == callee.state == "early"
    assert (callee.direction, callee.local_tag, callee.remote_tag, callee.remote_identity) == (
        "recipient", "tt", "ft", aor("1001"))
    assert step("connected") == ["1001", "1002"]
    bye = Request("BYE", aor("1001"), Headers([("From", f"<{aor('1002')}>;tag=tt"), ("To", f"<{aor('1001')}>;tag=ft"),
                                               ("Call-ID", "c1")]))
    assert step("ended", bye) == ["1001", "1002"]
    assert [(d.state, d.event) for d in tracker.dialogs("1001") + tracker.dialogs("1002")] == [
        ("terminated", "remote-bye"), ("terminated", "local-bye")]  # the callee hung up
    tracker.prune("1001")
    tracker.prune("1002")
    assert tracker.dialogs("1001") == tracker.dialogs("1002") == ()
    outside = CallRecord("c2", aor("1001"), "sip:600@lab.test", "INVITE", 0.0, state="trying", from_tag="x")
    assert tracker.update(outside, invite) == ["1001"]
    outside.state = "failed (408 Request Timeout)"
    assert tracker.update(outside, invite) == ["1001"]
    assert [(d.event, d.code) for d in tracker.dialogs("1001")] == [("timeout", 408)]
    tracker.prune("1001")
    for n in range(MAX_DIALOGS_PER_USER + 3):
        tracker.update(CallRecord(f"m{n}", aor("1001"), aor("9"), "INVITE", 0.0, state="connected"), invite)
    kept = tracker.dialogs("1001")
    assert len(kept) == MAX_DIALOGS_PER_USER and kept[0].call_id == "m3"
    message = CallRecord("c3", aor("1001"), aor("1002"), "MESSAGE", 0.0, state="delivered")
    assert tracker.update(message, invite) == []


# -- with a raw socket --------------------------------------------------------------------------

class Raw:
    """A SIP client of exact bytes on a UDP socket of 127.0.0.1, as lab user ``user``: it
    answers the lab's digest challenges (:meth:`authed`) and keeps the requests the lab sends
    it (NOTIFYs) for :meth:`request`; NOTIFYs are answered only when the test says."""

    def __init__(self, lab: Lab, user: str) -> None:
        self.lab, self.user = lab, user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.requests: list[Request] = []

    async def __aenter__(self) -> Raw:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    def build(self, method: str, uri: str, *, to: str | None = None, extra: str = "", body: bytes = b"",
              call_id: str | None = None, cseq: int = 1, to_tag: str | None = None) -> bytes:
        n = next(_numbers)
        return (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bKraw{n}\r\n"
                f"Max-Forwards: 70\r\nFrom: <{aor(self.user)}>;tag=raw{self.user}\r\n"
                f"To: <{to or uri}>{f';tag={to_tag}' if to_tag else ''}\r\n"
                f"Call-ID: {call_id or f'raw-{n}'}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, ("127.0.0.1", udp_port(self.lab)))

    async def _receive(self, timeout: float) -> Request | Response:
        raw = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        return parse_message(raw)

    async def final(self, timeout: float = 5.0) -> Response:
        """The next final response (provisional ones skipped, requests kept)."""
        while True:
            message = await self._receive(timeout)
            if isinstance(message, Request):
                self.requests.append(message)
            elif message.status_code >= 200:
                return message

    async def request(self, timeout: float = 5.0) -> Request:
        """The next request the lab sent us (a NOTIFY), not yet answered; retransmissions of
        the one before are skipped."""
        while not self.requests:
            message = await self._receive(timeout)
            if isinstance(message, Request):
                self.requests.append(message)
        return self.requests.pop(0)

    async def answer(self, request: Request, code: int = 200) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, build_response(request, code).to_bytes(),
                                                     ("127.0.0.1", udp_port(self.lab)))

    async def authed(self, method: str, uri: str, **kw: Any) -> Response:
        """Send the request; answer a 401/407 with this user's credentials (CSeq + 1); the
        final response."""
        call_id = kw.pop("call_id", None) or f"raw-auth-{next(_numbers)}"
        await self.send(self.build(method, uri, call_id=call_id, **kw))
        first = await self.final()
        if first.status_code not in (401, 407):
            return first
        proxy = first.status_code == 407
        header = first.headers.get("Proxy-Authenticate" if proxy else "WWW-Authenticate") or ""
        name, value = DigestClient(self.user, f"demo{self.user}").authorization(
            DigestChallenge.parse(header, proxy=proxy), method, uri)
        extra = kw.pop("extra", "") + f"{name}: {value}\r\n"
        await self.send(self.build(method, uri, call_id=call_id, cseq=kw.pop("cseq", 1) + 1, extra=extra, **kw))
        return await self.final()


def pidf_extra(etag: str | None = None, expires: int | None = None) -> str:
    return ("Event: presence\r\nContent-Type: application/pidf+xml\r\n"
            + (f"SIP-If-Match: {etag}\r\n" if etag else "") + (f"Expires: {expires}\r\n" if expires is not None else ""))


async def test_refusals(lab: Lab) -> None:
    async with Raw(lab, "1001") as raw:
        nobody = await raw.authed("SUBSCRIBE", f"sip:9999@{DOMAIN}", extra="Event: dialog\r\n")
        assert nobody.status_code == 404
        for method, user in (("SUBSCRIBE", "1002"), ("PUBLISH", "1001")):
            bad = await raw.authed(method, aor(user), extra="Event: conference\r\n", body=b"x" * (method == "PUBLISH"))
            assert bad.status_code == 489, bad.summary
            assert {e.strip() for e in (bad.headers.get("Allow-Events") or "").split(",")} == {
                "message-summary", "presence", "dialog"}
        someone_else = await raw.authed("PUBLISH", aor("1002"), extra=pidf_extra(),
                                        body=build_pidf(aor("1002"), "open"))
        assert someone_else.status_code == 403
        broken = await raw.authed("PUBLISH", aor("1001"), extra=pidf_extra(), body=b"<presence entity='x'><tuple>")
        assert broken.status_code == 400 and "not well-formed" in (broken.headers.get("Warning") or "")
        not_pidf = await raw.authed("PUBLISH", aor("1001"), extra="Event: presence\r\nContent-Type: text/plain\r\n",
                                    body=b"open")
        assert not_pidf.status_code == 415 and not_pidf.headers.get("Accept") == "application/pidf+xml"
        unknown = await raw.authed("PUBLISH", aor("1001"), extra=pidf_extra("no-such-etag"))
        assert (unknown.status_code, unknown.reason) == (412, "Conditional Request Failed")
        empty = await raw.authed("PUBLISH", aor("1001"), extra="Event: presence\r\n")
        assert empty.status_code == 400
        bad_expires = await raw.authed("SUBSCRIBE", aor("1002"), extra="Event: presence\r\nExpires: soon\r\n")
        assert bad_expires.status_code == 400
    assert lab.proxy is not None
    assert lab.proxy.subscriptions() == {"message-summary": 0, "presence": 0, "dialog": 0, "publications": 0}


async def test_publish_refresh_modify_remove(lab: Lab) -> None:
    """RFC 3903 §6: 200 with a SIP-ETag and the granted Expires (cut to 3600); a refresh
    without a body gets a new entity-tag and the old one is then unknown (412); removal with
    Expires 0. A watcher hears the published document, then the registrar's view again."""
    assert lab.proxy is not None
    async with Raw(lab, "1001") as raw, SIPPhone(account(lab, "1003")) as watcher:
        watcher.watch("1001", "presence")
        await wait_for(watcher, presence(aor("1001"), "closed", ()))
        first = await raw.authed("PUBLISH", aor("1001"), extra=pidf_extra(expires=7200),
                                 body=build_pidf(aor("1001"), "open", note="raw"))
        etag = first.headers.get("SIP-ETag")
        assert first.status_code == 200 and etag and first.headers.get("Expires") == "3600"
        await wait_for(watcher, presence(aor("1001"), "open", ("raw",)))
        refresh = await raw.authed("PUBLISH", aor("1001"), extra="Event: presence\r\n"
                                   f"SIP-If-Match: {etag}\r\nExpires: 60\r\n")
        etag2 = refresh.headers.get("SIP-ETag")
        assert refresh.status_code == 200 and etag2 and etag2 != etag and refresh.headers.get("Expires") == "60"
        stale = await raw.authed("PUBLISH", aor("1001"), extra=pidf_extra(etag, 60))
        assert stale.status_code == 412
        assert lab.proxy.subscriptions()["publications"] == 1
        removed = await raw.authed("PUBLISH", aor("1001"), extra=f"Event: presence\r\nSIP-If-Match: {etag2}\r\n"
                                   "Expires: 0\r\n")
        assert removed.status_code == 200 and removed.headers.get("Expires") == "0"
        assert lab.proxy.subscriptions()["publications"] == 0
        await wait_for(watcher, presence(aor("1001"), "closed", ()))


async def test_fetch_unsubscribe_and_event_id(lab: Lab) -> None:
    """A new SUBSCRIBE with Expires 0 is a fetch: 200, one NOTIFY ``terminated`` with the
    state. A subscription (``Event: dialog;id=7``): 200 with its Expires, a NOTIFY of version 0
    echoing the Event id; unsubscribing in its dialog: 200 and a last NOTIFY (version 1,
    ``terminated``)."""
    assert lab.proxy is not None
    async with Raw(lab, "1001") as raw:
        fetch = await raw.authed("SUBSCRIBE", aor("1002"), extra="Event: presence\r\nExpires: 0\r\n")
        assert fetch.status_code == 200 and fetch.headers.get("Expires") == "0"
        notify = await raw.request()
        await raw.answer(notify)
        assert notify.headers.get("Subscription-State", "").startswith("terminated")
        assert parse_pidf(notify.body).basic == "closed" and notify.headers.get("Content-Type") == "application/pidf+xml"
        ok = await raw.authed("SUBSCRIBE", aor("1002"), extra="Event: dialog;id=7\r\nExpires: 120\r\n",
                              call_id="sub-1")
        assert ok.status_code == 200 and ok.headers.get("Expires") == "120" and ok.to_tag
        assert "dialog" in (ok.headers.get("Allow-Events") or "") and ok.headers.get("Contact")
        notify = await raw.request()
        await raw.answer(notify)
        assert notify.headers.get("Event") == "dialog;id=7"
        assert notify.headers.get("Subscription-State", "").startswith("active;expires=")
        info = parse_dialog_info(notify.body)
        assert (info.version, info.state, info.entity, info.dialogs) == (0, "full", aor("1002"), ())
        assert lab.proxy.subscriptions()["dialog"] == 1
        target = (notify.headers.get("Contact") or "").strip("<>")
        await raw.send(raw.build("SUBSCRIBE", target, to=aor("1002"), to_tag=ok.to_tag, call_id="sub-1", cseq=3,
                                 extra="Event: dialog;id=7\r\nExpires: 30\r\n"))  # a refresh (RFC 6665 §4.1.2.2)
        refreshed = await raw.final()
        assert refreshed.status_code == 200 and refreshed.headers.get("Expires") == "30"
        again = await raw.request()
        await raw.answer(again)
        assert again.headers.get("Subscription-State", "").startswith("active;expires=")
        assert parse_dialog_info(again.body).version == 1 and again.call_id == "sub-1"
        await raw.send(raw.build("SUBSCRIBE", target, to=aor("1002"), to_tag=ok.to_tag, call_id="sub-1", cseq=2,
                                 extra="Event: dialog\r\nExpires: 30\r\n"))
        assert (await raw.final()).status_code == 500  # CSeq not above the last (RFC 3261 §12.2.2)
        await raw.send(raw.build("SUBSCRIBE", target, to=aor("1002"), to_tag=ok.to_tag, call_id="sub-1", cseq=4,
                                 extra="Event: dialog;id=7\r\nExpires: 0\r\n"))
        assert (await raw.final()).status_code == 200
        last = await raw.request()
        await raw.answer(last)
        assert last.headers.get("Subscription-State") == "terminated"
        assert parse_dialog_info(last.body).version == 2
        assert lab.proxy.subscriptions()["dialog"] == 0


async def test_expiry_and_dead_subscribers(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscription not refreshed ends with ``terminated;reason=timeout`` (RFC 6665 §4.2.2);
    one whose NOTIFY is answered 481, or not answered at all, is dropped."""
    assert lab.proxy is not None
    monkeypatch.setattr(lab_notifier, "NOTIFY_TIMEOUT", 1.0)
    async with Raw(lab, "1001") as raw:
        ok = await raw.authed("SUBSCRIBE", aor("1002"), extra="Event: dialog\r\nExpires: 1\r\n")
        assert ok.status_code == 200 and ok.headers.get("Expires") == "1"
        await raw.answer(await raw.request())
        ended = await raw.request(timeout=4)
        await raw.answer(ended)
        assert ended.headers.get("Subscription-State") == "terminated;reason=timeout"
        assert lab.proxy.subscriptions()["dialog"] == 0
        # answered 481: gone at once
        assert (await raw.authed("SUBSCRIBE", aor("1002"), extra="Event: presence\r\n")).status_code == 200
        await raw.answer(await raw.request(), 481)
        for _ in range(40):
            if lab.proxy.subscriptions()["presence"] == 0:
                break
            await asyncio.sleep(0.05)
        assert lab.proxy.subscriptions()["presence"] == 0
        # not answered: gone after the NOTIFY's time (1 s here)
        assert (await raw.authed("SUBSCRIBE", aor("1003"), extra="Event: presence\r\n")).status_code == 200
        await raw.request()
        assert lab.proxy.subscriptions()["presence"] == 1
        await asyncio.sleep(1.5)
        assert lab.proxy.subscriptions()["presence"] == 0


async def test_bounds_and_allow_events(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the per-watcher bound a SUBSCRIBE is refused 503 with Retry-After (lowered to 2
    here); OPTIONS to the lab lists the packages; ``GET /api/lab`` counts the subscriptions."""
    assert lab.proxy is not None
    monkeypatch.setattr(PresenceNotifier, "max_per_watcher", 2)
    async with Raw(lab, "1001") as raw:
        for user in ("1002", "1003"):
            assert (await raw.authed("SUBSCRIBE", aor(user), extra="Event: dialog\r\n")).status_code == 200
            await raw.answer(await raw.request())
        third = await raw.authed("SUBSCRIBE", aor("1001"), extra="Event: presence\r\n")
        assert third.status_code == 503 and third.headers.get("Retry-After")
        await raw.send(raw.build("OPTIONS", f"sip:{DOMAIN}"))
        options = await raw.final()
        assert options.status_code == 200
        assert (options.headers.get("Allow-Events") or "").replace(" ", "") == "message-summary,presence,dialog"
        assert {"SUBSCRIBE", "PUBLISH"} <= {m.strip() for m in (options.headers.get("Allow") or "").split(",")}
        transport = httpx.ASGITransport(app=create_app(lab=lab))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = (await client.get("/api/lab")).json()
        assert body["subscriptions"] == {"message-summary": 0, "presence": 0, "dialog": 2, "publications": 0}
