"""tshark's SIP dissector as an independent judge: a loopback capture of every probe over UDP
and TCP (against Kamailio and SIPp) has no malformed packet and no error-level expert info, and
every SIP message it decodes is one we meant (method / status), no more, no less."""

from __future__ import annotations

from collections import Counter

import pytest
from sip_peers import KamailioPeer

from peertools import tshark_capture
from skinnysip.probes.sip import ProbeRequest, digest_auth, invite, options, register

pytestmark = pytest.mark.peer


def expected_items(results) -> Counter[str]:
    """What each exchange says went over the wire: methods of requests, codes of responses."""
    items: Counter[str] = Counter()
    for result in results:
        for m in result.exchange:
            items[m.summary.split()[0]] += 1
    return items


def flatten(values) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(v if isinstance(v, list) else [v])
    return out


async def test_capture_of_all_probes_is_well_formed(kamailio_md5: KamailioPeer, sipp_uas) -> None:
    peer = kamailio_md5
    with sipp_uas("answer", "udp") as answer, sipp_uas("ring-no-answer", "tcp") as ring:
        udp_ports = [peer.udp_port, answer.port]
        tcp_ports = [peer.tcp_port, ring.port]
        capture_filter = " or ".join(
            [f"udp port {p}" for p in udp_ports] + [f"tcp port {p}" for p in tcp_ports]
        )
        decode_as = [f"udp.port=={p},sip" for p in udp_ports] + [f"tcp.port=={p},sip" for p in tcp_ports]
        results = []
        with tshark_capture(capture_filter, decode_as) as cap:
            for transport in ("udp", "tcp"):
                base = {"host": peer.host, "port": peer.port(transport), "transport": transport, "timeout": 5.0}
                results.append(await options(ProbeRequest(**base)))
                results.append(await register(ProbeRequest(**base, username="alice")))
                results.append(await digest_auth(ProbeRequest(**base, username="alice", password="wonderland")))
                results.append(await digest_auth(ProbeRequest(**base, username="bob", password="wrong")))
            results.append(await invite(ProbeRequest(host=answer.host, port=answer.port, to_uri="bob", timeout=5)))
            results.append(
                await invite(ProbeRequest(host=ring.host, port=ring.port, transport="tcp", to_uri="bob", timeout=0.5))
            )
        answer.finish()
        ring.finish()
    assert all(r.success for r in results), [r.error for r in results]
    bad = cap.decode("_ws.malformed || _ws.expert.severity == error", ["frame.number", "_ws.expert.message"])
    assert bad == [], f"tshark flags malformed/error packets: {bad}"
    packets = cap.decode("sip", ["sip.Method", "sip.Status-Code", "sip.CSeq.method"])
    seen: Counter[str] = Counter()
    for layers in packets:
        methods = flatten(layers.get("sip.Method"))
        codes = flatten(layers.get("sip.Status-Code"))
        seen.update(methods)
        seen.update(codes)
    expected = expected_items(results)
    assert seen == expected
    # the probes exercised what we meant to check
    for item in ("OPTIONS", "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "200", "401", "403", "180", "487"):
        assert seen[item] > 0, item
