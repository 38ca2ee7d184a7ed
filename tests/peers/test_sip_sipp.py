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
