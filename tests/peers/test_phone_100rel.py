"""Reliable provisional responses (RFC 3262), against SIPp: as UAC, each new reliable 18x
to our INVITE is acknowledged by PRACK in the early dialog and a retransmitted one is neither
PRACKed again nor reported again (§4); as UAS, our 180 is sent reliably, retransmitted until
its PRACK and the INVITE refused 504 when none comes (§3)."""

from __future__ import annotations

import re
import socket

import pytest
import sip_peers
from sip_peers import sipp_uac
from test_phone_session_timer import in_dialog_ok, recv_checked, sent, uac_ack, uac_invite
from test_phone_sipp import HEAD, TAIL, _events, bye_answer, phone_account, recv, response, uac_in_dialog

from peertools import free_port
from skinnysip.phone.api import CallState, CallStateChanged, IncomingCall
from skinnysip.phone.sip_phone import SIPCall, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


def invite_leg(text: str) -> str:
    """A response to the INVITE sent after other requests arrived: the INVITE's Via and CSeq;
    From/To/Call-ID of the last request (the PRACK's To has the tag)."""
    return text.replace("[last_Via:]", "Via:[$via]").replace("[last_CSeq:]", "CSeq: 1 INVITE").replace(
        "[last_To:];tag=\n", "[last_To:]\n")


async def test_reliable_183_and_180_are_pracked_once_each() -> None:
    """SIPp answers our INVITE (``Supported: 100rel``) with a reliable 183 with SDP (RSeq 1),
    wants a PRACK with ``RAck: 1 1 INVITE``, sends the 183 again (a late duplicate: a second
    PRACK would fail SIPp's next check), then a reliable 180 (RSeq 2) wanting
    ``RAck: 2 1 INVITE``, then 200. Exactly two PRACKs leave; the call is early once, then
    confirmed; the BYE's CSeq comes after the PRACKs'. (The duplicate comes after the PRACK
    because SIPp aborts a call that receives the PRACK while it is still sending.)"""
    reliable = "Require: 100rel\nRSeq: {}\n"
    xml = (HEAD.format(name="100rel")
           + recv_checked("INVITE", {"Supported": "100rel"}, save_via=True)
           + response("183 Session Progress", sdp=True, extra=reliable.format(1))
           + recv_checked("PRACK", {"RAck": "^ *1 1 INVITE"}, 3000) + in_dialog_ok()
           + invite_leg(response("183 Session Progress", tag="", sdp=True, extra=reliable.format(1)))  # a duplicate
           + invite_leg(response("180 Ringing", tag="", extra=reliable.format(2)))
           + recv_checked("PRACK", {"RAck": "^ *2 1 INVITE"}, 3000) + in_dialog_ok()
           + '  <pause milliseconds="300"/>\n'
           + invite_leg(response("200 OK", tag="", sdp=True)) + recv("ACK") + bye_answer() + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(8), call.end_reason
            assert call.audio is not None and call.audio.remote is not None
            await call.hangup()
            states = [e.state for e in await _events(phone) if isinstance(e, CallStateChanged)]
            assert states == [CallState.EARLY, CallState.CONFIRMED, CallState.TERMINATED], states
            pracks = sent(call, "PRACK")
            assert [re.search(r"^RAck: (.*)$", raw, re.M).group(1).strip() for _, raw in pracks] == [  # type: ignore[union-attr]
                "1 1 INVITE", "2 1 INVITE"]
            assert [re.search(r"^CSeq: (\d+) PRACK", raw, re.M) is not None for _, raw in pracks] == [True, True]
            bye = sent(call, "BYE")[0][1]
            assert "CSeq: 4 BYE" in bye, bye  # PRACKs took 2 and 3 in the same dialog
            received = [m.summary for m in call.exchange if m.direction == "received"]
            assert received.count("183 Session Progress") == 2
        result = peer.finish()
        assert result.successful_calls == 1, result.log


def _prack(rack: str) -> str:
    return uac_in_dialog("PRACK", 2, headers=f"RAck: {rack}\n")


def _reliable_180(use_rseq: bool = True) -> str:
    """Receive our 180, fail unless it is reliable; its RSeq into ``$rseq`` (declared used
    when the scenario does not send it back)."""
    return ('  <recv response="180" rrs="true">\n    <action>\n'
            '      <ereg regexp="100rel" search_in="hdr" header="Require:" check_it="true" assign_to="req"/>\n'
            '      <ereg regexp="[0-9]+" search_in="hdr" header="RSeq:" check_it="true" assign_to="rseq"/>\n'
            '    </action>\n  </recv>\n'
            f'  <Reference variables="{"req" if use_rseq else "req,rseq"}"/>\n')


def _bye() -> str:
    return uac_in_dialog("BYE", 3) + recv("200")


@pytest.mark.parametrize("header", ["Require: 100rel", "Supported: 100rel"])
async def test_our_180_is_reliable_until_its_prack(header: str) -> None:
    """RFC 3262 §3 as UAS: SIPp's INVITE requires (or, with ``reliable_provisional``,
    supports) 100rel; our 180 carries ``Require: 100rel`` and an RSeq in 1..2³¹-1, SIPp
    PRACKs it with ``RAck: <RSeq> 1 INVITE`` and gets 200; the 180 is not sent again; the
    call is answered (200 with ``Supported: 100rel``), ACKed and ended by SIPp's BYE."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="uas-100rel") + uac_invite(port, f"{header}\n") + _reliable_180()
           + _prack("[$rseq] 1 INVITE") + recv_checked("200", {"CSeq": "2 PRACK"})
           + recv_checked("200", {"CSeq": "1 INVITE", "Supported": "100rel"}, 5000, rrs=True)
           + uac_ack(port, for_2xx=True) + '  <pause milliseconds="500"/>\n' + _bye() + TAIL)
    account = phone_account(listen_port=port, auto_answer=1.5, reliable_provisional=header.startswith("Supported"))
    async with SIPPhone(account) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        call = next(e.call for e in await _events(phone) if isinstance(e, IncomingCall))
        assert isinstance(call, SIPCall)
        ringing = sent(call, "180 Ringing")
        assert len(ringing) == 1, [t for t, _ in ringing]  # PRACKed at once: never retransmitted
        rseq = int(re.search(r"^RSeq: (\d+)", ringing[0][1], re.M).group(1))  # type: ignore[union-attr]
        assert 1 <= rseq <= 2**31 - 1
        assert any("CSeq: 2 PRACK" in raw for _, raw in sent(call, "200 OK"))
        assert call.end_reason == "BYE received"


async def test_unpracked_180_is_retransmitted_then_504() -> None:
    """RFC 3262 §3: SIPp never PRACKs; with T1 = 0.1 s our reliable 180 goes out again after
    0.1, 0.2, 0.4, 0.8, 1.6 and 3.2 s (at 6.3 s), and at 64·T1 = 6.4 s the INVITE is refused with 504
    (which SIPp ACKs). A PRACK with a wrong RAck, sent first, gets 481."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="uas-no-prack") + uac_invite(port, "Require: 100rel\n") + _reliable_180(False)
           + _prack("999 1 INVITE") + recv_checked("481", {"CSeq": "2 PRACK"})
           + "".join(recv("180", True) for _ in range(8))
           + '  <recv response="504" timeout="9000"/>\n' + uac_ack(port, for_2xx=False) + TAIL)
    async with SIPPhone(phone_account(listen_port=port, t1=0.1)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=20)
        assert result.returncode == 0, result.errors or result.screen
        call = next(e.call for e in await _events(phone) if isinstance(e, IncomingCall))
        assert isinstance(call, SIPCall) and call.state is CallState.TERMINATED
        times = [t for t, _ in sent(call, "180 Ringing")]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        expected = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
        assert len(gaps) == len(expected), gaps
        assert all(abs(g - e) < 0.08 for g, e in zip(gaps, expected, strict=True)), gaps
        refused = sent(call, "504")
        assert len(refused) == 1 and 6.0 <= refused[0][0] - times[0] <= 7.0
        assert "RFC 3262" in (call.end_reason or "")


async def test_a_prack_crossing_our_200_is_answered_200() -> None:
    """Answered at once (auto-answer 0), our 2xx goes out before the caller's PRACK of the
    reliable 180 arrives (what Twinkle with ``ext_100rel=required`` met). The 180 was never
    acknowledged, so the PRACK still matches it and gets 200 (RFC 3262 §3), not 481."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="prack-after-200") + uac_invite(port, "Require: 100rel\n") + _reliable_180()
           + recv_checked("200", {"CSeq": "1 INVITE"}, 5000, rrs=True)
           + _prack("[$rseq] 1 INVITE") + recv_checked("200", {"CSeq": "2 PRACK"})
           + uac_ack(port, for_2xx=True) + '  <pause milliseconds="300"/>\n' + _bye() + TAIL)
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        call = next(e.call for e in await _events(phone) if isinstance(e, IncomingCall))
        assert isinstance(call, SIPCall) and call.end_reason == "BYE received"
