"""A local three-way call (skinnysip.phone.conference) against two real baresip phones behind
the Kamailio PBX of test_phone_baresip.py, proven by listening.

alice (our phone, 440 Hz) calls bob (baresip, 660 Hz) and carol (baresip, 880 Hz) and puts
both calls in a :class:`Conference`.  In each baresip's recording of what it received, the
spectrum of the stretch after the conference started has strong peaks at our tone *and* the
other party's tone and next to nothing at its own (no echo); the stretch before it has only
ours."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import Baresip, baresip
from sip_peers import KamailioPeer
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, bob, pbx, registered  # noqa: F401 - bob, pbx: fixtures

from skinnysip.phone.api import CallState, PhoneError
from skinnysip.phone.conference import Conference, MixingSource
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.rtp.audio import ToneSource

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

BOB_TONE, CAROL_TONE = THEIR_TONE, 880.0


def band_shares(path: Path, start: float, end: float, freqs: list[float], width: float = 20.0) -> list[float]:
    """Share of the spectral energy of seconds ``start``..``end`` of a WAV (negative: from the
    end) within ± ``width`` Hz of each of ``freqs``."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    a = int(start * rate) if start >= 0 else len(samples) + int(start * rate)
    b = int(end * rate) if end >= 0 else len(samples) + int(end * rate)
    window = samples[max(0, a):max(0, b)]
    assert len(window) >= rate // 2, f"{path.name}: only {len(window) / rate:.2f} s in {start}..{end}"
    power = np.abs(np.fft.rfft(window * np.hanning(len(window)))) ** 2
    hz = np.fft.rfftfreq(len(window), 1 / rate)
    total = float(power[hz > 50].sum()) or 1.0
    return [float(power[np.abs(hz - f) <= width].sum()) / total for f in freqs]


@pytest.fixture
async def carol(pbx: KamailioPeer) -> Baresip:  # noqa: F811
    async with baresip("carol", pbx.users["carol"], f"127.0.0.1:{pbx.udp_port}", tone_hz=CAROL_TONE) as peer:
        await registered(pbx, "carol")
        yield peer  # type: ignore[misc]


async def test_three_way_conference_each_party_hears_the_other_two(
        pbx: KamailioPeer, bob: Baresip, carol: Baresip) -> None:  # noqa: F811
    async with SIPPhone(account(pbx, "alice")) as phone:
        to_bob = await phone.call("bob")
        assert await to_bob.wait_connected(15), to_bob.end_reason
        to_carol = await phone.call("carol")
        assert await to_carol.wait_connected(15), to_carol.end_reason
        await bob.wait_event("CALL_ESTABLISHED")
        await carol.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(2.5)  # before: each hears only us
        async with Conference(phone) as conference:
            conference.add(to_bob)
            conference.add(to_carol)
            assert conference.calls == [to_bob, to_carol]
            with pytest.raises(PhoneError):
                conference.add(to_bob)
            started = time.monotonic()
            await asyncio.sleep(5)
            during = time.monotonic() - started
            await to_bob.hangup()
            await to_carol.hangup()
        await bob.wait_event("CALL_CLOSED")
        await carol.wait_event("CALL_CLOSED")
        assert to_bob.state is CallState.TERMINATED and to_carol.state is CallState.TERMINATED
        for call in (to_bob, to_carol):  # our side heard each party the whole time
            report = call.media_report()
            assert report is not None and report["received"]["packets"] > 300

    freqs = [OUR_TONE, BOB_TONE, CAROL_TONE]
    # after the conference started (0.5 s settling; the recordings end at the hang-up)
    after = (-(during - 0.5), -0.3)
    before = (-(during + 2.0), -(during + 0.3))
    bob_hears = band_shares(bob.recordings()["dec"], *after, freqs)
    carol_hears = band_shares(carol.recordings()["dec"], *after, freqs)
    assert bob_hears[0] > 0.4 and bob_hears[2] > 0.25 and bob_hears[1] < 0.02, bob_hears
    assert carol_hears[0] > 0.4 and carol_hears[1] > 0.25 and carol_hears[2] < 0.02, carol_hears
    # before it, each heard only us
    bob_before = band_shares(bob.recordings()["dec"], *before, freqs)
    carol_before = band_shares(carol.recordings()["dec"], *before, freqs)
    assert bob_before[0] > 0.8 and bob_before[2] < 0.02, bob_before
    assert carol_before[0] > 0.8 and carol_before[1] < 0.02, carol_before


def test_mixing_source_sums_and_clips() -> None:
    loud = ToneSource(440.0, amplitude=0.9)
    mixer = MixingSource(loud, [ToneSource(880.0, amplitude=0.9)])
    out = mixer.read(800)
    assert out.dtype == np.int16 and len(out) == 800
    assert out.max() == 32767 and out.min() == -32768  # clipped, not wrapped around
    spectrum = np.abs(np.fft.rfft(MixingSource(ToneSource(440.0, amplitude=0.3),
                                               [ToneSource(880.0, amplitude=0.3)]).read(8000)))
    peaks = sorted(np.argsort(spectrum)[-2:])
    assert [int(p) for p in peaks] == [440, 880]
