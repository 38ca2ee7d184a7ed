"""The SCCP station against the lab call manager over real loopback TCP/TLS and real RTP sockets.

Covers issue 3's "station against the lab call manager": register, line state, an echo call with
holdMs whose audio comes back (RTP counted both ways, payloads compared), a tone call (the 1 kHz
tone is decoded and measured), a call between two stations (RTP both ways, station to station),
an incoming call answered (OffHook and SoftKeyEvent Answer), unregister, protocol-17 layouts, TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sip_peers import make_self_signed

from skinnysip.lab.callmanager import LabCallManager, LabConfig
from skinnysip.probes.sccp import SCCPRequest, StationSession, run_operation
from skinnysip.sccp.station import StationConfig

pytestmark = pytest.mark.peer

ALICE, BOB = "SEP001122334455", "SEP00112233445A"


@pytest.fixture
async def lab() -> AsyncIterator[LabCallManager]:
    cm = LabCallManager(LabConfig.demo(keep_alive_interval=1))
    await cm.start()
    try:
        yield cm
    finally:
        await cm.stop()


def req(cm: LabCallManager, **kw: object) -> SCCPRequest:
    return SCCPRequest.model_validate({"host": "127.0.0.1", "port": cm.port, "timeout": 3000, **kw})


def cm_received(cm: LabCallManager, device: str) -> list[str]:
    return [m.summary for s in cm.all_sessions if s.name == device for m in s.transport.messages
            if m.direction == "received"]


async def test_register_and_unregister(lab: LabCallManager) -> None:
    res = await run_operation("register", req(lab))
    body = res.to_api()
    assert body["success"] is True and body["registered"] is True and body["status"] == "registered"
    assert body["keepAliveInterval"] == 1 and body["protocolVersion"] == 11
    assert body["deviceTypeName"] == "7960" and body["rejected"] is False
    assert body["capabilitiesRequested"] is True and body["capabilities"] == ["G711Ulaw64k", "G711Alaw64k"]
    assert body["unregistered"] is True
    names = [(m["direction"], m["summary"]) for m in body["exchange"]]
    assert names[:4] == [("sent", "Register"), ("received", "RegisterAck"), ("received", "CapabilitiesReq"),
                         ("sent", "CapabilitiesRes")]
    assert names[-2:] == [("sent", "Unregister"), ("received", "UnregisterAck")]
    reg = body["exchange"][0]["decoded"]
    assert reg["id"] == 1 and reg["fields"]["deviceName"] == ALICE and reg["fields"]["deviceType"] == 7
    assert "Unregister" in cm_received(lab, ALICE)  # the CM saw it too


async def test_linestate_lists_lines_speed_dials_and_soft_keys(lab: LabCallManager) -> None:
    body = (await run_operation("linestate", req(lab))).to_api()
    assert body["success"] is True, body["error"]
    assert body["lines"] == [{"lineNumber": 1, "dirNumber": "1001", "label": "Alice", "displayName": "Alice Example"}]
    assert body["speedDials"] == [{"number": 1, "dirNumber": "600", "displayName": "Echo"}]
    assert {"label": "Answer", "event": 11} in body["softKeys"] and len(body["softKeys"]) == 18
    sent = [m["summary"] for m in body["exchange"] if m["direction"] == "sent"]
    for name in ("ButtonTemplateReq", "SoftKeyTemplateReq", "SoftKeySetReq", "LineStatReq", "TimeDateReq"):
        assert name in sent


async def test_echo_call_audio_comes_back(lab: LabCallManager) -> None:
    body = (await run_operation("call-setup", req(lab, dialNumber="600", holdMs=1500))).to_api()
    assert body["success"] is True, body["error"]
    call = body["call"]
    assert call["states"][0] == "OffHook" and "Connected" in call["states"] and call["states"][-1] == "OnHook"
    assert call["tones"][0] == "InsideDialTone" and call["calledParty"] == "600"
    assert call["codec"] == "G711Ulaw64k"
    # ~75 packets in 1.5 s; loose bounds (no timing assertion), but media really flowed both ways
    assert body["rtpPacketsSent"] >= 20 and body["rtpPacketsReceived"] >= 20
    assert body["rtpPacketsReceived"] <= body["rtpPacketsSent"]
    # what came back is our own 800 Hz tone: every audible 20 ms frame played out (≥ 95 %)
    assert call["echoMatched"] >= 5 and call["echoShare"] >= 0.95
    names = [m["summary"] for m in body["exchange"]]
    for name in ("OpenReceiveChannel", "OpenReceiveChannelAck", "StartMediaTransmission", "CloseReceiveChannel",
                 "StopMediaTransmission"):
        assert name in names
    keys = [m["decoded"]["fields"]["kpButton"] for m in body["exchange"] if m["summary"] == "KeypadButton"]
    assert keys == [6, 0, 0]
    # the keepalive loop ran with the 1 s interval the CM gave
    assert sum(1 for m in body["exchange"] if m["summary"] == "KeepAlive") >= 1
    assert sum(1 for m in body["exchange"] if m["summary"] == "KeepAliveAck") >= 1


async def test_tone_call_receives_1khz(lab: LabCallManager) -> None:
    sess = await StationSession.connect("127.0.0.1", lab.port, StationConfig(), timeout=3.0)
    try:
        assert type(await sess.register()).__name__ == "Registered"
        assert await sess.finish_registration()
        await sess.call("601")
        assert (await sess.wait_state({"Connected"})) is not None
        await sess.hold(0.8)
        [media] = sess.all_media()
        audio = media.endpoint.received_audio().astype(float)
        assert len(audio) >= 1600
        spectrum = np.abs(np.fft.rfft(audio[-1600:]))
        peak_hz = np.argmax(spectrum) * 8000 / 1600
        assert abs(peak_hz - 1000) <= 10
        assert await sess.hang_up()
    finally:
        await sess.close()


async def _station(cm: LabCallManager, name: str, seed: int, pv: int = 11) -> StationSession:
    sess = await StationSession.connect("127.0.0.1", cm.port, StationConfig(device_name=name, protocol_version=pv),
                                        timeout=3.0, audio_seed=seed)
    assert type(await sess.register()).__name__ == "Registered"
    assert await sess.finish_registration()
    return sess


@pytest.mark.parametrize("use_soft_key", [False, True], ids=["offhook", "softkey-answer"])
async def test_call_between_two_stations_rtp_both_ways(lab: LabCallManager, use_soft_key: bool) -> None:
    alice = await _station(lab, ALICE, seed=1)
    bob = await _station(lab, BOB, seed=2)
    try:
        call = await alice.call("1002")

        async def bob_side() -> None:
            incoming = await bob.wait_incoming()
            assert incoming is not None and incoming.line_instance == 1
            assert bob.station.ringing_call() is not None
            await bob.answer(use_soft_key=use_soft_key)
            assert await bob.wait_state({"Connected"}) is not None
            answered = bob.station.calls[incoming.call_reference]
            assert answered.calling_party == "1001" and answered.called_party == "1002"  # CallInfo
            await bob.hold(1.0)

        async def alice_side() -> None:
            assert await alice.wait_state({"RingOut"}) is not None
            assert await alice.wait_state({"Connected"}) is not None
            await alice.hold(1.0)

        await asyncio.gather(bob_side(), alice_side())
        [a_media] = alice.all_media()
        [b_media] = bob.all_media()
        # StartMediaTransmission pointed each station straight at the other's RTP socket
        assert a_media.remote == (b_media.endpoint.local_ip, b_media.endpoint.local_port)
        assert b_media.remote == (a_media.endpoint.local_ip, a_media.endpoint.local_port)
        a_ep, b_ep = a_media.endpoint, b_media.endpoint
        assert a_ep.packets_sent >= 20 and b_ep.packets_sent >= 20
        assert a_ep.packets_received >= 20 and b_ep.packets_received >= 20
        # what each received is exactly what the other sent (payloads compared)
        assert set(a_ep.received_payloads) <= set(b_ep.sent_payloads)
        assert set(b_ep.received_payloads) <= set(a_ep.sent_payloads)
        assert not set(a_ep.sent_payloads) & set(b_ep.sent_payloads)  # different audio each way
        assert await alice.hang_up()
        ended = await bob.wait_state({"OnHook"})
        assert ended is not None  # the far end was torn down too
        assert call.ended and "Connected" in call.states
        assert bob.station.calls[ended.call_reference].incoming
        assert await alice.unregister() and await bob.unregister()
    finally:
        await alice.close()
        await bob.close()


async def test_busy_and_invalid_numbers_fail_cleanly(lab: LabCallManager) -> None:
    body = (await run_operation("call-setup", req(lab, dialNumber="999"))).to_api()
    assert body["success"] is False and "Congestion" in body["error"]
    assert body["call"]["states"][-1] == "OnHook"  # hung up after the failure
    # Bob is not registered: calling his line gives Busy
    body = (await run_operation("call-setup", req(lab, dialNumber="1002"))).to_api()
    assert body["success"] is False and "Busy" in body["error"]


async def test_protocol_17_layouts_end_to_end(lab: LabCallManager) -> None:
    body = (await run_operation("call-setup", req(lab, dialNumber="600", holdMs=500, protocolVersion=17))).to_api()
    assert body["success"] is True, body["error"]
    assert body["protocolVersion"] == 17
    ack = next(m for m in body["exchange"] if m["summary"] == "OpenReceiveChannelAck")
    assert len(bytes.fromhex(ack["raw"])) == 12 + 36  # the v17 layout (§3.19)
    assert ack["decoded"]["fields"]["ipAddrType"] == 0
    smt = next(m for m in body["exchange"] if m["summary"] == "StartMediaTransmission")
    assert len(bytes.fromhex(smt["raw"])) >= 12 + 132
    assert body["rtpPacketsReceived"] >= 5 and body["call"]["echoMatched"] > 0 and body["call"]["echoShare"] >= 0.95


async def test_ipv6_media_needs_protocol_17() -> None:
    """Over IPv6 (::1) the 20-byte address form of protocol 17 carries the station's IPv6 RTP
    address and the echo call's audio comes back; at protocol 11 (IPv4-only layouts, §1.4) the
    station answers OpenReceiveChannelAck with status 11 and says why there is no RTP."""
    cm = LabCallManager(LabConfig.demo(host="::1"))
    await cm.start()
    try:
        base = {"host": "::1", "port": cm.port, "timeout": 3000, "dialNumber": "600", "holdMs": 500}
        body = (await run_operation("call-setup", SCCPRequest.model_validate({**base, "protocolVersion": 17}))).to_api()
        assert body["success"] is True, body["error"]
        ack = next(m for m in body["exchange"] if m["summary"] == "OpenReceiveChannelAck")
        assert ack["decoded"]["fields"]["ipAddrType"] == 1 and ack["decoded"]["fields"]["ipAddr"] == "::1"
        assert body["call"]["localRtp"].startswith("[::1]:") and body["call"]["remoteRtp"].startswith("[::1]:")
        assert body["rtpPacketsReceived"] >= 5 and body["call"]["echoMatched"] > 0 and body["call"]["echoShare"] >= 0.95

        classic = (await run_operation("call-setup", SCCPRequest.model_validate(base))).to_api()
        assert classic["call"]["connected"] and classic["rtpPacketsSent"] == 0
        ack = next(m for m in classic["exchange"] if m["summary"] == "OpenReceiveChannelAck")
        assert ack["decoded"]["fields"]["mediaReceptionStatus"] == 11
        assert any(m.startswith("no RTP: the station's address ::1 is IPv6") for m in classic["messages"])
        assert classic["call"]["mediaError"].startswith("the station's address ::1 is IPv6, but protocol 11")
        assert body["call"]["mediaError"] is None
    finally:
        await cm.stop()


async def test_tls_register_and_certificate_check(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    cm = LabCallManager(LabConfig.demo(tls_cert=str(cert), tls_key=str(key)))
    await cm.start()
    try:
        ok = await run_operation("register", req(cm, tls=True), ca_file=str(cert))
        assert ok.success, ok.error
        assert ok.transport == "tls" and ok.tls is not None and ok.tls.verified and ok.tls.version
        assert ok.exchange[0].transport == "tls"
        insecure = await run_operation("probe", req(cm, tls=True, tlsVerify=False))
        assert insecure.success and insecure.keep_alive_ack and insecure.tls is not None
        assert not insecure.tls.verified
        refused = await run_operation("register", req(cm, tls=True))  # system store: self-signed fails
        assert not refused.success and "certificate" in (refused.error or "").lower()
    finally:
        await cm.stop()


async def test_lab_cm_accepts_real_7962_offhook_bytes(lab: LabCallManager) -> None:
    """The 20-byte OffHook of a real 7962 quoted in the reference (§1.1, header version 0x16)
    makes the CM start a call: CallState OffHook and dial tone come back."""
    from skinnysip.net.sccp_transport import SCCPTransport
    from skinnysip.sccp.messages import encode

    conn = await SCCPTransport.connect("127.0.0.1", lab.port, timeout=3.0)
    try:
        await conn.send(encode("Register", {"deviceName": ALICE, "stationIpAddr": "127.0.0.1", "deviceType": 404,
                                            "protocolVer": 22}))
        assert (await conn.recv(3.0)).name == "RegisterAck"
        conn.protocol_version = 22
        real = bytes.fromhex("0c000000" "16000000" "06000000" "0000000000000000")
        await conn.send(real)
        seen = [(await conn.recv(3.0)) for _ in range(7)]
        state = next(m for m in seen if m.name == "CallState")
        assert state.fields["callState"] == 1 and state.fields["lineInstance"] == 1
        tone = next(m for m in seen if m.name == "StartTone")
        assert tone.fields["tone"] == 0x21
        assert conn.messages[1].decoded is not None and conn.messages[2].summary == "OffHook"
        assert conn.messages[2].raw == real.hex()
    finally:
        await conn.close()


@pytest.mark.parametrize("via", ["stimulus", "softkey"])
async def test_off_hook_by_stimulus_or_soft_key(lab: LabCallManager, via: str) -> None:
    sess = await _station(lab, ALICE, seed=3)
    try:
        call = sess.station.place_call("600", sess.now(), via=via)
        assert await sess.wait_state({"Connected"}) is not None
        assert call.states[:1] == ["OffHook"] and call.dialed_number == "600"
        assert await sess.hang_up()
    finally:
        await sess.close()


@pytest.mark.parametrize("policy, basic, other", [("chan-sccp", 0, 0x11), ("asterisk", 0, 0)])
async def test_cm_header_versions(policy: str, basic: int, other: int) -> None:
    """Reference §1.2: as [CS] the CM sends 0 in RegisterAck/KeepAliveAck/UnregisterAck and the
    negotiated version (17) in the rest; as [AST] it sends 0 always. The station decodes both."""
    cm = LabCallManager(LabConfig.demo(header_versions=policy))
    await cm.start()
    try:
        body = (await run_operation("linestate", req(cm, protocolVersion=17))).to_api()
        assert body["success"] is True, body["error"]
        got = [(m["summary"], int.from_bytes(bytes.fromhex(m["raw"])[4:8], "little"))
               for m in body["exchange"] if m["direction"] == "received"]
        names = [n for n, _ in got]
        assert {"RegisterAck", "CapabilitiesReq", "LineStat", "DefineTimeDate", "UnregisterAck"} <= set(names)
        for name, hv in got:
            assert hv == (basic if name in ("RegisterAck", "KeepAliveAck", "UnregisterAck") else other), name
        # the CM records what it sent with the same header versions
        cm_sent = [(m.summary, int.from_bytes(bytes.fromhex(m.raw)[4:8], "little"))
                   for s in cm.all_sessions for m in s.transport.messages if m.direction == "sent"]
        assert cm_sent == got
    finally:
        await cm.stop()


def test_lab_config_rejects_unknown_header_version_policy() -> None:
    with pytest.raises(ValueError, match="header_versions"):
        LabConfig.demo(header_versions="cisco")
