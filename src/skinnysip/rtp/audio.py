"""Audio sources and sinks for a media stream: int16 numpy PCM, mono, 8000 samples per second.

Sources have ``read(n) -> int16 array of n samples`` and never block:

* :class:`ToneSource` (from :mod:`skinnysip.rtp.tones`) — one or more summed sines,
* :class:`SilenceSource` — zeros,
* :class:`SamplesSource` — int16 samples held in memory, looped or played once,
* :class:`WavSource` — a WAV file (stdlib :mod:`wave`; 8/16/24/32-bit PCM, any rate, any number
  of channels) mixed to mono and resampled to 8000 Hz with ``soxr``, looped or played once,
* :class:`EchoSource` — plays back what a stream wrote into it (a bounded FIFO).

Sinks: :class:`WavRecorder` writes 16-bit mono WAV, bounded in duration.
:func:`dominant_frequencies` gives the strongest frequency of each 20 ms frame (numpy FFT), which
is how tests prove that audio went through ("listening", not counting packets).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import wave
from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from skinnysip.rtp.tones import ToneSource

log = logging.getLogger(__name__)

__all__ = ["RATE", "AudioSource", "ToneSource", "SilenceSource", "SamplesSource", "WavSource", "EchoSource",
           "WavRecorder",
           "dominant_frequencies", "mix", "MAX_WAV_SECONDS", "MAX_RECORD_SECONDS"]

#: the sample rate of every source and of G.711 (RFC 3551 §4.5.14)
RATE = 8000
#: longest WAV file a :class:`WavSource` accepts (seconds of audio, at the file's own rate)
MAX_WAV_SECONDS = 3600.0
#: default cap on a :class:`WavRecorder` (seconds)
MAX_RECORD_SECONDS = 3600.0

Samples = npt.NDArray[np.int16]


class AudioSource(Protocol):
    """Anything with ``read(n)`` returning the next ``n`` int16 samples at 8000 Hz."""

    def read(self, n: int) -> Samples: ...


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError("n must be >= 0")


class SilenceSource:
    """Endless silence (zero samples)."""

    rate = RATE

    def read(self, n: int) -> Samples:
        _check_n(n)
        return np.zeros(n, dtype=np.int16)


def _pcm_to_float(raw: bytes, width: int, channels: int) -> npt.NDArray[np.float64]:
    """WAV PCM bytes (little-endian; 8-bit unsigned, 16/24/32-bit signed) -> float mono in -1..1."""
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value & 0x800000, value - (1 << 24), value)
        data = value.astype(np.float64) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise ValueError(f"unsupported sample width {width} bytes (8, 16, 24 or 32 bits)")
    usable = len(data) - len(data) % channels
    return data[:usable].reshape(-1, channels).mean(axis=1)


def _resample(signal: npt.NDArray[np.float64], rate: int, target: int = RATE) -> npt.NDArray[np.float64]:
    if rate == target or len(signal) == 0:
        return signal
    import soxr  # a compiled extension; imported where needed so the rest works without it

    return np.asarray(soxr.resample(signal, rate, target, quality="HQ"), dtype=np.float64)


def _to_int16(signal: npt.NDArray[np.float64]) -> Samples:
    return np.round(np.clip(signal, -1.0, 32767 / 32768) * 32768).astype(np.int16)


class SamplesSource:
    """Int16 samples held in memory (8000 Hz mono), looped or played once.

    ``samples``: the audio (any int16-compatible array, flattened). ``loop``: start again at
    the end (default) or yield silence after it. ``ValueError`` if there are no samples.
    """

    rate = RATE

    def __init__(self, samples: npt.ArrayLike, loop: bool = True):
        self.samples: Samples = np.asarray(samples, dtype=np.int16).reshape(-1).copy()
        if len(self.samples) == 0:
            raise ValueError("a samples source needs at least one sample")
        self.loop = loop
        self.position = 0

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.samples) / RATE

    @property
    def finished(self) -> bool:
        """True once a non-looping source has been read to its end."""
        return not self.loop and self.position >= len(self.samples)

    def read(self, n: int) -> Samples:
        """The next ``n`` samples (looping, or zero-padded after the end when ``loop`` is False)."""
        _check_n(n)
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        total = len(self.samples)
        while filled < n:
            if self.position >= total:
                if not self.loop:
                    break
                self.position = 0
            take = min(n - filled, total - self.position)
            out[filled:filled + take] = self.samples[self.position:self.position + take]
            filled += take
            self.position += take
        return out


class WavSource(SamplesSource):
    """A WAV file as 8000 Hz mono int16 audio (a :class:`SamplesSource` of its contents).

    ``path``: a PCM WAV file (format 1) with 8, 16, 24 or 32-bit samples, any rate and channel
    count; channels are averaged to mono and the audio is resampled to 8000 Hz with ``soxr``.
    ``loop``: start again at the end (default) or yield silence after it.

    The whole file is decoded at construction (at most :data:`MAX_WAV_SECONDS`).  Raises
    ``ValueError`` with the reason if the file is missing, unreadable, not a PCM WAV file, empty,
    or too long.
    """

    def __init__(self, path: str | Path, loop: bool = True):
        self.path = Path(path)
        try:
            with wave.open(str(self.path), "rb") as wav:
                channels, width, rate, count = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(),
                                                wav.getnframes())
                if channels < 1 or rate < 1:
                    raise ValueError(f"{self.path}: invalid WAV header ({channels} channels, {rate} Hz)")
                if count > MAX_WAV_SECONDS * rate:
                    raise ValueError(f"{self.path}: {count / rate:.0f} s of audio is longer than the "
                                     f"{MAX_WAV_SECONDS:.0f} s limit")
                raw = wav.readframes(count)
        except FileNotFoundError:
            raise ValueError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{self.path}: is a directory, not a WAV file") from None
        except PermissionError:
            raise ValueError(f"{self.path}: permission denied") from None
        except (wave.Error, EOFError, struct.error) as exc:
            raise ValueError(f"{self.path}: not a readable PCM WAV file ({exc or 'truncated'})") from None
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        mono = _pcm_to_float(raw, width, channels)
        if len(mono) == 0:
            raise ValueError(f"{self.path}: the WAV file holds no audio")
        self.source_rate = rate
        self.source_channels = channels
        self.source_width = width
        samples = _to_int16(_resample(mono, rate))
        if len(samples) == 0:
            raise ValueError(f"{self.path}: the WAV file is too short to give one sample at {RATE} Hz")
        super().__init__(samples, loop)


class EchoSource:
    """Plays back what was :meth:`write` n into it, in order; silence when it runs dry.

    A FIFO bounded to ``max_seconds`` (the oldest audio is dropped beyond that, counted in
    ``dropped`` samples) so a sender slower than the writer never grows memory.
    """

    rate = RATE

    def __init__(self, max_seconds: float = 1.0):
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.max_samples = int(max_seconds * RATE)
        self._chunks: deque[Samples] = deque()
        self._buffered = 0
        self.dropped = 0

    @property
    def buffered(self) -> int:
        """Samples waiting to be read."""
        return self._buffered

    def write(self, samples: npt.ArrayLike) -> None:
        """Queue ``samples`` (int16) for playback."""
        chunk = np.asarray(samples, dtype=np.int16).reshape(-1).copy()
        if not len(chunk):
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        while self._buffered > self.max_samples:
            excess = self._buffered - self.max_samples
            first = self._chunks[0]
            if len(first) <= excess:
                self._chunks.popleft()
                self._buffered -= len(first)
                self.dropped += len(first)
            else:
                self._chunks[0] = first[excess:]
                self._buffered -= excess
                self.dropped += excess

    def read(self, n: int) -> Samples:
        """The oldest ``n`` queued samples, zero-padded if fewer are queued."""
        _check_n(n)
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._chunks:
            first = self._chunks[0]
            take = min(n - filled, len(first))
            out[filled:filled + take] = first[:take]
            filled += take
            if take == len(first):
                self._chunks.popleft()
            else:
                self._chunks[0] = first[take:]
            self._buffered -= take
        return out


class WavRecorder:
    """Writes int16 mono samples to a 16-bit PCM WAV file at ``rate`` Hz.

    At most ``max_seconds`` of audio are written; the rest is counted in ``truncated`` samples.
    ``OSError`` if the file cannot be created.  A write that fails later (disk full) stops the
    recording, not its caller: :attr:`error` says why in one line, the samples from then on
    are counted in ``truncated``, and what was written stays (its WAV header may then
    understate it).  Use :meth:`close` (or ``with``) to finish the file; closing twice is
    harmless.
    """

    def __init__(self, path: str | Path, rate: int = RATE, max_seconds: float = MAX_RECORD_SECONDS):
        if rate <= 0 or max_seconds <= 0:
            raise ValueError("rate and max_seconds must be positive")
        self.path = Path(path)
        self.rate = rate
        self.max_samples = int(max_seconds * rate)
        self.samples_written = 0
        self.truncated = 0
        self.error: str | None = None
        self._wav: wave.Wave_write | None = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)

    @property
    def duration(self) -> float:
        """Seconds written so far."""
        return self.samples_written / self.rate

    @property
    def closed(self) -> bool:
        return self._wav is None

    def write(self, samples: npt.ArrayLike) -> None:
        """Append ``samples`` (int16; other integer arrays must fit int16).  Ignored after close."""
        arr = np.asarray(samples).reshape(-1)
        if arr.dtype != np.int16:
            if arr.size and (arr.min() < -32768 or arr.max() > 32767):
                raise ValueError("samples must be 16-bit (-32768..32767)")
            arr = arr.astype(np.int16)
        if self._wav is None:
            if self.error is not None:
                self.truncated += len(arr)
            return
        room = self.max_samples - self.samples_written
        if len(arr) > room:
            self.truncated += len(arr) - max(room, 0)
            arr = arr[:max(room, 0)]
        if len(arr):
            try:
                self._wav.writeframes(arr.astype("<i2").tobytes())
            except OSError as exc:
                self.truncated += len(arr)
                self._failed(exc)
                return
            self.samples_written += len(arr)

    def _failed(self, exc: OSError) -> None:
        self.error = f"recording {str(self.path)!r} stopped: {exc.strerror or exc}"
        log.warning("%s", self.error)
        wav, self._wav = self._wav, None
        if wav is not None:
            with contextlib.suppress(OSError):
                wav.close()  # the file is closed even when the header cannot be patched

    def close(self) -> None:
        """Finish the WAV header and close the file (a failure sets :attr:`error`)."""
        if self._wav is not None:
            try:
                self._wav.close()
            except OSError as exc:
                self._failed(exc)
            self._wav = None

    def __enter__(self) -> WavRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mix(a: npt.ArrayLike, b: npt.ArrayLike) -> Samples:
    """Sum of two int16 signals, clipped to int16; the shorter one is zero-padded."""
    x = np.asarray(a, dtype=np.int32).reshape(-1)
    y = np.asarray(b, dtype=np.int32).reshape(-1)
    if len(x) < len(y):
        x, y = y, x
    out = x.copy()
    out[:len(y)] += y
    return np.clip(out, -32768, 32767).astype(np.int16)


def dominant_frequencies(samples: npt.ArrayLike, rate: int = RATE, frame: float = 0.02,
                         silence_rms: float = 30.0) -> npt.NDArray[np.float64]:
    """The strongest frequency (Hz) of each whole ``frame``-second frame of ``samples``.

    Each frame is Hann-windowed and zero-padded to at least 2048 points before the FFT, so a
    20 ms frame at 8000 Hz resolves to about 4 Hz instead of 50 Hz; DC is ignored.  A frame whose
    RMS is below ``silence_rms`` (int16 units) gives 0.0.  Returns one float per frame (a partial
    last frame is dropped).  ``ValueError`` for a non-positive rate or a frame under 2 samples.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    size = int(round(frame * rate))
    if size < 2:
        raise ValueError(f"a frame of {frame} s at {rate} Hz is shorter than 2 samples")
    arr = np.asarray(samples, dtype=np.float64).reshape(-1)
    count = len(arr) // size
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    frames = arr[:count * size].reshape(count, size)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    nfft = max(2048, 1 << (4 * size - 1).bit_length())
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(size), n=nfft, axis=1))
    spectrum[:, 0] = 0.0
    peaks = np.argmax(spectrum, axis=1).astype(np.float64) * rate / nfft
    return np.where(rms < silence_rms, 0.0, peaks)


def source_from_spec(spec: str) -> AudioSource | None:
    """The source an account names: ``"tone:<Hz>"`` (:class:`ToneSource`), ``"silence"`` or
    ``""`` (:class:`SilenceSource`), ``"echo"`` (None: the media stream echoes what it hears,
    decoded and encoded again), ``"rtp-echo"`` (None: the media stream sends each received
    audio payload back at once, byte for byte, as SIPp's ``-rtp_echo``) or a WAV file path
    (:class:`WavSource`, looped). ``ValueError`` saying what is wrong for a frequency that is
    not a number of Hz above 0 and below the 4000 Hz Nyquist limit of 8 kHz audio, or a WAV
    file that cannot be read."""
    if spec in ("echo", "rtp-echo"):
        return None
    if spec.startswith("tone:"):
        text = spec.split(":", 1)[1]
        try:
            hz = float(text)
        except ValueError:
            raise ValueError(f"{spec!r}: tone:<Hz> needs a frequency in Hz, e.g. tone:440") from None
        if not 0 < hz < RATE / 2:
            raise ValueError(f"{spec!r}: the frequency must be above 0 and below {RATE // 2} Hz")
        return ToneSource(hz)
    if spec in ("silence", ""):
        return SilenceSource()
    return WavSource(spec, loop=True)
