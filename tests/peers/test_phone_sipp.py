"""The SIP phone against SIPp scenarios written here for what a friendly peer never does:
183 early media, a 3xx redirect, a forked second 2xx, an offerless INVITE, re-INVITE glare
(491), and a CANCEL crossing the 200 (RFC 3261 §9.1, §13.2.2.4, §13.2.1, §14.1; RFC 3264)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import sip_peers
from sip_peers import sipp_uac
from test_phone_baresip import share_of

from peertools import free_port
from skinnysip.phone.api import (
    CallState,
    CallStateChanged,
    ErrorEvent,
    IncomingCall,
    MessageWaiting,
    PhoneError,
    event_to_dict,
)
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
TAIL = "</scenario>\n"
SDP = """Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
"""


def response(status: str, tag: str = "[pid]SIPpTag01[call_number]", sdp: bool = False, extra: str = "",
             cseq: str = "[last_CSeq:]", body: str | None = None) -> str:
    """SIPp's response: ``body`` (its Content-* lines first, as :func:`sdp_body` makes them),
    else SIPp's SDP with ``sdp``, else none."""
    if body is None:
        body = SDP if sdp else "Content-Length: 0\n\n"
    return f"""  <send><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag={tag}
[last_Call-ID:]
{cseq}
Contact: <sip:sipp@[local_ip]:[local_port]>
{extra}{body}]]></send>
"""


def recv(what: str, optional: bool = False) -> str:
    attr = f'request="{what}"' if not what.isdigit() else f'response="{what}"'
    opt = ' optional="true"' if optional else ""
    return f"  <recv {attr}{opt}/>\n"


def bye_answer() -> str:
    return recv("BYE") + response("200 OK", tag="")  # [last_To:] of the BYE already has the tag


NO_BODY = "Content-Length: 0\n\n"


def sdp_body(media: str, connection: str = "c=IN IP4 [media_ip]") -> str:
    """An SDP body with its Content-Type and Content-Length lines: the session-level
    ``connection`` line (RFC 4566 §5: before ``t=``), then ``media`` (``m=``/``a=`` lines;
    SIPp keywords allowed)."""
    return ("Content-Type: application/sdp\nContent-Length: [len]\n\n"
            f"v=0\no=sipp 1 1 IN IP4 [local_ip]\ns=-\n{connection}\nt=0 0\n{media}\n")


def uac_invite(port: int, headers: str = "", body: str = SDP) -> str:
    """SIPp (as UAC) sends an INVITE with ``body`` (default: our SDP offer) and the ``headers``
    lines to our phone on ``port``; a 100 may come."""
    return f"""  <send retrans="500"><![CDATA[
INVITE sip:alice@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:alice@127.0.0.1:{port}>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port]>
{headers}Max-Forwards: 70
{body}]]></send>
""" + recv("100", True)


def uac_ack(port: int, *, for_2xx: bool, body: str = NO_BODY, cseq: int = 1, in_dialog: bool = False) -> str:
    """SIPp's ACK of the request with CSeq ``cseq``: for a 2xx a new transaction to the
    Contact; else in the request's transaction (its Via), to the Request-URI — or, for a
    refused in-dialog request (``in_dialog``), to the dialog's remote target."""
    if for_2xx:
        first = "ACK [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]"
    else:
        first = f"ACK {'[next_url]' if in_dialog else f'sip:alice@127.0.0.1:{port}'} SIP/2.0\n[last_Via:]"
    return f"""  <send><![CDATA[
{first}
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
{body}]]></send>
"""


def uac_ack_refusal(cseq: int) -> str:
    """SIPp's ACK for a non-2xx final response to its in-dialog request of CSeq ``cseq`` (a
    re-INVITE): in that transaction (its Via), to the dialog's remote target."""
    return uac_ack(0, for_2xx=False, cseq=cseq, in_dialog=True)


def uac_in_dialog(method: str, cseq: int, *, to: str = "[last_To:]", headers: str = "", body: str = NO_BODY) -> str:
    """SIPp (the caller, tag ``…SIPpTag00…``) sends ``method`` in its dialog, to the last
    response's Contact and Record-Route (``[next_url]``), retransmitted; ``to``: the To line
    (the last message's, or e.g. ``To:[$to]`` saved from the 200); ``headers``: more lines."""
    return f"""  <send retrans="500"><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
{to}
Call-ID: [call_id]
CSeq: {cseq} {method}
{headers}Max-Forwards: 70
{body}]]></send>
"""


def uac_bye(after_ms: int, cseq: int = 2) -> str:
    """SIPp hangs up ``after_ms`` after the ACK: BYE in the dialog, then its 200."""
    return f'  <pause milliseconds="{after_ms}"/>\n' + uac_in_dialog("BYE", cseq) + recv("200")


def phone_account(**kw: object) -> SIPAccount:
    return SIPAccount(aor="sip:alice@127.0.0.1", register=False, listen_host="127.0.0.1",
                      source="tone:440", **kw)  # type: ignore[arg-type]


def uas_bye(extra: str = "") -> str:
    """SIPp (the callee, its INVITE's From kept in ``$caller``) sends BYE in its dialog, with
    ``extra`` header lines."""
    return """  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:service@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To:[$caller]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
""" + extra + """Content-Length: 0

]]></send>
"""


async def _events(phone: SIPPhone) -> list[object]:
    out = []
    while (event := await phone.next_event(0.05)) is not None:
        out.append(event)
    return out


async def test_183_early_media_then_200() -> None:
    xml = HEAD.format(name="early") + recv("INVITE") + response("183 Session Progress", sdp=True) + \
        '  <pause milliseconds="800"/>\n' + response("200 OK", sdp=True) + recv("ACK") + bye_answer() + TAIL
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            await asyncio.sleep(0.5)
            assert call.state is CallState.EARLY and call.audio is not None  # media set up by the 183
            early_remote = call.audio.remote
            assert early_remote is not None and call.media is not None
            assert await call.wait_connected(5)
            await asyncio.sleep(0.3)
            await call.hangup()
            states = [e.state for e in await _events(phone) if isinstance(e, CallStateChanged)]
        assert states[:2] == [CallState.EARLY, CallState.CONFIRMED]
        assert peer.finish().successful_calls == 1


async def test_3xx_redirect_is_followed() -> None:
    with sip_peers.sipp_uas("answer") as target:
        xml = HEAD.format(name="redirect") + recv("INVITE") + response(
            "302 Moved Temporarily", extra=f"Contact: <sip:moved@127.0.0.1:{target.port}>\n").replace(
            "Contact: <sip:sipp@[local_ip]:[local_port]>\n", "") + recv("ACK") + TAIL
        with sip_peers.sipp_uas(xml=xml) as redirector:
            async with SIPPhone(phone_account()) as phone:
                call = await phone.call(f"sip:service@127.0.0.1:{redirector.port}")
                assert await call.wait_connected(10), call.end_reason
                assert call.remote == f"sip:moved@127.0.0.1:{target.port}"
                await call.hangup()
            assert redirector.finish().successful_calls == 1
        assert target.finish().successful_calls == 1


async def test_forked_second_2xx_is_acked_and_ended() -> None:
    """§13.2.2.4: a second 2xx with another To tag (a fork) creates a dialog too; we ACK it
    and end it with BYE, and keep the first."""
    invite = """  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>
    </action>
  </recv>
"""
    fork = response("200 OK", tag="fork2", sdp=True).replace("[last_Via:]", "Via:[$via]").replace(
        "[last_CSeq:]", "CSeq: 1 INVITE").replace("[last_To:]", "To: <sip:service@[local_ip]:[local_port]>")
    xml = (HEAD.format(name="fork") + invite + response("180 Ringing") + response("200 OK", sdp=True)
           + recv("ACK") + fork + recv("ACK") + recv("BYE")
           + response("200 OK", tag="") + recv("BYE") + response("200 OK", tag="") + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5)
            await asyncio.sleep(1.0)
            assert call.state is CallState.CONFIRMED and call.dialog is not None
            assert call.dialog.remote_tag != "fork2"
            sent = [m for m in call.exchange if m.direction == "sent"]
            bye = [m for m in sent if m.summary.startswith("BYE")]
            assert len(bye) == 1 and "tag=fork2" in bye[0].raw
            await call.hangup()
        assert peer.finish().successful_calls == 1


async def test_offerless_invite_is_answered_with_an_offer() -> None:
    """§13.2.1 / RFC 3264: an INVITE without SDP gets our offer in the 200; the answer comes
    in the ACK and sets up the media."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="offerless") + uac_invite(port, body=NO_BODY) + recv("180", True)
           + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True, body=SDP) + uac_bye(1500) + TAIL)
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
        calls = [e.call for e in events if isinstance(e, CallStateChanged)]
        assert calls and calls[0].audio is not None and calls[0].audio.remote is not None  # from the ACK
        states = [e.state for e in events if isinstance(e, CallStateChanged)]
        assert CallState.CONFIRMED in states and states[-1] is CallState.TERMINATED


@pytest.mark.parametrize("srtp", ["mandatory", "dtls"])
async def test_an_ack_answer_that_refuses_srtp_ends_the_call_with_a_reason(srtp: str) -> None:
    """An offerless INVITE: our 200 offers SRTP (RTP/SAVP with a=crypto, or DTLS-SRTP), the
    ACK answers plain RTP/AVP. There is no media we may send (the call fails as RFC 4568
    §7.1.2 / RFC 5763 want), so we BYE at once, and the BYE says why: ``Reason: SIP;cause=488``
    with the text (RFC 3326) — SIPp checks the header on the wire. (Before, the refusal in
    the ACK was ignored and the call stayed up without media.)"""
    port = free_port(socket.SOCK_DGRAM)
    check = ('  <recv request="BYE"><action><ereg regexp="SIP;cause=488;text=.the far end refused SRTP" '
             'search_in="hdr" header="Reason:" check_it="true" assign_to="r"/></action></recv>\n'
             '  <Reference variables="r"/>\n')
    xml = (HEAD.format(name="ack-refuses-srtp") + uac_invite(port, body=NO_BODY) + recv("180", True)
           + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True, body=SDP)
           + check + response("200 OK", tag="") + TAIL)
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0, srtp=srtp)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
        calls = [e.call for e in events if isinstance(e, CallStateChanged)]
        assert calls and calls[-1].end_reason is not None
        assert calls[-1].end_reason.startswith("the far end refused SRTP"), calls[-1].end_reason


async def test_reinvite_glare_491_is_retried() -> None:
    """§14.1: our re-INVITE (hold) gets 491 Request Pending; we retry after 2.1-4 s (we own
    the Call-ID) and the second one is accepted."""
    xml = (HEAD.format(name="glare") + recv("INVITE") + response("200 OK", sdp=True) + recv("ACK")
           + recv("INVITE") + response("491 Request Pending", tag="") + recv("ACK")
           + recv("INVITE") + response("200 OK", tag="", sdp=True) + recv("ACK") + bye_answer() + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await call.hold()
            waited = loop.time() - started
            assert call.local_hold and 2.0 <= waited < 6.0
            await call.hangup()
        assert peer.finish().successful_calls == 1


async def test_cancel_crossing_the_200_ends_the_call_with_bye() -> None:
    """§9.1: our CANCEL and the callee's 200 cross; the 200 wins, so we ACK it and send BYE."""
    xml = (HEAD.format(name="cross") + recv("INVITE") + response("180 Ringing") + recv("CANCEL")
           + response("200 OK", cseq="CSeq: 1 CANCEL").replace("Contact: <sip:sipp@[local_ip]:[local_port]>\n", "")
           + response("200 OK", sdp=True, cseq="CSeq: 1 INVITE") + recv("ACK") + bye_answer() + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            await asyncio.sleep(0.5)
            assert call.state is CallState.EARLY
            await call.hangup()
            assert call.state is CallState.TERMINATED
            await asyncio.sleep(0.5)
            sent = [m.summary for m in call.exchange if m.direction == "sent"]
            assert [s.split()[0] for s in sent] == ["INVITE", "CANCEL", "ACK", "BYE"]
        assert peer.finish().successful_calls == 1


async def test_caller_cancels_while_we_ring() -> None:
    """§9.2: the caller's CANCEL gets 200, the INVITE 487 (ACKed), the call ends here."""
    port = free_port(socket.SOCK_DGRAM)
    xml = HEAD.format(name="cancel") + uac_invite(port) + recv("180") + f"""  <pause milliseconds="500"/>
  <send><![CDATA[
CANCEL sip:alice@127.0.0.1:{port} SIP/2.0
[last_Via:]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:alice@127.0.0.1:{port}>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

]]></send>
""" + recv("200") + recv("487") + uac_ack(port, for_2xx=False) + TAIL
    async with SIPPhone(phone_account(listen_port=port)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
        ended = [e for e in events if isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED]
        assert ended and ended[0].reason == "cancelled by the caller"
        assert not phone.calls


async def test_far_end_bye_during_our_reinvite() -> None:
    """The callee sends BYE while our re-INVITE (hold) is pending, then 487s the re-INVITE:
    we answer the BYE 200, the call ends, hold() says why, and the 487 is ACKed."""
    first = """  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="caller"/>
    </action>
  </recv>
"""
    reinvite = """  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>
      <ereg regexp=".*" search_in="hdr" header="CSeq:" check_it="true" assign_to="cseq"/>
    </action>
  </recv>
"""
    bye = uas_bye()
    terminated = response("487 Request Terminated", tag="").replace("[last_Via:]", "Via:[$via]").replace(
        "[last_CSeq:]", "CSeq:[$cseq]").replace("[last_To:]", "To: <sip:service@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]").replace(
        "[last_From:]", "From:[$caller]")
    xml = (HEAD.format(name="bye-during-reinvite") + first + response("200 OK", sdp=True) + recv("ACK")
           + reinvite + bye + recv("200") + terminated + recv("ACK") + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5)
            with pytest.raises(PhoneError, match="487 Request Terminated"):
                await call.hold()
            assert await call.wait_ended(5) and call.end_reason == "BYE received"
        assert peer.finish().successful_calls == 1


async def test_the_far_ends_reason_for_its_bye_is_reported() -> None:
    """A PBX's BYE says why (RFC 3326): ``Reason: Q.850;cause=16;text="Normal call clearing"``
    (with a second reason-value for SIP): the call ends "BYE received" and ``remote_reason``
    (the API's ``remoteReason``) gives both, in order."""
    first = """  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="caller"/>
    </action>
  </recv>
"""
    bye = uas_bye('Reason: Q.850;cause=16;text="Normal call clearing", SIP;cause=200;text="OK"\n')
    xml = (HEAD.format(name="bye-with-reason") + first + response("200 OK", sdp=True) + recv("ACK")
           + '  <pause milliseconds="500"/>\n' + bye + recv("200") + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5)
            assert await call.wait_ended(5) and call.end_reason == "BYE received"
            assert call.remote_reason == "Q.850 cause 16 (Normal call clearing); SIP cause 200 (OK)"
            assert call.summary()["remoteReason"] == call.remote_reason
        assert peer.finish().successful_calls == 1


async def test_an_offer_of_the_other_ip_family_is_answered_in_that_family() -> None:
    """RFC 6157 §3.2 (updating RFC 3264): the answer's c= has the offer's network type. An
    IPv6 offer arriving over IPv4 signalling is answered from our IPv6 address (the route's
    to the offer's ``::1``), not refused — a dual-stack phone, as pjsua's "match the offer".
    (Where there is no route in that family, the answer is the 488 with a Warning that
    ``unit/test_sdp_offer_answer.py`` checks.)"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port(socket.SOCK_DGRAM)
    xml = HEAD.format(name="ipv6 offer") + uac_invite(port, body=sdp_body("m=audio 4000 RTP/AVP 0", "c=IN IP6 ::1")) + \
        recv("180", True) + """  <recv response="200" rrs="true">
    <action><ereg regexp="c=IN IP6 ::1" search_in="body" check_it="true" assign_to="family"/></action>
  </recv>
""" + uac_ack(port, for_2xx=True) + uac_bye(500) + '  <Reference variables="family"/>\n' + TAIL
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
    assert not [e for e in events if isinstance(e, ErrorEvent)], events
    call = next(e.call for e in events if isinstance(e, CallStateChanged))
    assert call.audio is not None and call.audio.remote == ("::1", 4000), call.audio
    report = call.media_report()
    assert report is not None and report["local"][0] == "::1", report


async def test_odd_ptime_offers_are_answered_with_ours_and_the_call_has_media(tmp_path: Path) -> None:
    """An a=ptime we cannot send (0, negative, 100 s: RFC 4566 makes it a wish) is ignored:
    20 ms is answered and used, and our 440 Hz comes back from SIPp's RTP echo into our
    recording — no internal error. An IPv4-mapped IPv6 c= (RFC 4291 §2.5.5.2) is the IPv4
    host it maps."""
    for ptime, conn in (("100000", "c=IN IP4 [media_ip]"), ("-5", "c=IN IP6 ::ffff:[media_ip]")):
        port = free_port(socket.SOCK_DGRAM)
        media = sdp_body(f"m=audio [media_port] RTP/AVP 0\na=ptime:{ptime}", conn)
        xml = HEAD.format(name=f"ptime {ptime}") + uac_invite(port, body=media) + recv("180", True) + """  <recv response="200" rrs="true">
    <action><ereg regexp="a=ptime:20" search_in="body" check_it="true" assign_to="ptime"/></action>
  </recv>
""" + uac_ack(port, for_2xx=True) + uac_bye(1500) + '  <Reference variables="ptime"/>\n' + TAIL
        record = tmp_path / f"ptime{ptime}"
        async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0, record_dir=str(record))) as phone:
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15, extra=["-rtp_echo"])
            assert result.returncode == 0, result.errors or result.screen
            events = await _events(phone)
        assert not [e for e in events if isinstance(e, ErrorEvent)], (ptime, events)
        call = next(e.call for e in events if isinstance(e, CallStateChanged))
        assert call.audio is not None and call.audio.ptime == 0.02 and call.audio.remote is not None
        assert call.audio.remote[0] == "127.0.0.1", call.audio.remote
        report = call.media_report()
        assert report is not None and report["sent"]["packets"] >= 40, report and report["sent"]
        heard = share_of(Path(report["recordings"]["rx"]), 440)  # dominant frequency per 20 ms frame
        assert heard >= 0.8, (ptime, heard, report["received"], report["jitter_buffer"])


async def test_closing_the_phone_while_the_far_end_ignores_our_bye() -> None:
    """A callee that never answers BYE (it sees every retransmission and says nothing): closing
    the phone gives up on the BYE after its 5 s and returns; the call is ended, nothing is
    raised (it was a ``TimeoutError`` out of ``close()``, found against twinkle 1.10, which
    left a BYE unanswered after a REFER it did not follow)."""
    ignore_byes = """  <recv request="BYE"/>
  <pause milliseconds="6000"/>
"""  # SIPp absorbs the retransmissions of the BYE it received
    xml = HEAD.format(name="bye-ignored") + recv("INVITE") + response("200 OK", sdp=True) + recv("ACK") + ignore_byes + TAIL
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5), call.end_reason
            closing = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - closing < 8
        assert call.state is CallState.TERMINATED and call.end_reason == "BYE sent"
        result = peer.finish(15)
    assert result.successful_calls == 1, result.log
    # SIPp saw the BYE and its retransmissions (T1 doubling: 0.5, 1.5, 3.5 s) and answered none
    assert result.messages.count("BYE sip:") >= 3 and "SIP/2.0 200" not in result.messages.split("BYE sip:", 1)[1]


def uac_reinvite(cseq: int, body: str) -> str:
    """SIPp (the caller) re-INVITEs in its dialog with ``body``, then ACKs the 2xx."""
    return (uac_in_dialog("INVITE", cseq, headers="Contact: <sip:sipp@[local_ip]:[local_port]>\n", body=body)
            + recv("100", True) + recv("200") + uac_ack(0, for_2xx=True, cseq=cseq))


async def test_a_reinvite_to_the_unspecified_address_is_the_far_ends_hold() -> None:
    """RFC 3264 §8.4: an agent must understand RFC 2543's hold, ``c=0.0.0.0`` (here with
    ``a=sendrecv``, as twinkle's ``hold_variant=rfc2543`` sends it), as "send neither RTP nor
    RTCP to the peer": the call is held by the far end and our RTP stops; a re-INVITE with
    its address again resumes it. (Before, the call stayed ``sendrecv`` and unflagged.)"""
    port = free_port(socket.SOCK_DGRAM)
    media = "m=audio [media_port] RTP/AVP 0\na=sendrecv"
    hold = sdp_body(media, "c=IN IP4 0.0.0.0").replace("o=sipp 1 1", "o=sipp 1 2")
    back = sdp_body(media).replace("o=sipp 1 1", "o=sipp 1 3")
    xml = (HEAD.format(name="rfc2543 hold") + uac_invite(port, body=sdp_body(media)) + recv("180", True)
           + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True) + '  <pause milliseconds="1500"/>\n'
           + uac_reinvite(2, hold) + '  <pause milliseconds="2500"/>\n' + uac_reinvite(3, back)
           + uac_bye(1500, cseq=4) + TAIL)

    async def wait_for(check: object, seconds: float) -> bool:
        for _ in range(int(seconds / 0.05)):
            if check():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.05)
        return False

    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        sipp = asyncio.ensure_future(sipp_uac("127.0.0.1", port, xml=xml, timeout=20))
        try:
            assert await wait_for(lambda: phone.calls and phone.calls[-1].state is CallState.CONFIRMED, 5)
            call = phone.calls[-1]
            assert await wait_for(lambda: call.remote_hold, 5), call.audio
            assert call.audio is not None and call.audio.direction == "recvonly" and call.audio.remote is None
            await asyncio.sleep(0.2)
            sent = call.media_report()["sent"]["packets"]  # type: ignore[index]
            await asyncio.sleep(1.0)
            assert call.media_report()["sent"]["packets"] == sent  # type: ignore[index]  # nothing to 0.0.0.0
            assert await wait_for(lambda: not call.remote_hold, 5), call.audio
            assert call.audio.direction == "sendrecv" and call.audio.remote is not None
            await asyncio.sleep(0.5)
            assert call.media_report()["sent"]["packets"] > sent + 15  # type: ignore[index]
            result = await sipp
        finally:
            sipp.cancel()
        events = await _events(phone)
    assert result.returncode == 0, result.errors or result.screen
    reasons = [e.reason for e in events if isinstance(e, CallStateChanged)]
    assert "on hold by the far end" in reasons and "resumed" in reasons, reasons
    assert not [e for e in events if isinstance(e, ErrorEvent)], events


async def test_a_transferees_notify_carries_a_contact() -> None:
    """We are the transferee (RFC 3515) of a SIPp transferor: 202, then NOTIFYs of the
    referred call's progress, each with a Contact (RFC 6665 §4.4.1 makes NOTIFY a target
    refresh request; RFC 3265 §7.1 lists Contact as mandatory in it) and the last one with
    ``SIP/2.0 200 OK``. twinkle 1.10 refused our NOTIFYs "400 Contact header missing" and so
    never ended its side of an attended transfer."""
    with sip_peers.sipp_uas("answer") as target:
        port = free_port(socket.SOCK_DGRAM)
        refer = uac_in_dialog("REFER", 2, to="To:[$to]", headers=(
            f"Contact: <sip:sipp@[local_ip]:[local_port]>\nRefer-To: <sip:target@127.0.0.1:{target.port}>\n"
            "Referred-By: <sip:sipp@[local_ip]:[local_port]>\n")) + recv("202")

        def notify(n: int, final: bool) -> str:
            body = ('      <ereg regexp="SIP/2.0 200 OK" search_in="body" check_it="true" assign_to="ok"/>\n'
                    if final else "")
            return f"""  <recv request="NOTIFY">
    <action>
      <ereg regexp="sips?:[^ ]+" search_in="hdr" header="Contact:" check_it="true" assign_to="contact{n}"/>
{body}    </action>
  </recv>
""" + response("200 OK", tag="").replace("Contact: <sip:sipp@[local_ip]:[local_port]>\n", "")

        bye = uac_in_dialog("BYE", 3, to="To:[$to]") + recv("200")
        answered = """  <recv response="200" rrs="true">
    <action><ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="to"/></action>
  </recv>
"""
        xml = (HEAD.format(name="transferor") + uac_invite(port) + recv("180", True) + answered
               + uac_ack(port, for_2xx=True) + '  <pause milliseconds="500"/>\n' + refer + notify(1, False)
               + notify(2, True) + bye + '  <Reference variables="contact1,contact2,ok"/>\n' + TAIL)
        async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
            assert result.returncode == 0, result.errors or result.screen
            referred = [c for c in phone.calls if c.remote == f"sip:target@127.0.0.1:{target.port}"]
            assert referred and referred[0].state is CallState.CONFIRMED, [(c.remote, c.state) for c in phone.calls]
            await referred[0].hangup()
        assert target.finish().successful_calls == 1


def uac_notify(port: int, n: int, event: str, body: str, status: str) -> str:
    """SIPp sends an out-of-dialog NOTIFY (as a voicemail server does for message-waiting) to
    our phone on ``port`` and expects ``status``."""
    return f"""  <send retrans="500"><![CDATA[
NOTIFY sip:alice@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:voicemail@[local_ip]:[local_port]>;tag=[pid]SIPpTagN{n}[call_number]
To: <sip:alice@127.0.0.1:{port}>
Call-ID: [call_id]
CSeq: {n} NOTIFY
Contact: <sip:voicemail@[local_ip]:[local_port]>
Event: {event}
Subscription-State: active
Max-Forwards: 70
Content-Type: application/simple-message-summary
Content-Length: [len]

{body}]]></send>
""" + recv(status)


async def test_a_voicemail_servers_unsolicited_notify_is_a_message_waiting_event() -> None:
    """RFC 3842: ``Event: message-summary`` outside a dialog (Asterisk sends it without a
    SUBSCRIBE) → 200 and :class:`MessageWaiting`; a body without ``Messages-Waiting`` → 400;
    another event package (``check-sync``) → 481, no subscription matches (RFC 6665). All
    three were 480 before."""
    port = free_port(socket.SOCK_DGRAM)
    summary = "Messages-Waiting: yes\nMessage-Account: sip:*97@127.0.0.1\nVoice-Message: 2/8 (1/0)\n"
    xml = (HEAD.format(name="mwi") + uac_notify(port, 1, "message-summary", summary, "200")
           + uac_notify(port, 2, "message-summary", "Voice-Message: 1/0\n", "400")
           + uac_notify(port, 3, "check-sync", "", "481") + TAIL)
    async with SIPPhone(phone_account(listen_port=port)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
    waiting = [e for e in events if isinstance(e, MessageWaiting)]
    assert waiting == [MessageWaiting(True, "sip:*97@127.0.0.1", (("voice-message", (2, 8, 1, 0)),))], events
    assert event_to_dict(waiting[0])["counts"] == {"voice-message": {"new": 2, "old": 8, "newUrgent": 1,
                                                                     "oldUrgent": 0}}


def uac_unanswered(port: int, final: str, headers: str = "") -> str:
    """SIPp's INVITE that rings and is never cancelled; the phone's final ``final`` is ACKed."""
    return (HEAD.format(name=f"unanswered-{final}") + uac_invite(port, headers) + recv("180") + recv(final)
            + uac_ack(port, for_2xx=False) + TAIL)


@pytest.mark.parametrize(("ring_timeout", "expires", "final", "reason"), [
    (1.5, None, "480", "not answered within 1.5 s"),
    (30.0, 1, "487", "the INVITE expired (Expires: 1)"),
])
async def test_a_call_nobody_answers_or_cancels_ends(ring_timeout: float, expires: int | None, final: str,
                                                      reason: str) -> None:
    """An INVITE that is never answered nor cancelled (a scanner's, svwar -m INVITE) does not
    ring for ever and hold a call slot: after ``ring_timeout`` the phone refuses it 480, or
    487 when the INVITE's own Expires passes first (RFC 3261 §13.3.1)."""
    port = free_port(socket.SOCK_DGRAM)
    headers = f"Expires: {expires}\n" if expires is not None else ""
    async with SIPPhone(phone_account(listen_port=port, ring_timeout=ring_timeout)) as phone:
        started = time.monotonic()
        result = await sipp_uac("127.0.0.1", port, xml=uac_unanswered(port, final, headers), timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        assert time.monotonic() - started < 5
        events = await _events(phone)
        assert any(isinstance(e, IncomingCall) for e in events)
        ended = [e for e in events if isinstance(e, CallStateChanged) and e.state is CallState.TERMINATED]
        assert [e.reason for e in ended] == [reason]
        assert not phone.calls


async def test_the_far_ends_rtcp_attribute_is_where_our_rtcp_goes() -> None:
    """SIPp answers with ``a=rtcp:PORT`` (RFC 3605: its RTCP is not at the RTP port + 1, as
    behind a NAT that mapped them apart): our RTCP reports arrive at that port."""
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", 0))
    rtcp.setblocking(False)
    port = rtcp.getsockname()[1]
    answer = sdp_body(f"m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=rtcp:{port}")
    xml = HEAD.format(name="rtcp-attribute") + recv("INVITE") + response("200 OK", body=answer) + recv("ACK") \
        + bye_answer() + TAIL
    try:
        with sip_peers.sipp_uas(xml=xml) as peer:
            async with SIPPhone(phone_account()) as phone:
                call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
                assert await call.wait_connected(5)
                assert call.audio is not None and call.audio.remote_rtcp == ("127.0.0.1", port)
                loop = asyncio.get_running_loop()
                report = await asyncio.wait_for(loop.sock_recv(rtcp, 2048), 8)  # RFC 3550: the first within ~3 s
                await call.hangup()
            assert peer.finish().successful_calls == 1
    finally:
        rtcp.close()
    assert report[0] >> 6 == 2 and report[1] in (200, 201)  # an RTCP SR or RR (RFC 3550 §6.4)


async def test_a_refer_without_subscription_gets_no_notify() -> None:
    """RFC 4488: the transferor's ``Refer-Sub: false`` (our Supported lists ``norefersub``):
    the 202 says ``Refer-Sub: false`` again, no NOTIFY follows (SIPp fails its scenario on an
    unexpected one), and we still call the target."""
    with sip_peers.sipp_uas("answer") as target:
        port = free_port(socket.SOCK_DGRAM)
        refer = uac_in_dialog("REFER", 2, to="To:[$to]", headers=(
            f"Contact: <sip:sipp@[local_ip]:[local_port]>\nRefer-To: <sip:target@127.0.0.1:{target.port}>\n"
            "Refer-Sub: false\n")) + """  <recv response="202">
    <action><ereg regexp="false" search_in="hdr" header="Refer-Sub:" check_it="true" assign_to="nosub"/></action>
  </recv>
"""
        answered = """  <recv response="200" rrs="true">
    <action><ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="to"/></action>
  </recv>
"""
        xml = (HEAD.format(name="transferor-norefersub") + uac_invite(port) + recv("180", True) + answered
               + uac_ack(port, for_2xx=True) + '  <pause milliseconds="500"/>\n' + refer
               + '  <pause milliseconds="2500"/>\n' + uac_in_dialog("BYE", 3, to="To:[$to]") + recv("200")
               + '  <Reference variables="nosub"/>\n' + TAIL)
        async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
            assert result.returncode == 0, result.errors or result.screen
            referred = [c for c in phone.calls if c.remote == f"sip:target@127.0.0.1:{target.port}"]
            assert referred and referred[0].state is CallState.CONFIRMED, [(c.remote, c.state) for c in phone.calls]
            assert not [r for r in phone.endpoint.trace if r.summary.startswith("NOTIFY")]
            await referred[0].hangup()
        assert target.finish().successful_calls == 1


async def called_by_sipp(port: int, xml: str) -> tuple[Any, Any, list[object]]:
    """SIPp (``-rtp_echo``) plays the UAC scenario ``xml`` at a phone on ``port`` that answers
    at once; returns the incoming call, SIPp's result and the phone's other events."""
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        sipp = asyncio.ensure_future(sipp_uac("127.0.0.1", port, xml=xml, timeout=20, extra=["-rtp_echo"]))
        try:
            event = await phone.next_event(5)
            while event is not None and not isinstance(event, IncomingCall):
                event = await phone.next_event(5)
            assert isinstance(event, IncomingCall)
            result = await sipp
        finally:
            sipp.cancel()
        return event.call, result, await _events(phone)


async def test_a_t38_reinvite_is_refused_and_the_call_keeps_its_audio() -> None:
    """A gateway that hears a fax tone re-INVITEs to T.38 (``m=image … udptl t38``, ITU-T T.38
    Annex D). We have no T.38: 488 with ``Warning: 304`` (media type not available, RFC 3261
    §20.43), and the session stays as it was (§14.2) — audio keeps flowing both ways until the
    caller's BYE. (Before, the 488 said nothing about why.)"""
    port = free_port(socket.SOCK_DGRAM)
    t38 = sdp_body("m=image [media_port] udptl t38\na=T38FaxVersion:0\na=T38MaxBitRate:14400\n"
                   "a=T38FaxRateManagement:transferredTCF\na=T38FaxUdpEC:t38UDPRedundancy").replace(
                       "o=sipp 1 1", "o=sipp 1 2")
    xml = (HEAD.format(name="t38 reinvite") + uac_invite(port) + recv("180", True)
           + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True) + '  <pause milliseconds="800"/>\n'
           + uac_in_dialog("INVITE", 2, headers="Contact: <sip:sipp@[local_ip]:[local_port]>\n", body=t38)
           + recv("100", True) + '  <recv response="488"/>\n' + uac_ack_refusal(2) + uac_bye(1500, cseq=3) + TAIL)
    call, result, events = await called_by_sipp(port, xml)
    assert result.returncode == 0, result.errors or result.screen
    refusal = next(m.raw for m in call.exchange if m.direction == "sent" and m.summary.startswith("488"))
    assert 'Warning: 304 skinnysip "no audio stream offered"' in refusal, refusal
    assert call.end_reason == "BYE received" and call.audio is not None and call.audio.direction == "sendrecv"
    report = call.media_report()
    assert report is not None and report["received"]["packets"] > 80  # SIPp echoed our audio before and after
    assert not [e for e in events if isinstance(e, ErrorEvent)], events


TEXT_BODY = """Content-Type: text/plain
Content-Length: [len]

not a session description
"""
#: SIPp waits for a 415 whose Accept is application/sdp (RFC 3261 §8.2.3)
REFUSED_415 = ('  <recv response="415"><action><ereg regexp="^ *application/sdp *$" search_in="hdr" header="Accept:" '
               'check_it="true" assign_to="accept"/></action></recv>\n  <Reference variables="accept"/>\n')


async def test_an_invite_whose_body_is_not_sdp_is_refused_415_with_accept() -> None:
    """RFC 3261 §8.2.3: a UAS that does not understand the body's type answers 415 with an
    Accept of the types it does. An INVITE with a ``text/plain`` body (a type the phone takes
    in MESSAGE, not as a session) gets ``415`` + ``Accept: application/sdp`` — it was a 400,
    as if the SDP were malformed — and rings nobody."""
    port = free_port(socket.SOCK_DGRAM)
    ack = f"""  <send><![CDATA[
ACK sip:alice@127.0.0.1:{port} SIP/2.0
[last_Via:]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""
    xml = HEAD.format(name="text invite") + uac_invite(port, body=TEXT_BODY) + REFUSED_415 + ack + TAIL
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        events = await _events(phone)
        assert not phone.calls
    assert result.returncode == 0, result.errors or result.screen
    assert not [e for e in events if isinstance(e, IncomingCall | ErrorEvent)], events


async def test_a_reinvite_whose_body_is_not_sdp_is_refused_415_and_the_call_stays() -> None:
    """The same in a dialog: a re-INVITE with a ``text/plain`` body gets 415 + ``Accept:
    application/sdp`` and the session is as it was (RFC 3261 §14.2) until the caller's BYE."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="text reinvite") + uac_invite(port) + recv("180", True)
           + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True) + '  <pause milliseconds="500"/>\n'
           + uac_in_dialog("INVITE", 2, headers="Contact: <sip:sipp@[local_ip]:[local_port]>\n", body=TEXT_BODY)
           + recv("100", True) + REFUSED_415 + uac_ack_refusal(2) + uac_bye(800, cseq=3) + TAIL)
    call, result, events = await called_by_sipp(port, xml)
    assert result.returncode == 0, result.errors or result.screen
    assert call.end_reason == "BYE received" and call.audio is not None and call.audio.direction == "sendrecv"
    assert not [e for e in events if isinstance(e, ErrorEvent)], events
