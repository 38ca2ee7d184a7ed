"""Test audio: sine tones, dual tones (DTMF, ITU-T Q.23), silence, and a phase-continuous source.

All functions return ``int16`` numpy arrays of linear PCM at ``rate`` samples per second;
``duration_s`` is in seconds, ``amplitude`` a fraction of full scale (0..1).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["sine", "dual_tone", "silence", "dtmf", "ToneSource", "DTMF_FREQUENCIES", "frames"]

#: ITU-T Q.23 keypad frequencies (low, high) in Hz.
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


def _count(duration_s: float, rate: int) -> int:
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration_s}")
    return int(round(duration_s * rate))


def _to_int16(signal: npt.NDArray[np.float64], amplitude: float) -> npt.NDArray[np.int16]:
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude}")
    return np.round(np.clip(signal * amplitude, -1.0, 1.0) * 32767).astype(np.int16)


def sine(freq_hz: float, duration_s: float, rate: int = 8000, amplitude: float = 0.5,
         phase: float = 0.0) -> npt.NDArray[np.int16]:
    """A sine of ``freq_hz`` for ``duration_s`` seconds, starting at ``phase`` radians."""
    n = np.arange(_count(duration_s, rate), dtype=np.float64)
    return _to_int16(np.sin(2 * np.pi * freq_hz * n / rate + phase), amplitude)


def dual_tone(f1_hz: float, f2_hz: float, duration_s: float, rate: int = 8000,
              amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    """Sum of two equal sines, scaled so the peak is ``amplitude``."""
    n = np.arange(_count(duration_s, rate), dtype=np.float64)
    signal = 0.5 * (np.sin(2 * np.pi * f1_hz * n / rate) + np.sin(2 * np.pi * f2_hz * n / rate))
    return _to_int16(signal, amplitude)


def dtmf(key: str, duration_s: float = 0.1, rate: int = 8000, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    """The DTMF tone of one keypad key (``0-9 * # A-D``).  ``ValueError`` for other keys."""
    try:
        low, high = DTMF_FREQUENCIES[key.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {key!r}") from None
    return dual_tone(low, high, duration_s, rate, amplitude)


def silence(duration_s: float, rate: int = 8000) -> npt.NDArray[np.int16]:
    """``duration_s`` seconds of zero samples."""
    return np.zeros(_count(duration_s, rate), dtype=np.int16)


def frames(samples: npt.ArrayLike, samples_per_frame: int) -> list[npt.NDArray[np.int16]]:
    """Split PCM into frames of ``samples_per_frame`` (e.g. 160 = 20 ms at 8 kHz); the last
    frame is zero-padded to full size."""
    if samples_per_frame <= 0:
        raise ValueError("samples_per_frame must be positive")
    arr = np.asarray(samples, dtype=np.int16).reshape(-1)
    pad = -len(arr) % samples_per_frame
    if pad:
        arr = np.concatenate([arr, np.zeros(pad, dtype=np.int16)])
    return [arr[i:i + samples_per_frame] for i in range(0, len(arr), samples_per_frame)]


class ToneSource:
    """An endless tone (one or more summed sines) read frame by frame without phase jumps.

    ``read(n)`` returns the next ``n`` int16 samples.  With no frequencies it yields silence.
    When every frequency is a whole number of Hz the tone repeats every ``rate / gcd`` samples
    (at most one second): that period is computed once and ``read`` copies from it.
    """

    #: periods longer than this many samples are not tabled (a rate above 192 kHz)
    MAX_TABLE = 192_000

    def __init__(self, *freqs_hz: float, rate: int = 8000, amplitude: float = 0.5):
        if rate <= 0:
            raise ValueError("rate must be positive")
        if not 0 <= amplitude <= 1:
            raise ValueError("amplitude must be within 0..1")
        self.freqs = tuple(float(f) for f in freqs_hz)
        self.rate = rate
        self.amplitude = amplitude
        self._position = 0  # samples produced so far (modulo the period, when tabled)
        self._table: npt.NDArray[np.int16] | None = None
        if self.freqs and all(f.is_integer() for f in self.freqs):
            period = rate // math.gcd(rate, *(int(abs(f)) for f in self.freqs))
            if period <= self.MAX_TABLE:
                self._table = self._compute(0, period)

    def _compute(self, start: int, n: int) -> npt.NDArray[np.int16]:
        idx = np.arange(start, start + n, dtype=np.float64)
        signal = sum(np.sin(2 * np.pi * f * idx / self.rate) for f in self.freqs) / len(self.freqs)
        return _to_int16(np.asarray(signal, dtype=np.float64), self.amplitude)

    def read(self, n: int) -> npt.NDArray[np.int16]:
        """The next ``n`` samples."""
        if n < 0:
            raise ValueError("n must be >= 0")
        start = self._position
        self._position += n
        if not self.freqs:
            return np.zeros(n, dtype=np.int16)
        table = self._table
        if table is None:
            return self._compute(start, n)
        period = table.size
        first = start % period
        self._position %= period
        if first + n <= period:
            return table[first:first + n].copy()
        return table[(first + np.arange(n)) % period]
