"""SIPp calls the lab's echo (600) at the services' UAS address and plays a G.711 pcap
(``play_pcap_audio``, what a ``sipp -sn uac`` load run with ``-rtp_echo`` checking does); tshark
sees the echo send back exactly SIPp's payloads, in order, under its own SSRC, to the port SIPp's
SDP named. Then BYE, 200, and the call is on the services' record."""

from __future__ import annotations

import pytest
from sip_peers import sipp_uac
from test_media_proofs import SIPP_PCAP, bye, uac_invite
from test_phone_sipp import HEAD, TAIL

from peertools import TsharkCapture
from skinnysip.lab.services import LabServices

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
