"""The sound card's two queues are bounded and never block (no device needed: the PortAudio
callback is called directly, as PortAudio's thread would)."""

from __future__ import annotations

import numpy as np
import pytest

from skinnysip.net.soundcard import SoundCard, _device


def test_speaker_queue_drops_the_oldest_beyond_its_bound() -> None:
    card = SoundCard(microphone=False, max_seconds=0.1, block=160)  # 5 blocks
    for k in range(8):
        card.write(np.full(160, k, dtype=np.int16))
    assert card.output_dropped == 3 * 160
    out = np.zeros((160, 1), dtype=np.int16)
    card._callback(out, 160, None, 0)
    assert (out[:, 0] == 3).all()  # the oldest kept block


def test_microphone_reads_blocks_then_silence() -> None:
    card = SoundCard(speaker=False, max_seconds=0.1, block=160)
    block = np.arange(160, dtype=np.int16).reshape(-1, 1)
    for _ in range(7):
        card._callback(block, 160, None, 0)
    assert card.input_dropped == 2 * 160
    got = [card.read(160) for _ in range(6)]
    assert all((g == np.arange(160)).all() for g in got[:5]) and not got[5].any()
    assert card.input_underruns == 1
    assert len(card.read(80)) == 80


def test_device_specs() -> None:
    assert _device("default") is None and _device("3") == 3 and _device("a,2") == ("a", 2)
    with pytest.raises(ValueError):
        SoundCard(microphone=False, speaker=False)
