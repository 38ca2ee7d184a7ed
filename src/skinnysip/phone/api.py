"""The Phone/Call API shared by the SIP user agent and the SCCP phone.

A :class:`Phone` is an async context manager; :meth:`Phone.events` yields
:class:`PhoneEvent` values (registration changes, incoming calls, call state changes,
DTMF, messages, errors) from a bounded queue. A :class:`Call` is driven with
``answer()``, ``reject(code)``, ``hangup()``, ``hold()``, ``resume()``,
``transfer(target)``, ``send_dtmf(digits)``; an action in the wrong state raises
:class:`PhoneError`. Python units are seconds.

Call states (:class:`CallState`) use RFC 3261's names where SIP has them: an outgoing call
is ``calling`` (INVITE sent, no answer yet), ``proceeding`` (1xx), ``early`` (a 18x that
created an early dialog); an incoming one is ``incoming`` (ringing here); both become
``confirmed`` when answered and ``terminated`` at the end. Hold is not a state but a flag
(:attr:`Call.local_hold`, :attr:`Call.remote_hold`); SCCP events also carry the call
manager's own state name (``protocol_state``: ``RingIn``, ``Connected``, ``Hold``…).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinnysip.result import WireMessage

if TYPE_CHECKING:
    from skinnysip.net.media import MediaPacket, MediaStream
    from skinnysip.sip.identity import IdentityCheck
    from skinnysip.sip.presence import DialogInfoDialog

log = logging.getLogger(__name__)

__all__ = [
    "Call",
    "CallDirection",
    "CallState",
    "CallStateChanged",
    "DTMFReceived",
    "ErrorEvent",
    "IncomingCall",
    "MessageReceived",
    "DialogStateChanged",
    "MessageWaiting",
    "Phone",
    "PhoneError",
    "PhoneEvent",
    "PresenceChanged",
    "RegistrationChanged",
    "RegistrationState",
    "event_to_dict",
]

EVENT_QUEUE_LIMIT = 1000  # events kept for a slow reader; the oldest are dropped beyond


class PhoneError(Exception):
    """An action the phone or call cannot do now (wrong state, no such call, closed),
    or a request the far end refused; ``reason`` is one line for a user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


class CallState(enum.Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    EARLY = "early"
    INCOMING = "incoming"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class CallDirection(enum.Enum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


@dataclass(frozen=True)
class RegistrationChanged:
    """``state`` now; ``expires`` seconds granted (registered); ``reason`` of a failure or
    of the change (``"200 OK"``, ``"403 Forbidden"``, ``"no response"``…). A SIP phone's
    registration also says whether the flow is a SIP outbound one (``outbound``, with the
    registrar's ``flow_timer`` in seconds, RFC 5626 §4.2.1) and gives the public and temporary
    GRUU the registrar assigned (``gruu``/``temp_gruu``, RFC 5627 §4.2) and its service route
    (``service_route``: the ``Service-Route`` values our requests outside a dialog carry, RFC
    3608 §6.1). ``server_authenticated``: the registrar's ``Authentication-Info`` rspauth
    proved it knows our password (True), did not match (False), or none came (None; RFC 2617
    §3.2.3)."""

    state: RegistrationState
    reason: str = ""
    expires: int | None = None
    outbound: bool = False
    flow_timer: int | None = None
    gruu: str | None = None
    temp_gruu: str | None = None
    service_route: tuple[str, ...] = ()
    server_authenticated: bool | None = None


@dataclass(frozen=True)
class IncomingCall:
    call: Call


@dataclass(frozen=True)
class CallStateChanged:
    """``call`` moved to ``state``; ``reason``: the response or request that did it
    (``"180 Ringing"``, ``"BYE"``, ``"486 Busy Here"``…); ``protocol_state``: SCCP's name."""

    call: Call
    state: CallState
    reason: str = ""
    protocol_state: str | None = None


@dataclass(frozen=True)
class DTMFReceived:
    """A digit from the far end: ``method`` ``rfc4733``, ``info`` (SIP INFO
    application/dtmf-relay) or ``inband``; ``duration`` seconds (None if unknown)."""

    call: Call
    digit: str
    method: str
    duration: float | None = None


@dataclass(frozen=True)
class MessageReceived:
    """An instant message (RFC 3428 MESSAGE): ``sender`` URI, ``text``, ``content_type``."""

    sender: str
    text: str
    content_type: str = "text/plain"


@dataclass(frozen=True)
class MessageWaiting:
    """A message-waiting indication (RFC 3842 ``message-summary``, from the voicemail server's
    NOTIFY): ``waiting`` (``Messages-Waiting: yes``), ``account`` (``Message-Account``, None
    if absent) and ``counts``: per message context class (RFC 3458: ``voice-message``,
    ``fax-message``…, lower case) the numbers of new and old messages and of new and old
    urgent ones, as (new, old, new_urgent, old_urgent)."""

    waiting: bool
    account: str | None = None
    counts: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()


@dataclass(frozen=True)
class PresenceChanged:
    """A watched presentity's presence, from a NOTIFY of its ``presence`` subscription (RFC
    3856) carrying a PIDF document (RFC 3863): ``uri`` watched; ``basic`` ``"open"`` (willing
    to communicate), ``"closed"`` or None (not told); ``notes`` (free text); ``activities``
    (RPID, RFC 4480: ``away``, ``busy``, ``on-the-phone``…)."""

    uri: str
    basic: str | None
    notes: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()


@dataclass(frozen=True)
class DialogStateChanged:
    """A watched line's dialogs changed (the ``dialog`` event package, RFC 4235: what a
    busy-lamp-field key shows): ``uri`` watched; ``state`` the lamp — ``idle`` (no dialog),
    ``calling`` (an early dialog the line started), ``ringing`` (one it receives), ``busy``
    (a confirmed one); ``dialogs`` those not terminated."""

    uri: str
    state: str
    dialogs: tuple[DialogInfoDialog, ...] = ()


def message_counts(event: MessageWaiting) -> dict[str, dict[str, int]]:
    """``event.counts`` as JSON: ``{"voice-message": {"new": 2, "old": 8, "newUrgent": 0,
    "oldUrgent": 0}, …}`` (RFC 3842 §5.2)."""
    return {kind: dict(zip(("new", "old", "newUrgent", "oldUrgent"), n, strict=True)) for kind, n in event.counts}


@dataclass(frozen=True)
class ErrorEvent:
    """Something went wrong outside any action a caller awaits (a refresh failed…)."""

    reason: str


PhoneEvent = (RegistrationChanged | IncomingCall | CallStateChanged | DTMFReceived | MessageReceived
              | MessageWaiting | PresenceChanged | DialogStateChanged | ErrorEvent)

_call_ids = itertools.count(1)


class Call:
    """One call. ``id``: small integer unique in the process; ``direction``; ``remote``: the
    far end's URI (SIP) or number (SCCP); ``state``; ``local_hold``/``remote_hold``;
    ``started``/``alerting``/``connected``/``ended``: wall-clock seconds (None until then;
    ``alerting``: the call's first early state, an outgoing SIP call's first 18x with a To
    tag, so ``alerting - started`` is its post-dial delay);
    ``end_reason``: why it ended; ``remote_reason``: why the far end said it ended it (SIP: the
    RFC 3326 Reason of its BYE or CANCEL, e.g. ``Q.850 cause 16 (Normal call clearing)``;
    None when it gave none). Subclasses implement the actions."""

    def __init__(self, direction: CallDirection, remote: str) -> None:
        self.id = next(_call_ids)
        self.direction = direction
        self.remote = remote
        self.state = CallState.INCOMING if direction is CallDirection.INCOMING else CallState.CALLING
        self.local_hold = False
        self.remote_hold = False
        self.muted = False
        self.started = time.time()
        self.alerting: float | None = None  # the first early state: SIP 18x with a To tag
        self.connected: float | None = None
        self.ended: float | None = None
        self.end_reason: str | None = None
        self.remote_reason: str | None = None
        self.dtmf_received: list[str] = []
        #: what the verification of the caller's ``Identity`` found (SIP, RFC 8224 §6.2), None
        #: when the INVITE carried none (and for every outgoing or SCCP call)
        self.identity: IdentityCheck | None = None
        self._done = asyncio.Event()
        self._connected_event = asyncio.Event()

    # -- actions (subclasses) ------------------------------------------------------------------
    async def answer(self) -> None:
        """Answer an incoming call (SIP: 200 with the SDP answer). :class:`PhoneError` if
        the call is not ``incoming``."""
        raise NotImplementedError

    async def reject(self, code: int = 486) -> None:
        """Refuse an incoming call with ``code`` (486 Busy Here, 603 Decline…)."""
        raise NotImplementedError

    async def hangup(self) -> None:
        """End the call: CANCEL while ringing out, reject while ringing in, BYE when up."""
        raise NotImplementedError

    async def hold(self) -> None:
        """Put the far end on hold (SIP: re-INVITE with ``sendonly``, RFC 3264 §8.4)."""
        raise NotImplementedError

    async def resume(self) -> None:
        """Take the call off hold (SIP: re-INVITE with ``sendrecv``)."""
        raise NotImplementedError

    async def transfer(self, target: str) -> None:
        """Blind transfer to ``target`` (SIP: REFER, RFC 3515)."""
        raise NotImplementedError

    async def mute(self) -> None:
        """Send silence instead of our audio until :meth:`unmute` (a microphone's mute: RTP,
        RTCP and DTMF go on and the far end is not told — no re-INVITE, unlike :meth:`hold`).
        Media streams the call opens later (SCCP opens one after each hold) start muted too.
        :class:`PhoneError` unless the call is early or confirmed."""
        self._set_muted(True)

    async def unmute(self) -> None:
        """Send our audio again after :meth:`mute`. :class:`PhoneError` unless the call is
        early or confirmed."""
        self._set_muted(False)

    def _set_muted(self, on: bool) -> None:
        self._require(CallState.CONFIRMED, CallState.EARLY, action="unmute" if not on else "mute")
        if self.muted == on:
            return
        self.muted = on
        for stream in self._media_streams():
            stream.muted = on
        self._announce("muted" if on else "unmuted")

    def _media_streams(self) -> list[MediaStream]:
        """The call's open media streams (subclasses)."""
        return []

    def _announce(self, reason: str) -> None:
        """Tell the phone's listeners the call changed (``reason``; subclasses)."""

    async def send_dtmf(self, digits: str, duration: float = 0.1) -> None:
        """Send ``digits`` (0-9 * # A-D) as RFC 4733 events (SIP INFO when not negotiated)."""
        raise NotImplementedError

    # -- record ----------------------------------------------------------------------------
    @property
    def exchange(self) -> list[WireMessage]:
        """Every signalling message of this call, in order."""
        return []

    def media_report(self) -> dict[str, Any] | None:
        """The media quality report (packets, loss, jitter, RTT, MOS…), None without media."""
        return None

    def media_packets(self) -> list[MediaPacket]:
        """The RTP/RTCP datagrams of the call's media streams as on the wire (bounded per
        stream: :class:`~skinnysip.net.media.PacketLog`), in time order."""
        return []

    def pcapng(self) -> bytes:
        """The call as pcapng bytes: its signalling (:attr:`exchange`) and its RTP/RTCP
        (:meth:`media_packets`) as IP/UDP(/TCP) packets with their real addresses and ports
        (:func:`skinnysip.pcap.exchange_to_pcapng`). Raises
        :class:`~skinnysip.pcap.PcapError` on a record it cannot write. CPU-bound (about
        0.5 ms a packet): run it in a thread from the event loop."""
        from skinnysip.pcap import exchange_to_pcapng

        return exchange_to_pcapng(self.exchange, self.media_packets())

    def write_pcap(self, path: str | Path) -> None:
        """Write :meth:`pcapng` to ``path``. Raises ``PcapError`` or ``OSError``."""
        Path(path).write_bytes(self.pcapng())

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: id, direction, remote, state, hold and mute flags, times
        (``started``, ``alerting``, ``connected``, ``ended``: wall-clock seconds), reasons, the
        caller's verified ``identity`` (:meth:`~skinnysip.sip.identity.IdentityCheck.summary`, or None)."""
        return {
            "id": self.id, "direction": self.direction.value, "remote": self.remote, "state": self.state.value,
            "localHold": self.local_hold, "remoteHold": self.remote_hold, "muted": self.muted, "started": self.started,
            "alerting": self.alerting, "connected": self.connected, "ended": self.ended, "endReason": self.end_reason,
            "remoteReason": self.remote_reason,
            "dtmfReceived": "".join(self.dtmf_received), "media": camel_keys(self.media_report()),
            "identity": self.identity.summary() if self.identity is not None else None,
        }

    async def wait_connected(self, timeout: float) -> bool:
        """True once the call is confirmed, False if it ended or ``timeout`` passed."""
        if self.state is CallState.CONFIRMED:
            return True
        connected = asyncio.ensure_future(self._connected_event.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({connected, done}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            done.cancel()
        return self.state is CallState.CONFIRMED

    async def wait_ended(self, timeout: float) -> bool:
        """True once the call is terminated (within ``timeout`` seconds)."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _require(self, *states: CallState, action: str) -> None:
        if self.state not in states:
            names = "/".join(s.value for s in states)
            raise PhoneError(f"cannot {action} call {self.id}: it is {self.state.value}, not {names}")


class Phone:
    """Common part of the SIP and SCCP phones: the call list and the event queue.

    ``on_call_ended``: None, or a function called with each call as it ends (its state
    just became ``TERMINATED``, before the event is queued); one that raises is logged and
    the phone goes on. A load run remembers ended Call-IDs with it (SIPp's DeadCallMsgs).
    ``message_waiting``: the last :class:`MessageWaiting` the phone heard (None: none yet) and
    ``message_waiting_time`` when (wall-clock seconds)."""

    def __init__(self) -> None:
        self.on_call_ended: Callable[[Call], None] | None = None
        self.calls: list[Call] = []
        self.registration = RegistrationState.UNREGISTERED
        self._events: asyncio.Queue[PhoneEvent] = asyncio.Queue(EVENT_QUEUE_LIMIT)
        self.events_dropped = 0
        self.history: list[dict[str, Any]] = []  # ended calls' summaries (bounded)
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.message_waiting: MessageWaiting | None = None
        self.message_waiting_time: float | None = None

    async def __aenter__(self) -> Phone:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def call(self, target: str) -> Call:
        raise NotImplementedError

    async def message(self, target: str, text: str) -> None:
        raise PhoneError("this phone cannot send messages")

    async def unregister(self) -> bool:
        """Remove the phone's registration now (SIP: REGISTER Expires 0; SCCP: Unregister);
        True when the server accepted."""
        raise PhoneError("this phone does not unregister on demand")

    def emit(self, event: PhoneEvent) -> None:
        """Queue an event for :meth:`events` (the oldest is dropped when the queue is full)."""
        if isinstance(event, MessageWaiting):
            self.message_waiting, self.message_waiting_time = event, time.time()
        if self._events.full():
            self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[PhoneEvent]:
        """Every event, in order, until the phone is closed."""
        while not (self.closed and self._events.empty()):
            try:
                yield await asyncio.wait_for(self._events.get(), 0.5)
            except TimeoutError:
                continue

    async def next_event(self, timeout: float) -> PhoneEvent | None:
        """The next event within ``timeout`` seconds, else None."""
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the phone keeps (and cancels on close); a crash becomes an
        :class:`ErrorEvent` instead of vanishing."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.emit(ErrorEvent(f"internal error: {task.exception()!r}"))

    def _dtmf(self, call: Call, digit: str, method: str, duration: float | None) -> None:
        """Record a received digit on ``call`` (bounded) and emit :class:`DTMFReceived`."""
        call.dtmf_received.append(digit)
        del call.dtmf_received[:-1000]
        self.emit(DTMFReceived(call, digit, method, duration))

    def _stream_dtmf(self, call: Call, digit: str, duration: float) -> None:
        """A digit heard in the call's RTP (a media stream's ``on_dtmf``): an RFC 4733 event,
        with its duration, or one found in the audio when no telephone-event was agreed
        (``inband``: the stream gives those no duration, :class:`~skinnysip.net.media.ReceivedDTMF`)."""
        self._dtmf(call, digit, "rfc4733" if duration > 0 else "inband", duration or None)

    def find(self, call_id: int) -> Call:
        """The live call with ``id``; :class:`PhoneError` if there is none."""
        for call in self.calls:
            if call.id == call_id:
                return call
        raise PhoneError(f"no call {call_id}")

    def _set_state(self, call: Call, state: CallState, reason: str = "", protocol_state: str | None = None) -> None:
        if call.state is state and state is not CallState.CONFIRMED:
            return
        call.state = state
        if state is CallState.EARLY and call.alerting is None:
            call.alerting = time.time()
        if state is CallState.CONFIRMED and call.connected is None:
            call.connected = time.time()
            call._connected_event.set()
        if state is CallState.TERMINATED:
            call.ended = time.time()
            call.end_reason = call.end_reason or reason
            call._done.set()
            if call in self.calls:
                self.calls.remove(call)
                self.history.append(call.summary())
                del self.history[:-100]
                if self.on_call_ended is not None:
                    try:
                        self.on_call_ended(call)
                    except Exception:  # the listener's bug must not stop the phone
                        log.exception("on_call_ended failed for call %s", call.id)
        self.emit(CallStateChanged(call, state, reason, protocol_state))


def camel_keys(value: Any) -> Any:
    """``value`` with every dict key turned camelCase (``jitter_ms`` → ``jitterMs``), nested;
    the API and ``--json`` speak camelCase."""
    if isinstance(value, dict):
        return {_camel(str(k)): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def event_to_dict(event: PhoneEvent) -> dict[str, Any]:
    """The JSON form of an event (the CLI's ``--json`` lines and the API's WebSocket):
    ``{"event": "registration"|"incomingCall"|"callState"|"dtmf"|"message"|"messageWaiting"|"error", …}``
    with camelCase keys and ``time`` (seconds since the epoch)."""
    now = time.time()
    if isinstance(event, RegistrationChanged):
        return {"event": "registration", "time": now, "state": event.state.value, "reason": event.reason,
                "expires": event.expires, "outbound": event.outbound, "flowTimer": event.flow_timer,
                "gruu": event.gruu, "tempGruu": event.temp_gruu, "serviceRoute": list(event.service_route)}
    if isinstance(event, IncomingCall):
        return {"event": "incomingCall", "time": now, "call": event.call.id, "remote": event.call.remote,
                "identity": event.call.identity.summary() if event.call.identity is not None else None}
    if isinstance(event, CallStateChanged):
        return {"event": "callState", "time": now, "call": event.call.id, "state": event.state.value,
                "reason": event.reason, "protocolState": event.protocol_state, "remote": event.call.remote,
                "localHold": event.call.local_hold, "remoteHold": event.call.remote_hold, "muted": event.call.muted,
                "remoteReason": event.call.remote_reason}
    if isinstance(event, DTMFReceived):
        return {"event": "dtmf", "time": now, "call": event.call.id, "digit": event.digit, "method": event.method,
                "duration": event.duration}
    if isinstance(event, MessageReceived):
        return {"event": "message", "time": now, "from": event.sender, "text": event.text,
                "contentType": event.content_type}
    if isinstance(event, MessageWaiting):
        return {"event": "messageWaiting", "time": now, "waiting": event.waiting, "account": event.account,
                "counts": message_counts(event)}
    if isinstance(event, PresenceChanged):
        return {"event": "presence", "time": now, "uri": event.uri, "basic": event.basic, "notes": list(event.notes),
                "activities": list(event.activities)}
    if isinstance(event, DialogStateChanged):
        return {"event": "dialogState", "time": now, "uri": event.uri, "state": event.state,
                "dialogs": [dialog_to_dict(d) for d in event.dialogs]}
    return {"event": "error", "time": now, "reason": event.reason}


def dialog_to_dict(dialog: DialogInfoDialog) -> dict[str, Any]:
    """One dialog of a dialog-info document (RFC 4235 §4.1.6) as JSON: ``id``, ``state``,
    ``direction``, ``callId``, ``remote`` (its identity), ``remoteTarget``, ``duration`` (s)."""
    return {"id": dialog.id, "state": dialog.state, "direction": dialog.direction, "callId": dialog.call_id,
            "remote": dialog.remote_identity, "remoteTarget": dialog.remote_target, "duration": dialog.duration}
