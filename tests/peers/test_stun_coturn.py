"""STUN Binding (skinnysip.net.stun, MediaStream.map_through_stun) against coturn on
127.0.0.1, and its failures: a server that never answers, a server of the other family."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sip_peers

import netns
from peertools import free_port, stop_process
from skinnysip.net.media import MediaStream
from skinnysip.net.stun import DEFAULT_PORT, StunError, parse_server
from skinnysip.phone.api import ErrorEvent
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [
    pytest.mark.peer,
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is installed by scripts/install-deps.sh"),
]


def wait_for_stun(server: tuple[str, int], timeout: float, namespace: str | None = None) -> None:
    """Until the STUN server answers a Binding (from inside network namespace ``namespace``
    when given); AssertionError after ``timeout`` s."""
    from aioice import stun

    with netns.entered(namespace) if namespace else contextlib.nullcontext():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.sendto(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)), server)
            with contextlib.suppress(OSError):
                if stun.parse_message(sock.recv(2048)).message_class == stun.Class.RESPONSE:
                    return
    raise AssertionError(f"no STUN answer from {server} within {timeout} s")


def coturn_command(ip: str, port: int, pid_file: Path) -> list[str]:
    """coturn as a STUN server only (no TURN, TLS, CLI or configuration file) on ``ip:port``,
    logging to stdout; its pid file where the test says (not /var/run)."""
    return ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", ip,
            "--listening-port", str(port), "--log-file", "stdout", "--simple-log", "--pidfile", str(pid_file)]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """coturn, STUN only, on a free UDP port of 127.0.0.1; its port."""
    port = free_port()
    pid = tmp_path_factory.mktemp("coturn") / "turn.pid"
    proc = subprocess.Popen(coturn_command("127.0.0.1", port, pid), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_stun(("127.0.0.1", port), 10)
        yield port
    finally:
        stop_process(proc)


async def test_the_mapped_addresses_of_both_media_sockets(coturn: int) -> None:
    stream = await MediaStream.open("127.0.0.1")
    try:
        assert stream.advertised == (stream.local_ip, stream.local_port, stream.rtcp_port)
        public = await stream.map_through_stun(("127.0.0.1", coturn), timeout=2)
        # on loopback there is no NAT: coturn sees each socket where it is bound
        assert public == ("127.0.0.1", stream.local_port, stream.rtcp_port)
        assert stream.public == public == stream.advertised
        assert stream.stun_received >= 2
        sent = [p for p in stream.packet_log.packets() if p.direction == "sent"]
        assert {p.remote for p in sent} == {("127.0.0.1", coturn)}  # the pcap shows the Bindings too
    finally:
        await stream.close()


async def test_a_silent_server_is_a_stun_error_at_the_deadline() -> None:
    silent = free_port()
    stream = await MediaStream.open("127.0.0.1")
    try:
        started = time.monotonic()
        with pytest.raises(StunError, match=rf"no answer from STUN server 127.0.0.1:{silent} within 700 ms"):
            await stream.map_through_stun(("127.0.0.1", silent), timeout=0.7)
        assert 0.6 < time.monotonic() - started < 2.0
        assert stream.public is None and stream.advertised[0] == "127.0.0.1"
        with pytest.raises(ValueError, match="IP family"):
            await stream.map_through_stun(("::1", silent), timeout=0.7)
    finally:
        await stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        await stream.map_through_stun(("127.0.0.1", silent))


def test_server_text() -> None:
    assert parse_server("stun.example.net") == ("stun.example.net", DEFAULT_PORT)
    assert parse_server("192.0.2.1:19302") == ("192.0.2.1", 19302)
    assert parse_server("[2001:db8::1]:3479") == ("2001:db8::1", 3479)
    assert parse_server("[2001:db8::1]") == ("2001:db8::1", DEFAULT_PORT)
    assert parse_server("2001:db8::1") == ("2001:db8::1", DEFAULT_PORT)
    for bad in ("", ":3478", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError, match="STUN server"):
            parse_server(bad)




@pytest.mark.parametrize("server", ["silent", "coturn", "unresolvable"])
async def test_the_phones_offer_with_a_stun_server(coturn: int, server: str) -> None:
    """Our phone's offer gives the mapped address when the STUN server answers; when it does
    not, the call goes on with the local address and an ErrorEvent says why (SIPp answers)."""
    port = coturn if server == "coturn" else free_port()
    host = "stun.invalid" if server == "unresolvable" else "127.0.0.1"
    account = SIPAccount(aor="sip:alice@127.0.0.1", register=False, listen_host="127.0.0.1",
                         stun_server=f"{host}:{port}", timeout=1.5)
    with sip_peers.sipp_uas("answer") as peer:
        async with SIPPhone(account) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(10), call.end_reason
            await call.hangup()
            started = time.monotonic()
            second = await phone.call(f"sip:service@127.0.0.1:{free_port()}")
            second_call_took = time.monotonic() - started
            await second.hangup()
            errors = []
            while (event := await phone.next_event(0.05)) is not None:
                if isinstance(event, ErrorEvent):
                    errors.append(event.reason)
    assert call.media is not None and call.offer is not None
    assert call.offer.connection is not None and call.offer.connection.host == "127.0.0.1"
    assert call.offer.media[0].port == call.media.local_port
    if server == "coturn":
        assert errors == [] and call.media.public == ("127.0.0.1", call.media.local_port, call.media.rtcp_port)
    elif server == "silent":
        assert errors == [f"call {call.id}: no answer from STUN server 127.0.0.1:{port} within 1500 ms; "
                          "the SDP gives the local address (and for 60 s, without asking again)"]
        assert call.media.public is None
        assert second_call_took < 1.0  # the next call did not wait for the dead server again
    else:  # RFC 6761 §6.4: no DNS query leaves for it
        assert errors == [f"call {call.id}: cannot resolve 'stun.invalid': no such host (names under .invalid "
                          "never resolve, RFC 6761 §6.4); the SDP gives the local address (and for 60 s, without "
                          "asking again)"]
