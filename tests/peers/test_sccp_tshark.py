"""tshark as an independent judge of what the station and the lab CM put on the wire.

A whole session (register, configuration, echo call with RTP, unregister) is captured on
loopback; Wireshark's SKINNY dissector must decode every frame of both sides with the message
ID and name our codec used (names mapped through ``wireshark_name``), report nothing malformed,
and show the field values we meant. Its RTP dissector must see our packets both ways.

The session runs twice: at protocol 11 (classic layouts) and at protocol 17, where Wireshark
takes the 20-byte IPv4-or-IPv6 address layouts only because the header version field says 0x11
(reference §1.2): Register goes out with header version 0, later messages with the negotiated
version, and the lab CM sends 0 in KeepAliveAck, RegisterAck and UnregisterAck as [CS] does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from peertools import TsharkCapture, free_port
from skinnysip.lab.callmanager import LabCallManager, LabConfig
from skinnysip.probes.sccp import SCCPRequest, SCCPResult, run_operation
from skinnysip.sccp.messages import wireshark_name

pytestmark = pytest.mark.peer

FIELDS = [
    "frame.number", "tcp.srcport", "skinny.messageId", "_ws.col.Info", "skinny.DeviceName", "skinny.deviceType",
    "skinny.protocolVer", "skinny.portNumber", "skinny.passThroughPartyId", "skinny.remotePortNumber",
    "skinny.ipAddr.ipv4", "skinny.remoteIpAddr.ipv4", "skinny.kpButton", "skinny.hdr_version",
    "skinny.ipv4or6", "skinny.calledParty", "skinny.callingParty", "skinny.calledPartyName",
]
#: CM messages [CS] (and so the lab CM) always sends with header version 0 (reference §1.2)
CM_BASIC = {"KeepAliveAck", "RegisterAck", "UnregisterAck"}


def _ints(layer: dict[str, Any], key: str) -> list[int]:
    return [int(v, 0) for v in layer.get(key, [])]


@pytest.fixture(scope="module", params=[11, 17], ids=["protocol11", "protocol17"])
def session(request: pytest.FixtureRequest) -> Any:
    """Run the whole session once per protocol version under capture; yield (capture, result,
    sccp port, protocol version)."""
    import asyncio

    port = free_port()
    cap = TsharkCapture(f"tcp port {port} or udp", decode_as=[f"tcp.port=={port},skinny"])
    cap.start()

    async def run() -> SCCPResult:
        async with LabCallManager(LabConfig.demo(port=port)):
            req = SCCPRequest(host="127.0.0.1", port=port, dial_number="600", hold_ms=600, timeout=3000,
                              protocol_version=pv)
            return await run_operation("call-setup", req)

    pv: int = request.param

    try:
        result = asyncio.run(run())
    finally:
        cap.stop()
    assert result.success, result.error
    assert result.protocol_version == pv
    yield cap, result, port, pv


def _sides(packets: list[dict[str, Any]], port: int, key: str) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """(messageId, value of ``key``) per SKINNY PDU, split into station→CM and CM→station."""
    sent: list[tuple[int, Any]] = []
    received: list[tuple[int, Any]] = []
    for layer in packets:
        ids = _ints(layer, "skinny.messageId")
        side = received if int(layer["tcp.srcport"][0]) == port else sent
        if key == "_ws.col.Info":
            values: list[Any] = [n for n in re.split(r"[\s|,]+", " ".join(layer.get(key, []))) if n]
        else:
            values = _ints(layer, key)
        assert len(values) == len(ids), layer
        side.extend(zip(ids, values, strict=True))
    return sent, received


def test_every_frame_decodes_with_our_names(session: Any) -> None:
    cap, result, port, pv = session
    ws_sent, ws_received = _sides(cap.decode("skinny", FIELDS), port, "_ws.col.Info")
    ours_sent = [(m.decoded["id"], m.summary) for m in result.exchange if m.direction == "sent" and m.decoded]
    ours_received = [(m.decoded["id"], m.summary) for m in result.exchange if m.direction == "received" and m.decoded]
    assert len(ws_sent) == len(ours_sent) and len(ws_received) == len(ours_received)
    for (ws_id, ws_name), (our_id, our_name) in zip(ws_sent + ws_received, ours_sent + ours_received, strict=True):
        assert ws_id == our_id
        assert ws_name == wireshark_name(our_id), (our_name, ws_name)
    names = {n for _, n in ours_sent + ours_received}
    assert {"Register", "RegisterAck", "CapabilitiesRes", "ButtonTemplate", "LineStat", "OffHook", "KeypadButton",
            "CallState", "OpenReceiveChannel", "OpenReceiveChannelAck", "StartMediaTransmission",
            "CloseReceiveChannel", "OnHook", "Unregister", "UnregisterAck"} <= names
    # the lab CM sends the dynamic forms from protocol 17, as Asterisk does (reference §7 item 11)
    if pv >= 17:
        assert {"CallInfoV2", "DisplayPromptStatusV2"} <= names and "CallInfo" not in names
    else:
        assert {"CallInfo", "DisplayPromptStatus"} <= names and "CallInfoV2" not in names


def test_header_versions_as_policy(session: Any) -> None:
    """Header versions tshark reads are the ones we sent, and follow the policy of §1.2: the
    station sends 0 in Register, then the negotiated version (0x0B, 0x11); the lab CM sends 0
    in KeepAliveAck/RegisterAck/UnregisterAck and the negotiated version otherwise ([CS])."""
    cap, result, port, pv = session
    ws_sent, ws_received = _sides(cap.decode("skinny", FIELDS), port, "skinny.hdr_version")
    ours = {d: [(m.decoded["id"], m.summary, int.from_bytes(bytes.fromhex(m.raw)[4:8], "little"))
                for m in result.exchange if m.direction == d and m.decoded] for d in ("sent", "received")}
    assert [(i, h) for i, _, h in ours["sent"]] == ws_sent
    assert [(i, h) for i, _, h in ours["received"]] == ws_received
    assert ours["sent"][0][1] == "Register" and ours["sent"][0][2] == 0
    assert {h for _, _, h in ours["sent"][1:]} == {pv}
    assert {(n, h) for _, n, h in ours["received"] if n in CM_BASIC} == {("RegisterAck", 0), ("UnregisterAck", 0)}
    assert {h for _, n, h in ours["received"] if n not in CM_BASIC} == {pv}


def test_nothing_malformed(session: Any) -> None:
    cap, _, _, _ = session
    assert cap.decode("_ws.malformed || (skinny && _ws.expert)", ["frame.number", "_ws.col.Info"]) == []


def test_field_values_as_meant(session: Any) -> None:
    cap, result, _, pv = session
    packets = cap.decode("skinny", FIELDS)
    by_id: dict[int, list[dict[str, Any]]] = {}
    for layer in packets:
        for mid in _ints(layer, "skinny.messageId"):
            by_id.setdefault(mid, []).append(layer)
    [register] = by_id[0x0001]
    assert register["skinny.DeviceName"] == ["SEP001122334455"]
    assert _ints(register, "skinny.deviceType") == [7]
    assert _ints(register, "skinny.protocolVer") == [pv]
    [orc] = by_id[0x0105]
    [ack] = by_id[0x0022]
    [smt] = by_id[0x008A]
    pass_thru = _ints(orc, "skinny.passThroughPartyId")[0]
    assert _ints(ack, "skinny.passThroughPartyId") == [pass_thru]  # echoed in the right slot (§3.19)
    assert _ints(smt, "skinny.passThroughPartyId") == [pass_thru]
    call = result.call
    assert call is not None and call.local_rtp and call.remote_rtp
    local_ip, local_port = call.local_rtp.rsplit(":", 1)
    remote_ip, remote_port = call.remote_rtp.rsplit(":", 1)
    assert ack["skinny.ipAddr.ipv4"] == [local_ip] and _ints(ack, "skinny.portNumber") == [int(local_port)]
    assert smt["skinny.remoteIpAddr.ipv4"] == [remote_ip]
    assert _ints(smt, "skinny.remotePortNumber") == [int(remote_port)]
    # the address type word of the 20-byte v17 form (§1.4) is there only at protocol 17
    v17_type = [0] if pv >= 17 else []
    assert _ints(ack, "skinny.ipv4or6") == v17_type and _ints(smt, "skinny.ipv4or6") == v17_type
    keys = [k for layer in by_id[0x0003] for k in _ints(layer, "skinny.kpButton")]
    assert keys == [6, 0, 0]
    # CallInfo (fixed 0x008F below 17, dynamic 0x014A from 17): the parties the CM meant
    [info] = by_id[0x014A if pv >= 17 else 0x008F]
    assert info["skinny.calledParty"] == ["600"] and info["skinny.callingParty"] == ["1001"]
    assert info["skinny.calledPartyName"] == ["Echo test"]


def test_rtp_both_ways(session: Any) -> None:
    cap, result, _, _ = session
    call = result.call
    assert call is not None and call.local_rtp and call.remote_rtp
    local_port = int(call.local_rtp.rsplit(":", 1)[1])
    remote_port = int(call.remote_rtp.rsplit(":", 1)[1])
    saved, cap.decode_as = cap.decode_as, [f"udp.port=={local_port},rtp"]
    try:
        rtp = cap.decode(f"rtp && udp.port=={local_port}",
                         ["udp.srcport", "rtp.p_type", "rtp.ssrc", "rtp.seq", "rtp.marker"])
    finally:
        cap.decode_as = saved
    sent = [p for p in rtp if int(p["udp.srcport"][0]) == local_port]
    received = [p for p in rtp if int(p["udp.srcport"][0]) == remote_port]
    assert len(sent) == call.rtp_packets_sent and len(received) == call.rtp_packets_received
    assert {p["rtp.p_type"][0] for p in sent + received} == {"0"}  # PCMU for G711Ulaw64k
    assert len({p["rtp.ssrc"][0] for p in sent}) == 1 and len({p["rtp.ssrc"][0] for p in received}) == 1
    assert sent[0]["rtp.marker"] == ["1"]
    seqs = [int(p["rtp.seq"][0]) for p in sent]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))
