"""Reliable provisional responses (RFC 3262) to the SIP phone's INVITE, against a SIPp UAS:
each new reliable 18x is acknowledged by PRACK in the early dialog; a retransmitted one is
neither PRACKed again nor reported again (§4)."""

from __future__ import annotations

import re

import pytest
import sip_peers
from test_phone_session_timer import in_dialog_ok, recv_checked, sent
from test_phone_sipp import HEAD, TAIL, _events, bye_answer, phone_account, recv, response

from skinnysip.phone.api import CallState, CallStateChanged
from skinnysip.phone.sip_phone import SIPPhone

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
