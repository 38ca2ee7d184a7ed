"""The SCCP ⇄ SIP bridge (skinnysip.lab.bridge) between our SCCP station (SCCPPhone on the lab
call manager) and baresip, a real SIP phone, with the media flowing station ⇄ baresip directly.

Here the bridge's "proxy" is baresip itself (its INVITEs go straight to baresip, and baresip
dials the bridge's address), so the bridge is proven on its own; the same calls through the
whole lab (registrar + proxy) are in test_lab_bridge_lab.py. Audio both ways is proven by tone
frequency: the station sends 440 Hz, baresip 660 Hz; each recording has the other's tone."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import Baresip, baresip
from sip_peers import sipp_uac
from sippy_peer import sippy_b2bua
from test_lab_services import assert_heard
from test_phone_sipp import HEAD, REFUSED_415, TAIL, uac_ack, uac_invite
from test_phone_sippy_b2bua import account as sip_account

from peertools import tone_share
from skinnysip.lab.bridge import SCCPBridge
from skinnysip.lab.callmanager import LabCallManager, LabConfig, LabDevice, LabLine
from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

STATION_TONE, BARESIP_TONE = 440.0, 660.0
DOMAIN = "skinnysip.test"  # baresip_peer's AOR domain
ALICE, BOB = "SEP001122334455", "SEP00112233445A"


def share_of(path: Path, freq: float, skip: float = 0.5, last: float | None = None) -> float:
    """Share of 20 ms frames (after ``skip`` s, or of the ``last`` seconds only: a station's
    receive channel opens before the far end answers) whose dominant frequency is within 25 Hz
    of ``freq`` (:func:`peertools.tone_share`: a few silent frames are forgiven)."""
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    samples = samples[-int(last * rate):] if last is not None else samples[int(skip * rate):]
    return tone_share(dominant_frequencies(samples, rate), freq)


def station_heard(path: Path, freq: float, last: float = 3.0) -> None:
    """Our station heard ``freq`` in the ``last`` seconds of its recording (its receive channel
    opens before the far end answers), judged as :func:`test_lab_services.assert_heard` does."""
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert_heard(samples[-int(last * 8000):], freq)


def lab_config(**kw: object) -> LabConfig:
    devices = [LabDevice(ALICE, [LabLine("2001", "Alice", "Alice SCCP")]),
               LabDevice(BOB, [LabLine("2002", "Bob", "Bob SCCP")])]
    return LabConfig(devices=devices, echo_extension="", tone_extension="", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def cm() -> AsyncIterator[LabCallManager]:
    async with LabCallManager(lab_config(dial_timeout=1.0)) as manager:
        yield manager


def station(cm: LabCallManager, tmp_path: Path, device: str = ALICE, **kw: object) -> SCCPPhone:
    return SCCPPhone(SCCPAccount(host="127.0.0.1", port=cm.port, device_name=device,
                                 source=f"tone:{STATION_TONE}", record_dir=str(tmp_path / device),
                                 **kw))  # type: ignore[arg-type]


def station_rx(call: SCCPCall, tmp_path: Path, device: str = ALICE) -> Path:
    files = sorted((tmp_path / device).glob(f"{device}-call{call.id}-*-rx.wav"))
    assert files, f"no recording of call {call.id}"
    return files[-1]


async def ringing_station(alice: SCCPPhone) -> SCCPCall:
    """The next call ringing on ``alice`` (within 10 s)."""
    event = await alice.next_event(10)
    while event is not None and not isinstance(event, IncomingCall):
        event = await alice.next_event(10)
    assert isinstance(event, IncomingCall), "the station never rang"
    assert isinstance(event.call, SCCPCall)
    return event.call


async def answered_by_station(alice: SCCPPhone, bob: Baresip, talk: float = 4.0) -> SCCPCall:
    """The call baresip placed rings on ``alice``, which answers (auto-answer); both talk for
    ``talk`` seconds."""
    call = await ringing_station(alice)
    assert await call.wait_connected(15)
    await bob.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(talk)
    return call


async def baresip_hangs_up(call: SCCPCall, bob: Baresip, tmp_path: Path) -> tuple[Path, float]:
    """baresip's BYE puts the station on-hook; returns the station's recording and the share
    of baresip's received frames that are the station's tone."""
    await bob.command("hangup")
    assert await call.wait_ended(10), "the station did not go on-hook after baresip's BYE"
    return station_rx(call, tmp_path), share_of(bob.recordings()["dec"], STATION_TONE)


async def test_station_calls_baresip(cm: LabCallManager, tmp_path: Path) -> None:
    async with baresip("1001", "x", "127.0.0.1:9", tone_hz=BARESIP_TONE, register=False) as bob:
        async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", bob.sip_port), domain=DOMAIN) as bridge:
            async with station(cm, tmp_path) as alice:
                call = await alice.call("1001#")
                assert await call.wait_connected(15), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED")
                await asyncio.sleep(4)
                assert "RingOut" in call.protocol_states or "Proceed" in call.protocol_states
                await call.hangup()
                await bob.wait_event("CALL_CLOSED")
                rx = station_rx(call, tmp_path)
            records = bridge.calls()
        heard_by_bob = share_of(bob.recordings()["dec"], STATION_TONE)
    station_heard(rx, BARESIP_TONE)
    assert heard_by_bob >= 0.9, "baresip did not hear the station"
    [record] = records
    assert record["direction"] == "sccp-to-sip" and record["from"] == f"sip:2001@{DOMAIN}"
    summaries = [m["summary"] for m in record["messages"]]
    assert summaries[0] == f"INVITE sip:1001@{DOMAIN}" and any(s.startswith("200 ") for s in summaries)
    assert any(s.startswith("ACK") for s in summaries) and any(s.startswith("BYE") for s in summaries)
    invite = record["messages"][0]["raw"]
    assert "From: <sip:2001@" in invite and "m=audio" in invite


async def test_baresip_calls_station_and_hangs_up(cm: LabCallManager, tmp_path: Path) -> None:
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge:
        assert bridge.address is not None
        host, port = bridge.address
        async with station(cm, tmp_path, auto_answer=0.5) as alice:
            async with baresip("1001", "x", f"{host}:{port}", tone_hz=BARESIP_TONE, register=False) as bob:
                await bob.command("dial", f"sip:2001@{host}:{port}")
                call = await answered_by_station(alice, bob)
                rx, heard_by_bob = await baresip_hangs_up(call, bob, tmp_path)
            records = bridge.calls()
    assert call.remote == "1001"
    station_heard(rx, BARESIP_TONE)
    assert heard_by_bob >= 0.9, "baresip did not hear the station"
    [record] = records
    assert record["direction"] == "sip-to-sccp" and record["reason"] == "BYE received"
    summaries = [m["summary"] for m in record["messages"]]
    assert summaries[0].startswith(f"INVITE sip:2001@{host}:{port}") and "180 Ringing" in summaries and "200 OK" in summaries


async def test_unregistered_and_busy_lines(cm: LabCallManager, tmp_path: Path) -> None:
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge:
        assert bridge.address is not None
        host, port = bridge.address
        async with baresip("1001", "x", f"{host}:{port}", tone_hz=BARESIP_TONE, register=False) as bob:
            await bob.command("dial", f"sip:2002@{host}:{port}")  # BOB's device is not registered
            closed = await bob.wait_event("CALL_CLOSED")
            assert "480" in str(closed.get("param")), closed
            await bob.command("dial", f"sip:2999@{host}:{port}")  # no such line
            after = len(bob.events)
            closed = await bob.wait_event("CALL_CLOSED", after=after - 1)
        async with station(cm, tmp_path) as alice, station(cm, tmp_path, BOB) as bob_station:
            busy = await alice.call("2002")  # bob's station rings, unanswered: alice's line is busy
            assert await busy.wait_connected(1) is False and busy.state is CallState.EARLY
            async with baresip("1001", "x", f"{host}:{port}", tone_hz=BARESIP_TONE, register=False) as bob:
                await bob.command("dial", f"sip:2001@{host}:{port}")
                closed = await bob.wait_event("CALL_CLOSED")
                assert "486" in str(closed.get("param")), closed
            await busy.hangup()
            assert bob_station.registration.value == "registered"
    statuses = [r["reason"] for r in bridge.calls()]
    assert statuses == ["refused 480", "refused 404", "refused 486"], statuses


async def test_station_cancels_while_sip_rings(cm: LabCallManager, tmp_path: Path) -> None:
    """The station hangs up while the SIP phone rings: CANCEL (after the 180, RFC 3261 §9.1),
    200 and 487, and the SIP phone stops ringing."""
    async with baresip("1001", "x", "127.0.0.1:9", tone_hz=BARESIP_TONE, register=False, answermode="manual") as bob:
        async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", bob.sip_port), domain=DOMAIN) as bridge:
            async with station(cm, tmp_path) as alice:
                call = await alice.call("1001#")
                await bob.wait_event("CALL_INCOMING", timeout=15)
                for _ in range(50):
                    if "RingOut" in call.protocol_states:
                        break
                    await asyncio.sleep(0.1)
                assert "RingOut" in call.protocol_states
                await call.hangup()
                await bob.wait_event("CALL_CLOSED")
                await asyncio.sleep(0.5)
            [record] = bridge.calls()
    summaries = [m["summary"] for m in record["messages"]]
    assert "180 Ringing" in summaries and any(s.startswith("CANCEL") for s in summaries), summaries
    assert any(s.startswith("487") for s in summaries), summaries


async def test_sip_cancel_stops_the_station_ringing(cm: LabCallManager, tmp_path: Path) -> None:
    """The SIP phone hangs up while the station rings: CANCEL, 200, 487, and the station's
    call ends."""
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge:
        assert bridge.address is not None
        host, port = bridge.address
        async with station(cm, tmp_path) as alice, \
                baresip("1001", "x", f"{host}:{port}", tone_hz=BARESIP_TONE, register=False) as bob:
            await bob.command("dial", f"sip:2001@{host}:{port}")
            ringing = await ringing_station(alice)
            await asyncio.sleep(0.5)
            await bob.command("hangup")
            assert await ringing.wait_ended(10), "the station kept ringing after the CANCEL"
            await bob.wait_event("CALL_CLOSED")
        [record] = bridge.calls()
    assert record["reason"] == "cancelled by the caller"
    summaries = [m["summary"] for m in record["messages"]]
    assert any(s.startswith("CANCEL") for s in summaries) and any(s.startswith("487") for s in summaries), summaries


async def test_pcma_only_offer_is_bridged_as_alaw(cm: LabCallManager, tmp_path: Path) -> None:
    """baresip offers PCMA only: the station's receive channel and transmission use G.711
    A-law (SCCP compression type 2) and audio flows both ways."""
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge:
        assert bridge.address is not None
        host, port = bridge.address
        async with station(cm, tmp_path, auto_answer=0.5) as alice:
            async with baresip("1001", "x", f"{host}:{port}", tone_hz=BARESIP_TONE, register=False,
                               extra_account="audio_codecs=PCMA/8000/1") as bob:
                await bob.command("dial", f"sip:2001@{host}:{port}")
                call = await answered_by_station(alice, bob)
                assert call.compression_type == 2  # G711Alaw64k (reference §4.5)
                report = call.media_report()
                rx, heard_by_bob = await baresip_hangs_up(call, bob, tmp_path)
    station_heard(rx, BARESIP_TONE)
    assert heard_by_bob >= 0.9, "baresip did not hear the station"
    assert report is not None and report["payload_type"] == 8, report
    [record] = bridge.calls()
    answer = next(m["raw"] for m in record["messages"] if m["summary"].startswith("200") and "m=audio" in m["raw"])
    assert "m=audio" in answer and "RTP/AVP 8" in answer and "PCMA/8000" in answer


async def test_a_b2buas_keepalive_reinvites_get_the_same_answer_and_version(cm: LabCallManager,
                                                                            tmp_path: Path) -> None:
    """Our SIP phone calls the station through the Sippy B2BUA, which re-INVITEs the bridge
    every second with the same SDP (a keep-alive): each 200 carries the bridge's answer with the
    o= version it had (nothing changed, RFC 3264 §8) and the call goes on."""
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge:
        assert bridge.address is not None
        host, port = bridge.address
        async with station(cm, tmp_path, auto_answer=0.3), \
                SIPPhone(sip_account("1001", BARESIP_TONE, tmp_path)) as caller:
            with sippy_b2bua(f"{host}:{port}", options=("--keepalive_orig=1",)) as b2bua:
                call = await caller.call(b2bua.uri("2001"))
                assert await call.wait_connected(10), call.end_reason
                await asyncio.sleep(3.5)
                assert call.state is CallState.CONFIRMED
                await call.hangup()
            [record] = bridge.calls()
    answers = [m["raw"] for m in record["messages"] if m["direction"] == "sent" and m["summary"] == "200 OK"
               and "m=audio" in m["raw"]]
    assert len(answers) >= 3, [m["summary"] for m in record["messages"]]  # the first answer and two keep-alives
    origins = {next(line for line in raw.splitlines() if line.startswith("o=")) for raw in answers}
    assert len(origins) == 1, origins


async def test_an_invite_whose_body_is_not_sdp_is_refused_415(cm: LabCallManager, tmp_path: Path) -> None:
    """RFC 3261 §8.2.3: an INVITE to a station's line whose body is ``text/plain`` gets 415 +
    ``Accept: application/sdp`` from the bridge (it was a 400) and rings no station."""
    plain = "Content-Type: text/plain\nContent-Length: [len]\n\nnot a session description\n"
    async with SCCPBridge(callmanager=cm, proxy=("127.0.0.1", 9), domain=DOMAIN) as bridge, \
            station(cm, tmp_path) as alice:
        assert bridge.address is not None
        host, port = bridge.address
        xml = (HEAD.format(name="415") + uac_invite(port, body=plain).replace("sip:alice@", "sip:2001@")
               + REFUSED_415 + uac_ack(port, for_2xx=False).replace("sip:alice@", "sip:2001@") + TAIL)
        result = await sipp_uac(host, port, xml=xml, timeout=15)
        await asyncio.sleep(0.3)
        assert not alice.calls
    assert result.returncode == 0, result.errors or result.screen
    assert bridge.calls() == [], bridge.calls()
