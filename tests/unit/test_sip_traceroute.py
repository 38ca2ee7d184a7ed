"""The traceroute probe's reading of each answer, against a scripted UDP responder on
loopback standing for a path whose hops put a ``Warning`` in their 483s (RFC 3261 §20.43: the
warn-agent names who answered, as sipsak prints it). The real path (Kamailio proxies) is in
``tests/peers/test_sip_traceroute.py``."""

from __future__ import annotations

import asyncio
import re

import pytest

from skinnysip.probes.sip import MAX_TRACE_HOPS, ProbeRequest, traceroute

#: what each hop answers, by the Max-Forwards it gets
HOPS = {
    0: ("483 Too Many Hops", 'Warning: 399 edge.example.net "Too many hops"\r\nServer: edge\r\n'),
    1: ("483 Too Many Hops", "Server: core/1.0\r\n"),
    2: ("200 OK", "Contact: <sip:pbx@127.0.0.1>\r\nServer: pbx\r\n"),
}


class Path(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode()
        hops = int(re.search(r"Max-Forwards: (\d+)", text).group(1))
        status, extra = HOPS[min(hops, 2)]
        copied = "".join(f"{line};tag=t{hops}\r\n" if line.startswith("To:") else f"{line}\r\n"
                         for line in text.split("\r\n") if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq"))
        self.transport.sendto(f"SIP/2.0 {status}\r\n{copied}{extra}Content-Length: 0\r\n\r\n".encode(), addr)


async def test_each_hop_is_named_by_its_warning_agent_else_its_server() -> None:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Path, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        result = await traceroute(ProbeRequest(host="127.0.0.1", port=port, timeout=2.0))
    finally:
        transport.close()
    assert result.reached and result.success, result.error
    assert [(h.max_forwards, h.status_code, h.agent) for h in result.hops] == [
        (0, 483, "edge.example.net"), (1, 483, "core/1.0"), (2, 200, "pbx")]
    assert result.hops[2].contact == "<sip:pbx@127.0.0.1>" and result.hops[1].to_tag == "t1"


async def test_max_hops_out_of_range_is_a_value_error() -> None:
    for bad in (0, MAX_TRACE_HOPS + 1):
        with pytest.raises(ValueError, match="max_hops"):
            await traceroute(ProbeRequest(host="127.0.0.1", port=9), max_hops=bad)
