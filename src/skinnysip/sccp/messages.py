"""SCCP ("Skinny") messages as data, and one generic encoder/decoder that walks the table (sans-IO).

The wire facts are ``sccp-reference.md`` (framing §1, IDs §2, layouts §3).  Like Wireshark's
dissector, every message is a :class:`MessageDef` — ID, name, direction and a field list — and a
single encoder (:func:`encode`) and decoder (:func:`decode_frame`, :class:`FrameDecoder`) serve all
of them, in both directions (station→CM and CM→station).

Frame (§1.1)::

    u32 LE length      = 4 + len(payload)   (counts the message ID and the payload, not itself)
    u32 LE header version (written 0 by default; read back into ``SCCPMessage.header_version``)
    u32 LE messageId
    payload            (length - 4 bytes); a frame is length + 8 bytes

Value types in ``SCCPMessage.fields``: ``int`` for u8/u16/u32/i32; ``str`` for ``char[n]``
(NUL-stripped, latin-1, so the 0x80 label escapes of §1.3 survive as ``"\\x80\\x18"``); ``str`` for
IP addresses (``"10.0.0.1"``, ``"2001:db8::1"``); ``str`` of hex digits for opaque byte fields;
``list[int]`` / ``list[str]`` for fixed arrays; ``list[dict]`` for repeated groups.

Layouts are chosen by the **negotiated protocol version** (the Register ``protocolVer`` byte,
§1.4 and §7 item 2), never by the header version field: ``protocol_version >= 17`` selects the
20-byte IPv4-or-IPv6 address form (``u32 <name>Type`` + 16 bytes, exposed as two fields, e.g.
``ipAddrType`` and ``ipAddr``); ``>= 18`` the 25-byte directory numbers of EnblocCall,
DialedNumber and ForwardStat.

Errors: every malformed byte string raises :class:`SCCPDecodeError` (a ``ValueError``) with a
``reason`` that starts with the message name and names the field (a group count beyond the slots
the message has, e.g. ``capCount`` > 18, or beyond the bytes present); nothing else escapes the
decoder.

Symmetry: ``encode(m.id, m.fields, protocol_version=pv, header_version=m.header_version)`` of a
decoded frame ``m`` gives back ``m.raw`` byte for byte, with two normalisations: the bytes after
the first NUL inside a ``char[n]`` field, and the unused slots of a fixed-slot group
(ButtonTemplate, SoftKeyTemplateRes, SoftKeySetRes), come back as zeros (their values are not
part of the decoded form). Short and long payloads keep their exact size through two keys of
``fields``: ``_short`` names the field where a payload ended before an optional tail the
encoder would otherwise write (an old phone's empty OffHook, [AST]'s short forms, a V2 message
ending inside its strings), and ``_trailing`` holds the bytes beyond the layout (hex; ``""``
for a V2 frame its sender did not pad to 4 bytes); with either, the encoder writes no default
tail and no V2 padding. Decode -> encode -> decode is always stable.  The encoder raises ``ValueError`` for unknown
messages or field names and for values that do not fit their field.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from skinnysip.sccp import enums

__all__ = [
    "HEADER_SIZE", "DEFAULT_MAX_FRAME", "SCCPDecodeError", "FieldDef", "MessageDef", "MESSAGES",
    "MESSAGE_IDS", "SCCPMessage", "encode", "decode_frame", "FrameDecoder", "message_def",
    "wireshark_name", "WIRESHARK_NAMES", "DYNAMIC_STRING_PADDING",
]

HEADER_SIZE = 12
#: decoded-field key of the payload bytes beyond the layout (hex)
TRAILING = "_trailing"
#: decoded-field key naming the field where a short payload ended (see :func:`decode_frame`)
SHORT = "_short"
#: Largest whole frame (length + 8) accepted by :class:`FrameDecoder` by default ([AST] limit, §1.1).
DEFAULT_MAX_FRAME = 2000
#: Dynamic (V2) messages are padded so that the whole frame is a multiple of this (§1.1, §3.15).
DYNAMIC_STRING_PADDING = 4

_INT_FORMATS = {"u8": "<B", "u16": "<H", "u32": "<I", "i32": "<i"}
_INT_SIZES = {"u8": 1, "u16": 2, "u32": 4, "i32": 4}
_INT_RANGES = {"u8": (0, 0xFF), "u16": (0, 0xFFFF), "u32": (0, 0xFFFFFFFF), "i32": (-(2**31), 2**31 - 1)}
_SIZED_TYPES = {"char", "bytes"}
_FIXED_SIZES = {"ip4": 4, "ip6": 16, "ip16": 16}


class SCCPDecodeError(ValueError):
    """Malformed SCCP bytes.  ``reason`` says what is wrong.

    ``messages`` holds the messages a :meth:`FrameDecoder.feed` call decoded before the bad frame
    (so nothing already received is lost); ``fatal`` is True when the stream's framing is lost
    (bad or oversize length) and the connection must be dropped, False when only one frame's
    payload was bad and the decoder can go on.
    """

    def __init__(self, reason: str, *, fatal: bool = True, messages: list[SCCPMessage] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal
        self.messages: list[SCCPMessage] = messages or []


@dataclass(frozen=True)
class FieldDef:
    """One field of a payload layout.

    ``type``: ``u8 u16 u32 i32`` (little-endian integers), ``char`` (``size``-byte NUL-padded
    string), ``bytes`` (``size`` opaque bytes, hex str), ``ip4`` (4 bytes network order),
    ``ip6`` (16 bytes), ``ip16`` (the 16 address bytes of the protocol-17 form; ``ref`` names the
    preceding u32 address-type field), ``cstr`` (one NUL-terminated string of variable length),
    ``group`` (repeated ``fields``), ``strings`` (the run of
    NUL-terminated strings of a dynamic V2 message, one per name in ``names``), ``rest`` (all
    remaining bytes, hex str; for messages whose layout is not in the reference).

    ``count``: for a scalar, the field is an array of ``count`` values (a list); for a group,
    the number of slots.  ``count_field``: the earlier field giving how many group entries are
    used.  ``fixed_slots``: the group always occupies ``count`` slots on the wire (unused ones
    zero), otherwise only the used entries are present.  ``optional``: the field may be missing
    at the end of the payload (firmware- or version-dependent tails, §3.1, §3.11, §3.18);
    ``by_default``: an optional field the encoder writes even when the caller does not give it
    (False for tails that only some firmware sends, e.g. Register after byte 68).
    ``enum``: a key of :data:`skinnysip.sccp.enums.TABLES` for summaries.
    """

    name: str
    type: str
    size: int = 0
    count: int | None = None
    count_field: str | None = None
    fixed_slots: bool = False
    fields: tuple[FieldDef, ...] = ()
    names: tuple[str, ...] = ()
    optional: bool = False
    by_default: bool = True
    enum: str | None = None
    ref: str | None = None

    @property
    def item_size(self) -> int:
        """Bytes of one element (one scalar, or one group entry); 0 for variable types."""
        if self.type in _INT_SIZES:
            return _INT_SIZES[self.type]
        if self.type in _FIXED_SIZES:
            return _FIXED_SIZES[self.type]
        if self.type in _SIZED_TYPES:
            return self.size
        if self.type == "group":
            return sum(f.wire_size for f in self.fields)
        return 0

    @property
    def wire_size(self) -> int:
        """Bytes on the wire for a fixed field (0 for variable-length ones)."""
        if self.type == "group":
            return self.item_size * (self.count or 0) if (self.fixed_slots or not self.count_field) else 0
        return self.item_size * (self.count or 1)


Layout = tuple[FieldDef, ...]


@dataclass(frozen=True)
class MessageDef:
    """One SCCP message: ``id``, ``name`` (Wireshark's, §2), ``direction`` (``"S->CM"``,
    ``"CM->S"``, ``"CM<->CM"`` or ``"?"``), and ``layouts``: ``((since_protocol_version,
    fields), ...)`` in ascending order — the last one whose version is <= the negotiated protocol
    version applies.  ``documented``: False when the reference gives no
    payload layout, in which case the payload is one opaque ``data`` field.  ``dynamic``: a V2
    message ending in NUL-terminated strings, padded to 4 bytes."""

    id: int
    name: str
    direction: str
    layouts: tuple[tuple[int, Layout], ...]
    documented: bool = True
    dynamic: bool = False
    brief: tuple[str, ...] = ()

    def layout(self, protocol_version: int = 0) -> Layout:
        """The field list for a negotiated protocol version (§1.4)."""
        chosen = self.layouts[0][1]
        for since, fields in self.layouts:
            if protocol_version >= since:
                chosen = fields
        return chosen

    @property
    def layout_versions(self) -> tuple[int, ...]:
        """The protocol versions at which the layout changes (``(0,)`` or ``(0, 17)``, ...)."""
        return tuple(since for since, _ in self.layouts)

    @property
    def wireshark_name(self) -> str | None:
        """tshark 4.0's ``skinny.messageId`` name for this ID (see :func:`wireshark_name`)."""
        return WIRESHARK_NAMES.get(self.id)


# --------------------------------------------------------------------------- field helpers

def _u8(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "u8", **kw)


def _u16(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "u16", **kw)


def _u32(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "u32", **kw)


def _char(name: str, size: int, **kw: Any) -> FieldDef:
    return FieldDef(name, "char", size=size, **kw)


def _raw(name: str, size: int, **kw: Any) -> FieldDef:
    return FieldDef(name, "bytes", size=size, **kw)


def _ip4(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "ip4", **kw)


def _ipv46(name: str) -> tuple[FieldDef, FieldDef]:
    """The protocol-17 address form (§1.4): ``u32 <name>Type`` then 16 address bytes."""
    return (FieldDef(name + "Type", "u32", enum="ipAddrType"), FieldDef(name, "ip16", ref=name + "Type"))


def _strings(*names: str) -> FieldDef:
    return FieldDef("strings", "strings", names=names)


def _opt(*items: FieldDef | tuple[FieldDef, ...]) -> tuple[FieldDef, ...]:
    return tuple(replace(f, optional=True) for f in _flat(items))


def _extra(*items: FieldDef | tuple[FieldDef, ...]) -> tuple[FieldDef, ...]:
    """Optional fields not written unless given (or a later field is given)."""
    return tuple(replace(f, optional=True, by_default=False) for f in _flat(items))


def _flat(items: Iterable[FieldDef | tuple[FieldDef, ...]]) -> tuple[FieldDef, ...]:
    out: list[FieldDef] = []
    for item in items:
        if isinstance(item, FieldDef):
            out.append(item)
        else:
            out.extend(item)
    return tuple(out)


def _L(*items: FieldDef | tuple[FieldDef, ...]) -> Layout:  # noqa: N802 - table shorthand
    return _flat(items)


def _li_cr() -> tuple[FieldDef, FieldDef]:
    return (_u32("lineInstance"), _u32("callReference"))


def _key_info() -> tuple[FieldDef, ...]:
    """The 48-byte encryption key block of OpenReceiveChannel / StartMediaTransmission (§3.18)."""
    return (_u32("algorithm"), _u16("keyLen"), _u16("saltLen"), _raw("key", 16), _raw("salt", 16),
            _u32("isMKIPresent"), _u32("keyDerivationRate"))


# --------------------------------------------------------------------------- the message table

_EMPTY: Layout = ()
_OPAQUE: Layout = (FieldDef("data", "rest"),)

_DEFS: list[MessageDef] = []


def _m(id_: int, name: str, direction: str, *layouts: Layout | tuple[int, Layout],
       dynamic: bool = False, brief: tuple[str, ...] = ()) -> None:
    normalised: list[tuple[int, Layout]] = []
    for item in layouts:
        if len(item) == 2 and isinstance(item[0], int):
            normalised.append((item[0], item[1]))  # type: ignore[arg-type]
        else:
            normalised.append((0, item))  # type: ignore[arg-type]
    documented = bool(normalised)
    if not normalised:
        normalised = [(0, _OPAQUE)]
    _DEFS.append(MessageDef(id_, name, direction, tuple(normalised), documented, dynamic, brief))


S, C, X, Q = "S->CM", "CM->S", "CM<->CM", "?"

# §3.1 Register: 36 mandatory bytes, then firmware-dependent tails decoded by length.  Encoded by
# default: the 68-byte form of a 7960 (protocolVer at offset 40), the rest only when given.
_REGISTER = _L(
    _char("deviceName", 16), _u32("userId"), _u32("instance"), _ip4("stationIpAddr"),
    _u32("deviceType", enum="deviceType"), _u32("maxStreams"),
    _opt(_u32("activeStreams"), _u8("protocolVer"), _u8("unknown"), _u16("phoneFeatures"),
         _u32("maxConferences"), _u32("activeConferences"), _raw("macAddress", 12),
         _u32("ipV4AddressScope")),
    _extra(_u32("maxNumberOfLines"), FieldDef("stationIpV6Addr", "ip6"), _u32("ipV6AddressScope"),
           _char("firmwareLoadName", 32), _char("configVersionStamp", 48)),
)

_CAPS = FieldDef("caps", "group", count=18, count_field="capCount", fields=(
    _u32("payloadCapability", enum="mediaPayload"), _u32("maxFramesPerPacket"),
    # 8-byte union (§3.5): Wireshark's generic reading; for G.723.1 (9) codecMode holds g723BitRate
    _u8("codecMode"), _u8("dynamicPayload"), _u8("codecParam1"), _u8("codecParam2"), _u32("unused"),
))

_ORC_HEAD = _L(_u32("conferenceId"), _u32("passThruPartyId"), _u32("millisecondPacketSize"),
               _u32("compressionType", enum="mediaPayload"), _u32("echoCancellation"),
               _u32("g723BitRate"), _u32("callReference"))
_ORC_TAIL = (*_key_info(), _u32("streamPassThroughId"), _u32("associatedStreamId"),
             _u32("RFC2833PayloadType"), _u32("dtmfType"), _u32("mixingMode"), _u32("partyDirection"))

_SMT_HEAD = (_u32("conferenceId"), _u32("passThruPartyId"))
_SMT_MID = _L(_u32("remotePortNumber"), _u32("millisecondPacketSize"),
              _u32("compressionType", enum="mediaPayload"), _u32("precedenceValue"),
              _u32("silenceSuppression"), _u16("maxFramesPerPacket"), _u16("padding"),
              _u32("g723BitRate"), _u32("callReference"))
_SMT_TAIL = (*_key_info(), _u32("streamPassThroughId"), _u32("associatedStreamId"),
             _u32("RFC2833PayloadType"), _u32("dtmfType"), _u32("mixingMode"), _u32("partyDirection"))

_CALLINFO = _L(
    _char("callingPartyName", 40), _char("callingParty", 24), _char("calledPartyName", 40),
    _char("calledParty", 24), _u32("lineInstance"), _u32("callReference"), _u32("callType", enum="callType"),
    _char("originalCalledPartyName", 40), _char("originalCalledParty", 24),
    _char("lastRedirectingPartyName", 40), _char("lastRedirectingParty", 24),
    _u32("originalCdpnRedirectReason"), _u32("lastRedirectingReason"), _char("cgpnVoiceMailbox", 24),
    _char("cdpnVoiceMailbox", 24), _char("originalCdpnVoiceMailbox", 24),
    _char("lastRedirectingVoiceMailbox", 24), _u32("callInstance"), _u32("callSecurityStatus"),
    _u32("partyPIRestrictionBits"),
)
_CALLINFO_V2_FIXED = _L(_u32("lineInstance"), _u32("callReference"), _u32("callType", enum="callType"),
                        _u32("originalCdpnRedirectReason"), _u32("lastRedirectingReason"), _u32("callInstance"),
                        _u32("callSecurityStatus"), _u32("partyPIRestrictionBits"))
_CALLINFO_V2_STRINGS = ("callingParty", "AlternateCallingParty", "calledParty", "originalCalledParty",
                        "lastRedirectingParty", "cgpnVoiceMailbox", "cdpnVoiceMailbox",
                        "originalCdpnVoiceMailbox", "lastRedirectingVoiceMailbox", "callingPartyName",
                        "calledPartyName", "originalCalledPartyName", "lastRedirectingPartyName")


def _forward_stat(n: int) -> Layout:
    return _L(_u32("activeForward"), _u32("lineNumber"), _u32("allActive"), _char("allNumber", n),
              _u32("busyActive"), _char("busyNumber", n), _u32("noAnswerActive"), _char("noAnswerNumber", n))


# ---- station -> call manager (§2, layouts §3)
_m(0x0000, "KeepAlive", S, _EMPTY)
_m(0x0001, "Register", S, _REGISTER,
   brief=("deviceName", "deviceType", "stationIpAddr", "protocolVer"))
_m(0x0002, "IpPort", S, _L(_u32("rtpMediaPort")))
_m(0x0003, "KeypadButton", S, _L(_u32("kpButton", enum="keypad"), _opt(_li_cr())))
_m(0x0004, "EnblocCall", S, _L(_char("calledParty", 24), _opt(_u32("lineInstance"))),
   (18, _L(_char("calledParty", 25), _opt(_u32("lineInstance")))))
_m(0x0005, "Stimulus", S, _L(_u32("stimulus", enum="stimulus"), _u32("stimulusInstance"), _u32("callReference"),
                              _opt(_u32("stimulusStatus"))))
_m(0x0006, "OffHook", S, _L(_opt(_li_cr())))
_m(0x0007, "OnHook", S, _L(_opt(_li_cr())))
_m(0x0008, "HookFlash", S, _L(_li_cr()))
_m(0x0009, "ForwardStatReq", S, _L(_u32("lineNumber")))
_m(0x000A, "SpeedDialStatReq", S, _L(_u32("speedDialNumber")))
_m(0x000B, "LineStatReq", S, _L(_u32("lineNumber")))
_m(0x000C, "ConfigStatReq", S, _EMPTY)
_m(0x000D, "TimeDateReq", S, _EMPTY)
_m(0x000E, "ButtonTemplateReq", S, _L(_extra(_u32("totalButtonCount"))))
_m(0x000F, "VersionReq", S, _EMPTY)
_m(0x0010, "CapabilitiesRes", S, _L(_u32("capCount"), _CAPS))
_m(0x0011, "MediaPortList", S)
_m(0x0012, "ServerReq", S, _EMPTY)
_m(0x0020, "Alarm", S, _L(_u32("severity", enum="alarmSeverity"), _char("text", 80), _u32("param1"),
                           _u32("param2")))
_m(0x0021, "MulticastMediaReceptionAck", S)
_m(0x0022, "OpenReceiveChannelAck", S,
   _L(_u32("mediaReceptionStatus", enum="mediaStatus"), _ip4("ipAddr"), _u32("portNumber"),
      _u32("passThruPartyId"), _opt(_u32("callReference"))),
   (17, _L(_u32("mediaReceptionStatus", enum="mediaStatus"), _ipv46("ipAddr"), _u32("portNumber"),
           _u32("passThruPartyId"), _opt(_u32("callReference")))),
   brief=("mediaReceptionStatus", "ipAddr", "portNumber", "passThruPartyId"))
_m(0x0023, "ConnectionStatisticsRes", S)
_m(0x0024, "OffHookWithCgpn", S)
_m(0x0025, "SoftKeySetReq", S, _EMPTY)
_m(0x0026, "SoftKeyEvent", S, _L(_u32("softKeyEvent", enum="softKeyEvent"), _li_cr()))
_m(0x0027, "Unregister", S, _L(_extra(_u32("reason", enum="unregisterReason"))))
_m(0x0028, "SoftKeyTemplateReq", S, _EMPTY)
_m(0x0029, "RegisterTokenReq", S)
_m(0x002A, "MediaTransmissionFailure", S)
_m(0x002B, "HeadsetStatus", S, _L(_u32("mode", enum="headsetMode")))
_m(0x002C, "MediaResourceNotification", S)
_m(0x002D, "RegisterAvailableLines", S, _L(_u32("maxNumOfAvailLines")))
_m(0x002E, "DeviceToUserData", S)
_m(0x002F, "DeviceToUserDataResponse", S)
_m(0x0030, "UpdateCapabilities", S)
_m(0x0031, "OpenMultiMediaReceiveChannelAck", S)
_m(0x0032, "ClearConference", X)
_m(0x0033, "ServiceURLStatReq", S, _L(_u32("serviceURLIndex")))
_m(0x0034, "FeatureStatReq", S, _L(_u32("featureIndex"), _extra(_u32("capabilities"))))
_m(0x0035, "CreateConferenceRes", X)
_m(0x0036, "DeleteConferenceRes", X)
_m(0x0037, "ModifyConferenceRes", X)
_m(0x0038, "AddParticipantRes", X)
_m(0x0039, "AuditConferenceRes", X)
_m(0x0040, "AuditParticipantRes", X)
_m(0x0041, "DeviceToUserDataVersion1", S)
_m(0x0042, "DeviceToUserDataResponseVersion1", S)
_m(0x0043, "UpdateCapabilitiesV2", S)
_m(0x0044, "UpdateCapabilitiesV3", S)
_m(0x0045, "PortRes", S)
_m(0x0046, "QoSResvNotify", S)
_m(0x0047, "QoSErrorNotify", S)
_m(0x0048, "SubscriptionStatReq", S)
_m(0x0049, "MediaPathEvent", S)
_m(0x004A, "MediaPathCapability", S)
_m(0x004C, "MwiNotification", S)

# ---- call manager -> station
_m(0x0081, "RegisterAck", C, _L(_u32("keepAliveInterval"), _char("dateTemplate", 6), _u16("alignmentPadding"),
                                 _u32("secondaryKeepAliveInterval"), _u8("maxProtocolVer"), _u8("unknown"),
                                 _u16("phoneFeatures")),
   brief=("keepAliveInterval", "maxProtocolVer"))
_m(0x0082, "StartTone", C, _L(_u32("tone", enum="tone"), _u32("toneOutputDirection", enum="toneDirection"),
                               _li_cr()))
_m(0x0083, "StopTone", C, _L(_li_cr(), _opt(_u32("tone", enum="tone"))))
_m(0x0085, "SetRinger", C, _L(_u32("ringMode", enum="ringMode"), _u32("ringDuration", enum="ringDuration"),
                               _li_cr()))
_m(0x0086, "SetLamp", C, _L(_u32("stimulus", enum="stimulus"), _u32("stimulusInstance"),
                             _u32("lampMode", enum="lampMode")))
_m(0x0087, "SetHookFlashDetect", C, _EMPTY)
_m(0x0088, "SetSpeakerMode", C, _L(_u32("mode", enum="onOff")))
_m(0x0089, "SetMicroMode", C, _L(_u32("mode", enum="onOff")))
_m(0x008A, "StartMediaTransmission", C,
   _L(_SMT_HEAD, _ip4("remoteIpAddr"), _SMT_MID, _opt(_SMT_TAIL)),
   (17, _L(_SMT_HEAD, _ipv46("remoteIpAddr"), _SMT_MID, _opt(_SMT_TAIL))),
   brief=("passThruPartyId", "remoteIpAddr", "remotePortNumber", "compressionType", "millisecondPacketSize"))
_m(0x008B, "StopMediaTransmission", C, _L(_u32("conferenceId"), _u32("passThruPartyId"), _u32("callReference"),
                                          _opt(_u32("portHandlingFlag", enum="portHandling"))))
_m(0x008C, "StartMediaReception", C)
_m(0x008D, "StopMediaReception", C)
_m(0x008F, "CallInfo", C, _CALLINFO,
   brief=("callingParty", "callingPartyName", "calledParty", "callType", "callReference"))
_m(0x0090, "ForwardStat", C, _forward_stat(24), (18, _forward_stat(25)))
_m(0x0091, "SpeedDialStat", C, _L(_u32("number"), _char("dirNumber", 24), _char("displayName", 40)))
_m(0x0092, "LineStat", C, _L(_u32("lineNumber"), _char("lineDirNumber", 24),
                              _char("lineFullyQualifiedDisplayName", 40), _char("lineTextLabel", 40),
                              _u32("lineDisplayOptions")),
   brief=("lineNumber", "lineDirNumber", "lineFullyQualifiedDisplayName"))
_m(0x0093, "ConfigStat", C, _L(_char("deviceName", 16), _u32("userId"), _u32("instance"), _char("userName", 40),
                                _char("serverName", 40), _u32("numberOfLines"), _u32("numberOfSpeedDials")))
_m(0x0094, "DefineTimeDate", C, _L(_u32("year"), _u32("month"), _u32("dayOfWeek"), _u32("day"), _u32("hour"),
                                    _u32("minute"), _u32("second"), _u32("milliseconds"), _u32("systemTime")),
   brief=("systemTime",))
_m(0x0095, "StartSessionTransmission", C)
_m(0x0096, "StopSessionTransmission", C)
_m(0x0097, "ButtonTemplate", C, _L(_u32("buttonOffset"), _u32("buttonCount"), _u32("totalButtonCount"),
                                    FieldDef("definitions", "group", count=42, count_field="buttonCount",
                                             fixed_slots=True, fields=(
                                                 _u8("instanceNumber"),
                                                 _u8("buttonDefinition", enum="buttonType")))))
_m(0x0098, "Version", C, _L(_char("version", 16)))
_m(0x0099, "DisplayText", C, _L(_char("text", 32)))
_m(0x009A, "ClearDisplay", C, _EMPTY)
_m(0x009B, "CapabilitiesReq", C, _EMPTY)
_m(0x009C, "EnunciatorCommand", C)
_m(0x009D, "RegisterReject", C, _L(_char("text", 32)))
_m(0x009E, "ServerRes", C,
   _L(_char("serverName", 48, count=5), _u32("serverListenPort", count=5), _ip4("serverIpAddr", count=5)),
   (17, _L(_char("serverName", 48, count=5), _u32("serverListenPort", count=5),
           FieldDef("serverIpAddrs", "group", count=5, fields=_ipv46("serverIpAddr")))))
_m(0x009F, "Reset", C, _L(_u32("resetType", enum="resetType")))
_m(0x0100, "KeepAliveAck", C, _EMPTY)
_m(0x0101, "StartMulticastMediaReception", C)
_m(0x0102, "StartMulticastMediaTransmission", C)
_m(0x0103, "StopMulticastMediaReception", C)
_m(0x0104, "StopMulticastMediaTransmission", C)
_m(0x0105, "OpenReceiveChannel", C,
   _L(_ORC_HEAD, _opt(_ORC_TAIL, _ip4("sourceIpAddr"), _u32("sourcePortNumber"), _u32("requestedIpAddrType"))),
   (17, _L(_ORC_HEAD, _opt(_ORC_TAIL, _ipv46("sourceIpAddr"), _u32("sourcePortNumber"),
                           _u32("requestedIpAddrType")),
                      _extra(FieldDef("audioLevelAdjustment", "i32"), _raw("latentCapsInfo", 36)))),
   brief=("passThruPartyId", "compressionType", "millisecondPacketSize", "callReference"))
_m(0x0106, "CloseReceiveChannel", C, _L(_u32("conferenceId"), _u32("passThruPartyId"), _u32("callReference"),
                                        _opt(_u32("portHandlingFlag", enum="portHandling"))))
_m(0x0107, "ConnectionStatisticsReq", C)
_m(0x0108, "SoftKeyTemplateRes", C, _L(_u32("softKeyOffset"), _u32("softKeyCount"), _u32("totalSoftKeyCount"),
                                        FieldDef("definitions", "group", count=32, count_field="softKeyCount",
                                                 fixed_slots=True, fields=(
                                                     _char("softKeyLabel", 16),
                                                     _u32("softKeyEvent", enum="softKeyEvent")))))
_m(0x0109, "SoftKeySetRes", C, _L(_u32("softKeySetOffset"), _u32("softKeySetCount"), _u32("totalSoftKeySetCount"),
                                   FieldDef("definitions", "group", count=16, count_field="softKeySetCount",
                                            fixed_slots=True, fields=(
                                                _u8("softKeyTemplateIndex", count=16),
                                                _u16("softKeyInfoIndex", count=16)))))
_m(0x0110, "SelectSoftKeys", C, _L(_li_cr(), _u32("softKeySetIndex", enum="softKeySet"), _u32("validKeyMask")))
_m(0x0111, "CallState", C, _L(_u32("callState", enum="callState"), _li_cr(),
                               _opt(_u32("privacy"), _u32("precedenceLevel"), _u32("precedenceDomain"))),
   brief=("callState", "lineInstance", "callReference"))
_m(0x0112, "DisplayPromptStatus", C, _L(_u32("timeout"), _char("promptStatus", 32), _li_cr()))
_m(0x0113, "ClearPromptStatus", C, _L(_li_cr()))
_m(0x0114, "DisplayNotify", C, _L(_u32("timeout"), _char("notify", 32)))
_m(0x0115, "ClearNotify", C, _EMPTY)
_m(0x0116, "ActivateCallPlane", C, _L(_u32("lineInstance")))
_m(0x0117, "DeactivateCallPlane", C, _EMPTY)
_m(0x0118, "UnregisterAck", C, _L(_u32("status", enum="unregisterStatus")))
_m(0x0119, "BackSpaceReq", C, _L(_li_cr()))
_m(0x011A, "RegisterTokenAck", C)
_m(0x011B, "RegisterTokenReject", C)
_m(0x011C, "StartMediaFailureDetection", C)
_m(0x011D, "DialedNumber", C, _L(_char("dialedNumber", 24), _li_cr()),
   (18, _L(_char("dialedNumber", 25), _li_cr())))
_m(0x011E, "UserToDeviceData", C)
_m(0x011F, "FeatureStat", C, _L(_u32("featureIndex"), _u32("featureID", enum="buttonType"), _char("label", 40),
                                 _u32("status")))
_m(0x0120, "DisplayPriNotify", C, _L(_u32("timeout"), _u32("priority"), _char("notify", 32)))
_m(0x0121, "ClearPriNotify", C, _L(_u32("priority")))
_m(0x0122, "StartAnnouncement", X)
_m(0x0123, "StopAnnouncement", X)
_m(0x0124, "AnnouncementFinish", X)
_m(0x0127, "NotifyDtmfTone", C)
_m(0x0128, "SendDtmfTone", C)
_m(0x0129, "SubscribeDtmfPayloadReq", C)
_m(0x012A, "SubscribeDtmfPayloadRes", S)
_m(0x012B, "SubscribeDtmfPayloadErr", S)
_m(0x012C, "UnSubscribeDtmfPayloadReq", C)
_m(0x012D, "UnSubscribeDtmfPayloadRes", S)
_m(0x012E, "UnSubscribeDtmfPayloadErr", S)
_m(0x012F, "ServiceURLStat", C, _L(_u32("serviceURLIndex"), _char("serviceURL", 256),
                                    _char("serviceURLDisplayName", 40)))
_m(0x0130, "CallSelectStat", C)
_m(0x0131, "OpenMultiMediaReceiveChannel", C)
_m(0x0132, "StartMultiMediaTransmission", C)
_m(0x0133, "StopMultiMediaTransmission", C)
_m(0x0134, "MiscellaneousCommand", C)
_m(0x0135, "FlowControlCommand", C)
_m(0x0136, "CloseMultiMediaReceiveChannel", C)
_m(0x0137, "CreateConferenceReq", X)
_m(0x0138, "DeleteConferenceReq", X)
_m(0x0139, "ModifyConferenceReq", X)
_m(0x013A, "AddParticipantReq", X)
_m(0x013B, "DropParticipantReq", X)
_m(0x013C, "AuditConferenceReq", X)
_m(0x013D, "AuditParticipantReq", X)
_m(0x013E, "ChangeParticipantReq", X)
_m(0x013F, "UserToDeviceDataVersion1", C)
_m(0x0140, "VideoDisplayCommand", C)
_m(0x0141, "FlowControlNotify", C)
# 0x0142/0x0146/0x0148/0x0149 are not in the reference's §3; their layouts follow tshark 4.0's
# dissector, with the field names of their fixed-size counterparts.
_m(0x0142, "ConfigStatV2", C, _L(FieldDef("deviceName", "cstr"), _u32("userId"), _u32("instance"), _u32("numberOfLines"),
                                 _u32("numberOfSpeedDials"), _strings("userName", "serverName")), dynamic=True)
_m(0x0143, "DisplayNotifyV2", C, _L(_u32("timeout"), _strings("notify")), dynamic=True)
_m(0x0144, "DisplayPriNotifyV2", C, _L(_u32("timeout"), _u32("priority"), _strings("notify")), dynamic=True)
_m(0x0145, "DisplayPromptStatusV2", C, _L(_u32("timeout"), _li_cr(), _strings("promptStatus")), dynamic=True)
_m(0x0146, "FeatureStatV2", C, _L(_u32("featureIndex"), _u32("featureID", enum="buttonType"), _u32("status"),
                                  _strings("label")), dynamic=True)
_m(0x0147, "LineStatV2", C, _L(_u32("lineNumber"), _u32("lineType"),
                                _strings("lineDirNumber", "lineFullyQualifiedDisplayName", "lineTextLabel")),
   dynamic=True, brief=("lineNumber", "lineDirNumber", "lineFullyQualifiedDisplayName"))
_m(0x0148, "ServiceURLStatV2", C, _L(_u32("serviceURLIndex"), _strings("serviceURL", "serviceURLDisplayName")),
   dynamic=True)
_m(0x0149, "SpeedDialStatV2", C, _L(_u32("number"), _strings("dirNumber", "displayName")), dynamic=True)
_m(0x014A, "CallInfoV2", C, _L(_CALLINFO_V2_FIXED, _strings(*_CALLINFO_V2_STRINGS)),
   (17, _L(_CALLINFO_V2_FIXED, _strings(*_CALLINFO_V2_STRINGS, "HuntPilotNumber", "HuntPilotName"))),
   dynamic=True, brief=("callingParty", "callingPartyName", "calledParty", "callType", "callReference"))
_m(0x014B, "PortReq", C)
_m(0x014C, "PortClose", C)
_m(0x014D, "QoSListen", X)
_m(0x014E, "QoSPath", X)
_m(0x014F, "QoSTeardown", X)
_m(0x0150, "UpdateDSCP", X)
_m(0x0151, "QoSModify", X)
_m(0x0152, "SubscriptionStat", C)
_m(0x0153, "Notification", C)
# §7 item 13: Wireshark labels these CM->S, but phones send them.
_m(0x0154, "StartMediaTransmissionAck", S,
   _L(_u32("conferenceId"), _u32("passThruPartyId"), _u32("callReference"), _ip4("transmitIpAddr"),
      _u32("portNumber"), _u32("mediaTransmissionStatus", enum="mediaStatus")),
   (17, _L(_u32("conferenceId"), _u32("passThruPartyId"), _u32("callReference"), _ipv46("transmitIpAddr"),
           _u32("portNumber"), _u32("mediaTransmissionStatus", enum="mediaStatus"))))
_m(0x0155, "StartMultiMediaTransmissionAck", S)
_m(0x0156, "CallHistoryInfo", C)
_m(0x0157, "LocationInfo", S)
_m(0x0158, "MwiRes", C)
_m(0x0159, "AddOnDeviceCapabilities", S)
_m(0x015A, "EnhancedAlarm", S)
_m(0x015E, "CallCountReq", Q)
_m(0x015F, "CallCountResp", Q)
_m(0x0160, "RecordingStatus", C)
_m(0x8000, "SPCPRegisterTokenReq", S)
_m(0x8100, "SPCPRegisterTokenAck", C)
_m(0x8101, "SPCPRegisterTokenReject", C)

#: Every message definition by ID (all of reference §2, ranges expanded, plus Wireshark's extras).
MESSAGES: dict[int, MessageDef] = {d.id: d for d in _DEFS}
#: Message ID by name.
MESSAGE_IDS: dict[str, int] = {d.name: d.id for d in _DEFS}

#: tshark 4.0's names for ``skinny.messageId`` where they differ from ours (§2 main names are
#: from SkinnyProtocolOptimized.xml; the dissector's value_string adds Req/Res suffixes).
_WIRESHARK_RENAMES: dict[int, str] = {
    0x0000: "KeepAliveReq", 0x0001: "RegisterReq", 0x0024: "OffHookWithCallingPartyNumber",
    0x0027: "UnregisterReq", 0x0043: "CapabilitiesV2Res", 0x0044: "CapabilitiesV3Res",
    0x0090: "ForwardStatRes", 0x0091: "SpeedDialStatRes", 0x0092: "LineStatRes", 0x0093: "ConfigStatRes",
    0x0094: "TimeDateRes", 0x0097: "ButtonTemplateRes", 0x0098: "VersionRes", 0x0119: "BackSpaceRes",
    0x011F: "FeatureStatRes", 0x012F: "ServiceURLStatRes", 0x0130: "CallSelectStatRes",
    0x0142: "ConfigStatV2Res", 0x0146: "FeatureStatV2Res", 0x0147: "LineStatV2Res",
    0x0148: "ServiceURLStatV2Res", 0x0149: "SpeedDialStatV2Res", 0x0152: "SubscriptionStatRes",
}
#: IDs our table has but tshark 4.0's dissector does not name (old dissector / chan-sccp only).
_WIRESHARK_MISSING = {0x0011, 0x008C, 0x008D, 0x009C}
#: tshark 4.0 ``skinny.messageId`` value names, by ID.
WIRESHARK_NAMES: dict[int, str] = {
    d.id: _WIRESHARK_RENAMES.get(d.id, d.name) for d in _DEFS if d.id not in _WIRESHARK_MISSING
}


def wireshark_name(message_id: int) -> str | None:
    """The name tshark 4.0 prints for ``skinny.messageId`` (e.g. ``0x0001 -> "RegisterReq"``),
    or None for IDs the dissector does not know."""
    return WIRESHARK_NAMES.get(message_id)


def message_def(message: str | int) -> MessageDef:
    """The :class:`MessageDef` for a name or ID.  ``"Unknown_0xNNNN"`` and IDs not in the table
    give an undocumented opaque definition.  ``ValueError`` for an unknown name or an ID outside
    0..0xFFFFFFFF."""
    if isinstance(message, str):
        if message in MESSAGE_IDS:
            return MESSAGES[MESSAGE_IDS[message]]
        if message.startswith("Unknown_0x"):
            try:
                message = int(message[10:], 16)
            except ValueError:
                raise ValueError(f"unknown SCCP message {message!r}") from None
        else:
            raise ValueError(f"unknown SCCP message {message!r}")
    if isinstance(message, bool) or not isinstance(message, int) or not 0 <= message <= 0xFFFFFFFF:
        raise ValueError(f"not an SCCP message ID: {message!r}")
    known = MESSAGES.get(message)
    if known is not None:
        return known
    return MessageDef(message, f"Unknown_0x{message:04X}", Q, ((0, _OPAQUE),), documented=False)


# --------------------------------------------------------------------------- decoded message

@dataclass
class SCCPMessage:
    """One decoded SCCP message.  ``raw`` is the whole frame (header included)."""

    id: int
    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    header_version: int = 0
    raw: bytes = b""

    @property
    def direction(self) -> str:
        """``"S->CM"``, ``"CM->S"``, ``"CM<->CM"`` or ``"?"`` (from the table)."""
        return message_def(self.id).direction

    @property
    def wireshark_name(self) -> str | None:
        """tshark's name for this message ID (see :func:`wireshark_name`)."""
        return wireshark_name(self.id)

    def summary(self) -> str:
        """A short one-line description, e.g. ``"RegisterAck keepAliveInterval=30 maxProtocolVer=17"``."""
        mdef = MESSAGES.get(self.id)
        if mdef is None or not mdef.documented:
            data = str(self.fields.get("data", ""))
            return f"{self.name} ({len(data) // 2} bytes)" if data else self.name
        enum_of = {f.name: f.enum for _, lay in mdef.layouts for f in lay if f.enum}
        names = mdef.brief or tuple(
            k for k, v in self.fields.items()
            if not k.startswith("_") and isinstance(v, int | str) and v not in (0, "")
        )[:4]
        parts = []
        for key in names:
            if key not in self.fields:
                continue
            val = self.fields[key]
            if key in enum_of and isinstance(val, int):
                val = f"{enums.name(enum_of[key], val)}({val})"
            elif isinstance(val, str):
                val = _printable(val)
            parts.append(f"{key}={val}")
        for group in ("caps", "definitions"):
            if isinstance(self.fields.get(group), list):
                parts.append(f"{group}={len(self.fields[group])}")
        return " ".join([self.name, *parts])


def _printable(text: str) -> str:
    if text.isprintable() and " " not in text:
        return text
    return repr(text)


# --------------------------------------------------------------------------- decoding

def _fail(reason: str) -> SCCPDecodeError:
    return SCCPDecodeError(reason, fatal=False)


def _decode_scalar(f: FieldDef, chunk: bytes, ctx: Mapping[str, Any]) -> Any:
    t = f.type
    if t in _INT_FORMATS:
        return struct.unpack(_INT_FORMATS[t], chunk)[0]
    if t == "char":
        return chunk.split(b"\0", 1)[0].decode("latin-1")
    if t == "bytes":
        return chunk.hex()
    if t == "ip4":
        return str(ipaddress.IPv4Address(chunk))
    if t == "ip6":
        return str(ipaddress.IPv6Address(chunk))
    if t == "ip16":
        addr_type = ctx.get(f.ref or "", 0)
        if addr_type != 1 and not any(chunk[4:]):
            return str(ipaddress.IPv4Address(chunk[:4]))
        return str(ipaddress.IPv6Address(chunk))
    raise AssertionError(f"unhandled field type {t}")  # table error, not input error


def _decode_layout(layout: Layout, buf: bytes, pos: int, out: dict[str, Any], where: str) -> int:
    """Decode ``layout`` from ``buf[pos:]`` into ``out``; returns the new position.  Stops quietly
    at the first optional field that is not fully present."""
    for f in layout:
        if f.type == "rest":
            out[f.name] = buf[pos:].hex()
            pos = len(buf)
        elif f.type == "strings":
            pos = _decode_strings(f, buf, pos, out)
        elif f.type == "cstr":
            end = buf.find(b"\0", pos)
            if end < 0:
                if f.optional:
                    _cut(out, f)
                    break
                raise _fail(f"{where}: string {f.name} at offset {pos} has no terminating NUL")
            out[f.name] = buf[pos:end].decode("latin-1")
            pos = end + 1
        elif f.type == "group":
            slots = f.count or 0
            used = slots
            if f.count_field:
                count = out.get(f.count_field, 0)
                if not isinstance(count, int) or count < 0:  # a table error, not input
                    raise AssertionError(f"{where}: count field {f.count_field} is not a u8/u16/u32")
                if count > slots and not f.fixed_slots:
                    raise _fail(f"{where}: {f.count_field} {count} exceeds the {slots} {f.name} entries "
                                "the message can hold")
                used = min(count, slots)
            present = slots if (f.fixed_slots or not f.count_field) else used
            need = present * f.item_size
            if pos + need > len(buf):
                if f.optional:
                    _cut(out, f)
                    break
                what = f"{f.count_field} {used}: " if f.count_field and not f.fixed_slots else ""
                raise _fail(f"{where}: {what}{f.name} needs {need} bytes at offset {pos}, "
                            f"{len(buf) - pos} present")
            entries = []
            for i in range(used):
                entry: dict[str, Any] = {}
                _decode_layout(f.fields, buf[pos + i * f.item_size: pos + (i + 1) * f.item_size], 0, entry, where)
                entries.append(entry)
            out[f.name] = entries
            pos += need
        else:
            size = f.wire_size
            if pos + size > len(buf):
                if f.optional:
                    _cut(out, f)
                    break
                raise _fail(f"{where}: field {f.name} needs {size} bytes at offset {pos}, "
                            f"payload has {len(buf)}")
            if f.count is None:
                out[f.name] = _decode_scalar(f, buf[pos:pos + size], out)
            else:
                step = f.item_size
                out[f.name] = [_decode_scalar(f, buf[pos + i * step: pos + (i + 1) * step], out)
                               for i in range(f.count)]
            pos += size
    return pos


def _cut(out: dict[str, Any], f: FieldDef, name: str | None = None) -> None:
    """Note where a short payload ended (``_short``) when the encoder would otherwise write
    more there (an optional field it writes by default, or a dynamic string's NUL)."""
    if f.by_default and SHORT not in out:
        out[SHORT] = name or f.name


def _decode_strings(f: FieldDef, buf: bytes, pos: int, out: dict[str, Any]) -> int:
    for key in f.names:
        end = buf.find(b"\0", pos)
        if end < 0:  # the payload ends inside (or before) this string: take what is there
            out[key] = buf[pos:].decode("latin-1")
            _cut(out, f, key)
            pos = len(buf)
            continue
        out[key] = buf[pos:end].decode("latin-1")
        pos = end + 1
    tail = buf[pos:]
    if tail and not any(tail) and len(tail) == -(pos + HEADER_SIZE) % DYNAMIC_STRING_PADDING:
        return len(buf)  # exactly the NUL padding to the 4-byte boundary the encoder writes
    return pos


def _decode_payload(mdef: MessageDef, payload: bytes, protocol_version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pos = _decode_layout(mdef.layout(protocol_version), payload, 0, out, mdef.name)
    if pos < len(payload):
        out[TRAILING] = payload[pos:].hex()
    elif mdef.dynamic and SHORT not in out and (len(payload) + HEADER_SIZE) % DYNAMIC_STRING_PADDING:
        out[TRAILING] = ""  # a V2 frame its sender did not pad: none is added when re-encoded
    return out


def decode_frame(frame: bytes, *, protocol_version: int = 0) -> SCCPMessage:
    """Decode exactly one whole frame (header + payload) into an :class:`SCCPMessage`.

    ``protocol_version`` picks classic (< 17) or protocol-17 layouts (§1.4).  Unknown IDs give
    ``name="Unknown_0xNNNN"`` and ``fields={"data": <hex>}``.  Payload bytes beyond the layout
    are kept as ``fields["_trailing"]`` (hex); a payload that ends before an optional field the
    encoder writes by default says so in ``fields["_short"]`` (that field's name), so the
    fields encode back to the same bytes (module docstring: Symmetry).  Raises
    :class:`SCCPDecodeError` if the frame is shorter than 12 bytes, its length field is < 4 or
    disagrees with the frame size, the payload is shorter than the message's mandatory fields,
    or a group count exceeds the entries the message can hold or the bytes present.
    """
    frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise SCCPDecodeError(f"frame of {len(frame)} bytes is shorter than the {HEADER_SIZE}-byte header")
    length, header_version, message_id = struct.unpack_from("<III", frame)
    if length < 4:
        raise SCCPDecodeError(f"length field {length} < 4 (it must count the 4-byte message ID)")
    if length + 8 != len(frame):
        raise SCCPDecodeError(f"length field {length} announces a {length + 8}-byte frame, got {len(frame)} bytes")
    mdef = message_def(message_id)
    fields = _decode_payload(mdef, frame[HEADER_SIZE:], protocol_version)
    return SCCPMessage(message_id, mdef.name, fields, header_version, frame)


class FrameDecoder:
    """Incremental SCCP stream decoder: split frames and several frames per read both work.

    ``feed(data)`` returns the complete messages now available.  ``protocol_version`` may be
    changed at any time (after RegisterAck) and applies to frames decoded afterwards.  A length
    field < 4 or a frame larger than ``max_frame`` bytes (length + 8, default 2000 as [AST])
    raises :class:`SCCPDecodeError` with ``fatal=True``; the decoder then refuses further input.
    A frame whose payload does not fit its message raises with ``fatal=False`` after that frame
    has been consumed, so decoding can go on.  ``err.messages`` carries the frames decoded before
    the bad one in the same call.
    """

    def __init__(self, *, protocol_version: int = 0, max_frame: int = DEFAULT_MAX_FRAME):
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least {HEADER_SIZE}")
        self.protocol_version = protocol_version
        self.max_frame = max_frame
        self._buf = bytearray()
        self._broken: str | None = None

    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SCCPMessage]:
        """Add bytes from the stream; return the messages completed by them (maybe none)."""
        if self._broken is not None:
            raise SCCPDecodeError(f"stream already failed: {self._broken}")
        self._buf += data
        done: list[SCCPMessage] = []
        while len(self._buf) >= 4:
            length = struct.unpack_from("<I", self._buf)[0]
            reason = None
            if length < 4:
                reason = f"length field {length} < 4 (it must count the 4-byte message ID)"
            elif length + 8 > self.max_frame:
                reason = f"length field {length} announces a {length + 8}-byte frame, over the {self.max_frame}-byte cap"
            if reason is not None:
                self._broken = reason
                raise SCCPDecodeError(reason, fatal=True, messages=done)
            if len(self._buf) < length + 8:
                break
            frame = bytes(self._buf[:length + 8])
            del self._buf[:length + 8]
            try:
                done.append(decode_frame(frame, protocol_version=self.protocol_version))
            except SCCPDecodeError as exc:
                raise SCCPDecodeError(exc.reason, fatal=False, messages=done) from None
        return done


# --------------------------------------------------------------------------- encoding

def _check_int(f: FieldDef, val: Any, where: str) -> int:
    if isinstance(val, bool) or not isinstance(val, int):
        raise ValueError(f"{where}.{f.name}: expected an integer, got {val!r}")
    lo, hi = _INT_RANGES[f.type]
    if not lo <= val <= hi:
        raise ValueError(f"{where}.{f.name}: {val} out of range for {f.type} ({lo}..{hi})")
    return val


def _as_bytes(f: FieldDef, val: Any, where: str) -> bytes:
    if isinstance(val, bytes | bytearray):
        return bytes(val)
    if isinstance(val, str):
        try:
            return bytes.fromhex(val)
        except ValueError:
            raise ValueError(f"{where}.{f.name}: not hex: {val!r}") from None
    raise ValueError(f"{where}.{f.name}: expected bytes or a hex string, got {val!r}")


def _encode_ip(f: FieldDef, val: Any, where: str) -> bytes:
    if val in (None, "", 0):
        return bytes(f.item_size)
    try:
        addr = ipaddress.ip_address(val)
    except ValueError:
        raise ValueError(f"{where}.{f.name}: not an IP address: {val!r}") from None
    if f.type == "ip4":
        if addr.version != 4:
            raise ValueError(f"{where}.{f.name}: an IPv4 address is needed in this layout, got {val!r}")
        return addr.packed
    if f.type == "ip6":
        if addr.version != 6:
            raise ValueError(f"{where}.{f.name}: an IPv6 address is needed, got {val!r}")
        return addr.packed
    return addr.packed.ljust(16, b"\0")  # ip16: IPv4 first 4 bytes, then zeros (§1.4)


def _text_bytes(name: str, val: Any, where: str) -> bytes:
    """A char / dynamic-string value as bytes: str is encoded latin-1 (§1.3), bytes pass through."""
    if val is None:
        return b""
    if isinstance(val, str):
        try:
            return val.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{where}.{name}: not encodable as latin-1: {val!r}") from None
    if isinstance(val, bytes | bytearray):
        return bytes(val)
    raise ValueError(f"{where}.{name}: expected a string, got {val!r}")


def _encode_scalar(f: FieldDef, val: Any, where: str) -> bytes:
    t = f.type
    if t in _INT_FORMATS:
        return struct.pack(_INT_FORMATS[t], _check_int(f, 0 if val is None else val, where))
    if t == "char":
        data = _text_bytes(f.name, val, where)
        if len(data) > f.size:
            raise ValueError(f"{where}.{f.name}: {len(data)} bytes do not fit char[{f.size}]")
        return data.ljust(f.size, b"\0")
    if t == "bytes":
        data = _as_bytes(f, b"" if val is None else val, where)
        if len(data) > f.size:
            raise ValueError(f"{where}.{f.name}: {len(data)} bytes do not fit {f.size}")
        return data.ljust(f.size, b"\0")
    if t in _FIXED_SIZES:
        return _encode_ip(f, val, where)
    raise AssertionError(f"unhandled field type {t}")


def _prepare(layout: Layout, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check names and fill derived values (group counts, address types)."""
    known = {f.name for f in layout if f.type != "strings"}
    for f in layout:
        if f.type == "strings":
            known.update(f.names)
    unknown = set(values) - known - {TRAILING, SHORT}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    vals = dict(values)
    for f in layout:
        if f.type == "group" and f.count_field and f.count_field not in vals:
            entries = vals.get(f.name) or []
            vals[f.count_field] = len(entries) if isinstance(entries, list) else 0
        if f.type == "ip16" and f.ref and f.ref not in vals:
            addr = vals.get(f.name)
            vals[f.ref] = 1 if isinstance(addr, str) and ":" in addr else 0
    return vals


def _encode_layout(layout: Layout, values: Mapping[str, Any], where: str, short_form: bool = False,
                   cut: str | None = None) -> bytes:
    vals = _prepare(layout, values, where)
    # How much of the optional tail to write: everything up to the last field given, and the
    # optional fields marked by_default -- unless ``short_form`` (the caller gives "_trailing"):
    # then the payload was decoded from a frame that stopped before that tail, and the
    # trailing bytes follow the last field given directly (decode -> encode gives the same bytes).
    last_given = max((i for i, f in enumerate(layout)
                      if f.name in values or any(n in values for n in f.names)), default=-1)
    out = bytearray()
    for i, f in enumerate(layout):
        if f.optional and i > last_given and (short_form or not f.by_default):
            break
        val = vals.get(f.name)
        if f.type == "rest":
            out += _as_bytes(f, b"" if val is None else val, where)
        elif f.type == "cstr":
            data = _text_bytes(f.name, val, where)
            if b"\0" in data:
                raise ValueError(f"{where}.{f.name}: a NUL byte cannot appear inside a NUL-terminated string")
            out += data + b"\0"
        elif f.type == "strings":
            for key in f.names:
                data = _text_bytes(key, vals.get(key), where)
                if b"\0" in data:
                    raise ValueError(f"{where}.{key}: a NUL byte cannot appear inside a dynamic string")
                if key == cut:  # the decoded payload ended inside this string
                    out += data
                    return bytes(out)
                out += data + b"\0"
        elif f.type == "group":
            entries = val if val is not None else []
            if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
                raise ValueError(f"{where}.{f.name}: expected a list of dicts")
            slots = f.count or 0
            if len(entries) > slots:
                raise ValueError(f"{where}.{f.name}: {len(entries)} entries, at most {slots}")
            if f.count_field and vals.get(f.count_field) != len(entries) and not f.fixed_slots:
                raise ValueError(f"{where}.{f.count_field}={vals.get(f.count_field)} but {f.name} has "
                                 f"{len(entries)} entries")
            for entry in entries:
                out += _encode_layout(f.fields, entry, f"{where}.{f.name}")
            if f.fixed_slots or not f.count_field:
                out += bytes((slots - len(entries)) * f.item_size)
        elif f.count is not None:
            items = [] if val is None else val
            if not isinstance(items, list | tuple) or len(items) > f.count:
                raise ValueError(f"{where}.{f.name}: expected a list of at most {f.count} values")
            padded = list(items) + [None] * (f.count - len(items))
            for item in padded:
                out += _encode_scalar(f, item, where)
        else:
            out += _encode_scalar(f, val, where)
    return bytes(out)


def encode(message: str | int, fields: Mapping[str, Any] | None = None, *, protocol_version: int = 0,
           header_version: int = 0) -> bytes:
    """Encode one whole frame (12-byte header + payload).

    ``message``: a name from :data:`MESSAGE_IDS`, an ID, or ``"Unknown_0xNNNN"``.  ``fields`` use
    the names and value types of :func:`decode_frame`'s output; missing fields encode as zero or
    empty; ``"_trailing"`` (hex or bytes) is appended after the layout.  Optional tails (e.g.
    Register after byte 36) are written up to the last field given, and at least their usual
    part (Register: the 68-byte form a 7960 sends, which carries ``protocolVer`` at offset 40;
    OffHook/OnHook/KeypadButton with lineInstance and callReference; Unregister and
    ButtonTemplateReq empty).  Dynamic (V2) messages are NUL-padded to a 4-byte frame.
    ``"_short"`` (a field name, as :func:`decode_frame` gives it) stops the payload there: no
    default tail, a dynamic string written without its NUL and nothing after it; with
    ``"_short"`` or ``"_trailing"`` no V2 padding is added (the decoded frame's own bytes).
    Raises ``ValueError`` for an unknown message or field name and for a value that does not
    fit its field.
    """
    mdef = message_def(message)
    if isinstance(header_version, bool) or not isinstance(header_version, int) or not 0 <= header_version <= 0xFFFFFFFF:
        raise ValueError(f"header_version out of range: {header_version!r}")
    values = dict(fields or {})
    layout = mdef.layout(protocol_version)
    cut = values.get(SHORT)
    if cut is not None and not isinstance(cut, str):
        raise ValueError(f"{mdef.name}.{SHORT}: expected a field name, got {cut!r}")
    exact = TRAILING in values or SHORT in values  # the payload of a decoded frame, as it was
    payload = _encode_layout(layout, {k: v for k, v in values.items() if k not in (TRAILING, SHORT)}, mdef.name,
                             short_form=exact, cut=cut)
    if TRAILING in values:
        payload += _as_bytes(FieldDef(TRAILING, "bytes"), values[TRAILING], mdef.name)
    if mdef.dynamic and not exact:
        payload += bytes(-(len(payload) + HEADER_SIZE) % DYNAMIC_STRING_PADDING)
    if len(payload) + 4 > 0xFFFFFFFF:
        raise ValueError("payload too large")
    return struct.pack("<III", len(payload) + 4, header_version, mdef.id) + payload
