"""SCCP enumerations as data (sccp-reference.md §4; names as Wireshark's SkinnyProtocolOptimized.xml).

Every table is a ``dict[int, str]``.  :func:`name` looks a value up and falls back to
``"Unknown(0x..)"``; :func:`value` is the reverse lookup (case-insensitive).  Where the three
reference implementations disagree (§7 item 14), the Wireshark name is used and the other
reading is noted in a comment.
"""

from __future__ import annotations

from collections.abc import Mapping

# §4.1 CallState.callState
CALL_STATES: dict[int, str] = {
    0: "Idle", 1: "OffHook", 2: "OnHook", 3: "RingOut", 4: "RingIn", 5: "Connected", 6: "Busy",
    7: "Congestion", 8: "Hold", 9: "CallWaiting", 10: "CallTransfer", 11: "CallPark", 12: "Proceed",
    13: "CallRemoteMultiline", 14: "InvalidNumber", 15: "HoldRevert", 16: "Whisper", 17: "RemoteHold",
}

# §4.2 StartTone.tone / StopTone.tone (Wireshark DeviceTone)
TONES: dict[int, str] = {
    0x00: "Silence",
    **{i: f"Dtmf{i}" for i in range(1, 10)},
    0x0A: "Dtmf0", 0x0E: "DtmfStar", 0x0F: "DtmfPound",
    0x10: "DtmfA", 0x11: "DtmfB", 0x12: "DtmfC", 0x13: "DtmfD",
    0x21: "InsideDialTone", 0x22: "OutsideDialTone", 0x23: "LineBusyTone", 0x24: "AlertingTone",
    0x25: "ReorderTone", 0x26: "RecorderWarningTone", 0x27: "RecorderDetectedTone",
    0x28: "RevertingTone", 0x29: "ReceiverOffHookTone",
    0x2A: "MessageWaitingIndicatorTone",  # [CS]: PartialDialTone (stutter)
    0x2B: "NoSuchNumberTone", 0x2C: "BusyVerificationTone", 0x2D: "CallWaitingTone",
    0x2E: "ConfirmationTone", 0x2F: "CampOnIndicationTone", 0x30: "RecallDialTone",
    0x31: "ZipZip", 0x32: "Zip", 0x33: "BeepBonk", 0x34: "MusicTone", 0x35: "HoldTone",
    0x36: "TestTone",
    0x37: "DtMonitorWarningTone",  # [CS] only
    0x38: "MonitorWarningTone", 0x39: "SecureWarningTone",
    0x40: "AddCallWaiting", 0x41: "PriorityCallWait", 0x42: "RecallDial", 0x43: "BargIn",
    0x44: "DistinctAlert", 0x45: "PriorityAlert", 0x46: "ReminderRing", 0x47: "PrecedenceRingBack",
    0x48: "PreemptionTone", 0x49: "NonSecureWarningTone",
    0x7F: "NoTone",
}

# §4.3 SetLamp.lampMode
LAMP_MODES: dict[int, str] = {
    1: "Off", 2: "On", 3: "Wink", 4: "Flash", 5: "Blink",
    6: "Hold", 7: "Ring", 8: "Custom1", 9: "Custom2",  # [CS] only
}

# §4.4 SetRinger.ringMode / ringDuration; speaker, microphone and headset modes
RING_MODES: dict[int, str] = {
    1: "RingOff", 2: "InsideRing", 3: "OutsideRing", 4: "FeatureRing",
    5: "FlashOnly", 6: "PrecedenceRing",  # [CS]: Silent, Urgent
    7: "Bellcore1", 8: "Bellcore2", 9: "Bellcore3", 10: "Bellcore4", 11: "Bellcore5",  # [CS] only
}
RING_DURATIONS: dict[int, str] = {1: "NormalRing", 2: "SingleRing"}
ON_OFF_MODES: dict[int, str] = {1: "On", 2: "Off"}

# §4.5 Stimulus.stimulus and SetLamp.stimulus
STIMULI: dict[int, str] = {
    0x01: "LastNumberRedial", 0x02: "SpeedDial", 0x03: "Hold", 0x04: "Transfer", 0x05: "ForwardAll",
    0x06: "ForwardBusy", 0x07: "ForwardNoAnswer", 0x08: "Display", 0x09: "Line", 0x0A: "T120Chat",
    0x0B: "T120Whiteboard", 0x0C: "T120ApplicationSharing", 0x0D: "T120FileTransfer", 0x0E: "Video",
    0x0F: "VoiceMail", 0x10: "AnswerRelease", 0x11: "AutoAnswer", 0x12: "Select", 0x13: "Privacy",
    0x14: "ServiceURL", 0x15: "BLFSpeedDial", 0x1B: "MaliciousCall",
    0x21: "GenericAppB1", 0x22: "GenericAppB2", 0x23: "GenericAppB3", 0x24: "GenericAppB4",
    0x25: "GenericAppB5",
    0x3F: "DoNotDisturbAsterisk",  # [AST]'s own DND value
    0x7B: "MeetMeConference", 0x7D: "Conference", 0x7E: "CallPark", 0x7F: "CallPickup",
    0x80: "GroupCallPickup", 0x81: "Mobility", 0x82: "DoNotDisturb", 0x83: "ConfList",
    0x84: "RemoveLastParticipant", 0x85: "QRT", 0x86: "CallBack", 0x87: "OtherPickup",
    0x88: "VideoMode", 0x89: "NewCall", 0x8A: "EndCall", 0x8B: "HLog", 0x8F: "Queuing",
    0xFF: "Undefined",
}

# §4.6 ButtonTemplate buttonDefinition: stimulus numbers plus these
BUTTON_TYPES: dict[int, str] = {
    0x00: "Unused", **{k: v for k, v in STIMULI.items() if k != 0x3F},
    0x26: "Multiblink", 0xC0: "TestE", 0xC1: "TestF", 0xC2: "Messages", 0xC3: "Directory",
    0xC4: "TestI", 0xC5: "Application", 0xC6: "Headset", 0xF0: "Keypad", 0xFD: "AEC",
    0xFF: "Undefined",
}

# §4.7 SelectSoftKeys.softKeySetIndex (Wireshark / chan-sccp names)
SOFTKEY_SETS: dict[int, str] = {
    0: "OnHook", 1: "Connected", 2: "OnHold", 3: "RingIn", 4: "OffHook", 5: "ConnectedTransferable",
    6: "DigitsFollowing", 7: "ConnectedConference", 8: "RingOut", 9: "OffHookWithFeatures",
    10: "InUseHint", 11: "OnHookStealable", 12: "HoldConf", 13: "RingOutWithTrans",
}

# §4.7 soft-key events 1–18 (common); above 18 the numbering is CM-specific (read the template)
SOFTKEY_EVENTS: dict[int, str] = {
    1: "Redial", 2: "NewCall", 3: "Hold", 4: "Transfer", 5: "CfwdAll", 6: "CfwdBusy",
    7: "CfwdNoAnswer", 8: "BackSpace", 9: "EndCall", 10: "Resume", 11: "Answer", 12: "Info",
    13: "Confrn", 14: "Park", 15: "Join", 16: "MeetMe", 17: "PickUp", 18: "GrpPickup",
    63: "DoNotDisturb", 80: "iDivert", 201: "Dial", 202: "Record",  # [WS]/[CS] label numbering
}

# §3.11 KeypadButton.kpButton codes -> key character
KEYPAD_BUTTONS: dict[int, str] = {
    **{i: str(i) for i in range(10)}, 0x0A: "A", 0x0B: "B", 0x0C: "C", 0x0D: "D",
    0x0E: "*", 0x0F: "#", 0x10: "+",
}

# §4.8 Register.deviceType (7960 = 7 and 7940 = 8, as [AST] and [CS]; [WS] labels 7 Telecaster)
DEVICE_TYPES: dict[int, str] = {
    1: "30SPplus", 2: "12SPplus", 3: "12SP", 4: "12", 5: "30VIP", 6: "7910", 7: "7960", 8: "7940",
    9: "7935", 12: "ATA186", 13: "ATA188", 115: "7941", 119: "7971", 124: "7914", 302: "7985",
    307: "7911", 308: "7961GE", 309: "7941GE", 348: "7931", 365: "7921", 369: "7906", 404: "7962",
    431: "7937", 434: "7942", 435: "7945", 436: "7965", 437: "7975", 484: "7925", 495: "6921",
    496: "6941", 497: "6961", 547: "6901", 548: "6911", 564: "6945", 577: "7926", 585: "8945",
    586: "8941", 20000: "7905", 30002: "7920", 30006: "7970", 30007: "7912", 30008: "7902",
    30016: "IPCommunicator", 30018: "7961", 30019: "7936", 30027: "AnalogPhone",
    30028: "ISDNBRIPhone",
}

# §4.9 media payload types (Wireshark Media_Payload_* without the prefix)
MEDIA_PAYLOADS: dict[int, str] = {
    1: "NonStandard", 2: "G711Alaw64k", 3: "G711Alaw56k", 4: "G711Ulaw64k", 5: "G711Ulaw56k",
    6: "G722_64k", 7: "G722_56k", 8: "G722_48k", 9: "G7231", 10: "G728", 11: "G729",
    12: "G729AnnexA", 13: "IS11172AudioCap", 14: "IS13818AudioCap", 15: "G729AnnexB",
    16: "G729AnnexAwAnnexB", 18: "GSM_Full_Rate", 19: "GSM_Half_Rate", 20: "GSM_Enhanced_Full_Rate",
    25: "Wide_Band_256k", 32: "Data64", 33: "Data56", 40: "G7221_32K", 41: "G7221_24K", 42: "AAC",
    43: "MP4ALATM_128", 44: "MP4ALATM_64", 45: "MP4ALATM_56", 46: "MP4ALATM_48", 47: "MP4ALATM_32",
    48: "MP4ALATM_24", 49: "MP4ALATM_NA", 80: "GSM", 81: "ActiveVoice", 82: "G726_32K",
    83: "G726_24K", 84: "G726_16K", 85: "G729B", 86: "ILBC", 89: "ISAC", 90: "OPUS", 97: "AMR",
    98: "AMR_WB", 100: "H261", 101: "H263", 102: "Vieo", 103: "H264", 104: "H264_SVC", 105: "T120",
    106: "H224", 107: "T38Fax", 108: "TOTE", 109: "H265", 110: "H264_UC", 120: "Clear_Chan",
    257: "RFC2833_DynPayload", 258: "PassThrough", 259: "Dynamic_Payload_PassThru", 260: "DTMF_OOB",
    261: "Inband_DTMF_RFC2833", 262: "CFB_Tones", 299: "NoAudio", 300: "v150_LC_ModemRelay",
    301: "v150_LC_SPRT", 302: "v150_LC_SSE",
}
MEDIA_PAYLOAD_G711_ALAW_64K = 2
MEDIA_PAYLOAD_G711_ULAW_64K = 4

# §4.10 small enumerations
MEDIA_STATUS: dict[int, str] = {
    0: "Ok", 1: "Unknown", 2: "NotEnoughChannels", 3: "CodecTooComplex", 4: "InvalidPartyId",
    5: "InvalidCallReference", 6: "InvalidCodec", 7: "InvalidPacketSize", 8: "OutOfSockets",
    9: "EncoderOrDecoderFailed", 10: "InvalidDynPayloadType", 11: "RequestedIpAddrTypeUnavailable",
    12: "DeviceOnHook",  # [CS]; [WS] uses 0xFF
    0xFF: "DeviceOnHook",
}
CALL_TYPES: dict[int, str] = {1: "InBoundCall", 2: "OutBoundCall", 3: "ForwardCall"}
RESET_TYPES: dict[int, str] = {1: "Reset", 2: "Restart", 3: "ApplyConfig"}
UNREGISTER_REASONS: dict[int, str] = {0: "Unknown", 1: "PowerSaveMode"}
UNREGISTER_STATUS: dict[int, str] = {0: "Ok", 1: "Error", 2: "NAK"}
ALARM_SEVERITIES: dict[int, str] = {
    0: "Critical", 1: "Warning", 2: "Informational", 4: "Unknown", 7: "Major", 8: "Minor",
    10: "Marginal", 20: "TraceInfo",
}
IP_ADDR_TYPES: dict[int, str] = {0: "v4", 1: "v6", 2: "v4_v6", 3: "Invalid"}
PORT_HANDLING: dict[int, str] = {0: "CloseChannel", 1: "KeepChannel"}
TONE_DIRECTIONS: dict[int, str] = {0: "User", 1: "Network", 2: "All"}
HEADSET_MODES: dict[int, str] = {1: "On", 2: "Off"}

# §1.2 header version values Wireshark accepts
HEADER_VERSIONS: dict[int, str] = {
    0x00: "Basic", 0x0A: "V10", 0x0B: "V11", 0x0F: "V15", 0x10: "V16", 0x11: "V17", 0x12: "V18",
    0x13: "V19", 0x14: "V20", 0x15: "V21", 0x16: "V22",
}

#: Every table by the short name used in :class:`skinnysip.sccp.messages.FieldDef` ``enum``.
TABLES: dict[str, Mapping[int, str]] = {
    "callState": CALL_STATES, "tone": TONES, "lampMode": LAMP_MODES, "ringMode": RING_MODES,
    "ringDuration": RING_DURATIONS, "onOff": ON_OFF_MODES, "stimulus": STIMULI,
    "buttonType": BUTTON_TYPES, "softKeySet": SOFTKEY_SETS, "softKeyEvent": SOFTKEY_EVENTS,
    "keypad": KEYPAD_BUTTONS, "deviceType": DEVICE_TYPES, "mediaPayload": MEDIA_PAYLOADS,
    "mediaStatus": MEDIA_STATUS, "callType": CALL_TYPES, "resetType": RESET_TYPES,
    "unregisterReason": UNREGISTER_REASONS, "unregisterStatus": UNREGISTER_STATUS,
    "alarmSeverity": ALARM_SEVERITIES, "ipAddrType": IP_ADDR_TYPES, "portHandling": PORT_HANDLING,
    "toneDirection": TONE_DIRECTIONS, "headsetMode": HEADSET_MODES,
}


def name(table: Mapping[int, str] | str, value: int) -> str:
    """Name of ``value`` in ``table`` (a mapping or a key of :data:`TABLES`).

    Unknown values give ``"Unknown(0x..)"``; never raises for an int.  ``KeyError`` if ``table``
    is a string that names no table.
    """
    mapping = TABLES[table] if isinstance(table, str) else table
    return mapping.get(value, f"Unknown(0x{value:x})")


def value(table: Mapping[int, str] | str, label: str) -> int:
    """Value whose name is ``label`` (case-insensitive).  ``KeyError`` if there is none."""
    mapping = TABLES[table] if isinstance(table, str) else table
    wanted = label.casefold()
    for number, text in mapping.items():
        if text.casefold() == wanted:
            return number
    raise KeyError(f"no {label!r} in table")


def device_type_name(device_type: int) -> str:
    """Model name of a Register deviceType (§4.8), e.g. ``7 -> "7960"``."""
    return name(DEVICE_TYPES, device_type)


def keypad_code(key: str) -> int:
    """KeypadButton kpButton code for one key character: ``"0"-"9"``, ``"A"-"D"``, ``"*"`` (14),
    ``"#"`` (15), ``"+"`` (16).  ``ValueError`` for any other character (§3.11)."""
    for code, text in KEYPAD_BUTTONS.items():
        if text == key.upper():
            return code
    raise ValueError(f"not a keypad key: {key!r}")
