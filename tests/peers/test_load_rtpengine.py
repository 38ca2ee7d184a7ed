"""A call load through a media relay: ``skinnysip load call`` → Kamailio + rtpengine →
``skinnysip load answer``, the way a PBX admin loads a Kamailio/rtpengine pair before going
live. rtpengine's own statistics (its ng ``statistics`` command) are the independent count:
it managed and regularly ended as many sessions as we made calls, and relayed the RTP both
sides sent, with RTP both ways in every session. Both sides hear each other's tone in every call."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rtpengine_peer import RtpenginePeer, ng_command, rtpengine
from sip_peers import kamailio
from test_load_answer import finish, start_answer, tone_share, users_file, wait_registered

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

OUR_TONE, THEIR_TONE = 1000.0, 440.0


@pytest.fixture
def relay() -> Iterator[RtpenginePeer]:
    with rtpengine(ports=400) as peer:
        yield peer


def relay_totals(relay: RtpenginePeer) -> dict[str, int]:
    """rtpengine's integer ``totalstatistics`` counters (managedsessions, relayedpackets…)."""
    _, host, port = relay.ng_socket.split(":")
    reply = ng_command(host, int(port), b"d7:command10:statisticse", 2.0)
    assert reply is not None, "rtpengine did not answer its statistics command"
    totals = reply[reply.index(b"15:totalstatisticsd"):]
    return {name.decode(): int(value) for name, value in re.findall(rb"\d+:([a-z_]+)i(\d+)e", totals)}


def test_load_calls_through_rtpengine_are_counted_by_it_and_heard(relay: RtpenginePeer, tmp_path: Path) -> None:
    calls = 12
    with kamailio(pbx=True, rtpengine=(relay.ng_socket, "", "")) as pbx:
        callees = users_file(pbx, tmp_path / "callees.csv", "bob", "carol")
        callers = tmp_path / "callers.csv"
        callers.write_text(f"SEQUENTIAL\nalice;{pbx.users['alice']};alice;bob\nalice;{pbx.users['alice']};alice;carol\n")
        answer_rec, call_rec = tmp_path / "answered", tmp_path / "called"
        answer = start_answer(pbx, callees, "--source", f"tone:{OUR_TONE:g}", "--record", str(answer_rec),
                              "--duration", "40")
        try:
            wait_registered(pbx, ["bob", "carol"], answer)
            caller = subprocess.run(
                [sys.executable, "-m", "skinnysip", "load", "call", "127.0.0.1", "--port", str(pbx.udp_port),
                 "--domain", pbx.realm, "--users", str(callers), "--to", "[field3]", "-r", "6", "-l", "6",
                 "-m", str(calls), "--hold", "2", "--source", f"tone:{THEIR_TONE:g}", "--record", str(call_rec),
                 "--json"],
                capture_output=True, text=True, timeout=90)
            answer.send_signal(2)
            code, answered, err = finish(answer)
        finally:
            if answer.poll() is None:
                answer.kill()
        called = json.loads(caller.stdout)
        totals = relay_totals(relay)
    assert caller.returncode == 0, caller.stderr[-2000:]
    assert (called["successful"], called["failed"]) == (calls, 0), called
    assert code == 0 and (answered["successful"], answered["failed"]) == (calls, 0), err[-2000:]
    # rtpengine's count: every call a session, ended by its BYE, media both ways in each
    assert totals["managedsessions"] == calls and totals["regularterminatedsessions"] == calls, totals
    assert totals["onewaystreams"] == 0 and totals["zerowaystreams"] == 0, totals
    # it relayed every RTP packet both sides counted (rtpExpected: what reached the far side),
    # plus the RTCP reports (a few a call)
    rtp = called["media"]["rtpExpected"] + answered["media"]["rtpExpected"]
    assert called["media"]["rtpLost"] == answered["media"]["rtpLost"] == 0
    assert rtp <= totals["relayedpackets"] <= rtp + 10 * calls, (rtp, totals["relayedpackets"])
    for directory, tone in ((answer_rec, THEIR_TONE), (call_rec, OUR_TONE)):
        heard = sorted(directory.glob("*-rx.wav"))
        assert len(heard) == calls, heard
        for path in heard:
            assert tone_share(path, tone) > 0.8, path
