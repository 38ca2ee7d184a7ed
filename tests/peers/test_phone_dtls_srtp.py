"""DTLS-SRTP (RFC 5763 / RFC 5764) against real peers on 127.0.0.1: our softphone and baresip
1.0 (its ``dtls_srtp`` module, ``mediaenc=dtls_srtp``) through Kamailio, and two of our media
streams with each other.

Audio is proven by listening (≥ 95 % of the 20 ms frames of each recording carry the other
side's tone); tshark is the independent judge of the wire: the SDP says
``UDP/TLS/RTP/SAVP`` with ``a=fingerprint`` and ``a=setup``, the media ports carry a DTLS 1.2
handshake whose ``use_srtp`` extension names the profile we report, and the RTP payloads
are not the tones in the clear."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_call_pcap import tshark
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, registered
from test_phone_srtp import bob_calls, entropy, heard_each_other, talk_to_bob, tone_share
from test_phone_srtp import bob_peer as srtp_bob_peer

from peertools import TsharkCapture
from skinnysip.net.dtls import Certificate
from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPCall, SIPPhone
from skinnysip.sdp import setup_of

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def bob_peer(pbx: KamailioPeer, mediaenc: str | None = "dtls_srtp") -> Any:
    """baresip as bob with ``mediaenc=dtls_srtp`` (or ``mediaenc``; None: plain RTP)."""
    return srtp_bob_peer(pbx, mediaenc)


def check_wire(cap: TsharkCapture, call: SIPCall, sip_port: int, profile: str) -> None:
    """What tshark saw of ``call``: DTLS-SRTP SDP both ways (UDP/TLS/RTP/SAVP, a=fingerprint,
    a=setup); a DTLS 1.2 handshake on our RTP port whose use_srtp names ``profile``; RTP
    payloads both ways neither the tones nor low-entropy."""
    assert call.media is not None
    port = call.media.local_port
    cap.decode_as = [f"udp.port=={sip_port},sip", f"udp.port=={port},dtls"]
    sdp = cap.decode("sdp", ["sdp.media.proto", "sdp.media_attribute.field", "sdp.session_attr.field",
                             "sip.Call-ID"])
    ours = [layer for layer in sdp if call.call_id in str(layer.get("sip.Call-ID"))]
    assert len(ours) >= 2, sdp  # the offer and the answer
    for layer in ours:
        assert layer["sdp.media.proto"] == ["UDP/TLS/RTP/SAVP"], layer
        # at media or session level (baresip puts both at session level, RFC 8122 §5 allows it)
        fields = set(layer.get("sdp.media_attribute.field", [])) | set(layer.get("sdp.session_attr.field", []))
        assert {"fingerprint", "setup"} <= fields, layer
    hello = cap.decode("dtls.handshake.type == 1 || dtls.handshake.type == 2",
                       ["dtls.handshake.type", "dtls.record.version", "dtls.use_srtp.protection_profile"])
    assert hello, "no DTLS ClientHello/ServerHello on our RTP port"
    names = {"0x0001": "SRTP_AES128_CM_SHA1_80", "0x0002": "SRTP_AES128_CM_SHA1_32",
             "0x0007": "SRTP_AEAD_AES_128_GCM", "0x0008": "SRTP_AEAD_AES_256_GCM"}
    server_hello = [h for h in hello if "2" in h["dtls.handshake.type"]]
    assert server_hello and names.get(server_hello[0]["dtls.use_srtp.protection_profile"][0]) == profile, hello
    rtp = cap.decode(f"udp.port=={port} && !dtls && udp.length > 100", ["udp.srcport", "udp.payload"])
    sent = [bytes.fromhex(p["udp.payload"][0].replace(":", ""))[12:172] for p in rtp if int(p["udp.srcport"][0]) == port]
    received = [bytes.fromhex(p["udp.payload"][0].replace(":", ""))[12:172] for p in rtp
                if int(p["udp.srcport"][0]) != port]
    assert len(sent) > 50 and len(received) > 50, (len(sent), len(received))
    assert tone_share(sent, OUR_TONE) < 0.05 and tone_share(received, THEIR_TONE) < 0.05
    assert entropy(b"".join(sent)) > 7.5 and entropy(b"".join(received)) > 7.5


async def test_we_call_baresip_over_dtls_srtp_and_the_wire_shows_it(pbx: KamailioPeer, tmp_path: Path) -> None:
    async with bob_peer(pbx) as bob:
        await registered(pbx, "bob")
        cap = TsharkCapture(f"udp and not port {bob.sip_port}").start()
        try:
            async with SIPPhone(account(pbx, "alice", srtp="dtls", record_dir=str(tmp_path))) as phone:
                call, report = await talk_to_bob(phone, bob, 3)
        finally:
            cap.stop()
        assert isinstance(call, SIPCall) and call.audio is not None
        # we offered actpass; baresip answered, so the roles are what its a=setup said
        assert call.offer is not None and call.offer.media[0].attribute("setup") == "actpass"
        dtls = report["dtls"]
        assert dtls is not None and set(dtls) == {"rtp", "rtcp"}  # no rtcp-mux: an association each
        assert {d["profile"] for d in dtls.values()} == {"SRTP_AES128_CM_SHA1_80"}
        assert all(d["error"] is None for d in dtls.values())
        # baresip sends one plain RTCP APP "PINGPONG" (16 octets, no SRTCP trailer) to our RTCP
        # port: it fails authentication, is counted and dropped; everything else authenticates
        assert report["srtp"]["suite"] == "AES_CM_128_HMAC_SHA1_80" and report["srtp"]["auth_failures"] <= 1
        assert report["received"]["packets"] > 100 and report["rtcp"]["received"] >= 1  # SRTCP both ways
        heard_each_other(report, bob)
        check_wire(cap, call, pbx.udp_port, "SRTP_AES128_CM_SHA1_80")
        # the call's own pcap (what --pcap and the API's pcap give) holds the handshake as sent
        path = tmp_path / "call.pcapng"
        call.write_pcap(path)
        assert call.media is not None
        rows = tshark(path, "-d", f"udp.port=={call.media.local_port},dtls", "-d", f"udp.port=={call.media.rtcp_port},dtls",
                      "-Y", "dtls.handshake.type == 1 || dtls.handshake.type == 2", "-T", "fields",
                      "-e", "dtls.handshake.type")
        types = [t for row in rows for t in row[0].split(",")]
        assert types.count("1") >= 2 and types.count("2") >= 2, rows  # RTP's and RTCP's associations


async def test_baresip_calls_us_over_dtls_srtp(pbx: KamailioPeer, tmp_path: Path) -> None:
    async with bob_peer(pbx) as bob, \
            SIPPhone(account(pbx, "alice", srtp="optional", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        call = await bob_calls(pbx, bob, phone)
        offer = call.remote_offer
        # baresip 1.0 offers the feedback profile, a=setup and a=fingerprint at session level
        assert offer is not None and offer.media[0].proto == "UDP/TLS/RTP/SAVPF"
        assert call.local_sdp is not None
        answer = call.local_sdp.media[0]
        assert answer.proto == "UDP/TLS/RTP/SAVPF" and answer.attribute("fingerprint") is not None
        # RFC 5763 §5: an actpass offer is answered active, and we open the association
        assert setup_of(offer, offer.media[0]) == "actpass" and answer.attribute("setup") == "active"
        await asyncio.sleep(3)
        await bob.command("hangup")
        assert await call.wait_ended(10)
        report = call.media_report()
        assert report is not None and report["dtls"]["rtp"]["role"] == "client"
        assert report["srtp"]["auth_failures"] <= 2, report["srtp"]  # baresip's plain RTCP APP PING
        heard_each_other(report, bob)


async def test_hold_and_resume_keep_the_dtls_association(pbx: KamailioPeer, tmp_path: Path) -> None:
    """Our re-offers (hold, resume) carry the same fingerprint and actpass; baresip answers
    with the same roles, so the association stays (RFC 8842 §5.5) and audio comes back."""
    async with bob_peer(pbx) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", srtp="dtls", record_dir=str(tmp_path))) as phone:
            call = await phone.call("bob")
            assert await call.wait_connected(15), call.end_reason
            await bob.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(1)
            assert call.media is not None
            first = call.media.report()["dtls"]["rtp"]
            await call.hold()
            await asyncio.sleep(1)
            await call.resume()
            before = call.media.report()["received"]["packets"]
            await asyncio.sleep(2)
            after = call.media.report()
            await call.hangup()
            await bob.wait_event("CALL_CLOSED")
        assert after["dtls"]["rtp"]["state"] == "connected" and after["dtls"]["rtp"]["role"] == first["role"]
        assert after["dtls"]["rtp"]["datagrams_received"] == first["datagrams_received"]  # no second handshake
        assert after["received"]["packets"] - before > 80 and after["srtp"]["auth_failures"] <= 1  # its RTCP PING


async def test_baresip_holds_and_resumes_us_on_the_same_association(pbx: KamailioPeer, tmp_path: Path) -> None:
    """baresip called us (we answered active: the DTLS client); its hold and resume
    re-INVITEs offer actpass again, and we answer active again with the same fingerprint
    (RFC 8842 §5.5): no new handshake, and its audio comes back after the resume."""
    async with bob_peer(pbx) as bob, \
            SIPPhone(account(pbx, "alice", srtp="dtls", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        call = await bob_calls(pbx, bob, phone)
        await asyncio.sleep(1)
        assert call.media is not None and call.audio is not None
        first = call.media.report()["dtls"]["rtp"]
        for command, held in (("hold", True), ("resume", False)):
            await bob.command(command)
            for _ in range(50):
                if call.remote_hold is held:
                    break
                await asyncio.sleep(0.1)
            assert call.remote_hold is held, command
            assert call.local_sdp is not None and call.local_sdp.media[0].attribute("setup") == "active"
        before = call.media.report()["received"]["packets"]
        await asyncio.sleep(2)
        after = call.media.report()
        await call.hangup()
        await bob.wait_event("CALL_CLOSED")
    assert first["role"] == "client" and after["dtls"]["rtp"]["state"] == "connected"
    assert after["dtls"]["rtp"]["datagrams_sent"] == first["datagrams_sent"]  # no second ClientHello
    assert after["received"]["packets"] - before > 80 and after["srtp"]["auth_failures"] <= 2


async def test_dtls_against_a_plain_baresip_fails_with_a_clear_reason(pbx: KamailioPeer) -> None:
    async with bob_peer(pbx, None) as bob, SIPPhone(account(pbx, "alice", srtp="dtls")) as phone:
        await registered(pbx, "bob")
        call = await phone.call("bob")
        await call.wait_ended(15)
        assert call.state is CallState.TERMINATED
        assert call.end_reason is not None and call.end_reason.startswith("the far end refused SRTP"), call.end_reason
        assert call.connected is None or bob.event_types().count("CALL_CLOSED") >= 1


async def test_dtls_srtp_offer_refused_with_488_when_srtp_is_off(pbx: KamailioPeer) -> None:
    async with bob_peer(pbx) as bob, SIPPhone(account(pbx, "alice", auto_answer=0.1)) as phone:
        call = await bob_calls(pbx, bob, phone, answered=False)
        assert await call.wait_ended(10)
        assert call.end_reason is not None and call.end_reason.startswith("488") and "DTLS" in call.end_reason
        closed = await bob.wait_event("CALL_CLOSED")
        assert "488" in str(closed.get("param")), closed


class LyingPhone(SIPPhone):
    """A phone whose SDP announces another certificate's fingerprint than the one its DTLS
    handshake shows: what a man in the middle who rewrote the SDP would look like."""

    def _dtls_fingerprint(self) -> tuple[str, str] | None:
        return "sha-256", OTHER.fingerprint("sha-256")


OTHER = Certificate.generate("someone-else")


async def test_a_certificate_that_does_not_match_its_fingerprint_ends_the_call(pbx: KamailioPeer) -> None:
    async with SIPPhone(account(pbx, "alice", srtp="dtls")) as alice, \
            LyingPhone(account(pbx, "bob", srtp="optional", auto_answer=0.1)) as bob:
        await registered(pbx, "bob")
        call = await alice.call("bob")
        assert await call.wait_ended(15), "the call went on with an unauthenticated peer"
        assert call.end_reason is not None and call.end_reason.startswith("DTLS-SRTP failed"), call.end_reason
        assert "does not match its SDP a=fingerprint" in call.end_reason
        report = call.media_report()
        assert report is not None and report["received"]["packets"] == 0 and report["srtp"] is None
        # our BYE said why, through Kamailio (RFC 3326): the other phone reports it
        theirs = bob.calls[-1]
        assert await theirs.wait_ended(10)
        assert theirs.remote_reason is not None and theirs.remote_reason.startswith("SIP cause 488 (DTLS-SRTP failed: "), \
            theirs.remote_reason


async def test_baresips_full_ice_agent_checks_and_nominates_us_as_ice_lite(pbx: KamailioPeer, tmp_path: Path) -> None:
    """baresip with its ``ice`` module (``medianat=ice``: a full ICE agent) calls us with
    DTLS-SRTP; with ``ice=True`` we answer as an ICE lite agent (RFC 8445 §2.5), so baresip
    controls: it sends connectivity checks to our host candidates, we answer them, it
    nominates, and media and DTLS run over that pair."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                       extra_account="mediaenc=dtls_srtp;medianat=ice", codec_modules=("ice",)) as bob, \
            SIPPhone(account(pbx, "alice", srtp="optional", ice=True, auto_answer=0.2,
                             record_dir=str(tmp_path))) as phone:
        call = await bob_calls(pbx, bob, phone)
        offer = call.remote_offer
        assert offer is not None and offer.media[0].attribute_values("candidate"), offer.to_bytes()
        assert call.local_sdp is not None and ("ice-lite", None) in call.local_sdp.attributes
        await asyncio.sleep(3)
        await bob.command("hangup")
        assert await call.wait_ended(10)
        report = call.media_report()
        assert report is not None
        ice = report["ice"]
        assert ice is not None and set(ice) == {"rtp", "rtcp"}, ice  # no rtcp-mux: a check per component
        for component in ice.values():
            assert component["answered"] >= 1 and component["refused"] == 0 and component["nominations"] >= 1, ice
        assert report["dtls"]["rtp"]["error"] is None
        heard_each_other(report, bob)
