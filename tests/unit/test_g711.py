"""G.711 µ-law / A-law: bit-exact with CPython's audioop on every input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from skinnysip.rtp import g711, tones

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, removed in 3.13: the reference implementation here

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_all_65536_inputs():
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)


def test_alaw_encode_all_65536_inputs():
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_ulaw_decode_all_256_codes():
    out = g711.ulaw_decode(ALL_CODES)
    assert out.dtype == np.int16
    assert out.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_all_256_codes():
    out = g711.alaw_decode(ALL_CODES)
    assert out.dtype == np.int16
    assert out.tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_known_codes():
    assert g711.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert g711.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert g711.ulaw_decode(b"\x00")[0] == -32124 and g711.alaw_decode(b"\x80")[0] == 5504


def test_tone_survives_a_round_trip():
    tone = tones.sine(1000, 0.02)
    assert len(tone) == 160
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        back = dec(enc(tone)).astype(np.int32)
        assert np.max(np.abs(back - tone)) <= 1024  # G.711 quantisation error at half scale


def test_dispatch_and_errors():
    tone = tones.sine(440, 0.01)
    assert g711.encode(g711.PT_PCMU, tone) == g711.ulaw_encode(tone)
    assert g711.encode(g711.PT_PCMA, tone) == g711.alaw_encode(tone)
    assert np.array_equal(g711.decode(8, b"\xd5\xd5"), g711.alaw_decode(b"\xd5\xd5"))
    with pytest.raises(ValueError):
        g711.encode(18, tone)
    with pytest.raises(ValueError):
        g711.ulaw_encode(np.array([40000]))
    assert g711.ulaw_encode([1, 2, 3]) == g711.ulaw_encode(np.array([1, 2, 3], np.int16))


def test_tones():
    t = tones.sine(1000, 1.0, amplitude=0.5)
    assert t.dtype == np.int16 and len(t) == 8000
    assert 16000 <= int(np.max(t)) <= 16384
    spectrum = np.abs(np.fft.rfft(t.astype(np.float64)))
    assert int(np.argmax(spectrum)) == 1000  # 1 Hz bins over one second
    assert not tones.silence(0.02).any() and len(tones.silence(0.02)) == 160
    d = tones.dtmf("#", 1.0)
    peaks = set(np.argsort(np.abs(np.fft.rfft(d.astype(np.float64))))[-2:].tolist())
    assert peaks == {941, 1477}
    with pytest.raises(ValueError):
        tones.dtmf("x")
    frames = tones.frames(tones.sine(1000, 0.05), 160)
    assert [len(f) for f in frames] == [160, 160, 160]  # 400 samples -> last frame padded


def test_tone_source_is_phase_continuous():
    src = tones.ToneSource(1000, amplitude=0.5)
    joined = np.concatenate([src.read(160) for _ in range(50)])
    assert np.array_equal(joined, tones.sine(1000, 1.0, amplitude=0.5))
    assert not tones.ToneSource().read(10).any()


@pytest.mark.parametrize("freqs", [(440,), (697, 1209), (941, 1633), (440.5,), (3,)])
def test_tone_source_reads_across_its_period_as_one_long_tone(freqs):
    """Whole-Hz tones are read from one computed period (440 Hz: 200 samples); reads of any
    size, across the period's end, give the tone computed in one go (± 1 for rounding), and a
    caller changing a frame does not change the next periods."""
    src = tones.ToneSource(*freqs, amplitude=0.4)
    sizes = [160, 7, 333, 8000, 1, 16001, 0, 160] * 3
    got = []
    for n in sizes:
        frame = src.read(n)
        assert frame.dtype == np.int16 and frame.shape == (n,)
        got.append(frame.copy())
        frame[:] = 0
    joined = np.concatenate(got).astype(int)
    idx = np.arange(joined.size, dtype=np.float64)
    want = sum(np.sin(2 * np.pi * f * idx / 8000) for f in freqs) / len(freqs)
    assert np.abs(joined - np.round(want * 0.4 * 32767)).max() <= 1



def test_input_forms_give_the_same_codes():
    """The one-frame fast paths (1-D int16 array, bytes) and the general paths agree."""
    frame = tones.sine(1000, 0.02)
    ulaw, alaw = g711.ulaw_encode(frame), g711.alaw_encode(frame)
    strided = np.repeat(frame, 2)[::2]
    assert not strided.flags.c_contiguous
    for form in (frame.reshape(2, 80), frame.astype(np.int32), frame.tolist(), strided, frame.astype(">i2")):
        assert g711.ulaw_encode(form) == ulaw and g711.alaw_encode(form) == alaw
    both = memoryview(bytes(b for pair in zip(ulaw, ulaw, strict=True) for b in pair))[::2]  # strided buffer
    for data in (bytearray(ulaw), memoryview(ulaw), list(ulaw), both):
        assert np.array_equal(g711.ulaw_decode(data), g711.ulaw_decode(ulaw))
        assert np.array_equal(g711.alaw_decode(data), g711.alaw_decode(ulaw))
