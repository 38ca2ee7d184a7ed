"""Sending from a chosen local address (SIPp ``-i``, sipsak ``-l``, pjsua ``--bound-addr``):
the probes, the phone, the load generator and the SCCP station. Kamailio's log names each request's source
(``$si:$sp``), SIPp ``-rtp_echo`` sends our media back to the address our SDP names, and
baresip sends its audio there. 127.0.0.2 … 127.0.0.9 are this host's loopback addresses as
well (Linux routes all of 127/8 to ``lo``), so nothing leaves the machine."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_load_call import sipp_echo_uas
from test_phone_baresip import THEIR_TONE, registered, share_of
from test_phone_cli import _cmd, _run

from peertools import free_port, wait_tcp
from skinnysip.probes.sip import ProbeRequest, digest_auth, options
from skinnysip.sip.message import parse_message

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


def sources(peer: KamailioPeer, method: str) -> list[str]:
    """``ip:port (transport)`` of every ``method`` request in Kamailio's log, in order."""
    return re.findall(rf"request {method} \S+ from (\S+ \(\w+\))", Path(peer.log_file).read_text(errors="replace"))


async def until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_the_options_probe_sends_from_the_local_ip_and_port(kamailio_md5: KamailioPeer, transport: str) -> None:
    peer = kamailio_md5
    port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM, "127.0.0.2")
    result = await options(ProbeRequest(host=peer.host, port=peer.port(transport), transport=transport,
                                        ca_file=peer.ca_file, timeout=5.0, source_ip="127.0.0.2", source_port=port))
    assert result.success and result.status_code == 200, result.error
    assert {m.local for m in result.exchange} == {f"127.0.0.2:{port}"}
    sent = parse_message(result.exchange[0].raw.encode())
    assert sent.headers.get("Via").split()[1].startswith(f"127.0.0.2:{port}")
    await until(lambda: f"127.0.0.2:{port} ({transport})" in sources(peer, "OPTIONS"))


async def test_the_digest_login_binds_the_contact_at_the_local_ip(kamailio_md5: KamailioPeer) -> None:
    peer = kamailio_md5
    result = await digest_auth(ProbeRequest(host=peer.host, port=peer.udp_port, username="carol",
                                            password=peer.users["carol"], timeout=5.0, source_ip="127.0.0.3"))
    assert result.authenticated, result.error
    registers = [m for m in result.exchange if m.direction == "sent" and m.summary.startswith("REGISTER")]
    assert registers and all(m.local.startswith("127.0.0.3:") for m in registers)
    assert all("Contact: <sip:carol@127.0.0.3:" in m.raw for m in registers)
    await until(lambda: any(s.startswith("127.0.0.3:") for s in sources(peer, "REGISTER")))


def test_the_command_line_refuses_an_address_this_host_lacks_and_the_other_family(kamailio_md5: KamailioPeer) -> None:
    peer = kamailio_md5
    base = [sys.executable, "-m", "skinnysip", "sip", "options", "127.0.0.1", "-p", str(peer.udp_port)]
    ok = subprocess.run([*base, "--local-ip", "127.0.0.4", "--json"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert {m["local"].split(":")[0] for m in json.loads(ok.stdout)["exchange"]} == {"127.0.0.4"}
    # 192.0.2.1 (TEST-NET-1) is no address of this host: refused before anything is sent
    for args, reason in ((["--local-ip", "192.0.2.1"], "not an address of this host"),
                         (["--local-ip", "::1"], "different families"),
                         (["--local-ip", "alice"], "not an IPv4 or IPv6 address")):
        proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and reason in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        proc = subprocess.run([*base, "--local-port", str(taken)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "port in use" in proc.stderr, proc.stderr


def test_load_register_sends_every_request_from_the_local_ip(kamailio_md5: KamailioPeer) -> None:
    peer = kamailio_md5
    proc = subprocess.run(
        [sys.executable, "-m", "skinnysip", "load", "register", "127.0.0.1", "-p", str(peer.udp_port),
         "--domain", peer.realm, "-u", "bob", "--password", peer.users["bob"], "-r", "20", "-m", "20",
         "--local-ip", "127.0.0.5", "--json", "--quiet"], capture_output=True, text=True, timeout=60)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["successful"] == 20, (result, proc.stderr)
    # each attempt: REGISTER, 401, REGISTER; the unregister the same
    deadline = time.monotonic() + 5
    while len([s for s in sources(peer, "REGISTER") if s.startswith("127.0.0.5:")]) < result["requestsSent"]:
        assert time.monotonic() < deadline, sources(peer, "REGISTER")[-5:]
        time.sleep(0.05)
    assert len({s for s in sources(peer, "REGISTER") if s.startswith("127.0.0.5:")}) == 1  # one socket


def test_load_calls_signal_and_stream_from_the_local_ip(tmp_path: Path) -> None:
    calls, log = 3, tmp_path / "messages.log"
    with sipp_echo_uas(calls) as uas:
        proc = subprocess.run(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(uas.port), "--to",
             "service", "-r", "5", "-m", str(calls), "--hold", "1", "--local-ip", "127.0.0.6", "--trace-msg",
             str(log), "--json", "--quiet"], capture_output=True, text=True, timeout=90)
        result = json.loads(proc.stdout)
        uas.finish(timeout=15)
    assert proc.returncode == 0 and result["successful"] == calls, (result, proc.stderr[-2000:])
    text = log.read_text()
    assert text.count("c=IN IP4 127.0.0.6") >= calls and "Via: SIP/2.0/UDP 127.0.0.6:" in text
    assert "127.0.0.1:" not in "".join(re.findall(r"Via: SIP/2.0/UDP (\S+)", text.split("\n\n")[0]))
    # SIPp echoed what we sent to the address our SDP named: it came back, none lost
    media = result["media"]
    assert media["rtpExpected"] >= calls * 50 * 0.8 and media["rtpLost"] == 0


async def test_the_phone_registers_calls_and_hears_at_its_local_ip(tmp_path: Path) -> None:
    with kamailio(pbx=True) as pbx:
        async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
            await registered(pbx, "bob")
            code, out, err = await _run(_cmd(pbx, "--local-ip", "127.0.0.7", "--listen-port", "0", "--call", "bob",
                                             "--duration", "2", "--record", str(tmp_path)))
            assert code == 0, err + out
            await bob.wait_event("CALL_CLOSED")
        # alice's REGISTERs (and the unregister) and her INVITE came from 127.0.0.7; bob is at 127.0.0.1
        for method, least in (("REGISTER", 2), ("INVITE", 1)):
            ours = [s for s in sources(pbx, method) if s.startswith("127.0.0.7:")]
            assert len(ours) >= least, sources(pbx, method)
    # baresip sent its tone to the address our SDP named, and we heard it there
    rx = sorted(tmp_path.glob("*-rx.wav"))
    assert rx and share_of(rx[0], THEIR_TONE) >= 0.95


def test_the_sccp_station_registers_and_streams_from_the_local_ip() -> None:
    port = free_port()
    cm = subprocess.Popen([sys.executable, "-m", "skinnysip", "sccp", "lab-cm", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_tcp("127.0.0.1", port, 15)
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "sccp", "call", f"127.0.0.1:{port}", "--dial", "600",
                               "--hold", "800", "--local-ip", "127.0.0.9", "--json"],
                              capture_output=True, text=True, timeout=60)
        refused = subprocess.run([sys.executable, "-m", "skinnysip", "sccp", "register", f"127.0.0.1:{port}",
                                  "--local-ip", "192.0.2.1"], capture_output=True, text=True, timeout=60)
    finally:
        cm.terminate()
        cm.wait(timeout=10)
    body = json.loads(proc.stdout)
    assert proc.returncode == 0 and body["success"], body.get("error")
    assert {m["local"].split(":")[0] for m in body["exchange"]} == {"127.0.0.9"}
    sent = {m["summary"]: m["decoded"]["fields"] for m in body["exchange"] if m["direction"] == "sent"}
    assert sent["Register"]["stationIpAddr"] == "127.0.0.9"
    assert sent["OpenReceiveChannelAck"]["ipAddr"] == "127.0.0.9"
    # the echo service sent our audio back to the address we gave it: it came back
    assert body["rtpPacketsSent"] > 20 and body["rtpPacketsReceived"] > 20
    assert refused.returncode == 2 and "not an address of this host" in refused.stderr
