"""RTP/RTCP port pairs taken from a range (``rtp_ports``, as baresip's ``rtp_ports`` and pjsua's
``--rtp-port``): the range's rules, a pair found around ports already taken, a clear error when
none is free, and the accounts, API and CLI refusing a range with no pair. Sockets are bound
on 127.0.0.1 only; nothing is sent."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from peertools import free_even_range
from skinnysip.api.app import create_app
from skinnysip.net.media import MediaStream, _bind_pair, check_port_range
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone


@pytest.fixture
def taken() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def hold(taken: list[socket.socket], port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    taken.append(s)


def test_a_range_needs_an_even_port_and_its_successor() -> None:
    assert check_port_range((10000, 10001)) == (10000, 10001)
    assert check_port_range((10001, 10003)) == (10001, 10003)  # 10002/10003
    for bad, words in (((10001, 10002), "no even port"), ((10000, 10000), "no even port"),
                       ((0, 100), "within 1-65535"), ((200, 100), "FIRST <= LAST"), ((65534, 65536), "1-65535")):
        with pytest.raises(ValueError, match=words):
            check_port_range(bad)


def test_a_pair_is_found_around_the_ones_taken(taken: list[socket.socket]) -> None:
    first, last = free_even_range(4)
    hold(taken, first)  # pair 1: RTP taken
    hold(taken, first + 3)  # pair 2: RTCP taken
    hold(taken, first + 6)  # pair 4: RTP taken
    seen = set()
    for _ in range(20):  # the start is random: every time the one free pair, 3rd
        rtp, rtcp = _bind_pair("127.0.0.1", 0, (first, last))
        seen.add((rtp.getsockname()[1], rtcp.getsockname()[1]))
        rtp.close()
        rtcp.close()
    assert seen == {(first + 4, first + 5)}
    hold(taken, first + 4)
    with pytest.raises(OSError, match=f"no free even/odd UDP port pair in {first}-{last}"):
        _bind_pair("127.0.0.1", 0, (first, last))


async def test_a_stream_opens_in_the_range_and_refuses_a_bad_one() -> None:
    first, last = free_even_range(8)
    streams = [await MediaStream.open("127.0.0.1", ports=(first, last)) for _ in range(3)]
    try:
        ports = [s.local_port for s in streams]
        assert len(set(ports)) == 3 and all(first <= p < last and p % 2 == 0 for p in ports)
    finally:
        for s in streams:
            await s.close()
    with pytest.raises(ValueError, match="no even port"):
        await MediaStream.open("127.0.0.1", ports=(first + 1, first + 2))


def test_accounts_api_and_cli_refuse_a_range_without_a_pair() -> None:
    with pytest.raises(ValueError, match="rtp_ports: RTP ports 10001-10002"):
        SIPPhone(SIPAccount(aor="sip:alice@127.0.0.1", rtp_ports=(10001, 10002)))
    with pytest.raises(ValueError, match="rtp_ports: RTP ports 9-8"):
        SCCPPhone(SCCPAccount(host="127.0.0.1", rtp_ports=(9, 8)))
    client = TestClient(create_app())
    for body in ({"aor": "sip:alice@127.0.0.1", "rtpPorts": [10001, 10002]},
                 {"protocol": "sccp", "host": "127.0.0.1", "rtpPorts": [10000, 70000]},
                 {"aor": "sip:alice@127.0.0.1", "rtpPorts": [10000]}):
        r = client.post("/api/phones", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("rtpPorts"), r.text
    for flag in ("10001-10002", "5-4", "x"):
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "phone", "sip:alice@127.0.0.1", "--no-register",
                               "--rtp-ports", flag], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and "--rtp-ports" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
