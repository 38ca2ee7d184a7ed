"""The sans-IO SCCP station: registration, keepalive, calls and media signalling, with fake time."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from skinnysip.sccp.messages import SCCPMessage, decode_frame, encode
from skinnysip.sccp.station import (
    CallEnded,
    CallStateChanged,
    Capability,
    CloseReceiveChannelRequested,
    IncomingCall,
    KeepAliveAcked,
    KeepAliveTimedOut,
    OpenReceiveChannelRequested,
    Registered,
    RegisterRejected,
    RegistrationComplete,
    StartMediaRequested,
    Station,
    StationConfig,
    StationError,
    StopMediaRequested,
    Unregistered,
    label_text,
    negotiated_header_version,
    validate_device_name,
)


def cm(name: str, fields: dict[str, Any] | None = None, pv: int = 0) -> SCCPMessage:
    """A CM→station message as the station's driver would hand it over (encoded, then decoded)."""
    return decode_frame(encode(name, fields or {}, protocol_version=pv), protocol_version=pv)


def sent(st: Station) -> list[SCCPMessage]:
    return [decode_frame(f, protocol_version=st.protocol_version) for f in st.take_outgoing()]


def names(msgs: list[SCCPMessage]) -> list[str]:
    return [m.name for m in msgs]


def registered_station(pv: int = 11, lines: int = 1) -> Station:
    st = Station(StationConfig(protocol_version=pv, station_ip="10.0.0.5"))
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30, "maxProtocolVer": pv}), 0.1)
    st.receive(cm("CapabilitiesReq"), 0.1)
    defs = [{"instanceNumber": i + 1, "buttonDefinition": 9} for i in range(lines)]
    st.receive(cm("ButtonTemplate", {"buttonCount": lines, "totalButtonCount": lines, "definitions": defs}), 0.2)
    st.take_outgoing()
    return st


@pytest.mark.parametrize("name", ["SEP001122334455", "SEPAABBCCDDEEFF", "SEP00aabbccddee", "ATA00112233AA01",
                                  "BAT001122334455", "VGC001122334455", "AN0011223344001", "CSFjdoe"])
def test_valid_device_names(name: str) -> None:
    assert validate_device_name(name) == name


@pytest.mark.parametrize("name", ["", "SEP00112233445", "SEP0011223344556", "SEPGG1122334455", "XYZ001122334455",
                                  "SEP001122334455\x00", "sep001122334455", "CSF", "CSFtoolongname123"])
def test_invalid_device_names(name: str) -> None:
    with pytest.raises(StationError, match="invalid device name"):
        validate_device_name(name)
    with pytest.raises(StationError):
        StationConfig(device_name=name)


def test_register_message_fields() -> None:
    st = Station(StationConfig(device_name="SEP00AABBCCDDEE", device_type=8, protocol_version=15,
                               station_ip="192.0.2.7"))
    st.register(0.0)
    [frame] = st.take_outgoing()
    reg = decode_frame(frame)
    assert reg.name == "Register"
    assert reg.fields["deviceName"] == "SEP00AABBCCDDEE"
    assert reg.fields["deviceType"] == 8
    assert reg.fields["protocolVer"] == 15
    assert reg.fields["stationIpAddr"] == "192.0.2.7"
    assert frame[12 + 24 : 12 + 28] == bytes([192, 0, 2, 7])  # network order (reference §1.3)
    assert frame[12 + 40] == 15  # protocolVer byte at payload offset 40 (§3.1)
    with pytest.raises(StationError):
        st.register(0.0)  # already registering


def test_full_registration_sequence_collects_lines_speed_dials_and_soft_keys() -> None:
    st = Station(StationConfig(station_ip="10.0.0.5"))
    st.register(0.0)
    assert names(sent(st)) == ["Register"]
    events = st.receive(cm("RegisterAck", {"keepAliveInterval": 25, "dateTemplate": "D-M-Y",
                                           "secondaryKeepAliveInterval": 25, "maxProtocolVer": 11}), 1.0)
    assert events == [Registered(25, 25, 11, "D-M-Y")]
    assert st.next_deadline() == pytest.approx(min(26.0, 1.0 + st.config.config_request_delay))
    assert st.receive(cm("CapabilitiesReq"), 1.0) == []
    out = sent(st)
    assert names(out) == ["CapabilitiesRes", "ButtonTemplateReq", "SoftKeyTemplateReq", "SoftKeySetReq"]
    caps = out[0].fields["caps"]
    assert out[0].fields["capCount"] == 2
    assert [c["payloadCapability"] for c in caps] == [4, 2]  # G.711 µ-law 4, A-law 2 (§4.9)
    defs = [{"instanceNumber": 1, "buttonDefinition": 9}, {"instanceNumber": 2, "buttonDefinition": 9},
            {"instanceNumber": 1, "buttonDefinition": 2}]
    st.receive(cm("ButtonTemplate", {"buttonCount": 3, "totalButtonCount": 3, "definitions": defs}), 1.1)
    out = sent(st)
    assert names(out) == ["LineStatReq", "LineStatReq", "SpeedDialStatReq"]
    assert [m.fields.get("lineNumber") for m in out[:2]] == [1, 2]
    st.receive(cm("LineStat", {"lineNumber": 1, "lineDirNumber": "1001", "lineFullyQualifiedDisplayName": "Alice",
                               "lineTextLabel": "A"}), 1.2)
    st.receive(cm("LineStat", {"lineNumber": 2, "lineDirNumber": "1003", "lineTextLabel": "\x80\x0b"}), 1.2)
    st.receive(cm("SpeedDialStat", {"number": 1, "dirNumber": "600", "displayName": "Echo"}), 1.2)
    st.receive(cm("SoftKeyTemplateRes", {"softKeyCount": 2, "totalSoftKeyCount": 2, "definitions": [
        {"softKeyLabel": "\x80\x01", "softKeyEvent": 1}, {"softKeyLabel": "\x80\x0b", "softKeyEvent": 11}]}), 1.3)
    assert sent(st) == []  # SoftKeySetRes still missing
    st.receive(cm("SoftKeySetRes", {"softKeySetCount": 1, "definitions": [
        {"softKeyTemplateIndex": [1, 2] + [0] * 14, "softKeyInfoIndex": [301, 302] + [0] * 14}]}), 1.3)
    assert names(sent(st)) == ["TimeDateReq"]
    events = st.receive(cm("DefineTimeDate", {"year": 2024, "month": 5, "day": 1}), 1.4)
    assert events == [RegistrationComplete()]
    assert st.registration_complete
    assert st.lines[1].dir_number == "1001" and st.lines[1].fully_qualified_display_name == "Alice"
    assert st.lines[2].text_label == "Answer"  # 0x80 label escape expanded
    assert st.speed_dials[1].dir_number == "600" and st.speed_dials[1].display_name == "Echo"
    assert [(k.label, k.event) for k in st.soft_keys] == [("Redial", 1), ("Answer", 11)]
    assert st.soft_key_sets == [[1, 2]]


def test_configuration_requested_even_without_capabilities_req() -> None:
    st = Station(StationConfig(config_request_delay=2.0))
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30}), 10.0)
    st.take_outgoing()
    st.tick(11.9)
    assert sent(st) == []
    st.tick(12.0)
    assert names(sent(st)) == ["ButtonTemplateReq", "SoftKeyTemplateReq", "SoftKeySetReq"]


def test_register_reject_reports_reason() -> None:
    st = Station(StationConfig())
    st.register(0.0)
    events = st.receive(cm("RegisterReject", {"text": "No Authority: SEP001122334455"}), 0.5)
    assert events == [RegisterRejected("No Authority: SEP001122334455")]
    assert st.state == "rejected" and st.next_deadline() is None


def test_keepalive_loop_honours_interval_and_measures_round_trip() -> None:
    st = Station(StationConfig())
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30}), 0.0)
    st.receive(cm("CapabilitiesReq"), 0.0)
    st.take_outgoing()
    assert st.next_deadline() == 30.0
    st.tick(29.9)
    assert sent(st) == []
    st.tick(30.0)
    assert names(sent(st)) == ["KeepAlive"]
    assert st.next_deadline() == 37.5  # its KeepAliveAck is due within 30/4 s
    [ev] = st.receive(cm("KeepAliveAck"), 30.25)
    assert isinstance(ev, KeepAliveAcked) and ev.round_trip == pytest.approx(0.25)
    assert st.next_deadline() == 60.0
    st.tick(200.0)  # the driver was late: one KeepAlive, not a burst
    assert names(sent(st)) == ["KeepAlive"]
    assert st.next_deadline() == 207.5
    st.receive(cm("KeepAliveAck"), 200.1)
    assert st.next_deadline() == 230.0


@pytest.mark.parametrize("interval, ack_timeout", [(1, 2.0), (2, 2.0), (8, 2.0), (30, 7.5), (120, 10.0)])
def test_unanswered_keepalive_times_out_within_the_interval(interval: int, ack_timeout: float) -> None:
    """Reference §3.4: KeepAlive every keepAliveInterval (RegisterAck); an overdue KeepAliveAck
    is reported once, so a dead CM is noticed within one interval + the ack timeout."""
    st = Station(StationConfig())
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": interval}), 0.0)
    st.receive(cm("CapabilitiesReq"), 0.0)
    st.take_outgoing()
    assert st.keepalive_ack_timeout == ack_timeout
    assert st.tick(interval) == [] and names(sent(st)) == ["KeepAlive"]
    assert st.next_deadline() == min(interval + ack_timeout, 2 * interval)  # the ack, or the next KeepAlive
    assert st.tick(interval + ack_timeout - 0.01) == []  # (a later KeepAlive does not move the deadline)
    assert st.tick(interval + ack_timeout) == [KeepAliveTimedOut(ack_timeout, interval)]
    assert st.tick(interval + ack_timeout + 0.01) == []  # once per unanswered KeepAlive


def test_keepalive_before_registration_is_not_timed() -> None:
    st = Station(StationConfig(keepalive_ack_timeout=0.5))
    st.send_keepalive(0.0)
    assert st.next_deadline() is None and st.tick(100.0) == []
    st.register(100.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 5}), 100.0)
    st.tick(105.0)
    assert st.next_deadline() == 105.5
    assert st.tick(105.5) == [KeepAliveTimedOut(0.5, 5)]


def test_protocol_version_negotiation() -> None:
    st = Station(StationConfig(protocol_version=11))
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30, "maxProtocolVer": 0x30}), 0.0)  # [AST]'s ASCII '0'
    assert st.protocol_version == 11
    st2 = Station(StationConfig(protocol_version=17))
    st2.register(0.0)
    st2.receive(cm("RegisterAck", {"keepAliveInterval": 30, "maxProtocolVer": 8}), 0.0)
    assert st2.protocol_version == 8


def test_place_call_dials_after_offhook_including_star_and_hash() -> None:
    st = registered_station()
    call = st.place_call("6*0#", 1.0)
    [off] = sent(st)
    assert off.name == "OffHook" and off.fields["lineInstance"] == 1
    events = st.receive(cm("CallState", {"callState": 1, "lineInstance": 1, "callReference": 77}), 1.1)
    assert events == [CallStateChanged(1, "OffHook", 1, 77)]
    keys = sent(st)
    assert names(keys) == ["KeypadButton"] * 4
    assert [k.fields["kpButton"] for k in keys] == [6, 14, 0, 15]  # '*' = 14, '#' = 15 (§3.11)
    assert {k.fields["callReference"] for k in keys} == {77}
    st.receive(cm("StartTone", {"tone": 0x21, "lineInstance": 1, "callReference": 77}), 1.1)
    st.receive(cm("DisplayPromptStatus", {"promptStatus": "\x80\x16", "lineInstance": 1, "callReference": 77}), 1.2)
    st.receive(cm("DialedNumber", {"dialedNumber": "6*0#", "lineInstance": 1, "callReference": 77}), 1.2)
    st.receive(cm("CallInfo", {"callingParty": "1001", "calledParty": "600", "lineInstance": 1,
                               "callReference": 77}), 1.2)
    st.receive(cm("CallState", {"callState": 5, "lineInstance": 1, "callReference": 77}), 1.3)
    assert call.call_reference == 77
    assert call.states == ["OffHook", "Connected"]
    assert call.tones == ["InsideDialTone"] and call.prompts == ["Ring out"]
    assert call.dialed_number == "6*0#" and call.called_party == "600" and call.calling_party == "1001"
    st.hang_up()
    [on] = sent(st)
    assert on.name == "OnHook" and on.fields["callReference"] == 77
    events = st.receive(cm("CallState", {"callState": 2, "lineInstance": 1, "callReference": 77}), 2.0)
    assert CallEnded(1, 77) in events and call.ended


@pytest.mark.parametrize("pv, slot", [(11, 12), (17, 28)])
def test_open_receive_channel_ack_puts_pass_thru_party_id_in_its_slot(pv: int, slot: int) -> None:
    st = registered_station(pv)
    [req] = st.receive(cm("OpenReceiveChannel", {"conferenceId": 5, "passThruPartyId": 0xABCD,
                                                 "millisecondPacketSize": 30, "compressionType": 2,
                                                 "callReference": 5}, pv), 1.0)
    assert req == OpenReceiveChannelRequested(5, 0xABCD, 5, 30, 2)
    st.receive_channel_opened(req, "127.0.0.1", 40000)
    [frame] = st.take_outgoing()
    payload = frame[12:]
    assert struct.unpack_from("<I", payload, 0)[0] == 0  # status OK
    assert payload[4:8] == bytes([127, 0, 0, 1]) if pv < 17 else payload[8:12] == bytes([127, 0, 0, 1])
    assert struct.unpack_from("<I", payload, slot - 4)[0] == 40000  # port LE
    assert struct.unpack_from("<I", payload, slot)[0] == 0xABCD  # passThruPartyId (§3.19, §7.3)
    assert len(payload) == (20 if pv < 17 else 36)


@pytest.mark.parametrize("pv", [11, 17])
def test_media_start_stop_events(pv: int) -> None:
    st = registered_station(pv)
    [start] = st.receive(cm("StartMediaTransmission", {"conferenceId": 5, "passThruPartyId": 9, "callReference": 5,
                                                       "remoteIpAddr": "127.0.0.2", "remotePortNumber": 30000,
                                                       "millisecondPacketSize": 20, "compressionType": 4}, pv), 1.0)
    assert start == StartMediaRequested(5, 9, 5, "127.0.0.2", 30000, 20, 4)
    assert st.receive(cm("StopMediaTransmission", {"passThruPartyId": 9, "callReference": 5}, pv), 2.0) == [
        StopMediaRequested(9, 5)]
    assert st.receive(cm("CloseReceiveChannel", {"passThruPartyId": 9, "callReference": 5}, pv), 2.0) == [
        CloseReceiveChannelRequested(9, 5)]


def test_incoming_call_answered_by_offhook_or_soft_key() -> None:
    st = registered_station()
    st.receive(cm("SoftKeyTemplateRes", {"softKeyCount": 1, "definitions": [
        {"softKeyLabel": "\x80\x0b", "softKeyEvent": 42}]}), 0.5)
    st.take_outgoing()
    events = st.receive(cm("CallState", {"callState": 4, "lineInstance": 1, "callReference": 900}), 1.0)
    assert IncomingCall(1, 900) in events
    st.receive(cm("SetRinger", {"ringMode": 2, "lineInstance": 1, "callReference": 900}), 1.0)
    st.answer()
    [off] = sent(st)
    assert off.name == "OffHook" and off.fields == {"lineInstance": 1, "callReference": 900}
    st.answer(use_soft_key=True)
    [sk] = sent(st)
    assert sk.name == "SoftKeyEvent" and sk.fields["softKeyEvent"] == 42  # read from the template
    assert sk.fields["callReference"] == 900


def test_bad_requests_raise_station_error() -> None:
    st = Station(StationConfig())
    with pytest.raises(StationError, match="not registered"):
        st.place_call("600", 0.0)
    st = registered_station()
    with pytest.raises(StationError, match="cannot dial"):
        st.place_call("60x", 0.0)
    assert st.take_outgoing() == []  # nothing half-sent
    with pytest.raises(StationError, match="no ringing call"):
        st.answer()


def test_unregister() -> None:
    st = registered_station()
    st.unregister(5.0)
    [msg] = sent(st)
    assert msg.name == "Unregister"
    assert st.next_deadline() is None or st.next_deadline() > 5.0
    assert st.receive(cm("UnregisterAck", {"status": 0}), 5.1) == [Unregistered(0)]
    assert st.state == "unregistered"


def test_custom_capabilities_and_label_text() -> None:
    st = Station(StationConfig(capabilities=(Capability(2, 20),)))
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30}), 0.0)
    st.receive(cm("CapabilitiesReq"), 0.0)
    res = sent(st)[1]
    assert res.fields["capCount"] == 1 and res.fields["caps"][0]["payloadCapability"] == 2
    assert label_text("\x80\x18 to 1001") == "Connected to 1001"
    assert label_text("\x80\x7e") == "<label 0x7E>"


@pytest.mark.parametrize("via, name, fields", [
    ("offhook", "OffHook", {"lineInstance": 2, "callReference": 0}),
    ("stimulus", "Stimulus", {"stimulus": 9, "stimulusInstance": 2, "callReference": 0}),
    ("softkey", "SoftKeyEvent", {"softKeyEvent": 2, "lineInstance": 2, "callReference": 0}),
])
def test_off_hook_methods(via: str, name: str, fields: dict[str, int]) -> None:
    st = registered_station(lines=2)
    st.place_call("600", 0.0, 2, via=via)
    [msg] = sent(st)
    assert msg.name == name
    assert {k: msg.fields[k] for k in fields} == fields
    with pytest.raises(StationError, match="unknown off-hook method"):
        st.place_call("600", 0.0, via="shout")


def header_versions(frames: list[bytes]) -> list[tuple[str, int]]:
    msgs = [decode_frame(f, protocol_version=17) for f in frames]
    return [(m.name, m.header_version) for m in msgs]


@pytest.mark.parametrize("pv, expected", [(0, 0), (8, 0), (9, 0), (10, 0x0A), (11, 0x0B), (12, 0), (14, 0),
                                          (15, 0x0F), (17, 0x11), (22, 0x16), (23, 0)])
def test_negotiated_header_version_table(pv: int, expected: int) -> None:
    assert negotiated_header_version(pv) == expected  # reference §1.2: >= 10 and accepted by [WS]


@pytest.mark.parametrize("announced, acked, after", [(17, 17, 0x11), (17, 8, 0), (11, 0x30, 0x0B), (12, 12, 0)])
def test_auto_header_version_zero_until_register_ack(announced: int, acked: int, after: int) -> None:
    st = Station(StationConfig(protocol_version=announced))
    assert st.header_version == 0
    st.register(0.0)
    st.send_keepalive(0.5)  # before RegisterAck: still "Basic"
    assert header_versions(st.take_outgoing()) == [("Register", 0), ("KeepAlive", 0)]
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30, "maxProtocolVer": acked}), 1.0)
    st.receive(cm("CapabilitiesReq"), 1.0)
    st.send_keepalive(2.0)
    st.unregister(3.0)
    out = header_versions(st.take_outgoing())
    assert [n for n, _ in out][:2] == ["CapabilitiesRes", "ButtonTemplateReq"] and out[-1][0] == "Unregister"
    assert {h for _, h in out} == {after} and st.header_version == after
    st.receive(cm("UnregisterAck"), 3.1)
    st.register(4.0)  # a new registration starts from 0 again
    assert header_versions(st.take_outgoing()) == [("Register", 0)]


@pytest.mark.parametrize("policy", [0, 0x16])
def test_explicit_header_version_in_every_frame(policy: int) -> None:
    st = Station(StationConfig(protocol_version=17, header_version=policy))
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30, "maxProtocolVer": 17}), 1.0)
    st.receive(cm("CapabilitiesReq"), 1.0)
    out = header_versions(st.take_outgoing())
    assert out[0] == ("Register", policy) and len(out) > 2 and {h for _, h in out} == {policy}


@pytest.mark.parametrize("bad", ["v17", -1, 2**32, True, 1.5])
def test_bad_header_version_policy(bad: object) -> None:
    with pytest.raises(StationError, match="header version"):
        StationConfig(header_version=bad)  # type: ignore[arg-type]


def test_header_version_does_not_change_decoding() -> None:
    """Layouts follow the negotiated protocol only (§7 item 2): a v17 StartMediaTransmission
    decodes the same under header version 0 and 0x11."""
    fields = {"passThruPartyId": 7, "remoteIpAddr": "10.1.2.3", "remotePortNumber": 4000, "callReference": 9}
    st = registered_station(pv=17)
    for hv in (0, 0x11):
        msg = decode_frame(encode("StartMediaTransmission", fields, protocol_version=17, header_version=hv),
                           protocol_version=17)
        [ev] = st.receive(msg, 1.0)
        assert isinstance(ev, StartMediaRequested)
        assert (ev.remote_ip, ev.remote_port, ev.pass_thru_party_id) == ("10.1.2.3", 4000, 7)


def test_no_configuration_requests_after_unregister() -> None:
    """Answers to the configuration requests that arrive after Unregister do not make the
    station ask for more (LineStatReq, TimeDateReq) on a registration it is ending."""
    st = Station(StationConfig())
    st.register(0.0)
    st.receive(cm("RegisterAck", {"keepAliveInterval": 30}), 0.0)
    st.receive(cm("CapabilitiesReq"), 0.0)
    st.take_outgoing()
    st.unregister(0.1)
    assert names(sent(st)) == ["Unregister"]
    st.receive(cm("ButtonTemplate", {"buttonCount": 1, "totalButtonCount": 1,
                                     "definitions": [{"instanceNumber": 1, "buttonDefinition": 9}]}), 0.2)
    st.receive(cm("SoftKeyTemplateRes", {}), 0.2)
    st.receive(cm("SoftKeySetRes", {}), 0.2)
    st.receive(cm("CapabilitiesReq"), 0.2)
    assert sent(st) == []
    assert list(st.lines) == [1]  # what the CM said is still recorded
