"""``skinnysip sip listen`` as a user runs it: a process printing one JSON object per message,
answering probes, stopping cleanly on Ctrl-C, and failing in one line on a busy port."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from peertools import free_port, require
from skinnysip.probes.sip import ProbeRequest, invite, options

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "skinnysip", "sip", "listen", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_udp(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """Until the process holds the UDP port (binding it ourselves fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"listen exited early: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise AssertionError("listen did not bind its port")


async def test_listen_json_lines_and_ctrl_c() -> None:
    port = free_port(socket.SOCK_DGRAM)
    proc = _start("--port", str(port), "--json", "--answer", "486")
    try:
        _wait_udp(port, proc)
        ok = await options(ProbeRequest(host="127.0.0.1", port=port, timeout=3))
        busy = await invite(ProbeRequest(host="127.0.0.1", port=port, timeout=3))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert ok.success and ok.status_code == 200, ok.error
    assert ok.allowed_methods and "INVITE" in ok.allowed_methods
    assert busy.success and busy.status_code == 486 and busy.cleanup == "ack"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    summaries = [(r["direction"], r["summary"]) for r in lines]
    assert ("received", f"OPTIONS sip:127.0.0.1:{port}") in summaries
    assert ("sent", "200 OK") in summaries
    assert ("sent", "486 Busy Here") in summaries
    assert summaries[-1][0] == "received" and summaries[-1][1].startswith("ACK")
    assert all(r["remote"].startswith("127.0.0.1:") and r["transport"] == "udp" for r in lines)


def test_listen_on_a_busy_port_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = _start("--port", str(port))
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2  # a local error (issue 11: 3 is for servers that give no usable answer)
    assert "Traceback" not in out + err and out == ""
    assert f"cannot listen on 127.0.0.1:{port}/udp: address already in use" in out + err


def test_sigterm_writes_the_pcap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM stops listen as Ctrl-C does (exit 0) and --pcap holds what it saw; tshark reads
    it with no malformed packet."""
    import asyncio

    port = free_port(socket.SOCK_DGRAM)
    pcap = tmp_path / "listen.pcapng"
    proc = _start("--port", str(port), "--pcap", str(pcap))
    try:
        _wait_udp(port, proc)
        result = asyncio.run(options(ProbeRequest(host="127.0.0.1", port=port, timeout=5)))
        assert result.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err
    tshark = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code",
                             "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert [line.split("\t") for line in tshark.stdout.splitlines()] == [["OPTIONS", "", ""], ["", "200", ""]]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sofia_sips_options_client_gets_our_answer(transport: str) -> None:
    """Sofia-SIP's ``sip-options`` (``sofia-sip-bin``; the stack of FreeSWITCH's mod_sofia) asks
    ``sip listen`` over UDP and over TCP: it prints our 200 with the Allow we send, exits 0,
    and listen shows its OPTIONS and our answer on the transport it came by."""
    client = require("sip-options")
    port = free_port(socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    proc = _start("--port", str(port), "--transport", transport, "--json")
    try:
        if transport == "udp":
            _wait_udp(port, proc)
        else:
            _wait_tcp(port, proc)
        # bound to loopback, on any port (its default is every address, on 5060)
        asked = subprocess.run([client, "--bind=sip:127.0.0.1:*", f"sip:127.0.0.1:{port};transport={transport}"],
                               capture_output=True, text=True, timeout=20)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert asked.stdout.startswith("SIP/2.0 200 OK\n"), asked.stdout
    assert "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in asked.stdout, asked.stdout
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["direction"], r["summary"][:7], r["transport"]) for r in lines] == [
        ("received", "OPTIONS", transport), ("sent", "200 OK", transport)], lines


def _wait_tcp(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """Until the process accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"listen exited early: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError("listen did not accept on its port")
