"""The lab's SIP registrar and proxy against real phones on 127.0.0.1: baresip registers over
UDP, TCP and TLS and calls the lab's echo (its recording has its own tone back), baresip and
our SIPPhone call each other through the lab with audio both ways (tone frequencies in both
recordings), 404/480/486 as a PBX answers, binding expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from baresip_peer import baresip
from test_phone_baresip import share_of

from skinnysip.lab.config import LabSettings
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import CallState, IncomingCall, RegistrationState
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

DOMAIN = "skinnysip.test"  # the baresip harness's AOR domain
OUR_TONE, THEIR_TONE = 440.0, 660.0


def settings(**kw: object) -> LabSettings:
    base: dict[str, object] = dict(domain=DOMAIN, realm=DOMAIN, hosts=("127.0.0.1",), sip_port=0, sips_port=0,
                                   sccp_port=0)
    base.update(kw)
    return LabSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


def port(lab: Lab, transport: str) -> int:
    return int(lab.sip[transport].rsplit(":", 1)[1])


async def registered(lab: Lab, user: str, count: int = 1, timeout: float = 10.0) -> None:
    assert lab.proxy is not None
    for _ in range(int(timeout / 0.1)):
        if len([b for b in lab.proxy.bindings() if b["user"] == user]) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user} never registered: {lab.proxy.bindings()}")


def account(lab: Lab, user: str, transport: str = "udp", **kw: object) -> SIPAccount:
    options: dict[str, object] = {"source": f"tone:{OUR_TONE}", "expires": 60, **kw}
    return SIPAccount(aor=f"sip:{user}@{DOMAIN}", password=f"demo{user}", registrar=f"127.0.0.1:{port(lab, transport)}",
                      transport=transport, tls_verify=False, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_baresip_registers_and_hears_the_echo(lab: Lab, transport: str) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, transport)}", transport=transport,
                       tone_hz=THEIR_TONE) as phone:
        await registered(lab, "1001")
        binding = next(b for b in lab.proxy.bindings() if b["user"] == "1001")  # type: ignore[union-attr]
        assert binding["transport"] == transport
        await phone.command("dial", f"sip:600@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(4)
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
        heard = share_of(phone.recordings()["dec"], THEIR_TONE, skip=0.5)
    assert heard >= 0.85, heard
    calls = lab.calls()
    call = next(c for c in calls if c["to"].startswith("sip:600@"))
    summaries = [m["summary"] for m in call["messages"]]
    assert "407 Proxy Authentication Required" in summaries and any(s.startswith("ACK") for s in summaries)
    assert any(s.startswith("BYE") for s in summaries) and call["state"] == "ended"


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_baresip_calls_our_phone_through_the_lab(lab: Lab, transport: str, tmp_path: Path) -> None:
    """baresip (UDP) calls our phone registered over ``transport``: the lab forwards the INVITE
    over the flow of our registration (cross-transport), audio flows both ways."""
    async with SIPPhone(account(lab, "1002", transport, auto_answer=0.2, record_dir=str(tmp_path))) as ours, \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as theirs:
        await registered(lab, "1001")
        await registered(lab, "1002")
        await theirs.command("dial", f"sip:1002@{DOMAIN}")
        event = await ours.next_event(10)
        while event is not None and not isinstance(event, IncomingCall):
            event = await ours.next_event(10)
        assert isinstance(event, IncomingCall)
        call = event.call
        assert await call.wait_connected(10)
        await theirs.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(4)
        await theirs.command("hangup")
        assert await call.wait_ended(10)
        assert call.end_reason == "BYE received"
        report = call.media_report()
        baresip_heard = share_of(theirs.recordings()["dec"], OUR_TONE, skip=0.5)
    assert report is not None
    assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE, skip=0.5) >= 0.85
    assert baresip_heard >= 0.85
    # the lab record-routed the call: our phone's INVITE carries the lab's Record-Route(s)
    invite = next(m for m in call.exchange if m.summary.startswith("INVITE") and m.direction == "received")
    assert "Record-Route:" in invite.raw
    record = next(c for c in lab.calls() if c["to"].startswith(f"sip:1002@{DOMAIN}"))
    assert record["state"] == "ended"


async def test_our_phone_calls_baresip_and_status_codes(lab: Lab, tmp_path: Path) -> None:
    """Our phone (TCP) calls baresip (UDP): audio both ways; then 404 for an unknown user, 480
    for a known one without registration, 486 from a callee that is busy passes through."""
    async with SIPPhone(account(lab, "1002", "tcp", record_dir=str(tmp_path))) as ours, \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as theirs:
        await registered(lab, "1001")
        call = await ours.call("1001")
        assert await call.wait_connected(15), call.end_reason
        await theirs.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3)
        await call.hangup()
        assert call.state is CallState.TERMINATED
        await theirs.wait_event("CALL_CLOSED")
        report = call.media_report()
        assert report is not None
        assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE, skip=0.5) >= 0.85
        assert share_of(theirs.recordings()["dec"], OUR_TONE, skip=0.5) >= 0.85

        for target, code in (("9999", "404"), ("1003", "480")):
            failed = await ours.call(target)
            assert not await failed.wait_connected(10)
            assert code in (failed.end_reason or ""), failed.end_reason

        async with SIPPhone(account(lab, "1003")) as busy:
            await registered(lab, "1003")
            attempt = await ours.call("1003")
            event = await busy.next_event(10)
            while event is not None and not isinstance(event, IncomingCall):
                event = await busy.next_event(10)
            assert isinstance(event, IncomingCall)
            await event.call.reject(486)
            assert not await attempt.wait_connected(10)
            assert "486" in (attempt.end_reason or ""), attempt.end_reason
    states = {c["to"]: c["state"] for c in lab.calls()}
    assert states[f"sip:9999@{DOMAIN}"].startswith("failed (404")
    assert states[f"sip:1003@{DOMAIN}"].startswith("failed (486")


async def test_forking_to_two_contacts_and_cancel(lab: Lab, tmp_path: Path) -> None:
    """User 1002 registered from two phones (two bindings): the lab rings both in parallel;
    the one that answers gets the call and the other one is CANCELled (RFC 3261 §16.7 step 10)
    with ``Reason: SIP;cause=200`` (RFC 3326), so it reports "answered elsewhere".
    Then a caller that gives up while both ring CANCELs through the lab: both stop ringing,
    the caller's INVITE ends with 487."""
    async with SIPPhone(account(lab, "1002", "udp")) as first, SIPPhone(account(lab, "1002", "tcp")) as second, \
            SIPPhone(account(lab, "1001")) as caller:
        await registered(lab, "1002", count=2)

        async def ringing(phone: SIPPhone) -> IncomingCall:
            event = await phone.next_event(10)
            while event is not None and not isinstance(event, IncomingCall):
                event = await phone.next_event(10)
            assert isinstance(event, IncomingCall)
            return event

        call = await caller.call("1002")
        one, two = await ringing(first), await ringing(second)
        await two.call.answer()
        assert await call.wait_connected(10), call.end_reason
        assert await one.call.wait_ended(10)  # the other branch was cancelled…
        assert one.call.state is CallState.TERMINATED
        # …saying why (RFC 3326): that phone was not missed, the call was answered on the other
        assert one.call.end_reason == "answered elsewhere", one.call.end_reason
        assert one.call.remote_reason == "SIP cause 200 (Call completed elsewhere)"
        await call.hangup()
        assert await two.call.wait_ended(10)

        attempt = await caller.call("1002")
        one, two = await ringing(first), await ringing(second)
        await asyncio.sleep(0.5)
        await attempt.hangup()  # before any answer: CANCEL
        assert await one.call.wait_ended(10) and await two.call.wait_ended(10)
        assert (one.call.end_reason, two.call.end_reason) == ("cancelled by the caller",) * 2
        assert await attempt.wait_ended(10)
        assert not attempt.connected
    cancelled = [c for c in lab.calls() if c["callId"] == attempt.call_id][0]
    summaries = [m["summary"] for m in cancelled["messages"]]
    assert sum(1 for s in summaries if s.startswith("CANCEL")) == 3  # ours in, one out per branch
    assert any(s.startswith("487") for s in summaries)


async def test_failed_forwards_leave_nothing_pending(lab: Lab) -> None:
    """404/480 answered inside the forwarding path leave no proxy state behind (bounded
    memory: MAX_PENDING forwards at once)."""
    async with SIPPhone(account(lab, "1001")) as caller:
        for target in ("9999", "1003", "9998"):
            attempt = await caller.call(target)
            assert not await attempt.wait_connected(10)
    assert lab.proxy is not None and lab.proxy._forwards == {}


async def test_tls_certificate_made_at_start_or_given(tmp_path: Path) -> None:
    """Without tls.cert/tls.key the lab makes a self-signed certificate naming its domain and
    listen addresses: a phone that checks the server certificate against it (ca_file) registers
    over TLS. A given certificate is used as it is."""
    from skinnysip.lab.runner import self_signed_certificate

    async with Lab(settings()) as made:
        assert made.tls_cert is not None
        strict = SIPAccount(aor=f"sip:1001@{DOMAIN}", password="demo1001", registrar=f"127.0.0.1:{port(made, 'tls')}",
                            transport="tls", tls_verify=True, ca_file=made.tls_cert, expires=60, source="silence")
        async with SIPPhone(strict) as phone:
            assert phone.registration is RegistrationState.REGISTERED
    cert, key = self_signed_certificate(tmp_path, ["given.test"], ["127.0.0.1"])
    async with Lab(settings(tls_cert=cert, tls_key=key)) as given:
        assert given.tls_cert == cert
        strict = SIPAccount(aor=f"sip:1001@{DOMAIN}", password="demo1001", registrar=f"127.0.0.1:{port(given, 'tls')}",
                            transport="tls", tls_verify=True, ca_file=cert, expires=60, source="silence")
        async with SIPPhone(strict) as phone:
            assert phone.registration is RegistrationState.REGISTERED


async def test_a_phone_whose_domain_is_the_labs_address(lab: Lab, tmp_path: Path) -> None:
    """A phone set up with the lab's IP address as its domain (AOR ``sip:1001@127.0.0.1``, no
    port) registers and reaches the echo service at ``sip:600@127.0.0.1``: a domain is a host
    (RFC 3261 §10.2), whatever port the lab listens on. Our tone comes back."""
    aor = "sip:1001@127.0.0.1"
    async with SIPPhone(SIPAccount(aor=aor, password="demo1001", registrar=f"127.0.0.1:{port(lab, 'udp')}",
                                   source=f"tone:{OUR_TONE}", expires=60, record_dir=str(tmp_path))) as ours:
        await registered(lab, "1001")
        call = await ours.call("sip:600@127.0.0.1")
        assert await call.wait_connected(10), call.end_reason
        assert call.exchange[0].summary == "INVITE sip:600@127.0.0.1"
        await asyncio.sleep(2.5)
        await call.hangup()
        report = call.media_report()
    assert report is not None
    assert share_of(Path(report["recordings"]["rx"]), OUR_TONE, skip=0.5) >= 0.85


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_browser_phones_use_the_lab_over_websocket(transport: str, tmp_path: Path) -> None:
    """With ``ws_port``/``wss_port`` the lab is a WebSocket SIP server (RFC 7118), as a WebRTC
    gateway is for JsSIP or SIP.js: our phone registers over it, hears its own tone from the
    echo, and baresip (UDP) reaches it through the lab — the INVITE comes down the phone's own
    WebSocket, record-routed with ``transport=ws`` — and hears it."""
    from test_phone_srtp import incoming

    async with Lab(settings(ws_port=0, wss_port=0)) as lab:
        assert set(lab.sip) == {"udp", "tcp", "tls", "ws", "wss"}, lab.sip
        async with SIPPhone(account(lab, "1001", transport, record_dir=str(tmp_path), auto_answer=0.2)) as ours, \
                baresip("1002", "demo1002", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as bob:
            assert ours.registration is RegistrationState.REGISTERED, ours.registration_reason
            [binding] = [b for b in lab.proxy.bindings() if b["user"] == "1001"]  # type: ignore[union-attr]
            assert ";transport=ws" in binding["contact"], binding
            echo = await ours.call("600")
            assert await echo.wait_connected(10), echo.end_reason
            await asyncio.sleep(2)
            await echo.hangup()
            report = echo.media_report()
            assert report is not None and share_of(Path(report["recordings"]["rx"]), OUR_TONE) >= 0.9

            await registered(lab, "1002")
            await bob.command("dial", f"sip:1001@{DOMAIN}")
            call = await incoming(ours)
            assert await call.wait_connected(10), call.end_reason
            invite = next(m for m in call.exchange if m.direction == "received" and m.summary.startswith("INVITE"))
            assert invite.transport == transport and "transport=ws" in invite.raw.split("Record-Route:", 1)[1]
            await asyncio.sleep(2)
            await call.hangup()
            await bob.wait_event("CALL_CLOSED")  # its recording is complete then
            report = call.media_report()
            assert report is not None and share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
            assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95
