"""What ``skinnysip sip listen`` (the :class:`Responder`) answers, judged by SIPp scenarios:
its SDP answers follow RFC 3264 §6 (the offerer's codec and telephone-event payload types,
the reverse of the offered direction, so a hold's re-INVITE ``sendonly`` is answered
``recvonly`` with the o= version one up, §8, and the same hold again gets the same answer and
version), an offer it cannot answer gets 488, and a
MESSAGE outside a dialog gets 200 (RFC 3428 §7; its Allow names MESSAGE). Before, it
answered every offer with PCMU/PCMA and PT 101, ``sendrecv``, the same SDP again on a
re-INVITE, and MESSAGE with 480."""

from __future__ import annotations

import pytest
from sip_peers import sipp_uac
from test_phone_sipp import (
    HEAD,
    REFUSED_415,
    TAIL,
    recv,
    sdp_body,
    uac_ack,
    uac_ack_refusal,
    uac_bye,
    uac_in_dialog,
    uac_invite,
    uac_reinvite,
)

from skinnysip.probes.listen import ListenConfig, Responder

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

HOST = "127.0.0.1"


def check(name: str, regexp: str) -> str:
    """A SIPp action: the received message's body must match ``regexp`` (else the call fails)."""
    return f'      <ereg regexp="{regexp}" search_in="body" check_it="true" assign_to="{name}"/>\n'


async def test_offers_are_answered_per_rfc_3264_and_a_hold_reinvite_recvonly() -> None:
    offer = sdp_body("m=audio [media_port] RTP/AVP 8 96\na=rtpmap:8 PCMA/8000\na=rtpmap:96 telephone-event/8000\n"
                     "a=fmtp:96 0-15\na=sendrecv")
    hold = sdp_body("m=audio [media_port] RTP/AVP 8 96\na=rtpmap:8 PCMA/8000\na=rtpmap:96 telephone-event/8000\n"
                    "a=sendonly").replace("o=sipp 1 1", "o=sipp 1 2")
    answered = ('  <recv response="200" rrs="true">\n    <action>\n'
                + check("codecs", "m=audio [0-9]+ RTP/AVP 8 96") + check("te", "a=rtpmap:96 telephone-event/8000")
                + check("first", "o=[^ ]+ [0-9]+ 0 ") + check("both", "a=sendrecv") + "    </action>\n  </recv>\n")
    held = (uac_reinvite(2, hold).replace('  <recv response="200"/>\n', '  <recv response="200">\n    <action>\n'
                                          + check("recvonly", "a=recvonly") + check("second", "o=[^ ]+ [0-9]+ 1 ")
                                          + "    </action>\n  </recv>\n"))
    # the same hold again (o= version 2 once more: nothing changed): the same answer, version 1
    # still (RFC 3264 §8; a new version would tell the caller the session changed)
    again = (uac_reinvite(3, hold).replace('  <recv response="200"/>\n', '  <recv response="200">\n    <action>\n'
                                           + check("unchanged", "o=[^ ]+ [0-9]+ 1 ") + "    </action>\n  </recv>\n"))
    names = "codecs,te,first,both,recvonly,second,unchanged"
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        xml = (HEAD.format(name="rfc3264") + uac_invite(port, body=offer) + recv("180", True) + answered
               + uac_ack(port, for_2xx=True) + held + again + uac_bye(100).replace("CSeq: 2 BYE", "CSeq: 4 BYE")
               + f'  <Reference variables="{names}"/>\n' + TAIL)
        assert '<recv response="200">' in held  # the hold's 200 is checked
        result = await sipp_uac(HOST, port, xml=xml, timeout=15)
    assert result.returncode == 0, result.errors or result.screen


async def test_an_offer_without_a_known_codec_is_488_and_message_is_200() -> None:
    video_only = sdp_body("m=video [media_port] RTP/AVP 97\na=rtpmap:97 H264/90000")
    refused = HEAD.format(name="488") + uac_invite(0, body=video_only) + recv("488") + uac_ack(0, for_2xx=False) + TAIL
    message = HEAD.format(name="message") + """  <send retrans="500"><![CDATA[
MESSAGE sip:bob@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:bob@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 MESSAGE
Max-Forwards: 70
Content-Type: text/plain
Content-Length: [len]

hello listener]]></send>
""" + recv("200") + TAIL
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        result = await sipp_uac(HOST, port, xml=refused.replace("127.0.0.1:0", f"127.0.0.1:{port}"), timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        result = await sipp_uac(HOST, port, xml=message, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        assert responder.calls == {}


async def test_in_dialog_options_is_answered_and_refer_is_405() -> None:
    """In a call: OPTIONS (a keep-alive ping) → 200 in the dialog; REFER → 405 whose Allow
    names no REFER (the responder transfers nothing, and no longer claims to: both got 481,
    "no such dialog", although the dialog was up)."""

    def in_dialog(method: str, cseq: int, extra: str = "") -> str:
        return uac_in_dialog(method, cseq, to="To:[$to]",
                             headers=f"Contact: <sip:sipp@[local_ip]:[local_port]>\n{extra}")

    answered = """  <recv response="200" rrs="true">
    <action><ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="to"/></action>
  </recv>
"""
    refused = """  <recv response="405">
    <action><ereg regexp="INVITE" search_in="hdr" header="Allow:" check_it="true" assign_to="allow"/></action>
  </recv>
"""
    bye = in_dialog("BYE", 4) + recv("200")
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        xml = (HEAD.format(name="in-dialog") + uac_invite(port) + recv("180", True) + answered
               + uac_ack(port, for_2xx=True) + in_dialog("OPTIONS", 2) + recv("200")
               + in_dialog("REFER", 3, f"Refer-To: <sip:x@127.0.0.1:{port}>\n") + refused + bye
               + '  <Reference variables="to,allow"/>\n' + TAIL)
        result = await sipp_uac(HOST, port, xml=xml, timeout=15)
        sent = [r for r in responder.endpoint.trace if r.direction == "sent"]
    assert result.returncode == 0, result.errors or result.screen
    refusal = next(r.raw.decode() for r in sent if r.summary.startswith("405"))
    allow = next(line for line in refusal.split("\r\n") if line.startswith("Allow:"))
    assert "REFER" not in allow and "INVITE" in allow, allow


async def test_a_body_that_is_no_sdp_is_415_in_an_invite_and_a_reinvite() -> None:
    """RFC 3261 §8.2.3: an INVITE whose body is ``text/plain`` gets 415 with ``Accept:
    application/sdp`` (it was a 488, as if the SDP were malformed); so does such a re-INVITE,
    and the call goes on to its BYE."""
    plain = "Content-Type: text/plain\nContent-Length: [len]\n\nnot a session description\n"
    refused = HEAD.format(name="415") + uac_invite(0, body=plain) + REFUSED_415 + uac_ack(0, for_2xx=False) + TAIL
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        result = await sipp_uac(HOST, port, xml=refused.replace("127.0.0.1:0", f"127.0.0.1:{port}"), timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        assert responder.calls == {}
        in_call = (HEAD.format(name="415 in a call") + uac_invite(port) + recv("180", True)
                   + '  <recv response="200" rrs="true"/>\n' + uac_ack(port, for_2xx=True)
                   + uac_in_dialog("INVITE", 2, headers="Contact: <sip:sipp@[local_ip]:[local_port]>\n", body=plain)
                   + recv("100", True) + REFUSED_415 + uac_ack_refusal(2) + uac_bye(100).replace("CSeq: 2 BYE", "CSeq: 3 BYE")
                   + TAIL)
        result = await sipp_uac(HOST, port, xml=in_call, timeout=15)
        sent = [r.summary for r in responder.endpoint.trace if r.direction == "sent"]
    assert result.returncode == 0, result.errors or result.screen
    assert sent.count("415 Unsupported Media Type") == 2 and sent[-1] == "200 OK", sent
