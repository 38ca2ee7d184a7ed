"""The lab's services: extensions a phone calls to test audio, on the one SIP core.

:class:`LabServices` is one SIP UAS (a :class:`~skinnysip.phone.sip_phone.SIPPhone` that does
not register, listening on UDP) whose calls are answered by extension, the user part of the
Request-URI (RFC 3261 §8.2.2.1 leaves routing by Request-URI to the UAS):

* ``echo``: each received audio payload is sent back at once, byte for byte, with our own SSRC
  and sequence numbers and the sender's timestamps moved by a fixed offset (payload reflection,
  what SIPp's ``-rtp_echo`` does); RFC 4733 event packets are reflected the same way, so the
  caller's digits come back too. The caller hears itself with its own jitter buffer's delay and
  nothing re-encoded.
* ``tone``: the 1004 Hz test tone at 0 dBm0 — the G.711 digital milliwatt's level (ITU-T G.711
  Tables 5/6: the sequence ``1E 0B 0B 1E 9E 8B 8B 9E`` decodes to ±8828/±20860, a sine of peak
  ≈ 22 700 in 16-bit linear, :data:`MILLIWATT_PEAK`), at 1004 Hz rather than 1000 Hz so that a
  period does not divide 8000 Hz and every code is exercised (ITU-T O.6 test frequency).
* ``playback``: the bundled prompt (``lab/prompts/welcome.wav``, espeak-ng; see the README
  there) played :data:`PLAYBACK_REPEATS` times with a pause between, then the service hangs up
  (BYE).
* ``conference``: everyone who calls the extension hears the mix of all the others (one mix
  per participant, per 20 ms frame; at most :data:`~skinnysip.phone.conference.MAX_PARTIES`;
  the next caller gets 486): the phone layer's :class:`~skinnysip.phone.conference.Conference`.
* ``voicemail``: the caller (its From user, which the lab proxy authenticated) hears its new
  messages, each after a beep (:data:`VOICEMAIL_BEEP`), oldest first; they are then heard
  (the lab's message-summary NOTIFYs say so); with none, two low beeps. Then the service hangs
  up. A call to ``*<user>`` (the proxy routes it here when a voicemail extension exists)
  leaves a message for that user: a beep, then what the caller says until it hangs up, at
  most :data:`~skinnysip.lab.voicemail.MAX_MESSAGE_SECONDS`
  (:class:`~skinnysip.lab.voicemail.Mailboxes`).
* ``dtmf-echo``: the digits received (RFC 4733 events, SIP INFO ``application/dtmf-relay`` or
  in-band) are read back after :data:`DTMF_ECHO_PAUSE` seconds without a new one — as RFC 4733
  events when telephone-event was negotiated (RFC 4733 §2), else as in-band DTMF tones in the
  audio, so the caller's phone detects them either way.

A number that is no extension gets 404. Music on hold (:meth:`LabServices.moh_start`) streams
:func:`moh_melody` (a short looping phrase of notes, recognisable, not one sine) from its own
RTP stream to a held party's RTP address until :meth:`LabServices.moh_stop`, at most
:data:`MOH_MAX_SECONDS`.

Every call keeps its signalling on record: :meth:`LabServices.calls` gives the live calls and
the last :data:`MAX_KEPT_CALLS` finished ones, each with at most :data:`MAX_CALL_MESSAGES`
wire messages. Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from skinnysip.lab.tasks import TaskOwner
from skinnysip.lab.voicemail import MAX_MESSAGE_SECONDS, Mailboxes
from skinnysip.net.media import MediaConfig, MediaStream
from skinnysip.net.sip_endpoint import SIPTransportError
from skinnysip.phone.api import CallState, CallStateChanged, DTMFReceived, IncomingCall, PhoneError
from skinnysip.phone.conference import MAX_PARTIES, Conference
from skinnysip.phone.sip_phone import SIPAccount, SIPCall, SIPPhone
from skinnysip.rtp import tones
from skinnysip.rtp.audio import SamplesSource, ToneSource, WavSource
from skinnysip.sip.message import SIPParseError
from skinnysip.sip.uri import SipURI, user_of

__all__ = ["SERVICE_KINDS", "LabServices", "moh_melody", "milliwatt_source", "prompt_samples",
           "MILLIWATT_HZ", "MILLIWATT_PEAK", "MOH_MAX_SECONDS", "MAX_KEPT_CALLS"]

log = logging.getLogger(__name__)

#: the services an extension can be
SERVICE_KINDS = ("echo", "tone", "playback", "conference", "dtmf-echo", "voicemail")
#: the test tone's frequency (Hz, ITU-T O.6)
MILLIWATT_HZ = 1004.0
#: the peak of a 0 dBm0 sine in 16-bit linear PCM (the G.711 digital milliwatt's amplitude)
MILLIWATT_PEAK = 22_700
#: how often the prompt is played before the playback service hangs up
PLAYBACK_REPEATS = 2
#: silence between two plays of the prompt, and after the last (seconds)
PLAYBACK_PAUSE = 1.0
#: quiet time after the last received digit before the DTMF echo reads the digits back (s)
DTMF_ECHO_PAUSE = 1.5
#: digits the DTMF echo reads back at most per turn
DTMF_ECHO_MAX = 32
#: length of each read-back digit and the gap after it (seconds)
DTMF_TONE_SECONDS = 0.12
DTMF_GAP_SECONDS = 0.1
#: longest music on hold stream (seconds), and how many may run at once
MOH_MAX_SECONDS = 1800.0
MAX_MOH_STREAMS = 32
#: finished calls kept for :meth:`LabServices.calls`, and wire messages kept per call
MAX_KEPT_CALLS = 200
MAX_CALL_MESSAGES = 500
#: longest a service call may last (seconds): then the service hangs up
MAX_SERVICE_CALL_SECONDS = 3600.0

#: voicemail: the beep before a message is recorded, and before each one played (Hz, s)
VOICEMAIL_BEEP = (1400.0, 0.25)
#: voicemail: two low beeps when there is no new message (Hz, s)
VOICEMAIL_EMPTY = (425.0, 0.2)
#: voicemail: a deposit shorter than this (s) is no message
MIN_MESSAGE_SECONDS = 0.2

#: the melody of the music on hold: (Hz, seconds) — C E G E C G(low) F A, a short tune
MOH_NOTES: tuple[tuple[float, float], ...] = (
    (523.25, 0.3), (659.25, 0.3), (783.99, 0.3), (659.25, 0.3),
    (523.25, 0.3), (392.00, 0.3), (698.46, 0.3), (880.00, 0.6),
)


def _beeps(freq: float, seconds: float, count: int) -> npt.NDArray[np.int16]:
    """``count`` beeps of ``freq`` Hz and ``seconds`` each, with as long a pause after each."""
    beep = tones.sine(freq, seconds, amplitude=0.4).astype(np.int16)
    pause = np.zeros(len(beep), dtype=np.int16)
    return np.concatenate([part for _ in range(count) for part in (beep, pause)])


def _caller(call: SIPCall) -> str:
    """The user part of the call's From (the lab proxy authenticated it), else ""."""
    return (user_of(call.invite.headers.get("From")) if call.invite is not None else None) or ""


def milliwatt_source() -> ToneSource:
    """An endless 1004 Hz sine at 0 dBm0 (peak :data:`MILLIWATT_PEAK`), 8000 Hz int16."""
    return ToneSource(MILLIWATT_HZ, amplitude=MILLIWATT_PEAK / 32767)


def moh_melody() -> npt.NDArray[np.int16]:
    """One period of the music on hold, 8000 Hz int16: :data:`MOH_NOTES` in sequence, each
    note faded in and out over 10 ms so that note changes do not click."""
    parts = []
    for freq, seconds in MOH_NOTES:
        note = tones.sine(freq, seconds, amplitude=0.4).astype(np.float64)
        ramp = min(80, len(note) // 2)
        envelope = np.ones(len(note))
        envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
        envelope[-ramp:] = np.linspace(1.0, 0.0, ramp)
        parts.append((note * envelope).astype(np.int16))
    return np.concatenate(parts)


def prompt_samples() -> npt.NDArray[np.int16]:
    """The bundled prompt (``lab/prompts/welcome.wav``) as 8000 Hz int16 samples."""
    wav = resources.files("skinnysip.lab").joinpath("prompts/welcome.wav")
    with resources.as_file(wav) as path:
        return WavSource(path, loop=False).samples


class _Record:
    """What :meth:`LabServices.calls` reports about one call."""

    def __init__(self, call: SIPCall, number: str, service: str) -> None:
        self.call = call
        self.number = number
        self.service = service
        self.messages: list[dict[str, Any]] | None = None  # frozen when the call ends
        self.digits = ""  # DTMF echo: digits waiting to be read back
        self.digit_task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        call = self.call
        messages = self.messages
        if messages is None:
            messages = [m.to_api() for m in call.exchange[:MAX_CALL_MESSAGES]]
        invite = call.invite
        return {"callId": call.call_id, "from": call.remote,
                "to": invite.uri if invite is not None else "", "service": self.service,
                "number": self.number, "state": call.state.value, "reason": call.end_reason,
                "messages": messages}


class LabServices(TaskOwner):
    """The lab's service extensions on one SIP UAS (see the module docstring).

    ``domain``: the lab's SIP domain (our From/To use it). ``extensions``: number → kind, each
    kind one of :data:`SERVICE_KINDS` (``ValueError`` otherwise). ``host``: the IP literal to
    listen on (UDP, a free port) and to open media on. ``record_dir``: WAV recordings of every
    service call (None: none). ``prompt``: int16 8000 Hz samples played by ``playback``
    (default: the bundled prompt). ``mailboxes``: the voicemail boxes the ``voicemail`` kind
    plays and ``*<user>`` fills (None: a voicemail extension answers 480).
    """

    def __init__(self, *, domain: str, extensions: dict[str, str], host: str = "127.0.0.1",
                 record_dir: str | None = None, prompt: npt.ArrayLike | None = None,
                 mailboxes: Mailboxes | None = None) -> None:
        for number, kind in extensions.items():
            if kind not in SERVICE_KINDS:
                raise ValueError(f"extensions.{number}: unknown service {kind!r} (use one of {', '.join(SERVICE_KINDS)})")
        self.domain = domain
        self.extensions = dict(extensions)
        self.host = host
        self.mailboxes = mailboxes
        #: where calls to a mailbox may come from (the lab proxy's UDP listeners, which
        #: authenticated the From the service trusts); None: anywhere (the services alone)
        self.proxy_addresses: set[tuple[str, int]] | None = None
        # latching: a phone behind a NAT that gives its private address in SDP still hears us;
        # SRTP optional: an SRTP caller (RTP/SAVP, or RTP/AVP with a=crypto) is keyed with any
        # suite we know (AES-CM, AES-GCM), a plain one gets plain RTP
        self.phone = SIPPhone(SIPAccount(aor=f"sip:services@{domain}", register=False, source="silence",
                                         record_dir=record_dir, display_name="skinnysip lab services",
                                         latch_media=True, srtp="optional", ice=True))
        self.address: tuple[str, int] | None = None
        self._prompt = np.asarray(prompt, dtype=np.int16) if prompt is not None else None
        self._records: dict[int, _Record] = {}  # live calls by call.id
        self._finished: deque[_Record] = deque(maxlen=MAX_KEPT_CALLS)
        self._rooms: dict[str, Conference] = {}
        self._moh: dict[str, asyncio.Task[None]] = {}
        self._moh_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Listen (UDP on ``host``, a free port) and serve; returns the (IP, port) of the UAS.
        ``OSError`` (a :class:`~skinnysip.net.sip_endpoint.SIPTransportError` reason) when the
        socket cannot be bound."""
        await self.phone.start()
        try:
            self.address = await self.phone.endpoint.listen("udp", self.host, 0)
        except SIPTransportError as exc:
            await self.phone.close()
            raise OSError(exc.reason) from exc
        self._events_task = asyncio.get_running_loop().create_task(self._serve_events(), name="lab-services")
        return self.address

    async def close(self) -> None:
        """Hang up every call, stop every music on hold stream, close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for key in list(self._moh):
            self.moh_stop(key)
        for room in self._rooms.values():
            room.close()
        tasks = [t for t in (self._events_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.phone.close()
        for record in list(self._records.values()):
            self._finish(record)

    # -- record ----------------------------------------------------------------------------
    def calls(self) -> list[dict[str, Any]]:
        """Every live call and the last :data:`MAX_KEPT_CALLS` finished ones, oldest first:
        ``{"callId", "from", "to", "service", "number", "state", "reason", "messages":
        [WireMessage.to_api()…]}`` (camelCase, as the HTTP API sends it)."""
        return [r.as_dict() for r in (*self._finished, *self._records.values())]

    def _finish(self, record: _Record) -> None:
        if self._records.pop(record.call.id, None) is None:
            return
        record.messages = [m.to_api() for m in record.call.exchange[:MAX_CALL_MESSAGES]]
        if record.digit_task is not None:
            record.digit_task.cancel()
        room = self._rooms.get(record.number)
        if room is not None and record.call in room.calls:
            with contextlib.suppress(PhoneError):
                room.remove(record.call)
        self._finished.append(record)

    # -- calls -----------------------------------------------------------------------------
    async def _serve_events(self) -> None:
        while not self._closed:
            event = await self.phone.next_event(1.0)
            if isinstance(event, IncomingCall) and isinstance(event.call, SIPCall):
                self._spawn(self._serve(event.call))
            elif isinstance(event, DTMFReceived):
                record = self._records.get(event.call.id)
                if record is not None and record.service == "dtmf-echo":
                    self._digit(record, event.digit)
            elif isinstance(event, CallStateChanged) and event.state is CallState.TERMINATED:
                record = self._records.get(event.call.id)
                if record is not None:
                    self._finish(record)

    @staticmethod
    def _number(call: SIPCall) -> str:
        """The extension a call asks for: the Request-URI's user part."""
        if call.invite is None:
            return ""
        try:
            return SipURI.parse(call.invite.uri).user or ""
        except SIPParseError:
            return ""

    async def _serve(self, call: SIPCall) -> None:
        number = self._number(call)
        service = self.extensions.get(number)
        if service is None and number.startswith("*") and "voicemail" in self.extensions.values():
            service = "voicemail"  # *<user>: a message for that user
        if service is None or (service == "voicemail" and not self._voicemail_ok(call, number)):
            with contextlib.suppress(PhoneError):
                await call.reject(480 if service == "voicemail" and self.mailboxes is None else 404)
            return
        record = self._records[call.id] = _Record(call, number, service)
        room = self._rooms.setdefault(number, Conference(self.phone)) if service == "conference" else None
        if room is not None and len(room.calls) >= MAX_PARTIES:
            with contextlib.suppress(PhoneError):
                await call.reject(486)
            self._finish(record)
            return
        try:
            await call.answer()
        except PhoneError:
            self._finish(record)
            return
        media = call.media
        if media is None or call.state is CallState.TERMINATED:
            return
        # the 200 has just gone out and no media frame yet (no await since): the service's
        # audio replaces the silence the phone would send
        if service == "echo":
            media.echo_payload = True
        elif service == "tone":
            media.source = milliwatt_source()
        elif service == "playback":
            media.source = self._playback_source()
        elif service == "voicemail":
            if number.startswith("*"):
                media.source = SamplesSource(_beeps(*VOICEMAIL_BEEP, 1), loop=False)
            else:
                media.source = self._messages_source(_caller(call))
        if not await call.wait_connected(32.0):  # the ACK (RFC 3261 §13.3.1.4: 64*T1)
            return
        if service == "voicemail":
            await self._voicemail(call, number, media)
            return
        if room is not None:
            try:
                room.add(call)
            except PhoneError as exc:
                log.info("lab conference %s: %s", number, exc.reason)
                await self._hang_up(call)
                return
        limit = (self._playback_seconds() if service == "playback" else MAX_SERVICE_CALL_SECONDS)
        if not await call.wait_ended(limit):
            await self._hang_up(call)

    async def _hang_up(self, call: SIPCall) -> None:
        with contextlib.suppress(PhoneError, SIPTransportError):
            await call.hangup()

    def _prompt_audio(self) -> npt.NDArray[np.int16]:
        if self._prompt is None:
            self._prompt = prompt_samples()
        return self._prompt

    def _playback_source(self) -> SamplesSource:
        pause = np.zeros(int(PLAYBACK_PAUSE * 8000), dtype=np.int16)
        prompt = self._prompt_audio()
        return SamplesSource(np.concatenate([part for _ in range(PLAYBACK_REPEATS) for part in (prompt, pause)]),
                             loop=False)

    def _playback_seconds(self) -> float:
        return PLAYBACK_REPEATS * (len(self._prompt_audio()) / 8000 + PLAYBACK_PAUSE)

    # -- voicemail -------------------------------------------------------------------------
    def _voicemail_ok(self, call: SIPCall, number: str) -> bool:
        """A mailbox exists for the call: ``*<user>``'s, or (retrieval) the caller's own — and
        the call came through the lab proxy (:attr:`proxy_addresses`), so its From was
        authenticated; a caller that reaches the services' port straight is refused."""
        if self.mailboxes is None:
            return False
        if self.proxy_addresses is not None and (call.flow is None or call.flow.remote not in self.proxy_addresses):
            return False
        owner = number[1:] if number.startswith("*") else _caller(call)
        return self.mailboxes.has(owner)

    def _messages_source(self, user: str) -> SamplesSource:
        """The new messages of ``user``, each after a beep, now marked heard; two low beeps when
        there is none."""
        assert self.mailboxes is not None
        fresh = self.mailboxes.take_new(user)
        if not fresh:
            return SamplesSource(_beeps(*VOICEMAIL_EMPTY, 2), loop=False)
        pause = np.zeros(int(0.3 * 8000), dtype=np.int16)
        parts = [part for m in fresh for part in (_beeps(*VOICEMAIL_BEEP, 1), pause, m.samples, pause)]
        return SamplesSource(np.concatenate(parts), loop=False)

    async def _voicemail(self, call: SIPCall, number: str, media: MediaStream) -> None:
        """Retrieval: hang up once the messages have played. Deposit: record what the caller
        sends until it hangs up (or the message is as long as allowed), then file it."""
        assert self.mailboxes is not None
        if not number.startswith("*"):
            source = media.source
            seconds = source.duration if isinstance(source, SamplesSource) else 1.0
            if not await call.wait_ended(seconds + 0.5):
                await self._hang_up(call)
            return
        tap = media.add_tap(max_frames=250)
        frames: list[npt.NDArray[np.int16]] = []
        skip = int(VOICEMAIL_BEEP[1] / 0.02)  # what the caller said over our beep is not kept
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_MESSAGE_SECONDS + VOICEMAIL_BEEP[1]
        try:
            while loop.time() < deadline:
                frame = await tap.get(1.0)
                if frame is None:
                    if tap.closed or call.state is CallState.TERMINATED:
                        break
                    continue
                if skip:
                    skip -= 1
                    continue
                frames.append(frame)
        finally:
            media.remove_tap(tap)
        if call.state is not CallState.TERMINATED:
            await self._hang_up(call)
        samples = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
        if len(samples) >= MIN_MESSAGE_SECONDS * 8000:
            self.mailboxes.deposit(number[1:], _caller(call), samples)

    # -- DTMF echo -------------------------------------------------------------------------
    def _digit(self, record: _Record, digit: str) -> None:
        if len(record.digits) < DTMF_ECHO_MAX:
            record.digits += digit
        if record.digit_task is not None:
            record.digit_task.cancel()
        record.digit_task = self._spawn(self._read_back(record))

    async def _read_back(self, record: _Record) -> None:
        """After a pause, the digits received so far back to the caller (RFC 4733 events, or
        in-band tones when no telephone-event was negotiated)."""
        await asyncio.sleep(DTMF_ECHO_PAUSE)
        digits, record.digits = record.digits, ""
        record.digit_task = None
        call, media = record.call, record.call.media
        if not digits or media is None or call.state is not CallState.CONFIRMED:
            return
        if media.config.telephone_event is not None:
            with contextlib.suppress(RuntimeError, ValueError, TimeoutError):
                await media.send_dtmf(digits, DTMF_TONE_SECONDS)
            return
        gap = np.zeros(int(DTMF_GAP_SECONDS * 8000), dtype=np.int16)
        audio = np.concatenate([part for d in digits for part in (tones.dtmf(d, DTMF_TONE_SECONDS), gap)])
        media.source = SamplesSource(audio, loop=False)

    # -- music on hold ---------------------------------------------------------------------
    def moh_start(self, key: str, remote: tuple[str, int], payload_type: int) -> None:
        """Stream the music on hold (:func:`moh_melody`, looped) to ``remote`` (the held party's
        RTP IP literal and port) with ``payload_type`` (0 PCMU, 8 PCMA), under ``key`` (e.g. the
        held dialog's Call-ID), until :meth:`moh_stop` or :data:`MOH_MAX_SECONDS`. A running
        stream under the same key is replaced. ``ValueError`` for a bad address or payload
        type, or beyond :data:`MAX_MOH_STREAMS`; ``RuntimeError`` outside the event loop or
        after :meth:`close`."""
        if self._closed:
            raise RuntimeError("the lab services are closed")
        config = MediaConfig(payload_type=payload_type, telephone_event=None, direction="sendonly",
                             remote=(remote[0], int(remote[1])))
        config.validate()
        self.moh_stop(key)
        if len(self._moh) >= MAX_MOH_STREAMS:
            raise ValueError(f"at most {MAX_MOH_STREAMS} music on hold streams at once")
        loop = asyncio.get_running_loop()
        self._moh[key] = loop.create_task(self._moh_run(key, config), name=f"moh-{key}")

    def moh_stop(self, key: str) -> None:
        """Stop the music on hold under ``key`` (nothing if there is none)."""
        task = self._moh.pop(key, None)
        if task is not None:
            task.cancel()

    @property
    def moh_keys(self) -> list[str]:
        """The keys of the music on hold streams running."""
        return list(self._moh)

    async def _moh_run(self, key: str, config: MediaConfig) -> None:
        stream: MediaStream | None = None
        try:
            stream = await MediaStream.open(self.host, source=SamplesSource(moh_melody()),
                                            name=f"moh-{next(self._moh_ids)}")
            stream.apply(config)
            await asyncio.sleep(MOH_MAX_SECONDS)
        except (OSError, ValueError) as exc:
            log.warning("music on hold %s: %s", key, exc)
        finally:
            if self._moh.get(key) is asyncio.current_task():
                del self._moh[key]
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.close())
