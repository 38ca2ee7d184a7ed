"""The INVITE probe against SIPp as UAS: an answered call is ACKed and ended with BYE; a call
that only rings is CANCELled, its 487 ACKed. SIPp's own statistics judge the exchange."""

from __future__ import annotations

import pytest

from skinnysip.probes.sip import ProbeRequest, invite
from skinnysip.sdp import SessionDescription
from skinnysip.sip.message import parse_message

pytestmark = pytest.mark.peer


def methods_and_codes(result) -> list[str]:
    return [("→ " if m.direction == "sent" else "← ") + m.summary.split()[0] for m in result.exchange]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_invite_answered_acks_and_byes(sipp_uas, transport: str) -> None:
    with sipp_uas("answer", transport) as peer:
        result = await invite(ProbeRequest(host=peer.host, port=peer.port, transport=transport, to_uri="bob", timeout=5))
        stats = peer.finish()
    assert result.success, result.error
    assert result.status_code == 200
    assert result.provisional == [180]
    assert result.cancelled is False
    assert result.cleanup == "ack+bye"
    assert result.message and result.message.startswith("INVITE 200 OK in ")
    assert methods_and_codes(result) == ["→ INVITE", "← 180", "← 200", "→ ACK", "→ BYE", "← 200"]
    sent = [parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent"]
    inv, ack, bye = sent
    # SDP offer: our socket's address and a real port, PCMU/PCMA/telephone-event
    sdp = SessionDescription.parse(inv.body)
    audio = sdp.media[0]
    assert audio.port > 0 and audio.port % 2 == 0
    assert "127.0.0.1" in inv.body.decode()
    assert audio.formats[:3] == ["0", "8", "101"]
    # ACK for the 2xx: new branch, same CSeq number, to the Contact; BYE: CSeq + 1, same dialog
    assert ack.top_via.branch != inv.top_via.branch
    assert ack.cseq == (inv.cseq[0], "ACK")
    assert ack.uri.startswith("sip:127.0.0.1:")
    assert ack.to_tag and ack.to_tag == bye.to_tag
    assert bye.cseq == (inv.cseq[0] + 1, "BYE")
    assert bye.call_id == inv.call_id and bye.from_tag == inv.from_tag
    assert stats.successful_calls == 1, stats.log[-2000:]
    assert stats.failed_calls == 0, stats.log[-2000:]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_invite_ringing_is_cancelled(sipp_uas, transport: str) -> None:
    with sipp_uas("ring-no-answer", transport) as peer:
        result = await invite(
            ProbeRequest(host=peer.host, port=peer.port, transport=transport, to_uri="bob", timeout=0.6)
        )
        stats = peer.finish()
    assert result.success, result.error
    assert result.cancelled is True
    assert result.status_code == 487
    assert result.provisional == [100, 180]
    assert result.cleanup == "cancel+ack"
    assert methods_and_codes(result) == ["→ INVITE", "← 100", "← 180", "→ CANCEL", "← 200", "← 487", "→ ACK"]
    inv, cancel, ack = (parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent")
    assert cancel.top_via.branch == inv.top_via.branch == ack.top_via.branch  # §9.1, §17.1.1.3
    assert cancel.cseq == (inv.cseq[0], "CANCEL") and ack.cseq == (inv.cseq[0], "ACK")
    assert ack.to_tag  # the 487's To tag
    # SIPp's scenario expects CANCEL, then sends 200 + 487 and waits for the ACK
    assert stats.successful_calls == 1, stats.log[-2000:]
    assert stats.failed_calls == 0, stats.log[-2000:]
    assert "CANCEL" in stats.messages and "ACK" in stats.messages


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_invite_over_ipv6(sipp_uas, transport: str) -> None:
    with sipp_uas("answer", transport, host="::1") as peer:
        result = await invite(ProbeRequest(host="::1", port=peer.port, transport=transport, timeout=5))
        stats = peer.finish()
    assert result.success, result.error
    assert result.cleanup == "ack+bye" and result.server == f"[::1]:{peer.port}"
    inv = parse_message(result.exchange[0].raw.encode())
    assert inv.top_via.host in ("::1", "[::1]") and result.exchange[0].local.startswith("[::1]:")
    assert inv.uri == f"sip:probe@[::1]:{peer.port}"
    assert "c=IN IP6 ::1" in inv.body.decode()
    assert stats.successful_calls == 1 and stats.failed_calls == 0


# SIPp as a UAS that challenges the INVITE with Digest MD5 (qop=auth) and checks the
# credentials with its own ``verifyauth``: 200 if they verify, 403 if not.
AUTH_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="challenge the INVITE, answer when the credentials verify">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="sipp.test", nonce="4a8c2f0e9b1d7c3e5f6a", qop="auth", algorithm=MD5
Content-Length: 0

]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="alice" password="wonderland"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send next="bad">
    <![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="good"/>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send next="end">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="bad"/>
  <recv request="ACK" next="fail"/>
  <label id="fail"/>
  <nop><action><exec int_cmd="stop_now"/></action></nop>
  <label id="end"/>
</scenario>
"""


@pytest.mark.parametrize(("password", "code"), [("wonderland", 200), ("wrong", 403)])
async def test_invite_challenged_retries_with_credentials(sipp_uas, password: str, code: int) -> None:
    with sipp_uas("challenge-then-answer", "udp", xml=AUTH_SCENARIO) as peer:
        result = await invite(ProbeRequest(host=peer.host, port=peer.port, to_uri="bob", timeout=5,
                                           username="alice", password=password))
        stats = peer.finish()
    assert result.success, result.error
    assert result.requires_auth is True and result.auth_scheme == "Digest"
    assert result.status_code == code
    flow = [m.summary.split()[0] for m in result.exchange]
    inv1, ack1, inv2 = [parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent"][:3]
    assert ack1.top_via.branch == inv1.top_via.branch  # the 401 is ACKed in its transaction
    assert inv2.cseq == (inv1.cseq[0] + 1, "INVITE") and inv2.call_id == inv1.call_id
    assert inv2.top_via.branch != inv1.top_via.branch
    authorization = inv2.headers.get("Authorization") or ""
    assert 'username="alice"' in authorization and f'uri="{inv2.uri}"' in authorization
    if code == 200:
        assert flow == ["INVITE", "401", "ACK", "INVITE", "200", "ACK", "BYE", "200"]
        assert result.cleanup == "ack+bye"
        assert stats.successful_calls == 1 and stats.failed_calls == 0  # SIPp verified our digest
    else:
        assert flow == ["INVITE", "401", "ACK", "INVITE", "403", "ACK"]
        assert result.cleanup == "ack"
        assert stats.messages.count("ACK sip:") == 2
