"""A small SCCP call manager for tests and demos, built on the same codec as the station.

It behaves as ``sccp-reference.md`` §5 describes a real one (Asterisk's ``chan_skinny`` message
sets, with chan-sccp's UnregisterAck):

- registration (§5.1): configured device names get RegisterAck (+ CapabilitiesReq); others get
  RegisterReject ``"No Authority: <name>"`` and the connection is closed; KeepAlive is answered
  (also before Register); ButtonTemplate with the device's lines and speed dials, SoftKeyTemplateRes,
  SoftKeySetRes, LineStat, SpeedDialStat, DefineTimeDate, Version; Unregister → UnregisterAck.
- calls (§5.2, §5.3): off-hook gives dial tone; digits are collected until they name an
  extension: the **echo extension** (the CM's own RTP socket sends the caller's audio back),
  the **tone extension** (the CM sends a 1 kHz G.711 tone), or another registered device's
  line (the callee rings: CallState RingIn, SetRinger, CallInfo; on answer both get
  OpenReceiveChannel, then StartMediaTransmission pointing each at the other's RTP address, so
  RTP flows station to station). OnHook (or the EndCall soft key) tears down as §5.2 step 6.
- mid-call soft keys (event numbers of §4.7, as the template gives them): **Hold** closes the
  media of both ends (CloseReceiveChannel + StopMediaTransmission) and sends the holder CallState
  Hold, the OnHold soft-key set and a winking lamp, as [AST] does; **Resume** sends CallState
  Connected and opens media on both ends again. **Transfer** (blind): the first press holds the
  call and opens a second call reference with dial tone (CallState OffHook); the digits dialled
  on it are collected, not routed; the second press ends both of the transferor's calls and rings
  the dialled line for the held party, who is connected to it on answer (reorder tone and
  CallState Congestion on the second call if the number cannot take the call). KeypadButton
  during a connected call is recorded as the leg's ``dtmf`` (a lab CM has nowhere to send it).

Layouts follow the phone's Register ``protocolVer`` (≥ 17 → v17), as [AST] and [CS] do; from 17 on,
CallInfo and DisplayPromptStatus go out as the dynamic CallInfoV2 (0x014A) and
DisplayPromptStatusV2 (0x0145), as [AST] sends them (reference §7 item 11). The
header version field (reference §1.2, §7 item 1) is set as [CS] does by default: 0 in
KeepAliveAck, RegisterAck and UnregisterAck (and before registration), the negotiated protocol
in every other message when it is >= 10 (0 for a version Wireshark does not accept);
``LabConfig.header_versions="asterisk"`` sends 0 always, as [AST]. Received header versions are
ignored: layouts never depend on them.
Sessions end after 3 × keepalive of silence, or 30 s without Register. Everything is bounded:
sessions, message records, tone duration, echo volume.

**Bridge** (:attr:`LabCallManager.bridge`, a :class:`CallBridge` such as
:class:`skinnysip.lab.bridge.SCCPBridge`): a dialled number that is none of the CM's own is
handed to the bridge once dialling ends (``#``, EnblocCall, or :attr:`LabConfig.dial_timeout`
seconds without a digit): the station gets CallState Proceed and an OpenReceiveChannel, and
the bridge calls out with the station's RTP address (:meth:`CallBridge.place`, then
:meth:`CallBridge.media_ready`); the bridge reports back with :meth:`LabCallManager.bridge_alerting`
(RingOut + alerting tone), :meth:`~LabCallManager.bridge_answered` (Connected +
StartMediaTransmission to the far end's RTP address), :meth:`~LabCallManager.bridge_failed`
(busy or reorder tone) and :meth:`~LabCallManager.bridge_ended`. The other way,
:meth:`LabCallManager.bridge_ring` rings a line for a call from outside (or says 404/480/486/488),
the station's answer opens its receive channel and :meth:`CallBridge.media_ready` follows; a
station hanging up a bridged call calls :meth:`CallBridge.ended`, its Hold soft key
:meth:`CallBridge.held` (Resume reopens the receive channel: ``media_ready`` again), its keypad
during the call :meth:`CallBridge.dtmf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from skinnysip.net.rtp import RTPEndpoint, looping_source
from skinnysip.net.sccp_transport import SCCPConnectionError, SCCPTransport
from skinnysip.result import WireMessage
from skinnysip.rtp import g711
from skinnysip.rtp.g711 import PT_PCMA, PT_PCMU
from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.stats import RTPSender
from skinnysip.rtp.tones import sine
from skinnysip.sccp import enums
from skinnysip.sccp.messages import SCCPMessage, encode
from skinnysip.sccp.station import negotiated_header_version

LINE = 0x09  # stimulus / button type Line
SPEED_DIAL = 0x02
MAX_PROTOCOL = 22
MAX_RECORD = 5000  # wire messages kept per session
MAX_KEPT_SESSIONS = 256  # sessions (with their records) kept for inspection
ECHO_LIMIT = 500_000  # packets reflected per call leg, at most
MAX_DTMF = 100  # keypad digits kept per leg
#: header version policies (reference §1.2): "chan-sccp" as [CS], "asterisk" as [AST]
HEADER_VERSION_POLICIES = ("chan-sccp", "asterisk")
#: messages [CS] always sends with header version 0 (reference §1.2)
BASIC_HEADER_MESSAGES = frozenset({"KeepAliveAck", "RegisterAck", "UnregisterAck"})

#: soft-key template: label escape 0x80+n for events 1–18 ([AST] style: label code = event)
SOFT_KEYS = list(range(1, 19))
#: soft-key sets by mode (§4.7), as 1-based template indices
SOFT_KEY_SETS: dict[int, list[int]] = {
    0: [1, 2, 5, 6, 7],  # OnHook: Redial NewCall CfwdAll CfwdBusy CfwdNoAnswer
    1: [3, 9, 4, 14, 13],  # Connected: Hold EndCall Transfer Park Confrn
    2: [10, 2],  # OnHold: Resume NewCall
    3: [11, 9],  # RingIn: Answer EndCall
    4: [1, 9, 5],  # OffHook: Redial EndCall CfwdAll
    6: [8, 9],  # DigitsFollowing: BackSpace EndCall
    8: [9],  # RingOut: EndCall
}


@dataclass
class LabLine:
    """A line on a lab device: directory number, label and display name."""

    number: str
    label: str = ""
    display_name: str = ""


@dataclass
class LabDevice:
    """A device the CM accepts, with its lines and speed dials (number, display name)."""

    name: str
    lines: list[LabLine]
    speed_dials: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LabConfig:
    """The lab CM's configuration. ``port`` 0 picks a free port; ``tls_cert``/``tls_key``
    (PEM files) switch the listener to TLS. ``keep_alive_interval`` is in seconds.
    ``header_versions``: ``"chan-sccp"`` (default) or ``"asterisk"``, the header version field
    policy (reference §1.2; see the module docstring). Raises ``ValueError`` for another value.
    ``dial_timeout``: seconds without a new digit after which a number that is none of ours
    goes to the bridge (only with a bridge; ``#`` sends it at once). An empty ``echo_extension``
    or ``tone_extension`` turns that built-in service off (the number may then go to the bridge)."""

    devices: list[LabDevice]
    echo_extension: str = "600"
    tone_extension: str = "601"
    host: str = "127.0.0.1"
    port: int = 0
    rtp_host: str | None = None
    keep_alive_interval: int = 30
    register_timeout: float = 30.0
    tone_seconds: float = 120.0
    max_sessions: int = 64
    tls_cert: str | None = None
    tls_key: str | None = None
    header_versions: str = "chan-sccp"
    dial_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.header_versions not in HEADER_VERSION_POLICIES:
            raise ValueError(f"header_versions {self.header_versions!r}: use one of {HEADER_VERSION_POLICIES}")

    @classmethod
    def demo(cls, **kwargs: Any) -> LabConfig:
        """Two phones: SEP001122334455 (line 1001, speed dial 600 "Echo") and SEP00112233445A
        (line 1002); echo on 600, tone on 601."""
        devices = [
            LabDevice("SEP001122334455", [LabLine("1001", "Alice", "Alice Example")], [("600", "Echo")]),
            LabDevice("SEP00112233445A", [LabLine("1002", "Bob", "Bob Example")]),
        ]
        return cls(devices=devices, **kwargs)


def _payload_type(compression_type: int) -> int:
    return PT_PCMA if compression_type == enums.MEDIA_PAYLOAD_G711_ALAW_64K else PT_PCMU


class CallLeg:
    """One station's side of a call."""

    def __init__(self, session: _Session, line: int, ref: int, outgoing: bool) -> None:
        self.session = session
        self.line = line
        self.ref = ref
        self.outgoing = outgoing
        self.pass_thru = ref
        self.state = "offhook"  # offhook, dialing, ringout, ringin, connected, ended
        self.digits = ""
        self.kind = ""  # echo, tone, station, sip (bridged)
        self.codec: int | None = None  # compression type of this leg's media (None: the session's)
        self.dial_task: asyncio.Task[None] | None = None
        self.bridge_done = False  # the bridge has ended its side already
        self.peer: CallLeg | None = None
        self.rtp_addr: tuple[str, int] | None = None
        self.media_requested = False
        self.media_started = False
        self.endpoint: RTPEndpoint | None = None
        self.reflected = 0
        self.transfer_of: CallLeg | None = None  # the held call a blind-transfer call belongs to
        self.dtmf = ""  # keypad digits pressed during the connected call (bounded)

    @property
    def number(self) -> str:
        """The directory number of this leg's line."""
        lines = self.session.device.lines if self.session.device else []
        return lines[self.line - 1].number if 0 < self.line <= len(lines) else ""

    @property
    def compression_type(self) -> int:
        """The media payload (reference §4.5) of this leg: G.711 µ-law or A-law."""
        return self.codec if self.codec is not None else self.session.codec

    @property
    def device_name(self) -> str:
        return self.session.name


class CallBridge(Protocol):
    """What the CM asks of a bridge to another signalling system (see the module docstring)."""

    async def place(self, leg: CallLeg, number: str) -> None:
        """The station of ``leg`` dialled ``number``, which is none of the CM's: call it."""

    async def media_ready(self, leg: CallLeg) -> None:
        """``leg.rtp_addr`` (the station's RTP address) is known, or changed."""

    async def ended(self, leg: CallLeg) -> None:
        """The station ended (or refused) the bridged call of ``leg``."""

    async def held(self, leg: CallLeg) -> None:
        """The station put the bridged call of ``leg`` on hold (its media is closed)."""

    async def dtmf(self, leg: CallLeg, digit: str) -> None:
        """The station pressed keypad ``digit`` during the bridged call of ``leg``."""


# [AST] sends these dynamic forms instead of the fixed ones when protocolVer >= 17
# (reference §7 item 11); the fields keep their names, the strings move to the tail.
V2_FROM_PROTOCOL = 17
V2_FORMS = {"CallInfo": "CallInfoV2", "DisplayPromptStatus": "DisplayPromptStatusV2"}


class _Session:
    """One station connection on the lab CM."""

    def __init__(self, cm: LabCallManager, transport: SCCPTransport) -> None:
        self.cm = cm
        self.transport = transport
        self.device: LabDevice | None = None
        self.name = ""
        self.device_type = 0
        self.protocol_version = 0
        self.codec = enums.MEDIA_PAYLOAD_G711_ULAW_64K
        self.codecs = [enums.MEDIA_PAYLOAD_G711_ULAW_64K]  # the G.711 payloads the station can do
        self.legs: dict[int, CallLeg] = {}
        self.closing = False

    # ---- plumbing -----------------------------------------------------------------------

    def header_version(self, name: str) -> int:
        """The header version field for message ``name`` (reference §1.2)."""
        if self.cm.config.header_versions == "asterisk" or name in BASIC_HEADER_MESSAGES:
            return 0
        return negotiated_header_version(self.protocol_version)

    async def send(self, name: str, fields: dict[str, Any] | None = None) -> None:
        """Send one message. A failed send ends this session only (its run loop sees the
        closed transport), never the session whose handler was sending to it (a call's peer)."""
        if self.protocol_version >= V2_FROM_PROTOCOL:
            name = V2_FORMS.get(name, name)
        frame = encode(name, fields or {}, protocol_version=self.protocol_version,
                       header_version=self.header_version(name))
        try:
            await self.transport.send(frame)
        except SCCPConnectionError:
            self.closing = True
            await self.transport.close()
        if len(self.transport.messages) > MAX_RECORD:
            del self.transport.messages[: len(self.transport.messages) - MAX_RECORD]

    async def run(self) -> None:
        try:
            while not self.closing:
                timeout = (self.cm.config.register_timeout if self.device is None
                           else 3 * self.cm.config.keep_alive_interval + 5)
                msg = await self.transport.recv(timeout)
                await self.handle(msg)
        except SCCPConnectionError:
            pass
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.closing = True
        for leg in list(self.legs.values()):
            await self.cm.end_call(leg, notify_self=False)
        if self.device is not None and self.cm.sessions.get(self.name) is self:
            del self.cm.sessions[self.name]
        await self.transport.close()

    async def handle(self, msg: SCCPMessage) -> None:
        f = msg.fields
        if msg.name == "KeepAlive":
            await self.send("KeepAliveAck")
            return
        if self.device is None:
            if msg.name == "Register":
                await self.on_register(f)
            return  # [AST]: only Register, Alarm and KeepAlive before registration
        handler = getattr(self, f"on_{msg.name}", None)
        if handler is not None:
            await handler(f)

    # ---- registration -------------------------------------------------------------------

    async def on_register(self, f: dict[str, Any]) -> None:
        name = str(f.get("deviceName", ""))
        device = self.cm.devices.get(name.upper())
        if device is None:
            await self.send("RegisterReject", {"text": f"No Authority: {name}"[:31]})
            self.closing = True
            return
        old = self.cm.sessions.get(device.name)
        if old is not None and old is not self:
            old.closing = True
            await old.transport.close()
        self.device, self.name = device, device.name
        self.device_type = int(f.get("deviceType", 0) or 0)
        self.protocol_version = min(int(f.get("protocolVer", 0) or 0), MAX_PROTOCOL)
        self.transport.protocol_version = self.protocol_version
        self.cm.sessions[device.name] = self
        ka = self.cm.config.keep_alive_interval
        await self.send("RegisterAck", {
            "keepAliveInterval": ka, "dateTemplate": "D-M-Y", "secondaryKeepAliveInterval": ka,
            "maxProtocolVer": self.protocol_version,
        })
        await self.send("CapabilitiesReq")

    async def on_CapabilitiesRes(self, f: dict[str, Any]) -> None:
        caps = [c for c in f.get("caps", []) if isinstance(c, dict)]
        g711 = (enums.MEDIA_PAYLOAD_G711_ULAW_64K, enums.MEDIA_PAYLOAD_G711_ALAW_64K)
        self.codecs = [int(c["payloadCapability"]) for c in caps if c.get("payloadCapability") in g711] or self.codecs
        for cap in caps:
            if cap.get("payloadCapability") in (enums.MEDIA_PAYLOAD_G711_ULAW_64K, enums.MEDIA_PAYLOAD_G711_ALAW_64K):
                self.codec = int(cap["payloadCapability"])
                break

    async def on_ButtonTemplateReq(self, f: dict[str, Any]) -> None:
        assert self.device is not None
        defs = [{"instanceNumber": i + 1, "buttonDefinition": LINE} for i in range(len(self.device.lines))]
        defs += [{"instanceNumber": i + 1, "buttonDefinition": SPEED_DIAL} for i in range(len(self.device.speed_dials))]
        await self.send("ButtonTemplate", {"buttonOffset": 0, "buttonCount": len(defs),
                                           "totalButtonCount": len(defs), "definitions": defs})

    async def on_SoftKeyTemplateReq(self, f: dict[str, Any]) -> None:
        defs = [{"softKeyLabel": "\x80" + chr(ev), "softKeyEvent": ev} for ev in SOFT_KEYS]
        await self.send("SoftKeyTemplateRes", {"softKeyOffset": 0, "softKeyCount": len(defs),
                                               "totalSoftKeyCount": len(defs), "definitions": defs})

    async def on_SoftKeySetReq(self, f: dict[str, Any]) -> None:
        sets = []
        for mode in range(max(SOFT_KEY_SETS) + 1):
            keys = SOFT_KEY_SETS.get(mode, [])
            sets.append({"softKeyTemplateIndex": keys + [0] * (16 - len(keys)),
                         "softKeyInfoIndex": [300 + k for k in keys] + [0] * (16 - len(keys))})
        await self.send("SoftKeySetRes", {"softKeySetOffset": 0, "softKeySetCount": len(sets),
                                          "totalSoftKeySetCount": len(sets), "definitions": sets})
        await self.send("SelectSoftKeys", {"lineInstance": 0, "callReference": 0, "softKeySetIndex": 0,
                                           "validKeyMask": 0xFFFFFFFF})

    async def on_LineStatReq(self, f: dict[str, Any]) -> None:
        assert self.device is not None
        n = int(f.get("lineNumber", 0) or 0)
        line = self.device.lines[n - 1] if 0 < n <= len(self.device.lines) else LabLine("")
        await self.send("LineStat", {"lineNumber": n, "lineDirNumber": line.number,
                                     "lineFullyQualifiedDisplayName": line.display_name,
                                     "lineTextLabel": line.label, "lineDisplayOptions": 0})

    async def on_SpeedDialStatReq(self, f: dict[str, Any]) -> None:
        assert self.device is not None
        n = int(f.get("speedDialNumber", 0) or 0)
        number, label = self.device.speed_dials[n - 1] if 0 < n <= len(self.device.speed_dials) else ("", "")
        await self.send("SpeedDialStat", {"number": n, "dirNumber": number, "displayName": label})

    async def on_TimeDateReq(self, f: dict[str, Any]) -> None:
        await self.send("DefineTimeDate", time_date_fields(dt.datetime.now(dt.UTC)))

    async def on_VersionReq(self, f: dict[str, Any]) -> None:
        await self.send("Version", {"version": "skinnysip-lab"})

    async def on_Unregister(self, f: dict[str, Any]) -> None:
        for leg in list(self.legs.values()):
            await self.cm.end_call(leg)
        await self.send("UnregisterAck", {"status": 0})
        self.closing = True

    # ---- calls --------------------------------------------------------------------------

    def _leg(self, ref: int) -> CallLeg | None:
        if ref and ref in self.legs:
            return self.legs[ref]
        live = [leg for leg in self.legs.values() if leg.state != "ended"]
        return live[-1] if live else None

    def _ringing(self) -> CallLeg | None:
        return next((leg for leg in self.legs.values() if leg.state == "ringin"), None)

    async def on_OffHook(self, f: dict[str, Any]) -> None:
        ringing = self._ringing()
        if ringing is not None:
            await self.cm.answer(ringing)
            return
        if any(leg.state not in ("ended", "hold") for leg in self.legs.values()):
            return
        await self.cm.new_outgoing(self, int(f.get("lineInstance", 0) or 0) or 1)

    async def on_Stimulus(self, f: dict[str, Any]) -> None:
        if f.get("stimulus") == LINE:
            await self.on_OffHook({"lineInstance": f.get("stimulusInstance", 1)})

    async def on_SoftKeyEvent(self, f: dict[str, Any]) -> None:
        event = int(f.get("softKeyEvent", 0) or 0)
        if event == 11:  # Answer
            ringing = self._ringing()
            if ringing is not None:
                await self.cm.answer(ringing)
        elif event == 2:  # NewCall
            await self.on_OffHook(f)
        elif event == 9:  # EndCall
            await self.on_OnHook(f)
        elif event in (3, 10, 4):  # Hold, Resume, Transfer
            leg = self._leg(int(f.get("callReference", 0) or 0))
            if leg is None:
                return
            if event == 3 and leg.state == "connected":
                await self.cm.hold(leg)
            elif event == 10 and leg.state == "hold":
                await self.cm.resume(leg)
            elif event == 4:
                await self.cm.transfer_key(leg)

    async def on_OnHook(self, f: dict[str, Any]) -> None:
        leg = self._leg(int(f.get("callReference", 0) or 0))
        if leg is not None:
            await self.cm.end_call(leg)

    async def on_KeypadButton(self, f: dict[str, Any]) -> None:
        leg = self._leg(int(f.get("callReference", 0) or 0))
        key = enums.KEYPAD_BUTTONS.get(int(f.get("kpButton", -1)), "")
        if leg is None or not key:
            return
        if leg.state == "connected":
            leg.dtmf = (leg.dtmf + key)[-MAX_DTMF:]
            if leg.kind == "sip" and self.cm.bridge is not None:
                try:
                    await self.cm.bridge.dtmf(leg, key)
                except Exception as exc:
                    self.cm.errors.append(f"bridge dtmf: {exc!r}")
            return
        if leg.state not in ("offhook", "dialing"):
            return
        if leg.state == "offhook":
            leg.state = "dialing"
            await self.send("StopTone", {"lineInstance": leg.line, "callReference": leg.ref})
            await self.send("SelectSoftKeys", {"lineInstance": leg.line, "callReference": leg.ref,
                                               "softKeySetIndex": 6, "validKeyMask": 0xFFFFFFFF})
        if leg.transfer_of is not None:  # blind transfer: the second Transfer press routes
            leg.digits = (leg.digits + key)[:MAX_DTMF]
            return
        if key == "#":
            await self.cm.route(leg, leg.digits, final=True)
            return
        leg.digits += key
        await self.cm.route(leg, leg.digits, final=False)

    async def on_EnblocCall(self, f: dict[str, Any]) -> None:
        leg = self._leg(0)
        if leg is None:
            leg = await self.cm.new_outgoing(self, int(f.get("lineInstance", 0) or 0) or 1)
        leg.state = "dialing"
        leg.digits = str(f.get("calledParty", ""))
        await self.cm.route(leg, leg.digits, final=True)

    async def on_OpenReceiveChannelAck(self, f: dict[str, Any]) -> None:
        pass_thru = int(f.get("passThruPartyId", 0) or 0)
        leg = next((lg for lg in self.legs.values() if lg.pass_thru == pass_thru), None)
        if leg is None or leg.state == "ended":
            return
        if int(f.get("mediaReceptionStatus", 0) or 0) != 0:
            await self.cm.end_call(leg)
            return
        ip = str(f.get("ipAddr") or self.transport.remote_ip)
        if ip in ("0.0.0.0", "::", ""):
            ip = self.transport.remote_ip
        leg.rtp_addr = (ip, int(f.get("portNumber", 0) or 0))
        await self.cm.media_ready(leg)


def time_date_fields(t: dt.datetime) -> dict[str, int]:
    """DefineTimeDate fields (reference §3.16) for ``t``; dayOfWeek with Sunday = 0 as [AST]."""
    return {
        "year": t.year, "month": t.month, "dayOfWeek": (t.weekday() + 1) % 7, "day": t.day,
        "hour": t.hour, "minute": t.minute, "second": t.second, "milliseconds": t.microsecond // 1000,
        "systemTime": int(t.timestamp()),
    }


class LabCallManager:
    """The lab CM. ``async with LabCallManager(config) as cm:`` listens on ``cm.port``."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.devices = {d.name.upper(): d for d in config.devices}
        self.sessions: dict[str, _Session] = {}
        self.all_sessions: list[_Session] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = config.port
        self.errors: deque[str] = deque(maxlen=100)  # failures of the bridge's hooks
        self._refs = itertools.count(0x1001)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tone = g711.encode(PT_PCMU, sine(1000.0, 1.0))
        self._tone_alaw = g711.encode(PT_PCMA, sine(1000.0, 1.0))
        #: where numbers that are none of ours go (set by the bridge; None: reorder tone)
        self.bridge: CallBridge | None = None

    @property
    def messages(self) -> list[WireMessage]:
        """Every wire message of every session (in session order)."""
        return [m for s in self.all_sessions for m in s.transport.messages]

    async def start(self) -> LabCallManager:
        ctx = None
        if self.config.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self.server = await asyncio.start_server(self._accept, self.config.host, self.config.port, ssl=ctx)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for s in list(self.all_sessions):
            s.closing = True
            await s.transport.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def __aenter__(self) -> LabCallManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len([s for s in self.all_sessions if not s.closing]) >= self.config.max_sessions:
            writer.close()
            return
        transport = SCCPTransport(reader, writer, transport="tls" if self.config.tls_cert else "tcp")
        session = _Session(self, transport)
        if len(self.all_sessions) >= MAX_KEPT_SESSIONS:  # forget the oldest finished sessions
            self.all_sessions = [s for s in self.all_sessions if not s.closing][-MAX_KEPT_SESSIONS:]
        self.all_sessions.append(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    # ---- call control -------------------------------------------------------------------

    async def new_outgoing(self, session: _Session, line: int) -> CallLeg:
        leg = CallLeg(session, line, next(self._refs), outgoing=True)
        session.legs[leg.ref] = leg
        s, ln, ref = session, line, leg.ref
        await s.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 2})
        await s.send("CallState", {"callState": 1, "lineInstance": ln, "callReference": ref})
        await s.send("ActivateCallPlane", {"lineInstance": ln})
        await s.send("StartTone", {"tone": 0x21, "toneOutputDirection": 0, "lineInstance": ln, "callReference": ref})
        await s.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 4,
                                        "validKeyMask": 0xFFFFFFFF})
        await s.send("DisplayPromptStatus", {"timeout": 0, "promptStatus": "\x80\x20", "lineInstance": ln,
                                             "callReference": ref})
        return leg

    def _find_line(self, number: str) -> tuple[LabDevice, int] | None:
        for device in self.devices.values():
            for i, line in enumerate(device.lines):
                if line.number == number:
                    return device, i + 1
        return None

    def _extensions(self) -> list[str]:
        exts = [e for e in (self.config.echo_extension, self.config.tone_extension) if e]
        exts += [ln.number for d in self.devices.values() for ln in d.lines]
        return exts

    async def route(self, leg: CallLeg, number: str, *, final: bool) -> None:
        """Route ``number`` once it names an extension; reorder tone if it cannot."""
        s = leg.session
        known = number in self._extensions()
        if leg.dial_task is not None:
            leg.dial_task.cancel()
            leg.dial_task = None
        if not known and self.bridge is not None and number:
            if final:
                await self._bridge_out(leg, number)
            else:
                leg.dial_task = self._spawn(self._dial_timeout(leg, number))
            return
        if not known:
            if final or not any(e.startswith(number) for e in self._extensions()):
                await self._fail(leg, tone=0x25, call_state=7)  # reorder, Congestion
            return
        await self._ring_out(leg, number)
        if number == self.config.echo_extension:
            leg.kind = "echo"
            await self._connect(leg)
            await self._open_media(leg)
        elif number == self.config.tone_extension:
            leg.kind = "tone"
            await self._connect(leg)
            await self._open_media(leg)
        else:
            free = self._free_callee(number, s)
            if free is None:
                await self._fail(leg, tone=0x23, call_state=6)  # busy tone, Busy
                return
            callee, callee_line = free
            await self._ring(leg, callee, callee_line, number)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dial_timeout(self, leg: CallLeg, number: str) -> None:
        """No digit for ``dial_timeout`` seconds: the number dialled so far goes to the bridge."""
        await asyncio.sleep(self.config.dial_timeout)
        if leg.dial_task is asyncio.current_task():
            leg.dial_task = None
        if leg.state == "dialing" and leg.digits == number:
            await self._bridge_out(leg, number)

    # ---- the bridge -----------------------------------------------------------------------

    async def _bridge_out(self, leg: CallLeg, number: str) -> None:
        """Hand ``number`` to the bridge: Proceed to the station, its receive channel opened
        (the bridge's offer names it), then :meth:`CallBridge.place`."""
        if self.bridge is None:
            return
        leg.kind = "sip"
        await self._ring_out(leg, number, alerting=False)
        await self._open_media(leg)
        try:
            await self.bridge.place(leg, number)
        except Exception as exc:  # a bridge's failure must not end the station's session
            self.errors.append(f"bridge place {number}: {exc!r}")
            await self.bridge_failed(leg, 503)

    async def bridge_alerting(self, leg: CallLeg) -> None:
        """The far end rings (SIP 180/183): CallState RingOut and the alerting tone (§5.2)."""
        if leg.state != "ringout" or leg.media_started:
            return
        s = leg.session
        await s.send("CallState", {"callState": 3, "lineInstance": leg.line, "callReference": leg.ref})
        await s.send("StartTone", {"tone": 0x24, "toneOutputDirection": 0, "lineInstance": leg.line,
                                   "callReference": leg.ref})

    async def bridge_answered(self, leg: CallLeg, remote: tuple[str, int] | None, compression_type: int) -> None:
        """The far end answered: Connected, and the station sends its media to ``remote``
        (the far end's RTP address; None: not yet, the far end holds) with ``compression_type``."""
        if leg.state == "ended":
            return
        leg.codec = compression_type
        await self._connect(leg)
        if remote is not None:
            await self._start_media(leg, remote)

    async def bridge_media(self, leg: CallLeg, remote: tuple[str, int] | None) -> None:
        """The far end's RTP address for a connected bridged leg (again after a change):
        StartMediaTransmission to it; None (far end on hold) stops the transmission."""
        if leg.state == "ended":
            return
        if leg.media_started:
            await leg.session.send("StopMediaTransmission", {"conferenceId": 0, "passThruPartyId": leg.pass_thru,
                                                             "callReference": leg.ref, "portHandlingFlag": 0})
            leg.media_started = False
        if remote is not None:
            await self._start_media(leg, remote)

    async def bridge_failed(self, leg: CallLeg, status: int) -> None:
        """The far end refused with SIP ``status``: busy tone and CallState Busy for 486/600,
        InvalidNumber for 404/484/604, reorder and Congestion otherwise; the CM then waits
        for the station to hang up (§5.2)."""
        if leg.state in ("ended", "failed"):
            return
        leg.bridge_done = True
        await self._close_media(leg)
        if status in (486, 600):
            await self._fail(leg, tone=0x23, call_state=6)  # LineBusyTone, Busy
        elif status in (404, 484, 604):
            await self._fail(leg, tone=0x25, call_state=14)  # ReorderTone, InvalidNumber
        else:
            await self._fail(leg, tone=0x25, call_state=7)  # ReorderTone, Congestion

    async def bridge_ended(self, leg: CallLeg) -> None:
        """The far end ended the bridged call (BYE, CANCEL): the station goes on-hook (§5.2)."""
        leg.bridge_done = True
        await self.end_call(leg)

    async def bridge_ring(self, number: str, calling: str, calling_name: str,
                          compression_types: list[int]) -> CallLeg | int:
        """A call from outside to ``number``: ring its line (§5.3) and return the new leg, or
        the SIP status to refuse with: 404 no such line, 480 its device is not registered,
        486 it is busy, 488 none of ``compression_types`` (in the caller's order) is one the
        station can do."""
        found = self._find_line(number)
        if found is None:
            return 404
        device, line = found
        callee = self.sessions.get(device.name)
        if callee is None or callee.closing:
            return 480
        if any(lg.state != "ended" for lg in callee.legs.values()):
            return 486
        codec = next((c for c in compression_types if c in callee.codecs), None)
        if codec is None:
            return 488
        leg = CallLeg(callee, line, next(self._refs), outgoing=False)
        leg.kind, leg.state, leg.codec = "sip", "ringin", codec
        callee.legs[leg.ref] = leg
        await self._ring_station(leg, calling, calling_name, number)
        return leg

    async def _fail(self, leg: CallLeg, *, tone: int, call_state: int) -> None:
        """The call cannot go on: ``tone`` (§4.2) and CallState ``call_state`` (§4.1); the CM
        then waits for the station to hang up (§5.2)."""
        s = leg.session
        await s.send("StartTone", {"tone": tone, "toneOutputDirection": 0, "lineInstance": leg.line,
                                   "callReference": leg.ref})
        await s.send("CallState", {"callState": call_state, "lineInstance": leg.line, "callReference": leg.ref})
        leg.state = "failed"

    def _free_callee(self, number: str, caller: _Session) -> tuple[_Session, int] | None:
        """The registered, idle session and line instance of ``number`` (not ``caller`` itself)."""
        found = self._find_line(number)
        if found is None:
            return None
        device, line = found
        callee = self.sessions.get(device.name)
        if callee is None or callee is caller or any(lg.state != "ended" for lg in callee.legs.values()):
            return None
        return callee, line

    async def _ring(self, leg: CallLeg, callee: _Session, callee_line: int, number: str) -> None:
        """Ring ``number`` on ``callee`` for ``leg`` (reference §5.3) and give ``leg`` ringback."""
        s = leg.session
        leg.kind = "station"
        other = CallLeg(callee, callee_line, next(self._refs), outgoing=False)
        other.kind = "station"
        other.state = "ringin"
        other.peer, leg.peer = leg, other
        callee.legs[other.ref] = other
        calling_name = ""
        if leg.session.device is not None:
            calling_name = next((ln.display_name for ln in leg.session.device.lines if ln.number == leg.number), "")
        await self._ring_station(other, leg.number, calling_name, number)
        await s.send("StartTone", {"tone": 0x24, "toneOutputDirection": 0, "lineInstance": leg.line,
                                   "callReference": leg.ref})

    async def _ring_station(self, leg: CallLeg, calling: str, calling_name: str, called: str) -> None:
        """Ring the station of the incoming ``leg`` (§5.3): RingIn, soft keys, prompt,
        CallInfo naming ``calling``/``calling_name``, lamp, ringer."""
        c, ln, ref = leg.session, leg.line, leg.ref
        await c.send("CallState", {"callState": 4, "lineInstance": ln, "callReference": ref})
        await c.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 3,
                                        "validKeyMask": 0xFFFFFFFF})
        await c.send("DisplayPromptStatus", {"timeout": 0, "promptStatus": f"\x80\x17{calling}",
                                             "lineInstance": ln, "callReference": ref})
        info = self._call_info(c, calling, called, ln, ref, call_type=1)
        info["callingPartyName"] = calling_name
        await c.send("CallInfo", info)
        await c.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 5})
        await c.send("SetRinger", {"ringMode": 2, "ringDuration": 1, "lineInstance": ln, "callReference": ref})
        await c.send("ActivateCallPlane", {"lineInstance": ln})

    def _call_info(self, caller: _Session, calling: str, called: str, line: int, ref: int,
                   call_type: int) -> dict[str, Any]:
        calling_name = ""
        if caller.device is not None:
            calling_name = next((ln.display_name for ln in caller.device.lines if ln.number == calling), "")
        found = self._find_line(called)
        called_name = ""
        if found is not None:
            called_name = found[0].lines[found[1] - 1].display_name
        elif called == self.config.echo_extension:
            called_name = "Echo test"
        elif called == self.config.tone_extension:
            called_name = "1 kHz tone"
        return {"callingPartyName": calling_name, "callingParty": calling, "calledPartyName": called_name,
                "calledParty": called, "lineInstance": line, "callReference": ref, "callType": call_type}

    async def _ring_out(self, leg: CallLeg, number: str, *, alerting: bool = True) -> None:
        """Proceed, and (``alerting``) RingOut at once: the callee is here and rings now."""
        s, ln, ref = leg.session, leg.line, leg.ref
        leg.state = "ringout"
        await s.send("CallState", {"callState": 12, "lineInstance": ln, "callReference": ref})
        if alerting:
            await s.send("CallState", {"callState": 3, "lineInstance": ln, "callReference": ref})
        await s.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 8,
                                        "validKeyMask": 0xFFFFFFFF})
        await s.send("DialedNumber", {"dialedNumber": number, "lineInstance": ln, "callReference": ref})
        await s.send("DisplayPromptStatus", {"timeout": 0, "promptStatus": "\x80\x16", "lineInstance": ln,
                                             "callReference": ref})
        await s.send("CallInfo", self._call_info(s, leg.number, number, ln, ref, call_type=2))

    async def _connect(self, leg: CallLeg) -> None:
        s, ln, ref = leg.session, leg.line, leg.ref
        leg.state = "connected"
        if not leg.outgoing:
            await s.send("SetRinger", {"ringMode": 1, "ringDuration": 1, "lineInstance": ln, "callReference": ref})
            await s.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 2})
            await s.send("CallState", {"callState": 1, "lineInstance": ln, "callReference": ref})
        await s.send("StopTone", {"lineInstance": ln, "callReference": ref})
        await s.send("CallState", {"callState": 5, "lineInstance": ln, "callReference": ref})
        await s.send("DisplayPromptStatus", {"timeout": 0, "promptStatus": "\x80\x18", "lineInstance": ln,
                                             "callReference": ref})
        await s.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 1,
                                        "validKeyMask": 0xFFFFFFFF})

    async def answer(self, callee: CallLeg) -> None:
        """The callee answered: connect both legs and open media on both (§5.2 step 5)."""
        caller = callee.peer
        await self._connect(callee)
        if caller is not None and caller.state != "ended":
            await self._connect(caller)
            await self._open_media(caller)
        await self._open_media(callee)

    async def _close_media(self, leg: CallLeg, notify: bool = True) -> None:
        """Close ``leg``'s RTP: our endpoint, and (``notify``) the station's CloseReceiveChannel +
        StopMediaTransmission for what was opened, so that media can be opened again later."""
        if leg.endpoint is not None:
            await leg.endpoint.close()
            leg.endpoint = None
        s = leg.session
        if notify and not s.closing:
            if leg.media_requested:
                await s.send("CloseReceiveChannel", {"conferenceId": 0, "passThruPartyId": leg.pass_thru,
                                                     "callReference": leg.ref, "portHandlingFlag": 0})
            if leg.media_started:
                await s.send("StopMediaTransmission", {"conferenceId": 0, "passThruPartyId": leg.pass_thru,
                                                       "callReference": leg.ref, "portHandlingFlag": 0})
        leg.media_requested = leg.media_started = False
        leg.rtp_addr = None

    async def hold(self, leg: CallLeg) -> None:
        """The Hold soft key on a connected ``leg``: media off on both ends; the holder gets
        CallState Hold, the OnHold soft keys and a winking line lamp ([AST])."""
        leg.state = "hold"
        for lg in (leg, leg.peer):
            if lg is not None:
                await self._close_media(lg)
        if leg.kind == "sip" and self.bridge is not None:
            try:
                await self.bridge.held(leg)
            except Exception as exc:
                self.errors.append(f"bridge hold: {exc!r}")
        s, ln, ref = leg.session, leg.line, leg.ref
        await s.send("CallState", {"callState": 8, "lineInstance": ln, "callReference": ref})
        await s.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 2,
                                        "validKeyMask": 0xFFFFFFFF})
        await s.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 3})

    async def resume(self, leg: CallLeg) -> None:
        """The Resume soft key on a held ``leg``: Connected again, media reopened on both ends."""
        leg.state = "connected"
        s, ln, ref = leg.session, leg.line, leg.ref
        await s.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 2})
        await s.send("CallState", {"callState": 5, "lineInstance": ln, "callReference": ref})
        await s.send("SelectSoftKeys", {"lineInstance": ln, "callReference": ref, "softKeySetIndex": 1,
                                        "validKeyMask": 0xFFFFFFFF})
        await self._open_media(leg)
        if leg.peer is not None and leg.peer.state == "connected":
            await self._open_media(leg.peer)

    async def transfer_key(self, leg: CallLeg) -> None:
        """The Transfer soft key: on a connected call, hold it and open the transfer call (dial
        tone); on that transfer call, blind-transfer the held party to the dialled number."""
        if leg.state == "connected" and leg.transfer_of is None:
            await self.hold(leg)
            consult = await self.new_outgoing(leg.session, leg.line)
            consult.transfer_of = leg
            return
        held = leg.transfer_of
        if held is None or leg.state not in ("offhook", "dialing"):
            return
        s = leg.session
        transferee = held.peer
        free = self._free_callee(leg.digits, s) if transferee is not None else None
        if free is None or transferee is None or transferee.state == "ended":
            await self._fail(leg, tone=0x25, call_state=7)  # reorder, Congestion
            return
        number = leg.digits
        await self.end_call(leg)
        held.peer = transferee.peer = None
        await self.end_call(held)
        callee, callee_line = free
        t = transferee.session
        await t.send("CallInfo", self._call_info(t, transferee.number, number, transferee.line, transferee.ref,
                                                 call_type=2))
        await self._ring(transferee, callee, callee_line, number)

    async def _open_media(self, leg: CallLeg) -> None:
        if leg.media_requested:
            return
        leg.media_requested = True
        s = leg.session
        await s.send("OpenReceiveChannel", {
            "conferenceId": leg.ref, "passThruPartyId": leg.pass_thru, "millisecondPacketSize": 20,
            "compressionType": leg.compression_type, "echoCancellation": 0, "g723BitRate": 0, "callReference": leg.ref,
        })

    async def _start_media(self, leg: CallLeg, remote: tuple[str, int]) -> None:
        s = leg.session
        leg.media_started = True
        await s.send("StartMediaTransmission", {
            "conferenceId": leg.ref, "passThruPartyId": leg.pass_thru, "remoteIpAddr": remote[0],
            "remotePortNumber": remote[1], "millisecondPacketSize": 20, "compressionType": leg.compression_type,
            "precedenceValue": 127, "silenceSuppression": 0, "maxFramesPerPacket": 0, "g723BitRate": 0,
            "callReference": leg.ref,
        })

    async def media_ready(self, leg: CallLeg) -> None:
        """The station acknowledged its receive channel: point the media where it belongs."""
        assert leg.rtp_addr is not None
        if leg.kind in ("echo", "tone"):
            host = self.config.rtp_host or leg.session.transport.local_ip
            endpoint = await RTPEndpoint.open(host, 0, keep_seconds=1.0, keep_payloads=0)
            leg.endpoint = endpoint
            pt = _payload_type(leg.compression_type)
            if leg.kind == "echo":
                sender = RTPSender(payload_type=pt, samples_per_packet=160)

                def reflect(packet: RTPPacket, _addr: tuple[str, int], leg: CallLeg = leg) -> None:
                    if leg.rtp_addr is not None and leg.reflected < ECHO_LIMIT and leg.endpoint is not None:
                        leg.reflected += 1
                        leg.endpoint.send_packet(sender.packet(packet.payload), leg.rtp_addr)

                endpoint.on_packet = reflect
            else:
                audio = self._tone if pt == PT_PCMU else self._tone_alaw
                endpoint.start_sending(leg.rtp_addr, looping_source(audio, 160), payload_type=pt,
                                       packet_ms=20, duration=self.config.tone_seconds)
            await self._start_media(leg, (endpoint.local_ip, endpoint.local_port))
        elif leg.kind == "sip" and self.bridge is not None:
            try:
                await self.bridge.media_ready(leg)
            except Exception as exc:
                self.errors.append(f"bridge media: {exc!r}")
        elif leg.kind == "station" and leg.peer is not None:
            peer = leg.peer
            if peer.rtp_addr is not None and peer.state != "ended":
                await self._start_media(leg, peer.rtp_addr)
                await self._start_media(peer, leg.rtp_addr)

    async def end_call(self, leg: CallLeg, notify_self: bool = True) -> None:
        """Tear down ``leg`` and its peer (§5.2 step 6); a transfer call ends alone, its held
        call stays held."""
        for lg in (leg, leg.peer):
            if lg is None or lg.state == "ended":
                continue
            lg.state = "ended"
            if lg.dial_task is not None:
                lg.dial_task.cancel()
            if lg.kind == "sip" and not lg.bridge_done and self.bridge is not None:
                lg.bridge_done = True
                try:
                    await self.bridge.ended(lg)
                except Exception as exc:
                    self.errors.append(f"bridge end: {exc!r}")
            s = lg.session
            s.legs.pop(lg.ref, None)
            notify = not s.closing and (lg is not leg or notify_self)
            await self._close_media(lg, notify)
            if not notify:
                continue
            ln, ref = lg.line, lg.ref
            await s.send("StopTone", {"lineInstance": ln, "callReference": ref})
            await s.send("CallState", {"callState": 2, "lineInstance": ln, "callReference": ref})
            await s.send("ClearPromptStatus", {"lineInstance": ln, "callReference": ref})
            await s.send("SetRinger", {"ringMode": 1, "ringDuration": 1, "lineInstance": ln, "callReference": ref})
            await s.send("SetLamp", {"stimulus": LINE, "stimulusInstance": ln, "lampMode": 1})
            await s.send("SelectSoftKeys", {"lineInstance": 0, "callReference": 0, "softKeySetIndex": 0,
                                            "validKeyMask": 0xFFFFFFFF})


async def serve_forever(config: LabConfig) -> None:
    """Run the lab CM until cancelled (for ``skinnysip sccp lab-cm``)."""
    async with LabCallManager(config) as cm:
        assert cm.server is not None
        await cm.server.serve_forever()
