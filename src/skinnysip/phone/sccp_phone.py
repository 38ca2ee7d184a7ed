"""The SCCP phone: a Cisco IP phone (station) behind the Phone/Call API of :mod:`skinnysip.phone.api`.

:class:`SCCPPhone` connects an :class:`SCCPAccount` to a call manager over TCP (2000) or TLS
(2443) and drives the sans-IO :class:`~skinnysip.sccp.station.Station` (reference
``sccp-reference.md``):

- **registration** (§5.1): Register → RegisterAck (or RegisterReject) → capabilities, button
  and soft-key templates, lines, time; KeepAlive every keepAliveInterval the RegisterAck gave
  (§3.4). A KeepAlive whose KeepAliveAck does not come within
  :func:`~skinnysip.sccp.station.keepalive_ack_timeout` of that interval (a quarter of it, 2–10 s;
  ``SCCPAccount.keepalive_ack_timeout``), a closed connection or a Reset end the connection — a dead CM is so noticed within one
  interval plus that margin; the phone then connects and registers again with bounded
  exponential backoff.
  :meth:`SCCPPhone.close` unregisters (Unregister → UnregisterAck, or the CM closing, [AST]).
- **outgoing calls** (§5.2): OffHook (or Stimulus Line, or the NewCall soft key), then one
  KeypadButton per digit once the CM confirms CallState OffHook.
- **incoming calls** (§5.3): CallState RingIn makes the call; :class:`~skinnysip.phone.api.IncomingCall`
  is emitted when the ringer starts (SetRinger) or CallInfo names the caller.
  ``answer()`` is OffHook or the Answer soft key; ``reject()`` the EndCall soft key.
- **mid-call** (§4.7 soft keys, event numbers from the CM's template): ``hold()`` Hold,
  ``resume()`` Resume, ``transfer(number)`` Transfer + the number's KeypadButtons + Transfer
  (blind transfer), ``send_dtmf(digits)`` KeypadButton per digit, ``hangup()`` OnHook.
- **media** (§3.18–§3.22): OpenReceiveChannel opens a :class:`~skinnysip.net.media.MediaStream`
  and answers with its address; StartMediaTransmission starts sending to the address, codec
  and packet size it names; StopMediaTransmission stops sending; CloseReceiveChannel closes the
  stream (its final report is kept).

Call states: the CM's CallState (§4.1) maps to :class:`~skinnysip.phone.api.CallState`
(OffHook → calling, Proceed → proceeding, RingOut → early (the far end rings), RingIn →
incoming, Connected and Hold → confirmed, OnHook → terminated); every CallState is an event
with its SCCP name as ``protocol_state``. Busy, Congestion and InvalidNumber end the call (the
phone goes on-hook by itself). Every call keeps its messages (:attr:`SCCPCall.exchange`):
those carrying its call reference, and those without one while it was the phone's current call.
Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from skinnysip import policy as target_policy
from skinnysip.addresses import ip_literal
from skinnysip.net.media import MediaConfig, MediaPacket, MediaStream, PacketLog, check_port_range
from skinnysip.net.sccp_transport import SCCP_PORT, SCCP_TLS_PORT, SCCPConnectionError, SCCPTransport
from skinnysip.phone.api import (
    Call,
    CallDirection,
    CallState,
    CallStateChanged,
    ErrorEvent,
    IncomingCall,
    Phone,
    PhoneError,
    RegistrationChanged,
    RegistrationState,
)
from skinnysip.result import ExchangeLimit, WireMessage
from skinnysip.rtp import audio
from skinnysip.rtp.g711 import PT_PCMA, PT_PCMU
from skinnysip.sccp import enums
from skinnysip.sccp import station as st
from skinnysip.sccp.messages import SCCPMessage

__all__ = ["SCCPAccount", "SCCPCall", "SCCPPhone"]

MAX_CALLS = 8
MAX_WIRE = 5_000  # newest messages kept in SCCPPhone.wire (all connections)…
MAX_WIRE_BYTES = 4_000_000  # …and at most this much raw hex among them
MAX_CALL_EXCHANGE = 5_000  # messages kept per call
CLOSED_PACKET_LOGS = 3  # closed media streams whose RTP/RTCP a call's pcap keeps (4 logs ≤ MAX_MEDIA_PACKETS)
#: seconds the phone still reads after a KeepAliveAck is overdue, before it drops the connection
LAST_LOOK = 0.25
ANNOUNCE_FALLBACK = 0.3  # seconds after RingIn to announce a call whose CM sent no SetRinger/CallInfo
#: messages that belong to the registration, never to a call's exchange
REGISTRATION_MESSAGES = frozenset({
    "KeepAlive", "KeepAliveAck", "Register", "RegisterAck", "RegisterReject", "CapabilitiesReq",
    "CapabilitiesRes", "ButtonTemplateReq", "ButtonTemplate", "SoftKeyTemplateReq", "SoftKeyTemplateRes",
    "SoftKeySetReq", "SoftKeySetRes", "LineStatReq", "LineStat", "LineStatV2", "SpeedDialStatReq",
    "SpeedDialStat", "TimeDateReq", "DefineTimeDate", "Unregister", "UnregisterAck", "VersionReq", "Version",
})
#: CallState name → CallState of the API (None: unchanged)
STATE_MAP: dict[str, CallState | None] = {
    "OffHook": CallState.CALLING, "Proceed": CallState.PROCEEDING, "RingOut": CallState.EARLY,
    "RingIn": CallState.INCOMING, "Connected": CallState.CONFIRMED, "Hold": CallState.CONFIRMED,
    "OnHook": CallState.TERMINATED,
}
#: CallStates after which the CM waits for the phone to hang up (§5.2: busy, congestion)
FAILED_STATES = frozenset({"Busy", "Congestion", "InvalidNumber"})


@dataclass
class SCCPAccount:
    """An SCCP device (Python units: seconds).

    ``host``/``port``: the call manager (port default 2000, or 2443 with ``tls``);
    ``tls_verify``/``ca_file``: checking of its certificate. ``device_name``: ``SEP`` + MAC
    (reference §3.1; checked by :func:`~skinnysip.sccp.station.validate_device_name`);
    ``device_type`` (§4.8, 7 = 7960); ``protocol_version`` (Register protocolVer; ≥ 17 for the
    IPv6-capable layouts). ``line``: the line instance calls are placed on (None: the first).
    ``off_hook``: how a call starts (``offhook``, ``stimulus`` = Stimulus Line, ``softkey`` =
    NewCall); ``answer_with``: ``offhook`` or ``softkey`` (Answer). ``source``: what we send:
    ``"tone:440"`` (Hz), ``"silence"``, ``"echo"``, ``"rtp-echo"`` (see
    :class:`~skinnysip.phone.sip_phone.SIPAccount`) or a WAV file path; ``record_dir``: WAV
    recordings of each media stream. ``auto_answer``: seconds after which an incoming call is
    answered (None: never). ``timeout``: bound of each wait for the CM. ``reconnect_min``/
    ``reconnect_max``: backoff between reconnection attempts (doubling).
    ``keepalive_ack_timeout``: seconds a KeepAlive waits for its KeepAliveAck before the CM is
    taken for dead (None: :func:`~skinnysip.sccp.station.keepalive_ack_timeout` of the interval
    the RegisterAck gave: a quarter of it, 2–10 s). ``rtp_ports``: (first, last), the range
    each media stream's RTP/RTCP port pair is taken from (None: any free pair; ``ValueError``
    from :meth:`SCCPPhone.__init__` for a range without an even port and its successor).
    ``local_ip``: the address of this host the station connects from, and so the one it gives
    the CM for its media (StationIpPort, OpenReceiveChannelAck); None: the routed one.
    """

    host: str
    port: int | None = None
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    device_name: str = "SEP001122334455"
    device_type: int = 7
    protocol_version: int = 11
    line: int | None = None
    off_hook: Literal["offhook", "stimulus", "softkey"] = "offhook"
    answer_with: Literal["offhook", "softkey"] = "offhook"
    source: str = "tone:440"
    record_dir: str | None = None
    auto_answer: float | None = None
    timeout: float = 10.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    keepalive_ack_timeout: float | None = None
    rtp_ports: tuple[int, int] | None = None
    local_ip: str | None = None

    def effective_port(self) -> int:
        return self.port or (SCCP_TLS_PORT if self.tls else SCCP_PORT)

    def station_config(self, station_ip: str) -> st.StationConfig:
        """The :class:`~skinnysip.sccp.station.StationConfig`; ``ValueError`` (StationError) for a
        bad device name, type or protocol version."""
        return st.StationConfig(device_name=self.device_name, device_type=self.device_type,
                                protocol_version=self.protocol_version, station_ip=station_ip,
                                keepalive_ack_timeout=self.keepalive_ack_timeout)


def _fields(message: WireMessage) -> dict[str, Any]:
    fields = (message.decoded or {}).get("fields")
    return fields if isinstance(fields, dict) else {}


class SCCPCall(Call):
    """An SCCP call: its call reference(s), the station's view, its media streams and record.

    ``call_reference`` (0 until the CM names it), ``line_instance``, ``remote`` (the number
    dialled, or the caller's number from CallInfo), ``remote_name``, ``protocol_state`` (the
    last CallState name), ``protocol_states`` (all of them), ``media_error``; ``media_refused``:
    why the target policy kept media from where the call manager sent it (None: it did not).
    """

    def __init__(self, phone: SCCPPhone, direction: CallDirection, remote: str, line_instance: int) -> None:
        super().__init__(direction, remote)
        self.phone = phone
        self.line_instance = line_instance
        self.call_reference = 0
        self.remote_name = ""
        self.protocol_state: str | None = None
        self.protocol_states: list[str] = []
        self.compression_type: int | None = None  # of the last OpenReceiveChannel (§4.9)
        self.station_call: st.Call | None = None
        self.streams: dict[int, MediaStream] = {}  # passThruPartyId → open stream
        self.reports: list[dict[str, Any]] = []  # final reports of closed streams
        self.media_error: str | None = None
        self.media_refused: str | None = None
        self.transfer_reference = 0  # the call reference of a blind transfer in progress
        self.transfer_references: set[int] = set()  # every transfer call's reference
        self.announced = False
        self._streams_opened = 0
        self._exchange: list[WireMessage] = []
        #: the packet logs of the last closed streams (each bounded), for the call's pcap
        self.closed_packet_logs: deque[PacketLog] = deque(maxlen=CLOSED_PACKET_LOGS)

    # -- record ----------------------------------------------------------------------------
    @property
    def exchange(self) -> list[WireMessage]:
        return list(self._exchange)

    def _media_streams(self) -> list[MediaStream]:
        return list(self.streams.values())

    def _announce(self, reason: str) -> None:
        self.phone.emit(CallStateChanged(self, self.state, reason))

    def media_packets(self) -> list[MediaPacket]:
        logs = [*self.closed_packet_logs, *(s.packet_log for s in self.streams.values())]
        return sorted((p for log in logs for p in log.packets()), key=lambda p: p.time)

    def media_reports(self) -> list[dict[str, Any]]:
        """One report per media stream of the call (closed ones final), in order of opening."""
        return [dict(r) for r in self.reports] + [s.report() for s in self.streams.values()]

    def media_report(self) -> dict[str, Any] | None:
        """The report of the open stream, else of the last one closed, plus ``streams`` (how many
        the call had); None without media."""
        reports = self.media_reports()
        if not reports:
            return None
        report = reports[-1]
        report["streams"] = len(reports)
        return report

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update({"callReference": self.call_reference, "lineInstance": self.line_instance,
                    "remoteName": self.remote_name, "protocolState": self.protocol_state,
                    "protocolStates": list(self.protocol_states), "mediaError": self.media_error})
        return out

    # -- actions -----------------------------------------------------------------------------
    async def answer(self) -> None:
        """OffHook or the Answer soft key (``SCCPAccount.answer_with``); returns once the CM
        says Connected. :class:`PhoneError` if not ringing here, or no Connected in time."""
        self._require(CallState.INCOMING, action="answer")
        await self.phone._answer(self)

    async def reject(self, code: int = 486) -> None:
        """The EndCall soft key on the ringing call (SCCP has no reason codes: ``code`` is only
        kept as the end reason)."""
        self._require(CallState.INCOMING, action="reject")
        self.end_reason = f"rejected ({code})"
        await self.phone._end_by_station(self, "EndCall")

    async def hangup(self) -> None:
        """OnHook (the EndCall soft key while ringing here); returns once the call ended."""
        if self.state is CallState.TERMINATED:
            raise PhoneError(f"call {self.id} has ended")
        if self.state is CallState.INCOMING:
            await self.reject(603)
            return
        await self.phone._end_by_station(self, "OnHook")

    async def hold(self) -> None:
        """The Hold soft key; returns once the CM says Hold (:attr:`local_hold` set)."""
        self._require(CallState.CONFIRMED, action="hold")
        if self.local_hold:
            raise PhoneError(f"call {self.id} is already on hold")
        await self.phone._soft_key_until(self, "Hold", "Hold")

    async def resume(self) -> None:
        """The Resume soft key; returns once the CM says Connected."""
        self._require(CallState.CONFIRMED, action="resume")
        if not self.local_hold:
            raise PhoneError(f"call {self.id} is not on hold")
        await self.phone._soft_key_until(self, "Resume", "Connected")

    async def transfer(self, target: str) -> None:
        """Blind transfer to the number ``target``: Transfer soft key (the CM holds this call
        and opens a transfer call with dial tone), the number's KeypadButtons on that call,
        Transfer again. Returns once this call has ended; :class:`PhoneError` if the CM refuses
        (the transfer call is then hung up and this call stays on hold)."""
        self._require(CallState.CONFIRMED, action="transfer")
        await self.phone._transfer(self, target)

    async def send_dtmf(self, digits: str, duration: float = 0.1) -> None:
        """One KeypadButton per digit (0-9 * # A-D), ``duration`` seconds apart."""
        self._require(CallState.CONFIRMED, action="send DTMF on")
        bad = [d for d in digits if d.upper() not in "0123456789*#ABCD"]
        if bad or not digits:
            raise PhoneError(f"DTMF digits are 0-9 * # A-D, not {digits!r}")
        if not 0.0 <= duration <= 2.0:
            raise PhoneError(f"DTMF duration {duration} s is outside 0..2 s")
        for digit in digits.upper():
            await self.phone._keypad(self, digit)
            await asyncio.sleep(duration)


@dataclass
class _Waiter:
    match: Callable[[st.Event], bool]
    future: asyncio.Future[st.Event | None]


class SCCPPhone(Phone):
    """An SCCP phone for one device. ``async with SCCPPhone(account) as phone``.

    Attributes beyond :class:`~skinnysip.phone.api.Phone`: ``station`` (the current
    :class:`~skinnysip.sccp.station.Station`: lines, soft keys…), ``transport``,
    ``keep_alive_interval`` (seconds, from RegisterAck), ``wire`` (every SCCP message of every
    connection, bounded), ``connections`` (how many were opened), ``registration_reason``,
    ``connection_error`` (why the last connection ended), ``policy`` (the target policy active
    where the phone was made: a StartMediaTransmission to an address it refuses is not followed,
    no packet goes there, and the call's ``media_refused``/``media_error`` say why; an address of
    0.0.0.0 means the call manager's own, checked when connecting).

    ``record_limit``: an :class:`~skinnysip.result.ExchangeLimit` for ``wire`` (an operation's
    record: the first messages are kept, later ones counted in ``record_limit.dropped``);
    without one the newest :data:`MAX_WIRE` messages (:data:`MAX_WIRE_BYTES` of raw hex) are
    kept (a long-lived phone) and ``wire_dropped`` counts the older ones let go.
    """

    def __init__(self, account: SCCPAccount, *, record_limit: ExchangeLimit | None = None) -> None:
        super().__init__()
        account.station_config("0.0.0.0")  # ValueError now for a bad device name/type/version
        if account.rtp_ports is not None:
            check_port_range(account.rtp_ports, "rtp_ports")
        if account.local_ip is not None:
            account.local_ip = ip_literal(account.local_ip)  # ValueError for what is no IP literal
        self.account = account
        self.station: st.Station | None = None
        self.transport: SCCPTransport | None = None
        self.keep_alive_interval: int | None = None
        self.registration_reason = ""
        self.wire: list[WireMessage] = []
        self.record_limit = record_limit
        self.wire_dropped = 0
        self._wire_bytes = 0
        self.connections = 0
        self._seen = 0
        self._by_ref: dict[int, SCCPCall] = {}  # call references (and transfer references) → call
        self._placing: SCCPCall | None = None
        self._transferring: SCCPCall | None = None
        self._focus: SCCPCall | None = None
        self._waiters: list[_Waiter] = []
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost_reason = ""
        self._closing = False
        #: the target policy media destinations are checked with (:mod:`skinnysip.policy`):
        #: the one active where the phone was made (the API's, for a phone it created)
        self.policy = target_policy.active()

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and register (waiting for RegisterAck and the configuration). Raises
        :class:`PhoneError` when the CM cannot be reached; a refused registration is an event
        (and the phone keeps retrying with backoff)."""
        if self._supervisor is not None or self.closed:
            return
        await self.connect()
        await self._register()
        self._supervisor = self._spawn(self._supervise())

    @property
    def connection_error(self) -> str:
        """Why the last connection ended ("" while it is up)."""
        return self._lost_reason

    async def keepalive(self, timeout: float) -> st.KeepAliveAcked | None:
        """Send one KeepAlive now (allowed before registration, reference §3.4) and wait up to
        ``timeout`` seconds for KeepAliveAck (its ``round_trip`` in seconds); None without it.
        :class:`PhoneError` when not connected."""
        if self.station is None:
            raise PhoneError("not connected to a call manager")
        waiter = self._expect(lambda e: isinstance(e, st.KeepAliveAcked))
        self.station.send_keepalive(self._now())
        await self._flush()
        ev = await self._wait(waiter, timeout)
        return ev if isinstance(ev, st.KeepAliveAcked) else None

    async def unregister(self, timeout: float | None = None) -> bool:
        """Unregister (reference §3.17) and wait up to ``timeout`` seconds (default the
        account's); True on UnregisterAck or
        on the CM closing the connection ([AST] does that instead). The connection stays open
        (``close()`` ends it); the phone does not register again by itself afterwards."""
        station, transport = self.station, self.transport
        if station is None or transport is None or transport.closed:
            return False
        timeout = self.account.timeout if timeout is None else timeout
        waiter = self._expect(lambda e: isinstance(e, st.Unregistered))
        try:
            station.unregister(self._now())
            await self._flush()
        except PhoneError:
            self._forget(waiter)
            return "closed the connection" in self._lost_reason
        ev = await self._wait(waiter, timeout)
        if ev is None:
            return "closed the connection" in self._lost_reason
        return True

    async def close(self) -> None:
        """Hang up every call, unregister, close the connection and the media (idempotent)."""
        if self.closed:
            return
        self._closing = True
        for call in list(self.calls):
            with contextlib.suppress(PhoneError, asyncio.TimeoutError):
                await asyncio.wait_for(call.hangup(), self.account.timeout)
            await self._end(call, "phone closed")
        if self._supervisor is not None:
            self._supervisor.cancel()
        if (self.registration is RegistrationState.REGISTERED and self.station is not None
                and self.station.state == "registered"):  # not when an Unregister already went out
            await self.unregister(min(self.account.timeout, 5.0))
            if self.registration is not RegistrationState.UNREGISTERED:
                self._set_registration(RegistrationState.UNREGISTERED, "unregistered (connection closed)")
        await self.abort()

    async def abort(self) -> None:
        """End everything now without a word to the CM: media streams and the connection closed
        (at most ~1 s), tasks cancelled (idempotent). What :meth:`close` ends with, and what a
        caller uses when a polite close took too long."""
        if self.closed:
            return
        self._closing = True
        for task in (self._supervisor, self._reader):
            if task is not None:
                task.cancel()
        for call in list(self.calls):
            if isinstance(call, SCCPCall):
                for stream in list(call.streams.values()):
                    await self._close_stream(call, stream)
        if self.transport is not None:
            await self.transport.close(timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        self._resolve_all()
        self.closed = True

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- connection and registration (reference §5.1, §3.4) --------------------------------------
    async def connect(self, timeout: float | None = None) -> None:
        """Open the control connection (TCP or TLS) within ``timeout`` seconds (default the
        account's) and start reading; nothing is sent. :class:`PhoneError` (one sentence) when
        the CM cannot be reached. :meth:`start` is ``connect()`` + registration + supervision."""
        acc = self.account
        try:
            transport = await SCCPTransport.connect(
                acc.host, acc.effective_port(), timeout=acc.timeout if timeout is None else timeout, use_tls=acc.tls,
                tls_verify=acc.tls_verify, ca_file=acc.ca_file, protocol_version=acc.protocol_version,
                messages=self.wire, limit=self.record_limit, local_ip=acc.local_ip)
        except SCCPConnectionError as exc:
            raise PhoneError(exc.reason) from exc
        ip = transport.local_ip
        self.transport = transport
        self._lost_reason = ""
        self.station = st.Station(acc.station_config(ip if ":" not in ip else "0.0.0.0"))
        self.connections += 1
        self._reader = self._spawn(self._read_loop(transport, self.station))

    async def register(self, timeout: float | None = None, *,
                       configuration: float | None = None) -> st.Registered | st.RegisterRejected | None:
        """Register on the open connection (reference §5.1): Register, then wait up to ``timeout``
        seconds (default the account's) for RegisterAck or RegisterReject, returned; None when
        neither came (silence, or the connection ended: :attr:`connection_error`). After a
        RegisterAck, wait up to ``configuration`` seconds more (default ``timeout``; 0: not at
        all) for the configuration answers (lines, soft keys, time: ``station.registration_complete``).
        :class:`PhoneError` when not connected, or when the station is registering or registered
        already (a station registers once a connection, §3.1; unregister first)."""
        station = self.station
        if station is None or self.transport is None:
            raise PhoneError("not connected to a call manager")
        if station.state not in ("idle", "unregistered"):
            raise PhoneError(f"cannot register now: the station is {station.state} "
                             "(an SCCP station registers once a connection; unregister first)")
        timeout = self.account.timeout if timeout is None else timeout
        self._set_registration(RegistrationState.REGISTERING, "")
        answer = self._expect(lambda e: isinstance(e, st.Registered | st.RegisterRejected))
        complete = self._expect(lambda e: isinstance(e, st.RegistrationComplete))
        try:
            station.register(self._now())
            await self._flush()
        except PhoneError:
            pass
        ev = await self._wait(answer, timeout)
        if not isinstance(ev, st.Registered):
            self._forget(complete)
            return ev if isinstance(ev, st.RegisterRejected) else None
        wait = timeout if configuration is None else configuration
        if wait > 0 and not station.registration_complete:
            await self._wait(complete, wait)
        else:
            self._forget(complete)
        return ev

    async def wait_configuration(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the configuration answers after RegisterAck
        (reference §5.1 steps 4–12); True once ``station.registration_complete``."""
        station = self.station
        if station is None:
            return False
        if station.registration_complete:
            return True
        await self._wait(self._expect(lambda e: isinstance(e, st.RegistrationComplete)), timeout)
        return station.registration_complete

    async def _register(self) -> bool:
        """Register on the current connection; True once RegisterAck came. A refusal, or no
        answer within the timeout, closes the connection (the supervisor retries)."""
        transport = self.transport
        assert transport is not None
        ev = await self.register()
        if not isinstance(ev, st.Registered):
            if ev is None and self.registration is not RegistrationState.FAILED:
                self._set_registration(RegistrationState.FAILED, self._lost_reason or
                                       f"no RegisterAck within {self.account.timeout:g} s")
            await transport.close()
            return False
        return True

    async def _supervise(self) -> None:
        """Reconnect and register again whenever the connection ends (backoff
        ``reconnect_min`` × 2ⁿ up to ``reconnect_max``; reset by a successful registration)."""
        failures = 0
        while not self._closing:
            if self._reader is not None:
                await asyncio.wait({self._reader})
            if self._closing:
                return
            await self._connection_lost(self._lost_reason or "connection closed")
            while not self._closing:
                failures += 1
                delay = min(self.account.reconnect_max, self.account.reconnect_min * 2 ** (failures - 1))
                await asyncio.sleep(delay)
                try:
                    await self.connect()
                except PhoneError as exc:
                    self._set_registration(RegistrationState.FAILED, exc.reason)
                    continue
                if await self._register():
                    failures = 0
                break

    async def _connection_lost(self, reason: str) -> None:
        for call in list(self.calls):
            await self._end(call, f"connection lost: {reason}")
        self._placing = self._transferring = None
        self._set_registration(RegistrationState.FAILED, reason)

    def _set_registration(self, state: RegistrationState, reason: str) -> None:
        if state is self.registration and reason == self.registration_reason:
            return
        self.registration = state
        self.registration_reason = reason
        self.emit(RegistrationChanged(state, reason))

    async def _read_loop(self, transport: SCCPTransport, station: st.Station) -> None:
        """The pump of one connection: messages in → station → events; timers (keepalive);
        ends (setting ``_lost_reason``) when the connection fails or the CM falls silent."""
        try:
            while True:
                now = self._now()
                deadline = station.next_deadline()
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
                overdue = await self._pump_once(transport, station, await transport.poll(wait))
                if overdue is not None:
                    # a stalled event loop may have left the ack unread: one last look
                    acks, end = station.keepalive_acks, self._now() + LAST_LOOK
                    while station.keepalive_acks == acks and self._now() < end:
                        await self._pump_once(transport, station, await transport.poll(end - self._now()))
                    if station.keepalive_acks == acks:
                        raise SCCPConnectionError(
                            f"no KeepAliveAck from the call manager within {overdue.timeout:g} s "
                            f"(keepalive interval {overdue.keep_alive_interval} s)")
        except SCCPConnectionError as exc:
            self._lost_reason = exc.reason
        except PhoneError as exc:
            self._lost_reason = exc.reason
        finally:
            await transport.close()
            self._collect()
            self._resolve_all()

    async def _pump_once(self, transport: SCCPTransport, station: st.Station,
                         msg: SCCPMessage | None) -> st.KeepAliveTimedOut | None:
        """One message (or none) through the station, then its timers; the events handled.
        Returns the :class:`~skinnysip.sccp.station.KeepAliveTimedOut` of an overdue ack."""
        now = self._now()
        events: list[st.Event] = []
        if msg is not None:  # before the timers: an ack that came at its deadline counts
            events += station.receive(msg, now)
            transport.protocol_version = station.protocol_version
        events += station.tick(now)
        overdue: st.KeepAliveTimedOut | None = None
        for ev in events:
            if isinstance(ev, st.KeepAliveTimedOut):
                overdue = ev
            else:
                await self._on_station_event(ev)
        if msg is not None:
            self._after_message(msg)
        for ev in events:
            self._resolve(ev)
        await self._flush()
        self._collect()
        return overdue

    async def _flush(self) -> None:
        """Send what the station queued (in order). :class:`PhoneError` if the connection fails."""
        transport, station = self.transport, self.station
        if transport is None or station is None:
            raise PhoneError("not connected to a call manager")
        async with self._send_lock:
            frames = station.take_outgoing()
            try:
                for frame in frames:
                    await transport.send(frame)
            except SCCPConnectionError as exc:
                raise PhoneError(exc.reason) from exc
        self._collect()

    # -- waiting for the CM ------------------------------------------------------------------------
    def _expect(self, match: Callable[[st.Event], bool]) -> _Waiter:
        waiter = _Waiter(match, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        return waiter

    async def _wait(self, waiter: _Waiter, timeout: float) -> st.Event | None:
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except TimeoutError:
            return None
        finally:
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _resolve(self, ev: st.Event) -> None:
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.match(ev):
                waiter.future.set_result(ev)

    def _resolve_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)

    # -- the record ---------------------------------------------------------------------------
    def _collect(self) -> None:
        """Give each new wire message to its call: by call reference, else (no reference) to the
        phone's current call."""
        if self._seen > len(self.wire):
            self._seen = len(self.wire)
        for message in self.wire[self._seen:]:
            self._wire_bytes += len(message.raw)
            if message.summary in REGISTRATION_MESSAGES:
                continue
            ref = _fields(message).get("callReference")
            call = self._by_ref.get(ref) if isinstance(ref, int) and ref else None
            if call is None and not ref:
                call = self._focus
            if call is not None:
                call._exchange.append(message)
                del call._exchange[:-MAX_CALL_EXCHANGE]
        self._seen = len(self.wire)
        if len(self.wire) > MAX_WIRE or self._wire_bytes > MAX_WIRE_BYTES:
            excess = max(0, len(self.wire) - MAX_WIRE)
            size = self._wire_bytes - sum(len(m.raw) for m in self.wire[:excess])
            while size > MAX_WIRE_BYTES and excess < len(self.wire) - 1:
                size -= len(self.wire[excess].raw)
                excess += 1
            del self.wire[:excess]
            self._wire_bytes = size
            self._seen -= excess
            self.wire_dropped += excess

    # -- station events ------------------------------------------------------------------------
    async def _on_station_event(self, ev: st.Event) -> None:
        if isinstance(ev, st.Registered):
            self.keep_alive_interval = ev.keep_alive_interval
            self._set_registration(RegistrationState.REGISTERED,
                                   f"RegisterAck (keepalive {ev.keep_alive_interval} s, protocol {ev.protocol_version})")
        elif isinstance(ev, st.RegisterRejected):
            self._set_registration(RegistrationState.FAILED, f"RegisterReject: {ev.reason}")
        elif isinstance(ev, st.Unregistered):
            self._set_registration(RegistrationState.UNREGISTERED, f"UnregisterAck (status {ev.status})")
        elif isinstance(ev, st.ResetRequested):
            if self.transport is not None:
                self._lost_reason = f"Reset (type {ev.reset_type}) from the call manager"
                await self.transport.close()
        elif isinstance(ev, st.CallStateChanged):
            await self._call_state(ev)
        elif isinstance(ev, st.OpenReceiveChannelRequested):
            await self._open_channel(ev)
        elif isinstance(ev, st.StartMediaRequested):
            self._start_media(ev)
        elif isinstance(ev, st.StopMediaRequested):
            stream = self._stream_for(ev.pass_thru_party_id, ev.call_reference)
            if stream is not None:
                with contextlib.suppress(RuntimeError):
                    stream[1].apply(replace(stream[1].config, direction="recvonly"))
        elif isinstance(ev, st.CloseReceiveChannelRequested):
            stream = self._stream_for(ev.pass_thru_party_id, ev.call_reference)
            if stream is not None:
                await self._close_stream(stream[0], stream[1])

    def _adopt(self, call: SCCPCall, ref: int) -> None:
        call.call_reference = ref
        self._by_ref[ref] = call
        assert self.station is not None
        call.station_call = self.station.calls.get(ref)

    async def _call_state(self, ev: st.CallStateChanged) -> None:
        ref, name = ev.call_reference, ev.name
        call = self._by_ref.get(ref)
        if call is None:
            if self._transferring is not None and name == "OffHook":
                owner, self._transferring = self._transferring, None
                owner.transfer_reference = ref
                owner.transfer_references.add(ref)
                self._by_ref[ref] = owner
                return
            if self._placing is not None:
                call, self._placing = self._placing, None
                self._adopt(call, ref)
            elif name == "RingIn":
                if len(self.calls) >= MAX_CALLS:
                    return
                call = SCCPCall(self, CallDirection.INCOMING, "", ev.line_instance)
                self._adopt(call, ref)
                self.calls.append(call)
                self._focus = call
                asyncio.get_running_loop().call_later(ANNOUNCE_FALLBACK, self._announce, call)
            else:
                return  # a call this phone does not know (another line's, or one it forgot)
        if ref in call.transfer_references:
            if name in FAILED_STATES | {"OnHook"} and ref == call.transfer_reference:
                call.transfer_reference = 0
            return  # the transfer call's states are in the exchange, not the call's events
        if call.state is CallState.TERMINATED:
            return
        call.protocol_state = name
        call.protocol_states.append(name)
        del call.protocol_states[:-100]
        target = STATE_MAP.get(name)
        if name == "OffHook" and call.direction is CallDirection.INCOMING:
            target = None
        if name == "Hold":
            call.local_hold = True
        elif name == "Connected":
            call.local_hold = False
        if target is CallState.TERMINATED:
            await self._end(call, "OnHook")
            return
        if name in FAILED_STATES:
            call.end_reason = call.end_reason or name
            self._spawn(self._on_hook_after_failure(call))
        reason = {"Hold": "hold", "Connected": "connected"}.get(name, name)
        if target is not None and (target is not call.state or target is CallState.CONFIRMED):
            self._set_state(call, target, reason, name)
        else:
            self.emit(CallStateChanged(call, call.state, reason, name))

    async def _on_hook_after_failure(self, call: SCCPCall) -> None:
        with contextlib.suppress(PhoneError):
            await self._end_by_station(call, "OnHook")

    def _after_message(self, msg: SCCPMessage) -> None:
        """What the station does not turn into events: the caller's number and name (CallInfo)
        and the ringer (SetRinger) announce an incoming call."""
        if msg.name not in ("CallInfo", "CallInfoV2", "SetRinger"):
            return
        ref = msg.fields.get("callReference")
        call = self._by_ref.get(ref) if isinstance(ref, int) else None
        if call is None or call.direction is not CallDirection.INCOMING:
            return
        if msg.name == "SetRinger":
            if msg.fields.get("ringMode") != st.RING_OFF:
                self._announce(call)
            return
        number, name = msg.fields.get("callingParty"), msg.fields.get("callingPartyName")
        if isinstance(number, str) and number:
            call.remote = number
        if isinstance(name, str) and name:
            call.remote_name = name
        self._announce(call)

    def _announce(self, call: SCCPCall) -> None:
        if call.announced or call.state is not CallState.INCOMING:
            return
        call.announced = True
        self.emit(IncomingCall(call))
        if self.account.auto_answer is not None:
            self._spawn(self._auto_answer(call, self.account.auto_answer))

    async def _auto_answer(self, call: SCCPCall, delay: float) -> None:
        await asyncio.sleep(delay)
        if call.state is CallState.INCOMING:
            with contextlib.suppress(PhoneError):
                await call.answer()

    # -- media (reference §3.18–§3.22) ---------------------------------------------------------------
    def _media_call(self, *ids: int) -> SCCPCall | None:
        """The call a media message means: by call reference (or conferenceId/passThruPartyId,
        which [AST] sets to its call reference), else the current call."""
        for i in ids:
            if i and i in self._by_ref:
                return self._by_ref[i]
        for call in self._by_ref.values():
            if call.state is not CallState.TERMINATED and any(i in call.streams for i in ids if i):
                return call
        return self._focus if self._focus is not None and self._focus.state is not CallState.TERMINATED else None

    def _stream_for(self, pass_thru: int, ref: int) -> tuple[SCCPCall, MediaStream] | None:
        call = self._media_call(ref, pass_thru)
        if call is None:
            return None
        if pass_thru in call.streams:
            return call, call.streams[pass_thru]
        if len(call.streams) == 1:  # a CM that leaves the id 0 in Stop/Close
            return call, next(iter(call.streams.values()))
        return None

    async def _open_channel(self, ev: st.OpenReceiveChannelRequested) -> None:
        station, transport = self.station, self.transport
        assert station is not None and transport is not None
        call = self._media_call(ev.call_reference, ev.conference_id, ev.pass_thru_party_id)
        ip = transport.local_ip
        if call is None:
            station.receive_channel_failed(ev, status=5)  # InvalidCallRef
            return
        if ":" in ip and station.protocol_version < 17:
            station.receive_channel_failed(ev, status=11)  # RequestedIpAddrTypeUnavailable
            call.media_error = (f"the station's address {ip} is IPv6, but protocol {station.protocol_version} "
                                "carries IPv4 addresses only (reference §1.4)")
            return
        acc = self.account
        call._streams_opened += 1
        name = f"{acc.device_name}-call{call.id}-{call._streams_opened}"
        try:
            stream = await MediaStream.open(ip, source=audio.source_from_spec(acc.source),
                                            record_dir=acc.record_dir, name=name, echo=acc.source == "echo",
                                            echo_payload=acc.source == "rtp-echo",
                                            on_dtmf=lambda digit, duration: self._stream_dtmf(call, digit, duration),
                                            ports=acc.rtp_ports)
        except (OSError, ValueError) as exc:
            station.receive_channel_failed(ev, status=8)  # OutOfSockets
            call.media_error = f"cannot open media on {ip}: {exc}"
            return
        old = call.streams.pop(ev.pass_thru_party_id, None)
        if old is not None:
            await self._close_stream(call, old)
        call.streams[ev.pass_thru_party_id] = stream
        stream.muted = call.muted  # a stream opened after a hold stays muted (Call.mute)
        call.compression_type = ev.compression_type
        payload_type = PT_PCMA if ev.compression_type == enums.MEDIA_PAYLOAD_G711_ALAW_64K else PT_PCMU
        try:
            stream.apply(MediaConfig(payload_type=payload_type, ptime=ev.packet_ms / 1000, telephone_event=None,
                                     direction="recvonly"))
        except ValueError as exc:  # a packet size G.711 at 8 kHz cannot have: keep 20 ms
            call.media_error = f"OpenReceiveChannel: millisecondPacketSize {ev.packet_ms}: {exc}"
        station.receive_channel_opened(ev, stream.local_ip, stream.local_port)

    def _start_media(self, ev: st.StartMediaRequested) -> None:
        found = self._stream_for(ev.pass_thru_party_id, ev.call_reference)
        if found is None:
            self.emit(ErrorEvent(f"StartMediaTransmission for passThruPartyId {ev.pass_thru_party_id} "
                                 "without an open receive channel: ignored"))
            return
        call, stream = found
        codecs = {enums.MEDIA_PAYLOAD_G711_ULAW_64K: PT_PCMU, enums.MEDIA_PAYLOAD_G711_ALAW_64K: PT_PCMA}
        if ev.compression_type not in codecs:
            call.media_error = f"codec {enums.name(enums.MEDIA_PAYLOADS, ev.compression_type)} is not supported"
            return
        remote_ip = ev.remote_ip
        if remote_ip in ("", "0.0.0.0", "::") and self.transport is not None:
            remote_ip = self.transport.remote_ip
        # the address given is judged; none (0.0.0.0) means the call manager's, checked on connect
        refused = (target_policy.media_refusal(remote_ip, self.policy, what="StartMediaTransmission remoteIpAddr")
                   if remote_ip == ev.remote_ip else None)
        if refused is not None:  # not followed: no packet goes there
            call.media_error = call.media_refused = refused
            self.emit(ErrorEvent(f"call {call.id}: {refused}: no media sent"))
            return
        te = ev.rfc2833_payload_type if 96 <= ev.rfc2833_payload_type <= 127 else None
        if not 0 < ev.remote_port <= 0xFFFF:  # a u32 on the wire (reference §3.20)
            call.media_error = f"StartMediaTransmission: remotePortNumber {ev.remote_port} is not a UDP port"
            return
        try:
            config = MediaConfig(payload_type=codecs[ev.compression_type], ptime=ev.packet_ms / 1000,
                                 telephone_event=te, direction="sendrecv", remote=(remote_ip, ev.remote_port))
            config.validate()
        except ValueError as exc:
            call.media_error = (f"StartMediaTransmission (millisecondPacketSize {ev.packet_ms}, remoteIpAddr "
                                f"{remote_ip}, remotePortNumber {ev.remote_port}): {exc}")
            return
        try:
            stream.apply(config)
        except (ValueError, RuntimeError) as exc:
            call.media_error = f"StartMediaTransmission: {exc}"

    async def _close_stream(self, call: SCCPCall, stream: MediaStream) -> None:
        for key, value in list(call.streams.items()):
            if value is stream:
                del call.streams[key]
        call.closed_packet_logs.append(stream.packet_log)
        with contextlib.suppress(Exception):
            call.reports.append(await stream.close())

    # -- actions ----------------------------------------------------------------------------------
    def _station(self) -> st.Station:
        if self.closed or self.station is None:
            raise PhoneError("the phone is closed" if self.closed else "not connected to a call manager")
        if self.registration is not RegistrationState.REGISTERED:
            raise PhoneError(f"the phone is not registered ({self.registration.value})")
        return self.station

    def _station_call(self, call: SCCPCall) -> st.Call:
        if call.station_call is None:
            return st.Call(line_instance=call.line_instance, call_reference=call.call_reference)
        return call.station_call

    async def call(self, target: str) -> SCCPCall:
        """Go off-hook and dial ``target`` (digits 0-9 * # A-D +). Returns at once with the
        call ``calling``; follow it with the events or :meth:`Call.wait_connected`.
        :class:`PhoneError` when not registered, for a bad number, or while another call is
        being placed."""
        station = self._station()
        if len(self.calls) >= MAX_CALLS:
            raise PhoneError(f"too many calls ({MAX_CALLS})")
        if self._placing is not None:
            raise PhoneError("another call is being placed")
        number = target.strip()
        if not number or len(number) > 24:
            raise PhoneError(f"cannot dial {target!r}: 1-24 digits are needed")
        line = self.account.line if self.account.line is not None else station.first_line()
        for digit in number:
            try:
                st.keypad_code(digit)
            except st.StationError:
                raise PhoneError(f"cannot dial {target!r}: {digit!r} is not a key (0-9, *, #, A-D or +)") from None
        try:
            station.place_call(number, self._now(), line, via=self.account.off_hook)
        except st.StationError as exc:
            raise PhoneError(str(exc)) from exc
        call = SCCPCall(self, CallDirection.OUTGOING, number, line)
        self.calls.append(call)
        self._placing = self._focus = call
        try:
            await self._flush()
        except PhoneError:
            self._placing = None
            await self._end(call, "connection lost")
            raise
        self._spawn(self._placing_watchdog(call))
        return call

    async def _placing_watchdog(self, call: SCCPCall) -> None:
        await asyncio.sleep(self.account.timeout)
        if call.call_reference == 0 and call.state is not CallState.TERMINATED:
            if self._placing is call:
                self._placing = None
            await self._end(call, f"no CallState from the call manager within {self.account.timeout:g} s")

    def _call_ref_event(self, call: SCCPCall, *names: str) -> Callable[[st.Event], bool]:
        return lambda e: (isinstance(e, st.CallStateChanged) and e.call_reference == call.call_reference
                          and e.name in names)

    async def _answer(self, call: SCCPCall) -> None:
        station = self._station()
        self._focus = call
        waiter = self._expect(self._call_ref_event(call, "Connected", "OnHook"))
        station.answer(self._station_call(call), use_soft_key=self.account.answer_with == "softkey")
        await self._flush()
        ev = await self._wait(waiter, self.account.timeout)
        if not isinstance(ev, st.CallStateChanged) or ev.name != "Connected":
            raise PhoneError(f"call {call.id} was not connected within {self.account.timeout:g} s"
                             if ev is None else f"call {call.id} ended instead of being answered")

    async def _end_by_station(self, call: SCCPCall, how: str) -> None:
        """OnHook or the EndCall soft key; wait for CallState OnHook (else end it here)."""
        station = self._station()
        self._focus = call
        if call.call_reference == 0:
            if self._placing is call:
                self._placing = None
            station.hang_up(None)
        elif how == "EndCall":
            station.press_soft_key("EndCall", self._station_call(call))
        else:
            station.hang_up(self._station_call(call))
        await self._flush()
        if not await call.wait_ended(self.account.timeout):
            await self._end(call, f"hung up ({how}; no CallState OnHook from the call manager)")

    async def _soft_key_until(self, call: SCCPCall, label: str, state: str) -> None:
        station = self._station()
        self._focus = call
        waiter = self._expect(self._call_ref_event(call, state, "OnHook"))
        try:
            station.press_soft_key(label, self._station_call(call))
        except st.StationError as exc:
            raise PhoneError(str(exc)) from exc
        await self._flush()
        ev = await self._wait(waiter, self.account.timeout)
        if not isinstance(ev, st.CallStateChanged) or ev.name != state:
            raise PhoneError(f"{label}: the call manager did not answer with CallState {state}"
                             if ev is None else f"{label}: call {call.id} ended")

    async def _keypad(self, call: SCCPCall, digit: str) -> None:
        station = self._station()
        station.dial(digit, self._station_call(call))
        await self._flush()

    async def _transfer(self, call: SCCPCall, target: str) -> None:
        station = self._station()
        number = target.strip()
        try:
            for digit in number:
                st.keypad_code(digit)
        except st.StationError as exc:
            raise PhoneError(str(exc)) from exc
        if not number or len(number) > 24:
            raise PhoneError(f"cannot transfer to {target!r}: 1-24 digits are needed")
        if self._transferring is not None or call.transfer_reference:
            raise PhoneError("a transfer is already in progress")
        timeout = self.account.timeout
        self._focus = call
        self._transferring = call
        opened = self._expect(lambda e: isinstance(e, st.CallStateChanged) and e.name == "OffHook"
                              and bool(call.transfer_reference) and e.call_reference == call.transfer_reference)
        station.press_soft_key("Transfer", self._station_call(call))
        await self._flush()
        if await self._wait(opened, timeout) is None:
            self._transferring = None
            raise PhoneError("Transfer: the call manager opened no transfer call (CallState OffHook)")
        ref = call.transfer_reference
        line = call.line_instance
        transfer_call = station.calls.get(ref) or st.Call(line_instance=line, call_reference=ref)
        failed = self._expect(lambda e: isinstance(e, st.CallStateChanged) and e.call_reference == ref
                              and e.name in FAILED_STATES)
        station.dial(number, transfer_call)
        await self._flush()
        call.end_reason = f"transferred to {number}"
        station.press_soft_key("Transfer", transfer_call)
        await self._flush()
        ended = asyncio.ensure_future(call.wait_ended(timeout))
        refused = asyncio.ensure_future(self._wait(failed, timeout))
        try:
            await asyncio.wait({ended, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        ended.cancel()
        if call.state is CallState.TERMINATED:
            return
        call.end_reason = None
        # refused (or no answer): hang up the transfer call; this call stays on hold
        station.hang_up(transfer_call)
        with contextlib.suppress(PhoneError):
            await self._flush()
        call.transfer_reference = 0
        raise PhoneError(f"transfer to {number} failed: "
                         + (transfer_call.state if transfer_call.states else "no answer from the call manager"))

    # -- the end of a call ------------------------------------------------------------------------
    async def _end(self, call: SCCPCall | Call, reason: str) -> None:
        if call.state is CallState.TERMINATED:
            return
        if isinstance(call, SCCPCall):
            for stream in list(call.streams.values()):
                await self._close_stream(call, stream)
            if self._placing is call:
                self._placing = None
            if self._transferring is call:
                self._transferring = None
            if len(self._by_ref) > 4 * MAX_CALLS:  # forget the references of ended calls
                for ref, other in list(self._by_ref.items()):
                    if other.state is CallState.TERMINATED and other is not call:
                        del self._by_ref[ref]
        self._set_state(call, CallState.TERMINATED, reason, "OnHook")
