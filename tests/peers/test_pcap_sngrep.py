"""Our pcapng files open in sngrep (Debian ``sngrep`` 1.6), a libpcap-based SIP viewer, as
well as in Wireshark: it reads the packets back and finds every SIP message of dialogs over
UDP/IPv4, UDP/IPv6 and TCP. sngrep, like tcpdump, reads raw-IP captures (LINKTYPE_RAW, 101),
not LINKTYPE_IPV4/IPV6 (228/229), which we wrote before ("Unable to handle linktype 228")."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from peertools import require
from skinnysip.pcap import exchange_to_pcapng
from skinnysip.result import WireMessage

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


def dialog(call_id: str, transport: str, local: str, remote: str, t0: float) -> list[WireMessage]:
    """INVITE, 180, 200, ACK, BYE, 200 of one call as our exchange records them."""
    via = transport.upper()

    def msg(first: str, cseq: str, to_tag: str = "") -> str:
        return (f"{first}\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{call_id}{cseq.split()[0]}\r\n"
                f"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <sip:alice@{local}>\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")

    flow = [("sent", msg(f"INVITE sip:bob@{remote} SIP/2.0", "1 INVITE")),
            ("received", msg("SIP/2.0 180 Ringing", "1 INVITE", ";tag=b1")),
            ("received", msg("SIP/2.0 200 OK", "1 INVITE", ";tag=b1")),
            ("sent", msg(f"ACK sip:bob@{remote} SIP/2.0", "1 ACK", ";tag=b1")),
            ("sent", msg(f"BYE sip:bob@{remote} SIP/2.0", "2 BYE", ";tag=b1")),
            ("received", msg("SIP/2.0 200 OK", "2 BYE", ";tag=b1"))]
    return [WireMessage(direction=d, time=t0 + i * 0.01, local=local, remote=remote,  # type: ignore[arg-type]
                        transport=transport, summary=raw.split("\r\n")[0], raw=raw) for i, (d, raw) in enumerate(flow)]


def test_sngrep_reads_every_sip_message_of_our_pcapng(tmp_path: Path) -> None:
    exchange = (dialog("udp4", "udp", "127.0.0.1:5070", "127.0.0.1:5060", 1.8e9)
                + dialog("udp6", "udp", "[::1]:5070", "[::1]:5060", 1.8e9 + 1)
                + dialog("tcp4", "tcp", "127.0.0.1:40000", "127.0.0.1:5060", 1.8e9 + 2))
    source, kept = tmp_path / "call.pcapng", tmp_path / "sngrep.pcap"
    source.write_bytes(exchange_to_pcapng(exchange))
    # -N: no interface; -q: quiet; -I: read the file; -O: write the SIP packets it parsed
    run = subprocess.run([require("sngrep"), "-N", "-q", "-I", str(source), "-O", str(kept)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "linktype" not in run.stdout + run.stderr, run.stdout + run.stderr
    out = subprocess.run([require("tshark"), "-r", str(kept), "-T", "fields", "-e", "sip.Call-ID", "-e", "sip.CSeq"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    seen = Counter(tuple(line.split("\t")) for line in out.splitlines() if line.strip())
    for call_id in ("udp4", "udp6", "tcp4"):
        assert seen[(call_id, "1 INVITE")] == 3 and seen[(call_id, "1 ACK")] == 1, seen
        assert seen[(call_id, "2 BYE")] == 2, seen
