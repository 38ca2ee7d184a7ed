"""A call's pcap holds its RTP and RTCP beside the SIP, from every interface: the library
(``Call.pcapng``/``write_pcap``), ``GET /api/phones/{id}/calls/{cid}/pcap`` over a real uvicorn
and ``skinnysip phone --pcap``. The calls go to baresip through Kamailio (PBX) on 127.0.0.1;
tshark is the judge: SIP and RTP both ways on the ports the SDP gave, RTCP, nothing malformed,
two RTP streams in ``-z rtp,streams``, everything in time order on the exchange's clock.

The packet log's bounds (first and newest octets kept, the rest counted) are checked on a
real stream too."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from baresip_peer import Baresip
from sip_peers import KamailioPeer, kamailio
from test_api_phone_http import alice, call_states, uvicorn_server
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, bob, registered  # noqa: F401  (fixture)
from websockets.asyncio.client import connect

from peertools import require
from skinnysip.net.media import MediaConfig, MediaPacket, MediaStream, PacketLog, SRTPConfig
from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(150)]

PCAP_TYPE = "application/vnd.tcpdump.pcap"


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def tshark(path: Path, *args: str) -> list[list[str]]:
    """tshark's rows (tab-separated fields) of ``path``."""
    out = subprocess.run([require("tshark"), "-r", str(path), *args], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


@dataclass
class PcapFacts:
    our_port: int  # the RTP ports of the SDP offer (ours) and answer (baresip's)
    their_port: int
    rows: list[list[str]]  # time, src port, dst port, protocols, SIP method, status
    rtp_streams: list[str]  # -z rtp,streams lines (start, end, src ip, port, dst ip, port, SSRC, payload, …)


def read_call_pcap(path: Path) -> PcapFacts:
    """What tshark sees in a call's pcap: the RTP ports from the SDP of the INVITE (we call)
    and of the 200, then every packet with RTP decoded on our port and RTCP on the next
    (baresip does not multiplex unless offered)."""
    offer = tshark(path, "-Y", "sip.Method == \"INVITE\" && sdp", "-T", "fields", "-e", "sdp.media.port")
    answer = tshark(path, "-Y", "sip.Status-Code == 200 && sdp", "-T", "fields", "-e", "sdp.media.port")
    assert offer and answer, "no SDP offer/answer in the pcap"
    ours, theirs = int(offer[0][0]), int(answer[0][0])
    decode = ["-d", f"udp.port=={ours},rtp", "-d", f"udp.port=={ours + 1},rtcp"]
    rows = tshark(path, *decode, "-T", "fields", "-e", "frame.time_epoch", "-e", "udp.srcport", "-e",
                  "udp.dstport", "-e", "frame.protocols", "-e", "sip.Method", "-e", "sip.Status-Code")
    malformed = tshark(path, *decode, "-Y", "_ws.malformed || _ws.expert.severity >= \"error\"")
    assert malformed == [], malformed
    streams = subprocess.run([require("tshark"), "-r", str(path), *decode, "-q", "-z", "rtp,streams"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [line for line in streams.splitlines() if " 0x" in line]
    return PcapFacts(ours, theirs, rows, lines)


def check_call_pcap(path: Path, our_port: int | None = None, their_port: int | None = None) -> PcapFacts:
    facts = read_call_pcap(path)
    if our_port is not None:
        assert facts.our_port == our_port
    if their_port is not None:
        assert facts.their_port == their_port
    ours, theirs = facts.our_port, facts.their_port
    times = [float(r[0]) for r in facts.rows]
    assert times == sorted(times), "packets out of time order"

    def where(proto: str, src: int, dst: int) -> list[list[str]]:
        return [r for r in facts.rows if f":{proto}" in r[3] and (int(r[1]), int(r[2])) == (src, dst)]

    sent_rtp, got_rtp = where("rtp", ours, theirs), where("rtp", theirs, ours)
    assert len(sent_rtp) >= 50 and len(got_rtp) >= 50, (len(sent_rtp), len(got_rtp))  # ≥ 1 s each way
    assert where("rtcp", ours + 1, theirs + 1) and where("rtcp", theirs + 1, ours + 1), "RTCP both ways"
    sip = [r for r in facts.rows if ":sip" in r[3]]
    methods = [r[4] for r in sip if r[4]]
    assert "INVITE" in methods and "ACK" in methods and "BYE" in methods, methods
    # one clock: the media lies after the INVITE and the first 200, audio before our BYE's answer
    invite_at = next(float(r[0]) for r in sip if r[4] == "INVITE")
    assert float(sent_rtp[0][0]) > invite_at and float(got_rtp[0][0]) > invite_at
    bye_at = next(float(r[0]) for r in sip if r[4] == "BYE")
    assert float(got_rtp[0][0]) < bye_at
    assert len(facts.rtp_streams) == 2, facts.rtp_streams
    flows = {(int(line.split()[3]), int(line.split()[5]), line.split()[7]) for line in facts.rtp_streams}
    assert flows == {(ours, theirs, "g711U"), (theirs, ours, "g711U")}, facts.rtp_streams
    return facts


async def test_library_call_pcap_has_rtp_and_rtcp_both_ways(pbx: KamailioPeer, bob: Baresip,  # noqa: F811
                                                           tmp_path: Path) -> None:
    async with SIPPhone(account(pbx, "alice")) as phone:
        call = await phone.call("bob")
        assert await call.wait_connected(15), call.end_reason
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(6)  # past the first RTCP interval both ways (RFC 3550 §6.2: 2.5 s ±50 %)
        await call.hangup()
        assert call.state is CallState.TERMINATED
        await bob.wait_event("CALL_CLOSED")
        report = call.media_report()
        path = tmp_path / "call.pcapng"
        await asyncio.to_thread(call.write_pcap, path)
    assert report is not None and call.media is not None
    check_call_pcap(path, call.media.local_port, report["remote"][1])
    packets = call.media_packets()
    assert call.media.packet_log.dropped == 0 and report["capture"] == {"packets": len(packets), "dropped": 0}
    # every datagram the stream counted is in the log, as sent (RTP + RTCP both ways)
    sent = [p for p in packets if p.direction == "sent" and p.local[1] == call.media.local_port]
    assert len(sent) == report["sent"]["packets"]
    received = [p for p in packets if p.direction == "received" and p.local[1] == call.media.local_port]
    assert len(received) >= report["received"]["packets"]
    assert pcap_bytes_equal(path, packets)


def pcap_bytes_equal(path: Path, packets: list[MediaPacket]) -> bool:
    """The UDP payloads of the pcap's media packets are the logged datagrams, byte for byte."""
    rows = tshark(path, "-Y", "udp && !sip", "-T", "fields", "-e", "udp.payload")
    payloads = [bytes.fromhex(r[0].replace(":", "")) for r in rows]
    return payloads == [p.data for p in sorted(packets, key=lambda p: p.time)]


async def test_api_call_pcap_over_http(pbx: KamailioPeer, bob: Baresip, tmp_path: Path) -> None:  # noqa: F811
    with uvicorn_server() as (address, _):
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as api:
            created = await api.post("/api/phones", json=alice(pbx))
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            async with connect(f"ws://{address}/api/phones/{pid}/events") as ws:
                placed = await api.post(f"/api/phones/{pid}/calls", json={"target": "bob"})
                assert placed.status_code == 201, placed.text
                cid = placed.json()["id"]
                await call_states(ws, cid, "confirmed")
                await bob.wait_event("CALL_ESTABLISHED")
                await asyncio.sleep(3)
                live = await api.get(f"/api/phones/{pid}/calls/{cid}/pcap")  # a live call too
                assert live.status_code == 200 and live.headers["content-type"] == PCAP_TYPE
                assert (await api.post(f"/api/phones/{pid}/calls/{cid}/hangup")).status_code == 200
                await call_states(ws, cid, "terminated")
                await bob.wait_event("CALL_CLOSED")
            got = await api.get(f"/api/phones/{pid}/calls/{cid}/pcap")
            assert got.status_code == 200, got.text
            assert got.headers["content-type"] == PCAP_TYPE
            disposition = got.headers["content-disposition"]
            assert disposition.startswith("attachment; filename=") and f"call{cid}.pcapng" in disposition
            detail = (await api.get(f"/api/phones/{pid}/calls/{cid}")).json()
            unknown = await api.get(f"/api/phones/{pid}/calls/{cid + 1000}/pcap")
            assert unknown.status_code == 404 and unknown.json()["success"] is False
            assert (await api.get(f"/api/phones/nosuchphone/calls/{cid}/pcap")).status_code == 404
            await api.delete(f"/api/phones/{pid}")
    path = tmp_path / "api.pcapng"
    path.write_bytes(got.content)
    facts = check_call_pcap(path, detail["media"]["local"][1], detail["media"]["remote"][1])
    (tmp_path / "live.pcapng").write_bytes(live.content)
    live_rtp = [r for r in read_call_pcap(tmp_path / "live.pcapng").rows if ":rtp" in r[3]]
    assert 0 < len(live_rtp) < len([r for r in facts.rows if ":rtp" in r[3]])


async def test_cli_phone_pcap_has_the_calls_rtp(pbx: KamailioPeer, bob: Baresip, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "cli.pcapng"
    env = {**os.environ, "SKINNYSIP_PASSWORD": pbx.users["alice"]}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "skinnysip", "phone", f"sip:alice@{pbx.realm}", "--registrar",
        f"127.0.0.1:{pbx.udp_port}", "--tone", str(OUR_TONE), "--call", "bob", "--duration", "3",
        "--pcap", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert "Traceback" not in err.decode()
    await bob.wait_event("CALL_CLOSED")
    facts = check_call_pcap(path)
    assert any(r[4] == "REGISTER" for r in facts.rows)  # the phone's whole exchange, and the call's media


async def test_packet_log_keeps_head_and_tail_and_counts_the_rest() -> None:
    """A real stream sending to a UDP socket: the log keeps the first ``head_bytes`` and the
    newest ``tail_bytes`` of datagrams, counts the rest, and holds exactly what was sent."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    try:
        stream = await MediaStream.open("127.0.0.1", name="logtest")
        try:
            stream.packet_log = log = PacketLog(head_bytes=172 * 10, tail_bytes=172 * 5)
            stream.apply(MediaConfig(remote=sink.getsockname()))  # RTCP goes to the sink's port + 1
            await asyncio.sleep(1.0)
        finally:
            await stream.close()
        sent = stream.packets_sent
        received: list[bytes] = []
        for _ in range(sent + 10):
            try:
                received.append(sink.recv(4096))
            except BlockingIOError:
                break
        assert sent >= 40 and len(received) == sent
        rtp_head = [p.data for p in log.head if p.local[1] == stream.local_port]
        rtp_tail = [p.data for p in log.tail if p.local[1] == stream.local_port]
        assert 8 <= len(rtp_head) <= 10 and 3 <= len(rtp_tail) <= 5  # an RTCP report may take a place
        assert rtp_head == received[:len(rtp_head)] and rtp_tail == received[-len(rtp_tail):]
        assert log.dropped == sent + stream.rtcp_sent - len(log)
        assert all(p.remote == sink.getsockname() for p in log.packets() if p.local[1] == stream.local_port)
        times = [p.time for p in log.packets()]
        assert times == sorted(times)
    finally:
        sink.close()


def test_packet_log_bounds_tiny_datagrams_by_count() -> None:
    """A flood of tiny datagrams is bounded by count as well as by octets."""
    log = PacketLog(max_packets=10)
    for i in range(100):
        log.add("received", ("127.0.0.1", 4000), ("127.0.0.1", 5000), i.to_bytes(12, "big"))
    kept = [int.from_bytes(p.data, "big") for p in log.packets()]
    assert kept == [*range(10), *range(90, 100)] and log.dropped == 80 and len(log) == 20


async def test_packet_log_holds_srtp_as_on_the_wire() -> None:
    """With SRTP (RFC 3711) the log holds the protected datagrams: what one stream logs as sent
    is, byte for byte, what the other logs as received, 10 octets longer than RTP (the 80-bit
    tag), and the receiver still plays them (it unprotected them)."""
    key_a, key_b = bytes(range(30)), bytes(range(100, 130))
    suite = "AES_CM_128_HMAC_SHA1_80"
    a = await MediaStream.open("127.0.0.1", name="srtp-a")
    b = await MediaStream.open("127.0.0.1", name="srtp-b")
    try:
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port), srtp=SRTPConfig(suite, key_a, key_b)))
        b.apply(MediaConfig(remote=("127.0.0.1", a.local_port), srtp=SRTPConfig(suite, key_b, key_a)))
        await asyncio.sleep(1.0)
    finally:
        await a.close()
        await b.close()
    sent = [p.data for p in a.packet_log.packets() if p.direction == "sent" and p.local[1] == a.local_port]
    got = [p.data for p in b.packet_log.packets() if p.direction == "received" and p.local[1] == b.local_port]
    assert len(sent) >= 40 and got == sent[:len(got)] and len(got) >= len(sent) - 2
    assert {len(d) for d in sent} == {12 + 160 + 10}
    assert b.packets_received >= len(got) - 1 and b.report()["srtp"]["auth_failures"] == 0


async def test_sccp_call_pcap_has_skinny_and_both_streams_rtp(tmp_path: Path) -> None:
    """Two SCCP phones of the lab call manager: held and resumed, so each end had two media
    streams (a port pair each); the caller's pcap holds the SKINNY messages over TCP and the
    RTP of both streams, both ways (four RTP streams for tshark), in time order."""
    from test_sccp_phone import ALICE, BOB, connected_pair, lab_config
    from test_sccp_phone import account as sccp_account

    from skinnysip.lab.callmanager import LabCallManager
    from skinnysip.phone.sccp_phone import SCCPPhone

    cm = LabCallManager(lab_config())
    await cm.start()
    try:
        async with SCCPPhone(sccp_account(cm, ALICE)) as alice, SCCPPhone(sccp_account(cm, BOB)) as bob_phone:
            out, inc = await connected_pair(alice, bob_phone)
            await asyncio.sleep(1.2)
            await out.hold()
            await asyncio.sleep(0.3)
            await out.resume()
            await asyncio.sleep(1.2)
            await out.hangup()
            assert await inc.wait_ended(5.0)
            path = tmp_path / "sccp.pcapng"
            await asyncio.to_thread(out.write_pcap, path)
            reports = out.media_reports()
    finally:
        await cm.stop()
    assert len(reports) == 2
    decode = ["-d", f"tcp.port=={cm.port},skinny",
              *(a for r in reports for a in ("-d", f"udp.port=={r['local'][1]},rtp"))]
    rows = tshark(path, *decode, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.protocols",
                  "-e", "udp.srcport", "-e", "udp.dstport", "-e", "skinny.messageId")
    assert [float(r[0]) for r in rows] == sorted(float(r[0]) for r in rows)
    assert any(":tcp:skinny" in r[1] for r in rows)
    flows = {(int(r[2]), int(r[3])) for r in rows if r[1].endswith(":rtp")}
    for r in reports:
        local, remote = r["local"][1], r["remote"][1]
        assert {(local, remote), (remote, local)} <= flows, (r["local"], r["remote"], flows)
    assert tshark(path, *decode, "-Y", "_ws.malformed") == []
    streams = subprocess.run([require("tshark"), "-r", str(path), *decode, "-q", "-z", "rtp,streams"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    assert len([line for line in streams.splitlines() if " 0x" in line]) == 4, streams
