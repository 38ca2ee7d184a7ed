"""SIPp calls the lab's echo (600) at the services' UAS address and plays a G.711 pcap
(``play_pcap_audio``, what a ``sipp -sn uac`` load run with ``-rtp_echo`` checking does); tshark
sees the echo send back exactly SIPp's payloads, in order, under its own SSRC, to the port SIPp's
SDP named. Then BYE, 200, and the call is on the services' record. And SIPp (no
telephone-event offered) sends SIP INFO digits to the DTMF echo, which reads them back in-band."""

from __future__ import annotations

import pytest
from sip_peers import sipp_uac
from test_media_proofs import SIPP_PCAP, bye, in_dialog, uac_invite
from test_phone_sipp import HEAD, TAIL, recv

from peertools import TsharkCapture
from skinnysip.lab.services import LabServices
from skinnysip.rtp import g711
from skinnysip.rtp.dtmf import InBandDTMFDetector
from skinnysip.rtp.g711 import PT_PCMU

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="SIPp's example pcap is not installed")
async def test_sipp_hears_its_own_payloads_from_the_echo() -> None:
    cap = TsharkCapture("udp and not port 53")
    cap.start()
    try:
        async with LabServices(domain="lab.skinnysip", extensions={"600": "echo"}) as services:
            assert services.address is not None
            port = services.address[1]
            xml = (HEAD.format(name="lab-echo") + uac_invite(port).replace("sip:alice@", "sip:600@")
                   + f'  <nop><action><exec play_pcap_audio="{SIPP_PCAP}"/></action></nop>\n'
                   + '  <pause milliseconds="8000"/>\n' + bye(2) + TAIL)
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=30)
            assert result.returncode == 0, result.errors or result.screen
            [record] = services.calls()
    finally:
        cap.stop()
    assert record["service"] == "echo" and record["reason"] == "BYE received"
    sdp = next(m["raw"] for m in record["messages"] if m["summary"].startswith("200 OK") and "m=audio" in m["raw"])
    local = int(sdp.split("m=audio ", 1)[1].split()[0])  # our RTP port, from our answer
    cap.decode_as = [f"udp.port=={local},rtp"]
    bad = cap.decode(f"udp.port == {local} && (_ws.malformed || _ws.expert.severity == error)",
                     ["frame.number", "_ws.col.Info"])
    assert bad == [], f"tshark flags malformed packets: {bad}"
    packets = cap.decode(f"rtp && udp.port == {local}", ["udp.srcport", "udp.dstport", "rtp.p_type", "rtp.ssrc",
                                                         "rtp.payload"])
    to_us = [p for p in packets if int(p["udp.dstport"][0]) == local]
    from_us = [p for p in packets if int(p["udp.srcport"][0]) == local]
    assert len(to_us) == 236, len(to_us)  # the whole pcap arrived
    assert [p["rtp.payload"][0] for p in from_us] == [p["rtp.payload"][0] for p in to_us]
    assert {int(p["rtp.p_type"][0]) for p in from_us} == {8}
    assert {p["rtp.ssrc"][0] for p in from_us} != {p["rtp.ssrc"][0] for p in to_us}  # our SSRC, not SIPp's
    assert {int(p["udp.dstport"][0]) for p in from_us} == {int(to_us[0]["udp.srcport"][0])}


async def test_dtmf_echo_reads_info_digits_back_in_band_without_telephone_event() -> None:
    """SIPp offers PCMU only (no telephone-event) and sends its digits 7, 3, # as SIP INFO
    application/dtmf-relay; the DTMF echo reads them back as in-band DTMF tones in its RTP
    (RFC 4733 cannot be used: not negotiated): tshark's capture of our stream, decoded and run
    through a Goertzel DTMF detector, gives 7 3 # in order."""
    cap = TsharkCapture("udp and not port 53")
    cap.start()
    try:
        async with LabServices(domain="lab.skinnysip", extensions={"604": "dtmf-echo"}) as services:
            assert services.address is not None
            port = services.address[1]
            infos = ""
            for cseq, digit in enumerate("73#", start=2):
                infos += in_dialog("INFO", cseq, f"Signal={digit}\r\nDuration=160\r\n", "application/dtmf-relay")
                infos += recv("200") + '  <pause milliseconds="200"/>\n'
            xml = (HEAD.format(name="lab-dtmf-echo") + uac_invite(port, "0").replace("sip:alice@", "sip:604@")
                   + infos + '  <pause milliseconds="4000"/>\n' + bye(5) + TAIL)
            result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=30)
            assert result.returncode == 0, result.errors or result.screen
            [record] = services.calls()
    finally:
        cap.stop()
    sdp = next(m["raw"] for m in record["messages"] if m["summary"].startswith("200 OK") and "m=audio" in m["raw"])
    local = int(sdp.split("m=audio ", 1)[1].split()[0])
    assert "telephone-event" not in sdp
    cap.decode_as = [f"udp.port=={local},rtp"]
    packets = cap.decode(f"rtp && udp.srcport == {local}", ["rtp.seq", "rtp.p_type", "rtp.payload"])
    assert packets and {int(p["rtp.p_type"][0]) for p in packets} == {0}
    audio = g711.decode(PT_PCMU, b"".join(bytes.fromhex(p["rtp.payload"][0].replace(":", "")) for p in packets))
    detector = InBandDTMFDetector()
    heard = "".join(detector.feed(audio))
    assert heard == "73#", heard
