"""``skinnysip sip listen`` as a user runs it: a process printing one JSON object per message,
answering probes, stopping cleanly on Ctrl-C, and failing in one line on a busy port."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from peertools import free_port
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
