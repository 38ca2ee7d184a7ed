"""The target policy on media destinations (issue 11), end to end on loopback: a policy that
denies 127.0.0.2 only, peers (SIPp scenarios, a call manager written here) that aim RTP at
127.0.0.2, and a UDP socket bound on 127.0.0.2 that proves no packet went there. Each refusal
has a control beside it where the same peer's media, allowed, does arrive."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sip_peers
from sip_peers import sipp_uac
from test_phone_sipp import HEAD, SDP, TAIL, _events, bye_answer, phone_account, recv, response
from test_sccp_faults import _serve

from peertools import free_port
from skinnysip import policy as target_policy
from skinnysip.phone.api import CallState, CallStateChanged
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.policy import TargetPolicy

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

DENIED = "127.0.0.2"
POLICY = TargetPolicy(deny=[DENIED], restrict=False)
RULE = f"{DENIED} is denied by --deny {DENIED}"


class Listener:
    """A UDP socket that counts the datagrams that reach it (bounded by the receive buffer)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.count = 0

    def drain(self) -> int:
        for _ in range(100_000):
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                break
            self.count += 1
        return self.count


@contextmanager
def listener(host: str) -> Iterator[Listener]:
    sink = Listener(host)
    try:
        yield sink
    finally:
        sink.sock.close()


def sdp_at(ip: str, port: int) -> str:
    """The SIPp SDP template with the media address and port fixed."""
    return SDP.replace("IP[media_ip_type] [media_ip]", f"IP4 {ip}").replace("[media_port]", str(port))


async def _settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


@pytest.mark.parametrize("policy", [POLICY, None], ids=["denied", "control-no-policy"])
async def test_answer_aiming_rtp_at_a_denied_address_ends_the_call_with_bye(policy: TargetPolicy | None) -> None:
    with listener(DENIED) as victim:
        answer = response("200 OK", sdp=True).replace(SDP, sdp_at(DENIED, victim.port))
        xml = HEAD.format(name="answer-denied") + recv("INVITE") + answer + recv("ACK") + bye_answer() + TAIL
        with sip_peers.sipp_uas(xml=xml) as peer:
            with target_policy.applied(policy):
                phone = SIPPhone(phone_account())
            async with phone:
                call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
                if policy is None:  # control: the same answer without a policy gets our RTP
                    assert await call.wait_connected(5), call.end_reason
                    await _settle(1.0)
                    await call.hangup()
                    assert victim.drain() > 10
                else:
                    assert await call.wait_ended(5)
                    await _settle(1.0)
                    assert call.end_reason == f"SDP c= address {DENIED} refused by the target policy: {RULE}"
                    sent = [m.summary.split()[0] for m in call.exchange if m.direction == "sent"]
                    assert sent == ["INVITE", "ACK", "BYE"]
                    assert victim.drain() == 0
            assert peer.finish().successful_calls == 1


async def test_early_media_at_a_denied_address_cancels_the_call() -> None:
    """A 183 whose SDP aims early media at 127.0.0.2: no RTP, CANCEL (RFC 3261 §9.1), the
    487 ends the call with the policy's reason."""
    with listener(DENIED) as victim:
        early = response("183 Session Progress", sdp=True).replace(SDP, sdp_at(DENIED, victim.port))
        xml = (HEAD.format(name="early-denied") + recv("INVITE") + early + recv("CANCEL")
               + response("200 OK", cseq="CSeq: 1 CANCEL").replace("Contact: <sip:sipp@[local_ip]:[local_port]>\n", "")
               + response("487 Request Terminated", cseq="CSeq: 1 INVITE") + recv("ACK") + TAIL)
        with sip_peers.sipp_uas(xml=xml) as peer:
            with target_policy.applied(POLICY):
                phone = SIPPhone(phone_account())
            async with phone:
                call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
                assert await call.wait_ended(10)
                assert call.end_reason == f"SDP c= address {DENIED} refused by the target policy: {RULE}"
                sent = [m.summary.split()[0] for m in call.exchange if m.direction == "sent"]
                assert sent[:2] == ["INVITE", "CANCEL"]
                await _settle(0.5)
                assert victim.drain() == 0
            assert peer.finish().successful_calls == 1


def test_a_phone_made_through_the_api_checks_media_with_the_servers_policy() -> None:
    """The HTTP API hands its policy to the phones it makes (the request's context): a call of an
    API phone answered with media at 127.0.0.2 ends with the refusal as its endReason."""
    import time

    from fastapi.testclient import TestClient

    from skinnysip.api.app import create_app
    from skinnysip.api.guard import ServiceSettings

    with listener(DENIED) as victim:
        answer = response("200 OK", sdp=True).replace(SDP, sdp_at(DENIED, victim.port))
        xml = HEAD.format(name="api-denied") + recv("INVITE") + answer + recv("ACK") + bye_answer() + TAIL
        with sip_peers.sipp_uas(xml=xml) as peer, TestClient(create_app(ServiceSettings(policy=POLICY))) as client:
            r = client.post("/api/phones", json={"aor": "sip:alice@127.0.0.1", "register": False})
            assert r.status_code == 201, r.text
            phone_id = r.json()["id"]
            r = client.post(f"/api/phones/{phone_id}/calls", json={"target": f"sip:service@127.0.0.1:{peer.port}"})
            assert r.status_code == 201, r.text
            call_id = r.json()["id"]
            deadline = time.monotonic() + 10
            detail: dict[str, object] = {}
            while time.monotonic() < deadline and not detail.get("ended"):
                time.sleep(0.1)
                detail = client.get(f"/api/phones/{phone_id}/calls/{call_id}").json()
            assert detail["endReason"] == f"SDP c= address {DENIED} refused by the target policy: {RULE}", detail
            assert client.delete(f"/api/phones/{phone_id}").status_code in (200, 204)
            assert peer.finish().successful_calls == 1
        assert victim.drain() == 0


def _uac_invite(port: int, media: str, cseq: int = 1, uri: str | None = None, to: str | None = None) -> str:
    return f"""  <send retrans="500"><![CDATA[
INVITE {uri or f'sip:alice@127.0.0.1:{port}'} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
{to or f'To: <sip:alice@127.0.0.1:{port}>'}
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
{media}]]></send>
"""


def _uac_in_dialog(method: str, cseq: int, *, via: str = "Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;"
                   "branch=[branch]", uri: str = "[next_url]", body: str = "Content-Length: 0\n\n") -> str:
    return f"""  <send><![CDATA[
{method} {uri} SIP/2.0
{via}
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
{body}]]></send>
"""


async def test_incoming_offer_with_a_denied_address_gets_488() -> None:
    port = free_port(socket.SOCK_DGRAM)
    with listener(DENIED) as victim:
        xml = (HEAD.format(name="offer-denied") + _uac_invite(port, sdp_at(DENIED, victim.port))
               + recv("100", True) + recv("488")
               + _uac_in_dialog("ACK", 1, via="[last_Via:]", uri=f"sip:alice@127.0.0.1:{port}") + TAIL)
        with target_policy.applied(POLICY):
            phone = SIPPhone(phone_account(listen_port=port, auto_answer=0.0))
        async with phone:
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
            assert result.returncode == 0, result.errors or result.screen
            events = await _events(phone)
            [call] = {e.call for e in events if isinstance(e, CallStateChanged)}
            assert call.state is CallState.TERMINATED
            assert call.end_reason == f"488 SDP c= address {DENIED} refused by the target policy: {RULE}"
            [refusal] = [m for m in call.exchange if m.direction == "sent" and m.summary.startswith("488")]
            assert f'Warning: 399 skinnysip "SDP c= address {DENIED} refused by the target policy: {RULE}"' \
                in refusal.raw
            await _settle(0.5)
            assert victim.drain() == 0


async def test_reinvite_moving_media_to_a_denied_address_gets_488_and_media_stays() -> None:
    port = free_port(socket.SOCK_DGRAM)
    with listener("127.0.0.1") as kept, listener(DENIED) as victim:
        xml = (HEAD.format(name="reinvite-denied") + _uac_invite(port, sdp_at("127.0.0.1", kept.port))
               + recv("100", True) + recv("180", True) + '  <recv response="200" rrs="true"/>\n'
               + _uac_in_dialog("ACK", 1) + '  <pause milliseconds="800"/>\n'
               + _uac_invite(port, sdp_at(DENIED, victim.port), cseq=2, uri="[next_url]", to="[last_To:]")
               + recv("100", True) + recv("488") + _uac_in_dialog("ACK", 2, via="[last_Via:]")
               + '  <pause milliseconds="1500"/>\n' + _uac_in_dialog("BYE", 3).replace("<send>", '<send retrans="500">')
               + recv("200") + TAIL)
        with target_policy.applied(POLICY):
            phone = SIPPhone(phone_account(listen_port=port, auto_answer=0.0))
        async with phone:
            task = asyncio.create_task(sipp_uac("127.0.0.1", port, xml=xml, timeout=20))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while loop.time() < deadline and not phone.calls:
                await asyncio.sleep(0.02)
            [call] = phone.calls
            assert await call.wait_connected(5), call.end_reason
            await _settle(1.5)  # the re-INVITE (after 0.8 s) has been refused
            before = kept.drain()
            assert call.audio is not None and call.audio.remote == ("127.0.0.1", kept.port)
            result = await task
            assert result.returncode == 0, result.errors or result.screen
            assert call.state is CallState.TERMINATED and call.end_reason == "BYE received"
            assert kept.drain() > before + 10  # media kept flowing where it was
            [refusal] = [m for m in call.exchange if m.direction == "sent" and m.summary.startswith("488")]
            assert f"refused by the target policy: {RULE}" in refusal.raw
            assert victim.drain() == 0


async def test_invite_probe_reports_a_denied_media_address() -> None:
    from skinnysip.probes.sip import ProbeRequest, invite

    with listener(DENIED) as victim:
        answer = response("200 OK", sdp=True).replace(SDP, sdp_at(DENIED, victim.port))
        xml = HEAD.format(name="probe-denied") + recv("INVITE") + answer + recv("ACK") + bye_answer() + TAIL
        with sip_peers.sipp_uas(xml=xml) as peer:
            with target_policy.applied(POLICY):
                result = await invite(ProbeRequest(host="127.0.0.1", port=peer.port, timeout=5))
            assert peer.finish().successful_calls == 1
        assert not result.success and result.status_code == 200 and result.cleanup == "ack+bye"
        assert result.error == (f"SDP c= address {DENIED} refused by the target policy: {RULE} "
                                "(no RTP sent; the call was ended)")
        assert victim.drain() == 0


# -- SCCP: a call manager written here sends StartMediaTransmission to 127.0.0.2 ------------------

async def test_sccp_start_media_to_a_denied_address_is_not_followed() -> None:
    """The CM opens a receive channel, then asks for RTP to 127.0.0.2 (refused: no packet, the
    call's mediaRefused says why), then to 127.0.0.1 (the control: RTP arrives)."""
    from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone
    from skinnysip.sccp.messages import FrameDecoder, encode

    media = {"conferenceId": 1, "passThruPartyId": 1, "millisecondPacketSize": 20, "callReference": 1,
             "compressionType": 4}
    with listener(DENIED) as victim, listener("127.0.0.1") as allowed:
        go_allowed = asyncio.Event()

        async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            while data := await reader.read(4096):
                for msg in decoder.feed(data):
                    if msg.name == "Register":
                        writer.write(encode("RegisterAck", {"keepAliveInterval": 30})
                                     + encode("CallState", {"callState": 4, "lineInstance": 1, "callReference": 1})
                                     + encode("OpenReceiveChannel", media))
                    elif msg.name == "OpenReceiveChannelAck":
                        writer.write(encode("StartMediaTransmission", {
                            **media, "remoteIpAddr": DENIED, "remotePortNumber": victim.port}))
                        await writer.drain()
                        await asyncio.wait_for(go_allowed.wait(), 15)
                        writer.write(encode("StartMediaTransmission", {
                            **media, "remoteIpAddr": "127.0.0.1", "remotePortNumber": allowed.port}))
                    elif msg.name == "Unregister":
                        writer.write(encode("UnregisterAck", {"status": 0}))
                await writer.drain()

        async for cm_port in _serve(behaviour):
            with target_policy.applied(POLICY):
                phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=cm_port, timeout=2.0, source="tone:440"))
            try:
                await phone.connect()
                assert await phone.register(configuration=0) is not None
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while loop.time() < deadline and not (phone.calls and phone.calls[0].media_refused):  # type: ignore[attr-defined]
                    await asyncio.sleep(0.02)
                [call] = phone.calls
                expected = f"StartMediaTransmission remoteIpAddr {DENIED} refused by the target policy: {RULE}"
                assert call.media_refused == expected  # type: ignore[attr-defined]
                assert call.summary()["mediaError"] == expected
                await _settle(1.0)
                assert victim.drain() == 0
                go_allowed.set()
                deadline = loop.time() + 5
                while loop.time() < deadline and allowed.drain() <= 10:
                    await asyncio.sleep(0.05)
                assert allowed.drain() > 10  # the control: an allowed address gets the RTP
                assert victim.drain() == 0
            finally:
                await asyncio.wait_for(phone.close(), 20)


async def test_answer_in_the_ack_at_a_denied_address_ends_the_call_with_bye() -> None:
    """RFC 3261 §13.2.1: an offerless INVITE gets our offer in the 200; the answer comes in the
    ACK. Aimed at 127.0.0.2, it is not used: we send BYE."""
    port = free_port(socket.SOCK_DGRAM)
    with listener(DENIED) as victim:
        xml = (HEAD.format(name="ack-denied") + _uac_invite(port, "Content-Length: 0\n\n")
               + recv("100", True) + recv("180", True) + '  <recv response="200" rrs="true"/>\n'
               + _uac_in_dialog("ACK", 1, body=sdp_at(DENIED, victim.port)) + bye_answer() + TAIL)
        with target_policy.applied(POLICY):
            phone = SIPPhone(phone_account(listen_port=port, auto_answer=0.0))
        async with phone:
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
            assert result.returncode == 0, result.errors or result.screen
            [call] = {e.call for e in await _events(phone) if isinstance(e, CallStateChanged)}
            assert call.state is CallState.TERMINATED
            assert call.end_reason == f"SDP c= address {DENIED} refused by the target policy: {RULE}"
            assert [m.summary.split()[0] for m in call.exchange if m.direction == "sent"][-1] == "BYE"
            await _settle(0.5)
            assert victim.drain() == 0


async def test_answer_to_our_reinvite_at_a_denied_address_ends_the_call() -> None:
    """Our hold re-INVITE is accepted with media moved to 127.0.0.2: that answer is not used;
    the call ends with BYE and hold() says why."""
    from skinnysip.phone.api import PhoneError

    with listener("127.0.0.1") as first, listener(DENIED) as victim:
        xml = (HEAD.format(name="our-reinvite-denied") + recv("INVITE")
               + response("200 OK", sdp=True).replace(SDP, sdp_at("127.0.0.1", first.port)) + recv("ACK")
               + recv("INVITE") + response("200 OK", tag="", sdp=True).replace(SDP, sdp_at(DENIED, victim.port))
               + recv("ACK") + bye_answer() + TAIL)
        with sip_peers.sipp_uas(xml=xml) as peer:
            with target_policy.applied(POLICY):
                phone = SIPPhone(phone_account())
            async with phone:
                call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
                assert await call.wait_connected(5), call.end_reason
                await _settle(0.5)
                assert first.drain() > 5  # the allowed address got media before
                with pytest.raises(PhoneError, match=f"re-INVITE answer refused: SDP c= address {DENIED}"):
                    await call.hold()
                assert await call.wait_ended(5)
                assert call.end_reason == f"SDP c= address {DENIED} refused by the target policy: {RULE}"
                await _settle(0.5)
                assert victim.drain() == 0
            assert peer.finish().successful_calls == 1


@pytest.mark.parametrize("policy", [POLICY, None], ids=["denied", "control-no-policy"])
async def test_sccp_call_probe_reports_a_denied_media_address(policy: TargetPolicy | None) -> None:
    """The lab call manager puts its echo on 127.0.0.2 (``rtp_host``): under the policy the
    call-setup probe sends no RTP there (tshark sees no UDP to 127.0.0.2) and reports
    ``success: false`` naming the address and rule; without one, the echo works (the control)."""
    from peertools import TsharkCapture
    from skinnysip.lab.callmanager import LabCallManager, LabConfig
    from skinnysip.probes.sccp import SCCPRequest, run_operation

    async with LabCallManager(LabConfig.demo(rtp_host=DENIED)) as cm:
        request = SCCPRequest.model_validate({"host": "127.0.0.1", "port": cm.port, "timeout": 3000,
                                              "dialNumber": "600", "holdMs": 1500})
        cap = TsharkCapture(f"udp and dst host {DENIED}").start()
        try:
            with target_policy.applied(policy):
                body = (await asyncio.wait_for(run_operation("call-setup", request), 30)).to_api()
        finally:
            cap.stop()
    to_denied = cap.decode("udp", ["ip.src", "udp.dstport"])
    if policy is None:
        assert body["success"] is True, body["error"]
        assert body["rtpPacketsSent"] >= 20 and len(to_denied) >= 20
        return
    expected = f"StartMediaTransmission remoteIpAddr {DENIED} refused by the target policy: {RULE}"
    assert body["success"] is False and body["status"] == "media-refused"
    assert body["error"] == f"call to 600: {expected}"
    assert body["call"]["mediaError"] == expected and body["rtpPacketsSent"] == 0
    assert to_denied == []


async def test_bare_station_session_does_not_follow_a_denied_start_media() -> None:
    """:class:`StationSession` (the lab's bare station driver) under the policy: the echo's
    StartMediaTransmission to 127.0.0.2 is not followed; ``media_error`` names address and rule."""
    from skinnysip.lab.callmanager import LabCallManager, LabConfig
    from skinnysip.probes.sccp import StationSession
    from skinnysip.sccp.station import StationConfig

    async with LabCallManager(LabConfig.demo(rtp_host=DENIED)) as cm:
        with target_policy.applied(POLICY):
            sess = await StationSession.connect("127.0.0.1", cm.port, StationConfig(), timeout=3.0)
        try:
            assert type(await sess.register()).__name__ == "Registered"
            assert await sess.finish_registration()
            await sess.call("600")
            assert (await sess.wait_state({"Connected"})) is not None
            await sess.hold(0.8)
            assert sess.media_error == f"StartMediaTransmission remoteIpAddr {DENIED} refused by the target policy: {RULE}"
            [media] = sess.all_media()
            assert media.remote is None and media.endpoint.packets_sent == 0
            assert await sess.hang_up()
        finally:
            await sess.close()
