"""Audio sources and sinks (skinnysip.rtp.audio): WAV in any common shape resampled to 8 kHz,
recording, echo FIFO, and the FFT listener the media tests rely on."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from skinnysip.rtp import audio
from skinnysip.rtp.audio import (
    EchoSource,
    SilenceSource,
    ToneSource,
    WavRecorder,
    WavSource,
    dominant_frequencies,
    mix,
)


def write_wav(path: Path, freq: float, rate: int, channels: int = 1, width: int = 2, seconds: float = 0.5,
              amplitude: float = 0.5) -> Path:
    """A test tone as a PCM WAV file of any rate, channel count and sample width."""
    t = np.arange(int(rate * seconds)) / rate
    signal = amplitude * np.sin(2 * np.pi * freq * t)
    scale = float(1 << (8 * width - 1))
    ints = np.round(signal * (scale - 1)).astype(np.int64)
    if width == 1:
        raw_mono = (ints + 128).astype(np.uint8)
    else:
        raw_mono = ints
    frames = np.repeat(raw_mono[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        data = frames.astype(np.uint8).tobytes()
    elif width == 2:
        data = frames.astype("<i2").tobytes()
    elif width == 4:
        data = frames.astype("<i4").tobytes()
    else:  # 24-bit little-endian
        u = frames.astype(np.int64) & 0xFFFFFF
        data = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def _share(freqs: np.ndarray, target: float, tol: float = 15.0) -> float:
    return float(np.mean(np.abs(freqs - target) <= tol))


@pytest.mark.parametrize(("rate", "channels", "width", "freq"), [
    (16000, 2, 2, 440.0),
    (44100, 1, 2, 660.0),
    (44100, 2, 3, 1000.0),
    (48000, 1, 4, 350.0),
    (11025, 1, 1, 800.0),
    (8000, 1, 2, 440.0),
])
def test_wav_source_resamples_to_8k_with_the_same_tone(tmp_path, rate, channels, width, freq):
    path = write_wav(tmp_path / "in.wav", freq, rate, channels, width, seconds=0.5)
    src = WavSource(path)
    assert (src.source_rate, src.source_channels, src.source_width) == (rate, channels, width)
    assert src.rate == 8000
    assert abs(src.duration - 0.5) < 0.01
    out = src.read(4000)
    assert out.dtype == np.int16 and len(out) == 4000
    assert 0.4 * 32767 < np.max(np.abs(out)) < 0.6 * 32767  # amplitude kept through mixing/resampling
    assert _share(dominant_frequencies(out), freq) == 1.0


def test_wav_source_loops_or_ends(tmp_path):
    path = write_wav(tmp_path / "t.wav", 440, 8000, seconds=0.1)  # 800 samples
    looping = WavSource(path)
    first = looping.read(800)
    again = looping.read(800)
    assert np.array_equal(first, again)
    once = WavSource(path, loop=False)
    out = once.read(1000)
    assert np.array_equal(out[:800], first) and not out[800:].any()
    assert once.finished and not once.read(160).any()
    assert len(once.read(0)) == 0


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    (b"", "not a readable PCM WAV"),
    (b"hello, this is not a wav file at all", "not a readable PCM WAV"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable PCM WAV"),
])
def test_wav_source_bad_files_raise_value_error(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        WavSource(path)


def test_wav_source_empty_audio_and_directory(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    with pytest.raises(ValueError, match="no audio"):
        WavSource(path)
    with pytest.raises(ValueError, match="directory"):
        WavSource(tmp_path)


def test_wav_source_float_format_is_rejected(tmp_path):
    # a WAVE_FORMAT_IEEE_FLOAT (3) header: stdlib wave reads PCM only
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (3).to_bytes(2, "little") + (1).to_bytes(2, "little")
           + (8000).to_bytes(4, "little") + (32000).to_bytes(4, "little") + (4).to_bytes(2, "little")
           + (32).to_bytes(2, "little"))
    data = b"data" + (8).to_bytes(4, "little") + bytes(8)
    body = b"WAVE" + fmt + data
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    with pytest.raises(ValueError, match="not a readable PCM WAV"):
        WavSource(path)


def test_tone_and_silence_sources():
    tone = ToneSource(440.0)
    assert tone is not None and audio.ToneSource is ToneSource
    assert _share(dominant_frequencies(tone.read(1600)), 440) == 1.0
    silent = SilenceSource().read(320)
    assert silent.dtype == np.int16 and len(silent) == 320 and not silent.any()
    with pytest.raises(ValueError):
        SilenceSource().read(-1)


def test_echo_source_is_a_bounded_fifo():
    echo = EchoSource(max_seconds=0.05)  # 400 samples
    assert not echo.read(160).any()
    echo.write(np.arange(1, 301, dtype=np.int16))
    assert echo.buffered == 300
    out = echo.read(160)
    assert list(out[:3]) == [1, 2, 3] and out[-1] == 160
    out = echo.read(160)
    assert out[0] == 161 and out[139] == 300 and not out[140:].any()
    echo.write(np.ones(1000, dtype=np.int16))
    assert echo.buffered == 400 and echo.dropped == 600


def test_wav_recorder_writes_16_bit_mono_and_is_bounded(tmp_path):
    path = tmp_path / "rec.wav"
    tone = ToneSource(660.0)
    with WavRecorder(path, max_seconds=0.5) as rec:
        for _ in range(30):  # 0.6 s offered, 0.5 s kept
            rec.write(tone.read(160))
        assert rec.duration == 0.5 and rec.truncated == 800
    assert rec.closed
    rec.write(np.zeros(10, dtype=np.int16))  # after close: ignored
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 4000)
        data = np.frombuffer(w.readframes(4000), dtype="<i2")
    assert _share(dominant_frequencies(data), 660) == 1.0
    back = WavSource(path)
    assert np.array_equal(back.samples, data)
    with pytest.raises(ValueError):
        WavRecorder(tmp_path / "x.wav").write(np.array([40000]))


def test_dominant_frequencies_per_frame():
    rate = 8000
    t = np.arange(rate) / rate
    signal = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t[:800]), np.zeros(800),
                             0.5 * np.sin(2 * np.pi * 1633 * t[:800])])
    samples = np.round(signal * 32767).astype(np.int16)
    freqs = dominant_frequencies(samples)
    assert len(freqs) == 15
    assert np.all(np.abs(freqs[:5] - 440) < 8)
    assert np.all(freqs[5:10] == 0.0)
    assert np.all(np.abs(freqs[10:] - 1633) < 8)
    assert len(dominant_frequencies(samples[:100])) == 0
    assert len(dominant_frequencies(samples, frame=0.01)) == 30
    with pytest.raises(ValueError):
        dominant_frequencies(samples, frame=0.0001)


def test_mix_clips_and_pads():
    a = np.array([30000, -30000, 5], dtype=np.int16)
    b = np.array([10000, -10000], dtype=np.int16)
    assert list(mix(a, b)) == [32767, -32768, 5]
    assert list(mix(b, a)) == [32767, -32768, 5]
