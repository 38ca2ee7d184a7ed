"""``skinnysip load answer``: the called side of a call load, as SIPp's ``-sn uas`` behind a
registration. Every user of ``--users`` registers at Kamailio (a PBX: INVITE 407 digest,
record-routed, relayed to the callee's binding), each call Kamailio brings is counted and
answered with media both ways, and at the end the users unregister.

Callers: SIPp's ``uac`` scenario with ``-rtp_echo``, made to follow the proxy's route set
(SIPp counts the calls we count; our recordings hear our own tone echoed back by SIPp),
``skinnysip load call`` over UDP, TCP and TLS (each side's recordings hear the other side's
tone) and baresip (a real phone dialling; each side hears the other). Without registration
(``--no-register``) SIPp's plain ``uac`` calls our port directly, as it calls ``sipp -sn uas``."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sip_peers import KamailioPeer, _sipp_result, kamailio

from peertools import free_port, require
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.g711 import decode as g711_decode

pytestmark = pytest.mark.peer

OUR_TONE, THEIR_TONE = 1000.0, 440.0


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def users_file(pbx: KamailioPeer, path: Path, *names: str) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(f"{name};{pbx.users[name]}\n" for name in names))
    return path


def start_answer(pbx: KamailioPeer, users: Path, *args: str, transport: str = "udp") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "load", "answer", "127.0.0.1", "--port", str(pbx.port(transport)),
         "-t", transport, "--ca-file", pbx.ca_file, "--domain", pbx.realm, "--users", str(users), "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_registered(pbx: KamailioPeer, names: list[str], proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(pbx.contacts(name) for name in names):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    raise AssertionError(f"not all of {names} registered: {[(n, pbx.contacts(n)) for n in names]}")


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, dict, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"load answer did not end: {err[-2000:]}") from None
    assert out.strip(), err[-2000:]
    return proc.returncode, json.loads(out), err


def sipp_uac_with_route_set(directory: Path) -> Path:
    """SIPp's built-in ``uac`` made to follow a record-routing proxy, as SIPp users do: the
    200's Record-Route kept (``rrs``), ACK and BYE sent to its Contact (``[next_url]``) along
    ``[routes]`` (RFC 3261 §12.2.1.1). The built-in one sends them to the Request-URI
    without a Route, which Kamailio's PBX answers 404 (and the ACK is lost)."""
    xml = subprocess.run([require("sipp"), "-sd", "uac"], capture_output=True, text=True, timeout=10).stdout
    for method in ("ACK", "BYE"):
        line = f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0"
        assert line in xml, "SIPp's uac scenario changed"
        xml = xml.replace(line, f"{method} [next_url] SIP/2.0\n      [routes]")
    assert '<recv response="200" rtd="true">' in xml, "SIPp's uac scenario changed"
    xml = xml.replace('<recv response="200" rtd="true">', '<recv response="200" rtd="true" rrs="true">')
    path = directory / "uac_rr.xml"
    path.write_text(xml)
    return path


def tone_share(path: Path, hz: float, skip: float = 0.5) -> float:
    """The share of 20 ms frames of the WAV at ``path`` whose dominant frequency is ``hz``
    (± 10 Hz), past its first ``skip`` seconds."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    freqs = dominant_frequencies(samples[int(skip * rate):], rate)
    return float(np.mean(np.abs(freqs - hz) < 10)) if len(freqs) else 0.0


@dataclass
class LoadToLoad:
    """``load call`` run against ``load answer --no-register`` (:func:`load_call_to_load_answer`):
    the caller's finished process, the answering side's exit status, JSON summary and stderr,
    the tshark capture of the answering side's media port range ``ports``, and where the
    callers recorded (``record``)."""

    caller: subprocess.CompletedProcess[str]
    code: int
    result: dict[str, Any]
    err: str
    capture: Any
    ports: range
    record: Path


def load_call_to_load_answer(tmp_path: Path, calls: int, answer_args: list[str], call_args: list[str]) -> LoadToLoad:
    """``load answer`` on a free port of 127.0.0.1 for ``calls`` calls, its media on ten ports
    captured by tshark, then ``load call`` of ``calls`` calls (``-m``, one a second, ``--hold 2``)
    to it with ``--record``; ``answer_args``/``call_args``: more options of each."""
    from peertools import TsharkCapture

    port = free_port(socket.SOCK_DGRAM)
    first = free_port(socket.SOCK_DGRAM) // 2 * 2
    ports = f"{first}-{first + 9}"
    answer = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}", "--no-register", "-m", str(calls),
         "--duration", "60", "--rtp-ports", ports, "--json", *answer_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    capture = TsharkCapture(f"udp and portrange {ports}")
    record = tmp_path / "rec"
    try:
        time.sleep(2)  # listening
        assert answer.poll() is None, answer.communicate()[1]
        capture.start()
        caller = subprocess.run(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(port), "--to", "echo",
             "-r", str(calls), "-m", str(calls), "--hold", "2", "--record", str(record), "--json", *call_args],
            capture_output=True, text=True, timeout=90)
        code, result, err = finish(answer)
    finally:
        capture.stop()
        if answer.poll() is None:
            answer.kill()
    return LoadToLoad(caller, code, result, err, capture, range(first, first + 10), record)


def test_sipp_calls_are_answered_counted_and_echoed(pbx: KamailioPeer, tmp_path: Path) -> None:
    """SIPp's ``uac`` calls bob and carol (registered by ``load answer``) through Kamailio:
    SIPp counts every call successful, so does the answering side; SIPp echoes our RTP, so
    each call's recording hears our own tone; afterwards the location table is empty."""
    calls = 4
    users = users_file(pbx, tmp_path / "callees.csv", "bob", "carol")
    record = tmp_path / "rec"
    stats = tmp_path / "answer.csv"
    answer = start_answer(pbx, users, "-m", str(calls), "--source", f"tone:{OUR_TONE:g}", "--record", str(record),
                          "--duration", "60", "--csv", str(stats))
    sipp_dir = Path(tempfile.mkdtemp(prefix="skinnysip-sipp-uac-"))
    scenario = sipp_uac_with_route_set(sipp_dir)
    try:
        wait_registered(pbx, ["bob", "carol"], answer)
        results = []
        for callee in ("bob", "carol"):  # SIPp's uac calls -s USER; two calls each, 3 s of media
            sipp = subprocess.run(
                [require("sipp"), f"127.0.0.1:{pbx.udp_port}", "-sf", str(scenario), "-s", callee, "-i", "127.0.0.1",
                 "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)), "-rtp_echo",
                 "-d", "3000", "-m", "2", "-l", "2", "-r", "2", "-nostdin", "-timeout", "60s", "-trace_stat",
                 "-stf", str(sipp_dir / f"{callee}_.csv"), "-fd", "1"],
                capture_output=True, text=True, timeout=90, cwd=sipp_dir)
            results.append(_sipp_result(sipp.returncode, sipp_dir))
            (sipp_dir / f"{callee}_.csv").rename(sipp_dir / f"{callee}.done")
        code, result, err = finish(answer)
    finally:
        if answer.poll() is None:
            answer.kill()
        shutil.rmtree(sipp_dir, ignore_errors=True)
    assert [(r.successful_calls, r.failed_calls) for r in results] == [(2, 0), (2, 0)], results[-1].log[-2000:]
    assert code == 0, err[-2000:]
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0), result
    assert (result["registered"], result["notRegistered"]) == (2, 0)
    assert result["responseTimeMs"]["p50"] is not None and result["callLengthMs"]["mean"] >= 2500
    assert result["media"]["rtpExpected"] > 0 and result["media"]["mos"] > 4.0, result["media"]
    with stats.open() as file:  # the called side's calls are SIPp's IncomingCall, as SIPp's UAS counts them
        last = list(csv.DictReader(file))[-1]
    assert (int(last["IncomingCall(C)"]), int(last["OutgoingCall(C)"])) == (calls, 0)
    assert int(last["SuccessfulCall(C)"]) == sum(r.successful_calls for r in results)
    heard = sorted(record.glob("*-rx.wav"))
    assert len(heard) == calls
    for path in heard:  # SIPp sent our tone back
        assert tone_share(path, OUR_TONE) > 0.8, path
    assert pbx.contacts("bob") == [] and pbx.contacts("carol") == []  # unregistered at the end


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_load_calls_to_load_answer_hear_each_other(pbx: KamailioPeer, tmp_path: Path, transport: str) -> None:
    """Both sides of a call load are skinnysip: alice calls bob and carol (``[field3]``)
    through Kamailio's 407 digest, ``load answer`` answers for them; the caller's recordings
    hear the answering tone, the answering side's hear the caller's, and the counts agree;
    each call rang half a second (``--ring``) before its answer.
    Over TCP and TLS Kamailio brings each call over the connection its callee registered on."""
    calls = 6
    callees = users_file(pbx, tmp_path / "callees.csv", "bob", "carol")
    callers = tmp_path / "callers.csv"
    callers.write_text(f"SEQUENTIAL\nalice;{pbx.users['alice']};alice;bob\nalice;{pbx.users['alice']};alice;carol\n")
    answer_rec, call_rec = tmp_path / "answered", tmp_path / "called"
    answer = start_answer(pbx, callees, "--source", f"tone:{OUR_TONE:g}", "--record", str(answer_rec),
                          "--duration", "25", "--csv", str(tmp_path / "answer.csv"), "--ring", "0.5",
                          transport=transport)
    try:
        wait_registered(pbx, ["bob", "carol"], answer)
        caller = subprocess.run(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(pbx.port(transport)),
             "-t", transport, "--ca-file", pbx.ca_file, "--domain", pbx.realm, "--users", str(callers), "--to", "[field3]", "-r", "3", "-m", str(calls),
             "--hold", "2", "--source", f"tone:{THEIR_TONE:g}", "--record", str(call_rec), "--json"],
            capture_output=True, text=True, timeout=90)
        answer.send_signal(2)  # Ctrl-C: no more calls; the summary follows
        code, result, err = finish(answer)
    finally:
        if answer.poll() is None:
            answer.kill()
    called = json.loads(caller.stdout)
    assert caller.returncode == 0, caller.stderr[-2000:]
    assert (called["successful"], called["failed"]) == (calls, 0)
    assert called["responseTimeMs"]["p50"] >= 500  # INVITE → 200 waited for our --ring 0.5
    # the post-dial delay (INVITE → 180, sent on arrival) is short, and every call rang
    assert called["alertingTimeMs"]["count"] == calls and called["alertingTimeMs"]["p99"] < 500, called
    assert code == 0, err[-2000:]
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0), result
    assert result["stopped"] == "stop"
    for directory, tone in ((answer_rec, THEIR_TONE), (call_rec, OUR_TONE)):
        heard = sorted(directory.glob("*-rx.wav"))
        assert len(heard) == calls, heard
        for path in heard:
            assert tone_share(path, tone) > 0.8, path
    rows = (tmp_path / "answer.csv").read_text().splitlines()
    assert len(rows) >= 2
    assert pbx.contacts("bob") == [] and pbx.contacts("carol") == []


def test_a_user_that_cannot_register_is_named_and_the_others_answer(pbx: KamailioPeer, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text(f"SEQUENTIAL\nbob;{pbx.users['bob']}\ncarol;not-her-password\n")
    answer = start_answer(pbx, users, "--duration", "2")
    code, result, err = finish(answer)
    assert code == 1, err
    assert (result["registered"], result["notRegistered"]) == (1, 1)
    assert result["registrationFailures"] == ["carol: 403 Forbidden"]
    assert "not registered: carol: 403 Forbidden" in err
    assert pbx.contacts("bob") == []
    # nobody can: one line, exit 3 (the server would not have us)
    users.write_text("SEQUENTIAL\nbob;wrong\ncarol;wrong\n")
    refused = subprocess.run([sys.executable, "-m", "skinnysip", "load", "answer", "127.0.0.1", "--port",
                              str(pbx.udp_port), "--domain", pbx.realm, "--users", str(users), "--duration", "2"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.strip() == "error: no user could register: bob: 403 Forbidden (and 1 more)"


def test_what_the_called_side_does_not_take_is_refused_before_anything_is_sent() -> None:
    for args, message in ((["--to", "bob"], "takes no --to"), (["--rate-increase", "1"], "takes no --rate-increase"),
                          (["--header", "X-A: b"], "takes no --header"),
                          (["--connection-per-attempt"], "connection_per_attempt")):
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", "answer", "127.0.0.1", "--port", "9",
                               *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:  # --no-register on a port in use: exit 2
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}",
                               "--no-register", "--duration", "1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: cannot listen on 127.0.0.1:{port}/udp: address already in use\n"


def test_a_registration_lost_while_answering_is_named() -> None:
    """Kamailio goes away mid-run: bob's refresh (``--expires 10``: due after 5 s) gets no
    answer, and the summary names the lost registration (exit 1) instead of answering
    nothing in silence."""
    with kamailio(pbx=True) as short_lived:
        users = Path(tempfile.mkdtemp(prefix="skinnysip-answer-")) / "users.csv"
        users_file(short_lived, users, "bob")
        answer = start_answer(short_lived, users, "--expires", "10", "--timeout", "2000", "--duration", "10")
        wait_registered(short_lived, ["bob"], answer)
    # the server is gone now
    code, result, err = finish(answer)
    shutil.rmtree(users.parent, ignore_errors=True)
    assert code == 1, err[-2000:]
    assert (result["registered"], result["notRegistered"]) == (1, 1), result
    assert result["registrationFailures"][0].startswith("bob: lost its registration: "), result
    assert "not registered: bob: lost its registration" in err


def alice_calls_bob(pbx: KamailioPeer, tmp_path: Path, answer_args: list[str], call_args: list[str],
                    timeout: float = 60.0) -> tuple[dict, int, dict, str]:
    """``load answer`` for bob with ``answer_args``, and alice's ``load call`` to bob with
    ``call_args`` through Kamailio: (the caller's summary, the answering side's exit status,
    its summary, its stderr)."""
    callees = users_file(pbx, tmp_path / "callees.csv", "bob")
    answer = start_answer(pbx, callees, *answer_args)
    try:
        wait_registered(pbx, ["bob"], answer)
        caller = subprocess.run(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(pbx.udp_port),
             "--domain", pbx.realm, "-u", "alice", "--password", pbx.users["alice"], "--to", "bob", *call_args,
             "--json"], capture_output=True, text=True, timeout=timeout)
        code, result, err = finish(answer)
    finally:
        if answer.poll() is None:
            answer.kill()
    assert caller.stdout.strip(), caller.stderr[-2000:]
    return json.loads(caller.stdout), code, result, err


def test_calls_cancelled_while_ringing_are_counted_cancelled(pbx: KamailioPeer, tmp_path: Path) -> None:
    """``--ring 10`` outlasts the callers' patience (``--timeout 1000`` then CANCEL): the
    answering side counts each call failed as ``cancelled`` and answers none."""
    called, code, result, err = alice_calls_bob(pbx, tmp_path, ["--ring", "10", "-m", "2", "--duration", "30"],
                                                ["-r", "5", "-m", "2", "--timeout", "1000", "--hold", "1"])
    assert called["failed"] == 2, called
    assert code == 1, err[-2000:]
    assert (result["attempted"], result["successful"], result["failedByStatus"]) == (2, 0, {"cancelled": 2}), result


def test_calls_beyond_the_limit_are_refused_busy_and_counted(pbx: KamailioPeer, tmp_path: Path) -> None:
    """``-l 2`` on the called side: three calls at once to bob, the third refused 486 (Busy
    Here) and counted failed as ``limit``; the caller sees the 486."""
    called, code, result, err = alice_calls_bob(pbx, tmp_path, ["-l", "2", "-m", "3", "--duration", "30"],
                                                ["-r", "20", "-m", "3", "-l", "3", "--hold", "2"])
    assert (called["successful"], called["failedByStatus"]) == (2, {"486": 1}), called
    assert code == 1, err[-2000:]
    assert (result["attempted"], result["successful"], result["failedByStatus"]) == (3, 2, {"limit": 1}), result


def test_one_callee_takes_more_calls_at_once_than_a_phone_line(pbx: KamailioPeer, tmp_path: Path) -> None:
    """40 calls at once to bob alone: more than a phone's own 32 (``MAX_CALLS``), all answered
    — the called side's bound is its ``-l`` (default 100), counted, not the phone's."""
    called, code, result, err = alice_calls_bob(pbx, tmp_path, ["-m", "40", "--duration", "60"],
                                                ["-r", "40", "-m", "40", "-l", "40", "--hold", "3"], timeout=90)
    assert (called["successful"], called["failed"]) == (40, 0), called
    assert code == 0, err[-2000:]
    assert (result["attempted"], result["successful"]) == (40, 40), result


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_without_registration_it_answers_on_its_own_port_as_sipp_uas(tmp_path: Path, transport: str) -> None:
    """``--no-register``: SIPp's ``uac`` (``-rtp_echo``) calls HOST:PORT directly, as it would
    call ``sipp -sn uas``; both count the same calls, our recordings hear our tone echoed."""
    port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    record = tmp_path / "rec"
    answer = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}", "-t", transport, "--no-register",
         "-m", "3", "--duration", "60", "--source", f"tone:{OUR_TONE:g}", "--record", str(record), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sipp_dir = Path(tempfile.mkdtemp(prefix="skinnysip-sipp-uac-"))
    try:
        time.sleep(2)  # listening
        assert answer.poll() is None, answer.communicate()[1]
        sipp = subprocess.run(
            [require("sipp"), f"127.0.0.1:{port}", "-sn", "uac", "-t", "u1" if transport == "udp" else "t1",
             "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
             "-rtp_echo", "-d", "2000", "-m", "3", "-l", "3", "-r", "3", "-nostdin", "-timeout", "60s",
             "-trace_stat", "-stf", str(sipp_dir / "uac_.csv"), "-fd", "1"],
            capture_output=True, text=True, timeout=90, cwd=sipp_dir)
        counted = _sipp_result(sipp.returncode, sipp_dir)
        code, result, err = finish(answer)
    finally:
        if answer.poll() is None:
            answer.kill()
        shutil.rmtree(sipp_dir, ignore_errors=True)
    assert (counted.successful_calls, counted.failed_calls) == (3, 0), counted.log[-2000:]
    assert code == 0, err[-2000:]
    assert (result["attempted"], result["successful"], result["registered"]) == (3, 3, 0), result
    heard = sorted(record.glob("*-rx.wav"))
    assert len(heard) == 3 and all(tone_share(path, OUR_TONE) > 0.8 for path in heard), heard


def test_rtp_echo_sends_each_payload_back_as_it_came_as_sipp_rtp_echo(tmp_path: Path) -> None:
    """``--source rtp-echo`` (SIPp's ``-rtp_echo``): the answering side sends every audio
    payload it receives straight back, byte for byte: tshark sees each RTP packet from it
    carry the payload of the one it received last (a tone of 437.3 Hz, so no two frames are
    alike; a decoding echo sends a frame back a jitter buffer later) — and the caller hears
    its own tone."""
    run = load_call_to_load_answer(tmp_path, 2, ["--source", "rtp-echo"], ["--source", "tone:437.3"])
    caller, code, result, err, capture, ours, record = (run.caller, run.code, run.result, run.err, run.capture,
                                                        run.ports, run.record)
    assert caller.returncode == 0, caller.stderr[-2000:]
    assert code == 0 and (result["successful"], result["failed"]) == (2, 0), err[-2000:]
    capture.decode_as = [f"udp.port=={p},rtp" for p in ours[::2]]  # the RTP ports the answering side may take
    packets = capture.decode("rtp", ["udp.srcport", "udp.dstport", "rtp.payload"])
    last_in: dict[int, str] = {}  # the answering side's port -> the payload it received last
    received = echoed = same = 0
    for p in packets:  # in capture order
        src, dst, payload = int(p["udp.srcport"][0]), int(p["udp.dstport"][0]), p["rtp.payload"][0]
        if dst in ours:
            received += 1
            last_in[dst] = payload
        elif src in ours:
            echoed += 1
            same += last_in.get(src) == payload  # sent back at once: before the next one came
    assert received >= 2 * 2 * 50 * 0.8, received
    assert abs(echoed - received) <= 4  # the last ones may cross the BYE
    assert same >= echoed - 2, (same, echoed)
    heard = sorted(record.glob("*-rx.wav"))
    assert len(heard) == 2 and all(tone_share(path, 437.3) > 0.8 for path in heard), heard


async def test_a_real_phone_calling_the_answering_side_hears_it(pbx: KamailioPeer, tmp_path: Path) -> None:
    """baresip, registered as alice, dials bob (registered by ``load answer``) three times
    through Kamailio: each call is counted successful (baresip hangs up: our side saw its
    BYE), baresip hears our tone and our recordings hear baresip's."""
    import asyncio

    from baresip_peer import baresip
    from test_phone_baresip import share_of

    calls = 3
    callees = users_file(pbx, tmp_path / "callees.csv", "bob")
    record = tmp_path / "rec"
    answer = start_answer(pbx, callees, "-m", str(calls), "--duration", "60", "--source", f"tone:{OUR_TONE:g}",
                          "--record", str(record))
    try:
        await asyncio.to_thread(wait_registered, pbx, ["bob"], answer)
        async with baresip("alice", pbx.users["alice"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as alice:
            for _ in range(100):
                if pbx.contacts("alice"):
                    break
                await asyncio.sleep(0.1)
            heard_by_alice = []
            for _ in range(calls):
                mark = len(alice.events)
                await alice.command("dial", f"sip:bob@{pbx.realm}")
                await alice.wait_event("CALL_ESTABLISHED", timeout=15, after=mark)
                await asyncio.sleep(2.0)
                await alice.command("hangup")
                await alice.wait_event("CALL_CLOSED", timeout=15, after=mark)
                heard_by_alice.append(share_of(alice.recordings()["dec"], OUR_TONE))
                await asyncio.sleep(1.1)  # baresip names its dumps by the second: one file a call
        code, result, err = await asyncio.to_thread(finish, answer)
    finally:
        if answer.poll() is None:
            answer.kill()
    assert code == 0, err[-2000:]
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0), result
    assert min(heard_by_alice) >= 0.8, heard_by_alice
    heard = sorted(record.glob("*-rx.wav"))
    assert len(heard) == calls and all(tone_share(path, THEIR_TONE) > 0.8 for path in heard), heard


def test_options_pings_to_the_answering_side_are_auto_answered_as_sipp_counts_them() -> None:
    """sipsak pings the answering side (``--no-register``) with OPTIONS, as a registrar or an
    SBC keeps its contacts alive: each gets 200 from the phone's UAS core, and the summary
    counts them as SIPp's AutoAnswered, none as out of call and no attempt."""
    port = free_port(socket.SOCK_DGRAM)
    answer = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}", "--no-register", "-m", "1",
         "--duration", "6", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # listening
        assert answer.poll() is None, answer.communicate()[1]
        for _ in range(3):
            ping = subprocess.run([require("sipsak"), "-v", "-s", f"sip:ping@127.0.0.1:{port}"], capture_output=True,
                                  text=True, timeout=20)
            assert ping.returncode == 0 and "200 OK" in ping.stdout + ping.stderr, ping.stdout + ping.stderr
        code, result, err = finish(answer)
    finally:
        if answer.poll() is None:
            answer.kill()
    assert code == 0, err[-2000:]
    assert (result["autoAnswered"], result["outOfCallMsgs"], result["attempted"]) == (3, 0, 0), result


def test_a_dtls_srtp_call_load_is_keyed_call_by_call_and_heard(tmp_path: Path) -> None:
    """``load call --srtp dtls`` against ``load answer --srtp optional``: every call offers
    UDP/TLS/RTP/SAVP, the answering side answers active and opens a DTLS association per call
    and component (RTP, RTCP: no rtcp-mux) — tshark counts the ClientHellos and ServerHellos —
    and each caller hears the answering side's tone through SRTP; the media are not the tone
    in the clear."""
    run = load_call_to_load_answer(
        tmp_path, 3, ["--source", f"tone:{OUR_TONE:g}", "--srtp", "optional", "--codecs", "PCMU"],
        ["--source", f"tone:{THEIR_TONE:g}", "--srtp", "dtls", "--codecs", "PCMU"])
    caller, code, result, err, capture, ours, record = (run.caller, run.code, run.result, run.err, run.capture,
                                                        run.ports, run.record)
    assert caller.returncode == 0, caller.stderr[-2000:]
    assert (json.loads(caller.stdout)["successful"], json.loads(caller.stdout)["failed"]) == (3, 0), caller.stdout
    assert code == 0 and (result["successful"], result["failed"]) == (3, 0), err[-2000:]
    capture.decode_as = [f"udp.port=={p},dtls" for p in ours]
    hellos = capture.decode("dtls.handshake.type == 1 || dtls.handshake.type == 2",
                            ["udp.srcport", "dtls.handshake.type"])
    client_hellos = [h for h in hellos if "1" in h["dtls.handshake.type"] and int(h["udp.srcport"][0]) in ours]
    server_hellos = [h for h in hellos if "2" in h["dtls.handshake.type"] and int(h["udp.srcport"][0]) not in ours]
    assert len(client_hellos) >= 6 and len(server_hellos) >= 6, hellos  # 3 calls × RTP and RTCP
    heard = sorted(record.glob("*-rx.wav"))
    assert len(heard) == 3 and all(tone_share(path, OUR_TONE) > 0.8 for path in heard), heard
    capture.decode_as = []
    sent = [bytes.fromhex(p["udp.payload"][0].replace(":", ""))
            for p in capture.decode("udp.length > 150", ["udp.srcport", "udp.payload"])
            if int(p["udp.srcport"][0]) in ours[::2]]
    payloads = [p[12:] for p in sent if p[0] == 0x80 and p[1] & 0x7F == 0]  # RTP v2, PCMU: the answering side's
    assert len(payloads) > 200, len(sent)
    clear = [abs(dominant_frequencies(g711_decode(0, p[:160]), 8000)[0] - OUR_TONE) < 25 for p in payloads if len(p) >= 160]
    assert sum(clear) < 0.05 * len(clear), sum(clear)
