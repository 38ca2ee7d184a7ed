"""``--nagios``: a SIP or SCCP probe as a Nagios/Icinga check (the Monitoring Plugins Development
Guidelines: one line ``SERVICE STATE - text | perfdata`` on stdout, exit 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN) against Kamailio and ``skinnysip sccp lab-cm`` (as processes), and run
through the Monitoring Plugins' own ``negate`` wrapper, which reads the state from the exit
status and rewrites the line as a monitor would."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest
from sip_peers import KamailioPeer

from peertools import free_port, require, wait_tcp

pytestmark = pytest.mark.peer

CHECK = [sys.executable, "-m", "skinnysip", "sip"]
#: a plugin line: the state, a text without '|', then performance data 'label=value[uom];warn;crit;min;max'
LINE = re.compile(r"(?:SIP|SCCP) (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+?(?: \| (?:[a-z]+=(?:U|[0-9.]+(?:ms)?);[0-9.]*;[0-9.]*;[0-9.]*;[0-9.]* ?)+)?\n")


def check(*args: str, service: str = "sip") -> tuple[int, str]:
    proc = subprocess.run([*CHECK[:-1], service, *args, "--nagios"], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert LINE.fullmatch(proc.stdout), proc.stdout
    return proc.returncode, proc.stdout


def test_states_follow_the_answer_and_the_round_trip_thresholds(kamailio_md5: KamailioPeer) -> None:
    server = f"127.0.0.1:{kamailio_md5.udp_port}"
    code, line = check("options", server)
    assert code == 0 and line.startswith(f"SIP OK - 200 OK from {server}/udp (kamailio"), line
    rtt = float(re.search(r"\| rtt=([0-9.]+)ms;;;0;", line).group(1))
    assert 0 < rtt < 1000
    code, line = check("options", server, "--warning", "0")
    assert code == 1 and line.startswith("SIP WARNING - 200 OK") and "(>= 0 ms)" in line and "rtt=" in line
    code, line = check("options", server, "-w", "60000", "-c", "0")
    assert code == 2 and line.startswith("SIP CRITICAL - 200 OK") and ";60000;0;0;" in line
    # an answer that is not what was asked: REGISTER without credentials gets 401
    code, line = check("register", server)
    assert code == 1 and line.startswith("SIP WARNING - 401 Unauthorized"), line
    user = ["-u", "alice", "--domain", kamailio_md5.realm]
    code, line = check("auth", server, *user, "--password", kamailio_md5.users["alice"])
    assert code == 0 and line.startswith("SIP OK - authenticated: 200 OK"), line
    code, line = check("auth", server, *user, "--password", "not-her-password")
    assert code == 2 and line.startswith("SIP CRITICAL - login refused: 403"), line


def test_no_answer_is_critical_and_a_usage_error_unknown() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        code, line = check("options", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "300")
    assert code == 2 and line.startswith("SIP CRITICAL - no response from 127.0.0.1:") and "rtt=U;" in line
    code, line = check("options", "127.0.0.1", "--port", "99999")
    assert code == 3 and line.startswith("SIP UNKNOWN - Invalid value for '--port'"), line
    code, line = check("options", "127.0.0.1", "--local-ip", "192.0.2.1")
    assert code == 3 and "not an address of this host" in line


def test_the_monitoring_plugins_negate_reads_our_state(kamailio_md5: KamailioPeer) -> None:
    negate = require("/usr/lib/nagios/plugins/negate")
    # negate swaps OK and CRITICAL, from our exit status, and with -s rewrites the state in the text
    proc = subprocess.run([negate, "-t", "30", "-s", *CHECK, "options", f"127.0.0.1:{kamailio_md5.udp_port}",
                           "--nagios"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout.startswith("SIP CRITICAL - 200 "), (proc.stdout, proc.stderr)
    proc = subprocess.run([negate, "-t", "30", "-s", *CHECK, "options", "127.0.0.1", "--port", "99999", "--nagios"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout.startswith("SIP UNKNOWN - "), proc.stdout


def test_sccp_states_against_the_lab_call_manager() -> None:
    port = free_port()
    cm = subprocess.Popen([*CHECK[:-1], "sccp", "lab-cm", "--port", str(port)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    try:
        wait_tcp("127.0.0.1", port, 15)
        server = f"127.0.0.1:{port}"
        code, line = check("probe", server, service="sccp")
        assert code == 0 and line.startswith(f"SCCP OK - KeepAliveAck from {server}/tcp in "), line
        code, line = check("register", server, service="sccp")
        assert code == 0 and line.startswith(f"SCCP OK - SEP001122334455 registered at {server}/tcp"), line
        code, line = check("register", server, "-c", "0", service="sccp")
        assert code == 2 and "(>= 0 ms)" in line and ";;0;0;" in line
        # a device the call manager does not know: RegisterReject
        code, line = check("register", server, "-d", "SEP00000000000F", service="sccp")
        assert code == 2 and line.startswith("SCCP CRITICAL - SEP00000000000F at") and "rejected" in line, line
        code, line = check("call", server, "--dial", "600", "--hold", "300", service="sccp")
        assert code == 0 and "call connected, RTP sent" in line, line
        code, line = check("register", server, "-d", "bad", service="sccp")
        assert code == 3 and line.startswith("SCCP UNKNOWN - "), line
    finally:
        cm.terminate()
        cm.wait(timeout=10)
    code, line = check("probe", server, "--timeout", "500", service="sccp")
    assert code == 2 and line.startswith("SCCP CRITICAL - ") and "refused" in line, line
