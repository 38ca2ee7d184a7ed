"""tshark as an independent judge of what the station and the lab CM put on the wire.

A whole session (register, configuration, echo call with RTP, unregister) is captured on
loopback; Wireshark's SKINNY dissector must decode every frame of both sides with the message
ID and name our codec used (names mapped through ``wireshark_name``), report nothing malformed,
and show the field values we meant. Its RTP dissector must see our packets both ways.
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
    "skinny.ipAddr.ipv4", "skinny.remoteIpAddr.ipv4", "skinny.kpButton",
]


def _ints(layer: dict[str, Any], key: str) -> list[int]:
    return [int(v, 0) for v in layer.get(key, [])]


@pytest.fixture(scope="module")
def session() -> Any:
    """Run the whole session once under capture; yield (capture, result, sccp port)."""
    import asyncio

    port = free_port()
    cap = TsharkCapture(f"tcp port {port} or udp", decode_as=[f"tcp.port=={port},skinny"])
    cap.start()

    async def run() -> SCCPResult:
        async with LabCallManager(LabConfig.demo(port=port)):
            request = SCCPRequest(host="127.0.0.1", port=port, dial_number="600", hold_ms=600, timeout=3000)
            return await run_operation("call-setup", request)

    try:
        result = asyncio.run(run())
    finally:
        cap.stop()
    assert result.success, result.error
    yield cap, result, port


def test_every_frame_decodes_with_our_names(session: Any) -> None:
    cap, result, port = session
    packets = cap.decode("skinny", FIELDS)
    ws_sent: list[tuple[int, str]] = []
    ws_received: list[tuple[int, str]] = []
    for layer in packets:
        ids = _ints(layer, "skinny.messageId")
        info = [n for n in re.split(r"[\s|,]+", " ".join(layer.get("_ws.col.Info", []))) if n]
        assert len(info) == len(ids), layer
        side = ws_received if int(layer["tcp.srcport"][0]) == port else ws_sent
        side.extend(zip(ids, info, strict=True))
    ours_sent = [(m.decoded["id"], m.summary) for m in result.exchange if m.direction == "sent" and m.decoded]
    ours_received = [(m.decoded["id"], m.summary) for m in result.exchange if m.direction == "received" and m.decoded]
    assert len(ws_sent) == len(ours_sent) and len(ws_received) == len(ours_received)
    for (ws_id, ws_name), (our_id, our_name) in zip(ws_sent + ws_received, ours_sent + ours_received, strict=True):
        assert ws_id == our_id
        assert ws_name == wireshark_name(our_id), (our_name, ws_name)
    names = {n for _, n in ours_sent + ours_received}
    assert {"Register", "RegisterAck", "CapabilitiesRes", "ButtonTemplate", "LineStat", "OffHook", "KeypadButton",
            "CallState", "CallInfo", "OpenReceiveChannel", "OpenReceiveChannelAck", "StartMediaTransmission",
            "CloseReceiveChannel", "OnHook", "Unregister", "UnregisterAck"} <= names


def test_nothing_malformed(session: Any) -> None:
    cap, _, _ = session
    assert cap.decode("_ws.malformed || (skinny && _ws.expert)", ["frame.number", "_ws.col.Info"]) == []


def test_field_values_as_meant(session: Any) -> None:
    cap, result, port = session
    packets = cap.decode("skinny", FIELDS)
    by_id: dict[int, list[dict[str, Any]]] = {}
    for layer in packets:
        for mid in _ints(layer, "skinny.messageId"):
            by_id.setdefault(mid, []).append(layer)
    [register] = by_id[0x0001]
    assert register["skinny.DeviceName"] == ["SEP001122334455"]
    assert _ints(register, "skinny.deviceType") == [7]
    assert _ints(register, "skinny.protocolVer") == [11]
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
    keys = [k for layer in by_id[0x0003] for k in _ints(layer, "skinny.kpButton")]
    assert keys == [6, 0, 0]


def test_rtp_both_ways(session: Any) -> None:
    cap, result, _ = session
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
