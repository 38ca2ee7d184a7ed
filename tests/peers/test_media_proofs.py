"""Proofs of the phone's media against independent judges on 127.0.0.1.

* RTCP against tshark: a call between our phone and baresip (through the Kamailio PBX of
  test_phone_baresip.py), captured on loopback; tshark sees SR/RR from both sides, nothing
  malformed, its ``-z rtp,streams`` jitter of the stream we received agrees with our report,
  and its RTCP round-trip calculation agrees with our RTT.
* Payload echo against SIPp: SIPp calls our phone, plays a G.711 pcap with
  ``play_pcap_audio``; our stream in ``echo_payload`` mode sends every payload back, and
  tshark shows the payloads of both directions identical byte for byte, in order.
* SIP INFO DTMF from SIPp: ``application/dtmf-relay`` bodies for 1, 2, # arrive as
  ``DTMFReceived(method="info")`` in order.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import Baresip
from sip_peers import KamailioPeer, sipp_uac
from test_phone_baresip import account, bob, pbx  # noqa: F401 - bob, pbx: fixtures
from test_phone_sipp import HEAD, TAIL, phone_account, recv, sdp_body
from test_phone_sipp import uac_invite as invite_with

from peertools import TsharkCapture, free_port
from skinnysip.phone.api import CallState, CallStateChanged, DTMFReceived, IncomingCall, PhoneError
from skinnysip.phone.conference import Conference
from skinnysip.phone.sip_phone import SIPCall, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def _ints(layer: dict[str, Any], key: str) -> list[int]:
    out: list[int] = []
    for value in layer.get(key, []):
        out.extend(int(v) for v in (value if isinstance(value, list) else [value]))
    return out


def rtp_streams(cap: TsharkCapture, decode_as: list[str]) -> list[dict[str, Any]]:
    """tshark's ``-z rtp,streams`` table as dicts. tshark 4.0 prints one line per stream::

        Start time  End time  Src IP addr  Port  Dest IP addr  Port  SSRC  Payload  Pkts  Lost
        Min Delta(ms)  Mean Delta(ms)  Max Delta(ms)  Min Jitter(ms)  Mean Jitter(ms)
        Max Jitter(ms)  Problems?

    with ``Lost`` as ``N (x.y%)``; jitter is RFC 3550's estimate from capture times."""
    args = [cap.tshark, "-r", str(cap.file), "-q", "-z", "rtp,streams"]
    for d in decode_as:
        args += ["-d", d]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    number = r"\s+(-?[\d.]+)"
    row = re.compile(r"\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+(.+?)"
                     r"\s+(\d+)\s+(-?\d+) \(.*?\)" + number * 6 + r"\s*(.*)$")
    streams = []
    for line in out.splitlines():
        m = row.match(line)
        if m:
            streams.append({"src": (m[1], int(m[2])), "dst": (m[3], int(m[4])), "ssrc": int(m[5], 16),
                            "payload": m[6], "packets": int(m[7]), "lost": int(m[8]),
                            "mean_delta_ms": float(m[10]), "max_delta_ms": float(m[11]),
                            "mean_jitter_ms": float(m[13]), "max_jitter_ms": float(m[14]),
                            "problem": m[15].strip()})
    assert streams, f"no stream in tshark's rtp,streams output:\n{out}"
    return streams


# ---- RTCP against tshark ----------------------------------------------------------------

async def test_rtcp_and_jitter_agree_with_tshark(pbx: KamailioPeer, bob: Baresip,  # noqa: F811
                                                 tmp_path: Path) -> None:
    """Our phone calls baresip for ~12 s while tshark captures loopback UDP; RTCP from both
    sides (SR while sending, RR blocks about the other's stream), no malformed packet,
    tshark's jitter of baresip's stream to us agrees with ours within 1 ms, and tshark's
    LSR/DLSR round trip (when it computes one) agrees with our RTT."""
    cap = TsharkCapture("udp and not port 53")
    cap.start()
    try:
        async with SIPPhone(account(pbx, "alice", record_dir=str(tmp_path))) as phone:
            call = await phone.call("bob")
            assert await call.wait_connected(15), call.end_reason
            await bob.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(12)
            await call.hangup()
            report = call.media_report()
            assert report is not None and call.audio is not None and call.audio.remote is not None
            ours = (report["local"][1], report["rtcp_port"])
            theirs = (call.audio.remote[1], call.audio.remote[1] + 1)
    finally:
        cap.stop()
    decode_as = [f"udp.port=={ours[0]},rtp", f"udp.port=={ours[1]},rtcp"]
    cap.decode_as = decode_as
    stream_filter = f"udp.port == {ours[0]} || udp.port == {ours[1]}"
    bad = cap.decode(f"({stream_filter}) && (_ws.malformed || _ws.expert.severity == error)",
                     ["frame.number", "_ws.col.Info"])
    assert bad == [], f"tshark flags malformed packets: {bad}"

    # RTCP: SR/RR from both sides
    rtcp = cap.decode(f"rtcp && udp.port == {ours[1]}", ["rtcp.pt", "udp.srcport", "udp.dstport"])
    ours_pt = {t for layer in rtcp if int(layer["udp.srcport"][0]) == ours[1] for t in _ints(layer, "rtcp.pt")}
    theirs_pt = {t for layer in rtcp if int(layer["udp.srcport"][0]) == theirs[1]
                 for t in _ints(layer, "rtcp.pt")}
    assert ours_pt & {200, 201} and 202 in ours_pt, ours_pt  # SR or RR, with SDES
    assert theirs_pt & {200, 201}, theirs_pt
    assert report["rtcp"]["received"] >= 1 and report["peer"]["ssrc"] is not None

    # jitter of the stream we received (baresip → us), as tshark computes it from capture times
    streams = rtp_streams(cap, decode_as)
    received = [s for s in streams if s["dst"][1] == ours[0] and s["ssrc"] == report["received"]["ssrc"]]
    assert len(received) == 1, streams
    tshark_stream = received[0]
    assert abs(tshark_stream["packets"] - report["received"]["packets"]) <= 2, (tshark_stream, report["received"])
    ours_ms = report["received"]["jitter_ms"]
    # ours is RFC 3550's running estimate at the end, tshark's the mean (and max) over the stream
    assert abs(ours_ms - tshark_stream["mean_jitter_ms"]) <= 1.0, (ours_ms, tshark_stream)
    assert ours_ms <= tshark_stream["max_jitter_ms"] + 1.0, (ours_ms, tshark_stream)

    # round trip: tshark's own LSR/DLSR calculation from capture times (on the reports whose
    # blocks point at an SR it saw: either side's view of the same loopback round trip)
    prefs = ["-o", "rtcp.show_roundtrip_calculation:TRUE", "-o", "rtcp.roundtrip_min_threshhold:0"]
    args = [cap.tshark, "-r", str(cap.file), *prefs, "-d", decode_as[1], "-Y", "rtcp.roundtrip-delay",
            "-T", "fields", "-e", "rtcp.roundtrip-delay"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    tshark_rtts = [float(v) for line in out.split() for v in line.split(",") if v]
    assert report["rtt_ms"] is not None, report["peer"]
    assert 0.0 <= report["rtt_ms"] < 50.0, report["rtt_ms"]
    if tshark_rtts:  # whole milliseconds from capture times; ours from the loop's arrival times
        assert min(abs(report["rtt_ms"] - v) for v in tshark_rtts) <= 5.0, (report["rtt_ms"], tshark_rtts)


# ---- payload echo against SIPp ------------------------------------------------------------

def uac_invite(port: int, sdp_payloads: str = "8") -> str:
    """SIPp calls our phone offering ``sdp_payloads`` (at SIPp's media port), takes the 200
    and ACKs it."""
    rtpmaps = {"0": "a=rtpmap:0 PCMU/8000\n", "8": "a=rtpmap:8 PCMA/8000\n",
               "101": "a=rtpmap:101 telephone-event/8000\n"}
    media = (f"m=audio [media_port] RTP/AVP {sdp_payloads}\n"
             + "".join(rtpmaps[pt] for pt in sdp_payloads.split())).rstrip("\n")
    return invite_with(port, body=sdp_body(media)) + recv("180", True) + \
        '  <recv response="200" rrs="true"/>\n' + in_dialog("ACK", 1)


def in_dialog(method: str, cseq: int, body: str = "", content_type: str = "") -> str:
    ctype = f"Content-Type: {content_type}\n" if content_type else ""
    retrans = "" if method == "ACK" else ' retrans="500"'
    length = "Content-Length: [len]" if body else "Content-Length: 0"
    return f"""  <send{retrans}><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
{ctype}{length}

{body}]]></send>
"""


def bye(cseq: int) -> str:
    return in_dialog("BYE", cseq) + recv("200")


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="SIPp's example pcap is not installed")
async def test_echo_payload_returns_sipp_pcap_audio_byte_for_byte() -> None:
    """SIPp calls our phone (``source="rtp-echo"``) and plays g711a.pcap (236 PCMA packets of
    30 ms); tshark sees our stream send back the same payloads, in the same order, and nothing
    else. Such a call has no audio of its own: a conference refuses it."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="pcap-echo") + uac_invite(port)
           + f'  <nop><action><exec play_pcap_audio="{SIPP_PCAP}"/></action></nop>\n'
           + '  <pause milliseconds="8000"/>\n' + bye(2) + TAIL)
    cap = TsharkCapture("udp and not port 53")
    cap.start()
    try:
        # SIPp's -rtp_echo: every received audio payload goes back at once, byte for byte
        async with SIPPhone(replace(phone_account(listen_port=port, auto_answer=0.0), source="rtp-echo")) as phone:
            sipp = asyncio.create_task(sipp_uac("127.0.0.1", port, xml=xml, timeout=30))
            events = []
            while not any(isinstance(e, CallStateChanged) and e.state is CallState.CONFIRMED for e in events):
                event = await phone.next_event(15)
                assert event is not None, events
                events.append(event)
            answered = next(e.call for e in events if isinstance(e, IncomingCall))
            with pytest.raises(PhoneError, match="rtp-echo"):  # no audio of its own to mix
                Conference(phone).add(answered)
            result = await sipp
            assert result.returncode == 0, result.errors or result.screen
            events += await _events(phone)
            calls = {e.call for e in events if isinstance(e, IncomingCall)}
            assert len(calls) == 1
            call = calls.pop()
            assert isinstance(call, SIPCall) and call.state is CallState.TERMINATED
            report = call.media_report()
            assert report is not None and call.audio is not None and call.audio.remote is not None
            local, remote = report["local"][1], call.audio.remote[1]
    finally:
        cap.stop()
    cap.decode_as = [f"udp.port=={local},rtp"]
    bad = cap.decode(f"udp.port == {local} && (_ws.malformed || _ws.expert.severity == error)",
                     ["frame.number", "_ws.col.Info"])
    assert bad == [], f"tshark flags malformed packets: {bad}"
    packets = cap.decode(f"rtp && udp.port == {local}", ["udp.srcport", "udp.dstport", "rtp.p_type",
                                                         "rtp.ssrc", "rtp.payload"])
    to_us = [p["rtp.payload"][0] for p in packets if int(p["udp.dstport"][0]) == local]
    from_us = [p for p in packets if int(p["udp.srcport"][0]) == local]
    assert len(to_us) == 236, len(to_us)  # the whole pcap arrived
    assert [p["rtp.payload"][0] for p in from_us] == to_us
    assert {int(p["udp.dstport"][0]) for p in from_us} == {remote}  # to the port SIPp's SDP named
    assert {int(p["rtp.p_type"][0]) for p in from_us} == {8}
    assert {int(p["rtp.ssrc"][0], 16) for p in from_us} == {report["ssrc"]}  # our SSRC, not SIPp's
    assert report["sent"]["packets"] == 236 and report["received"]["packets"] == 236


async def _events(phone: SIPPhone, quiet: float = 0.2) -> list[object]:
    out = []
    while (event := await phone.next_event(quiet)) is not None:
        out.append(event)
    return out


# ---- SIP INFO DTMF from SIPp ------------------------------------------------------------

async def test_sip_info_dtmf_from_sipp_in_order() -> None:
    """SIPp calls us (auto-answer), then sends INFO application/dtmf-relay for 1, 2, # (each
    answered 200); the phone reports DTMFReceived(method="info") for each, in order, with the
    durations of the bodies."""
    port = free_port(socket.SOCK_DGRAM)
    infos = ""
    for cseq, (digit, duration) in enumerate([("1", 160), ("2", 250), ("#", 100)], start=2):
        body = f"Signal={digit}\r\nDuration={duration}\r\n"
        infos += in_dialog("INFO", cseq, body, "application/dtmf-relay") + recv("200")
        infos += '  <pause milliseconds="200"/>\n'
    xml = HEAD.format(name="info-dtmf") + uac_invite(port, "0 101") + infos + bye(5) + TAIL
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=20)
        assert result.returncode == 0, result.errors or result.screen
        events = await _events(phone)
    dtmf = [e for e in events if isinstance(e, DTMFReceived)]
    assert [(e.digit, e.method, e.duration) for e in dtmf] == [("1", "info", 0.16), ("2", "info", 0.25),
                                                                 ("#", "info", 0.1)]
    call = dtmf[0].call
    assert all(e.call is call for e in dtmf) and call.dtmf_received == ["1", "2", "#"]
    assert call.end_reason == "BYE received"
