"""The SCCP phone (phone/sccp_phone.py) against the lab call manager on 127.0.0.1.

Three phones register (SEP001122334455 line 2001, SEP00112233445A line 2002, SEP00112233445B
line 2003), each sending its own tone (440, 660, 880 Hz). Audio is proven by listening: in each
recording the dominant frequency of ≥ 95 % of the 20 ms frames is the other side's tone. Also:
keepalives over a registration (the phone's trace and tshark's SKINNY dissector), hold/resume,
blind transfer to the third phone, keypad DTMF, reject, busy/invalid numbers, re-registration
after the CM drops the connection, a refused device, and actions in the wrong state.
"""

from __future__ import annotations

import asyncio
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peertools import TsharkCapture, free_port
from peertools import tone_share as frame_share
from skinnysip.lab.callmanager import LabCallManager, LabConfig, LabDevice, LabLine
from skinnysip.phone.api import (
    CallState,
    CallStateChanged,
    IncomingCall,
    Phone,
    PhoneError,
    PhoneEvent,
    RegistrationChanged,
    RegistrationState,
)
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.sccp.station import Station, StationConfig, StationError

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

ALICE, BOB, CAROL = "SEP001122334455", "SEP00112233445A", "SEP00112233445B"
TONES = {ALICE: 440.0, BOB: 660.0, CAROL: 880.0}


def lab_config(**kw: Any) -> LabConfig:
    devices = [LabDevice(ALICE, [LabLine("2001", "Alice", "Alice Example")]),
               LabDevice(BOB, [LabLine("2002", "Bob", "Bob Example")]),
               LabDevice(CAROL, [LabLine("2003", "Carol", "Carol Example")])]
    return LabConfig(devices=devices, **kw)


@pytest.fixture
async def lab() -> AsyncIterator[LabCallManager]:
    cm = LabCallManager(lab_config(keep_alive_interval=2))
    await cm.start()
    try:
        yield cm
    finally:
        await cm.stop()


def account(cm: LabCallManager, device: str, tmp_path: Path | None = None, **kw: Any) -> SCCPAccount:
    kw.setdefault("source", f"tone:{TONES[device]}")
    return SCCPAccount(host="127.0.0.1", port=cm.port, device_name=device,
                       record_dir=str(tmp_path / device) if tmp_path else None, timeout=3.0, **kw)


async def event_of(phone: Phone, kind: type, timeout: float = 5.0, **match: Any) -> Any:
    """The next event of ``kind`` whose attributes equal ``match`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        ev = await phone.next_event(left)
        if isinstance(ev, kind) and all(getattr(ev, k) == v for k, v in match.items()):
            return ev
    raise AssertionError(f"no {kind.__name__} {match} within {timeout} s")


def drain(phone: Phone) -> list[PhoneEvent]:
    out = []
    while not phone._events.empty():
        out.append(phone._events.get_nowait())
    return out


def tone_shares(path: str, freq: float, skip: float = 0.3, tail: float = 0.2) -> tuple[float, float]:
    """Of the 20 ms frames (without ``skip`` s of start-up and ``tail`` s at the end): the share
    whose dominant frequency is within 25 Hz of ``freq``, over all frames and over the audible
    (non-silent) ones."""
    with wave.open(path) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    samples = samples[int(skip * rate): len(samples) - int(tail * rate)]
    freqs = dominant_frequencies(samples, rate)
    if not len(freqs):
        return 0.0, 0.0
    hits = np.abs(freqs - freq) < 25
    audible = freqs > 0
    return float(np.mean(hits)), float(np.sum(hits) / max(1, np.sum(audible)))


def assert_heard(path: str, freq: float, skip: float = 0.3) -> None:
    """The far end's tone was heard: ≥ 95 % of the audible frames are that tone (nothing else
    came through) and it fills ≥ 60 % of the call. Frames left silent are not wrong audio: on
    a loaded 2-core machine the one event loop running the phones and the CM stalls, a
    sender falls late and the receiver's jitter buffer plays silence (NOTES: linphone test)."""
    overall, audible = tone_shares(path, freq, skip=skip)
    assert audible >= 0.95 and overall >= 0.6, f"{freq} Hz in {overall:.0%} of all, {audible:.0%} of audible frames"


def names(call: SCCPCall) -> list[str]:
    return [m.summary for m in call.exchange]


async def connected_pair(alice: SCCPPhone, bob: SCCPPhone) -> tuple[SCCPCall, SCCPCall]:
    """Alice calls 2002, Bob answers when IncomingCall arrives; both connected."""
    out = await alice.call("2002")
    incoming = await event_of(bob, IncomingCall)
    inc: SCCPCall = incoming.call
    assert inc.remote == "2001" and inc.remote_name == "Alice Example" and inc.state is CallState.INCOMING
    await inc.answer()
    assert await out.wait_connected(5.0) and inc.state is CallState.CONFIRMED
    return out, inc


async def test_registration_keepalives_and_unregister() -> None:
    """A 2 s keepalive from RegisterAck: the phone sends KeepAlive on it and the CM acks; tshark's
    SKINNY dissector sees the same; close() unregisters (Unregister → UnregisterAck)."""
    port = free_port()
    cap = TsharkCapture(f"tcp port {port}", decode_as=[f"tcp.port=={port},skinny"])
    cap.start()
    try:
        async with LabCallManager(lab_config(port=port, keep_alive_interval=2)) as cm:
            phone = SCCPPhone(account(cm, ALICE))
            await phone.start()
            assert phone.registration is RegistrationState.REGISTERED and phone.keep_alive_interval == 2
            assert phone.station is not None and phone.station.lines[1].dir_number == "2001"
            await asyncio.sleep(5.5)
            await phone.close()
            events = drain(phone)
    finally:
        cap.stop()
    regs = [e for e in events if isinstance(e, RegistrationChanged)]
    assert [e.state for e in regs] == [RegistrationState.REGISTERING, RegistrationState.REGISTERED,
                                       RegistrationState.UNREGISTERED]
    assert "keepalive 2 s" in regs[1].reason and "UnregisterAck" in regs[2].reason
    sent = [m.summary for m in phone.wire if m.direction == "sent"]
    got = [m.summary for m in phone.wire if m.direction == "received"]
    assert sent.count("KeepAlive") >= 2 and got.count("KeepAliveAck") >= 2
    assert sent[0] == "Register" and sent[-1] == "Unregister" and got[-1] == "UnregisterAck"
    packets = cap.decode("skinny", ["skinny.messageId", "tcp.srcport"])
    ids = [(int(i, 0), int(p["tcp.srcport"][0])) for p in packets for i in p.get("skinny.messageId", [])]
    assert sum(1 for i, src in ids if i == 0x0000 and src != port) >= 2  # KeepAlive from the phone
    assert sum(1 for i, src in ids if i == 0x0100 and src == port) >= 2  # KeepAliveAck from the CM
    assert (0x0027, True) in {(i, src != port) for i, src in ids}  # Unregister from the phone


async def test_call_between_two_phones_audio_both_ways(lab: LabCallManager, tmp_path: Path) -> None:
    async with SCCPPhone(account(lab, ALICE, tmp_path)) as alice, \
            SCCPPhone(account(lab, BOB, tmp_path, answer_with="softkey")) as bob:
        drain(alice)
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(1.5)
        await out.hangup()
        assert out.state is CallState.TERMINATED and await inc.wait_ended(5.0)
        assert inc.end_reason == "OnHook"
        states = [(e.state, e.protocol_state) for e in drain(alice) if isinstance(e, CallStateChanged)]
        assert states[0] == (CallState.CALLING, "OffHook")
        assert (CallState.PROCEEDING, "Proceed") in states and (CallState.EARLY, "RingOut") in states
        assert (CallState.CONFIRMED, "Connected") in states and states[-1] == (CallState.TERMINATED, "OnHook")
        # the exchanges: Alice's off-hook and digits, Bob's ring and soft-key answer, media on both
        a, b = names(out), names(inc)
        assert a[0] == "OffHook" and a.count("KeypadButton") == 4 and "KeepAlive" not in a
        assert [m.decoded["fields"]["kpButton"] for m in out.exchange if m.summary == "KeypadButton"] == [2, 0, 0, 2]
        for name in ("CallState", "OpenReceiveChannel", "OpenReceiveChannelAck", "StartMediaTransmission",
                     "OnHook", "CloseReceiveChannel"):
            assert name in a, name
        assert b[0] == "CallState" and "SetRinger" in b and "SoftKeyEvent" in b and "OffHook" not in b
        assert out.call_reference and inc.call_reference and out.call_reference != inc.call_reference
        assert {m.decoded["fields"].get("callReference", 0) for m in out.exchange} <= {0, out.call_reference}
        # RTP flowed both ways, straight between the phones, and each heard the other's tone
        [ra], [rb] = out.media_reports(), inc.media_reports()
        assert ra["final"] and rb["final"] and ra["codec"] == "PCMU"
        assert tuple(ra["remote"]) == tuple(rb["local"]) and tuple(rb["remote"]) == tuple(ra["local"])
        assert ra["sent"]["packets"] >= 50 and ra["received"]["packets"] >= 50 and rb["received"]["packets"] >= 50
        assert_heard(ra["recordings"]["rx"], TONES[BOB])
        assert_heard(rb["recordings"]["rx"], TONES[ALICE])
        assert out.summary()["callReference"] == out.call_reference and out.summary()["media"]["streams"] == 1


async def test_media_ports_from_a_range(lab: LabCallManager, tmp_path: Path) -> None:
    """``rtp_ports`` on a station: the port its OpenReceiveChannelAck names (where the other
    phone sends) is inside the range, and each side still hears the other's tone."""
    from peertools import free_even_range

    first, last = free_even_range(10)
    async with SCCPPhone(account(lab, ALICE, tmp_path, rtp_ports=(first, last))) as alice, \
            SCCPPhone(account(lab, BOB, tmp_path)) as bob:
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(1.5)
        await out.hangup()
        await inc.wait_ended(5.0)
        [ra], [rb] = out.media_reports(), inc.media_reports()
        assert first <= ra["local"][1] < last and ra["local"][1] % 2 == 0
        assert tuple(rb["remote"]) == tuple(ra["local"])
        assert_heard(ra["recordings"]["rx"], TONES[BOB])
        assert_heard(rb["recordings"]["rx"], TONES[ALICE])


async def test_hold_and_resume(lab: LabCallManager, tmp_path: Path) -> None:
    async with SCCPPhone(account(lab, ALICE, tmp_path)) as alice, SCCPPhone(account(lab, BOB, tmp_path)) as bob:
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(0.8)
        drain(alice)
        await out.hold()
        assert out.local_hold and out.protocol_state == "Hold" and out.state is CallState.CONFIRMED
        ev = await event_of(alice, CallStateChanged, protocol_state="Hold")
        assert ev.state is CallState.CONFIRMED
        await asyncio.sleep(0.3)
        assert not out.streams and not inc.streams  # media closed on both ends
        with pytest.raises(PhoneError, match="already on hold"):
            await out.hold()
        await out.resume()
        assert not out.local_hold and out.protocol_state == "Connected"
        await asyncio.sleep(1.5)
        assert len(out.streams) == 1 and len(inc.streams) == 1
        await inc.hangup()  # the far end hangs up this time
        assert await out.wait_ended(5.0)
        ra, rb = out.media_reports(), inc.media_reports()
        assert len(ra) == 2 and len(rb) == 2  # one stream before hold, one after
        soft = [m.decoded["fields"]["softKeyEvent"] for m in out.exchange if m.summary == "SoftKeyEvent"]
        assert soft == [3, 10]  # Hold, Resume (the lab template's numbers, §4.7)
        assert_heard(ra[1]["recordings"]["rx"], TONES[BOB])
        assert_heard(rb[1]["recordings"]["rx"], TONES[ALICE])


async def test_mute_lasts_through_a_hold_and_its_new_stream(lab: LabCallManager, tmp_path: Path) -> None:
    """``mute`` sends silence; SCCP closes the media on hold and opens new streams on resume,
    and the new one starts muted too: bob hears nothing from alice's new stream until she
    unmutes, then her tone."""
    async with SCCPPhone(account(lab, ALICE, tmp_path)) as alice, SCCPPhone(account(lab, BOB, tmp_path)) as bob:
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(0.5)
        drain(alice)
        await out.mute()
        assert out.muted and (await event_of(alice, CallStateChanged, reason="muted")).call is out
        await out.hold()
        await out.resume()
        await asyncio.sleep(1.5)
        assert len(out.streams) == 1 and all(stream.muted for stream in out.streams.values())
        await out.unmute()
        assert not any(stream.muted for stream in out.streams.values())
        await asyncio.sleep(1.5)
        await out.hangup()
        assert await inc.wait_ended(5.0)
        rb = inc.media_reports()
    assert len(rb) == 2, rb
    with wave.open(rb[1]["recordings"]["rx"]) as w:
        freqs = dominant_frequencies(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate())
    sounding = np.nonzero(freqs)[0]
    assert len(sounding) and sounding[0] * 0.02 >= 1.2, sounding[:5]  # silent while muted
    assert frame_share(freqs[sounding[0]:], TONES[ALICE]) >= 0.9  # her tone once unmuted


async def test_blind_transfer_to_a_third_phone(lab: LabCallManager, tmp_path: Path) -> None:
    """Bob transfers Alice to 2003 (Transfer, digits, Transfer); Carol rings, answers, and Alice
    and Carol hear each other."""
    async with SCCPPhone(account(lab, ALICE, tmp_path)) as alice, SCCPPhone(account(lab, BOB, tmp_path)) as bob, \
            SCCPPhone(account(lab, CAROL, tmp_path)) as carol:
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(0.3)
        await inc.transfer("2003")
        assert inc.state is CallState.TERMINATED and inc.end_reason == "transferred to 2003"
        b = [(m.summary, m.decoded["fields"].get("softKeyEvent")) for m in inc.exchange if m.direction == "sent"]
        assert [x for x in b if x[0] in ("SoftKeyEvent", "KeypadButton")][-6:] == [
            ("SoftKeyEvent", 4), ("KeypadButton", None), ("KeypadButton", None), ("KeypadButton", None),
            ("KeypadButton", None), ("SoftKeyEvent", 4)]
        assert not bob.calls
        ringing = await event_of(carol, IncomingCall)
        assert ringing.call.remote == "2001"  # the transferee calls now
        await ringing.call.answer()
        await asyncio.sleep(1.5)
        assert out.state is CallState.CONFIRMED
        await out.hangup()
        assert await ringing.call.wait_ended(5.0)
        ra, rc = out.media_reports(), ringing.call.media_reports()
        assert len(ra) == 2 and len(rc) == 1
        # Alice's second stream opened while Carol still rang (silence, longer on a loaded
        # machine): judge the frames from Carol's answer on
        ringing_time = max(0.0, ra[1]["duration"] - rc[0]["duration"])
        assert_heard(ra[1]["recordings"]["rx"], TONES[CAROL], skip=0.3 + ringing_time)
        assert_heard(rc[0]["recordings"]["rx"], TONES[ALICE])


async def test_transfer_to_an_unknown_number_fails_and_keeps_the_call_held(lab: LabCallManager) -> None:
    async with SCCPPhone(account(lab, ALICE)) as alice, SCCPPhone(account(lab, BOB)) as bob:
        out, inc = await connected_pair(alice, bob)
        with pytest.raises(PhoneError, match="transfer to 999 failed: Congestion"):
            await inc.transfer("999")
        assert inc.state is CallState.CONFIRMED and inc.local_hold and inc.end_reason is None
        await inc.resume()
        assert not inc.local_hold and out.state is CallState.CONFIRMED
        await out.hangup()
        assert await inc.wait_ended(5.0)


async def test_keypad_dtmf_during_a_call(lab: LabCallManager) -> None:
    async with SCCPPhone(account(lab, ALICE)) as alice, SCCPPhone(account(lab, BOB)) as bob:
        out, _ = await connected_pair(alice, bob)
        await out.send_dtmf("12#*", duration=0.05)
        await asyncio.sleep(0.2)
        legs = [leg for s in lab.all_sessions if s.name == ALICE for leg in s.legs.values()]
        assert [leg.dtmf for leg in legs] == ["12#*"]
        keys = [m.decoded["fields"]["kpButton"] for m in out.exchange if m.summary == "KeypadButton"]
        assert keys[-4:] == [1, 2, 15, 14]
        with pytest.raises(PhoneError, match="DTMF digits"):
            await out.send_dtmf("x")


async def test_reject_busy_and_invalid_number(lab: LabCallManager) -> None:
    async with SCCPPhone(account(lab, ALICE)) as alice, SCCPPhone(account(lab, BOB)) as bob:
        out = await alice.call("2002")
        inc = (await event_of(bob, IncomingCall)).call
        await inc.reject(486)
        assert inc.state is CallState.TERMINATED and inc.end_reason == "rejected (486)"
        assert await out.wait_ended(5.0)
        assert [m.decoded["fields"]["softKeyEvent"] for m in inc.exchange if m.summary == "SoftKeyEvent"] == [9]
        busy = await alice.call("2003")  # Carol is not registered: Busy, and the phone hangs up
        assert await busy.wait_ended(5.0) and busy.end_reason == "Busy"
        assert "LineBusyTone" in (busy.station_call.tones if busy.station_call else [])
        invalid = await alice.call("999")
        assert await invalid.wait_ended(5.0) and invalid.end_reason == "Congestion"
        assert names(invalid)[-1] != "OffHook" and "OnHook" in names(invalid)
        with pytest.raises(PhoneError, match=re.escape("cannot dial '12x': 'x' is not a key")):
            await alice.call("12x")


async def test_wrong_state_actions_raise(lab: LabCallManager) -> None:
    async with SCCPPhone(account(lab, ALICE)) as alice, SCCPPhone(account(lab, BOB)) as bob:
        out = await alice.call("2002")
        with pytest.raises(PhoneError, match="cannot answer"):
            await out.answer()
        with pytest.raises(PhoneError, match="another call is being placed|cannot"):
            await alice.call("2003")
        inc = (await event_of(bob, IncomingCall)).call
        with pytest.raises(PhoneError, match="cannot hold"):
            await inc.hold()
        with pytest.raises(PhoneError, match="cannot transfer"):
            await out.transfer("2003")
        await out.hangup()  # while it rings out
        assert await inc.wait_ended(5.0) and out.state is CallState.TERMINATED


async def test_reregisters_after_the_connection_is_lost(lab: LabCallManager) -> None:
    async with SCCPPhone(account(lab, ALICE, reconnect_min=0.2, reconnect_max=1.0)) as alice, \
            SCCPPhone(account(lab, BOB)) as bob:
        out, inc = await connected_pair(alice, bob)
        await asyncio.sleep(0.3)
        drain(alice)
        await lab.sessions[ALICE].transport.close()  # the CM drops Alice
        lost = await event_of(alice, RegistrationChanged, state=RegistrationState.FAILED)
        assert "closed" in lost.reason
        assert out.state is CallState.TERMINATED and out.end_reason.startswith("connection lost")
        await event_of(alice, RegistrationChanged, state=RegistrationState.REGISTERED, timeout=5.0)
        assert alice.connections == 2 and alice.registration is RegistrationState.REGISTERED
        assert await inc.wait_ended(5.0)  # the CM tore Bob's side down
        again = await alice.call("2002")  # and the new registration places calls
        ring = (await event_of(bob, IncomingCall)).call
        await ring.answer()
        assert await again.wait_connected(5.0)


async def test_auto_answer_and_echo(lab: LabCallManager, tmp_path: Path) -> None:
    async with SCCPPhone(account(lab, ALICE, tmp_path)) as alice, \
            SCCPPhone(account(lab, BOB, tmp_path, auto_answer=0.1, source="echo")) as bob:
        out = await alice.call("2002")
        inc = (await event_of(bob, IncomingCall)).call
        assert await out.wait_connected(5.0) and await inc.wait_connected(1.0)
        await asyncio.sleep(1.5)
        await out.hangup()
        [report] = out.media_reports()
        assert await inc.wait_ended(5.0) and bob.history[-1]["direction"] == "incoming"
        assert_heard(report["recordings"]["rx"], TONES[ALICE], skip=0.5)  # our tone, echoed


async def test_unknown_device_is_refused() -> None:
    async with LabCallManager(lab_config()) as cm:
        phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=cm.port, device_name="SEP0000000000AA", timeout=3.0,
                                      reconnect_min=5.0))
        await phone.start()
        ev = await event_of(phone, RegistrationChanged, state=RegistrationState.FAILED)
        assert "No Authority: SEP0000000000AA" in ev.reason
        with pytest.raises(PhoneError, match="not registered"):
            await phone.call("2002")
        await phone.close()


async def test_unreachable_call_manager_raises() -> None:
    phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=free_port(), timeout=2.0))
    with pytest.raises(PhoneError, match="refused"):
        await phone.start()
    await phone.close()
    with pytest.raises(ValueError, match="invalid device name"):
        SCCPPhone(SCCPAccount(host="127.0.0.1", device_name="PHONE1"))


def test_station_soft_key_numbers_come_from_the_template() -> None:
    st = Station(StationConfig())
    st.state = "registered"
    call = st.place_call("1", 0.0)
    call.call_reference = 7
    st.take_outgoing()
    assert st.press_soft_key("Hold", call) == 3  # §4.7 default without a template
    from skinnysip.sccp.station import SoftKeyInfo

    st.soft_keys = [SoftKeyInfo("Hold", 42)]
    assert st.press_soft_key("Hold", call) == 42
    with pytest.raises(StationError, match="no soft key"):
        st.press_soft_key("Frobnicate", call)
    assert len(st.take_outgoing()) == 2
