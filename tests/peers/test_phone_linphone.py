"""The SIP softphone against linphonec (liblinphone 5.1) on a Kamailio that challenges with
SHA-256 digest (RFC 7616) only: both register, then calls both ways with audio, all on
127.0.0.1.

baresip 1.0 and SIPp 3.6 speak MD5 digest only; linphonec is the real client here that
answers a SHA-256 challenge, so these tests show our phone and another implementation
working through the same SHA-256 PBX. linphonec is limited to PCMU/PCMA here.

Audio is proven by listening, as with baresip: we send 440 Hz, linphonec plays a 660 Hz WAV
and records what it receives to a WAV; the dominant frequency of ≥ 95 % of the 20 ms frames
of linphonec's recording is our tone, and of ours linphonec's tone (frames our jitter buffer
concealed counted, see :func:`assert_heard`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from linphone_peer import Linphone, linphonec
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import _wav, registered, share_of
from test_phone_srtp import incoming

from peertools import tone_share
from skinnysip.phone.api import CallState, RegistrationState
from skinnysip.phone.sip_phone import SIPAccount, SIPCall, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

OUR_TONE, THEIR_TONE = 440.0, 660.0
SHA256_CREDENTIALS = re.compile(r"^(Proxy-)?Authorization:\s*Digest [^\r\n]*algorithm=SHA-256", re.M | re.I)


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio("SHA-256", pbx=True) as peer:
        yield peer


@pytest.fixture
async def bob(pbx: KamailioPeer) -> AsyncIterator[Linphone]:
    async with linphonec("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", realm=pbx.realm,
                         algorithm="SHA-256", tone_hz=THEIR_TONE) as peer:
        await peer.wait_registered(15)
        await registered(pbx, "bob")
        yield peer


def account(pbx: KamailioPeer, user: str, **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{pbx.realm}", password=pbx.users[user],
                      registrar=f"127.0.0.1:{pbx.udp_port}", expires=60, source=f"tone:{OUR_TONE}",
                      **kw)  # type: ignore[arg-type]


def heard_once_keyed(path: Path, freq: float, keying: float = 2.5) -> float:
    """The share of ``path``'s 20 ms frames at ``freq`` (:func:`peertools.tone_share`) from its
    first sounding frame — the moment DTLS-SRTP had keyed both sides — to its last; that moment
    must come within ``keying`` s of the recording's start."""
    samples, rate = _wav(path)
    freqs = dominant_frequencies(samples, rate)
    sounding = np.flatnonzero(freqs > 0)
    assert len(sounding), f"{path.name}: nothing heard"
    assert sounding[0] * 0.02 <= keying, f"{path.name}: the first sound after {sounding[0] * 0.02:.2f} s"
    return tone_share(freqs[sounding[0]:sounding[-1] + 1], freq)


def assert_heard(report: dict[str, Any], freq: float) -> None:
    """Our received recording is the far end's ``freq`` tone in ≥ 95 % of its 20 ms frames
    after start-up, counting as heard the frames our jitter buffer concealed (packets that came
    after their playout time: seen on a loaded machine, where our event loop — not linphonec,
    whose RTP stays on its 20 ms clock — is late), and the tone itself in ≥ 85 %."""
    rx = Path(report["recordings"]["rx"])
    share = share_of(rx, freq)
    samples, rate = _wav(rx)
    frames = max(1, (len(samples) - int(0.3 * rate)) // int(0.02 * rate))
    concealed = report["jitter_buffer"]["concealed"]
    assert share >= 0.85 and share + concealed / frames >= 0.95, (share, frames, report["received"],
                                                                    report["jitter_buffer"])


def _sip_messages(log: str, start: str) -> list[str]:
    """The SIP messages in liblinphone's log whose first line starts with ``start`` (each up
    to the next blank line)."""
    return re.findall(rf"^{re.escape(start)}.*?(?:\n\n|\Z)", log, re.M | re.S)


async def test_both_register_with_sha256_digest(pbx: KamailioPeer, bob: Linphone) -> None:
    """Kamailio challenges with algorithm=SHA-256 only; linphonec and our phone both answer
    with SHA-256 credentials and both end up in Kamailio's location table."""
    assert pbx.algorithm == "SHA-256"
    async with SIPPhone(account(pbx, "alice")) as phone:
        assert phone.registration is RegistrationState.REGISTERED
        await registered(pbx, "alice")
        assert any(f"127.0.0.1:{bob.sip_port}" in c for c in pbx.contacts("bob")), pbx.contacts("bob")
        ours = [r.raw.decode(errors="replace") for r in phone.endpoint.trace if r.direction == "sent"
                and r.summary.startswith("REGISTER")]
        challenges = [r.raw.decode(errors="replace") for r in phone.endpoint.trace if r.direction == "received"
                      and r.summary.startswith("401")]
        assert challenges and all("algorithm=SHA-256" in c for c in challenges)
        authorised = [m for m in ours if SHA256_CREDENTIALS.search(m)]
        assert authorised, ours
        assert "algorithm=MD5" not in "".join(ours)
    # linphonec's own REGISTER carried SHA-256 credentials too (its log holds the messages)
    registers = _sip_messages(bob.sip_log(), "REGISTER sip:")
    assert any(SHA256_CREDENTIALS.search(m) for m in registers), registers[-2:]


async def test_we_call_linphonec_and_hang_up(pbx: KamailioPeer, bob: Linphone, tmp_path: Path) -> None:
    """alice (us) → bob (linphonec, auto-answer): both sides report the call connected, each
    hears the other's tone, our BYE ends it on linphonec too."""
    async with SIPPhone(account(pbx, "alice", record_dir=str(tmp_path))) as phone:
        mark = len(bob.lines)
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        assert call.state is CallState.CONFIRMED
        connected = await bob.wait_line(r"^Call (\d+) with sip:alice@skinnysip\.test connected", 10, mark)
        await bob.wait_line(r"^Media streams established with sip:alice@", 10, mark)
        await asyncio.sleep(3)
        await call.hangup()
        assert call.state is CallState.TERMINATED
        await bob.wait_line(rf"^Call {connected.group(1)} with sip:alice@skinnysip\.test ended", 10, mark)
        report = call.media_report()
        summaries = [m.summary for m in call.exchange]
        invites = [m.raw for m in call.exchange if m.direction == "sent" and m.summary.startswith("INVITE")]
    # the INVITE was challenged (407) and re-sent with SHA-256 proxy credentials
    assert "407 Proxy Authentication Required" in summaries
    assert any(SHA256_CREDENTIALS.search(raw) for raw in invites)
    assert any(s.startswith("ACK") for s in summaries) and any(s.startswith("BYE") for s in summaries)
    assert report is not None, call.end_reason
    assert_heard(report, THEIR_TONE)
    assert share_of(bob.recording, OUR_TONE) >= 0.95
    # mediastreamer's STUN binding requests on our RTP/RTCP ports are told apart (RFC 7983)
    assert report["received"]["stun"] > 0 and report["received"]["parse_errors"] == 0, report["received"]
    assert report["rtcp"]["parse_errors"] == 0, report["rtcp"]


async def test_linphonec_calls_us_and_hangs_up(pbx: KamailioPeer, bob: Linphone, tmp_path: Path) -> None:
    """bob (linphonec) → alice (us, auto-answer): linphonec's INVITE carries SHA-256 proxy
    credentials (liblinphone reuses the realm's nonce from its REGISTER, so Kamailio often
    needs no 407), both sides report the call connected, each hears the other's tone, and
    linphonec's BYE ends our call."""
    async with SIPPhone(account(pbx, "alice", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        await registered(pbx, "alice")
        mark = len(bob.lines)
        await bob.command(f"call sip:alice@{pbx.realm}")
        call = await incoming(phone, 15)
        assert await call.wait_connected(10), call.end_reason
        assert call.state is CallState.CONFIRMED
        connected = await bob.wait_line(r"^Call (\d+) with sip:alice@skinnysip\.test connected", 10, mark)
        await bob.wait_line(r"^Media streams established with sip:alice@", 10, mark)
        await asyncio.sleep(3)
        await bob.command(f"terminate {connected.group(1)}")
        assert await call.wait_ended(10)
        assert call.end_reason == "BYE received"
        await bob.wait_line(rf"^Call {connected.group(1)} with sip:alice@skinnysip\.test ended", 10, mark)
        report = call.media_report()
    invites = _sip_messages(bob.sip_log(), "INVITE sip:alice@")
    assert any(SHA256_CREDENTIALS.search(m) for m in invites), invites[-1:]
    assert report is not None, call.end_reason
    assert_heard(report, THEIR_TONE)
    assert share_of(bob.recording, OUR_TONE) >= 0.95


async def call_linphonec(pbx: KamailioPeer, phone: SIPPhone, bob: Linphone, direction: str,
                         label: str, *, await_rtcp: bool = False) -> tuple[SIPCall, dict[str, Any] | None, Path]:
    """One 3 s call between our phone and linphonec (bob), placed by us (``direction``
    ``"out"``) or by bob (``"in"``), hung up by us once linphonec saw its media up; the call,
    its final media report and bob's recording of it (``<label>-<direction>.wav``).
    ``await_rtcp``: the call lasts, at most 10 s more, until bob's first RTCP report came (its
    interval is 5 s, randomised: on a loaded machine 3 s may see none)."""
    mark = len(bob.lines)
    recording = await bob.record_to(f"{label}-{direction}.wav")
    if direction == "out":
        call = await phone.call("bob")
    else:
        await bob.command(f"call sip:alice@{pbx.realm}")
        call = await incoming(phone, 15)
    assert isinstance(call, SIPCall)
    assert await call.wait_connected(15), call.end_reason
    connected = await bob.wait_line(r"^Call (\d+) with sip:alice@skinnysip\.test connected", 10, mark)
    await bob.wait_line(r"^Media streams established with sip:alice@", 10, mark)
    await asyncio.sleep(3)
    for _ in range(100 if await_rtcp else 0):
        report = call.media_report()
        if report is not None and report["rtcp"]["received"] >= 1:
            break
        await asyncio.sleep(0.1)
    await call.hangup()
    await bob.wait_line(rf"^Call {connected.group(1)} with sip:alice@skinnysip\.test ended", 10, mark)
    return call, call.media_report(), recording


@pytest.mark.parametrize("suites", [("AES_CM_128_HMAC_SHA1_80",), ("AES_CM_128_HMAC_SHA1_32",)])
async def test_srtp_with_linphonec_both_ways(pbx: KamailioPeer, tmp_path: Path, suites: tuple[str, ...]) -> None:
    """liblinphone's SRTP (SDES, mandatory; its libsrtp2) with one suite (liblinphone 5.1 has no
    AES-GCM: "Unsupported crypto suite"; the GCM suites are proven with rtpengine): we call it
    and it calls us (RTP/SAVP both ways: with encryption mandatory it
    refuses a best-effort RTP/AVP offer); each side hears the other's tone. With
    AES_CM_128_HMAC_SHA1_80 no packet fails authentication. With ..._32, mediastreamer2 5.1
    (``ms_add_srtp_stream``) also tags SRTCP with 32 bits where RFC 4568 §6.2.2 (and libsrtp,
    which we use) says 80: the RTCP reports fail authentication both ways — each side logs
    it — while RTP, tagged 32 bits by both, passes."""
    async with linphonec("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", realm=pbx.realm,
                         algorithm="SHA-256", tone_hz=THEIR_TONE, srtp_suites=suites) as bob, \
            SIPPhone(account(pbx, "alice", srtp="mandatory", srtp_suites=suites, auto_answer=0.2,
                             record_dir=str(tmp_path))) as phone:
        await bob.wait_registered(15)
        await registered(pbx, "bob")
        await registered(pbx, "alice")
        for direction in ("out", "in"):
            call, report, recording = await call_linphonec(pbx, phone, bob, direction, "srtp",
                                                           await_rtcp=suites[0].endswith("_80"))
            assert report is not None and call.audio is not None
            assert call.audio.srtp_suite == suites[0], (direction, call.audio)
            assert report["received"]["packets"] > 100, report["received"]
            if suites[0].endswith("_80"):
                assert report["srtp"]["auth_failures"] == 0 and report["rtcp"]["received"] >= 1, report["srtp"]
            else:  # mediastreamer2 tags SRTCP with 32 bits here too (RFC 4568 §6.2.2: 80): RTCP fails, RTP not
                assert report["srtp"]["auth_failures"] <= 3 and report["rtcp"]["received"] == 0, report["srtp"]
            assert_heard(report, THEIR_TONE)
            assert share_of(recording, OUR_TONE) >= 0.9, direction


async def test_dtls_srtp_with_linphonec_both_ways(pbx: KamailioPeer, tmp_path: Path) -> None:
    """liblinphone's DTLS-SRTP (mediastreamer2, ``media_encryption=dtls`` mandatory): we call it
    with ``srtp="dtls"`` and it calls us; each time the handshake keys SRTP on our side and each
    side hears the other's tone."""
    async with linphonec("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", realm=pbx.realm,
                         algorithm="SHA-256", tone_hz=THEIR_TONE, dtls=True) as bob, \
            SIPPhone(account(pbx, "alice", srtp="dtls", auto_answer=0.2, record_dir=str(tmp_path))) as phone:
        await bob.wait_registered(15)
        await registered(pbx, "bob")
        await registered(pbx, "alice")
        for direction in ("out", "in"):
            call, report, recording = await call_linphonec(pbx, phone, bob, direction, "dtls")
            assert report is not None and call.audio is not None and call.audio.dtls_role is not None
            assert all(d["error"] is None and d["profile"] for d in report["dtls"].values()), report["dtls"]
            assert report["srtp"]["auth_failures"] == 0, report["srtp"]
            assert report["received"]["packets"] > 100, report["received"]
            # liblinphone opens its side of DTLS once its media starts: the first part of the
            # call has no keys yet (nothing is sent in the clear meanwhile; ~0.6 s here, more on
            # a loaded machine), so what is heard is judged from the first sounding frame on
            assert heard_once_keyed(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95, direction
            assert heard_once_keyed(recording, OUR_TONE) >= 0.9, direction
