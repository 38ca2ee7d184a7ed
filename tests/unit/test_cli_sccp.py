"""``skinnysip sccp …`` as a user runs it: real processes against the lab CM process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sccp_lab import lab_cm_process

from peertools import free_port


@pytest.fixture(scope="module")
def lab_port() -> Iterator[int]:
    with lab_cm_process() as port:
        yield port


def skinnysip(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skinnysip", "sccp", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})


def test_call_with_hold_prints_registration_states_and_rtp_counts(lab_port: int) -> None:
    r = skinnysip("call", "127.0.0.1", "--port", str(lab_port), "--device", "SEP001122334455", "--dial", "600",
                  "--hold", "3000")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "success (call-completed)" in out
    assert re.search(r"registered\s+True", out)
    assert re.search(r"call states\s+OffHook → Proceed → RingOut → Connected → OnHook", out)
    sent = int(re.search(r"RTP sent\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    received = int(re.search(r"RTP received\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert sent >= 50 and received >= 50  # ~150 each in 3 s
    assert re.search(r"→\s+Register deviceName=SEP001122334455 deviceType=7", out)  # the ladder
    assert re.search(r"←\s+StartMediaTransmission", out)


def test_json_is_the_api_body(lab_port: int) -> None:
    r = skinnysip("linestate", "127.0.0.1", "--port", str(lab_port), "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["success"] is True and body["operation"] == "linestate"
    assert body["lines"][0]["dirNumber"] == "1001"
    assert body["exchange"][0]["decoded"]["name"] == "Register"


def test_probe_and_register(lab_port: int) -> None:
    r = skinnysip("probe", "127.0.0.1", "--port", str(lab_port))
    assert r.returncode == 0 and "keepalive ack" in r.stdout
    r = skinnysip("register", "127.0.0.1", "--port", str(lab_port), "--device", "SEP00112233445A",
                  "--device-type", "8")
    assert r.returncode == 0 and "(7940)" in r.stdout


def test_failures_exit_non_zero(lab_port: int) -> None:
    r = skinnysip("register", "127.0.0.1", "--port", str(lab_port), "--device", "SEP0000DEADBEEF", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["rejectReason"] == "No Authority: SEP0000DEADBEEF"
    r = skinnysip("probe", "127.0.0.1", "--port", str(free_port()), "--timeout", "500")
    assert r.returncode == 3 and "connection refused" in r.stdout
    r = skinnysip("register", "127.0.0.1", "--device", "PHONE1")
    assert r.returncode == 2 and "--device" in r.stderr and "deviceName" not in r.stderr
    assert "Value error" not in r.stderr
    r = skinnysip("call", "127.0.0.1", "--dial", "12x")
    assert r.returncode == 2 and "--dial" in r.stderr and "dialNumber" not in r.stderr
    r = skinnysip("call", "127.0.0.1", "--dial", "600", "--hold", "-5")
    assert r.returncode == 2 and "--hold" in r.stderr and "holdMs" not in r.stderr


def test_busy_call_exits_1_and_host_port_form(lab_port: int) -> None:
    # HOST:PORT instead of --port; 602 is no number of the lab CM: the call fails (answered otherwise)
    r = skinnysip("call", f"127.0.0.1:{lab_port}", "--dial", "6029", "--timeout", "3000", "--json")
    body = json.loads(r.stdout)
    assert body["registered"] is True and body["success"] is False, body["error"]
    assert r.returncode == 1
    r = skinnysip("probe", f"127.0.0.1:{lab_port}", "--port", str(lab_port + 1))
    assert r.returncode == 2 and "--port" in r.stderr


def test_t_is_never_timeout_under_sccp() -> None:
    r = skinnysip("probe", "127.0.0.1", "-t", "500")
    assert r.returncode == 2 and "No such option" in r.stderr


def test_pcap_of_an_sccp_call_is_read_by_tshark(lab_port: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pcap = tmp_path / "call.pcapng"
    r = skinnysip("call", f"127.0.0.1:{lab_port}", "--dial", "600", "--hold", "500", "--pcap", str(pcap))
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", f"tcp.port=={lab_port},skinny", "-T", "fields",
                          "-e", "skinny.messageId", "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) > 10 and all(row[-1] == "" for row in rows)
