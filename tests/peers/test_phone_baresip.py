"""The SIP softphone against real peers: Kamailio as registrar/PBX and baresip as the far-end
phone (tone source, recordings, ctrl_tcp events), all on 127.0.0.1.

Audio is proven by listening: in each recording the dominant frequency of ≥ 95 % of the 20 ms
frames is the other side's tone (we send 440 Hz, baresip 660 Hz)."""

from __future__ import annotations

import asyncio
import re
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import Baresip, baresip
from sip_peers import KamailioPeer, kamailio

from peertools import tone_share
from skinnysip.phone.api import (
    CallState,
    DTMFReceived,
    IncomingCall,
    MessageReceived,
    PhoneError,
    RegistrationState,
)
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

OUR_TONE, THEIR_TONE = 440.0, 660.0


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def _wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def share_of(path: Path, freq: float, skip: float = 0.3) -> float:
    """Fraction of 20 ms frames (after ``skip`` s of start-up) whose dominant frequency is
    within 25 Hz of ``freq`` (:func:`peertools.tone_share`: a few silent frames are forgiven,
    more count as misses)."""
    samples, rate = _wav(path)
    return tone_share(dominant_frequencies(samples[int(skip * rate):], rate), freq)


def account(pbx: KamailioPeer, user: str, transport: str = "udp", **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{pbx.realm}", password=pbx.users[user],
                      registrar=f"127.0.0.1:{pbx.port(transport)}", transport=transport,  # type: ignore[arg-type]
                      tls_verify=False, expires=60, source=f"tone:{OUR_TONE}", **kw)  # type: ignore[arg-type]


async def registered(pbx: KamailioPeer, user: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if pbx.contacts(user):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user} never registered")


@pytest.fixture
async def bob(pbx: KamailioPeer) -> AsyncIterator[Baresip]:
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                       contact=f"sip:alice@{pbx.realm}") as peer:
        await registered(pbx, "bob")
        yield peer


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_call_baresip_and_hear_each_other(pbx: KamailioPeer, bob: Baresip, transport: str,
                                                tmp_path: Path) -> None:
    async with SIPPhone(account(pbx, "alice", transport, record_dir=str(tmp_path))) as phone:
        assert phone.registration is RegistrationState.REGISTERED
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3)
        await call.hangup()
        assert call.state is CallState.TERMINATED
        await bob.wait_event("CALL_CLOSED")
        report = call.media_report()
    assert report is not None
    rx = Path(report["recordings"]["rx"])
    assert share_of(rx, THEIR_TONE) >= 0.95
    assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95
    samples, rate = _wav(rx)
    assert abs(len(samples) / rate - (call.ended - call.connected)) < 0.3  # type: ignore[operator]
    # the exchange of the call is on record: INVITE → 407 → INVITE → … 200 → ACK … BYE → 200
    summaries = [m.summary for m in call.exchange]
    assert summaries[0].startswith("INVITE") and "407 Proxy Authentication Required" in summaries
    assert any(s.startswith("ACK") for s in summaries) and any(s.startswith("BYE") for s in summaries)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_baresip_calls_us_and_we_auto_answer(pbx: KamailioPeer, bob: Baresip, tmp_path: Path,
                                                   transport: str) -> None:
    """baresip (UDP) calls us; Kamailio relays the INVITE over the flow we registered on."""
    async with SIPPhone(account(pbx, "alice", transport, auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        await registered(pbx, "alice")
        await bob.command("dial", f"sip:alice@{pbx.realm}")
        event = await phone.next_event(10)
        while event is not None and not isinstance(event, IncomingCall):
            event = await phone.next_event(10)
        assert isinstance(event, IncomingCall)
        call = event.call
        assert await call.wait_connected(10)
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3)
        await bob.command("hangup")
        assert await call.wait_ended(10)
        assert call.end_reason == "BYE received"
        report = call.media_report()
    assert report is not None
    assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
    assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95


async def test_dtmf_both_ways_and_messages(pbx: KamailioPeer, bob: Baresip) -> None:
    async with SIPPhone(account(pbx, "alice")) as phone:
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        await bob.wait_event("CALL_ESTABLISHED")
        await call.send_dtmf("159#", duration=0.12)
        await asyncio.sleep(0.5)
        # baresip reports each digit it received
        digits = [e.get("param") for e in bob.events if e.get("type") == "CALL_DTMF_START"]
        assert digits == ["1", "5", "9", "#"], bob.event_types()
        for key in "42*":
            await bob.command("sndcode", key)
            await asyncio.sleep(0.25)
        await bob.command("sndcode", "\n")  # key release ends the last event
        await asyncio.sleep(1.0)
        got = [e.digit for e in _drain(phone) if isinstance(e, DTMFReceived)]
        assert got == ["4", "2", "*"]
        await phone.message("bob", "hello from skinnysip")
        await bob.command("message", "hi alice")  # to baresip's current contact: alice
        await asyncio.sleep(1.0)
        assert any(isinstance(e, MessageReceived) and e.text == "hi alice" for e in _drain(phone))
        assert "hello from skinnysip" in bob.log.read_text(errors="replace")
        await call.hangup()


def _drain(phone: SIPPhone) -> list[object]:
    out = []
    while not phone._events.empty():
        out.append(phone._events.get_nowait())
    phone.drained = getattr(phone, "drained", []) + out  # type: ignore[attr-defined]
    return phone.drained  # type: ignore[attr-defined,no-any-return]


async def test_hold_and_resume_by_reinvite(pbx: KamailioPeer, bob: Baresip, tmp_path: Path) -> None:
    async with SIPPhone(account(pbx, "alice", record_dir=str(tmp_path))) as phone:
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        await asyncio.sleep(1)
        await call.hold()  # re-INVITE a=sendonly: baresip answers recvonly and stops sending
        assert call.local_hold and call.audio is not None and call.audio.direction == "sendonly"
        await asyncio.sleep(0.3)
        held = call.media.report()["received"]["packets"]  # type: ignore[union-attr]
        await asyncio.sleep(1)
        assert call.media.report()["received"]["packets"] - held <= 2  # type: ignore[union-attr]
        await call.resume()
        assert call.audio.direction == "sendrecv"
        await asyncio.sleep(1)
        assert call.media.report()["received"]["packets"] - held > 30  # type: ignore[union-attr]
        summaries = [m.summary for m in call.exchange if m.direction == "sent"]
        assert sum(s.startswith("INVITE") for s in summaries) >= 3  # INVITE(+auth) + hold + resume
        # the far end holds us: its re-INVITE says sendonly, we answer recvonly and flag it
        await bob.command("hold")
        for _ in range(50):
            if call.remote_hold:
                break
            await asyncio.sleep(0.1)
        assert call.remote_hold and call.audio.direction == "recvonly"
        # held, we may send no RTP (RFC 3264 §5.1): RFC 4733 digits are refused, the call stays
        with pytest.raises(PhoneError, match="holds the call"):
            await call.send_dtmf("1")
        assert call.state is CallState.CONFIRMED and call.remote_hold
        await bob.command("resume")
        for _ in range(50):
            if not call.remote_hold:
                break
            await asyncio.sleep(0.1)
        assert not call.remote_hold and call.audio.direction == "sendrecv"
        await call.send_dtmf("7", duration=0.12)
        await asyncio.sleep(0.5)
        digits = [e.get("param") for e in bob.events if e.get("type") == "CALL_DTMF_START"]
        assert digits == ["7"], bob.event_types()
        await call.hangup()


async def test_blind_transfer_to_baresip(pbx: KamailioPeer, bob: Baresip) -> None:
    """RFC 3515: alice calls carol (both our phones), then transfers carol to bob (baresip):
    carol gets REFER, answers 202, calls bob and reports the outcome by NOTIFY sipfrag; alice
    then hangs up. bob ends up in a call with carol."""
    async with SIPPhone(account(pbx, "alice")) as alice, \
            SIPPhone(account(pbx, "carol", auto_answer=0.1)) as carol:
        await registered(pbx, "carol")
        call = await alice.call("carol")
        assert await call.wait_connected(15), call.end_reason
        await asyncio.sleep(0.5)
        await call.transfer("bob")
        assert call.state is CallState.TERMINATED and call.end_reason == "transferred"
        established = await bob.wait_event("CALL_ESTABLISHED", 15)
        assert "carol" in str(established.get("peeruri"))
        original = next(c for c in carol.calls + [] if "alice" in c.remote) if any(
            "alice" in c.remote for c in carol.calls) else None
        if original is not None:
            assert await original.wait_ended(5)  # alice's BYE after the NOTIFY 200
        live = [c for c in carol.calls if c.state is CallState.CONFIRMED]
        assert len(live) == 1 and "bob" in live[0].remote
        sent = [m.summary for m in call.exchange if m.direction == "sent"]
        received = [m.summary for m in call.exchange if m.direction == "received"]
        assert any(s.startswith("REFER") for s in sent) and "202 Accepted" in received
        assert sum(s.startswith("NOTIFY") for s in received) >= 2  # 100 Trying, then 200 OK
        await live[0].hangup()


async def test_call_through_record_routing_proxy_acks_reach_the_callee(pbx: KamailioPeer, bob: Baresip, tmp_path: Path) -> None:
    """The pyVoIP failure mode as a regression test: behind a record-routing proxy the ACK and
    BYE must follow the route set to the remote target (RFC 3261 §12.2.1.1), or the callee
    never sees the ACK, retransmits its 2xx at 0.5, 1.5, 3.5 s… and drops the call after
    ~32 s (64·T1 without ACK, §13.3.1.4). So one 2xx and no retransmission in 6 s (through
    Kamailio, which relays them) shows the ACK reached baresip; the call stays up and media
    flows."""
    async with SIPPhone(account(pbx, "alice", record_dir=str(tmp_path))) as phone:
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        assert call.dialog is not None and call.dialog.route_set  # Kamailio record-routed
        ack = [m for m in call.exchange if m.direction == "sent" and m.summary.startswith("ACK")][-1]  # the 2xx's
        assert "Route: <sip:127.0.0.1:" in ack.raw and ack.summary == f"ACK {call.dialog.remote_target}"
        await asyncio.sleep(6)
        oks = [r for r in phone.endpoint.trace if r.direction == "received" and r.call_id == call.call_id
               and r.summary.startswith("200") and re.search(rb"(?im)^CSeq: *\d+ INVITE\r$", r.raw)]
        assert len(oks) == 1, f"baresip retransmitted its 2xx: {len(oks)} seen (our ACK did not reach it)"
        assert call.state is CallState.CONFIRMED
        assert "CALL_CLOSED" not in bob.event_types()
        received = call.media.report()["received"]["packets"]  # type: ignore[union-attr]
        assert received > 0.9 * 6 / 0.02
        await call.hangup()
        await bob.wait_event("CALL_CLOSED")
        bye = next(m for m in call.exchange if m.direction == "sent" and m.summary.startswith("BYE"))
        assert "Route: <sip:127.0.0.1:" in bye.raw


async def test_pcma_both_ways(pbx: KamailioPeer, tmp_path: Path) -> None:
    """baresip limited to PCMA: it answers our PCMU+PCMA offer with PCMA, and offers only PCMA
    when it calls us; the audio check holds on both calls."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                       extra_account="audio_codecs=PCMA") as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", auto_answer=0.1, record_dir=str(tmp_path))) as phone:
            out = await phone.call("bob")
            assert await out.wait_connected(15), out.end_reason
            assert out.audio is not None and out.audio.payload_type == 8
            await asyncio.sleep(2.5)
            await out.hangup()
            await bob.wait_event("CALL_CLOSED")
            assert share_of(Path(out.media_report()["recordings"]["rx"]), THEIR_TONE) >= 0.95  # type: ignore[index]
            assert share_of(bob.recordings()["dec"], OUR_TONE) >= 0.95
            await bob.command("dial", f"sip:alice@{pbx.realm}")
            incoming = None
            for _ in range(100):
                incoming = next((c for c in phone.calls if c.state is CallState.CONFIRMED), None)
                if incoming is not None:
                    break
                await asyncio.sleep(0.1)
            assert incoming is not None and incoming.audio is not None and incoming.audio.payload_type == 8  # type: ignore[attr-defined]
            await asyncio.sleep(2.5)
            await bob.command("hangup")
            assert await incoming.wait_ended(10)
            assert share_of(Path(incoming.media_report()["recordings"]["rx"]), THEIR_TONE) >= 0.95  # type: ignore[index]


async def test_hold_and_resume_seen_by_tshark(pbx: KamailioPeer, bob: Baresip) -> None:
    """The same hold/resume, judged by tshark: the re-INVITEs' SDP says sendonly then sendrecv,
    the answers recvonly then sendrecv, and baresip's RTP to us stops during the hold and
    starts again after it (RFC 3264 §8.4)."""
    from peertools import TsharkCapture

    async with SIPPhone(account(pbx, "alice")) as phone:
        cap = TsharkCapture(f"udp port {pbx.udp_port} or udp portrange 1024-65535").start()
        try:
            call = await phone.call("bob")
            assert await call.wait_connected(15), call.end_reason
            assert call.media is not None
            our_rtp = call.media.local_port
            await asyncio.sleep(1)
            await call.hold()
            await asyncio.sleep(1.5)
            await call.resume()
            await asyncio.sleep(1)
            await call.hangup()
        finally:
            cap.stop()
    ours = f"sip.Call-ID == \"{call.call_id}\""  # not another test's calls on lo
    sdp = cap.decode(f"sip.Method == \"INVITE\" && udp.srcport != {pbx.udp_port} && sdp && {ours}", ["sdp.media_attr"])
    directions = [next((a for a in p.get("sdp.media_attr", []) if a in ("sendonly", "sendrecv", "recvonly",
                                                                        "inactive")), None) for p in sdp]
    assert directions[-2:] == ["sendonly", "sendrecv"], directions
    answers = cap.decode(f"sip.Status-Code == 200 && sip.CSeq.method == \"INVITE\" && udp.dstport != {pbx.udp_port}"
                         f" && sdp && {ours}", ["sdp.media_attr"])
    answer_dirs = [next((a for a in p.get("sdp.media_attr", []) if a in ("sendonly", "sendrecv", "recvonly",
                                                                         "inactive")), "sendrecv") for p in answers]
    assert "recvonly" in answer_dirs, answer_dirs
    rtp = cap.decode(f"udp.dstport == {our_rtp}", ["frame.time_relative"])
    times = sorted(float(p["frame.time_relative"][0]) for p in rtp)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) > 1.0  # the hold: baresip stopped sending to us
    longest = gaps.index(max(gaps))
    assert len(times) - longest - 1 > 30  # and sent again after the resume
