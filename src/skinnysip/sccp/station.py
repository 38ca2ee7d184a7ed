"""SCCP station state machine (sans-IO): registration, keepalive, calls and media signalling.

The :class:`Station` is what a Cisco IP phone does on its control connection, without the
connection. It is fed decoded messages (:meth:`Station.receive`) and "time is now T"
(:meth:`Station.tick`), and answers with frames to send (:meth:`Station.take_outgoing`),
events (returned by every call) and the next timer deadline (:meth:`Station.next_deadline`).
It never opens a socket, sleeps or reads a clock; times are float seconds on any monotonic
scale the driver chooses.

Sequences follow ``sccp-reference.md``: registration §5.1 (Register → RegisterAck /
RegisterReject → CapabilitiesReq/Res → ButtonTemplateReq, SoftKeyTemplateReq, SoftKeySetReq,
LineStatReq per line, SpeedDialStatReq per speed dial → TimeDateReq), keepalive §3.4,
outgoing call §5.2, incoming call §5.3, media §3.18–§3.22, unregister §3.17.

Errors: caller mistakes (a bad device name, an undiallable digit, acting before
registration) raise :class:`StationError` (a ``ValueError``); bytes never reach this layer
undecoded, so no decode errors are raised here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skinnysip.sccp import enums
from skinnysip.sccp.messages import SCCPMessage, encode

# --------------------------------------------------------------------------------------
# constants (reference §4)

CALL_STATE_OFFHOOK, CALL_STATE_ONHOOK, CALL_STATE_RINGIN, CALL_STATE_CONNECTED = 1, 2, 4, 5

BUTTON_LINE = 0x09
BUTTON_SPEED_DIAL = 0x02
BUTTON_BLF_SPEED_DIAL = 0x15
SOFTKEY_ANSWER_DEFAULT = 11  # reference §4.7 (events 1–18 agree in all three sources)
SOFTKEY_NEWCALL_DEFAULT = 2
#: soft-key event numbers 1–18 by label (reference §4.7; the same in [WS], [AST] and [CS]). The
#: number actually sent is the one the CM's template gives for the label; these are fallbacks.
SOFTKEY_DEFAULTS: dict[str, int] = {
    "Redial": 1, "NewCall": 2, "Hold": 3, "Transfer": 4, "CFwdALL": 5, "CFwdBusy": 6,
    "CFwdNoAnswer": 7, "<<": 8, "EndCall": 9, "Resume": 10, "Answer": 11, "Info": 12,
    "Confrn": 13, "Park": 14, "Join": 15, "MeetMe": 16, "PickUp": 17, "GPickUp": 18,
}
RING_OFF = 1

#: Header version values Wireshark's SKINNY dissector accepts (reference §1.2); with any other
#: value it decides the message is not SKINNY and leaves it undissected.
WIRESHARK_HEADER_VERSIONS: frozenset[int] = frozenset({0x00, 0x0A, 0x0B, *range(0x0F, 0x17)})


def negotiated_header_version(protocol_version: int) -> int:
    """The header version field for a message sent once ``protocol_version`` is negotiated
    (reference §1.2, [CS]): the version itself when it is >= 10 and one of
    :data:`WIRESHARK_HEADER_VERSIONS` (0x0A, 0x0B, 0x0F–0x16), otherwise 0 ("Basic")."""
    if protocol_version >= 10 and protocol_version in WIRESHARK_HEADER_VERSIONS:
        return protocol_version
    return 0

MEDIA_G711_ALAW_64K = enums.MEDIA_PAYLOAD_G711_ALAW_64K
MEDIA_G711_ULAW_64K = enums.MEDIA_PAYLOAD_G711_ULAW_64K

#: Built-in label escapes (0x80 + code) seen in soft-key labels and prompts (reference §1.3;
#: codes 1–18 are the soft-key labels of §4.7).
LABELS: dict[int, str] = {
    0x01: "Redial", 0x02: "NewCall", 0x03: "Hold", 0x04: "Transfer", 0x05: "CFwdALL",
    0x06: "CFwdBusy", 0x07: "CFwdNoAnswer", 0x08: "<<", 0x09: "EndCall", 0x0A: "Resume",
    0x0B: "Answer", 0x0C: "Info", 0x0D: "Confrn", 0x0E: "Park", 0x0F: "Join", 0x10: "MeetMe",
    0x11: "PickUp", 0x12: "GPickUp", 0x16: "Ring out", 0x17: "From", 0x18: "Connected",
    0x19: "Busy", 0x1B: "Call Waiting", 0x20: "Enter number",
}

#: Device-name rules (what ``validate_device_name`` accepts). All names fit ``char[16]``
#: (at most 15 characters). Hex digits are case-insensitive.
#:
#: - ``SEP`` + 12 hex digits: IP phones and IP Communicator (Selsius Ethernet Phone + MAC)
#: - ``ATA`` + 12 hex digits: ATA 186/188 ports
#: - ``BAT`` + 12 hex digits: phones added with a dummy MAC by the Bulk Administration Tool
#: - ``VGC`` + 12 hex digits: VG248 gateway ports
#: - ``AN`` + 10 hex digits + 3 decimal digits: SCCP analog gateway ports (MAC tail + port)
#: - ``CSF`` / ``BOT`` / ``TCT`` / ``TAB`` + 1–12 letters or digits: Jabber-style soft clients
DEVICE_NAME_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("SEP + 12 hex digits", re.compile(r"SEP[0-9A-Fa-f]{12}")),
    ("ATA + 12 hex digits", re.compile(r"ATA[0-9A-Fa-f]{12}")),
    ("BAT + 12 hex digits", re.compile(r"BAT[0-9A-Fa-f]{12}")),
    ("VGC + 12 hex digits", re.compile(r"VGC[0-9A-Fa-f]{12}")),
    ("AN + 10 hex digits + 3 digit port", re.compile(r"AN[0-9A-Fa-f]{10}[0-9]{3}")),
    ("CSF/BOT/TCT/TAB + 1-12 letters or digits", re.compile(r"(?:CSF|BOT|TCT|TAB)[A-Za-z0-9]{1,12}")),
)


def keepalive_ack_timeout(interval: float) -> float:
    """How long a KeepAlive waits for its KeepAliveAck by default (seconds): a quarter of the
    keepalive interval, at least 2 s (room for a loaded machine) and at most 10 s. A CM that
    stopped answering is so detected within one interval plus this margin of its last
    KeepAliveAck (reference §3.4: the station keeps alive every keepAliveInterval seconds;
    [AST] itself gives up on a station after 3 intervals of silence)."""
    return max(2.0, min(10.0, interval / 4))


class StationError(ValueError):
    """A request the station cannot carry out (bad device name, digit, or wrong state)."""


def validate_device_name(name: str) -> str:
    """Return ``name`` if it matches one of :data:`DEVICE_NAME_RULES`; raise :class:`StationError`."""
    for _, pattern in DEVICE_NAME_RULES:
        if pattern.fullmatch(name):
            return name
    rules = "; ".join(r for r, _ in DEVICE_NAME_RULES)
    raise StationError(f"invalid device name {name!r}: expected one of: {rules}")


def keypad_code(digit: str) -> int:
    """KeypadButton code of one dial character (reference §3.11); :class:`StationError` if none."""
    try:
        return enums.keypad_code(digit)
    except ValueError:
        raise StationError(f"cannot dial {digit!r}: use 0-9, *, #, A-D or +") from None


def label_text(label: str) -> str:
    """Expand 0x80+code label escapes (reference §1.3) into readable text."""
    out: list[str] = []
    i = 0
    while i < len(label):
        ch = label[i]
        if ch == "\x80" and i + 1 < len(label):
            code = ord(label[i + 1])
            out.append(LABELS.get(code, f"<label 0x{code:02X}>"))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------
# events (small dataclasses, as h11 does)


@dataclass(frozen=True)
class Event:
    """Base class of everything :class:`Station` reports."""


@dataclass(frozen=True)
class Registered(Event):
    """RegisterAck arrived (reference §3.2). ``keep_alive_interval`` in seconds."""

    keep_alive_interval: int
    secondary_keep_alive_interval: int
    protocol_version: int
    date_template: str


@dataclass(frozen=True)
class RegisterRejected(Event):
    """RegisterReject arrived; ``reason`` is its free text (reference §3.3)."""

    reason: str


@dataclass(frozen=True)
class RegistrationComplete(Event):
    """All configuration requests were answered and DefineTimeDate arrived (§5.1 step 12)."""


@dataclass(frozen=True)
class KeepAliveAcked(Event):
    """KeepAliveAck arrived; ``round_trip`` seconds since the matching KeepAlive, if known."""

    round_trip: float | None


@dataclass(frozen=True)
class KeepAliveTimedOut(Event):
    """No KeepAliveAck came within ``timeout`` seconds of a KeepAlive sent while registered
    (reference §3.4): the call manager is taken for dead and the driver should drop the
    connection and register again. Reported once per unanswered KeepAlive."""

    timeout: float
    keep_alive_interval: int


@dataclass(frozen=True)
class CallStateChanged(Event):
    """CallState arrived (reference §3.13)."""

    call_state: int
    name: str
    line_instance: int
    call_reference: int


@dataclass(frozen=True)
class IncomingCall(Event):
    """CallState RingIn for a call reference not seen ringing before (reference §5.3)."""

    line_instance: int
    call_reference: int


@dataclass(frozen=True)
class CallEnded(Event):
    """CallState OnHook for a known call."""

    line_instance: int
    call_reference: int


@dataclass(frozen=True)
class OpenReceiveChannelRequested(Event):
    """The CM wants a receive channel (reference §3.18). The driver binds a UDP socket and
    calls :meth:`Station.receive_channel_opened` (or ``receive_channel_failed``)."""

    conference_id: int
    pass_thru_party_id: int
    call_reference: int
    packet_ms: int
    compression_type: int


@dataclass(frozen=True)
class StartMediaRequested(Event):
    """StartMediaTransmission (reference §3.20): send RTP to ``remote_ip``:``remote_port``."""

    conference_id: int
    pass_thru_party_id: int
    call_reference: int
    remote_ip: str
    remote_port: int
    packet_ms: int
    compression_type: int
    #: the RFC2833PayloadType field (reference §3.20); 0 when the CM did not name one
    rfc2833_payload_type: int = 0


@dataclass(frozen=True)
class StopMediaRequested(Event):
    """StopMediaTransmission (reference §3.22): stop sending for ``pass_thru_party_id``."""

    pass_thru_party_id: int
    call_reference: int


@dataclass(frozen=True)
class CloseReceiveChannelRequested(Event):
    """CloseReceiveChannel (reference §3.22): close the receive socket for ``pass_thru_party_id``."""

    pass_thru_party_id: int
    call_reference: int


@dataclass(frozen=True)
class Unregistered(Event):
    """UnregisterAck arrived; ``status`` 0 OK, 1 error, 2 NAK (reference §4.10)."""

    status: int


@dataclass(frozen=True)
class ResetRequested(Event):
    """Reset arrived (1 reset, 2 restart, 3 apply-config)."""

    reset_type: int


# --------------------------------------------------------------------------------------
# collected state


@dataclass
class Capability:
    """One CapabilitiesRes entry: codec number (§4.9) and max ms of audio per packet."""

    payload_capability: int
    max_frames_per_packet: int = 40


@dataclass
class StationConfig:
    """What the station announces.

    ``protocol_version`` is the Register protocolVer byte (≥ 17 asks for the v17 layouts);
    ``station_ip`` is the local address of the connected socket (the driver fills it in).

    ``header_version`` is the policy for the 12-byte header's version field (reference §1.2):

    - ``"auto"`` (default), as the phones in the [CS] captures do: 0 in Register and in anything
      sent before RegisterAck; afterwards :func:`negotiated_header_version` of the negotiated
      protocol (the version when it is >= 10 and Wireshark accepts it, else 0). Wireshark
      picks its protocol-17 (20-byte address) layouts from this field, so a session at 17+
      is only dissected correctly with it.
    - an ``int`` (u32): written in every message, Register included. 0 is what [AST] sends
      and accepts everywhere (§7 item 1); values outside 0, 0x0A, 0x0B, 0x0F–0x16 make
      Wireshark skip the message and [CS] discard it (useful only for fault tests).

    It never changes how received messages are decoded (layouts follow the negotiated
    protocol, §7 item 2).
    """

    device_name: str = "SEP001122334455"
    device_type: int = 7
    protocol_version: int = 11
    station_ip: str = "0.0.0.0"
    instance: int = 1
    max_streams: int = 5
    capabilities: tuple[Capability, ...] = (
        Capability(MEDIA_G711_ULAW_64K),
        Capability(MEDIA_G711_ALAW_64K),
    )
    #: seconds to wait for CapabilitiesReq after RegisterAck before asking for the
    #: configuration anyway (a CM may skip CapabilitiesReq).
    config_request_delay: float = 2.0
    #: seconds a KeepAlive sent while registered may wait for its KeepAliveAck before
    #: :class:`KeepAliveTimedOut`; None: :func:`keepalive_ack_timeout` of the interval the
    #: RegisterAck gave. A dead call manager is so noticed within one interval plus this.
    keepalive_ack_timeout: float | None = None
    validate_name: bool = True
    header_version: int | str = "auto"

    def __post_init__(self) -> None:
        hv = self.header_version
        if hv != "auto" and (isinstance(hv, bool) or not isinstance(hv, int) or not 0 <= hv <= 0xFFFFFFFF):
            raise StationError(f"header version {hv!r} is not 'auto' or a u32")
        if self.validate_name:
            validate_device_name(self.device_name)
        if not 0 <= self.protocol_version <= 255:
            raise StationError(f"protocol version {self.protocol_version} is not 0-255")
        if not 0 <= self.device_type <= 0xFFFFFFFF:
            raise StationError(f"device type {self.device_type} is not a u32")


@dataclass
class LineInfo:
    """A line from the button template, completed by LineStat (reference §3.7)."""

    line_number: int
    dir_number: str = ""
    fully_qualified_display_name: str = ""
    text_label: str = ""
    display_options: int = 0


@dataclass
class SpeedDialInfo:
    """A speed dial from SpeedDialStat (reference §3.17)."""

    number: int
    dir_number: str = ""
    display_name: str = ""


@dataclass
class SoftKeyInfo:
    """One soft-key template entry: label (escapes expanded) and the event number to send."""

    label: str
    event: int


@dataclass
class Call:
    """What the station knows about one call."""

    line_instance: int
    call_reference: int = 0
    states: list[str] = field(default_factory=list)
    incoming: bool = False
    pending_digits: str = ""
    dialed_number: str = ""
    calling_party: str = ""
    called_party: str = ""
    tones: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    ended: bool = False

    @property
    def state(self) -> str:
        return self.states[-1] if self.states else "Idle"


# --------------------------------------------------------------------------------------


def _int(fields: Mapping[str, Any], *names: str, default: int = 0) -> int:
    for n in names:
        v = fields.get(n)
        if isinstance(v, int):
            return v
    return default


def _str(fields: Mapping[str, Any], *names: str) -> str:
    for n in names:
        v = fields.get(n)
        if isinstance(v, str):
            return v
    return ""


def _list(fields: Mapping[str, Any], *names: str) -> list[dict[str, Any]]:
    for n in names:
        v = fields.get(n)
        if isinstance(v, list):
            return [x for x in v if isinstance(x, dict)]
    return []


class Station:
    """The station side of one SCCP control connection (sans-IO).

    Typical use by a driver::

        st = Station(StationConfig(device_name="SEP001122334455", station_ip=local_ip))
        st.register(now)
        send(st.take_outgoing())
        for msg in received: events = st.receive(msg, now); send(st.take_outgoing())
        events = st.tick(now)            # at st.next_deadline()

    ``protocol_version`` is the negotiated version (decides classic vs v17 layouts; the
    driver copies it to its frame decoder after each call). :attr:`header_version` is the
    header field the next frame will carry (policy: :class:`StationConfig`).
    """

    def __init__(self, config: StationConfig) -> None:
        self.config = config
        self.protocol_version = config.protocol_version
        self.state = "idle"  # idle, registering, registered, rejected, unregistering, unregistered
        self.negotiated = False  # RegisterAck received for the current registration
        self.reject_reason = ""
        self.keep_alive_interval: int | None = None
        self.secondary_keep_alive_interval: int | None = None
        self.date_template = ""
        self.capabilities_requested = False
        self.config_requested = False
        self.registration_complete = False
        self.lines: dict[int, LineInfo] = {}
        self.speed_dials: dict[int, SpeedDialInfo] = {}
        self.soft_keys: list[SoftKeyInfo] = []
        self.soft_key_sets: list[list[int]] = []
        self.buttons: list[tuple[int, int]] = []
        self.time_date: dict[str, Any] | None = None
        self.calls: dict[int, Call] = {}
        self.pending_call: Call | None = None
        self.keepalives_sent = 0
        self.keepalive_acks = 0
        self._outbox: list[bytes] = []
        self._awaiting: set[tuple[str, int]] = set()
        self._time_date_requested = False
        self._registered_at: float | None = None
        self._next_keepalive: float | None = None
        self._keepalive_sent_at: float | None = None
        self._ack_deadline: float | None = None

    # ---- output ------------------------------------------------------------------------

    def take_outgoing(self) -> list[bytes]:
        """Frames queued since the last call, in order (whole SCCP frames)."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def header_version(self) -> int:
        """The header version field of the next frame sent (reference §1.2; see
        :class:`StationConfig` ``header_version``)."""
        policy = self.config.header_version
        if isinstance(policy, int):
            return policy
        return negotiated_header_version(self.protocol_version) if self.negotiated else 0

    def _send(self, name: str, fields: Mapping[str, Any] | None = None) -> None:
        self._outbox.append(encode(name, dict(fields or {}), protocol_version=self.protocol_version,
                                   header_version=self.header_version))

    @property
    def keepalive_ack_timeout(self) -> float:
        """Seconds a KeepAlive waits for its KeepAliveAck (see :class:`StationConfig`)."""
        if self.config.keepalive_ack_timeout is not None:
            return self.config.keepalive_ack_timeout
        return keepalive_ack_timeout(self.keep_alive_interval or 30)

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`tick` has work to do, or ``None``."""
        deadlines = [d for d in (self._next_keepalive, self._config_deadline(), self._ack_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def _config_deadline(self) -> float | None:
        if self.state == "registered" and not self.config_requested and self._registered_at is not None:
            return self._registered_at + self.config.config_request_delay
        return None

    # ---- user actions ------------------------------------------------------------------

    def register(self, now: float) -> None:
        """Queue Register (reference §3.1: the 68-byte form of a 7960 with protocol 11)."""
        if self.state not in ("idle", "unregistered"):
            raise StationError(f"cannot register in state {self.state}")
        self.state = "registering"
        self.negotiated = False
        self.protocol_version = self.config.protocol_version
        self._send(
            "Register",
            {
                "deviceName": self.config.device_name,
                "userId": 0,
                "instance": self.config.instance,
                "stationIpAddr": self.config.station_ip,
                "deviceType": self.config.device_type,
                "maxStreams": self.config.max_streams,
                "activeStreams": 0,
                "protocolVer": self.config.protocol_version,
            },
        )

    def send_keepalive(self, now: float) -> None:
        """Queue a KeepAlive now (allowed before registration, reference §3.4)."""
        self._send("KeepAlive")
        self.keepalives_sent += 1
        if self._keepalive_sent_at is None:  # the oldest unanswered KeepAlive gives the round trip
            self._keepalive_sent_at = now
        if self.state == "registered" and self._ack_deadline is None:
            self._ack_deadline = now + self.keepalive_ack_timeout

    def place_call(self, number: str, now: float, line_instance: int | None = None, *,
                   via: str = "offhook") -> Call:
        """Go off-hook on ``line_instance`` (default: the first line) and dial ``number`` digit
        by digit once the CM confirms CallState OffHook (reference §5.2 step 1).

        ``via``: ``"offhook"`` (OffHook), ``"stimulus"`` (Stimulus Line 0x09 with the line as
        instance) or ``"softkey"`` (SoftKeyEvent NewCall, number read from the template).
        """
        self._require_registered()
        if via not in ("offhook", "stimulus", "softkey"):
            raise StationError(f"unknown off-hook method {via!r}: use offhook, stimulus or softkey")
        for d in number:
            keypad_code(d)
        line = line_instance if line_instance is not None else self.first_line()
        call = Call(line_instance=line, pending_digits=number)
        self.pending_call = call
        if via == "stimulus":
            self._send("Stimulus", {"stimulus": BUTTON_LINE, "stimulusInstance": line, "callReference": 0})
        elif via == "softkey":
            self.press_soft_key("NewCall", line_instance=line)
        else:
            self._send("OffHook", {"lineInstance": line, "callReference": 0})
        return call

    def dial(self, digits: str, call: Call | None = None) -> None:
        """Queue one KeypadButton per character of ``digits`` for ``call`` (or the active call)."""
        call = call or self.active_call()
        line = call.line_instance if call else self.first_line()
        ref = call.call_reference if call else 0
        codes = [keypad_code(d) for d in digits]
        for code in codes:
            self._send("KeypadButton", {"kpButton": code, "lineInstance": line, "callReference": ref})
        if call is not None:
            call.dialed_number += digits

    def answer(self, call: Call | None = None, *, use_soft_key: bool = False) -> None:
        """Answer a ringing call: OffHook, or SoftKeyEvent Answer with the event number the
        soft-key template gave (reference §5.3, §4.7)."""
        call = call or self.ringing_call()
        if call is None:
            raise StationError("no ringing call to answer")
        if use_soft_key:
            self.press_soft_key("Answer", call)
        else:
            self._send("OffHook", {"lineInstance": call.line_instance, "callReference": call.call_reference})

    def press_soft_key(self, label: str, call: Call | None = None, *, line_instance: int | None = None) -> int:
        """Queue SoftKeyEvent for the soft key labelled ``label`` (``"Hold"``, ``"Resume"``,
        ``"Transfer"``, ``"EndCall"``, ``"Answer"``, ``"NewCall"``…) on ``call`` (its line
        instance and call reference), or on ``line_instance`` with call reference 0. The event
        number is the one the CM's soft-key template gives for the label, else the common
        number of reference §4.7. Returns the number sent; :class:`StationError` for a label
        neither the template nor §4.7 knows."""
        default = SOFTKEY_DEFAULTS.get(label)
        event = self.soft_key_event(label, default if default is not None else -1)
        if event < 0:
            raise StationError(f"no soft key {label!r} in the template or reference §4.7")
        if call is not None:
            line, ref = call.line_instance, call.call_reference
        else:
            line, ref = (line_instance if line_instance is not None else self.first_line()), 0
        self._send("SoftKeyEvent", {"softKeyEvent": event, "lineInstance": line, "callReference": ref})
        return event

    def hang_up(self, call: Call | None = None) -> None:
        """Queue OnHook for ``call`` (or the active call) (reference §5.2 step 6)."""
        call = call or self.active_call()
        if call is None:
            self._send("OnHook", {"lineInstance": self.first_line(), "callReference": 0})
            return
        self._send("OnHook", {"lineInstance": call.line_instance, "callReference": call.call_reference})

    def unregister(self, now: float) -> None:
        """Queue Unregister (reason 0). The CM answers UnregisterAck ([CS]) or closes ([AST])."""
        self.state = "unregistering"
        self._next_keepalive = None
        self._ack_deadline = None
        self._send("Unregister", {})

    def receive_channel_opened(self, request: OpenReceiveChannelRequested, ip: str, port: int) -> None:
        """Queue OpenReceiveChannelAck (status 0) with the bound socket's address and port and
        the passThruPartyId of ``request`` in its own slot (reference §3.19)."""
        self._send(
            "OpenReceiveChannelAck",
            {
                "mediaReceptionStatus": 0,
                "ipAddr": ip,
                "portNumber": port,
                "passThruPartyId": request.pass_thru_party_id,
                "callReference": request.call_reference,
            },
        )

    def receive_channel_failed(self, request: OpenReceiveChannelRequested, status: int = 8) -> None:
        """Queue OpenReceiveChannelAck with a failure status (default 8 OutOfSockets, §4.10)."""
        self._send(
            "OpenReceiveChannelAck",
            {"mediaReceptionStatus": status, "ipAddr": "0.0.0.0", "portNumber": 0,
             "passThruPartyId": request.pass_thru_party_id, "callReference": request.call_reference},
        )

    # ---- queries -----------------------------------------------------------------------

    def first_line(self) -> int:
        return min(self.lines) if self.lines else 1

    def active_call(self) -> Call | None:
        live = [c for c in self.calls.values() if not c.ended]
        if live:
            return live[-1]
        return self.pending_call

    def ringing_call(self) -> Call | None:
        for c in self.calls.values():
            if not c.ended and c.state == "RingIn":
                return c
        return None

    def soft_key_event(self, label: str, default: int) -> int:
        """The event number the template assigns to ``label`` (reference §4.7), else ``default``."""
        for key in self.soft_keys:
            if key.label.lower() == label.lower():
                return key.event
        return default

    def _require_registered(self) -> None:
        if self.state != "registered":
            raise StationError(f"station is not registered (state {self.state})")

    # ---- time --------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Run timers due at ``now``: the keepalive loop (every keepAliveInterval seconds) and
        the fallback configuration requests; :class:`KeepAliveTimedOut` when a KeepAlive's
        KeepAliveAck is overdue."""
        events: list[Event] = []
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_deadline = None
            if self.state == "registered":
                events.append(KeepAliveTimedOut(self.keepalive_ack_timeout, self.keep_alive_interval or 30))
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self.send_keepalive(now)
            interval = self.keep_alive_interval or 30
            self._next_keepalive += interval
            if self._next_keepalive <= now:  # driver was late: do not burst
                self._next_keepalive = now + interval
        deadline = self._config_deadline()
        if deadline is not None and now >= deadline:
            self._request_configuration()
        return events

    # ---- input -------------------------------------------------------------------------

    def receive(self, message: SCCPMessage, now: float) -> list[Event]:
        """Process one message from the CM; return the events it caused."""
        handler = getattr(self, f"_on_{message.name}", None)
        if handler is None:
            return []
        result: list[Event] = handler(message.fields, now) or []
        return result

    def _on_RegisterAck(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.state = "registered"
        self.negotiated = True
        self.keep_alive_interval = _int(f, "keepAliveInterval", default=30) or 30
        self.secondary_keep_alive_interval = _int(f, "secondaryKeepAliveInterval")
        self.date_template = _str(f, "dateTemplate")
        offered = _int(f, "maxProtocolVer")
        # [AST] writes ASCII '0' (0x30) there, [CS] the negotiated version (reference §7.4):
        # never go above what we announced; 0 means "not said".
        if 0 < offered < self.config.protocol_version:
            self.protocol_version = offered
        self._registered_at = now
        self._next_keepalive = now + self.keep_alive_interval
        return [Registered(self.keep_alive_interval, self.secondary_keep_alive_interval,
                           self.protocol_version, self.date_template)]

    def _on_RegisterReject(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.state = "rejected"
        self.reject_reason = label_text(_str(f, "text"))
        return [RegisterRejected(self.reject_reason)]

    def _on_KeepAliveAck(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.keepalive_acks += 1
        rtt = None if self._keepalive_sent_at is None else max(0.0, now - self._keepalive_sent_at)
        self._keepalive_sent_at = None
        self._ack_deadline = None
        return [KeepAliveAcked(rtt)]

    def _on_CapabilitiesReq(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.capabilities_requested = True
        if self.state != "registered":  # e.g. Unregister already sent: nothing more to configure
            return []
        caps = [
            {"payloadCapability": c.payload_capability, "maxFramesPerPacket": c.max_frames_per_packet}
            for c in self.config.capabilities
        ]
        self._send("CapabilitiesRes", {"capCount": len(caps), "caps": caps})
        self._request_configuration()
        return []

    def _request_configuration(self) -> None:
        if self.config_requested:
            return
        self.config_requested = True
        for name in ("ButtonTemplateReq", "SoftKeyTemplateReq", "SoftKeySetReq"):
            self._send(name)
        self._awaiting.update({("ButtonTemplate", 0), ("SoftKeyTemplateRes", 0), ("SoftKeySetRes", 0)})

    def _answered(self, key: tuple[str, int]) -> list[Event]:
        self._awaiting.discard(key)
        if (not self._awaiting and self.config_requested and not self._time_date_requested
                and self.state == "registered"):
            self._time_date_requested = True
            self._send("TimeDateReq")
            self._awaiting.add(("DefineTimeDate", 0))
        return []

    def _on_ButtonTemplate(self, f: Mapping[str, Any], now: float) -> list[Event]:
        defs = _list(f, "definitions", "buttons", "buttonDefinitions")
        count = _int(f, "buttonCount", default=len(defs))
        for d in defs[:count]:
            instance = _int(d, "instanceNumber")
            kind = _int(d, "buttonDefinition")
            self.buttons.append((instance, kind))
            ask = self.state == "registered"  # not after Unregister
            if kind == BUTTON_LINE and instance not in self.lines:
                self.lines[instance] = LineInfo(instance)
                if ask:
                    self._send("LineStatReq", {"lineNumber": instance})
                    self._awaiting.add(("LineStat", instance))
            elif kind in (BUTTON_SPEED_DIAL, BUTTON_BLF_SPEED_DIAL) and instance not in self.speed_dials:
                self.speed_dials[instance] = SpeedDialInfo(instance)
                if ask:
                    self._send("SpeedDialStatReq", {"speedDialNumber": instance})
                    self._awaiting.add(("SpeedDialStat", instance))
        return self._answered(("ButtonTemplate", 0))

    def _on_LineStat(self, f: Mapping[str, Any], now: float) -> list[Event]:
        n = _int(f, "lineNumber")
        line = self.lines.setdefault(n, LineInfo(n))
        line.dir_number = _str(f, "lineDirNumber")
        line.fully_qualified_display_name = label_text(_str(f, "lineFullyQualifiedDisplayName"))
        line.text_label = label_text(_str(f, "lineTextLabel"))
        line.display_options = _int(f, "lineDisplayOptions")
        return self._answered(("LineStat", n))

    def _on_LineStatV2(self, f: Mapping[str, Any], now: float) -> list[Event]:
        n = _int(f, "lineNumber")
        line = self.lines.setdefault(n, LineInfo(n))
        line.dir_number = _str(f, "lineDirNumber", "dirNumber")
        line.fully_qualified_display_name = _str(f, "lineFullyQualifiedDisplayName", "fullyQualifiedDisplayName")
        line.text_label = _str(f, "lineTextLabel", "textLabel")
        return self._answered(("LineStat", n))

    def _on_SpeedDialStat(self, f: Mapping[str, Any], now: float) -> list[Event]:
        n = _int(f, "speedDialNumber", "number")
        sd = self.speed_dials.setdefault(n, SpeedDialInfo(n))
        sd.dir_number = _str(f, "speedDialDirNumber", "dirNumber")
        sd.display_name = _str(f, "speedDialDisplayName", "displayName")
        return self._answered(("SpeedDialStat", n))

    def _on_SoftKeyTemplateRes(self, f: Mapping[str, Any], now: float) -> list[Event]:
        defs = _list(f, "definitions", "softKeyTemplateDefinition", "softKeys")
        count = _int(f, "softKeyCount", default=len(defs))
        self.soft_keys = [
            SoftKeyInfo(label_text(_str(d, "softKeyLabel")), _int(d, "softKeyEvent"))
            for d in defs[:count]
            if _str(d, "softKeyLabel") or _int(d, "softKeyEvent")
        ]
        return self._answered(("SoftKeyTemplateRes", 0))

    def _on_SoftKeySetRes(self, f: Mapping[str, Any], now: float) -> list[Event]:
        sets = _list(f, "definitions", "softKeySetDefinition", "sets")
        count = _int(f, "softKeySetCount", default=len(sets))
        self.soft_key_sets = []
        for s in sets[:count]:
            idx = s.get("softKeyTemplateIndex", [])
            self.soft_key_sets.append([i for i in idx if isinstance(i, int) and i] if isinstance(idx, list) else [])
        return self._answered(("SoftKeySetRes", 0))

    def _on_DefineTimeDate(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.time_date = dict(f)
        self._answered(("DefineTimeDate", 0))
        if self._time_date_requested and not self.registration_complete and not self._awaiting:
            self.registration_complete = True
            return [RegistrationComplete()]
        return []

    def _on_UnregisterAck(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self.state = "unregistered"
        self._next_keepalive = None
        self._ack_deadline = None
        return [Unregistered(_int(f, "status"))]

    def _on_Reset(self, f: Mapping[str, Any], now: float) -> list[Event]:
        return [ResetRequested(_int(f, "resetType"))]

    # ---- call signalling ---------------------------------------------------------------

    def _call_for(self, line: int, ref: int) -> Call:
        call = self.calls.get(ref)
        if call is None:
            if self.pending_call is not None and ref:
                call = self.pending_call
                call.call_reference = ref
                if line:
                    call.line_instance = line
                self.pending_call = None
            else:
                call = Call(line_instance=line or self.first_line(), call_reference=ref)
            self.calls[ref] = call
        return call

    def _on_CallState(self, f: Mapping[str, Any], now: float) -> list[Event]:
        state = _int(f, "callState")
        line = _int(f, "lineInstance")
        ref = _int(f, "callReference")
        name = enums.name(enums.CALL_STATES, state)
        call = self._call_for(line, ref)
        first_ring = state == CALL_STATE_RINGIN and "RingIn" not in call.states
        call.states.append(name)
        events: list[Event] = [CallStateChanged(state, name, line, ref)]
        if state == CALL_STATE_OFFHOOK and call.pending_digits:
            digits, call.pending_digits = call.pending_digits, ""
            self.dial(digits, call)
        elif first_ring:
            call.incoming = True
            events.append(IncomingCall(line, ref))
        elif state == CALL_STATE_ONHOOK and not call.ended:
            call.ended = True
            events.append(CallEnded(line, ref))
        return events

    def _note(self, f: Mapping[str, Any], attr: str, text: str) -> None:
        ref = _int(f, "callReference")
        call = self.calls.get(ref) if ref else self.active_call()
        if call is not None and text:
            getattr(call, attr).append(text)

    def _on_StartTone(self, f: Mapping[str, Any], now: float) -> list[Event]:
        tone = _int(f, "tone")
        self._note(f, "tones", enums.name(enums.TONES, tone))
        return []

    def _on_DisplayPromptStatus(self, f: Mapping[str, Any], now: float) -> list[Event]:
        self._note(f, "prompts", label_text(_str(f, "promptStatus", "text")))
        return []

    _on_DisplayPromptStatusV2 = _on_DisplayPromptStatus

    def _on_DialedNumber(self, f: Mapping[str, Any], now: float) -> list[Event]:
        ref = _int(f, "callReference")
        call = self.calls.get(ref)
        if call is not None:
            call.dialed_number = _str(f, "dialedNumber") or call.dialed_number
        return []

    def _on_CallInfo(self, f: Mapping[str, Any], now: float) -> list[Event]:
        ref = _int(f, "callReference")
        call = self.calls.get(ref) or self._call_for(_int(f, "lineInstance"), ref)
        call.calling_party = _str(f, "callingParty") or call.calling_party
        call.called_party = _str(f, "calledParty") or call.called_party
        return []

    _on_CallInfoV2 = _on_CallInfo

    def _on_OpenReceiveChannel(self, f: Mapping[str, Any], now: float) -> list[Event]:
        return [OpenReceiveChannelRequested(
            conference_id=_int(f, "conferenceId"),
            pass_thru_party_id=_int(f, "passThruPartyId"),
            call_reference=_int(f, "callReference"),
            packet_ms=_int(f, "millisecondPacketSize", default=20) or 20,
            compression_type=_int(f, "compressionType", default=MEDIA_G711_ULAW_64K),
        )]

    def _on_StartMediaTransmission(self, f: Mapping[str, Any], now: float) -> list[Event]:
        return [StartMediaRequested(
            conference_id=_int(f, "conferenceId"),
            pass_thru_party_id=_int(f, "passThruPartyId"),
            call_reference=_int(f, "callReference"),
            remote_ip=_str(f, "remoteIpAddr"),
            remote_port=_int(f, "remotePortNumber"),
            packet_ms=_int(f, "millisecondPacketSize", default=20) or 20,
            compression_type=_int(f, "compressionType", default=MEDIA_G711_ULAW_64K),
            rfc2833_payload_type=_int(f, "RFC2833PayloadType"),
        )]

    def _on_StopMediaTransmission(self, f: Mapping[str, Any], now: float) -> list[Event]:
        return [StopMediaRequested(_int(f, "passThruPartyId"), _int(f, "callReference"))]

    def _on_CloseReceiveChannel(self, f: Mapping[str, Any], now: float) -> list[Event]:
        return [CloseReceiveChannelRequested(_int(f, "passThruPartyId"), _int(f, "callReference"))]


def summarize_lines(lines: Iterable[LineInfo]) -> list[dict[str, Any]]:
    """Lines as API dicts: ``lineNumber``, ``dirNumber``, ``label``, ``displayName``."""
    return [
        {"lineNumber": ln.line_number, "dirNumber": ln.dir_number, "label": ln.text_label,
         "displayName": ln.fully_qualified_display_name}
        for ln in lines
    ]
