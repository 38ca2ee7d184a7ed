"""The other scenarios and the command line's edges against real peers: OPTIONS over UDP and
TCP counted by Kamailio, MESSAGE through the Kamailio PBX (407 digest) delivered to a
registered phone, a user scenario file, refused logins and the failure threshold, a server
that cannot be reached (one line, exit 3), the rate changed while running by the rate file."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sip_peers import KamailioPeer, kamailio
from test_load_register import kamailio_stats

from peertools import free_port, require
from skinnysip.load.runner import run_local, summary
from skinnysip.load.scenarios import LoadConfig, User
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def load_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skinnysip", "load", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_options_counted_by_kamailio(pbx: KamailioPeer, transport: str) -> None:
    before = kamailio_stats(pbx)
    proc = load_cli("options", "127.0.0.1", "-p", str(pbx.port(transport)), "-t", transport, "-r", "200", "-m", "300",
                    "--ca-file", pbx.ca_file, "--json")
    after = kamailio_stats(pbx)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert (result["successful"], result["failed"], result["transport"]) == (300, 0, transport)
    received = after["core:rcv_requests_options"] - before["core:rcv_requests_options"]
    assert received == 300 + result["retransmissions"]
    if transport != "udp":
        assert result["retransmissions"] == 0  # no retransmissions on a reliable transport (§17.1.1.2)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_connection_per_attempt_as_sipp_t_tn(pbx: KamailioPeer, transport: str) -> None:
    """--connection-per-attempt (SIPp -t tn/ln): Kamailio accepts a connection per
    registration (its tcp:passive_open; the start-up check's connection sends nothing and
    Kamailio may not count it) and none is left open; without it, the run shares one."""
    args = ["register", "127.0.0.1", "-p", str(pbx.port(transport)), "-t", transport, "--domain", pbx.realm,
            "-u", "alice", "--password", pbx.users["alice"], "-r", "50", "-m", "30", "--ca-file", pbx.ca_file,
            "--json"]
    before = kamailio_stats(pbx)
    proc = load_cli(*args, "--connection-per-attempt")
    after = kamailio_stats(pbx)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"], result["retransmissions"]) == (30, 0, 0)
    assert 30 <= after["tcp:passive_open"] - before["tcp:passive_open"] <= 31
    assert after["usrloc:registered_users"] == before["usrloc:registered_users"]  # each binding removed on its own
    proc = load_cli(*args)
    shared = kamailio_stats(pbx)
    assert proc.returncode == 0 and json.loads(proc.stdout)["successful"] == 30, proc.stderr
    assert shared["tcp:passive_open"] - after["tcp:passive_open"] == 1


@pytest.mark.parametrize("local_ports", [None, (41000, 41003)])
def test_a_udp_socket_per_attempt_as_sipp_t_un(pbx: KamailioPeer, tmp_path: Path,
                                               local_ports: tuple[int, int] | None) -> None:
    """--connection-per-attempt over UDP (SIPp -t un): each registration's messages (its
    REGISTERs and Kamailio's answers, seen in --trace-msg) go from and to one local port of
    its own, and no two registrations running at the same time share one; with --local-ports the
    ports are the range's (4 ports for 12 attempts, at most 2 at a time: each is used again once
    closed)."""
    path = tmp_path / "messages.log"
    ports = [] if local_ports is None else ["--local-ports", f"{local_ports[0]}-{local_ports[1]}"]
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "--password", pbx.users["alice"], "-r", "20", "-m", "12", "-l", "2", "--connection-per-attempt",
                    "--trace-msg", str(path), *ports, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"], result["retransmissions"]) == (12, 0, 0)
    text = path.read_text(encoding="utf-8")
    heads = re.findall(r"^----- (\S+ \S+) (?:sent|received) UDP 127\.0\.0\.1:(\d+) (?:->|<-) 127\.0\.0\.1:\d+ "
                       r"\(\d+ bytes\)\n(?:.*\n)*?Call-ID: (\S+)", text, re.M)
    assert len(heads) == 12 * 6
    port_of: dict[str, set[str]] = {}
    span_of: dict[str, list[str]] = {}
    for stamp, port, call_id in heads:
        port_of.setdefault(call_id, set()).add(port)
        span_of.setdefault(call_id, []).append(stamp)
    assert len(port_of) == 12 and all(len(p) == 1 for p in port_of.values()), port_of
    used = [next(iter(p)) for p in port_of.values()]
    # a port is one attempt's alone while that attempt runs: two attempts on the same port never
    # overlap (the kernel may hand out a closed socket's ephemeral port again, as it does the
    # range's ports, so "a new port each time" is not a property the kernel promises)
    spans = {call_id: (min(stamps), max(stamps)) for call_id, stamps in span_of.items()}
    for a in port_of:
        for b in port_of:
            if a < b and port_of[a] == port_of[b]:
                assert spans[a][1] < spans[b][0] or spans[b][1] < spans[a][0], (a, b, spans[a], spans[b])
    if local_ports is None:
        assert len(set(used)) >= 2, used  # ephemeral ports, at least the two in flight at once
    else:
        assert {int(p) for p in used} <= set(range(local_ports[0], local_ports[1] + 1))
        assert len(set(used)) >= 2


@pytest.mark.parametrize("processes", [1, 2])
def test_added_header_fields_go_with_every_request_of_an_attempt(pbx: KamailioPeer, tmp_path: Path,
                                                                processes: int) -> None:
    """--header (SIPp's own scenario lines, sipsak -j): each REGISTER of an attempt — the
    first, the digest retry and the unregister — carries the fields in order, and a
    User-Agent given replaces ours (a security tester's ``friendly-scanner``)."""
    path = tmp_path / "messages.log"
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "--password", pbx.users["alice"], "-r", "20", "-m", "4", "--trace-msg", str(path),
                    "--header", "X-Load-Run: night 7", "--header", "User-Agent: friendly-scanner",
                    "--header", "P-Asserted-Identity: <sip:alice@skinnysip.test>", "--processes", str(processes),
                    "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["successful"] == 4
    files = [path] if processes == 1 else [tmp_path / f"messages.log.{i}" for i in range(processes)]
    text = "".join(f.read_bytes().decode("utf-8") for f in files)  # as written: CRLF line ends
    registers = re.findall(r"bytes\)\n(REGISTER sip:.*?)\r\n\r\n", text, re.S)
    assert len(registers) == 4 * 3
    for request in registers:
        names = [line.split(":", 1)[0] for line in request.split("\r\n")[1:]]
        assert names.count("User-Agent") == 1 and "User-Agent: friendly-scanner" in request, request
        added = [n for n in names if n in ("X-Load-Run", "User-Agent", "P-Asserted-Identity")]
        assert added == ["X-Load-Run", "User-Agent", "P-Asserted-Identity"], request
        assert "X-Load-Run: night 7\r\n" in request


def test_header_fields_the_scenario_writes_are_refused_before_anything_is_sent() -> None:
    for header, says in (("Call-ID: x", "Call-ID is written by skinnysip itself"),
                         ("v: SIP/2.0/UDP x", "Via is written by skinnysip itself"),
                         ("Expires: 5", "use --expires"), ("X-A", "is not 'Name: value'"),
                         ("X A: b", "is not a header name")):
        proc = load_cli("register", "127.0.0.1", "-p", "9", "-m", "1", "--header", header)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("processes", [1, 2])
def test_trace_msg_writes_every_message_as_sipp(pbx: KamailioPeer, tmp_path: Path, processes: int) -> None:
    """--trace-msg (SIPp -trace_msg): each registration's six messages (REGISTER, 401,
    REGISTER with credentials, 200, REGISTER Expires 0, 200) as sent and received, with
    addresses and sizes; two workers write FILE.0 and FILE.1, together the same."""
    path = tmp_path / "messages.log"
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "--password", pbx.users["alice"], "-r", "20", "-m", "6", "--trace-msg", str(path),
                    "--processes", str(processes), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    files = [path] if processes == 1 else [tmp_path / "messages.log.0", tmp_path / "messages.log.1"]
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    heads = re.findall(r"^----- \S+ \S+ (sent|received) UDP 127\.0\.0\.1:\d+ (->|<-) 127\.0\.0\.1:(\d+) \((\d+) bytes\)$",
                       text, re.M)
    assert len(heads) == 6 * 6 == result["requestsSent"] * 2 + 2 * result["retransmissions"]
    assert all((d == "sent") == (a == "->") and int(port) == pbx.udp_port for d, a, port, _ in heads)
    starts = re.findall(r"bytes\)\n(REGISTER sip:|SIP/2\.0 (?:401|200) )", text)
    assert starts.count("REGISTER sip:") == 18 and starts.count("SIP/2.0 401 ") == 6
    assert len(set(re.findall(r"^Call-ID: (\S+)", text, re.M))) == 6


@pytest.mark.parametrize("processes", [1, 2])
def test_output_files_that_cannot_be_written_stop_their_writing_not_the_run(pbx: KamailioPeer, tmp_path: Path,
                                                                           processes: int) -> None:
    """A file that stops taking writes during the run (here the file size limit, as a full
    disk would): the run goes on to its end, its summary is whole, one warning names each
    file and why, and the exit status is 2 (an output asked for is incomplete). The CSV keeps
    what was written before; nothing is a traceback."""
    import resource

    from skinnysip.load.report import CSV_COLUMNS

    header = len(",".join(CSV_COLUMNS)) + 2
    limit = header + 200  # the header fits, the first row does not; a trace-msg block neither

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # CPython ignores SIGXFSZ: EFBIG

    csv_path, msg_path = tmp_path / "stats.csv", tmp_path / "messages.log"
    proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", "register", "127.0.0.1", "-p",
                           str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice", "--password", pbx.users["alice"],
                           "-r", "20", "-m", "20", "--interval", "0.25", "--csv", str(csv_path), "--trace-msg",
                           str(msg_path), "--processes", str(processes), "--json"],
                          capture_output=True, text=True, timeout=60, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["successful"] == result["attempted"] == 20 and result["failed"] == 0
    names = [str(msg_path)] if processes == 1 else [f"{msg_path}.{i}" for i in range(processes)]
    expected = [f"--trace-msg: writing {name!r} stopped: File too large" for name in names]
    expected.append(f"--csv: writing {str(csv_path)!r} stopped: File too large")
    assert sorted(result["warnings"]) == sorted(expected)
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert sorted(warned) == sorted(f"warning: {w}" for w in expected)
    assert csv_path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_csv_columns_under_sipp_names_are_sipp_trace_stat_columns_in_its_order(tmp_path: Path) -> None:
    """SIPp's own ``-trace_stat`` file (``sipp -sn uac``, one call to a UDP port where nothing
    answers, failed after 500 ms) has every column skinnysip writes under a SIPp name, in the
    same order; the columns after them (from ``RequestsSent``) are skinnysip's own."""
    from skinnysip.load.report import CSV_COLUMNS

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        subprocess.run([require("sipp"), f"127.0.0.1:{silent.getsockname()[1]}", "-sn", "uac", "-m", "1", "-i",
                        "127.0.0.1", "-nd", "-nostdin", "-recv_timeout", "500", "-trace_stat", "-stf",
                        str(tmp_path / "sipp_.csv"), "-fd", "1"], capture_output=True, timeout=30, cwd=tmp_path)
    finally:
        silent.close()
    sipp_columns = (tmp_path / "sipp_.csv").read_text().splitlines()[0].rstrip(";").split(";")
    ours = CSV_COLUMNS[:CSV_COLUMNS.index("RequestsSent(P)")]
    assert [c for c in ours if c not in sipp_columns] == []
    assert [c for c in sipp_columns if c in ours] == ours  # SIPp's order
    assert not set(CSV_COLUMNS[len(ours):]) & set(sipp_columns)
    for name in ("IncomingCall(C)", "LastResetTime", "CallLengthRepartition_>=10000", "Warnings(P)"):
        assert name in ours


def bob_account(pbx: KamailioPeer) -> SIPAccount:
    return SIPAccount(aor=f"sip:bob@{pbx.realm}", password=pbx.users["bob"], registrar=f"127.0.0.1:{pbx.udp_port}")


async def test_each_users_line_names_its_own_target_as_sipp_field_keywords(pbx: KamailioPeer,
                                                                            tmp_path: Path) -> None:
    """SIPp's ``[fieldN]``: ``--to '[field3]'`` and ``--header 'X-Pair: [field0]>[field3]'``
    take field 3 of the line of each attempt's user: alice messages bob, bob messages carol
    (both registered phones), through Kamailio with its 407 digest."""
    users = tmp_path / "pairs.csv"
    users.write_text(f"SEQUENTIAL\nalice;{pbx.users['alice']};alice;bob\nbob;{pbx.users['bob']};bob;carol\n")
    trace = tmp_path / "msgs.txt"
    carol_account = SIPAccount(aor=f"sip:carol@{pbx.realm}", password=pbx.users["carol"],
                               registrar=f"127.0.0.1:{pbx.udp_port}")
    async with SIPPhone(bob_account(pbx)) as bob, SIPPhone(carol_account) as carol:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "skinnysip", "load", "message", "127.0.0.1", "--port", str(pbx.udp_port),
            "--domain", pbx.realm, "--users", str(users), "--to", "[field3]", "--header", "X-Pair: [field0]>[field3]",
            "-r", "20", "-m", "6", "--text", "paired", "--trace-msg", str(trace), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        await asyncio.sleep(0.3)
        result = json.loads(out)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert (result["attempted"], result["successful"], result["failed"]) == (6, 6, 0)
        assert [m["from"].split(";")[0] for m in bob.messages] == [f"sip:alice@{pbx.realm}"] * 3, bob.messages
        assert [m["from"].split(";")[0] for m in carol.messages] == [f"sip:bob@{pbx.realm}"] * 3, carol.messages
    sent = [b for b in trace.read_bytes().decode().split("\n-----") if " sent " in b.split("\n", 1)[0]]
    pairs = sorted(set(re.findall(r"^X-Pair: (\S+)\r$", "".join(sent), re.M)))
    assert pairs == ["alice>bob", "bob>carol"]
    # a line without the field named is refused before anything is sent
    users.write_text("alice;pw;alice\n")
    refused = subprocess.run([sys.executable, "-m", "skinnysip", "load", "message", "127.0.0.1", "--port",
                              str(pbx.udp_port), "--users", str(users), "--to", "[field3]", "-m", "1"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "[field3] but the line of user 'alice' has 3 field(s)" in refused.stderr


async def test_message_through_the_pbx_reaches_a_registered_phone(pbx: KamailioPeer) -> None:
    async with SIPPhone(bob_account(pbx)) as bob:
        config = LoadConfig("message", "127.0.0.1", port=pbx.udp_port, domain=pbx.realm,
                            users=[User("alice", pbx.users["alice"])], to="bob", rate=50, count=40, message="load test")
        result = summary(await run_local(config, []), config)
        await asyncio.sleep(0.2)
        assert (result["successful"], result["failed"]) == (40, 0), result
        assert result["requestsSent"] == 80  # each MESSAGE challenged 407 once, then accepted
        texts = [m["text"] for m in bob.messages]
        assert texts.count("load test") == 40 and all(m["from"].startswith("sip:alice@") for m in bob.messages)


async def test_user_scenario_file(pbx: KamailioPeer, tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(
        "async def scenario(phone, index):\n"
        "    if index % 5 == 4:\n"
        "        return False  # counted as a failure\n"
        "    await phone.message('bob', f'hello {index}')\n")
    async with SIPPhone(bob_account(pbx)) as bob:
        config = LoadConfig("user", "127.0.0.1", port=pbx.udp_port, domain=pbx.realm, user_script=str(script),
                            users=[User("alice", pbx.users["alice"])], rate=40, count=20)
        result = summary(await run_local(config, []), config)
        await asyncio.sleep(0.2)
    assert (result["attempted"], result["successful"], result["failed"]) == (20, 16, 4)
    assert result["failedByStatus"] == {"false": 4}
    assert sorted(m["text"] for m in bob.messages) == sorted(f"hello {i}" for i in range(20) if i % 5 != 4)


def _user_run(pbx: KamailioPeer, tmp_path: Path, script_text: str, count: int,
              processes: int) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[dict[str, str]]]:
    """``load user`` with ``script_text`` as its scenario, ``count`` attempts at 10/s over
    ``processes`` workers, a CSV row every 0.5 s: (process, JSON summary, CSV rows); every
    attempt must succeed."""
    script = tmp_path / "scenario.py"
    script.write_text(script_text)
    csv_path = tmp_path / "stats.csv"
    proc = load_cli("user", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "--password", pbx.users["alice"], "--script", str(script), "-r", "10", "-m", str(count),
                    "--processes", str(processes), "--csv", str(csv_path), "--interval", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"]) == (count, 0)
    with csv_path.open() as file:
        return proc, result, list(csv.DictReader(file))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_stalled_event_loop_trips_sipps_watchdog_and_says_so(pbx: KamailioPeer, tmp_path: Path,
                                                               processes: int) -> None:
    """A user scenario that blocks its worker's event loop for 0.9 s once (as an overloaded
    generator would): SIPp's watchdog (every 0.4 s, a minor trip when > 0.5 s apart) counts
    it in the summary, the CSV's WatchdogMinor column and a note on stderr that the numbers are
    the generator's limit — the attempts themselves all succeed."""
    proc, result, rows = _user_run(pbx, tmp_path, "import time\n"
                                   "async def scenario(phone, index):\n"
                                   "    if index == 0:\n"
                                   "        time.sleep(0.9)  # blocks this worker's event loop\n", 4 * processes,
                                   processes)
    dog = result["watchdog"]
    assert dog["minor"] >= 1 and dog["major"] == 0, dog
    assert 400 <= dog["maxLagMs"] < 2600, dog  # 0.9 s asleep, less the 0.4 s period at most
    assert "note: this load generator's event loop ran late" in proc.stderr
    assert int(rows[-1]["WatchdogMinor(C)"]) == dog["minor"]
    assert sum(int(r["WatchdogMinor(P)"]) for r in rows) == dog["minor"]
    assert float(rows[-1]["LoopLagMaxMs(C)"]) == dog["maxLagMs"]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_generator_that_never_waits_says_so_before_it_is_late(pbx: KamailioPeer, tmp_path: Path,
                                                                 processes: int) -> None:
    """A user scenario that keeps its worker's loop on the CPU in 5 ms slices (never late
    enough for SIPp's watchdog, never waiting for input either): the summary counts the busy
    0.4 s windows, the CSV's LoopBusyWindows column adds up to them, and stderr says the
    generator was at its own limit — the attempts themselves all succeed."""
    proc, result, rows = _user_run(pbx, tmp_path, "import asyncio, time\n"
                                   "async def scenario(phone, index):\n"
                                   "    end = time.thread_time() + 0.6\n"
                                   "    while time.thread_time() < end:\n"
                                   "        stop = time.perf_counter() + 0.005\n"
                                   "        while time.perf_counter() < stop:\n"
                                   "            pass\n"
                                   "        await asyncio.sleep(0)\n", 5 * processes, processes)
    dog = result["watchdog"]
    assert dog["busyWindows"] >= 2 and dog["busyWindows"] * 4 >= dog["windows"], dog
    if not dog["minor"] and not dog["major"]:  # a late loop's note comes first and says more
        assert "note: this load generator's event loop never waited in" in proc.stderr, proc.stderr
    assert int(rows[-1]["LoopBusyWindows(C)"]) == dog["busyWindows"]
    assert sum(int(r["LoopBusyWindows(P)"]) for r in rows) == dog["busyWindows"]


def test_refused_logins_and_the_failure_threshold(pbx: KamailioPeer) -> None:
    args = ["register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
            "--password", "wrong", "-r", "50", "-m", "10", "--json"]
    proc = load_cli(*args)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1  # failures beyond --max-failures 0
    assert result["failedByStatus"] == {"403": 10} and result["failedByKind"] == {"FailedUnexpectedMessage": 10}
    assert load_cli(*args, "--max-failures", "100%").returncode == 0
    quiet = load_cli(*[a for a in args if a != "--json"], "--max-failures", "9", "-q")
    assert quiet.returncode == 1 and "10 failed (403: 10) of 10" in quiet.stdout  # why, on the last line


def test_trace_err_writes_what_each_failure_was(pbx: KamailioPeer, tmp_path: Path) -> None:
    """``--trace-err`` (SIPp's -trace_err): every refused login's request and Kamailio's 403,
    here from two worker processes through the driver; a user scenario's exception with where
    it was raised."""
    log = tmp_path / "errors.log"
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "--password", "wrong", "-r", "50", "-m", "6", "--processes", "2", "--trace-err", str(log))
    assert proc.returncode == 1, proc.stderr
    blocks = log.read_text().split("\n----- ")
    assert len(blocks) == 6, log.read_text()
    for block in blocks:
        assert "403 (FailedUnexpectedMessage)\nsent:\nREGISTER sip:" in block, block
        assert "Authorization: Digest username=\"alice\"" in block
        assert "received:\nSIP/2.0 403 " in block and "Server: " in block
    # a 401 left unanswered says why: here no password was given
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "alice",
                    "-m", "1", "--trace-err", str(log))
    assert proc.returncode == 1, proc.stderr
    assert "401 (FailedUnexpectedMessage): not answered: no credentials\nsent:\nREGISTER sip:" in log.read_text()

    script = tmp_path / "scenario.py"
    script.write_text("async def scenario(phone, index):\n"
                      "    raise LookupError(f'no route for {index}')\n")
    proc = load_cli("user", "127.0.0.1", "-p", str(pbx.udp_port), "--script", str(script), "-r", "50", "-m", "2",
                    "--trace-err", str(log))
    assert proc.returncode == 1
    text = log.read_text()
    for index in (0, 1):
        assert f"LookupError (FailedCallRejected): LookupError: no route for {index} at {script}:2 in scenario" in text


def test_unreachable_server_is_one_line() -> None:
    from peertools import free_port

    proc = load_cli("options", "127.0.0.1", "-p", str(free_port()), "-t", "tcp", "-m", "5")
    assert proc.returncode == 3  # no usable answer, as every skinnysip command says it
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("processes", [1, 2])
def test_malformed_answers_are_counted_and_named_not_only_timed_out(tmp_path: Path, processes: int) -> None:
    """A server whose every answer lacks CSeq (no real program does this on demand: a few
    lines of socket code answer each request, copying its Via/From/To/Call-ID): the answers
    are dropped (RFC 3261 §18.1.2), so each attempt times out — and the summary, the failure
    notes and one line on stderr say how many malformed messages came and what the last was,
    summed over the workers. The exit status is the failures' (1), not an output's."""
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def answer_without_cseq() -> None:
        while not done.is_set():
            try:
                data, source = server.recvfrom(65535)
            except TimeoutError:
                continue
            head = data.decode("latin-1").split("\r\n\r\n", 1)[0].split("\r\n")
            kept = [line for line in head[1:] if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id")]
            server.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(kept) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                          source)

    thread = threading.Thread(target=answer_without_cseq, daemon=True)
    thread.start()
    log = tmp_path / "errors.txt"
    try:
        proc = load_cli("options", "127.0.0.1", "-p", str(server.getsockname()[1]), "-r", "20", "-m", "4",
                        "--timeout", "1000", "--processes", str(processes), "--trace-err", str(log), "--json")
    finally:
        done.set()
        thread.join(5)
        server.close()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"], result["failedByStatus"]) == (0, 4, {"timeout": 4})
    sent = 4 + result["retransmissions"]
    assert result["malformedReceived"] == sent  # one answer to each request and retransmission
    assert result["lastMalformed"] == "unparseable (200 OK: no CSeq header field)"
    assert f"note: {sent} malformed message(s) received and dropped (RFC 3261 §18.1.2); the last: unparseable" \
        in proc.stderr
    # each timeout's note says what came instead (the endpoint's ignored_note, as the probes say it)
    assert log.read_text().count("malformed messages ignored, last unparseable (200 OK: no CSeq header field)") == 4
    assert result["warnings"] == []


def _sipp_200(via: str, dialog: str) -> str:
    """A SIPp ``<send>`` of a 200 with this Via line and these From/To/Call-ID/CSeq lines."""
    return f"""  <send><![CDATA[
SIP/2.0 200 OK
{via}
{dialog}
Content-Length: 0

]]></send>
"""


_ANSWERED = "[last_From:]\n[last_To:];tag=[pid]SIPp[call_number]\n[last_Call-ID:]\n[last_CSeq:]"
LATE_ANSWERS_XML = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="answers, then late and stray responses">\n'
    '  <recv request="OPTIONS"/>\n'
    + _sipp_200("[last_Via:]", _ANSWERED)
    + '  <pause milliseconds="150"/>\n'
    + _sipp_200("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-late-[call_number]", _ANSWERED)
    + _sipp_200("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-odd-[call_number]",
                "From: <sip:nobody@127.0.0.1>;tag=odd[call_number]\nTo: <sip:nobody@127.0.0.1>;tag=odd[call_number]\n"
                "Call-ID: stranger-[call_number]@[local_ip]\nCSeq: 1 OPTIONS")
    # a keep-alive ping to us, as a registrar sends its contacts (SIPp files our 200 under the
    # Call-ID it sent: the ping reuses the attempt's, an out-of-dialog OPTIONS all the same)
    + """  <send><![CDATA[
OPTIONS sip:load@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:ping@[local_ip]>;tag=ping[call_number]
To: <sip:load@127.0.0.1>
[last_Call-ID:]
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
"""
    + "</scenario>\n"
)


def test_late_and_stray_responses_count_as_sipps_dead_call_and_out_of_call_messages(tmp_path: Path) -> None:
    """SIPp as the server answers each OPTIONS, then 150 ms later sends two more 200s that
    match no transaction of ours (other branches): one with the ended attempt's Call-ID
    (SIPp's DeadCallMsgs: a message of a call that ended less than 33 s ago) and one with a
    Call-ID that was never ours (OutOfCallMsgs), and then an OPTIONS of its own, which our
    endpoint answers 200 (AutoAnswered, as SIPp counts it under -aa; not out of call). Each
    received one is counted once, in the summary and the CSV, exactly as many as the
    --trace-msg file shows arrived (the last attempts' may come after the run ended), and none
    fails an attempt."""
    port = free_port(socket.SOCK_DGRAM)
    (tmp_path / "late.xml").write_text(LATE_ANSWERS_XML)
    sipp = subprocess.Popen([require("sipp"), "-i", "127.0.0.1", "-p", str(port), "-sf", "late.xml", "-m", "15",
                             "-nostdin", "-timeout", "30s"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        messages, stats = tmp_path / "messages.log", tmp_path / "stats.csv"
        proc = load_cli("options", "127.0.0.1", "-p", str(port), "-r", "5", "-m", "15", "--trace-msg", str(messages),
                        "--csv", str(stats), "--interval", "0.5", "--json")
    finally:
        sipp.kill()
        sipp.wait(5)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"]) == (15, 0)
    text = messages.read_text(encoding="utf-8")
    late = text.count(";branch=z9hG4bK-late-")
    stray = len(re.findall(r"^Call-ID: stranger-", text, re.M))
    assert late >= 12 and stray >= 12  # all but the last attempts' at least
    pinged = len(re.findall(r"^OPTIONS sip:load@", text, re.M))
    answered = len(re.findall(r"^SIP/2\.0 200 OK\r?\n(?:.+\n)*?From: <sip:ping@", text, re.M))  # ours, sent
    assert pinged >= 12 and answered == pinged
    assert (result["deadCallMsgs"], result["outOfCallMsgs"], result["autoAnswered"]) == (late, stray, pinged)
    with stats.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert (int(rows[-1]["DeadCallMsgs(C)"]), int(rows[-1]["OutOfCallMsgs(C)"]), int(rows[-1]["AutoAnswered(C)"])) == (
        late, stray, pinged)
    assert sum(int(r["DeadCallMsgs(P)"]) for r in rows) == late


@pytest.mark.parametrize(("scenario", "method"), [("options", "OPTIONS"), ("call", "INVITE")])
def test_a_server_closing_the_connection_before_its_answer_is_sipps_failed_tcp_closed(
        tmp_path: Path, scenario: str, method: str) -> None:
    """SIPp over TCP takes the request and quits at once (its ``stop_now``), closing the
    connection with no answer: the attempt fails as SIPp counts it, FailedTcpClosed (not a
    send failure), in the summary and the CSV, its note naming the connection closed."""
    port = free_port(socket.SOCK_STREAM)
    (tmp_path / "quit.xml").write_text(
        f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="take it and quit">\n'
        f'  <recv request="{method}"/>\n  <nop><action><exec int_cmd="stop_now"/></action></nop>\n</scenario>\n')
    sipp = subprocess.Popen([require("sipp"), "-i", "127.0.0.1", "-p", str(port), "-t", "t1", "-sf", "quit.xml",
                             "-m", "1", "-nostdin", "-timeout", "30s"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        errors, stats = tmp_path / "errors.txt", tmp_path / "stats.csv"
        extra = ["--to", "service", "--hold", "1"] if scenario == "call" else []
        proc = load_cli(scenario, "127.0.0.1", "-p", str(port), "-t", "tcp", "-r", "1", "-m", "1", *extra,
                        "--trace-err", str(errors), "--csv", str(stats), "--json")
        assert sipp.wait(10) is not None
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(5)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"], result["failedByKind"]) == (0, 1, {"FailedTcpClosed": 1})
    assert f"connection closed by 127.0.0.1:{port}/tcp" in errors.read_text()
    with stats.open(newline="") as f:
        assert int(list(csv.DictReader(f))[-1]["FailedTcpClosed(C)"]) == 1


@pytest.mark.parametrize(("timeout", "kind"), [(0.8, "FailedTimeoutOnRecv"), (1.6, "FailedMaxUDPRetrans")])
async def test_a_silent_udp_server_fails_on_timer_f_or_on_a_shorter_deadline(timeout: float, kind: str) -> None:
    """No answer over UDP: with the deadline at Timer F (64·T1; T1 25 ms here, so 1.6 s) the
    attempts fail as SIPp's FailedMaxUDPRetrans — the retransmissions ran out, whichever of
    the two fires first — and with a shorter deadline as FailedTimeoutOnRecv (the user's
    limit, SIPp's -recv_timeout)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        config = LoadConfig("options", "127.0.0.1", port=silent.getsockname()[1], rate=20, count=2, timeout=timeout,
                            t1=0.025)
        result = summary(await run_local(config, []), config)
    finally:
        silent.close()
    assert (result["failed"], result["failedByStatus"], result["failedByKind"]) == (2, {"timeout": 2}, {kind: 2})
    assert result["retransmissions"] >= 2 * 4  # Timer E: 25, 50, 100, 200 ms… before the first deadline


def test_rate_file_changes_the_rate_while_running(pbx: KamailioPeer, tmp_path: Path) -> None:
    """The number written into ``--rate-file`` becomes the rate at the next interval; what is
    not a rate is named once on stderr (not every interval) and the rate stays."""
    rate_file = tmp_path / "rate"
    rate_file.write_text("fast\n")
    csv_path = tmp_path / "stats.csv"
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "-p",
                             str(pbx.udp_port), "-r", "5", "--duration", "6", "--rate-file", str(rate_file),
                             "--csv", str(csv_path), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(2.5)
        rate_file.write_text("100\n")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    result = json.loads(out)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --rate-file")]
    assert warnings == [f"warning: --rate-file: 'fast' in {str(rate_file)!r} is not a rate (attempts per second "
                        "above 0); the rate stays"], err
    assert result["targetRate"] == 100
    # 5/s for ~2.5 s, then 100/s for the rest: far more than 6 s at 5/s would give
    assert result["attempted"] > 5 * 6 * 3
    import pandas as pd

    frame = pd.read_csv(csv_path)
    assert frame["TargetRate"].iloc[0] == 5 and frame["TargetRate"].iloc[-1] == 100


def test_ramp_up_and_local_port_range(pbx: KamailioPeer, tmp_path: Path) -> None:
    import pandas as pd

    from peertools import free_port

    first = free_port(socket.SOCK_DGRAM)
    csv_path = tmp_path / "ramp.csv"
    proc = load_cli("register", "127.0.0.1", "-p", str(pbx.udp_port), "--domain", pbx.realm, "-u", "carol",
                    "--password", pbx.users["carol"], "--no-unregister", "--expires", "60", "-r", "100",
                    "--duration", "4", "--ramp-up", "4", "--local-ports", f"{first}-{first + 20}", "--csv",
                    str(csv_path), "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    # the rate grew linearly from 5 % to 100/s over the 4 s: about half of 400 attempts
    assert 120 <= result["attempted"] <= 300, result["attempted"]
    rates = pd.read_csv(csv_path)["CallRate(P)"].tolist()
    assert rates[0] < rates[-2], rates  # rising (the last row is the drain's partial period)
    # the binding Kamailio keeps names our socket, bound in the range we asked for
    ports = [int(c.rsplit(":", 1)[1].split(";")[0].rstrip(">")) for c in pbx.contacts("carol")]
    assert ports and all(first <= p <= first + 20 for p in ports), pbx.contacts("carol")


@contextlib.contextmanager
def load_options(pbx: KamailioPeer, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``skinnysip load options … --json`` in a process group of its own, as a terminal runs a
    command; the group is killed if it is still there at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "-p", str(pbx.udp_port),
                             "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.mark.parametrize("workers", [[], ["--processes", "2"]], ids=["one process", "two worker processes"])
def test_ctrl_c_stops_new_attempts_and_prints_the_summary(pbx: KamailioPeer, workers: list[str]) -> None:
    """Ctrl-C as a terminal sends it: to the whole process group (the worker processes
    ignore it; the driver stops them and still counts their last attempts)."""
    with load_options(pbx, "-r", "50", "--duration", "60", *workers) as proc:
        time.sleep(5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    result = json.loads(out)
    assert proc.returncode == 0, err
    assert 20 <= result["attempted"] < 60 * 50 / 4  # stopped early, every attempt accounted for
    assert result["successful"] == result["attempted"] and "Traceback" not in err
    if workers:
        assert sum(w["attempted"] for w in result["workerTotals"]) == result["attempted"]


@pytest.mark.parametrize("workers", [[], ["--processes", "2"]], ids=["one", "two-workers"])
def test_sipp_keys_on_a_terminal_change_the_rate_and_stop(pbx: KamailioPeer, tmp_path: Path,
                                                          workers: list[str]) -> None:
    """On a terminal (a pseudo-terminal here) SIPp's keys work as in SIPp: ``*`` adds 10/s,
    ``+`` 1/s, ``-`` takes 1/s, ``p`` pauses and resumes, and ``q`` starts no new attempt —
    the CSV's TargetRate follows the keys, intervals while paused start nothing, and the run
    ends long before its 60 s; the terminal is restored afterwards."""
    import pty
    import select
    import termios

    csv_path = tmp_path / "rate.csv"
    leader, follower = pty.openpty()
    before = termios.tcgetattr(follower)
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "-p", str(pbx.udp_port),
                             "-r", "5", "--duration", "60", "--interval", "0.5", "--csv", str(csv_path), *workers],
                            stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    screen = b""

    def read_for(seconds: float) -> None:
        nonlocal screen
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    screen += os.read(leader, 65536)

    try:
        read_for(3.0)  # up and running, the hint on the screen
        for key in (b"*", b"+", b"+", b"-"):
            os.write(leader, key)
            read_for(0.3)
        read_for(1.5)
        os.write(leader, b"p")
        read_for(2.0)
        os.write(leader, b"p")
        read_for(1.5)
        os.write(leader, b"q")
        for _ in range(100):
            read_for(0.2)
            if proc.poll() is not None:
                break
        read_for(0.5)
        after = termios.tcgetattr(follower)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
        os.close(follower)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-2000:]
    assert "keys" in text and "Traceback" not in text
    rows = list(csv.DictReader(csv_path.open()))
    rates = [float(r["TargetRate"]) for r in rows]
    assert rates[0] == 5 and rates[-1] == 16, rates  # 5 + 10 + 1 + 1 - 1
    assert sorted(set(rates)) == sorted(set(rates) & {5.0, 15.0, 16.0, 17.0}), rates
    started = "".join("0" if int(r["OutgoingCall(P)"]) == 0 else "1" for r in rows)
    assert re.search(r"1+0{3,}1+", started), started  # running, paused (2 s: 4 intervals), running again
    assert after[3] == before[3]  # the terminal's local modes (echo, canonical) are back


def test_a_worker_process_that_dies_is_named_and_the_run_ends(pbx: KamailioPeer) -> None:
    """One of two worker processes is killed mid-run: the driver does not wait for it, the
    other finishes its share, a warning names the lost worker and the exit status is 1."""
    with load_options(pbx, "-r", "40", "--duration", "6", "--processes", "2") as proc:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:  # the spawned workers (and spawn's tracker)
            time.sleep(0.5)
            listed = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "multiprocessing.spawn"],
                                    capture_output=True, text=True).stdout.split()
            workers = [int(pid) for pid in listed
                       if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2, workers
        time.sleep(2)
        os.kill(max(workers), signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    result = json.loads(out)
    assert proc.returncode == 1, err
    assert "warning: worker" in err and "ended" in err and "Traceback" not in err, err
    lost = [w for w in result["workerTotals"] if w.get("error")]
    kept = [w for w in result["workerTotals"] if not w.get("error")]
    assert len(lost) == 1 and len(kept) == 1
    assert kept[0]["attempted"] == 6 * 20 and kept[0]["successful"] == kept[0]["attempted"]
    assert kept[0]["attempted"] < result["attempted"] < 6 * 40  # the lost worker's share is partly there


async def test_a_user_written_in_host_is_the_target() -> None:
    """``skinnysip load call|options sip:bob@HOST:PORT``: bob is the target (Request-URI, To),
    as ``--to bob``; a call needed ``--to`` before ("the call scenario needs --to"), OPTIONS
    went to ``sip:HOST:PORT``. The judge is the SIPp-like responder's own record."""
    from skinnysip.probes.listen import ListenConfig, Responder

    async with Responder(ListenConfig("127.0.0.1", 0, "udp")) as responder:
        assert responder.local is not None
        host = f"sip:bob@127.0.0.1:{responder.local[1]}"
        for scenario, extra in (("options", []), ("call", ["--hold", "0.2", "--source", "silence"])):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "skinnysip", "load", scenario, host, "-m", "1", "--json", *extra,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, (scenario, out.decode()[-800:], err.decode()[-800:])
            assert json.loads(out)["successful"] == 1
        firsts = [r.summary for r in responder.endpoint.trace if r.direction == "received"]
    assert f"OPTIONS {host}" in firsts and f"INVITE {host}" in firsts, firsts
