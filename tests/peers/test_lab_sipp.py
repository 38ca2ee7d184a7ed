"""SIPp against the lab: REGISTER with MD5 digest (the scenario answers the 401 with SIPp's
own ``[authentication]``), the binding expires when its time is up (a call to the user then
gets 480); SIPp calls the lab echo (407 answered, then INVITE/200/ACK, a G.711 pcap played,
BYE) and tshark shows the echo sending SIPp's own payloads back to it — the check SIPp's
``-rtp_echo`` makes on the other side."""

from __future__ import annotations

import asyncio
import functools
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sip_peers import sipp_uac
from test_lab_sip import DOMAIN, port, registered, settings
from test_phone_replaces import incoming
from test_phone_sipp import HEAD, TAIL, recv

from peertools import TsharkCapture
from skinnysip.lab.runner import Lab
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings(min_expires=1)) as running:
        yield running


def register_xml(expires: int) -> str:
    def request(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:1001@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]
To: <sip:1001@{DOMAIN}>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:1001@[local_ip]:[local_port]>
{auth}Expires: {expires}
Max-Forwards: 70
Content-Length: 0

]]></send>
"""
    return (HEAD.format(name="register-md5") + request(1, "") + '  <recv response="401" auth="true"/>\n'
            + request(2, "[authentication username=1001 password=demo1001]\n") + recv("200") + TAIL)


async def test_sipp_registers_with_md5_and_the_binding_expires(lab: Lab) -> None:
    result = await sipp_uac("127.0.0.1", port(lab, "udp"), xml=register_xml(3), timeout=15)
    assert result.returncode == 0, result.errors or result.screen
    assert "algorithm=MD5" in result.messages and 'qop="auth"' in result.messages
    assert lab.proxy is not None
    bindings = [b for b in lab.proxy.bindings() if b["user"] == "1001"]
    assert len(bindings) == 1 and 1 <= bindings[0]["expires"] <= 3 and bindings[0]["transport"] == "udp"
    await asyncio.sleep(3.5)
    assert [b for b in lab.proxy.bindings() if b["user"] == "1001"] == []
    account = SIPAccount(aor=f"sip:1002@{DOMAIN}", password="demo1002", registrar=f"127.0.0.1:{port(lab, 'udp')}",
                         expires=60, source="silence")
    async with SIPPhone(account) as phone:
        call = await phone.call("1001")
        assert not await call.wait_connected(10)
        assert "480" in (call.end_reason or ""), call.end_reason


SIPP_SDP = ("v=0\no=sipp 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n"
            "m=audio [media_port] RTP/AVP 8\na=rtpmap:8 PCMA/8000\n")


def invite_xml(target: str, tag: str, auth: str) -> str:
    """SIPp (as 1001) INVITEs ``target`` of the lab: transaction ``tag`` "a" (CSeq 1) or "b"
    (CSeq 2, with ``auth``: SIPp's ``[authentication …]`` line)."""
    return f"""  <send retrans="500"><![CDATA[
INVITE sip:{target}@{DOMAIN} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=z9hG4bK-[pid]-[call_number]-{tag}
From: <sip:1001@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{target}@{DOMAIN}>
Call-ID: [call_id]
CSeq: {1 if tag == "a" else 2} INVITE
Contact: <sip:1001@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{SIPP_SDP}]]></send>
"""


def ack_xml(target: str, tag: str, cseq: int) -> str:
    """SIPp's ACK for a non-2xx final response to its INVITE transaction ``tag``."""
    return f"""  <send><![CDATA[
ACK sip:{target}@{DOMAIN} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=z9hG4bK-[pid]-[call_number]-{tag}
From: <sip:1001@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""


def echo_call_xml() -> str:
    invite = functools.partial(invite_xml, "600")
    ack_407 = ack_xml("600", "a", 1)

    def in_dialog(method: str, cseq: int) -> str:
        retrans = "" if method == "ACK" else ' retrans="500"'
        return f"""  <send{retrans}><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
From: <sip:1001@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:1001@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
"""

    return (HEAD.format(name="echo-call") + invite("a", "") + recv("100", True)
            + '  <recv response="407" auth="true"/>\n' + ack_407
            + invite("b", "[authentication username=1001 password=demo1001]\n")
            + recv("100", True) + recv("180", True) + recv("183", True)
            + '  <recv response="200" rrs="true"/>\n' + in_dialog("ACK", 2)
            + f'  <nop><action><exec play_pcap_audio="{SIPP_PCAP}"/></action></nop>\n'
            + '  <pause milliseconds="8000"/>\n' + in_dialog("BYE", 3) + recv("200") + TAIL)


def pcap_payloads(path: Path) -> list[str]:
    """The RTP payloads (hex, tshark's form) of a pcap file, in order."""
    out = subprocess.run(["tshark", "-r", str(path), "-d", "udp.port==2006,rtp", "-T", "fields", "-e", "rtp.payload"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def in_order_within(items: list[str], reference: list[str]) -> bool:
    """True if ``items`` is a subsequence of ``reference`` (same order, gaps allowed)."""
    it = iter(reference)
    return all(any(item == ref for ref in it) for item in items)


@pytest.mark.skipif(not SIPP_PCAP.exists(), reason="SIPp's example pcap is not installed")
async def test_sipp_calls_the_lab_echo_and_gets_its_payloads_back(lab: Lab) -> None:
    cap = TsharkCapture("udp and not port 53").start()
    try:
        result = await sipp_uac("127.0.0.1", port(lab, "udp"), xml=echo_call_xml(), timeout=30)
    finally:
        cap.stop()
    assert result.returncode == 0, result.errors or result.screen
    call = next(c for c in lab.calls() if c["to"] == f"sip:600@{DOMAIN}")
    summaries = [m["summary"] for m in call["messages"]]
    assert "407 Proxy Authentication Required" in summaries and call["state"] == "ended", summaries
    invite = next(m["raw"] for m in call["messages"] if m["summary"].startswith("INVITE") and "Proxy-Authorization" in m["raw"])
    media = int(invite.split("m=audio ", 1)[1].split()[0])  # SIPp's RTP port, from its SDP
    answer = next(m["raw"] for m in call["messages"] if m["summary"].startswith("200") and "m=audio " in m["raw"])
    echo = int(answer.split("m=audio ", 1)[1].split()[0])  # the echo's RTP port, from the lab's answer
    cap.decode_as = [f"udp.port=={media},rtp"]
    packets = cap.decode(f"rtp && udp.port == {media}", ["udp.srcport", "udp.dstport", "rtp.payload"])
    # from the echo to SIPp only: a test on another worker may send RTP to a port SIPp reuses
    back = [p["rtp.payload"][0] for p in packets if int(p["udp.dstport"][0]) == media
            and int(p["udp.srcport"][0]) == echo]
    # the reference is the pcap file itself (a loaded machine's live capture may miss a packet)
    reference = pcap_payloads(SIPP_PCAP)
    assert len(reference) == 236
    assert len(back) >= 0.95 * len(reference), len(back)  # the echo sent SIPp's audio back ...
    assert in_order_within(back, reference)  # ... byte for byte, in order, nothing else


async def test_a_callers_cancel_reason_reaches_the_ringing_phone(lab: Lab) -> None:
    """SIPp (1001) calls 1002, our phone, and gives up while it rings with ``Reason:
    Q.850;cause=19;text="No answer"`` in its CANCEL; the lab forwards the CANCEL with that
    Reason (RFC 3326) and the phone reports it: "cancelled by the caller", and why."""
    cancel = f"""  <send><![CDATA[
CANCEL sip:1002@{DOMAIN} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=z9hG4bK-[pid]-[call_number]-b
From: <sip:1001@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]
To: <sip:1002@{DOMAIN}>
Call-ID: [call_id]
CSeq: 2 CANCEL
Reason: Q.850;cause=19;text="No answer"
Max-Forwards: 70
Content-Length: 0

]]></send>
"""
    xml = (HEAD.format(name="cancel-with-reason") + invite_xml("1002", "a", "") + recv("100", True)
           + '  <recv response="407" auth="true"/>\n' + ack_xml("1002", "a", 1)
           + invite_xml("1002", "b", "[authentication username=1001 password=demo1001]\n")
           + recv("100", True) + recv("180") + '  <pause milliseconds="300"/>\n' + cancel
           + recv("200") + recv("487") + ack_xml("1002", "b", 2) + TAIL)
    account = SIPAccount(aor=f"sip:1002@{DOMAIN}", password="demo1002", registrar=f"127.0.0.1:{port(lab, 'udp')}",
                         expires=60, source="silence")
    async with SIPPhone(account) as phone:
        await registered(lab, "1002")
        caller = asyncio.create_task(sipp_uac("127.0.0.1", port(lab, "udp"), xml=xml, timeout=20))
        call = await incoming(phone, 15)
        assert await call.wait_ended(10)
        result = await caller
    assert result.returncode == 0, result.errors or result.screen
    assert call.end_reason == "cancelled by the caller" and not call.connected
    assert call.remote_reason == "Q.850 cause 19 (No answer)", call.remote_reason
