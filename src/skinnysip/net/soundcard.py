"""The sound card as a call's microphone and speaker, through PortAudio.

Optional: ``pip install 'skinnysip[soundcard]'`` (the ``sounddevice`` binding) and the
system's PortAudio library (Debian ``libportaudio2``).  Nothing here is imported unless a
sound card is asked for.

:class:`SoundCard` opens one full-duplex (or input-only / output-only) PortAudio stream of
16-bit mono audio.  The stream's callback runs on PortAudio's own thread; it exchanges
fixed-size blocks with the call through two bounded queues (``collections.deque`` with a
``maxlen``: appends and pops are atomic, so no lock is needed):

* microphone → :meth:`SoundCard.read` (an :class:`~skinnysip.rtp.audio.AudioSource`): the
  media stream pulls one frame per ptime; when the card delivers faster than the call
  consumes (or the call stalls), the oldest blocks are dropped and counted
  (``input_dropped``); when nothing is queued, silence is returned (``input_underruns``).
* :meth:`SoundCard.write` → speaker: decoded received audio; beyond ``max_seconds`` queued,
  the oldest is dropped (``output_dropped``); when the queue runs dry the card plays silence
  (``output_underruns``).

A device without a clock of its own (ALSA's ``null`` and ``file`` plugins, used to test this
without hardware) would run the callback as fast as the CPU allows; the callback therefore
sleeps whenever the stream is more than ``MAX_AHEAD`` seconds ahead of the monotonic clock,
which a real card (paced by its hardware) never is.

Audio inside a call is 8000 Hz (``skinnysip.rtp.audio.RATE``).  If the device will not open
at 8000 Hz, it is opened at its default rate and converted with ``soxr``'s streaming
resampler both ways.  Errors opening the device raise :class:`SoundCardError` with
PortAudio's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from skinnysip.rtp.audio import RATE

if TYPE_CHECKING:
    from skinnysip.net.media import MediaStream

__all__ = ["SoundCard", "SoundCardError", "attach", "list_devices"]

Samples = npt.NDArray[np.int16]
#: how far (seconds) a stream may run ahead of the monotonic clock before its callback sleeps
MAX_AHEAD = 0.1


class SoundCardError(OSError):
    """The sound card cannot be used: the extra is not installed, no such device, or
    PortAudio refused to open the stream (the message says which)."""


def _sounddevice() -> Any:
    try:
        import sounddevice  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:  # the extra is missing
        raise SoundCardError("the sound card needs the 'soundcard' extra: pip install 'skinnysip[soundcard]'") from exc
    except OSError as exc:  # the binding is there, libportaudio is not
        raise SoundCardError(f"PortAudio is not available ({exc}); on Debian: apt-get install libportaudio2") from exc
    return sounddevice


def list_devices() -> list[dict[str, Any]]:
    """The devices PortAudio sees: ``[{"index", "name", "inputs", "outputs",
    "defaultRate"}]`` (channel counts; rate in Hz). Raises :class:`SoundCardError`."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise SoundCardError(f"cannot list sound devices: {exc}") from exc
    return [{"index": i, "name": d["name"], "inputs": d["max_input_channels"],
             "outputs": d["max_output_channels"], "defaultRate": d["default_samplerate"]}
            for i, d in enumerate(devices)]


def check_device(spec: int | str | tuple[int | str, int | str] | None) -> None:
    """Whether PortAudio has the microphone and the speaker ``spec`` names (as
    :class:`SoundCard` and the CLI's ``--soundcard`` write it: None or ``"default"``, a name
    or part of one, an index, or ``"MIC,SPEAKER"``), before a call opens them. Raises
    :class:`SoundCardError` naming the device that is missing or ambiguous, or why PortAudio
    cannot be used."""
    sd = _sounddevice()
    device = _device(spec)
    mic, speaker = device if isinstance(device, tuple) else (device, device)
    for one, kind, what in ((mic, "input", "microphone"), (speaker, "output", "speaker")):
        try:
            sd.query_devices(one, kind)
        except (ValueError, sd.PortAudioError) as exc:
            name = f"default {what}" if one is None else f"{what} {one!r}"
            raise SoundCardError(f"no {name} (PortAudio: {exc})") from None


def _take(queue: deque[Samples], rest: Samples, n: int) -> tuple[Samples, Samples, int]:
    """``n`` samples from ``rest`` then the queue's blocks (one consumer only), zero-padded
    when short: (samples, the new rest, 1 if it was short else 0)."""
    parts = [rest] if len(rest) else []
    have = len(rest)
    while have < n and queue:
        chunk = queue.popleft()
        parts.append(chunk)
        have += len(chunk)
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    short = 0
    if have < n:
        short = 1
        joined = np.concatenate([joined, np.zeros(n - have, dtype=np.int16)])
    return joined[:n], joined[n:], short


class SoundCard:
    """A sound card opened for a call (16-bit mono, 8000 Hz seen from the call).

    ``device``: a PortAudio device index or (part of) its name, or a pair (microphone,
    speaker) of them; None for the default.
    ``microphone``/``speaker``: which directions to open. ``max_seconds``: the bound of
    each queue. ``block``: samples per PortAudio block at 8000 Hz (160 = 20 ms).
    Use as a context manager, or :meth:`start` / :meth:`close`. Counters: see the module
    docstring; :meth:`stats` returns them.
    """

    rate = RATE

    def __init__(self, device: int | str | tuple[int | str, int | str] | None = None, *, microphone: bool = True, speaker: bool = True,
                 max_seconds: float = 0.5, block: int = 160) -> None:
        if not (microphone or speaker):
            raise ValueError("a sound card needs a microphone or a speaker")
        if max_seconds <= 0 or block <= 0:
            raise ValueError("max_seconds and block must be positive")
        self.device = device
        self.microphone = microphone
        self.speaker = speaker
        self.block = block
        blocks = max(1, int(max_seconds * RATE / block))
        self._mic: deque[Samples] = deque(maxlen=blocks)
        self._out: deque[Samples] = deque(maxlen=blocks)
        self._mic_rest = np.zeros(0, dtype=np.int16)  # read side only
        self._out_rest = np.zeros(0, dtype=np.int16)  # callback side only
        self._stream: Any = None
        self._device_rate = RATE
        self._to_call: Any = None  # soxr streams when the device runs at another rate
        self._to_card: Any = None
        self.input_dropped = 0
        self.input_underruns = 0
        self.output_dropped = 0
        self.output_underruns = 0
        self.status_flags = 0
        self.task: asyncio.Task[None] | None = None  # the speaker copy of :func:`attach`
        self._clock_start: float | None = None
        self._frames_done = 0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> SoundCard:
        """Open and start the PortAudio stream. Raises :class:`SoundCardError`."""
        sd = _sounddevice()
        kind = sd.Stream if (self.microphone and self.speaker) else (sd.InputStream if self.microphone
                                                                       else sd.OutputStream)
        try:
            self._stream = self._open(sd, kind, RATE, self.block)
        except (sd.PortAudioError, ValueError) as first:
            try:  # the device's own rate, resampled here
                one = self.device[0 if self.microphone else 1] if isinstance(self.device, tuple) else self.device
                info = sd.query_devices(one, "input" if self.microphone else "output")
                rate = int(info["default_samplerate"])
                if rate == RATE:
                    raise first
                import soxr

                self._device_rate = rate
                self._to_call = soxr.ResampleStream(rate, RATE, 1, dtype="int16")
                self._to_card = soxr.ResampleStream(RATE, rate, 1, dtype="int16")
                self._stream = self._open(sd, kind, rate, max(1, self.block * rate // RATE))
            except (sd.PortAudioError, ValueError) as exc:
                raise SoundCardError(f"cannot open sound device {self.device!r}: {exc}") from exc
        try:
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise SoundCardError(f"cannot start sound device {self.device!r}: {exc}") from exc
        return self

    def _open(self, sd: Any, kind: Any, rate: int, block: int) -> Any:
        return kind(samplerate=rate, blocksize=block, device=self.device, channels=1, dtype="int16",
                    latency="low", callback=self._callback)

    def close(self) -> None:
        """Stop and close the stream (idempotent)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.stop()
            with contextlib.suppress(Exception):
                stream.close()

    def __enter__(self) -> SoundCard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- PortAudio's thread ----------------------------------------------------------------
    def _callback(self, *args: Any) -> None:
        """``(indata, outdata, frames, time, status)`` for a duplex stream; input-only
        streams omit ``outdata``, output-only ones ``indata``."""
        status = args[-1]
        if status:
            self.status_flags += 1
        frames = args[-3]
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        self._frames_done += frames
        ahead = self._frames_done / self._device_rate - (now - self._clock_start)
        if ahead > MAX_AHEAD:  # a device without a clock: pace it (see the module docstring)
            time.sleep(ahead - MAX_AHEAD / 2)
        if self.microphone:
            block = np.array(args[0][:, 0], dtype=np.int16)
            if self._to_call is not None:
                block = self._to_call.resample_chunk(block)
            if len(self._mic) == self._mic.maxlen:
                self.input_dropped += self.block
            self._mic.append(block)
        if self.speaker:
            outdata = args[1] if self.microphone else args[0]
            need = frames if self._to_card is None else max(1, frames * RATE // self._device_rate)
            pcm = self._take_output(need)
            if self._to_card is not None:
                pcm = self._to_card.resample_chunk(pcm)
            column = outdata[:, 0]
            column[:] = 0
            column[:min(len(pcm), frames)] = pcm[:frames]

    def _take_output(self, n: int) -> Samples:
        pcm, self._out_rest, short = _take(self._out, self._out_rest, n)
        self.output_underruns += short
        return pcm

    # -- the call's side -------------------------------------------------------------------
    def read(self, n: int) -> Samples:
        """The next ``n`` microphone samples (int16, 8000 Hz); silence where the card has
        delivered nothing yet. Never blocks (an :class:`~skinnysip.rtp.audio.AudioSource`)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        pcm, self._mic_rest, short = _take(self._mic, self._mic_rest, n)
        self.input_underruns += short
        return pcm

    def write(self, samples: npt.ArrayLike) -> None:
        """Queue received audio (int16, 8000 Hz) for the speaker; the oldest is dropped
        beyond the bound."""
        if not self.speaker:
            return
        chunk = np.array(samples, dtype=np.int16).reshape(-1)
        if not len(chunk):
            return
        if len(self._out) == self._out.maxlen:
            self.output_dropped += len(self._out[0])
        self._out.append(chunk)

    def stats(self) -> dict[str, Any]:
        """Counters (samples or events) and the device rate in Hz, camelCase as the API
        reports them."""
        return {"device": self.device, "deviceRate": self._device_rate, "inputDropped": self.input_dropped,
                "inputUnderruns": self.input_underruns, "outputDropped": self.output_dropped,
                "outputUnderruns": self.output_underruns, "statusFlags": self.status_flags}


def _device(spec: int | str | tuple[int | str, int | str] | None) -> int | str | tuple[int | str, int | str] | None:
    """A device as the CLI and accounts write it: None/""/"default" (the default card), a
    name, an index (digits), or "MIC,SPEAKER" (a pair of those)."""
    if not isinstance(spec, str):
        return spec
    if spec.strip() in ("", "default"):
        return None
    if "," in spec:
        mic, speaker = (part.strip() for part in spec.split(",", 1))
        return (int(mic) if mic.isascii() and mic.isdigit() else mic,
                int(speaker) if speaker.isascii() and speaker.isdigit() else speaker)
    return int(spec) if spec.isascii() and spec.isdigit() else spec


def attach(stream: MediaStream, device: int | str | tuple[int | str, int | str] | None = None) -> SoundCard:
    """Make the sound card ``device`` the microphone and speaker of ``stream``: the card
    becomes the stream's source, and a task copies every frame the stream plays out
    (:meth:`MediaStream.add_tap`) to the card until the stream closes, then closes the card.
    Call on the event loop. Raises :class:`SoundCardError` (an ``OSError``)."""
    card = SoundCard(_device(device)).start()
    try:
        tap = stream.add_tap(max_frames=25)
    except ValueError as exc:
        card.close()
        raise SoundCardError(f"cannot listen to the call: {exc}") from exc
    stream.source = card

    async def speaker() -> None:
        try:
            while not tap.closed:
                frame = await tap.get(1.0)
                if frame is not None:
                    card.write(frame)
        finally:
            card.close()

    card.task = asyncio.get_running_loop().create_task(speaker())
    return card
