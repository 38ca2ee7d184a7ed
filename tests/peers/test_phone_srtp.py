"""SRTP with SDES keys (RFC 4568 / RFC 3711) against real peers on 127.0.0.1: our softphone and
baresip 1.0 (its ``srtp`` module, ``mediaenc=srtp-mand`` / ``srtp``) through Kamailio.

Audio is proven by listening (≥ 95 % of the 20 ms frames of each recording carry the other
side's tone, :func:`test_phone_baresip.share_of`); tshark is the independent judge of the wire:
the SDP it dissects says RTP/SAVP with ``a=crypto``, and the RTP payloads it captured do not
decode to the tone (and look random) — until we unprotect them with the negotiated key."""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, registered, share_of

from peertools import TsharkCapture
from skinnysip.net.media import MediaConfig, MediaStream, SRTPConfig, SRTPContext
from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sip_phone import SIPCall, SIPPhone
from skinnysip.rtp import g711
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.tones import ToneSource

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def bob_peer(pbx: KamailioPeer, mediaenc: str | None = "srtp-mand") -> Any:
    return baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                   extra_account=f"mediaenc={mediaenc}" if mediaenc else "")


async def incoming(phone: SIPPhone, timeout: float = 10.0) -> SIPCall:
    while True:
        event = await phone.next_event(timeout)
        assert event is not None, "no incoming call"
        if isinstance(event, IncomingCall):
            assert isinstance(event.call, SIPCall)
            return event.call


async def talk_to_bob(phone: SIPPhone, bob: Any, seconds: float) -> tuple[SIPCall, dict[str, Any]]:
    """Call bob, talk ``seconds``, hang up; the call and its final media report."""
    call = await phone.call("bob")
    assert await call.wait_connected(15), call.end_reason
    await bob.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(seconds)
    await call.hangup()
    await bob.wait_event("CALL_CLOSED")
    report = call.media_report()
    assert report is not None and isinstance(call, SIPCall)
    return call, report


async def bob_calls(pbx: KamailioPeer, bob: Any, phone: SIPPhone, answered: bool = True) -> SIPCall:
    """baresip dials our phone (alice, answering by itself) through the PBX; our side of the
    call, connected and established at baresip too unless ``answered`` is False."""
    await registered(pbx, "bob")
    await registered(pbx, "alice")
    await bob.command("dial", f"sip:alice@{pbx.realm}")
    call = await incoming(phone)
    if answered:
        assert await call.wait_connected(10), call.end_reason
        await bob.wait_event("CALL_ESTABLISHED")
    return call


def heard_each_other(report: dict[str, Any], bob: Any) -> None:
    assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
    assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95


def tone_share(payloads: list[bytes], freq: float) -> float:
    """Fraction of PCMU payloads (160 octets, 20 ms) that decode to ``freq`` ± 25 Hz."""
    if not payloads:
        return 0.0
    hits = [abs(dominant_frequencies(g711.decode(0, p[:160]), 8000)[0] - freq) < 25 for p in payloads]
    return float(np.mean(hits))


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per octet."""
    counts = Counter(data)
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())


def _hex(value: Any) -> bytes:
    text = value[0] if isinstance(value, list) else value
    return bytes.fromhex(str(text).replace(":", ""))


def check_wire(cap: TsharkCapture, call: SIPCall, sip_port: int) -> None:
    """What tshark saw of ``call``: RTP/SAVP + a=crypto in both SDPs; RTP payloads both ways
    neither G.711 tone nor low-entropy; the peer's packets do decode once unprotected."""
    assert call.media is not None and call.audio is not None
    port = call.media.local_port
    cap.decode_as = [f"udp.port=={sip_port},sip"]
    sdp = cap.decode("sdp", ["sdp.media.proto", "sdp.crypto.crypto_suite", "sip.Call-ID"])
    ours = [layer for layer in sdp if call.call_id in str(layer.get("sip.Call-ID"))]
    assert len(ours) >= 2, sdp  # the offer and the answer (each seen twice through the proxy)
    for layer in ours:
        assert layer["sdp.media.proto"] == ["RTP/SAVP"], layer
        assert layer.get("sdp.crypto.crypto_suite"), layer
    # tshark follows the RTP/SAVP SDP ("Setup Method: SDP") and dissects the stream as SRTP:
    # 160 octets of encrypted payload and the authentication tag (80 or 32 bits)
    rtp = cap.decode(f"rtp && udp.port=={port}", ["udp.srcport", "rtp.p_type", "srtp.enc_payload", "srtp.auth_tag"])
    assert rtp and all("srtp.enc_payload" in p and "srtp.auth_tag" in p for p in rtp), rtp[:2]
    sent = [_hex(p["srtp.enc_payload"]) for p in rtp if int(p["udp.srcport"][0]) == port]
    received = [_hex(p["srtp.enc_payload"]) for p in rtp if int(p["udp.srcport"][0]) != port]
    assert len(sent) > 50 and len(received) > 50, (len(sent), len(received))
    tag = 10 if call.audio.srtp_suite == "AES_CM_128_HMAC_SHA1_80" else 4
    assert {len(_hex(p["srtp.auth_tag"])) for p in rtp if int(p["udp.srcport"][0]) == port} == {tag}
    assert {len(p) for p in sent} == {160}
    # not G.711 of the tones, and as random as cipher text
    assert tone_share(sent, OUR_TONE) < 0.05 and tone_share(received, THEIR_TONE) < 0.05
    assert entropy(b"".join(sent)) > 7.5 and entropy(b"".join(received)) > 7.5
    # control: the same captured packets, unprotected with the keys we negotiated, are the tone
    keys = SRTPConfig.from_audio(call.audio)
    assert keys is not None
    ctx = SRTPContext(SRTPConfig(keys.suite, tx_key=secrets.token_bytes(30), rx_key=keys.rx_key))
    frames = cap.decode(f"udp.dstport=={port} && rtp", ["udp.payload"])
    plain = [ctx.unprotect(_hex(f["udp.payload"])) for f in frames if "udp.payload" in f]
    payloads = [p[12:] for p in plain if p is not None and p[1] & 0x7F == 0]
    assert len(payloads) > 50 and tone_share(payloads, THEIR_TONE) > 0.9


async def test_we_call_baresip_srtp_mand_and_hear_each_other(pbx: KamailioPeer, tmp_path: Path) -> None:
    async with bob_peer(pbx) as bob:
        await registered(pbx, "bob")
        cap = TsharkCapture(f"udp and not port {bob.sip_port}").start()  # SIP via the proxy + all RTP
        try:
            async with SIPPhone(account(pbx, "alice", srtp="mandatory", record_dir=str(tmp_path))) as phone:
                call, report = await talk_to_bob(phone, bob, 3)
        finally:
            cap.stop()
        assert call.audio is not None and call.audio.srtp_suite is not None
        assert report["srtp"]["suite"] == call.audio.srtp_suite and report["srtp"]["auth_failures"] == 0
        assert report["received"]["packets"] > 100 and report["rtcp"]["received"] >= 1  # SRTCP both ways
        heard_each_other(report, bob)
        check_wire(cap, call, pbx.udp_port)


async def test_baresip_srtp_mand_calls_us(pbx: KamailioPeer, tmp_path: Path) -> None:
    async with bob_peer(pbx) as bob, \
            SIPPhone(account(pbx, "alice", srtp="optional", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        await registered(pbx, "bob")
        await registered(pbx, "alice")
        cap = TsharkCapture(f"udp and not port {bob.sip_port}").start()
        try:
            await bob.command("dial", f"sip:alice@{pbx.realm}")
            call = await incoming(phone)
            assert await call.wait_connected(10), call.end_reason
            await bob.wait_event("CALL_ESTABLISHED")
            assert call.remote_offer is not None and call.remote_offer.media[0].proto == "RTP/SAVP"
            await asyncio.sleep(3)
            await bob.command("hangup")
            assert await call.wait_ended(10)
            report = call.media_report()
        finally:
            cap.stop()
        assert report is not None and report["received"]["packets"] > 100
        # baresip as caller sends one plain RTCP APP "PING"/"PONG" (16 octets, no SRTCP trailer): it
        # fails authentication, is counted and dropped; everything else authenticates
        assert report["srtp"]["auth_failures"] <= 2, report["srtp"]
        heard_each_other(report, bob)
        check_wire(cap, call, pbx.udp_port)


async def test_mandatory_against_plain_baresip_fails_with_a_clear_reason(pbx: KamailioPeer) -> None:
    async with bob_peer(pbx, None) as bob, SIPPhone(account(pbx, "alice", srtp="mandatory")) as phone:
        await registered(pbx, "bob")
        call = await phone.call("bob")
        await call.wait_ended(15)
        assert call.state is CallState.TERMINATED
        assert call.end_reason is not None and call.end_reason.startswith("the far end refused SRTP"), call.end_reason
        assert call.connected is None or bob.event_types().count("CALL_CLOSED") >= 1


async def test_optional_falls_back_to_plain_rtp_and_keys_best_effort_srtp(pbx: KamailioPeer,
                                                                          tmp_path: Path) -> None:
    for mediaenc, keyed in ((None, False), ("srtp", True)):
        async with bob_peer(pbx, mediaenc) as bob, \
                SIPPhone(account(pbx, "alice", srtp="optional", record_dir=str(tmp_path / str(mediaenc)))) as phone:
            await registered(pbx, "bob")
            call, report = await talk_to_bob(phone, bob, 2)
            assert call.audio is not None
            assert (call.audio.srtp_suite is not None) is keyed and (report["srtp"] is not None) is keyed
            heard_each_other(report, bob)


async def test_savp_offer_refused_with_488_when_srtp_is_off(pbx: KamailioPeer) -> None:
    async with bob_peer(pbx) as bob, SIPPhone(account(pbx, "alice", auto_answer=0.1)) as phone:
        await registered(pbx, "bob")
        await registered(pbx, "alice")
        await bob.command("dial", f"sip:alice@{pbx.realm}")
        call = await incoming(phone)
        assert await call.wait_ended(10)
        assert call.end_reason is not None and call.end_reason.startswith("488") and "SRTP" in call.end_reason
        closed = await bob.wait_event("CALL_CLOSED")
        assert "488" in str(closed.get("param")), closed


async def test_media_streams_over_srtp_and_a_wrong_key_is_counted(tmp_path: Path) -> None:
    """Two MediaStreams keyed crosswise hear each other; a third with a wrong key hears nothing
    and counts every packet as an authentication failure."""
    k1, k2 = secrets.token_bytes(30), secrets.token_bytes(30)
    suite = "AES_CM_128_HMAC_SHA1_32"
    a = await MediaStream.open("127.0.0.1", source=ToneSource(440), record_dir=tmp_path, name="a", rtcp_scale=0.1)
    b = await MediaStream.open("127.0.0.1", source=ToneSource(660), record_dir=tmp_path, name="b", rtcp_scale=0.1)
    c = await MediaStream.open("127.0.0.1", name="c")
    try:
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port), srtp=SRTPConfig(suite, k1, k2)))
        b.apply(MediaConfig(remote=("127.0.0.1", a.local_port), srtp=SRTPConfig(suite, k2, k1)))
        c.apply(MediaConfig(srtp=SRTPConfig(suite, k2, secrets.token_bytes(30))))
        await asyncio.sleep(1.5)
        a.apply(MediaConfig(remote=("127.0.0.1", c.local_port), srtp=SRTPConfig(suite, k1, k2)))
        await asyncio.sleep(0.5)
    finally:
        ra, rb, rc = await a.close(), await b.close(), await c.close()
    assert ra["srtp"]["auth_failures"] == rb["srtp"]["auth_failures"] == 0
    assert ra["rtcp"]["received"] >= 1 and rb["rtcp"]["received"] >= 1 and ra["rtcp"]["parse_errors"] == 0
    assert share_of(Path(ra["recordings"]["rx"]), 660) >= 0.95
    assert rc["received"]["packets"] == 0 and rc["srtp"]["auth_failures"] > 15
