"""A local conference: the calls of one :class:`~skinnysip.phone.sip_phone.SIPPhone` mixed so
that each party hears every other party plus our own audio (a three-way call when two calls
are added).

How it is wired: each added call's :class:`~skinnysip.net.media.MediaStream` gets

* a **tap** on what it plays out: the stream's ``echo`` hook, which ``MediaStream`` writes with
  every played-out frame (decoded, after the jitter buffer; silence for gaps), set to a
  :class:`_FanOut` that copies each frame into one bounded
  :class:`~skinnysip.rtp.audio.EchoSource` FIFO per *other* party (every reader gets every
  frame, however many parties there are);
* a new **source**: a :class:`MixingSource` summing the call's own source (what we sent
  before: the account's tone or WAV file; silence for an ``echo`` account) and the taps of the
  *other* calls of the conference, clipped to int16.

Each stream's media clock reads its source once per ptime and each other stream's clock
writes its tap once per ptime, on the same event loop clock, so the FIFOs stay within a frame
or two; a tap holds at most :data:`TAP_SECONDS` (older audio is dropped, bounding delay and
memory) and a reader waits until one frame is buffered before it starts taking from it, which
absorbs the two clocks' phase difference.  :meth:`Conference.remove` and
:meth:`Conference.close` restore each stream's own source.  Python units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from skinnysip.phone.api import CallState, PhoneError
from skinnysip.phone.sip_phone import SIPCall, SIPPhone
from skinnysip.rtp.audio import AudioSource, EchoSource, SilenceSource

__all__ = ["Conference", "MixingSource", "TAP_SECONDS", "MAX_PARTIES"]

#: audio a party's tap keeps at most (seconds); beyond it the oldest is dropped
TAP_SECONDS = 0.2
#: calls one conference mixes at most
MAX_PARTIES = 8

Samples = npt.NDArray[np.int16]


class _FanOut(EchoSource):
    """The tap a party's stream writes its played-out frames into (as its ``echo``): each
    frame is copied into one FIFO per reader (:meth:`reader`), bounded to :data:`TAP_SECONDS`.
    Read from those FIFOs, never from this object itself (it keeps nothing)."""

    def __init__(self) -> None:
        super().__init__(max_seconds=TAP_SECONDS)
        self.readers: dict[int, EchoSource] = {}

    def reader(self, key: int) -> EchoSource:
        """A new FIFO of this party's audio for the reader ``key`` (a call id)."""
        fifo = self.readers[key] = EchoSource(max_seconds=TAP_SECONDS)
        return fifo

    def write(self, samples: npt.ArrayLike) -> None:
        for fifo in self.readers.values():
            fifo.write(samples)


class _Tap:
    """A reader of one party's played-out audio: waits until ``n`` samples are buffered once,
    then takes them frame by frame (zero-padded if the writer falls behind)."""

    def __init__(self, fifo: EchoSource, writer: _FanOut | None = None) -> None:
        self.fifo = fifo
        self.writer = writer
        self.primed = False

    def read(self, n: int) -> Samples:
        if not self.primed:
            if self.fifo.buffered < n:
                return np.zeros(n, dtype=np.int16)
            self.primed = True
        return self.fifo.read(n)


class MixingSource:
    """An audio source (``read(n)`` int16 at 8000 Hz) that sums ``own`` and every source in
    ``others`` sample by sample, clipped to int16.  ``others`` may change between reads."""

    def __init__(self, own: AudioSource, others: list[AudioSource] | None = None) -> None:
        self.own = own
        self.others: list[AudioSource] = list(others or [])

    def read(self, n: int) -> Samples:
        if n < 0:
            raise ValueError("n must be >= 0")
        total = np.asarray(self.own.read(n), dtype=np.int32).reshape(-1)[:n]
        if len(total) < n:
            total = np.pad(total, (0, n - len(total)))
        for other in self.others:
            part = np.asarray(other.read(n), dtype=np.int32).reshape(-1)[:n]
            total[:len(part)] += part
        return np.clip(total, -32768, 32767).astype(np.int16)


@dataclass
class _Party:
    call: SIPCall
    own: AudioSource
    saved_source: AudioSource
    saved_echo: EchoSource | None
    fanout: _FanOut
    mixer: MixingSource


class Conference:
    """Mixes calls of ``phone`` so that each party hears the others and our own source.

    ``add(call)`` takes a confirmed call of this phone into the conference, ``remove(call)``
    gives it back its own audio, ``close()`` removes every call; the conference is also an
    async context manager.  Raises :class:`PhoneError` for a call of another phone, one
    without media, one not confirmed, one already in, or beyond :data:`MAX_PARTIES`.
    """

    def __init__(self, phone: SIPPhone) -> None:
        self.phone = phone
        self._parties: dict[int, _Party] = {}

    @property
    def calls(self) -> list[SIPCall]:
        """The calls in the conference, in the order they were added."""
        return [p.call for p in self._parties.values()]

    def add(self, call: SIPCall) -> None:
        """Take ``call`` in: its party now hears every other party plus our own source, and
        every other party hears it.  See the class for the errors."""
        if call.phone is not self.phone or call not in self.phone.calls:
            raise PhoneError(f"call {call.id} is not a live call of this phone")
        if call.id in self._parties:
            raise PhoneError(f"call {call.id} is already in the conference")
        if call.state is not CallState.CONFIRMED:
            raise PhoneError(f"call {call.id} is {call.state.value}, not confirmed")
        media = call.media
        if media is None:
            raise PhoneError(f"call {call.id} has no media stream")
        if len(self._parties) >= MAX_PARTIES:
            raise PhoneError(f"a conference mixes at most {MAX_PARTIES} calls")
        if media.echo_payload:
            raise PhoneError(f"call {call.id} echoes RTP payloads (source rtp-echo): it has no audio of its own to mix")
        # an "echo" account's source is the stream's own echo FIFO: our part is silence then
        own: AudioSource = SilenceSource() if media.echo is not None and media.source is media.echo \
            else media.source
        fanout = _FanOut()
        party = _Party(call, own, media.source, media.echo, fanout, MixingSource(own))
        for other in self._parties.values():
            other.mixer.others.append(_Tap(fanout.reader(other.call.id), fanout))
            party.mixer.others.append(_Tap(other.fanout.reader(call.id), other.fanout))
        self._parties[call.id] = party
        media.echo = fanout  # the tap: MediaStream writes each played-out frame into it
        media.source = party.mixer

    def remove(self, call: SIPCall) -> None:
        """Give ``call`` its own source back and stop mixing it into the others' audio.
        :class:`PhoneError` if it is not in the conference."""
        party = self._parties.pop(call.id, None)
        if party is None:
            raise PhoneError(f"call {call.id} is not in the conference")
        for other in self._parties.values():
            other.mixer.others = [t for t in other.mixer.others
                                  if not (isinstance(t, _Tap) and t.writer is party.fanout)]
            other.fanout.readers.pop(call.id, None)
        media = call.media
        if media is not None:
            media.source = party.saved_source
            media.echo = party.saved_echo

    def close(self) -> None:
        """Remove every call (each gets its own audio back)."""
        for party in list(self._parties.values()):
            self.remove(party.call)

    async def __aenter__(self) -> Conference:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
