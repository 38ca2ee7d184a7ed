"""The SCCP ⇄ SIP bridge through the whole lab (skinnysip.lab.runner.Lab: registrar + proxy, SCCP
call manager, bridge): our SCCP station (line 2001) calls baresip registered as 1001, and
baresip calls the station, with audio both ways proven by tone frequency in baresip's recording
and ours (the station sends 440 Hz, baresip 660 Hz). Also: the station hears the SIP callee
ring (RingOut) before the answer, and the SIP side's busy reaches the station as Busy."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import Baresip, baresip
from test_lab_bridge import (
    ALICE,
    BARESIP_TONE,
    STATION_TONE,
    answered_by_station,
    baresip_hangs_up,
    share_of,
    station_heard,
    station_rx,
)
from test_lab_sip import DOMAIN, port, registered, settings

from peertools import TsharkCapture
from skinnysip.lab.runner import Lab
from skinnysip.lab.services import MOH_NOTES
from skinnysip.phone.api import CallState
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.rtp import g711
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.g711 import PT_PCMU

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        assert running.bridge is not None and running.callmanager is not None
        running.callmanager.config.dial_timeout = 1.0
        yield running


async def station_calls_1001(lab: Lab, alice: SCCPPhone, bob: Baresip) -> SCCPCall:
    """``alice`` calls baresip (1001, auto-answer) through the lab; connected for 2 s."""
    await registered(lab, "1001")
    call = await alice.call("1001#")
    assert await call.wait_connected(15), call.end_reason
    await bob.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(2)
    return call


def station(lab: Lab, tmp_path: Path, **kw: object) -> SCCPPhone:
    assert lab.callmanager is not None
    return SCCPPhone(SCCPAccount(host="127.0.0.1", port=lab.callmanager.port, device_name=ALICE,
                                 source=f"tone:{STATION_TONE}", record_dir=str(tmp_path / ALICE),
                                 **kw))  # type: ignore[arg-type]


async def test_station_calls_baresip_through_the_lab(lab: Lab, tmp_path: Path) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE,
                       answermode="manual") as bob, station(lab, tmp_path) as alice:
        await registered(lab, "1001")
        call = await alice.call("1001")  # no '#': the CM's dial timeout hands it to the bridge
        await bob.wait_event("CALL_INCOMING", timeout=15)
        for _ in range(50):  # the station hears the SIP phone ring
            if "RingOut" in call.protocol_states:
                break
            await asyncio.sleep(0.1)
        assert "RingOut" in call.protocol_states, call.protocol_states
        assert call.state is CallState.EARLY
        await bob.command("accept")
        assert await call.wait_connected(10), call.end_reason
        await asyncio.sleep(4)
        await call.hangup()
        await bob.wait_event("CALL_CLOSED")
        rx = station_rx(call, tmp_path)
        heard_by_bob = share_of(bob.recordings()["dec"], STATION_TONE)
    station_heard(rx, BARESIP_TONE)  # the last 3 s: after the answer
    assert heard_by_bob >= 0.9, "baresip did not hear the station"
    assert lab.bridge is not None
    [record] = lab.bridge.calls()
    summaries = [m["summary"] for m in record["messages"]]
    assert summaries[0] == f"INVITE sip:1001@{DOMAIN}" and "180 Ringing" in summaries
    assert any(s.startswith("BYE") for s in summaries)
    assert "407" not in " ".join(summaries)  # the proxy trusts the bridge


async def test_baresip_calls_station_through_the_lab(lab: Lab, tmp_path: Path) -> None:
    async with station(lab, tmp_path, auto_answer=1.0) as alice, \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE) as bob:
        await registered(lab, "1001")
        await bob.command("dial", f"sip:2001@{DOMAIN}")
        call = await answered_by_station(alice, bob)
        rx, heard_by_bob = await baresip_hangs_up(call, bob, tmp_path)
    assert call.remote == "1001"
    station_heard(rx, BARESIP_TONE)
    assert heard_by_bob >= 0.9, "baresip did not hear the station"


async def test_sip_busy_reaches_the_station(lab: Lab, tmp_path: Path) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE,
                       answermode="manual") as bob, station(lab, tmp_path) as alice:
        await registered(lab, "1001")
        call = await alice.call("1001#")
        await bob.wait_event("CALL_INCOMING", timeout=15)
        await bob.command("hangup")  # baresip refuses the ringing call
        assert await call.wait_ended(10)
        assert {"Busy", "Congestion"} & set(call.protocol_states), call.protocol_states
        unknown = await alice.call("1999#")  # nobody: the lab's 404 → InvalidNumber
        assert await unknown.wait_ended(10)
        assert "InvalidNumber" in unknown.protocol_states, unknown.protocol_states


async def test_station_holds_baresip_hears_music_then_resumes(lab: Lab, tmp_path: Path) -> None:
    """The station's Hold becomes a sendonly re-INVITE: the lab plays its music on hold to
    baresip; Resume re-INVITEs with the station's new RTP address and audio flows both ways
    again. A keypad digit during the call reaches baresip as SIP INFO. (baresip 1.0 stops its
    decode recording at a re-INVITE, so what reached baresip is judged from a capture: the RTP
    sent to baresip's port, decoded and listened to per SSRC.)"""
    cap = TsharkCapture("udp and not port 53")
    cap.start()
    try:
        async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE) as bob, \
                station(lab, tmp_path) as alice:
            call = await station_calls_1001(lab, alice, bob)
            await call.send_dtmf("5")
            dtmf = await bob.wait_event("CALL_DTMF_START", timeout=5)
            assert dtmf.get("param") == "5", dtmf
            await call.hold()
            await asyncio.sleep(5)
            assert lab.services is not None and len(lab.services.moh_keys) == 1
            await call.resume()
            await asyncio.sleep(4)
            assert lab.services.moh_keys == []
            await call.hangup()
            await bob.wait_event("CALL_CLOSED")
            rx = station_rx(call, tmp_path)  # the stream opened on Resume
    finally:
        cap.stop()
    station_heard(rx, BARESIP_TONE)  # the stream opened on Resume
    assert lab.bridge is not None
    [record] = lab.bridge.calls()
    answer = next(m["raw"] for m in record["messages"] if m["summary"].startswith("200") and "m=audio" in m["raw"])
    bob_rtp = int(answer.split("m=audio ", 1)[1].split()[0])
    cap.decode_as = [f"udp.port=={bob_rtp},rtp"]
    packets = cap.decode(f"rtp && udp.dstport == {bob_rtp}", ["udp.srcport", "rtp.ssrc", "rtp.p_type", "rtp.payload"])
    streams: dict[str, list[bytes]] = {}
    for p in packets:
        streams.setdefault(p["rtp.ssrc"][0], []).append(bytes.fromhex(p["rtp.payload"][0].replace(":", "")))
    heard = {ssrc: dominant_frequencies(g711.decode(PT_PCMU, b"".join(payloads))) for ssrc, payloads in streams.items()}
    station_streams = [f for f in heard.values() if np.mean(np.abs(f - STATION_TONE) < 25) >= 0.9]
    assert len(station_streams) == 2, {k: len(v) for k, v in heard.items()}  # before Hold, after Resume
    notes = sorted({hz for hz, _ in MOH_NOTES})
    music = [f for f in heard.values() if np.mean([min(abs(n - x) for n in notes) < 15 for x in f]) > 0.8]
    assert len(music) == 1 and len(music[0]) >= 4 * 50, {k: len(v) for k, v in heard.items()}  # the held time


async def test_station_reaches_the_lab_services_through_the_bridge(lab: Lab, tmp_path: Path) -> None:
    """With the CM's own echo/tone turned off (empty extensions), a station's 601 and 600 go
    through the bridge and the proxy to the lab's services: the 1004 Hz tone, then its own
    440 Hz back from the echo."""
    from skinnysip.lab.services import MILLIWATT_HZ

    assert lab.callmanager is not None
    lab.callmanager.config.echo_extension = lab.callmanager.config.tone_extension = ""
    async with station(lab, tmp_path) as alice:
        heard = {}
        for number in ("601", "600"):
            call = await alice.call(number + "#")
            assert await call.wait_connected(15), call.end_reason
            await asyncio.sleep(3)
            await call.hangup()
            heard[number] = station_rx(call, tmp_path)
    station_heard(heard["601"], MILLIWATT_HZ, last=2.0)
    station_heard(heard["600"], STATION_TONE, last=2.0)
    assert lab.services is not None
    assert [c["service"] for c in lab.services.calls()] == ["tone", "echo"]
    assert all(c["from"].startswith("sip:2001@") for c in lab.services.calls())


async def test_baresip_holds_the_station_which_hears_music(lab: Lab, tmp_path: Path) -> None:
    """baresip holds the bridged call (re-INVITE sendonly): the bridge answers recvonly with the
    station's address and stops the station's transmission; the lab's music on hold plays to
    the station, which hears the melody; resume brings baresip's tone back and the station
    sends again."""
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE) as bob, \
            station(lab, tmp_path) as alice:
        call = await station_calls_1001(lab, alice, bob)
        [stream] = call.streams.values()
        await bob.command("hold")
        await asyncio.sleep(1)
        sent = stream.packets_sent
        await asyncio.sleep(5)
        assert stream.packets_sent == sent, "the station kept sending while held"
        assert lab.services is not None and len(lab.services.moh_keys) == 1
        await bob.command("resume")
        await asyncio.sleep(4)
        assert stream.packets_sent > sent + 100, "the station did not send again after resume"
        assert lab.services.moh_keys == []
        await call.hangup()
        await bob.wait_event("CALL_CLOSED")
        rx = station_rx(call, tmp_path)
    with wave.open(str(rx)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    freqs = dominant_frequencies(samples)
    notes = sorted({hz for hz, _ in MOH_NOTES if abs(hz - BARESIP_TONE) > 20})
    held = freqs[-9 * 50:-4 * 50]  # the 5 s on hold, before resume's 4 s
    music = np.mean([min(abs(n - f) for n in notes) < 15 for f in held if f > 0] or [0.0])
    assert music > 0.6, music
    station_heard(rx, BARESIP_TONE, last=2.0)  # baresip again after resume
