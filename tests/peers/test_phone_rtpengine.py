"""The softphone behind a media relay: Kamailio rewriting every SDP through Sipwise rtpengine
(``rtpengine_peer.py``), as most Kamailio deployments do, with baresip as the far end.

Our phone then never sees the far end's addresses: the offers and answers it gets name
rtpengine's ports (and its ``a=rtcp``), and rtpengine may change more than addresses on the way —
RTP to SRTP with its own SDES keys, ICE candidates offered on our side, RTCP multiplexing.
Audio is proven by listening on both sides (≥ 95 % of 20 ms frames carry the other's tone)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baresip_peer import baresip
from rtpengine_peer import RtpenginePeer, rtpengine
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, registered, share_of
from test_phone_baresip import _wav as wav_samples
from test_phone_srtp import bob_calls, heard_each_other

from skinnysip.phone.sip_phone import SIPCall, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def relay() -> Iterator[RtpenginePeer]:
    with rtpengine() as peer:
        yield peer


def bob_peer(pbx: KamailioPeer, extra_account: str = "") -> Any:
    return baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                   extra_account=extra_account)


def relayed(call: SIPCall, relay: RtpenginePeer) -> None:
    """The far end's SDP as our phone got it names rtpengine's address and ports only."""
    assert call.audio is not None
    assert call.audio.remote is not None
    host, port = call.audio.remote
    assert host == "127.0.0.1" and relay.relays(port), call.audio
    if call.audio.remote_rtcp is not None and not call.audio.rtcp_mux:
        assert relay.relays(call.audio.remote_rtcp[1]), call.audio


async def test_we_call_through_rtpengine_hold_resume_and_hear_each_other(relay: RtpenginePeer,
                                                                          tmp_path: Path) -> None:
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "", "")) as pbx:
        async with bob_peer(pbx) as bob:
            await registered(pbx, "bob")
            async with SIPPhone(account(pbx, "alice", record_dir=str(tmp_path))) as phone:
                call = await phone.call("bob")
                assert await call.wait_connected(15), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED")
                relayed(call, relay)
                await asyncio.sleep(2)
                assert call.media is not None
                await call.hold()
                assert call.audio is not None and call.audio.direction == "sendonly"
                await asyncio.sleep(0.3)
                held = call.media.report()["received"]["packets"]
                await asyncio.sleep(1)
                assert call.media.report()["received"]["packets"] - held <= 2
                await call.resume()
                assert call.audio.direction == "sendrecv"
                relayed(call, relay)
                await asyncio.sleep(1.5)
                assert call.media.report()["received"]["packets"] - held > 40
                await call.hangup()
                await bob.wait_event("CALL_CLOSED")
                report = call.media_report()
            assert report is not None and report["rtcp"]["received"] >= 1
            # bob heard us all along (we kept sending while holding him); we heard him before the
            # hold and after the resume: the recording's first 0.3–1.8 s and its last 1.2 s
            assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95
            samples, rate = wav_samples(Path(report["recordings"]["rx"]))
            for span in (samples[int(0.3 * rate):int(1.8 * rate)], samples[-int(1.2 * rate):]):
                assert np.mean(np.abs(dominant_frequencies(span, rate) - THEIR_TONE) < 25) >= 0.95


async def test_rtpengine_offers_us_srtp_for_a_plain_caller(relay: RtpenginePeer, tmp_path: Path) -> None:
    """baresip calls with plain RTP; rtpengine offers our phone RTP/SAVP with its own SDES key
    (flag ``RTP/SAVP``), we answer with ours, and the relay bridges SRTP to RTP."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "RTP/SAVP", "")) as pbx:
        async with bob_peer(pbx) as bob, \
                SIPPhone(account(pbx, "alice", srtp="mandatory", auto_answer=0.2,
                                 record_dir=str(tmp_path))) as phone:
            call = await bob_calls(pbx, bob, phone)
            assert call.remote_offer is not None and call.remote_offer.media[0].proto == "RTP/SAVP"
            # rtpengine offers twelve suites, AES-256-GCM first: we take the first we can key (RFC 7714)
            assert call.audio is not None and call.audio.srtp_suite == "AEAD_AES_256_GCM"
            relayed(call, relay)
            await asyncio.sleep(3)
            await bob.command("hangup")
            assert await call.wait_ended(10)
            report = call.media_report()
            assert report is not None and report["srtp"]["suite"] is not None
            assert report["srtp"]["auth_failures"] == 0 and report["rtcp"]["received"] >= 1  # SRTCP too
            heard_each_other(report, bob)


@pytest.mark.parametrize("suites", [None, ("AEAD_AES_128_GCM",), ("AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_32")])
async def test_our_srtp_call_reaches_a_plain_callee_through_rtpengine(relay: RtpenginePeer, tmp_path: Path,
                                                                      suites: tuple[str, ...] | None) -> None:
    """We offer RTP/SAVP (our default AES-CM suites, or the AES-GCM ones of RFC 7714 through
    ``srtp_suites``); rtpengine offers baresip plain RTP (flag ``RTP/AVP``) and answers us
    RTP/SAVP keying our first suite with its own key."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "RTP/AVP", "")) as pbx:
        async with bob_peer(pbx) as bob:
            await registered(pbx, "bob")
            async with SIPPhone(account(pbx, "alice", srtp="mandatory", srtp_suites=suites,
                                        record_dir=str(tmp_path))) as phone:
                call = await phone.call("bob")
                assert await call.wait_connected(15), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED")
                assert call.audio is not None
                assert call.audio.srtp_suite == (suites or ("AES_CM_128_HMAC_SHA1_80",))[0]
                relayed(call, relay)
                await asyncio.sleep(3)
                await call.hangup()
                await bob.wait_event("CALL_CLOSED")
                report = call.media_report()
            assert report is not None and report["srtp"]["auth_failures"] == 0
            heard_each_other(report, bob)


@pytest.mark.parametrize("flags", ["ICE=force rtcp-mux-offer", "RTP/AVPF"])
async def test_offers_rtpengine_reshapes_are_answered_and_heard(relay: RtpenginePeer, tmp_path: Path,
                                                                 flags: str) -> None:
    """``ICE=force rtcp-mux-offer``: rtpengine offers our side ICE (ice-ufrag/pwd and host
    candidates) and RTCP multiplexing. We do no ICE: our answer has no ICE attributes, so the
    relay falls back to plain RTP (RFC 8445 §5.1.1.1); we accept rtcp-mux, and RTCP then
    shares the RTP port both ways (RFC 5761). ``RTP/AVPF``: the offer is in the feedback profile
    (RFC 4585), and our answer is too (its regular RTCP mode is what we send)."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, flags, "")) as pbx:
        async with bob_peer(pbx) as bob, \
                SIPPhone(account(pbx, "alice", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
            call = await bob_calls(pbx, bob, phone)
            offer = call.remote_offer
            assert offer is not None and call.audio is not None
            names = [name for name, _ in offer.media[0].attributes]
            if "ICE" in flags:
                assert "ice-ufrag" in names and "candidate" in names and "rtcp-mux" in names, names
                assert call.audio.rtcp_mux
            else:
                assert offer.media[0].proto == "RTP/AVPF"
            answer = next(m.raw for m in call.exchange if m.direction == "sent" and m.summary.startswith("200"))
            assert f"m=audio {call.media.local_port if call.media else 0} {offer.media[0].proto} " in answer
            assert "a=ice" not in answer and "a=candidate" not in answer
            relayed(call, relay)
            await asyncio.sleep(3)
            await bob.command("hangup")
            assert await call.wait_ended(10)
            report = call.media_report()
            assert report is not None and report["rtcp"]["received"] >= 1
            heard_each_other(report, bob)


async def test_rtpengine_offers_us_dtls_srtp_for_a_plain_caller(relay: RtpenginePeer, tmp_path: Path) -> None:
    """rtpengine turns baresip's plain offer into DTLS-SRTP (``UDP/TLS/RTP/SAVP``, RFC 5764),
    as a WebRTC gateway does: we answer ``a=setup:active`` with our fingerprint, open the DTLS
    association with rtpengine and key SRTP from it (RFC 5763 §5); the relay bridges it to
    baresip's plain RTP."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "UDP/TLS/RTP/SAVP", "")) as pbx:
        async with bob_peer(pbx) as bob, \
                SIPPhone(account(pbx, "alice", auto_answer=0.2, srtp="optional", record_dir=str(tmp_path))) as phone:
            call = await bob_calls(pbx, bob, phone)
            offer = call.remote_offer
            assert offer is not None and offer.media[0].proto == "UDP/TLS/RTP/SAVP"
            assert call.local_sdp is not None and call.local_sdp.media[0].attribute("setup") == "active"
            relayed(call, relay)
            await asyncio.sleep(6)  # baresip's first RTCP comes after ~5 s
            await bob.command("hangup")
            assert await call.wait_ended(10)
            report = call.media_report()
            assert report is not None and report["dtls"] is not None
            assert all(d["role"] == "client" and d["error"] is None for d in report["dtls"].values()), report["dtls"]
            # SRTCP keyed by the association on the RTCP port (no rtcp-mux: RFC 5764 §4.1)
            assert set(report["dtls"]) == {"rtp", "rtcp"} and report["rtcp"]["received"] >= 1
            assert report["srtp"]["auth_failures"] == 0 and report["srtp"]["suite"] == "AEAD_AES_256_GCM"
            heard_each_other(report, bob)


async def test_our_dtls_srtp_call_reaches_a_plain_callee_through_rtpengine(relay: RtpenginePeer,
                                                                         tmp_path: Path) -> None:
    """We offer DTLS-SRTP (actpass); rtpengine offers baresip plain RTP (flag ``RTP/AVP``) and
    answers us in DTLS-SRTP with its own certificate, whose fingerprint our handshake checks."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "RTP/AVP", "")) as pbx:
        async with bob_peer(pbx) as bob:
            await registered(pbx, "bob")
            async with SIPPhone(account(pbx, "alice", srtp="dtls", record_dir=str(tmp_path))) as phone:
                call = await phone.call("bob")
                assert await call.wait_connected(15), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED")
                assert call.audio is not None and call.audio.dtls_role is not None
                relayed(call, relay)
                await asyncio.sleep(3)
                await call.hangup()
                await bob.wait_event("CALL_CLOSED")
                report = call.media_report()
            assert report is not None and report["dtls"] is not None
            assert all(d["error"] is None and d["profile"] for d in report["dtls"].values()), report["dtls"]
            assert report["srtp"]["auth_failures"] == 0
            heard_each_other(report, bob)


@pytest.mark.parametrize("flags", ["ICE=force rtcp-mux-offer", "ICE=force rtcp-mux-offer UDP/TLS/RTP/SAVP"])
async def test_as_an_ice_lite_agent_rtpengine_checks_and_nominates_us(relay: RtpenginePeer, tmp_path: Path,
                                                                     flags: str) -> None:
    """``ice=True``: rtpengine offers us ICE (and, second, DTLS-SRTP too: a WebRTC-style leg);
    we answer as an ICE lite agent (RFC 8445 §2.5: ``a=ice-lite``, our credentials, a host
    candidate), so rtpengine, the full and controlling agent, sends its connectivity checks to
    our media port; we answer them (MESSAGE-INTEGRITY with our password) and it nominates
    (USE-CANDIDATE). Audio both ways (and the DTLS handshake) run over the nominated pair."""
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, flags, "")) as pbx:
        async with bob_peer(pbx) as bob, \
                SIPPhone(account(pbx, "alice", auto_answer=0.2, ice=True, srtp="optional",
                                 record_dir=str(tmp_path))) as phone:
            call = await bob_calls(pbx, bob, phone)
            assert call.remote_offer is not None and call.local_sdp is not None
            answer = call.local_sdp
            assert ("ice-lite", None) in answer.attributes
            line = answer.media[0]
            assert line.attribute("ice-ufrag") and line.attribute("ice-pwd") and line.attribute("rtcp-mux") == ""
            assert call.media is not None
            assert line.attribute_values("candidate") == [
                f"1 1 UDP 2130706431 {call.media.local_ip} {call.media.local_port} typ host"]  # muxed: RTP only
            await asyncio.sleep(3)
            report = call.media.report()
            await bob.command("hangup")
            assert await call.wait_ended(10)
            ice = report["ice"]
            assert ice is not None and set(ice) == {"rtp"}, ice
            assert ice["rtp"]["answered"] >= 1 and ice["rtp"]["refused"] == 0, ice
            assert ice["rtp"]["nominations"] >= 1 and ice["rtp"]["nominated"] is not None, ice
            assert relay.relays(ice["rtp"]["nominated"][1]), ice  # the pair ends at rtpengine's port
            if "UDP/TLS" in flags:
                assert report["dtls"] is not None and report["dtls"]["rtp"]["error"] is None, report["dtls"]
            heard_each_other(call.media_report() or report, bob)
