"""The lab answers STUN Binding requests on its SIP UDP port (RFC 5626 §8: an outbound
registrar is a STUN server there) — those of RFC 3489 clients too, which send no magic cookie
and want their 128-bit transaction ID back with a plain MAPPED-ADDRESS (RFC 8489 §12.2).
Sofia-SIP's ``stunc`` is such a client; before, the lab's RFC 8489 answer (magic cookie,
XOR-MAPPED-ADDRESS, a 96-bit ID) left it retransmitting until it gave up."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from peertools import free_port, require, wait_tcp

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


def test_sofias_rfc_3489_stunc_learns_its_address_from_the_labs_sip_port() -> None:
    stunc = require("stunc")
    sip = free_port(socket.SOCK_DGRAM)
    lab = subprocess.Popen([sys.executable, "-m", "skinnysip", "lab", "--sip-port", str(sip), "--sccp-port", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_tcp("127.0.0.1", sip, 20, lab)
        proc = subprocess.run([stunc, f"127.0.0.1:{sip}", "-b"], capture_output=True, text=True, timeout=30)
    finally:
        lab.terminate()
        lab.wait(timeout=10)
    out = proc.stdout + proc.stderr
    bound = re.search(r"local socket is bound to [0-9.]+:(\d+)", out)
    mapped = re.search(r"local address NATed as ([0-9.]+):(\d+)", out)
    assert bound and mapped, out
    assert mapped.groups() == ("127.0.0.1", bound.group(1)), out
