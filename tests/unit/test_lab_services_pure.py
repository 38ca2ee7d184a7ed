"""Pure pieces of the lab services: the milliwatt's level and frequency against G.711's digital
milliwatt, the music on hold melody, the playback prompt, the in-memory source, and the
argument checks (no sockets)."""

from __future__ import annotations

import numpy as np
import pytest

from skinnysip.lab.services import (
    MILLIWATT_HZ,
    MILLIWATT_PEAK,
    MOH_NOTES,
    LabServices,
    milliwatt_source,
    moh_melody,
    prompt_samples,
)
from skinnysip.rtp import g711
from skinnysip.rtp.audio import SamplesSource, dominant_frequencies


def test_milliwatt_has_the_digital_milliwatts_level() -> None:
    # ITU-T G.711 Table 5: the µ-law digital milliwatt 1E 0B 0B 1E 9E 8B 8B 9E is a 1 kHz sine
    # sampled at ±22.5° and ±67.5°; its peak is the 0 dBm0 amplitude
    dmw = g711.decode(g711.PT_PCMU, bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E])).astype(float)
    peak = np.abs(dmw[1]) / np.sin(np.radians(67.5))
    assert abs(peak - MILLIWATT_PEAK) / peak < 0.02
    tone = milliwatt_source().read(8000)
    assert abs(np.max(np.abs(tone)) - MILLIWATT_PEAK) < 5
    assert np.all(np.abs(dominant_frequencies(tone) - MILLIWATT_HZ) < 5)
    rms_dbm0 = 20 * np.log10(np.sqrt(np.mean(tone.astype(float) ** 2)) / (peak / np.sqrt(2)))
    assert abs(rms_dbm0) < 0.2  # 0 dBm0


def test_moh_melody_is_the_notes_in_order() -> None:
    melody = moh_melody()
    assert len(melody) == int(round(sum(s for _, s in MOH_NOTES) * 8000))
    freqs = dominant_frequencies(melody)
    start = 0
    for hz, seconds in MOH_NOTES:
        frames = freqs[start + 1: start + int(seconds * 50) - 1]  # the note's frames, edges aside
        assert np.all(np.abs(frames - hz) < 10), (hz, frames)
        start += int(seconds * 50)
    assert len({hz for hz, _ in MOH_NOTES}) >= 5  # a tune, not one sine


def test_prompt_is_bundled_speech() -> None:
    prompt = prompt_samples()
    assert 5 * 8000 < len(prompt) < 30 * 8000
    freqs = dominant_frequencies(prompt)
    assert np.mean(freqs > 0) > 0.5 and len({round(f / 50) for f in freqs if f > 0}) > 10


def test_samples_source_loops_or_ends() -> None:
    once = SamplesSource(np.arange(1, 6), loop=False)
    assert once.read(3).tolist() == [1, 2, 3] and once.read(4).tolist() == [4, 5, 0, 0] and once.finished
    looped = SamplesSource([1, 2, 3])
    assert looped.read(7).tolist() == [1, 2, 3, 1, 2, 3, 1] and not looped.finished
    assert looped.duration == 3 / 8000
    with pytest.raises(ValueError):
        SamplesSource([])


def test_unknown_service_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="extensions.650: unknown service 'karaoke'"):
        LabServices(domain="lab.skinnysip", extensions={"650": "karaoke"})


async def test_moh_arguments_are_checked() -> None:
    services = LabServices(domain="lab.skinnysip", extensions={})
    with pytest.raises(ValueError):
        services.moh_start("k", ("127.0.0.1", 0), 0)  # no port
    with pytest.raises(ValueError):
        services.moh_start("k", ("not-an-ip", 4000), 0)
    with pytest.raises(ValueError):
        services.moh_start("k", ("127.0.0.1", 4000), 77)  # no such codec
    assert services.moh_keys == []
    services.moh_stop("nothing")  # harmless
    await services.close()
    with pytest.raises(RuntimeError):
        services.moh_start("k", ("127.0.0.1", 4000), 0)
