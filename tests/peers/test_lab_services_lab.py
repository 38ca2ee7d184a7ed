"""The lab's services through the whole lab (skinnysip.lab.runner.Lab) with real phones:
baresip calls the tone (1004 Hz) and the playback (speech, then the lab hangs up), SIPp calls
the echo and gets its own RTP payloads back byte for byte (what ``sipp -rtp_echo`` does), and a
party held by baresip hears the lab's music on hold (the melody's notes in order), which stops
on resume. Each call is on the services' record."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import baresip
from test_lab_sip import DOMAIN, account, port, registered, settings

from skinnysip.lab.runner import Lab
from skinnysip.lab.services import MILLIWATT_HZ, MOH_NOTES
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

THEIR_TONE = 660.0


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        assert running.services is not None
        yield running


def frequencies(path: Path, start: float = 0.0, end: float | None = None) -> np.ndarray:
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    stop = None if end is None else int(end * rate)
    return dominant_frequencies(samples[int(start * rate):stop], rate)


async def baresip_hears(lab: Lab, number: str, start: float, extra_account: str = "") -> np.ndarray:
    """baresip (1001, our 660 Hz tone) dials ``number`` at the lab, talks 3 s and hangs up: the
    dominant frequencies of what it heard from ``start`` s on."""
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE,
                       extra_account=extra_account) as phone:
        await registered(lab, "1001")
        await phone.command("dial", f"sip:{number}@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(3)
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
        return frequencies(phone.recordings()["dec"], start=start)


async def test_baresip_hears_the_tone(lab: Lab) -> None:
    freqs = await baresip_hears(lab, "601", 0.5)
    assert np.mean(np.abs(freqs - MILLIWATT_HZ) < 10) >= 0.9
    assert lab.services is not None
    assert [c["service"] for c in lab.services.calls()] == ["tone"]


@pytest.mark.parametrize("mediaenc", ["srtp-mand", "srtp"])
async def test_baresip_with_srtp_hears_its_echo(lab: Lab, mediaenc: str) -> None:
    """baresip's own SRTP (``srtp-mand``: RTP/SAVP; ``srtp``: RTP/AVP with a=crypto, best
    effort) through the lab to the echo: keyed, and baresip hears its tone back."""
    freqs = await baresip_hears(lab, "600", 0.8, f"mediaenc={mediaenc}")
    assert np.mean(np.abs(freqs - THEIR_TONE) < 25) >= 0.9
    assert lab.services is not None
    [record] = lab.services.calls()
    assert record["service"] == "echo"
    assert "a=crypto" in next(m["raw"] for m in record["messages"] if m["summary"] == "200 OK")


async def test_baresip_hears_the_prompt_and_the_lab_hangs_up(lab: Lab) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as phone:
        await registered(lab, "1001")
        await phone.command("dial", f"sip:602@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        closed = await phone.wait_event("CALL_CLOSED", timeout=40)  # the service's BYE
        freqs = frequencies(phone.recordings()["dec"], start=0.5, end=9.0)
    assert "BYE" in str(closed) or closed.get("type") == "CALL_CLOSED"
    assert np.mean(freqs > 0) > 0.5  # speech energy in most frames of the first play
    assert len({round(f / 50) for f in freqs if f > 0}) > 10  # many pitches: speech, not a tone
    assert np.mean(np.abs(freqs - THEIR_TONE) < 25) < 0.2  # not our own tone back (speech passes 660 Hz now and then)
    assert lab.services is not None
    [record] = lab.services.calls()
    assert record["service"] == "playback" and record["reason"] == "BYE sent"


async def test_held_party_hears_music_on_hold(lab: Lab, tmp_path: Path) -> None:
    # baresip sends 300 Hz (no note of the melody); we record what reaches us
    async with SIPPhone(account(lab, "1002", record_dir=str(tmp_path), auto_answer=0.2)), \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=300.0) as theirs:
        await registered(lab, "1001")
        await registered(lab, "1002")
        await theirs.command("dial", f"sip:1002@{DOMAIN}")
        await theirs.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(2)
        await theirs.command("hold")
        await asyncio.sleep(6)
        assert lab.services is not None and len(lab.services.moh_keys) == 1
        await theirs.command("resume")
        await asyncio.sleep(2)
        assert lab.services.moh_keys == []
        await theirs.command("hangup")
        await theirs.wait_event("CALL_CLOSED")
        await asyncio.sleep(0.5)
    [recording] = list(tmp_path.glob("*-rx.wav"))
    freqs = frequencies(recording)
    notes = sorted({hz for hz, _ in MOH_NOTES})
    near = [min(notes, key=lambda n: abs(n - f)) if min(abs(n - f) for n in notes) < 15 else 0 for f in freqs]
    # the held stretch: from the first to the last frame of a note (where it falls depends on
    # how fast the re-INVITE went on this loaded machine); silent frames there are receiver
    # underruns, so the note sequence is read over the audible frames
    first = next(i for i, n in enumerate(near) if n)
    last = len(near) - next(i for i, n in enumerate(reversed(near)) if n)
    held = near[first:last]
    assert len(held) >= 4 * 50, len(held)  # about the 6 s on hold
    audible = [n for n, f in zip(held, freqs[first:last], strict=True) if f > 0]
    assert np.mean([n != 0 for n in audible]) > 0.8, held
    tune = [n for n in audible if n]
    changes = [n for i, n in enumerate(tune) if i == 0 or tune[i - 1] != n]
    period = [hz for i, (hz, _) in enumerate(MOH_NOTES) if i == 0 or MOH_NOTES[i - 1][0] != hz]
    assert ",".join(map(str, period)) in ",".join(map(str, changes)), changes
    before = near[50:90]
    assert np.mean([n != 0 for n in before]) < 0.1  # no music before the hold


async def test_baresip_hears_its_digits_read_back(lab: Lab) -> None:
    """baresip sends 4 2 * as RFC 4733 events to the DTMF echo (604); after the pause the lab
    sends them back as RFC 4733 events and baresip detects them, in order."""
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as phone:
        await registered(lab, "1001")
        await phone.command("dial", f"sip:604@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(0.5)
        after = len(phone.events)
        for key in "42*":
            await phone.command("sndcode", key)
            await asyncio.sleep(0.25)
        await phone.command("sndcode", "\n")  # key release ends the last event
        for _ in range(60):
            digits = [e.get("param") for e in phone.events[after:] if e.get("type") == "CALL_DTMF_START"]
            if len(digits) >= 3:
                break
            await asyncio.sleep(0.1)
        await phone.command("hangup")
    assert digits == ["4", "2", "*"], digits


async def test_conference_with_baresip_and_two_of_ours(lab: Lab, tmp_path: Path) -> None:
    """The conference room (603) with baresip (660 Hz) and two of our phones (440, 880 Hz):
    each party's recording has the other two tones and not its own."""
    from test_lab_services import band_energy, wav_samples

    tones = {"1002": 440.0, "1003": 880.0}
    async with SIPPhone(account(lab, "1002", record_dir=str(tmp_path / "1002"))) as a, \
            SIPPhone(account(lab, "1003", record_dir=str(tmp_path / "1003"), source="tone:880")) as b, \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=THEIR_TONE) as phone:
        await registered(lab, "1001")
        calls = {"1002": await a.call("603"), "1003": await b.call("603")}
        for call in calls.values():
            assert await call.wait_connected(15), call.end_reason
        await phone.command("dial", f"sip:603@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(5)
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
        with wave.open(str(phone.recordings()["dec"])) as w:
            baresip_heard = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
        paths = {user: call.media.recordings["rx"] for user, call in calls.items() if call.media is not None}
        for call in calls.values():
            await call.hangup()
    shares = band_energy(baresip_heard[-3 * 8000:], [440.0, 880.0, THEIR_TONE])
    assert shares[0] > 0.25 and shares[1] > 0.25 and shares[2] < 0.02, ("baresip", shares)
    for user, path in paths.items():
        other = 880.0 if user == "1002" else 440.0
        samples = wav_samples(path)
        # the stretch when all three were in (before baresip hung up): the last 5 s minus the tail
        shares = band_energy(samples[-6 * 8000:-2 * 8000], [THEIR_TONE, other, tones[user]])
        assert shares[0] > 0.2 and shares[1] > 0.2 and shares[2] < 0.02, (user, shares)
