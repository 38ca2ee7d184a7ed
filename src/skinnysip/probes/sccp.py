"""SCCP operations: probe, register, linestate, call-setup — short flows on the SCCP phone.

Each operation drives one :class:`~skinnysip.phone.sccp_phone.SCCPPhone` (the station of
:mod:`skinnysip.sccp.station` on :class:`~skinnysip.net.sccp_transport.SCCPTransport`, media on
:class:`~skinnysip.net.media.MediaStream`) through one flow and returns an :class:`SCCPResult`
whose ``to_api()`` is the HTTP API's response body. Operations never raise for peer problems
(refused, silent, garbage, rejected, flooding): they return ``success: false`` with ``error``.
Every wait of an operation shares one budget of ``timeout`` plus ``hold`` (media time); hanging
up and unregistering may take :data:`TEARDOWN` seconds each beyond it. The exchange is bounded
(:class:`~skinnysip.result.ExchangeLimit`, 1000 messages / 1 MB of raw hex by default): later
messages are counted in ``droppedMessages``, not kept.

:class:`StationSession` is a bare station driver (the :class:`~skinnysip.sccp.station.Station`,
the transport and :class:`~skinnysip.net.rtp.RTPEndpoint` sockets) kept for tests that drive the
station message by message; the operations do not use it.

Units: Python arguments in seconds (float); results in ms (``connectMs``, ``latencyMs``) as
the HTTP API; ``keepAliveInterval`` in seconds, as RegisterAck carries it (reference §3.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import tempfile
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import AliasChoices, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from skinnysip import policy as target_policy
from skinnysip.addresses import IP_LITERAL_SCHEMA, check_host, hostport, ip_literal, is_ip, strip_brackets
from skinnysip.models import ResultModel
from skinnysip.net.rtp import RTPEndpoint, looping_source
from skinnysip.net.sccp_transport import SCCP_PORT, SCCP_TLS_PORT, SCCPConnectionError, SCCPTransport
from skinnysip.phone.api import CallDirection, CallState, PhoneError
from skinnysip.phone.sccp_phone import FAILED_STATES, SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.result import ExchangeLimit, Result, TLSInfo, WireMessage
from skinnysip.rtp import audio, g711
from skinnysip.rtp.g711 import PT_PCMA, PT_PCMU
from skinnysip.sccp import enums
from skinnysip.sccp.station import (
    Call,
    CallStateChanged,
    CloseReceiveChannelRequested,
    Event,
    IncomingCall,
    KeepAliveAcked,
    OpenReceiveChannelRequested,
    RegisterRejected,
    StartMediaRequested,
    Station,
    StationConfig,
    StationError,
    StopMediaRequested,
    Unregistered,
    summarize_lines,
    validate_device_name,
)

MAX_TIMEOUT_MS = 60_000
MAX_HOLD_MS = 120_000
DIAL_PATTERN = r"^[0-9*#A-Da-d+]{1,24}$"


# --------------------------------------------------------------------------------------
# request and result shapes


class SCCPRequest(ResultModel):
    """Request body of ``POST /api/sccp/{probe,register,linestate,call-setup}``.

    ``timeout`` (ms) bounds the whole operation (every wait shares it; hanging up and
    unregistering may take up to 1 s each beyond it); ``holdMs`` is how long a call stays
    connected with media (added to the budget). ``localIp``: the address of this host to connect
    from (the station's own IP, given to the CM for media; default the routed one). ``port``
    defaults to 2000, or 2443 with ``tls``. ``server`` is accepted as an alias
    of ``host`` (the seed's field name). Types are strict (``"7"`` is not a number).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, strict=True, extra="ignore")

    host: str = Field(min_length=1, max_length=255, validation_alias=AliasChoices("host", "server"))
    port: int | None = Field(default=None, ge=1, le=65535)
    device_name: str = "SEP001122334455"
    device_type: int = Field(default=7, ge=0, le=0xFFFFFFFF)
    timeout: int = Field(default=10_000, ge=100, le=MAX_TIMEOUT_MS)
    tls: bool = False
    tls_verify: bool = True
    protocol_version: int = Field(default=11, ge=0, le=22)
    line_number: int = Field(default=1, ge=1, le=42)
    dial_number: str | None = Field(default=None, pattern=DIAL_PATTERN)
    hold_ms: int = Field(default=0, ge=0, le=MAX_HOLD_MS)
    local_ip: str | None = Field(default=None, max_length=64, json_schema_extra=IP_LITERAL_SCHEMA)

    @field_validator("local_ip")
    @classmethod
    def _local_ip(cls, v: str | None) -> str | None:
        return None if v is None else ip_literal(v)

    @field_validator("device_name")
    @classmethod
    def _device_name(cls, v: str) -> str:
        try:
            return validate_device_name(v)
        except StationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        # brackets are allowed around any host here (not only IPv6); IP literals are normalized
        host = check_host(strip_brackets(v.strip()))
        return str(ipaddress.ip_address(host)) if is_ip(host) else host

    def effective_port(self) -> int:
        return self.port or (SCCP_TLS_PORT if self.tls else SCCP_PORT)


@dataclass(kw_only=True)
class SCCPLine(Result):
    """One line button the call manager configured (LineStatRes): number, directory number,
    label and display name."""

    line_number: int
    dir_number: str = ""
    label: str = ""
    display_name: str = ""


@dataclass(kw_only=True)
class SCCPSpeedDial(Result):
    """One speed dial the call manager configured (SpeedDialStatRes)."""

    number: int
    dir_number: str = ""
    display_name: str = ""


@dataclass(kw_only=True)
class SCCPSoftKey(Result):
    """One soft key of the call manager's template (SoftKeyTemplateRes): label and event."""

    label: str
    event: int


@dataclass(kw_only=True)
class SCCPCallReport(Result):
    """One call as the station saw it; RTP counts are packets, durations ms. ``media_error``
    says why no RTP stream could be opened when the CM asked for one (else None).
    ``echo_matched``: 20 ms frames of the received audio whose dominant frequency is the
    800 Hz tone the probe sends (:data:`PROBE_TONE_HZ` ± 25 Hz): the echo of our own audio
    (50 per second of echo heard; 0 from a far end that sends anything else). Frames are
    counted as played out of the jitter buffer, so the count trails ``rtp_packets_received``
    by the buffer's start-up and depth (and by frames a stalled event loop played as silence).
    ``echo_share``: the share (0..1) of the audible received frames that are that tone — 1.0
    when everything heard was our own audio coming back; None when nothing audible came."""

    dialed: str = ""
    call_reference: int = 0
    line_instance: int = 0
    incoming: bool = False
    states: list[str] = field(default_factory=list)
    tones: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    calling_party: str = ""
    called_party: str = ""
    connected: bool = False
    codec: str | None = None
    local_rtp: str | None = None
    remote_rtp: str | None = None
    rtp_packets_sent: int = 0
    rtp_packets_received: int = 0
    rtp_packets_lost: int = 0
    rtp_jitter_ms: float = 0.0
    echo_matched: int = 0
    echo_share: float | None = None
    media_error: str | None = None


@dataclass(kw_only=True)
class SCCPResult(Result):
    """Result of an SCCP operation; ``to_api()`` is the API response body.

    Seed shape: ``success``, ``registered``, ``error``, ``messages`` (human-readable steps).
    ``exchange``: every frame sent/received with direction, time, name, ID and decoded fields
    — the first 1000 frames / 1 MB of raw hex (:class:`~skinnysip.result.ExchangeLimit`);
    ``dropped_messages`` (``droppedMessages``) counts the frames beyond that, not kept.
    """

    success: bool = False
    operation: str
    host: str
    port: int
    transport: str = "tcp"
    registered: bool = False
    status: str = "error"
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    device_name: str = ""
    device_type: int = 0
    device_type_name: str = ""
    rejected: bool = False
    reject_reason: str | None = None
    keep_alive_interval: int | None = None
    protocol_version: int | None = None
    keep_alive_ack: bool | None = None
    connect_ms: float | None = None
    latency_ms: float | None = None
    tls: TLSInfo | None = None
    capabilities_requested: bool = False
    capabilities: list[str] = field(default_factory=list)
    lines: list[SCCPLine] = field(default_factory=list)
    speed_dials: list[SCCPSpeedDial] = field(default_factory=list)
    soft_keys: list[SCCPSoftKey] = field(default_factory=list)
    call: SCCPCallReport | None = None
    rtp_packets_sent: int | None = None
    rtp_packets_received: int | None = None
    unregistered: bool = False
    exchange: list[WireMessage] = field(default_factory=list)
    dropped_messages: int = 0


# --------------------------------------------------------------------------------------
# the station session (driver glue: Station + transport + RTP)


def probe_audio(seed: int, seconds: float = 10.0) -> np.ndarray:
    """Deterministic noise-like test audio (int16, 8 kHz) so every packet's payload differs
    and echoed packets can be matched exactly."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 4000, int(8000 * seconds)), -32768, 32767).astype(np.int16)


class _Media:
    def __init__(self, endpoint: RTPEndpoint, request: OpenReceiveChannelRequested) -> None:
        self.endpoint = endpoint
        self.request = request
        self.remote: tuple[str, int] | None = None
        self.payload_type = PT_PCMU
        self.closed = False


class StationSession:
    """A live station: one control connection, its :class:`Station` and its RTP sockets.

    Open with :meth:`connect`; drive with :meth:`pump` (or the helpers :meth:`register`,
    :meth:`call`, :meth:`wait_incoming`, :meth:`hold`, :meth:`hang_up`, :meth:`unregister`);
    always :meth:`close`. ``media_seconds`` bounds RTP sending per stream.
    """

    def __init__(self, transport: SCCPTransport, station: Station, *, timeout: float,
                 media_seconds: float = 60.0, audio_seed: int = 1) -> None:
        self.transport = transport
        self.station = station
        self.timeout = timeout
        self.media_seconds = media_seconds
        self.audio = probe_audio(audio_seed)
        self.media: dict[int, _Media] = {}
        self.finished_media: list[_Media] = []
        self.events: list[Event] = []
        self.notes: list[str] = []
        self.media_error: str | None = None
        self.loop = asyncio.get_running_loop()
        self.policy = target_policy.active()  # media destinations are checked with it

    @classmethod
    async def connect(cls, host: str, port: int, config: StationConfig, *, timeout: float, use_tls: bool = False,
                      tls_verify: bool = True, ca_file: str | None = None, media_seconds: float = 60.0,
                      audio_seed: int = 1) -> StationSession:
        """Connect and build the station (its IP is the connected socket's local address).
        Raises :class:`SCCPConnectionError`."""
        transport = await SCCPTransport.connect(host, port, timeout=timeout, use_tls=use_tls, tls_verify=tls_verify,
                                                ca_file=ca_file, protocol_version=config.protocol_version)
        config.station_ip = transport.local_ip if ":" not in transport.local_ip else "0.0.0.0"
        return cls(transport, Station(config), timeout=timeout, media_seconds=media_seconds, audio_seed=audio_seed)

    def now(self) -> float:
        return self.loop.time()

    async def flush(self) -> None:
        await self.transport.send_all(self.station.take_outgoing())

    async def pump(self, until: Callable[[Event], bool] | None, timeout: float) -> Event | None:
        """Exchange messages (running timers and media) until an event satisfies ``until``
        (returned) or ``timeout`` seconds pass (``None``). Raises :class:`SCCPConnectionError`."""
        deadline = self.now() + timeout
        while True:
            await self.flush()
            now = self.now()
            if now >= deadline:
                return None
            wait = deadline - now
            nd = self.station.next_deadline()
            if nd is not None:
                wait = max(0.0, min(wait, nd - now))
            msg = await self.transport.poll(wait)
            now = self.now()
            events = self.station.tick(now)
            if msg is not None:
                events += self.station.receive(msg, now)
                self.transport.protocol_version = self.station.protocol_version
            hit: Event | None = None
            for ev in events:
                self.events.append(ev)
                await self._on_event(ev)
                if hit is None and until is not None and until(ev):
                    hit = ev
            if hit is not None:
                await self.flush()
                return hit

    async def _on_event(self, ev: Event) -> None:
        if isinstance(ev, OpenReceiveChannelRequested):
            ip = self.transport.local_ip
            if ":" in ip and self.station.protocol_version < 17:
                self.station.receive_channel_failed(ev, status=11)  # RequestedIpAddrTypeUnavailable
                self._no_media(f"the station's address {ip} is IPv6, but protocol {self.station.protocol_version} "
                               "carries IPv4 addresses only (reference §1.4); register with protocol version 17 "
                               "or later for IPv6 media")
                return
            try:
                endpoint = await RTPEndpoint.open(ip, 0, keep_seconds=self.media_seconds)
            except OSError as exc:
                self.station.receive_channel_failed(ev, status=8)  # OutOfSockets
                self._no_media(f"cannot bind a UDP port on {ip}: {exc.strerror or exc}")
                return
            old = self.media.pop(ev.pass_thru_party_id, None)
            if old is not None:
                await self._finish(old)
            self.media[ev.pass_thru_party_id] = _Media(endpoint, ev)
            self.station.receive_channel_opened(ev, endpoint.local_ip, endpoint.local_port)
            self.notes.append(f"RTP receive channel open on {endpoint.local_ip}:{endpoint.local_port}")
        elif isinstance(ev, StartMediaRequested):
            media = self._media_for(ev.pass_thru_party_id, ev.call_reference)
            if media is None:
                self.notes.append(f"StartMediaTransmission for passThruPartyId {ev.pass_thru_party_id} "
                                  "with no receive channel open: ignored")
                return
            refused = target_policy.media_refusal(ev.remote_ip, self.policy,
                                                  what="StartMediaTransmission remoteIpAddr")
            if refused is not None:  # not followed: no packet goes there
                self._no_media(refused)
                return
            media.remote = (ev.remote_ip, ev.remote_port)
            media.payload_type = PT_PCMA if ev.compression_type == enums.MEDIA_PAYLOAD_G711_ALAW_64K else PT_PCMU
            source = looping_source(g711.encode(media.payload_type, self.audio), 8 * ev.packet_ms)
            media.endpoint.start_sending(media.remote, source, payload_type=media.payload_type,
                                         packet_ms=ev.packet_ms, duration=self.media_seconds)
            self.notes.append(f"RTP sending to {ev.remote_ip}:{ev.remote_port} every {ev.packet_ms} ms "
                              f"({enums.name(enums.MEDIA_PAYLOADS, ev.compression_type)})")
        elif isinstance(ev, StopMediaRequested):
            media = self._media_for(ev.pass_thru_party_id, ev.call_reference)
            if media is not None:
                await media.endpoint.stop_sending()
        elif isinstance(ev, CloseReceiveChannelRequested):
            media = self._media_for(ev.pass_thru_party_id, ev.call_reference)
            if media is not None:
                self.media.pop(media.request.pass_thru_party_id, None)
                await self._finish(media)

    def _no_media(self, reason: str) -> None:
        self.media_error = reason
        self.notes.append(f"no RTP: {reason}")

    def _media_for(self, pass_thru_party_id: int, call_reference: int) -> _Media | None:
        """The open stream a CM message means: by passThruPartyId (reference §3.19-3.22), else
        by callReference, else the only one open (a CM that leaves the id 0 in Stop/Close)."""
        media = self.media.get(pass_thru_party_id)
        if media is not None:
            return media
        same_call = [m for m in self.media.values() if call_reference and m.request.call_reference == call_reference]
        if len(same_call) == 1:
            return same_call[0]
        return next(iter(self.media.values())) if len(self.media) == 1 else None

    async def _finish(self, media: _Media) -> None:
        if not media.closed:
            media.closed = True
            await media.endpoint.close()
            self.finished_media.append(media)

    # ---- helpers ------------------------------------------------------------------------

    async def register(self) -> Event | None:
        """Register; returns Registered/RegisterRejected or ``None`` on timeout."""
        self.station.register(self.now())
        return await self.pump(lambda e: type(e).__name__ in ("Registered", "RegisterRejected"), self.timeout)

    async def finish_registration(self) -> bool:
        """Wait for the configuration answers (lines, soft keys, time); True when complete."""
        if self.station.registration_complete:
            return True
        ev = await self.pump(lambda e: type(e).__name__ == "RegistrationComplete", self.timeout)
        return ev is not None

    async def call(self, number: str, line_instance: int | None = None) -> Call:
        call = self.station.place_call(number, self.now(), line_instance)
        return call

    async def wait_state(self, states: set[str], timeout: float | None = None) -> CallStateChanged | None:
        ev = await self.pump(lambda e: isinstance(e, CallStateChanged) and e.name in states, timeout or self.timeout)
        return ev if isinstance(ev, CallStateChanged) else None

    async def wait_incoming(self, timeout: float | None = None) -> IncomingCall | None:
        ev = await self.pump(lambda e: isinstance(e, IncomingCall), timeout or self.timeout)
        return ev if isinstance(ev, IncomingCall) else None

    async def answer(self, use_soft_key: bool = False) -> None:
        self.station.answer(use_soft_key=use_soft_key)
        await self.flush()

    async def hold(self, seconds: float) -> None:
        """Stay in the call for ``seconds`` (signalling and media keep running)."""
        await self.pump(None, seconds)

    async def hang_up(self) -> bool:
        """OnHook; True once the CM confirms CallState OnHook."""
        self.station.hang_up()
        ev = await self.pump(lambda e: isinstance(e, CallStateChanged) and e.name == "OnHook", self.timeout)
        await self.pump(None, 0.05)  # collect the trailing teardown messages
        for media in list(self.media.values()):
            await media.endpoint.stop_sending()
        return ev is not None

    async def keepalive(self) -> KeepAliveAcked | None:
        self.station.send_keepalive(self.now())
        ev = await self.pump(lambda e: isinstance(e, KeepAliveAcked), self.timeout)
        return ev if isinstance(ev, KeepAliveAcked) else None

    async def unregister(self) -> bool:
        """Unregister; True on UnregisterAck or on the CM closing the connection ([AST])."""
        self.station.unregister(self.now())
        try:
            ev = await self.pump(lambda e: isinstance(e, Unregistered), min(self.timeout, 5.0))
        except SCCPConnectionError as exc:
            return "closed the connection" in exc.reason
        return ev is not None

    def all_media(self) -> list[_Media]:
        return self.finished_media + list(self.media.values())

    async def close(self) -> None:
        for media in list(self.media.values()):
            await self._finish(media)
        self.media.clear()
        await self.transport.close()


# --------------------------------------------------------------------------------------
# operations: short flows on the SCCP phone (phone/sccp_phone.py)

#: the tone (Hz) the call-setup probe sends; the echo of it is what ``echoMatched`` counts
PROBE_TONE_HZ = 800.0
#: a received 20 ms frame is the echo of our tone when its dominant frequency is this close (Hz)
ECHO_TOLERANCE_HZ = 25.0
#: seconds each teardown step (hang up, unregister) may take beyond the operation's budget
TEARDOWN = 1.0
#: seconds ``register`` waits for the configuration answers already asked for before Unregister
CONFIG_GRACE = 1.0


class _Budget:
    """One operation's time: ``timeout`` (+ the hold time) from the start, for every wait."""

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - self.loop.time())

    def teardown(self) -> float:
        """A teardown step's wait: what is left of the budget, at least :data:`TEARDOWN`."""
        return max(TEARDOWN, self.left())


def _base(op: str, req: SCCPRequest) -> SCCPResult:
    return SCCPResult(
        operation=op, host=req.host, port=req.effective_port(), transport="tls" if req.tls else "tcp",
        device_name=req.device_name, device_type=req.device_type,
        device_type_name=enums.device_type_name(req.device_type),
    )


def _fill_registration(res: SCCPResult, st: Station) -> None:
    res.registered = st.state == "registered" or (res.registered and st.state != "rejected")
    res.keep_alive_interval = st.keep_alive_interval
    res.protocol_version = st.protocol_version if st.keep_alive_interval is not None else None
    res.capabilities_requested = st.capabilities_requested
    if st.capabilities_requested:
        res.capabilities = [enums.name(enums.MEDIA_PAYLOADS, c.payload_capability) for c in st.config.capabilities]
    res.lines = [SCCPLine(line_number=d["lineNumber"], dir_number=d["dirNumber"], label=d["label"],
                          display_name=d["displayName"]) for d in summarize_lines(st.lines.values())]
    res.speed_dials = [SCCPSpeedDial(number=s.number, dir_number=s.dir_number, display_name=s.display_name)
                       for s in st.speed_dials.values()]
    res.soft_keys = [SCCPSoftKey(label=k.label, event=k.event) for k in st.soft_keys]


def _echo_frames(path: str | None) -> tuple[int, int]:
    """(frames at our tone, audible frames) of a received-audio recording, 20 ms frames."""
    if not path:
        return 0, 0
    try:
        with wave.open(path, "rb") as wav:
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error):
        return 0, 0
    freqs = audio.dominant_frequencies(samples)
    return (int(np.count_nonzero(np.abs(freqs - PROBE_TONE_HZ) < ECHO_TOLERANCE_HZ)),
            int(np.count_nonzero(freqs > 0)))


def _call_report(call: SCCPCall, dialed: str) -> SCCPCallReport:
    sc = call.station_call
    rep = SCCPCallReport(
        dialed=dialed, call_reference=call.call_reference, line_instance=call.line_instance,
        incoming=call.direction is CallDirection.INCOMING, connected=call.connected is not None,
        states=list(sc.states) if sc else list(call.protocol_states), media_error=call.media_error,
    )
    if sc is not None:
        rep.tones, rep.prompts = list(sc.tones), list(sc.prompts)
        rep.calling_party, rep.called_party = sc.calling_party, sc.called_party
    reports = call.media_reports()
    heard = 0
    for report in reports:
        sent, received = report["sent"], report["received"]
        rep.rtp_packets_sent += sent["packets"]
        rep.rtp_packets_received += received["packets"]
        rep.rtp_packets_lost += received["lost"] if received["packets"] else 0
        rep.rtp_jitter_ms = max(rep.rtp_jitter_ms, received["jitter_ms"])
        echoed, audible = _echo_frames(report["recordings"].get("rx"))
        rep.echo_matched += echoed
        heard += audible
    rep.echo_share = round(rep.echo_matched / heard, 3) if heard else None
    if reports:
        last = reports[-1]
        rep.codec = enums.name(enums.MEDIA_PAYLOADS, call.compression_type or 0)
        rep.local_rtp = hostport(last["local"][0], last["local"][1])
        rep.remote_rtp = hostport(last["remote"][0], last["remote"][1]) if last["remote"] else None
    return rep


Body = Callable[[SCCPPhone, SCCPResult, _Budget], Awaitable[None]]


async def _run(op: str, req: SCCPRequest, body: Body, *, ca_file: str | None = None, register: bool = True,
               record_limit: ExchangeLimit | None = None) -> SCCPResult:
    res = _base(op, req)
    timeout = req.timeout / 1000.0
    budget = _Budget(timeout + req.hold_ms / 1000.0)
    limit = record_limit or ExchangeLimit()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    record_dir = tempfile.TemporaryDirectory(prefix="skinnysip-sccp-") if op == "call-setup" else None
    account = SCCPAccount(host=req.host, port=res.port, tls=req.tls, tls_verify=req.tls_verify, ca_file=ca_file,
                          device_name=req.device_name, device_type=req.device_type,
                          protocol_version=req.protocol_version, source=f"tone:{PROBE_TONE_HZ:g}",
                          record_dir=record_dir.name if record_dir else None, timeout=timeout,
                          reconnect_min=timeout, reconnect_max=timeout, local_ip=req.local_ip)
    phone: SCCPPhone | None = None
    try:
        phone = SCCPPhone(account, record_limit=limit)
        await phone.connect(timeout=budget.left())
        transport = phone.transport
        assert transport is not None
        res.connect_ms = round((loop.time() - t0) * 1000, 3)
        res.tls = transport.tls_info
        res.messages.append(f"Connected to {transport.remote} over {res.transport.upper()} in {res.connect_ms:.1f} ms")
        if register:
            t1 = loop.time()
            ev = await phone.register(budget.left(), configuration=0)
            if isinstance(ev, RegisterRejected):
                res.rejected, res.reject_reason, res.status = True, ev.reason, "rejected"
                res.error = f"registration rejected: {ev.reason}"
                res.messages.append(f"RegisterReject: {ev.reason}")
                return res
            if ev is None:
                res.error = phone.connection_error or f"no RegisterAck or RegisterReject within {req.timeout} ms"
                return res
            res.latency_ms = round((loop.time() - t1) * 1000, 3)
            res.registered, res.status = True, "registered"
            res.messages.append(f"Registered as {req.device_name} ({res.device_type_name}); keepalive "
                                f"{ev.keep_alive_interval} s, protocol {ev.protocol_version}")
        await body(phone, res, budget)
        if res.success and phone.connection_error:  # the connection ended before we were done
            res.success, res.status, res.error = False, "error", phone.connection_error
    except PhoneError as exc:
        res.error, res.success = exc.reason, False
        if res.status == "registered":
            res.status = "error"
    except (OSError, ValueError) as exc:  # e.g. a field the CM sent that cannot be re-encoded
        res.error, res.success = f"{type(exc).__name__}: {exc}", False
    finally:
        if phone is not None:
            if phone.station is not None:
                _fill_registration(res, phone.station)
            if res.rejected:
                res.registered = False
            account.timeout = budget.teardown()
            try:
                await asyncio.wait_for(phone.close(), 2 * TEARDOWN + budget.left())
            except TimeoutError:
                await phone.abort()
        if record_dir is not None:
            record_dir.cleanup()
        res.exchange = list(phone.wire) if phone is not None else []
        res.dropped_messages = limit.dropped
        if limit.dropped:
            res.messages.append(f"{limit.dropped} message(s) not kept in the exchange (the record keeps "
                                f"{limit.max_messages} messages / {limit.max_bytes} bytes)")
    return res


async def probe(req: SCCPRequest, *, ca_file: str | None = None,
                record_limit: ExchangeLimit | None = None) -> SCCPResult:
    """Connect and send KeepAlive; success when KeepAliveAck arrives (reference §3.4).
    Reports ``keepAliveAck``, ``connectMs`` and ``latencyMs`` (KeepAlive round trip)."""

    async def body(phone: SCCPPhone, res: SCCPResult, budget: _Budget) -> None:
        ev = await phone.keepalive(budget.left())
        res.keep_alive_ack = ev is not None
        if ev is None:
            res.status = "no-answer"
            res.error = phone.connection_error or f"no KeepAliveAck within {req.timeout} ms"
            return
        res.latency_ms = round((ev.round_trip or 0.0) * 1000, 3)
        res.status, res.success = "keepalive-acked", True
        res.messages.append(f"KeepAliveAck in {res.latency_ms:.1f} ms")

    return await _run("probe", req, body, ca_file=ca_file, register=False, record_limit=record_limit)


async def _unregister(phone: SCCPPhone, res: SCCPResult, budget: _Budget) -> None:
    if await phone.unregister(budget.teardown()):
        res.unregistered = True
        res.messages.append("Unregistered")
    else:
        res.messages.append("No UnregisterAck (closed anyway)")


async def register(req: SCCPRequest, *, ca_file: str | None = None,
                   record_limit: ExchangeLimit | None = None) -> SCCPResult:
    """Register (RegisterAck/Reject, capabilities), then unregister (reference §5.1)."""

    async def body(phone: SCCPPhone, res: SCCPResult, budget: _Budget) -> None:
        # registration is done; give the CM a moment for CapabilitiesReq (sent right after the ack)
        station = phone.station
        assert station is not None
        wait_until = budget.loop.time() + min(0.3, budget.left())
        while not station.capabilities_requested and budget.loop.time() < wait_until:
            await asyncio.sleep(0.02)
        if station.config_requested:  # let the answers in flight come before Unregister (a clean ladder)
            await phone.wait_configuration(min(CONFIG_GRACE, budget.left()))
        res.success = True
        await _unregister(phone, res, budget)

    return await _run("register", req, body, ca_file=ca_file, record_limit=record_limit)


async def linestate(req: SCCPRequest, *, ca_file: str | None = None,
                    record_limit: ExchangeLimit | None = None) -> SCCPResult:
    """Register and collect the configuration: button template, lines (LineStat), speed
    dials, soft-key template and sets, time/date (reference §5.1 steps 4–12); then unregister."""

    async def body(phone: SCCPPhone, res: SCCPResult, budget: _Budget) -> None:
        station = phone.station
        assert station is not None
        if not station.registration_complete:
            await phone.wait_configuration(budget.left())
        _fill_registration(res, station)
        if not station.registration_complete:
            res.status = "incomplete"
            res.error = phone.connection_error or f"configuration not complete within {req.timeout} ms"
        else:
            res.success = True
            res.messages.append(f"{len(res.lines)} line(s), {len(res.speed_dials)} speed dial(s), "
                                f"{len(res.soft_keys)} soft key(s)")
        await _unregister(phone, res, budget)

    return await _run("linestate", req, body, ca_file=ca_file, record_limit=record_limit)


async def call_setup(req: SCCPRequest, *, ca_file: str | None = None,
                     record_limit: ExchangeLimit | None = None) -> SCCPResult:
    """Register, go off-hook, dial ``dialNumber``, wait for Connected, stay ``holdMs`` with
    real RTP both ways (an 800 Hz tone; ``echoMatched`` counts the 20 ms frames heard back
    with it), go on-hook, unregister (reference §5.2, §3.18–§3.22)."""
    if not req.dial_number:
        res = _base("call-setup", req)
        res.error = "dialNumber is required for call-setup"
        return res

    async def body(phone: SCCPPhone, res: SCCPResult, budget: _Budget) -> None:
        station = phone.station
        assert station is not None
        if not station.registration_complete:
            await phone.wait_configuration(budget.left())
        number = req.dial_number or ""
        phone.account.line = req.line_number if req.line_number in station.lines else None
        call = await phone.call(number)
        res.messages.append(f"Off hook on line {call.line_instance}, dialling {number}")
        try:
            if await call.wait_connected(max(0.0, budget.left() - req.hold_ms / 1000.0)):
                res.messages.append(f"Connected (call reference {call.call_reference})")
                if req.hold_ms:
                    await call.wait_ended(min(req.hold_ms / 1000.0, budget.left()))
                if call.state is CallState.TERMINATED:
                    res.status, res.error = "call-failed", f"call to {number} ended while held: {call.end_reason}"
                elif call.media_refused is not None:  # connected, but the CM aimed RTP where we may not send
                    res.status, res.error = "media-refused", f"call to {number}: {call.media_refused}"
                else:
                    res.success, res.status = True, "call-completed"
            elif call.state is CallState.TERMINATED:
                failed = next((s for s in call.protocol_states if s in FAILED_STATES), None)
                res.status = "call-failed"
                res.error = f"call to {number} failed: {failed or call.end_reason or 'OnHook'}"
            else:
                res.status, res.error = "no-answer", f"call to {number} not connected within {req.timeout} ms"
        finally:
            if call.state is not CallState.TERMINATED:
                phone.account.timeout = budget.teardown()
                with contextlib.suppress(PhoneError, TimeoutError):
                    await asyncio.wait_for(call.hangup(), 2 * TEARDOWN + budget.left())
            await _unregister(phone, res, budget)
            res.call = _call_report(call, number)
            res.rtp_packets_sent = res.call.rtp_packets_sent
            res.rtp_packets_received = res.call.rtp_packets_received
            if call.media_error:
                res.messages.append(f"no RTP: {call.media_error}")
            if res.call.codec:
                res.messages.append(f"RTP {res.call.codec} {res.call.local_rtp} ↔ {res.call.remote_rtp}")
            res.messages.append(f"On hook; RTP sent {res.rtp_packets_sent}, received {res.rtp_packets_received}")

    return await _run("call-setup", req, body, ca_file=ca_file, record_limit=record_limit)


OPERATIONS: dict[str, Callable[..., Awaitable[SCCPResult]]] = {
    "probe": probe, "register": register, "linestate": linestate, "call-setup": call_setup,
}


async def run_operation(name: str, req: SCCPRequest, *, ca_file: str | None = None,
                        record_limit: ExchangeLimit | None = None) -> SCCPResult:
    """Run operation ``name`` (probe, register, linestate, call-setup); never raises for peer
    problems. Every wait shares one budget of ``timeout`` + ``holdMs``; hanging up and
    unregistering take at most :data:`TEARDOWN` seconds each beyond it, whatever the call
    manager sends (floods included). ``record_limit`` bounds the exchange (default
    :class:`~skinnysip.result.ExchangeLimit`: 1000 messages / 1 MB). A last guard of the
    budget + 10 s stops anything that would still hang (its result then has no exchange)."""
    op = OPERATIONS[name]
    limit = req.timeout / 1000.0 + req.hold_ms / 1000.0 + 10.0
    try:
        return await asyncio.wait_for(op(req, ca_file=ca_file, record_limit=record_limit), limit)
    except TimeoutError:
        res = _base(name, req)
        res.error = f"operation did not finish within {limit * 1000:.0f} ms"
        return res
