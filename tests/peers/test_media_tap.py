"""MediaStream's hooks for outside listeners and sources (the web page's audio socket):
:class:`AudioTap` gets the decoded audio played out, bounded (oldest dropped and counted);
:class:`PushSource` put in ``MediaStream.source`` is what the stream sends, with a small
jitter buffer, bounded. Two real streams on 127.0.0.1, judged by the frequency of the audio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from skinnysip.net.media import MAX_TAPS, AudioTap, MediaConfig, MediaStream, PushSource
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.tones import ToneSource, sine

pytestmark = [pytest.mark.timeout(60)]


def test_tap_is_bounded_and_counts_what_it_drops() -> None:
    tap = AudioTap(max_frames=3)
    for i in range(5):
        tap.put(np.full(160, i, dtype=np.int16))
    assert tap.dropped == 2 and [int(f[0]) for f in tap.frames] == [2, 3, 4]
    with pytest.raises(ValueError):
        AudioTap(max_frames=0)


async def test_tap_get_waits_and_ends_when_closed() -> None:
    tap = AudioTap()
    assert await tap.get(0.05) is None  # nothing within the deadline
    asyncio.get_running_loop().call_later(0.02, tap.put, np.ones(160, dtype=np.int16))
    frame = await tap.get(1.0)
    assert frame is not None and len(frame) == 160 and tap.delivered == 1
    tap.close()
    assert await tap.get(1.0) is None


def test_push_source_primes_drops_and_counts_underruns() -> None:
    src = PushSource(max_seconds=0.1, prime=0.04)  # 800 samples kept, 320 before playing
    src.feed(np.ones(160, dtype=np.int16))
    assert not src.read(160).any()  # not primed yet: silence, the audio stays queued
    src.feed(np.ones(160, dtype=np.int16) * 2)
    assert src.read(160).tolist() == [1] * 160 and src.playing
    assert src.read(160).tolist() == [2] * 160
    assert not src.read(160).any() and src.underruns == 1 and not src.playing
    src.feed(np.arange(1000, dtype=np.int16))  # more than 0.1 s: the oldest 200 samples go
    assert src.dropped == 200 and src.buffered == 800 and src.received == 1320
    assert src.read(160)[0] == 200


async def test_tap_hears_and_push_source_speaks_between_two_streams() -> None:
    a = await MediaStream.open("127.0.0.1", source=ToneSource(440.0), name="a")
    b = await MediaStream.open("127.0.0.1", source=ToneSource(660.0), name="b")
    try:
        tap_b = b.add_tap(max_frames=200)  # b hears a
        tap_a = a.add_tap(max_frames=200)  # a hears b
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port)))
        b.apply(MediaConfig(remote=("127.0.0.1", a.local_port)))
        await asyncio.sleep(1.0)
        heard = np.concatenate(list(tap_b.frames)[10:])
        assert np.mean(np.abs(dominant_frequencies(heard) - 440.0) < 25) >= 0.9
        # b now sends what is pushed into it (1000 Hz) instead of its own 660 Hz tone
        mic = PushSource(max_seconds=0.5, prime=0.06)
        b.source = mic
        tone = sine(1000.0, 2.0, rate=8000, amplitude=0.4).astype(np.int16)
        tap_a.frames.clear()
        for i in range(0, len(tone) - 160, 160):  # in real time, 20 ms a message
            mic.feed(tone[i:i + 160])
            await asyncio.sleep(0.02)
        heard = np.concatenate(list(tap_a.frames)[15:])
        freqs = dominant_frequencies(heard)
        assert np.mean(np.abs(freqs - 1000.0) < 25) >= 0.85, freqs
        assert mic.received >= len(tone) - 320 and mic.dropped == 0
        for _ in range(MAX_TAPS - 1):
            b.add_tap()
        with pytest.raises(ValueError):
            b.add_tap()
        b.remove_tap(tap_b)
        assert tap_b.closed and tap_b not in b.taps
    finally:
        await a.close()
        await b.close()
    assert tap_a.closed and a.taps == []  # close ends every tap
