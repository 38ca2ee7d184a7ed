"""SCCP codec: the message table, byte layouts from sccp-reference.md, framing and errors."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from skinnysip.sccp import enums
from skinnysip.sccp.messages import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MESSAGE_IDS,
    MESSAGES,
    FieldDef,
    FrameDecoder,
    SCCPDecodeError,
    decode_frame,
    encode,
    message_def,
    wireshark_name,
)

# Reference §2, every ID (ranges expanded).
REFERENCE_IDS = [
    *range(0x0000, 0x0013), *range(0x0020, 0x0031), 0x0033, 0x0034, 0x0041, 0x0042, 0x0043, 0x0044, 0x0045,
    0x0048, 0x0049, 0x004A, 0x0081, 0x0082, 0x0083, *range(0x0085, 0x008E), *range(0x008F, 0x00A0),
    *range(0x0100, 0x010A), *range(0x0110, 0x0125), *range(0x0127, 0x0137), 0x013F, *range(0x0142, 0x014D),
    0x0152, 0x0153, 0x0154, 0x0155, 0x0156, 0x0159, 0x015A, 0x015E, 0x015F, 0x0160, 0x8000, 0x8100, 0x8101,
]
# IDs the reference's §2 has no row for inside the ranges above.
REFERENCE_IDS = [i for i in REFERENCE_IDS if i not in (0x0013, 0x0031, 0x0032)]


def sample_value(f: FieldDef, i: int) -> Any:
    """A distinct, non-zero value for field ``f`` (the i-th of its layout)."""
    if f.type == "u8":
        return (i * 7 + 1) % 256
    if f.type == "u16":
        return (i * 257 + 3) % 65536
    if f.type == "u32":
        return 100000 + i
    if f.type == "i32":
        return -1 - i
    if f.type == "char":
        return f"v{i}x"[: f.size]
    if f.type == "cstr":
        return f"c{i}"
    if f.type == "bytes":
        return bytes((i + k) % 256 for k in range(f.size)).hex()
    if f.type == "ip4":
        return f"10.0.{i % 256}.1"
    if f.type in ("ip6", "ip16"):
        return f"2001:db8::{i + 1:x}"
    raise AssertionError(f.type)


def sample_fields(layout: tuple[FieldDef, ...]) -> dict[str, Any]:
    """Every field of ``layout`` filled with distinct values (optional tails included)."""
    out: dict[str, Any] = {}
    for i, f in enumerate(layout):
        if f.type == "rest":
            out[f.name] = "deadbeef"
        elif f.type == "strings":
            out.update({name: f"s{j}-{name[:5]}" for j, name in enumerate(f.names)})
        elif f.type == "group":
            n = min(3, f.count or 0) if f.count_field else (f.count or 0)
            out[f.name] = [sample_fields(f.fields) for _ in range(n)]
            for k, entry in enumerate(out[f.name]):  # make entries differ
                first = f.fields[0]
                if first.type in ("u8", "u16", "u32") and first.count is None:
                    entry[first.name] = k + 1
                if first.type == "u32" and first.name.endswith("Type"):
                    entry[first.name] = 1
            if f.count_field:
                out[f.count_field] = n
        elif f.count is not None:
            out[f.name] = [sample_value(f, i + k) for k in range(f.count)]
        elif f.type == "ip16":
            out[f.name] = sample_value(f, i)
            out[f.ref] = 1  # IPv6
        else:
            out.setdefault(f.name, sample_value(f, i))
    return out


def all_layouts():
    for mdef in MESSAGES.values():
        for since, layout in mdef.layouts:
            yield pytest.param(mdef, since, layout, id=f"{mdef.name}-v{since}")


# --------------------------------------------------------------------------- the table

def test_every_reference_id_is_named():
    missing = [hex(i) for i in REFERENCE_IDS if i not in MESSAGES]
    assert missing == []
    for name, mid in MESSAGE_IDS.items():
        assert MESSAGES[mid].name == name


@pytest.mark.parametrize(("mid", "name"), [
    (0x0010, "CapabilitiesRes"), (0x0020, "Alarm"), (0x0082, "StartTone"), (0x009D, "RegisterReject"),
    (0x0086, "SetLamp"), (0x0085, "SetRinger"), (0x0088, "SetSpeakerMode"), (0x0089, "SetMicroMode"),
    (0x008A, "StartMediaTransmission"), (0x008F, "CallInfo"), (0x0111, "CallState"), (0x0099, "DisplayText"),
    (0x009A, "ClearDisplay"), (0x0097, "ButtonTemplate"), (0x009B, "CapabilitiesReq"),
    (0x0105, "OpenReceiveChannel"), (0x0106, "CloseReceiveChannel"), (0x0110, "SelectSoftKeys"),
    (0x0113, "ClearPromptStatus"), (0x0147, "LineStatV2"), (0x014A, "CallInfoV2"),
    (0x0154, "StartMediaTransmissionAck"), (0x0101, "StartMulticastMediaReception"),
    (0x012E, "UnSubscribeDtmfPayloadErr"), (0x0136, "CloseMultiMediaReceiveChannel"),
])
def test_ids_fixed_against_the_seed(mid, name):
    """Reference §6: the seed's table is wrong for these; we follow the reference."""
    assert MESSAGES[mid].name == name
    assert MESSAGE_IDS[name] == mid


def test_directions():
    assert MESSAGES[0x0001].direction == "S->CM"
    assert MESSAGES[0x0081].direction == "CM->S"
    assert MESSAGES[0x0154].direction == "S->CM"  # §7 item 13
    assert {d.direction for d in MESSAGES.values()} <= {"S->CM", "CM->S", "CM<->CM", "?"}


def test_wireshark_names():
    assert wireshark_name(0x0001) == "RegisterReq"
    assert wireshark_name(0x0000) == "KeepAliveReq"
    assert wireshark_name(0x0081) == "RegisterAck"
    assert wireshark_name(0x0097) == "ButtonTemplateRes"
    assert wireshark_name(0x0011) is None


def test_enums_reference_values():
    assert enums.DEVICE_TYPES[7] == "7960" and enums.DEVICE_TYPES[8] == "7940"
    assert enums.MEDIA_PAYLOADS[4] == "G711Ulaw64k" and enums.MEDIA_PAYLOADS[2] == "G711Alaw64k"
    assert enums.CALL_STATES[13] == "CallRemoteMultiline"
    assert enums.TONES[0x21] == "InsideDialTone" and enums.TONES[0x0A] == "Dtmf0"
    assert enums.keypad_code("*") == 14 and enums.keypad_code("#") == 15 and enums.keypad_code("0") == 0
    assert enums.value("deviceType", "7962") == 404
    assert enums.name("callState", 99) == "Unknown(0x63)"
    with pytest.raises(ValueError):
        enums.keypad_code("x")


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize(("mdef", "since", "layout"), list(all_layouts()))
def test_round_trip_every_layout(mdef, since, layout):
    fields = sample_fields(layout)
    frame = encode(mdef.name, fields, protocol_version=since)
    length, hv, mid = struct.unpack_from("<III", frame)
    assert (length + 8, hv, mid) == (len(frame), 0, mdef.id)
    msg = decode_frame(frame, protocol_version=since)
    assert (msg.id, msg.name, msg.raw) == (mdef.id, mdef.name, frame)
    assert msg.fields == fields
    assert encode(mdef.id, msg.fields, protocol_version=since) == frame
    # defaults: an empty dict encodes and decodes to zeros/empties, and re-encodes identically
    empty = encode(mdef.id, {}, protocol_version=since)
    again = decode_frame(empty, protocol_version=since)
    assert encode(mdef.id, again.fields, protocol_version=since) == empty
    assert isinstance(msg.summary(), str) and msg.summary().startswith(mdef.name)


def test_header_version_written_and_read():
    frame = encode("OffHook", {"lineInstance": 1}, header_version=0x11)
    assert frame[4:8] == b"\x11\0\0\0"
    assert decode_frame(frame).header_version == 0x11


# --------------------------------------------------------------------------- byte vectors

def test_keepalive_bytes():
    assert encode("KeepAlive") == bytes.fromhex("04000000 00000000 00000000")
    msg = decode_frame(bytes(4 * [4, 0, 0, 0])[:4] + bytes(8))
    assert (msg.name, msg.fields) == ("KeepAlive", {})
    assert encode("KeepAliveAck") == bytes.fromhex("04000000 00000000 00010000")


def test_real_7962_offhook_frame():
    """§1.1: a 7962's OffHook, 20 bytes, header 0C 00 00 00 | 16 00 00 00 | 06 00 00 00."""
    frame = bytes.fromhex("0C000000 16000000 06000000 01000000 00000000")
    msg = decode_frame(frame)
    assert (msg.name, msg.header_version, msg.fields) == ("OffHook", 0x16, {"lineInstance": 1, "callReference": 0})
    assert encode("OffHook", msg.fields, header_version=0x16) == frame
    # old phones send OffHook without payload
    old = bytes.fromhex("04000000 00000000 06000000")
    assert decode_frame(old).fields == {"_short": "lineInstance"}  # where the payload ended
    assert encode("OffHook", decode_frame(old).fields) == old  # and it encodes back byte-exact


@pytest.mark.parametrize(("phone", "size", "b40_43", "ver", "unknown", "features"), [
    ("7960", 68, "0B006085", 0x0B, 0x00, 0x8560),
    ("6961", 68, "0F207085", 0x0F, 0x20, 0x8570),
    ("7941", 124, "11007285", 0x11, 0x00, 0x8572),
])
def test_register_captures(phone, size, b40_43, ver, unknown, features):
    """§3.1: bytes 40-43 of real Register captures; the payload length differs by firmware."""
    payload = bytearray(size)
    payload[0:15] = b"SEP00112233AABB"
    payload[24:28] = bytes([192, 168, 1, 20])
    payload[28:32] = struct.pack("<I", {"7960": 7, "6961": 497, "7941": 115}[phone])
    payload[32:36] = struct.pack("<I", 5)
    payload[40:44] = bytes.fromhex(b40_43)
    if size >= 124:
        payload[92:92 + 13] = b"SCCP41.8-5-3S"
    frame = struct.pack("<III", size + 4, 0, 1) + bytes(payload)
    msg = decode_frame(frame)
    f = msg.fields
    assert f["deviceName"] == "SEP00112233AABB"
    assert f["stationIpAddr"] == "192.168.1.20"
    assert (f["protocolVer"], f["unknown"], f["phoneFeatures"]) == (ver, unknown, features)
    assert "_trailing" not in f
    if size >= 124:
        assert f["firmwareLoadName"] == "SCCP41.8-5-3S"
        assert "configVersionStamp" not in f
    else:
        assert "firmwareLoadName" not in f and "ipV4AddressScope" in f
    assert encode("Register", f) == frame


def test_register_short_forms():
    base = struct.pack("<16sIIIII", b"SEP001122334455", 0, 1, 0, 7, 5)  # the 36 mandatory bytes
    msg = decode_frame(struct.pack("<III", 40, 0, 1) + base)
    assert "protocolVer" not in msg.fields and msg.fields["deviceType"] == 7
    seven936 = base + struct.pack("<IBBH", 0, 3, 0, 0)  # 44 bytes (a 7936)
    assert decode_frame(struct.pack("<III", 48, 0, 1) + seven936).fields["protocolVer"] == 3
    with pytest.raises(SCCPDecodeError, match="needs"):
        decode_frame(struct.pack("<III", 36, 0, 1) + base[:32])


def test_register_default_encoding_is_the_68_byte_form():
    frame = encode("Register", {"deviceName": "SEP001122334455", "stationIpAddr": "127.0.0.1",
                                "deviceType": 7, "maxStreams": 5, "protocolVer": 11})
    assert len(frame) == HEADER_SIZE + 68
    assert frame[0:4] == struct.pack("<I", 72)
    payload = frame[12:]
    assert payload[24:28] == bytes([127, 0, 0, 1])  # network order
    assert payload[28:32] == struct.pack("<I", 7)
    assert payload[40] == 11


def test_open_receive_channel_ack_offsets():
    """§3.19: passThruPartyId at offset 12 (classic) or 28 (v17); IP network order; port LE."""
    fields = {"mediaReceptionStatus": 0, "ipAddr": "192.168.9.44", "portNumber": 4000,
              "passThruPartyId": 0x01020304, "callReference": 77}
    classic = encode("OpenReceiveChannelAck", fields)[12:]
    assert len(classic) == 20
    assert classic[4:8] == bytes([192, 168, 9, 44])
    assert classic[8:12] == struct.pack("<I", 4000)
    assert classic[12:16] == struct.pack("<I", 0x01020304)
    assert classic[16:20] == struct.pack("<I", 77)
    v17 = encode("OpenReceiveChannelAck", fields, protocol_version=17)[12:]
    assert len(v17) == 36
    assert v17[4:8] == b"\0\0\0\0"  # ipAddrType v4
    assert v17[8:24] == bytes([192, 168, 9, 44]) + bytes(12)
    assert v17[24:28] == struct.pack("<I", 4000)
    assert v17[28:32] == struct.pack("<I", 0x01020304)
    six = encode("OpenReceiveChannelAck", {**fields, "ipAddr": "::1"}, protocol_version=17)[12:]
    assert six[4:8] == struct.pack("<I", 1) and six[8:24] == bytes(15) + b"\x01"
    decoded = decode_frame(encode("OpenReceiveChannelAck", {**fields, "ipAddr": "::1"}, protocol_version=17),
                           protocol_version=17)
    assert decoded.fields["ipAddr"] == "::1" and decoded.fields["ipAddrType"] == 1
    with pytest.raises(ValueError, match="IPv4"):
        encode("OpenReceiveChannelAck", {"ipAddr": "::1"})


def test_open_receive_channel_v17_capture():
    """§3.18: a real v17 ORC, 128 bytes, header 84 00 00 00 11 00 00 00 05 01 00 00."""
    payload = bytearray(128)
    struct.pack_into("<IIIIII", payload, 0, 0x1234, 0x5678, 20, 4, 0, 0)
    struct.pack_into("<I", payload, 24, 0x1234)
    payload[100:104] = struct.pack("<I", 0)  # sourceIpAddrType v4
    payload[104:108] = bytes([192, 168, 9, 44])
    struct.pack_into("<I", payload, 120, 4000)
    frame = bytes.fromhex("84000000 11000000 05010000") + bytes(payload)
    msg = decode_frame(frame, protocol_version=17)
    f = msg.fields
    assert (msg.name, msg.header_version) == ("OpenReceiveChannel", 0x11)
    assert (f["passThruPartyId"], f["millisecondPacketSize"], f["compressionType"]) == (0x5678, 20, 4)
    assert (f["sourceIpAddr"], f["sourcePortNumber"]) == ("192.168.9.44", 4000)
    assert "audioLevelAdjustment" not in f and "_trailing" not in f
    assert encode("OpenReceiveChannel", f, protocol_version=17, header_version=0x11) == frame


def test_open_receive_channel_short_and_asterisk_forms():
    ccm7 = struct.pack("<IIIIIII", 1, 2, 20, 4, 0, 0, 3) + bytes(64)  # 92 bytes, CCM7 v11
    f = decode_frame(struct.pack("<III", 96, 0, 0x105) + ccm7).fields
    assert f["dtmfType"] == 0 and "mixingMode" not in f
    ast = struct.pack("<IIIIII", 9, 9, 20, 2, 0, 0) + bytes(168 - 24)  # [AST]: fixed 168 bytes
    f = decode_frame(struct.pack("<III", 172, 0, 0x105) + ast).fields
    assert (f["passThruPartyId"], f["compressionType"]) == (9, 2)
    assert f["_trailing"] == "00" * (168 - 112)
    f17 = decode_frame(struct.pack("<III", 172, 0, 0x105) + ast, protocol_version=17).fields
    assert "_trailing" not in f17 and f17["latentCapsInfo"] == "00" * 36


def test_start_media_transmission_layouts():
    fields = {"conferenceId": 5, "passThruPartyId": 6, "remoteIpAddr": "127.0.0.1", "remotePortNumber": 20000,
              "millisecondPacketSize": 20, "compressionType": 4, "precedenceValue": 127}
    classic = encode("StartMediaTransmission", fields)
    assert len(classic) - HEADER_SIZE == 116
    p = classic[12:]
    assert p[8:12] == bytes([127, 0, 0, 1]) and p[12:16] == struct.pack("<I", 20000)
    assert p[16:24] == struct.pack("<II", 20, 4)
    v17 = encode("StartMediaTransmission", fields, protocol_version=17)
    assert len(v17) - HEADER_SIZE == 132
    assert v17[12 + 28:12 + 32] == struct.pack("<I", 20000)
    # [AST]'s structs are the same sizes; a 44-byte minimum (through callReference) also decodes
    short = decode_frame(struct.pack("<III", 48, 0, 0x8A) + p[:44]).fields
    assert short["remotePortNumber"] == 20000 and "partyDirection" not in short


def test_call_info_fixed_384():
    frame = encode("CallInfo", {"callingPartyName": "Alice", "callingParty": "100", "calledParty": "200",
                                "callType": 2, "lineInstance": 1, "callReference": 42})
    assert len(frame) - HEADER_SIZE == 384
    assert frame[12 + 104:12 + 107] == b"200" and frame[12 + 132:12 + 136] == struct.pack("<I", 42)
    f = decode_frame(frame).fields
    assert (f["callingPartyName"], f["calledParty"], f["callReference"]) == ("Alice", "200", 42)


def test_call_info_v2_asterisk_13_strings():
    """§3.15: [AST] sends 8 u32 then exactly 13 NUL-terminated strings, padded to 4."""
    strings = ["100", "", "200", "", "", "", "", "", "", "Alice", "Bob", "", ""]
    body = struct.pack("<8I", 1, 42, 2, 0, 0, 1, 0, 0) + b"".join(s.encode() + b"\0" for s in strings)
    body += bytes(-(len(body) + 12) % 4)
    frame = struct.pack("<III", len(body) + 4, 0, 0x14A) + body
    f = decode_frame(frame).fields
    assert (f["callingParty"], f["calledParty"], f["callingPartyName"], f["calledPartyName"]) == \
        ("100", "200", "Alice", "Bob")
    assert f["callReference"] == 42 and "_trailing" not in f
    assert encode("CallInfoV2", f) == frame
    assert len(encode("CallInfoV2", f)) % 4 == 0
    v17 = decode_frame(frame, protocol_version=17).fields
    assert v17["HuntPilotNumber"] == "" and v17["calledParty"] == "200"


def test_label_escapes_survive():
    frame = encode("DisplayPromptStatus", {"promptStatus": "\x80\x18", "lineInstance": 1})
    assert frame[16:18] == b"\x80\x18"
    assert decode_frame(frame).fields["promptStatus"] == "\x80\x18"


def test_capabilities_res_variable_length():
    caps = [{"payloadCapability": 4, "maxFramesPerPacket": 40}, {"payloadCapability": 2, "maxFramesPerPacket": 40}]
    frame = encode("CapabilitiesRes", {"caps": caps})
    assert len(frame) - HEADER_SIZE == 4 + 16 * 2
    f = decode_frame(frame).fields
    assert f["capCount"] == 2 and [c["payloadCapability"] for c in f["caps"]] == [4, 2]
    bad = struct.pack("<III", 8 + 16, 0, 0x10) + struct.pack("<I", 3) + bytes(16)  # claims 3, has 1
    with pytest.raises(SCCPDecodeError, match="^CapabilitiesRes: capCount 3: caps needs 48 bytes at offset 4, 16 present$"):
        decode_frame(bad)


@pytest.mark.parametrize("count", [19, 1000, 0xFFFFFFFF])
def test_capabilities_res_count_beyond_the_slots_is_a_decode_error(count: int) -> None:
    """Issue 11: a capCount the message cannot hold (at most 18, reference §3.5) decoded before
    but did not encode; now it is the sender's fault, named by field."""
    frame = struct.pack("<III", 8 + 16 * 18, 0, 0x10) + struct.pack("<I", count) + bytes(16 * 18)
    with pytest.raises(SCCPDecodeError) as err:
        decode_frame(frame)
    assert err.value.reason == f"CapabilitiesRes: capCount {count} exceeds the 18 caps entries the message can hold"
    dec = FrameDecoder()
    with pytest.raises(SCCPDecodeError) as err2:
        dec.feed(frame + encode("KeepAliveAck"))
    assert not err2.value.fatal and "capCount" in err2.value.reason
    assert [m.name for m in dec.feed(b"")] == ["KeepAliveAck"]  # the stream goes on after the bad frame


def test_fixed_slot_count_beyond_the_slots_round_trips() -> None:
    """ButtonTemplate's 42 slots are always on the wire: a buttonCount over 42 decodes 42 entries
    and keeps the count, so the frame encodes back byte-exact."""
    frame = struct.pack("<III", 4 + 12 + 84, 0, 0x97) + struct.pack("<III", 0, 99, 99) + bytes(84)
    f = decode_frame(frame).fields
    assert f["buttonCount"] == 99 and len(f["definitions"]) == 42
    assert encode("ButtonTemplate", f) == frame


def test_short_payloads_re_encode_byte_exact() -> None:
    """Issue 11: an OnHook with only lineInstance stays 16 bytes (it grew to 20 before), an
    [AST] 16-byte CloseReceiveChannel stays 24... and a V2 message whose strings end early or
    whose trailing bytes are not the usual padding keeps its exact bytes."""
    onhook = struct.pack("<IIII", 8, 0, 0x07, 1)
    f = decode_frame(onhook).fields
    assert f == {"lineInstance": 1, "_short": "callReference"}
    assert encode("OnHook", f) == onhook
    crc = struct.pack("<III", 16, 0, 0x106) + struct.pack("<III", 1, 2, 3)
    assert encode("CloseReceiveChannel", decode_frame(crc).fields) == crc
    strings = b"100\x00\x00200"  # the payload ends inside the third string
    v2 = struct.pack("<III", 4 + 32 + len(strings), 0, 0x14A) + struct.pack("<8I", 1, 42, 2, 0, 0, 1, 0, 0) + strings
    f = decode_frame(v2).fields
    assert (f["callingParty"], f["calledParty"], f["_short"]) == ("100", "200", "calledParty")
    assert encode("CallInfoV2", f) == v2
    body = struct.pack("<8I", 1, 42, 2, 0, 0, 1, 0, 0) + b"\0" * 13 + b"\x07"  # not padding: kept
    odd = struct.pack("<III", 4 + len(body), 0, 0x14A) + body
    f = decode_frame(odd).fields
    assert f["_trailing"] == "07" and encode("CallInfoV2", f) == odd
    unpadded = struct.pack("<IIII", 9, 0, 0x143, 0) + b"\0"  # DisplayNotifyV2 its sender did not pad
    f = decode_frame(unpadded).fields
    assert f == {"timeout": 0, "notify": "", "_trailing": ""} and encode("DisplayNotifyV2", f) == unpadded
    assert len(encode("DisplayNotifyV2", {"timeout": 0, "notify": ""})) == 20  # ours is padded
    body = struct.pack("<8I", 1, 42, 2, 0, 0, 1, 0, 0) + b"\0" * 13 + b"\0" * 7  # 7 NULs: not 3
    wide = struct.pack("<III", 4 + len(body), 0, 0x14A) + body
    f = decode_frame(wide).fields
    assert f["_trailing"] == "00" * 7 and encode("CallInfoV2", f) == wide
    with pytest.raises(ValueError, match="at most 18"):
        encode("CapabilitiesRes", {"caps": [{}] * 19})


def test_button_template_fixed_slots():
    frame = encode("ButtonTemplate", {"buttonCount": 2, "totalButtonCount": 2, "definitions": [
        {"instanceNumber": 1, "buttonDefinition": 9}, {"instanceNumber": 1, "buttonDefinition": 2}]})
    assert len(frame) - HEADER_SIZE == 12 + 2 * 42
    assert frame[24:28] == bytes([1, 9, 1, 2])
    assert decode_frame(frame).fields["definitions"][0] == {"instanceNumber": 1, "buttonDefinition": 9}
    assert len(encode("SoftKeyTemplateRes", {})) - HEADER_SIZE == 652
    assert len(encode("SoftKeySetRes", {})) - HEADER_SIZE == 780


def test_fixed_sizes_from_the_reference():
    sizes = {"RegisterAck": 20, "RegisterReject": 32, "CallState": 24, "LineStat": 112, "DisplayPromptStatus": 44,
             "StartTone": 16, "StopTone": 12, "SetRinger": 16, "SetLamp": 12, "SelectSoftKeys": 16,
             "ConfigStat": 112, "ForwardStat": 92, "SpeedDialStat": 68, "FeatureStat": 52, "Alarm": 92,
             "DefineTimeDate": 36, "ServerRes": 280, "StopMediaTransmission": 16, "CloseReceiveChannel": 16,
             "DialedNumber": 32, "KeypadButton": 12, "SoftKeyEvent": 12, "Stimulus": 16, "Unregister": 0,
             "ButtonTemplateReq": 0, "EnblocCall": 28, "StartMediaTransmissionAck": 24}
    got = {name: len(encode(name)) - HEADER_SIZE for name in sizes}
    assert got == sizes
    assert len(encode("ServerRes", protocol_version=17)) - HEADER_SIZE == 360
    assert len(encode("DialedNumber", protocol_version=18)) - HEADER_SIZE == 33


def test_register_ack_asterisk_bytes():
    """§7 item 4: [AST] writes "0"+NUL as padding and '0' (0x30) at maxProtocolVer."""
    payload = struct.pack("<I6s2sI4s", 30, b"D-M-Y", b"0\0", 30, b"0\0\0\0")
    f = decode_frame(struct.pack("<III", 24, 0, 0x81) + payload).fields
    assert (f["keepAliveInterval"], f["dateTemplate"], f["secondaryKeepAliveInterval"]) == (30, "D-M-Y", 30)
    assert f["alignmentPadding"] == 0x30 and f["maxProtocolVer"] == 0x30
    assert decode_frame(struct.pack("<III", 24, 0, 0x81) + payload).summary() == \
        "RegisterAck keepAliveInterval=30 maxProtocolVer=48"


def test_longer_payload_keeps_trailing_and_shorter_fails():
    ast_reject = b"No Authority: SEP001122334455".ljust(33, b"\0")
    f = decode_frame(struct.pack("<III", 37, 0, 0x9D) + ast_reject).fields
    assert f == {"text": "No Authority: SEP001122334455", "_trailing": "00"}
    with pytest.raises(SCCPDecodeError, match="CallState"):
        decode_frame(struct.pack("<III", 8, 0, 0x111) + b"\x05\0\0\0")


def test_unknown_id_decodes_raw():
    frame = struct.pack("<III", 7, 0, 0x7777) + b"\x01\x02\x03"
    msg = decode_frame(frame)
    assert (msg.name, msg.fields) == ("Unknown_0x7777", {"data": "010203"})
    assert encode("Unknown_0x7777", msg.fields) == frame
    assert encode(0x7777, {"data": b"\x01\x02\x03"}) == frame
    # known ID without a reference layout: opaque data too
    assert decode_frame(struct.pack("<III", 6, 0, 0x0107) + b"\xab\xcd").fields == {"data": "abcd"}


def test_summary():
    msg = decode_frame(encode("CallState", {"callState": 5, "lineInstance": 1, "callReference": 9}))
    assert msg.summary() == "CallState callState=Connected(5) lineInstance=1 callReference=9"
    assert decode_frame(encode("StartTone", {"tone": 0x21})).summary().startswith("StartTone tone=InsideDialTone(33)")


# --------------------------------------------------------------------------- encoder errors

@pytest.mark.parametrize(("message", "fields", "match"), [
    ("Register", {"deviceNmae": "x"}, "unknown field"),
    ("Register", {"deviceType": -1}, "out of range"),
    ("Register", {"protocolVer": 256}, "out of range"),
    ("Register", {"deviceName": "SEP0011223344556677"}, "do not fit"),
    ("Register", {"stationIpAddr": "300.1.1.1"}, "not an IP"),
    ("Register", {"deviceType": "7"}, "integer"),
    ("DisplayText", {"text": "\u20ac"}, "latin-1"),
    ("NoSuchMessage", {}, "unknown SCCP message"),
    (0x1_0000_0000, {}, "not an SCCP message ID"),
])
def test_encode_rejects(message, fields, match):
    with pytest.raises(ValueError, match=match):
        encode(message, fields)


def test_message_def_lookup():
    assert message_def("Register").id == 1
    assert message_def(0x0001).name == "Register"
    assert message_def(0xBEEF).name == "Unknown_0xBEEF"


# --------------------------------------------------------------------------- framing

def _stream() -> bytes:
    return b"".join([
        encode("RegisterAck", {"keepAliveInterval": 30}), encode("CapabilitiesReq"),
        encode("KeepAliveAck"), encode("CallInfoV2", {"callingParty": "100"}),
        encode("LineStat", {"lineNumber": 1, "lineDirNumber": "100"}),
    ])


def test_frame_decoder_byte_by_byte_and_all_at_once():
    data = _stream()
    dec = FrameDecoder()
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
        assert dec.pending() < DEFAULT_MAX_FRAME
    assert [m.name for m in got] == ["RegisterAck", "CapabilitiesReq", "KeepAliveAck", "CallInfoV2", "LineStat"]
    assert dec.pending() == 0
    at_once = FrameDecoder().feed(data * 20)
    assert len(at_once) == 100
    assert [m.raw for m in at_once[:5]] == [m.raw for m in got]


def test_frame_decoder_protocol_switch():
    dec = FrameDecoder()
    ack = encode("OpenReceiveChannelAck", {"ipAddr": "10.1.1.1", "portNumber": 5000}, protocol_version=17)
    dec.protocol_version = 17
    assert dec.feed(ack)[0].fields["portNumber"] == 5000


def test_frame_decoder_truncated_frame_stays_pending():
    data = encode("LineStat", {"lineNumber": 1})
    dec = FrameDecoder()
    assert dec.feed(data[:50]) == []
    assert dec.pending() == 50


def test_frame_decoder_oversize_length():
    dec = FrameDecoder(max_frame=2000)
    with pytest.raises(SCCPDecodeError, match="over the 2000-byte cap") as info:
        dec.feed(encode("KeepAliveAck") + struct.pack("<III", 1993, 0, 0x97))
    assert info.value.fatal and [m.name for m in info.value.messages] == ["KeepAliveAck"]
    with pytest.raises(SCCPDecodeError, match="already failed"):
        dec.feed(b"")
    # exactly the cap is fine
    assert FrameDecoder(max_frame=2000).feed(struct.pack("<III", 1992, 0, 0x7777) + bytes(1988))[0].name == \
        "Unknown_0x7777"


@pytest.mark.parametrize("length", [0, 1, 3])
def test_frame_decoder_length_below_4(length):
    with pytest.raises(SCCPDecodeError, match="< 4"):
        FrameDecoder().feed(struct.pack("<III", length, 0, 0))


def test_frame_decoder_bad_payload_is_not_fatal():
    good = encode("KeepAliveAck")
    bad = struct.pack("<III", 8, 0, 0x111) + b"\x05\0\0\0"  # CallState needs 12 bytes
    dec = FrameDecoder()
    with pytest.raises(SCCPDecodeError) as info:
        dec.feed(good + bad + good)
    assert not info.value.fatal and len(info.value.messages) == 1
    assert [m.name for m in dec.feed(b"")] == ["KeepAliveAck"]


def test_garbage_is_rejected():
    with pytest.raises(SCCPDecodeError):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(SCCPDecodeError, match="shorter than the 12-byte header"):
        decode_frame(b"\x04\x00\x00")
    with pytest.raises(SCCPDecodeError, match="announces"):
        decode_frame(encode("KeepAlive") + b"\0")


# --------------------------------------------------------------------------- tshark as judge

def _tshark_fields(node: Any, out: dict[str, list[str]]) -> dict[str, list[str]]:
    if isinstance(node, dict):
        for key, val in node.items():
            if key.startswith("skinny.") and isinstance(val, str):
                out.setdefault(key[len("skinny."):], []).append(val)
            _tshark_fields(val, out)
    elif isinstance(node, list):
        for item in node:
            _tshark_fields(item, out)
    return out


def _same(ours: Any, theirs: list[str]) -> bool:
    for text in theirs:
        if isinstance(ours, int):
            try:
                if int(text, 0) in (ours, ours % 2**32):  # i32 fields print unsigned in tshark
                    return True
            except ValueError:
                continue
        elif text == ours:
            return True
    return False


@pytest.mark.peer
@pytest.mark.parametrize(("protocol_version", "header_version"), [(0, 0), (17, 0x11)])
def test_tshark_dissects_every_layout(tmp_path, protocol_version, header_version):
    """tshark's SKINNY dissector reads every documented message we encode (classic layouts with
    header version 0; protocol-17 layouts with header version 0x11, which is how Wireshark picks
    them, §1.2) with the same message ID, no malformed frame, and the same value in every field
    whose name both sides share."""
    import json
    import subprocess

    from peertools import require

    tshark, text2pcap = require("tshark"), require("text2pcap")
    defs = [d for d in MESSAGES.values() if d.documented]
    frames = [encode(d.id, sample_fields(d.layout(protocol_version)), protocol_version=protocol_version,
                     header_version=header_version) for d in defs]
    dump = tmp_path / "frames.txt"
    dump.write_text("".join("0000 " + " ".join(f"{b:02x}" for b in f) + "\n\n" for f in frames))
    pcap = tmp_path / "frames.pcap"
    subprocess.run([text2pcap, "-q", "-T", "40000,2000", "-4", "127.0.0.1,127.0.0.1", str(dump), str(pcap)],
                   check=True, capture_output=True, timeout=60)
    out = subprocess.run([tshark, "-r", str(pcap), "-T", "json", "-J", "skinny _ws.malformed"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    packets = json.loads(out)
    assert len(packets) == len(frames)
    compared = 0
    for mdef, frame, pkt in zip(defs, frames, packets, strict=True):
        layers = pkt["_source"]["layers"]
        assert "_ws.malformed" not in json.dumps(layers), mdef.name
        theirs = _tshark_fields(layers["skinny"], {})
        assert theirs["messageId"] == [hex(mdef.id)] or int(theirs["messageId"][0], 0) == mdef.id, mdef.name
        assert int(theirs["data_length"][0], 0) == len(frame) - 8
        ours = decode_frame(frame, protocol_version=protocol_version).fields
        for key, val in ours.items():
            if isinstance(val, int | str) and key in theirs and key != "macAddress":  # WS shows 6 of 12 bytes
                assert _same(val, theirs[key]), (mdef.name, key, val, theirs[key])
                compared += 1
    assert compared > 150  # the comparison really covers most layouts


@pytest.mark.peer
def test_wireshark_names_match_tshark():
    import subprocess

    from peertools import require

    out = subprocess.run([require("tshark"), "-G", "values"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    names = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0] == "V" and parts[1] == "skinny.messageId":
            names[int(parts[2], 0)] = parts[3]
    ours = {mid: wireshark_name(mid) for mid in MESSAGES if wireshark_name(mid) is not None}
    assert {mid: names.get(mid) for mid in ours} == ours
    assert set(names) <= set(MESSAGES)  # every ID tshark knows is in our table
