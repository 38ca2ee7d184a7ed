"""G.711's two implementations (the C extension skinnysip.rtp._g711 and the numpy tables): both
bit-exact with CPython's audioop on every input, the same results and errors for every input
form, and the extension built wherever a C compiler is (a broken build is a failure, not a
silent fall back to numpy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from skinnysip.rtp import codecs, g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, removed in 3.13: the reference implementation here

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))
NUMPY = SimpleNamespace(**g711.NUMPY_FUNCTIONS)
IMPLEMENTATIONS = [pytest.param(NUMPY, id="numpy"),
                   pytest.param(g711, id="c", marks=pytest.mark.skipif(g711.IMPLEMENTATION != "c",
                                                                       reason="the C extension is not built"))]
LAWS = [("ulaw", audioop.lin2ulaw, audioop.ulaw2lin), ("alaw", audioop.lin2alaw, audioop.alaw2lin)]


def coders(impl, law: str):
    return getattr(impl, f"{law}_encode"), getattr(impl, f"{law}_decode")


def test_the_extension_is_built_where_a_compiler_is():
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the numpy tables are expected")
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        pytest.skip("no Python headers here (Debian: python3-dev): the numpy tables are expected")
    assert g711.IMPLEMENTATION == "c", "a C compiler is here but skinnysip.rtp._g711 did not build or import"
    from skinnysip.rtp import _g711  # type: ignore[attr-defined]

    assert g711.ulaw_decode is _g711.ulaw_decode and g711.decode is _g711.decode  # no wrapper frame


def test_implementation_names_the_functions_in_use():
    assert g711.IMPLEMENTATION in ("c", "numpy")
    if g711.IMPLEMENTATION == "numpy":
        assert g711.ulaw_decode is g711.NUMPY_FUNCTIONS["ulaw_decode"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("law,lin2law,law2lin", LAWS)
def test_bit_exact_with_audioop_on_every_input(impl, law, lin2law, law2lin):
    encode, decode = coders(impl, law)
    assert encode(ALL_SAMPLES) == lin2law(ALL_SAMPLES.tobytes(), 2)
    out = decode(ALL_CODES)
    assert out.dtype == np.int16 and out.shape == (256,)
    assert out.tobytes() == law2lin(ALL_CODES, 2)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("law,lin2law,law2lin", LAWS)
@pytest.mark.parametrize("n", [0, 1, 7, 159, 160, 161, 65535, 65536, 200001])
def test_sizes(impl, law, lin2law, law2lin, n):
    """Empty, odd and large sizes (the C loops run without the GIL from 65536 samples)."""
    encode, decode = coders(impl, law)
    samples = np.random.default_rng(n).integers(-32768, 32768, n, dtype=np.int16)
    data = encode(samples)
    assert type(data) is bytes and data == lin2law(samples.tobytes(), 2)
    out = decode(data)
    assert type(out) is np.ndarray and out.dtype == np.int16 and out.shape == (n,)
    assert out.tobytes() == law2lin(data, 2)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_decoded_array_is_a_fresh_writable_array(impl):
    payload = bytearray(ALL_CODES)
    out = impl.ulaw_decode(payload)
    assert out.flags.c_contiguous and out.flags.writeable and out.flags.owndata
    payload[:] = bytes(256)  # the result does not share the payload's memory
    out[0] = 7
    assert out.tobytes()[2:] == audioop.ulaw2lin(ALL_CODES, 2)[2:]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_decode_input_forms(impl, law):
    """Any bytes-like object (bytes, bytearray, memoryview, a strided memoryview, a numpy array's
    raw bytes) or what bytes() accepts (a list of ints) decodes like the same bytes."""
    _, decode = coders(impl, law)
    codes = bytes(np.random.default_rng(3).integers(0, 256, 161, dtype=np.uint8))
    want = decode(codes).tobytes()
    interleaved = memoryview(bytes(b for pair in zip(codes, codes, strict=True) for b in pair))[::2]
    as_int16 = np.frombuffer(codes[:160], dtype=np.int16)  # raw bytes of another dtype's buffer
    for form in (bytearray(codes), memoryview(codes), interleaved, list(codes), tuple(codes),
                 np.frombuffer(codes, np.uint8), memoryview(codes)[0:161]):
        assert decode(form).tobytes() == want
    assert decode(as_int16).tobytes() == want[:320]
    assert decode(memoryview(b"")).shape == (0,)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_encode_input_forms(impl, law):
    """Not a C-contiguous native int16 array: the same codes as the int16 frame (the C encoders
    hand these to the numpy ones)."""
    encode, _ = coders(impl, law)
    frame = np.random.default_rng(4).integers(-32768, 32768, 160, dtype=np.int16)
    want = encode(frame)
    strided = np.repeat(frame, 2)[::2]
    unaligned = np.frombuffer(b"\0" + frame.tobytes(), dtype=np.uint8)[1:].view(np.int16)
    for form in (frame.reshape(2, 80), frame.reshape(80, 2).T.copy(order="C").T, frame.astype(np.int32),
                 frame.tolist(), strided, frame.astype(">i2"), unaligned, frame.view(np.ma.MaskedArray)):
        assert encode(form) == want
    assert encode(np.int16(-5)) == encode(np.array([-5], np.int16))
    assert encode([]) == b"" and encode(np.zeros(0, np.int16)) == b""


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_errors(impl):
    for decode in (impl.ulaw_decode, impl.alaw_decode):
        for bad in ("abc", 5, True, None, 1.5, object()):
            with pytest.raises(TypeError):
                decode(bad)
        with pytest.raises(ValueError):
            decode([1, 300])
    for encode in (impl.ulaw_encode, impl.alaw_encode):
        with pytest.raises(ValueError):
            encode(np.array([40000]))
        with pytest.raises(ValueError):
            encode(np.array([-32769, 0]))
    for pt in (18, 1, -1, 2**70, "0", None):
        with pytest.raises(ValueError, match="not a G.711 payload type"):
            impl.decode(pt, b"\xff")
        with pytest.raises(ValueError, match="not a G.711 payload type"):
            impl.encode(pt, np.zeros(2, np.int16))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_dispatch_by_payload_type(impl):
    frame = np.random.default_rng(5).integers(-32768, 32768, 160, dtype=np.int16)
    for pt in (0, 8, np.int64(0), np.uint8(8)):
        law = "ulaw" if pt == 0 else "alaw"
        encode, decode = coders(impl, law)
        assert impl.encode(pt, frame) == encode(frame)
        assert np.array_equal(impl.decode(pt, encode(frame)), decode(encode(frame)))


def test_both_implementations_agree_on_random_frames():
    rng = np.random.default_rng(6)
    for _ in range(20):
        frame = rng.integers(-32768, 32768, int(rng.integers(0, 400)), dtype=np.int16)
        for law in ("ulaw", "alaw"):
            (enc_c, dec_c), (enc_np, dec_np) = coders(g711, law), coders(NUMPY, law)
            data = enc_c(frame)
            assert data == enc_np(frame) and np.array_equal(dec_c(data), dec_np(data))


def test_the_media_path_calls_g711_directly():
    """codecs' G.711 coders are g711's functions themselves: no Python frame per RTP frame."""
    assert codecs.PCMU.encoder(8000).encode is g711.ulaw_encode
    assert codecs.PCMU.decoder(8000).decode is g711.ulaw_decode
    assert codecs.PCMA.encoder(8000).encode is g711.alaw_encode
    assert codecs.PCMA.decoder(8000).decode is g711.alaw_decode


def test_a_refused_table_load_changes_nothing():
    if g711.IMPLEMENTATION != "c":
        pytest.skip("the C extension is not built")
    from skinnysip.rtp import _g711  # type: ignore[attr-defined]

    with pytest.raises(ValueError):
        _g711.load_tables(bytes(512), bytes(512), bytes(65536), b"short", len, len)
    with pytest.raises(TypeError):
        _g711.load_tables(bytes(512), bytes(512), bytes(65536), bytes(65536), None, len)
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def test_without_the_extension_the_numpy_tables_serve():
    """A machine with no compiler: importing g711 finds no _g711 and binds the numpy functions."""
    code = ("import sys; sys.modules['skinnysip.rtp._g711'] = None\n"
            "from skinnysip.rtp import g711\n"
            "assert g711.IMPLEMENTATION == 'numpy', g711.IMPLEMENTATION\n"
            "assert g711.ulaw_decode is g711.NUMPY_FUNCTIONS['ulaw_decode']\n"
            "assert g711.decode(8, b'\\xd5').tolist() == [8]\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
