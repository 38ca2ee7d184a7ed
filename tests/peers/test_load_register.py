"""``skinnysip load register`` against Kamailio: our counts against Kamailio's own statistics
(``kamcmd stats.get_statistics``), the CSV read by pandas, and the same load over two worker
processes (this machine's, and Ray's) giving the same totals."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sip_peers import KamailioPeer, kamailio

from peertools import free_port
from skinnysip.load.report import CSV_COLUMNS
from skinnysip.load.runner import Monitor, run_local
from skinnysip.load.scenarios import LoadConfig
from skinnysip.load.scenarios import User as LoadUser
from skinnysip.load.stats import LatencyHistogram
from skinnysip.net import event_loop as event_loops

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def registrar() -> Iterator[KamailioPeer]:
    with kamailio("MD5") as peer:
        yield peer


def kamailio_stats(peer: KamailioPeer) -> dict[str, int]:
    out = subprocess.run(["kamcmd", "-s", peer.ctl_socket, "stats.get_statistics", "all"],
                         capture_output=True, text=True, timeout=10).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\S+) = (-?\d+)$", out, re.M)}


def users_file(peer: KamailioPeer, tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("SEQUENTIAL\n" + "".join(f"{user};{password}\n" for user, password in peer.users.items()))
    return path


def run_load(args: list[str], timeout: float = 150.0, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", *args, "--json"], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def ray_environment(home: Path) -> dict[str, str]:
    """The environment for a command that starts a local Ray: Ray's dashboard process asks the
    cloud metadata services (an HTTP connect to 169.254.169.254, DNS for
    ``metadata.google.internal``) unless ``~/ray_bootstrap_config.yaml`` names the cluster's
    provider, whatever ``RAY_USAGE_STATS_ENABLED`` says (Ray 2.x ``usage_lib``). A home with
    that file for a ``local`` provider keeps the test's traffic on this machine."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    return {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def assert_server_agrees(delta: dict[str, int], result: dict) -> None:
    """Kamailio's counts (``delta``: after - before) against our summary. Each attempt is
    REGISTER → 401, REGISTER with credentials → 200, REGISTER Expires 0 → 200. Kamailio's
    registrar is stateless here, so a retransmitted REGISTER (a loaded machine: our Timer E
    fired before the answer came) is answered again: a 401 or an accepted registration more."""
    retransmissions = result["retransmissions"]
    # what Kamailio received is what we sent, retransmissions included
    assert delta["core:rcv_requests_register"] == result["requestsSent"] + retransmissions
    # and it answered every one: 401 or accepted
    assert delta["sl:401_replies"] + delta["registrar:accepted_regs"] == delta["core:rcv_requests_register"]
    assert delta["registrar:rejected_regs"] == 0
    accepted_extra = delta["registrar:accepted_regs"] - 2 * result["successful"]
    challenged_extra = delta["sl:401_replies"] - result["successful"]
    assert 0 <= accepted_extra and 0 <= challenged_extra and accepted_extra + challenged_extra == retransmissions
    if retransmissions == 0:
        assert delta["registrar:accepted_regs"] == 2 * result["successful"]


def register_args(peer: KamailioPeer, users: Path, *extra: str, count: int = 2000) -> list[str]:
    return ["register", "127.0.0.1", "--port", str(peer.udp_port), "--domain", peer.realm, "--users", str(users),
            "-r", "200", "-m", str(count), *extra]


def test_register_2000_at_200_per_second_agrees_with_kamailio(registrar: KamailioPeer, tmp_path: Path) -> None:
    import pandas as pd

    before = kamailio_stats(registrar)
    csv_path = tmp_path / "register.csv"
    code, result, stderr = run_load(register_args(registrar, users_file(registrar, tmp_path), "--csv", str(csv_path)))
    after = kamailio_stats(registrar)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert code == 0, (result, stderr[-2000:])
    assert (result["attempted"], result["successful"], result["failed"]) == (2000, 2000, 0)
    assert result["failedByStatus"] == {}
    assert_server_agrees(delta, result)
    assert result["requestsSent"] == 3 * 2000
    assert after["usrloc:registered_users"] == 0  # every binding removed again
    rt = result["responseTimeMs"]
    assert 0 < rt["p50"] <= rt["p90"] <= rt["p95"] <= rt["p99"] <= rt["max"]

    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == CSV_COLUMNS
    assert len(frame) >= 5  # one row a second for ~10 s
    last = frame.iloc[-1]
    assert last["SuccessfulCall(C)"] == 2000 and last["FailedCall(C)"] == 0
    assert frame["SuccessfulCall(P)"].sum() == 2000
    assert frame["OutgoingCall(P)"].sum() == 2000
    assert last["Retransmissions(C)"] == result["retransmissions"]
    assert frame["ResponseTime1(C)"].iloc[-1] == pytest.approx(rt["mean"], rel=1e-3)


def assert_fanned_out_equals_single(fanned: dict, single: dict) -> None:
    """Two workers did half each, and together what one process did."""
    assert fanned["workers"] == 2 and len(fanned["workerTotals"]) == 2
    for key in ("attempted", "successful", "failed"):
        assert fanned[key] == single[key], key
        assert sum(w[key] for w in fanned["workerTotals"]) == fanned[key], key
    assert fanned["requestsSent"] == single["requestsSent"] == 3000
    assert all(w["attempted"] == 500 and "error" not in w for w in fanned["workerTotals"])
    assert sum(w["retransmissions"] for w in fanned["workerTotals"]) == fanned["retransmissions"]


@pytest.mark.timeout(300)  # Ray's start-up is 10-20 s of it
def test_distributed_register_totals_equal_single_run_and_server(registrar: KamailioPeer, tmp_path: Path) -> None:
    """The same 1000 registrations in one process, in two worker processes of this machine
    (the default engine) and in two Ray workers: the same totals, the workers' totals add up,
    and Kamailio saw each run's counts."""
    users = users_file(registrar, tmp_path)
    before = kamailio_stats(registrar)
    code, single, _ = run_load(register_args(registrar, users, count=1000))
    after_single = kamailio_stats(registrar)
    code2, processes, stderr2 = run_load(register_args(registrar, users, "--processes", "2", count=1000))
    after_processes = kamailio_stats(registrar)
    assert code == 0 and code2 == 0, stderr2[-2000:]
    assert_fanned_out_equals_single(processes, single)
    assert_server_agrees({k: after_single.get(k, 0) - before.get(k, 0) for k in after_single}, single)
    assert_server_agrees({k: after_processes.get(k, 0) - after_single.get(k, 0) for k in after_processes}, processes)
    pytest.importorskip("ray", reason="the distributed extra (ray) is part of [test]")
    # two Ray workers: a local Ray with 2 CPUs on 127.0.0.1 started by the command
    code3, ray, stderr3 = run_load(register_args(registrar, users, "--processes", "2", "--engine", "ray",
                                                 count=1000), timeout=240,
                                  env=ray_environment(tmp_path / "home"))
    after_ray = kamailio_stats(registrar)
    assert code3 == 0, stderr3[-2000:]
    assert_fanned_out_equals_single(ray, single)
    assert_server_agrees({k: after_ray.get(k, 0) - after_processes.get(k, 0) for k in after_ray}, ray)


@pytest.mark.parametrize("processes", [1, 2])
def test_rate_steps_to_rate_max_as_sipp_rate_increase(registrar: KamailioPeer, tmp_path: Path, processes: int) -> None:
    """``-r 40 --rate-increase 40 --rate-max 120`` (SIPp -rate_increase/-rate_max): 40, 80
    and 120 registrations a second for an interval each, then no new attempts; each step's
    counts in the summary and as one CSV row, adding up to the totals Kamailio counted too;
    the same over two worker processes (the driver steps their shares)."""
    import pandas as pd

    users = users_file(registrar, tmp_path)
    csv_path = tmp_path / "steps.csv"
    before = kamailio_stats(registrar)
    args = ["register", "127.0.0.1", "--port", str(registrar.udp_port), "--domain", registrar.realm, "--users",
            str(users), "-r", "40", "--rate-increase", "40", "--rate-max", "120", "--interval", "1", "--csv",
            str(csv_path), "--processes", str(processes)]
    code, result, stderr = run_load(args)
    after = kamailio_stats(registrar)
    assert code == 0, (result, stderr[-2000:])
    steps = result["rateSteps"]
    assert [s["rate"] for s in steps] == [40, 80, 120] and result["stoppedAtRateMax"]
    for step in steps:
        assert step["elapsedMs"] == pytest.approx(1000, abs=150)
        assert step["attemptRate"] == pytest.approx(step["rate"], rel=0.2)
        assert step["failed"] == 0 and step["responseTimeMs"]["p50"] > 0
    for key in ("attempted", "successful"):
        assert sum(s[key] for s in steps) == result[key]
    assert result["failed"] == 0 and 0.8 * 240 <= result["attempted"] <= 1.1 * 240
    assert result["elapsedMs"] < 3000 + 1500  # the steps ended the run: no default duration
    assert_server_agrees({k: after.get(k, 0) - before.get(k, 0) for k in after}, result)
    frame = pd.read_csv(csv_path)
    assert list(frame["TargetRate"].iloc[:3]) == [40, 80, 120]
    rows = list(frame["OutgoingCall(P)"])
    assert rows[:2] == [s["attempted"] for s in steps[:2]], (rows, steps)
    # the last step also keeps the intervals after it (RateStep): with workers, one may start
    # an attempt before it hears the stop, and that attempt comes in the next interval's row
    assert rows[2] <= steps[2]["attempted"] == sum(rows[2:]), (rows, steps)


def test_rate_step_options_are_checked_before_anything_is_sent(registrar: KamailioPeer) -> None:
    base = ["options", "127.0.0.1", "--port", str(registrar.udp_port), "-r", "10", "-q"]
    for extra, words in ((["--rate-max", "20"], "--rate-increase"),
                         (["--rate-increase", "5", "--rate-max", "5"], "starting rate 10"),
                         (["--rate-increase", "5", "--rate-max", "50", "--no-rate-quit"], "needs a count")):
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", *base, *extra], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def sipp_register_send(cseq: int, authorization: str = "") -> str:
    """One REGISTER of a SIPp scenario, every user-specific value from the injection file:
    field0 the user, field1 the domain (and field2 the [authentication ...] keyword)."""
    return f"""  <send retrans="500"><![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
{authorization}Expires: 0
Content-Length: 0

]]></send>
"""


#: SIPp's usual REGISTER with digest, credentials injected from the file's field2
SIPP_REGISTER_INF = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="register with auth from -inf">\n'
    + sipp_register_send(1) + '  <recv response="401" auth="true"/>\n' + sipp_register_send(2, "[field2]\n")
    + '  <recv response="200"/>\n</scenario>\n')


def test_sipp_injection_file_with_authentication_keyword(registrar: KamailioPeer, tmp_path: Path) -> None:
    """A users file written for SIPp (``user;domain;[authentication username=… password=…]``)
    drives SIPp's REGISTER-with-auth scenario and ``skinnysip load register`` alike: every
    registration of both succeeds on Kamailio, and a wrong password in the same form fails
    with Kamailio's 403/401, counted by status."""
    from peertools import free_port

    path = tmp_path / "users.csv"
    path.write_text("SEQUENTIAL\n# written for sipp -inf\n" + "".join(
        f"{user};{registrar.realm};[authentication username={user} password={password}]\n"
        for user, password in registrar.users.items()))
    scenario = tmp_path / "register_inf.xml"
    scenario.write_text(SIPP_REGISTER_INF)
    count = 4 * len(registrar.users)
    before = kamailio_stats(registrar)
    sipp = subprocess.run(["sipp", f"127.0.0.1:{registrar.udp_port}", "-sf", str(scenario), "-inf", str(path),
                           "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-r", "50", "-m", str(count),
                           "-nd", "-nostdin", "-timeout", "60s", "-timeout_error"],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    after_sipp = kamailio_stats(registrar)
    assert sipp.returncode == 0, sipp.stdout[-2000:] + sipp.stderr[-2000:]
    # (a REGISTER SIPp retransmitted on a slow machine is accepted again: stateless registrar)
    assert after_sipp["registrar:accepted_regs"] - before["registrar:accepted_regs"] >= count

    code, result, stderr = run_load(register_args(registrar, path, "--no-unregister", "--expires", "0",
                                                  count=count))
    after_ours = kamailio_stats(registrar)
    assert code == 0, (result, stderr[-2000:])
    assert (result["successful"], result["failed"]) == (count, 0)
    assert after_ours["registrar:accepted_regs"] - after_sipp["registrar:accepted_regs"] >= count

    wrong = tmp_path / "wrong.csv"
    user = next(iter(registrar.users))
    wrong.write_text(f"SEQUENTIAL\n{user};{registrar.realm};[authentication username={user} password=not-it]\n")
    code, result, _ = run_load(register_args(registrar, wrong, count=3))
    assert code == 1 and (result["successful"], result["failed"]) == (0, 3)
    assert set(result["failedByStatus"]) <= {"401", "403"} and sum(result["failedByStatus"].values()) == 3


def test_a_423_is_answered_once_with_the_registrars_min_expires(tmp_path: Path) -> None:
    """Kamailio refusing Expires under 120 s with 423 and Min-Expires (``min_expires_mode``):
    each attempt REGISTERs for 30 s → 401 → with credentials → 423 → the same REGISTER for
    120 s, CSeq + 1, with the credentials already given (RFC 3261 §10.2.8, §22.3) → 200,
    then Expires 0 → 200."""
    with kamailio("MD5", min_expires=120) as peer:
        trace = tmp_path / "msgs.txt"
        before = kamailio_stats(peer)
        code, result, stderr = run_load(["register", "127.0.0.1", "--port", str(peer.udp_port), "--domain",
                                         peer.realm, "-u", "alice", "--password", peer.users["alice"],
                                         "--expires", "30", "-r", "20", "-m", "10", "--trace-msg", str(trace)])
        after = kamailio_stats(peer)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert code == 0, (result, stderr[-2000:])
        assert (result["attempted"], result["successful"], result["failed"]) == (10, 10, 0)
        assert result["requestsSent"] == 4 * 10  # REGISTER, with credentials, for Min-Expires, Expires 0
        # the retry and the unregister accepted (a retransmission answered again: one more)
        assert 2 * 10 <= delta["registrar:accepted_regs"] <= 2 * 10 + result["retransmissions"]
        assert after["usrloc:registered_users"] == 0
        sent = [block for block in trace.read_bytes().decode().split("\n-----") if " sent " in block.split("\n", 1)[0]]
        retries = [b for b in sent if "\nExpires: 120\r" in b]
        assert len(retries) == 10 and all("Authorization: Digest" in b and "CSeq: 3 REGISTER" in b for b in retries)
        # asked for 150 s: accepted at once, nothing retried
        code, longer, _ = run_load(["register", "127.0.0.1", "--port", str(peer.udp_port), "--domain", peer.realm,
                                    "-u", "alice", "--password", peer.users["alice"], "--expires", "150",
                                    "-r", "20", "-m", "2"])
        assert code == 0 and longer["requestsSent"] == 3 * 2


def _on_whole_milliseconds(histogram: LatencyHistogram) -> float:
    """The share of ``histogram``'s durations whose 2 % bucket holds a whole number of
    milliseconds (0 included): all of them when the clock that measured them stepped by 1 ms."""
    whole = 0
    for index, n in histogram.buckets.items():
        low, high = (0.0, 0.01) if index == 0 else (0.01 * 1.02 ** (index - 1), 0.01 * 1.02 ** index)
        if math.floor(high + 1e-6) >= low - 1e-6:
            whole += n
    return whole / histogram.count


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_response_times_keep_full_resolution_on_either_event_loop(registrar: KamailioPeer, event_loop: str) -> None:
    """uvloop's ``loop.time()`` steps by 1 ms (libuv's ``uv_now``): the run's response times
    and call lengths come from ``time.monotonic()``, so on uvloop too they spread over the 2 %
    buckets instead of sitting on whole milliseconds (as they did when read from the loop)."""
    user, password = next(iter(registrar.users.items()))
    config = LoadConfig("register", "127.0.0.1", port=registrar.udp_port, domain=registrar.realm,
                        users=[LoadUser(user, password)], rate=150, count=300)
    used: list[str] = []

    async def main() -> Monitor:
        used.append(event_loops.loop_name(asyncio.get_running_loop()))
        return await run_local(config, [])

    monitor = event_loops.run(main(), event_loop)
    total = monitor.total
    assert used == [event_loop]
    assert (total.successful, total.failed) == (300, 0)
    assert len(total.response_time.buckets) >= 10, total.response_time.buckets
    assert _on_whole_milliseconds(total.response_time) < 0.5, total.response_time.buckets
    assert _on_whole_milliseconds(total.call_length) < 0.5, total.call_length.buckets


def test_loop_option_chooses_the_loop_of_the_run_and_of_its_workers(registrar: KamailioPeer, tmp_path: Path) -> None:
    """``--loop asyncio`` runs the driver and its ``--processes`` workers on asyncio's loop; the
    default (``auto``) on uvloop, which comes with the package; each says so in the summary."""
    users = users_file(registrar, tmp_path)
    for choice, expected in (("asyncio", "asyncio"), ("auto", "uvloop")):
        code, result, stderr = run_load(register_args(registrar, users, "--processes", "2", "--loop", choice,
                                                      count=100))
        assert code == 0 and result["successful"] == 100, stderr[-2000:]
        assert result["eventLoop"] == expected
        assert [w["eventLoop"] for w in result["workerTotals"]] == [expected, expected]
    proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "--loop", "libev"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--loop" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_a_server_that_comes_up_during_the_run_is_heard_after_its_icmp_errors(loop_name: str) -> None:
    """``load options`` at 20/s for 7 s to a port where Kamailio starts only after ~2 s: the
    attempts before are refused by ICMP (port unreachable, RFC 3261 §18.4) at once, the
    ones after get Kamailio's 200, and none times out. Before, on uvloop (the default loop)
    the socket heard nothing after its first ICMP error (libuv stops watching a socket whose
    poll reported POLLERR): every later attempt timed out although Kamailio answered."""
    ports = (free_port(), free_port(), free_port())
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "-p", str(ports[0]),
                             "-r", "20", "--duration", "7", "--timeout", "3000", "--max-failures", "100%", "--json",
                             "--quiet", "--loop", loop_name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        with kamailio("MD5", ports=ports):
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out)
    assert result["eventLoop"] == loop_name, err
    refused = result["failedByKind"].get("FailedCannotSendMessage", 0)
    assert refused >= 20, result  # ~2 s at 20/s before Kamailio listened
    assert result["successful"] >= 40, result  # ~3-4 s at 20/s after
    assert "timeout" not in result["failedByStatus"], result
    assert result["successful"] + result["failed"] == result["attempted"]


def _sent_blocks(trace: Path) -> list[str]:
    """The requests a ``--trace-msg`` file shows as sent, one text block each; a UDP
    retransmission (the same Via branch again: a starved machine's Timer E) only once."""
    blocks, branches = [], set()
    for block in trace.read_bytes().decode().split("\n-----"):
        branch = re.search(r"\nVia: [^\r]*branch=([^;\r]+)", block)
        if " sent " in block.split("\n", 1)[0] and branch is not None and branch.group(1) not in branches:
            branches.add(branch.group(1))
            blocks.append(block)
    return blocks


@pytest.mark.parametrize("one_time_nonce", [False, True], ids=["nonce-reused", "one-time-nonce"])
def test_refreshes_carry_the_cached_credentials(tmp_path: Path, one_time_nonce: bool) -> None:
    """``--refreshes 2``: each binding is refreshed twice with the same Call-ID, CSeq + 1 and
    the Authorization cached for it under the next ``nc`` (RFC 3261 §10.2.4, §22.3; RFC 7616
    §3.4), then removed. Kamailio's default takes the nonce again: no 401 beyond the first
    per attempt, ``refreshChallenges`` 0. With ``one_time_nonce`` every refresh is challenged
    once more and answered, and each is counted in ``refreshChallenges`` — what a registrar
    admin reads as the cost of refusing nonce reuse. Kamailio's counts agree with ours."""
    params = {"one_time_nonce": 1} if one_time_nonce else None
    with kamailio("MD5", auth_params=params) as peer:
        trace = tmp_path / "msgs.txt"
        before = kamailio_stats(peer)
        code, result, stderr = run_load(["register", "127.0.0.1", "--port", str(peer.udp_port), "--domain",
                                         peer.realm, "-u", "alice", "--password", peer.users["alice"], "-r", "20",
                                         "-m", "10", "--refreshes", "2", "--refresh-interval", "0.3",
                                         "--trace-msg", str(trace), "--csv", str(tmp_path / "r.csv")])
        after = kamailio_stats(peer)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert code == 0, (result, stderr[-2000:])
    assert (result["attempted"], result["successful"], result["failed"]) == (10, 10, 0)
    assert result["refreshes"] == 20
    assert result["refreshChallenges"] == (20 if one_time_nonce else 0)
    # REGISTER, with credentials, two refreshes, Expires 0; under one_time_nonce the refreshes and the
    # unregister are each challenged and sent once more
    per_attempt = 5 + 3 if one_time_nonce else 5
    assert result["requestsSent"] == per_attempt * 10
    if result["retransmissions"] == 0:
        assert delta["sl:401_replies"] == (1 + 2 + 1 if one_time_nonce else 1) * 10
        assert delta["registrar:accepted_regs"] == 4 * 10
    assert after["usrloc:registered_users"] == 0
    assert 0.6 * 1000 <= result["callLengthMs"]["p50"] < 5000  # two refresh intervals and the exchanges
    blocks = _sent_blocks(trace)
    by_call: dict[str, list[str]] = {}
    for block in blocks:
        call_id = re.search(r"\nCall-ID: (\S+)\r", block)
        assert call_id is not None
        by_call.setdefault(call_id.group(1), []).append(block)
    assert len(by_call) == 10
    for sent in by_call.values():
        cseqs = [int(m.group(1)) for b in sent if (m := re.search(r"\nCSeq: (\d+) REGISTER\r", b))]
        assert cseqs == list(range(1, len(sent) + 1))  # one dialog-less sequence per binding, +1 each
        refreshes = [b for b in sent if "\nExpires: 60\r" in b][2:]  # after the first and its retry
        assert len(refreshes) >= 2 and all("Authorization: Digest" in b for b in refreshes)
        if not one_time_nonce:  # the cached credentials, nc counting on under the one nonce
            assert [re.search(r"nc=(\w+)", b).group(1) for b in refreshes] == ["00000002", "00000003"]  # type: ignore[union-attr]
    frame_text = (tmp_path / "r.csv").read_text().splitlines()
    header = frame_text[0].split(",")
    last = dict(zip(header, frame_text[-1].split(","), strict=False))
    assert last["Refreshes(C)"] == "20" and last["RefreshChallenges(C)"] == str(result["refreshChallenges"])


def test_refresh_options_are_checked_before_anything_is_sent(registrar: KamailioPeer) -> None:
    proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", "options", "127.0.0.1", "--port",
                           str(registrar.udp_port), "--refreshes", "1", "-m", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "only the register scenario refreshes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refreshes_follow_the_expiry_the_registrar_granted() -> None:
    """Kamailio granting at most 4 s (``max_expires``) to a REGISTER asking 60: without
    ``--refresh-interval`` each binding is refreshed after half the granted 4 s (RFC 3261
    §10.2.4: the 2xx's Contact ``expires`` rules), not half of 60."""
    with kamailio("MD5", max_expires=4) as peer:
        code, result, stderr = run_load(["register", "127.0.0.1", "--port", str(peer.udp_port), "--domain",
                                         peer.realm, "-u", "alice", "--password", peer.users["alice"], "-r", "20",
                                         "-m", "4", "--refreshes", "1", "--expires", "60"])
    assert code == 0, (result, stderr[-2000:])
    assert (result["successful"], result["refreshes"], result["refreshChallenges"]) == (4, 4, 0)
    assert 1800 <= result["callLengthMs"]["p50"] < 5000
