"""``skinnysip load call`` against SIPp ``-sn uas -rtp_echo``: SIPp counts the calls we count,
media flows both ways (SIPp echoes our RTP), and RTP loss injected between us and SIPp
(a :class:`peertools.UDPRelay` dropping every 10th datagram) shows in the quality report.
Through Kamailio as a PBX to a registered baresip answering by itself: baresip counts the
calls we count and hears our tone in every one."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sip_peers import SippResult, _sipp_result

from peertools import UDPRelay, free_port, require
from skinnysip.load.runner import run_local, summary
from skinnysip.load.scenarios import LoadConfig
from skinnysip.rtp.codecs import PCMU
from skinnysip.rtp.quality import mos_from_r, r_factor
from skinnysip.rtp.tones import dtmf, silence

pytestmark = pytest.mark.peer


@dataclass
class EchoUAS:
    port: int
    media_port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    def finish(self, timeout: float) -> SippResult:
        """Wait (bounded) for SIPp to end its calls; its own statistics."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        return _sipp_result(self.proc.returncode, self.workdir)


@contextmanager
def sipp_echo_uas(calls: int, *, media_port: int | None = None, sdp_port: int | None = None) -> Iterator[EchoUAS]:
    """SIPp's built-in ``uas`` for ``calls`` calls with ``-rtp_echo`` on its media port
    (``media_port``, default a free one). ``sdp_port``: the port its SDP answer names instead
    of its media port (a relay in front)."""
    binary = require("sipp")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-sipp-echo-"))
    port = free_port(socket.SOCK_DGRAM)
    media = media_port or free_port(socket.SOCK_DGRAM)
    args = [binary, "-i", "127.0.0.1", "-p", str(port), "-mp", str(media), "-rtp_echo", "-m", str(calls),
            "-nostdin", "-trace_stat", "-stf", str(workdir / "sipp_.csv"), "-fd", "1", "-timeout", "120s"]
    if sdp_port is None:
        args += ["-sn", "uas"]
    else:
        xml = subprocess.run([binary, "-sd", "uas"], capture_output=True, text=True, timeout=10).stdout
        assert "m=audio [media_port] RTP/AVP 0" in xml, "SIPp's uas scenario changed"
        (workdir / "uas.xml").write_text(xml.replace("m=audio [media_port]", f"m=audio {sdp_port}"))
        args += ["-sf", str(workdir / "uas.xml")]
    with open(workdir / "sipp.out", "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        time.sleep(0.3)
        assert proc.poll() is None, (workdir / "sipp.out").read_text(errors="replace")
        yield EchoUAS(port, media, proc, workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def test_load_call_counts_agree_with_sipp_and_media_echoes() -> None:
    calls = 20
    with sipp_echo_uas(calls) as uas:
        proc = subprocess.run(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(uas.port),
             "--to", "service", "-r", "10", "-m", str(calls), "-l", str(calls), "--hold", "2", "--json"],
            capture_output=True, text=True, timeout=90)
        result = json.loads(proc.stdout)
        sipp = uas.finish(timeout=15)  # SIPp's 4 s timewait after the last BYE
    assert proc.returncode == 0, (result, proc.stderr[-2000:])
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0)
    assert (sipp.successful_calls, sipp.failed_calls) == (calls, 0), sipp.log[-2000:]
    media = result["media"]
    # SIPp echoed our RTP: ~50 packets/s for each call's 2 s, none lost on loopback
    assert media["rtpExpected"] >= calls * 2 * 50 * 0.8
    assert media["rtpLost"] == 0 and media["loss"] == 0.0
    # G.711 without loss scores 4.4 (G.107); play-out discards of packets that came too late
    # (our event loop starved on a loaded machine) count as loss in G.107, hence the margin
    assert media["mos"] >= 3.6 and media["jitterMs"] is not None
    assert result["callLengthMs"]["mean"] >= 2000


def _sipp_current_calls(workdir: Path) -> int:
    """SIPp's ``CurrentCall`` in the last row of its -trace_stat file (0 before the first)."""
    files = list(workdir.glob("*_.csv"))
    lines = files[0].read_text(errors="replace").strip().splitlines() if files else []
    if len(lines) < 2:
        return 0
    row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    return int(row.get("CurrentCall", 0) or 0)


@pytest.mark.parametrize("processes", [1, 2], ids=["one", "two-workers"])
def test_a_second_ctrl_c_hangs_up_the_running_calls_and_the_summary_follows(processes: int) -> None:
    """Ctrl-C once: no new calls; twice: the calls still up are aborted — each hung up with a
    BYE (SIPp counts a call successful only when its BYE came), counted as ``aborted`` —
    and the summary is printed all the same, as SIPp prints its statistics when it aborts."""
    calls = 6
    with sipp_echo_uas(calls) as uas:
        proc = subprocess.Popen(
            [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(uas.port),
             "--to", "service", "-r", "20", "-m", str(calls), "-l", str(calls), "--hold", "120", "--json",
             "--processes", str(processes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 40
            while _sipp_current_calls(uas.workdir) < calls and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            assert _sipp_current_calls(uas.workdir) == calls, "the calls did not all come up"
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert proc.poll() is None  # the first stops new calls only: these go on
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
        sipp = uas.finish(timeout=20)  # its calls end on our BYEs (then SIPp's 4 s timewait)
    result = json.loads(out)
    assert proc.returncode == 1, err[-2000:]  # the aborted calls are failures
    assert took < 15  # the hang-ups, not the 120 s hold
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, 0, calls)
    assert result["failedByStatus"] == {"aborted": calls} and result["stopped"] == "abort"
    assert (sipp.successful_calls, sipp.failed_calls) == (calls, 0), sipp.log[-2000:]


async def test_injected_loss_shows_in_the_quality_report() -> None:
    counter = {"n": 0}

    def every_tenth(data: bytes) -> bool:  # RTP (version 2) only: drop 1 datagram in 10
        if not data or data[0] >> 6 != 2:
            return False
        counter["n"] += 1
        return counter["n"] % 10 == 0

    # our RTP → relay (named in SIPp's SDP) → SIPp's echo port → relay → us
    sipp_media = free_port(socket.SOCK_DGRAM)
    relay = UDPRelay(("127.0.0.1", sipp_media), drop_up=every_tenth, limit=100_000)
    relay_port = await relay.start()
    try:
        with sipp_echo_uas(1, media_port=sipp_media, sdp_port=relay_port) as uas:
            config = LoadConfig("call", "127.0.0.1", port=uas.port, to="service", rate=1, count=1, hold=4.0)
            monitor = await run_local(config, [])
            result = summary(monitor, config)
            sipp = await asyncio.to_thread(uas.finish, 15)
    finally:
        relay.close()
    assert result["successful"] == 1 and sipp.successful_calls == 1
    media = result["media"]
    dropped = len(relay.dropped_up)
    assert dropped >= 15  # ~200 packets in 4 s, 1 in 10 dropped
    # every datagram the relay dropped on the way to SIPp's echo is missing from what we heard
    assert abs(media["rtpLost"] - dropped) <= 2, (media, dropped)
    assert 0.07 <= media["loss"] <= 0.13
    # the MOS is G.107's for that loss at most (PCMU: Ie 0, Bpl 25.1; any delay or late
    # play-out discard only lowers it): ~3.4 at 10 %, against 4.4 without loss
    ceiling = mos_from_r(r_factor(ie=PCMU.ie, bpl=PCMU.bpl, loss=media["loss"]))
    assert media["mos"] <= ceiling + 0.01 and ceiling < 3.6, (media["mos"], ceiling)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_load_calls_through_a_pbx_to_baresip_are_answered_and_heard(transport: str) -> None:
    """The load a PBX admin runs: calls from alice (digest, 407) through Kamailio to bob, a
    baresip registered over ``transport`` that answers by itself. Every call is established
    and closed on baresip's side, our MOS is G.711's without loss, and baresip's recordings
    have our 440 Hz tone as the dominant frequency of their 20 ms frames."""
    from baresip_peer import baresip
    from sip_peers import kamailio
    from test_phone_baresip import share_of

    calls = 4
    with kamailio(pbx=True) as pbx:
        port = pbx.udp_port if transport == "udp" else pbx.tcp_port
        async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{port}", transport=transport,
                           tone_hz=660.0) as bob:
            for _ in range(100):
                if pbx.contacts("bob"):
                    break
                await asyncio.sleep(0.1)
            assert pbx.contacts("bob"), "baresip never registered"
            proc = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "-p", str(port), "-t", transport,
                 "--domain", pbx.realm, "-u", "alice", "--password", pbx.users["alice"], "--to", "bob", "-r", "2",
                 "-m", str(calls), "-l", "2", "--hold", "2", "--source", "tone:440", "--json"],
                capture_output=True, text=True, timeout=90)
            for _ in range(50):  # the last BYE's CALL_CLOSED
                if bob.event_types().count("CALL_CLOSED") >= calls:
                    break
                await asyncio.sleep(0.1)
            kinds = bob.event_types()
            dumps = sorted(bob.record_dir.glob("dump-*-dec.wav"))
            heard = [share_of(path, 440.0) for path in dumps]
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0), result
    assert kinds.count("CALL_ESTABLISHED") == kinds.count("CALL_CLOSED") == calls, kinds
    assert result["media"]["rtpLost"] == 0 and result["media"]["mos"] >= 3.6, result["media"]
    # baresip names its dumps by the second a call started: calls started in the same second
    # share one file (the last one's audio), so there are between 1 and ``calls`` of them
    assert 1 <= len(heard) <= calls and min(heard) >= 0.9, heard


LATE_200 = """
  <pause milliseconds="150"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-late-[call_number]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
"""


def call_scenario(hold: float, check: str = "True") -> str:
    """A user scenario: call ``service``, hold ``hold`` s, hang up; the attempt succeeds when
    ``check`` (an expression over ``call`` and ``media``, read before the hangup) holds."""
    return f'''
import asyncio


async def scenario(phone, index):
    call = await phone.call("service")
    if not await call.wait_connected(10):
        return False
    await asyncio.sleep({hold})
    media = call.media
    ok = {check}
    await call.hangup()
    return ok
'''


USER_CALL = call_scenario(0.5)


@pytest.mark.parametrize("scenario", ["call", "user"])
def test_a_200_repeated_after_the_call_ended_counts_as_a_dead_call_message(tmp_path: Path, scenario: str) -> None:
    """SIPp's built-in ``uas``, changed to send its INVITE's 200 once more 150 ms after it
    answered our BYE (as a UAS whose ACK got lost would): each such 2xx that reaches us matches
    no transaction and no call the phone still has, so it counts as SIPp's DeadCallMsgs (the
    call ended less than 33 s before) — as many as the --trace-msg file shows arrived (the last
    call's may come after the run ended) — and no call fails for it. The same for calls a
    ``user`` scenario places itself (the phone tells the load run each call's end,
    ``Phone.on_call_ended``)."""
    binary = require("sipp")
    xml = subprocess.run([binary, "-sd", "uas"], capture_output=True, text=True, timeout=10).stdout
    marker = '<timewait milliseconds="4000"/>'
    assert marker in xml, "SIPp's uas scenario changed"
    (tmp_path / "uas.xml").write_text(xml.replace(marker, LATE_200 + marker))
    port = free_port(socket.SOCK_DGRAM)
    sipp = subprocess.Popen([binary, "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_port(socket.SOCK_DGRAM)),
                             "-sf", "uas.xml", "-m", "6", "-nostdin", "-timeout", "60s"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        messages = tmp_path / "messages.log"
        if scenario == "call":
            what = ["--to", "service", "--hold", "0.5"]
        else:
            (tmp_path / "calls.py").write_text(USER_CALL)
            what = ["--script", str(tmp_path / "calls.py")]
        proc = subprocess.run([sys.executable, "-m", "skinnysip", "load", scenario, "127.0.0.1", "--port", str(port),
                               *what, "-r", "4", "-m", "6", "--trace-msg", str(messages), "--json"],
                              capture_output=True, text=True, timeout=90)
    finally:
        sipp.kill()
        sipp.wait(5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert (result["successful"], result["failed"]) == (6, 0)
    late = messages.read_text(encoding="utf-8").count(";branch=z9hG4bK-late-")
    assert late >= 4
    assert (result["deadCallMsgs"], result["outOfCallMsgs"]) == (late, 0)


LOG_PROBE = call_scenario(1.0, "media.packets_sent > 30 and media.packets_received > 30 "
                                "and len(media.packet_log) == 0 and not media.packet_log.enabled")


async def test_load_calls_keep_no_media_packet_log(tmp_path: Path) -> None:
    """A phone keeps each call's RTP/RTCP datagrams (up to 2 MiB a stream) for its pcap; the
    phones of a load run do not (``SIPAccount.packet_log=False``): thousands of calls would
    hold gigabytes. A user scenario on SIPp's echo sees media flow both ways and nothing kept."""
    script = tmp_path / "probe.py"
    script.write_text(LOG_PROBE)
    with sipp_echo_uas(2) as uas:
        config = LoadConfig("user", "127.0.0.1", port=uas.port, user_script=str(script), rate=2, count=2)
        result = summary(await run_local(config, []), config)
    assert (result["successful"], result["failed"]) == (2, 0), result


INBAND_PROBE = '''
import asyncio
import json


async def scenario(phone, index):
    if index == 1:  # the second call: in-band detection turned on, as a scenario may
        phone.account.inband_dtmf = True
    call = await phone.call("service")
    if not await call.wait_connected(10):
        return False
    await asyncio.sleep(1.6)
    report = call.media.report()
    await call.hangup()
    line = {"index": index, "inband": call.media.inband_dtmf, "received": report["received"]["packets"],
            "digits": "".join(d["digit"] for d in report["dtmf"]), "methods": sorted({d["method"] for d in report["dtmf"]})}
    with open(OUT, "a") as out:
        out.write(json.dumps(line) + "\\n")
    return True
'''


async def test_load_calls_look_for_no_inband_dtmf_unless_a_scenario_asks(tmp_path: Path) -> None:
    """A load run's phones hear RFC 4733 (and INFO) digits only (``SIPAccount.inband_dtmf=False``):
    the Goertzel fallback costs a stream a few µs every 20 ms and SIPp hears no digits either.
    Our calls send key presses of '5' (a WAV, no telephone-event: SIPp's answer has none) to
    SIPp's echo: the first call, as a load run makes it, finds no digit in what comes back; the
    second, whose scenario set ``phone.account.inband_dtmf = True``, finds the '5's in band."""
    wav = tmp_path / "keys.wav"
    samples = np.concatenate([silence(0.2), *[part for _ in range(3) for part in (dtmf("5", 0.1), silence(0.1))]])
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.astype("<i2").tobytes())
    lines = tmp_path / "calls.jsonl"
    script = tmp_path / "probe.py"
    script.write_text(f"OUT = {str(lines)!r}\n" + INBAND_PROBE)
    with sipp_echo_uas(2) as uas:
        config = LoadConfig("user", "127.0.0.1", port=uas.port, user_script=str(script), rate=1, count=2,
                            source=str(wav), codecs=("PCMU",))
        result = summary(await run_local(config, []), config)
    assert (result["successful"], result["failed"]) == (2, 0), result
    calls = {line["index"]: line for line in map(json.loads, lines.read_text().splitlines())}
    assert calls[0]["inband"] is False and calls[1]["inband"] is True, calls
    assert min(calls[0]["received"], calls[1]["received"]) > 50, calls  # the echo came back to both
    assert calls[0]["digits"] == "", calls
    assert "5" in calls[1]["digits"] and set(calls[1]["digits"]) == {"5"} and calls[1]["methods"] == ["inband"], calls
