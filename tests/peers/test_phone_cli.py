"""``skinnysip phone`` as a user runs it: one call with --call/--duration and --json events,
answering with --auto-answer, SIGTERM unregisters, exit statuses (0 connected, 1 not, 3
unreachable), against Kamailio as PBX and baresip as the far end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import OUR_TONE, THEIR_TONE, registered, share_of
from test_phone_baresip import _wav as wav_samples

from peertools import free_port, longest_silence, tone_share
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def _cmd(pbx: KamailioPeer, *args: str) -> list[str]:
    return [sys.executable, "-m", "skinnysip", "phone", f"sip:alice@{pbx.realm}", "--registrar",
            f"127.0.0.1:{pbx.udp_port}", *args]


async def _typed(pbx: KamailioPeer, script: str, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """The interactive phone (alice) given ``script`` on stdin, as a user types commands:
    (exit status, stdout, stderr)."""
    env = {**os.environ, "SKINNYSIP_PASSWORD": "wonderland"}
    proc = await asyncio.create_subprocess_exec(*_cmd(pbx, *args), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def _run(args: list[str], timeout: float = 40.0) -> tuple[int, str, str]:
    env = {**os.environ, "SKINNYSIP_PASSWORD": "wonderland"}
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_one_call_with_json_events_and_recordings(pbx: KamailioPeer, tmp_path: Path) -> None:
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        code, out, err = await _run(_cmd(pbx, "--call", "bob", "--duration", "2", "--json", "--record",
                                         str(tmp_path)))
        assert code == 0, err + out
        events = [json.loads(line) for line in out.splitlines()]
        kinds = [(e["event"], e.get("state")) for e in events]
        assert kinds[0] == ("registration", "registering") and ("registration", "registered") in kinds
        states = [e["state"] for e in events if e["event"] == "callState"]
        assert states[-2:] == ["confirmed", "terminated"]
        assert "Traceback" not in err
        rx = sorted(tmp_path.glob("*-rx.wav"))
        assert rx and share_of(rx[0], THEIR_TONE) >= 0.95
        await bob.wait_event("CALL_CLOSED")
    assert pbx.contacts("alice") == []  # unregistered at the end


async def test_call_to_nobody_exits_1_and_unreachable_exits_3(pbx: KamailioPeer) -> None:
    code, out, err = await _run(_cmd(pbx, "--call", "carol", "--duration", "1"))
    assert code == 1, out + err
    assert "480 Temporarily Unavailable" in out
    port = free_port(socket.SOCK_STREAM)
    code, out, err = await _run([sys.executable, "-m", "skinnysip", "phone", "sip:alice@127.0.0.1", "--registrar",
                                 f"127.0.0.1:{port}", "--transport", "tcp", "--call", "bob"])
    assert code == 3 and "connection refused" in err and "Traceback" not in err


async def test_auto_answer_and_sigterm_unregisters(pbx: KamailioPeer) -> None:
    env = {**os.environ, "SKINNYSIP_PASSWORD": "wonderland"}
    proc = await asyncio.create_subprocess_exec(*_cmd(pbx, "--auto-answer", "--json"), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    try:
        await registered(pbx, "alice")
        async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
            await registered(pbx, "bob")
            await bob.command("dial", f"sip:alice@{pbx.realm}")
            await bob.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(1)
            await bob.command("hangup")
            await bob.wait_event("CALL_CLOSED")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert any(e["event"] == "incomingCall" for e in events)
    assert [e["state"] for e in events if e["event"] == "callState"][-2:] == ["confirmed", "terminated"]
    assert pbx.contacts("alice") == []


async def test_sccp_phone_on_the_command_line() -> None:
    """``skinnysip phone --sccp HOST:PORT --device SEP… --call 2002 --duration 2``: the lab call
    manager rings our second phone (auto-answer), the call connects, exit 0; a bad device name
    is a usage error (2) in one line."""
    from test_sccp_phone import ALICE, BOB, lab_config

    from skinnysip.lab.callmanager import LabCallManager
    from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone

    cm = LabCallManager(lab_config())
    await cm.start()
    try:
        async with SCCPPhone(SCCPAccount(host="127.0.0.1", port=cm.port, device_name=BOB, auto_answer=0.2)):
            code, out, err = await _run([sys.executable, "-m", "skinnysip", "phone", "--sccp",
                                         f"127.0.0.1:{cm.port}", "--device", ALICE, "--call", "2002",
                                         "--duration", "2", "--json"])
        assert code == 0, out + err
        states = [json.loads(line).get("protocolState") for line in out.splitlines()
                  if json.loads(line)["event"] == "callState"]
        assert "Connected" in states and states[-1] == "OnHook"
        code, out, err = await _run([sys.executable, "-m", "skinnysip", "phone", "--sccp", "127.0.0.1",
                                     "--device", "SEPXYZ"])
        assert code == 2 and "--device" in err and "Traceback" not in err
    finally:
        await cm.stop()


async def test_interactive_commands_on_stdin(pbx: KamailioPeer) -> None:
    """baresip-style commands typed on stdin; the current call and its state are shown after
    every event."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        code, text, err = await _typed(pbx, "dial bob\nsleep 2\nhold\nsleep 1\ncalls\nresume\nsleep 1\nhangup\n"
                                       "sleep 1\nbogus\nquit\n")
        assert code == 0, text + err
        assert "call 1 confirmed" in text and "call 1 confirmed on hold" in text, text + err
        assert "unknown command 'bogus'" in text and "Traceback" not in err
        await bob.wait_event("CALL_CLOSED")


async def test_unregister_and_register_again_on_stdin(pbx: KamailioPeer) -> None:
    """``unregister`` (pjsua's ``ru``) empties Kamailio's location table for us while the
    phone runs; ``register`` fills it again; ``quit`` removes it for good."""
    env = {**os.environ, "SKINNYSIP_PASSWORD": "wonderland"}
    proc = await asyncio.create_subprocess_exec(*_cmd(pbx), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None

    async def line_with(word: str) -> str:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()  # type: ignore[union-attr]
            assert line, "the phone ended"
            if word in line:
                return line

    try:
        await line_with("state=registered,")  # the event
        assert pbx.contacts("alice")
        proc.stdin.write(b"unregister\n")
        await line_with("registration: unregistered")  # the command's answer, once it is done
        assert pbx.contacts("alice") == []
        proc.stdin.write(b"register\n")
        await line_with("registration: registered")
        assert pbx.contacts("alice")
        proc.stdin.write(b"quit\n")
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert pbx.contacts("alice") == []


async def test_mute_on_stdin_is_silence_at_the_far_end(pbx: KamailioPeer) -> None:
    """``mute``/``unmute`` typed on stdin: the call shows ``muted``/``unmuted`` and baresip
    hears our 440 Hz, about a second of silence, then the tone again — with no re-INVITE (a
    mute is not a hold: Kamailio and baresip see nothing but the RTP)."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        code, text, err = await _typed(pbx, "dial bob\nsleep 2\nmute\nsleep 1\nunmute\nsleep 2\nhangup\nsleep 1\n"
                                       "quit\n", "--tone", str(OUR_TONE))
        assert code == 0, text + err
        assert "reason=muted" in text and "call 1 confirmed muted sip:" in text, text + err
        assert "reason=unmuted" in text, text + err
        await bob.wait_event("CALL_CLOSED")
        samples, rate = wav_samples(bob.recordings()["dec"])
    freqs = dominant_frequencies(samples, rate)
    first, quiet, again, last = longest_silence(freqs)
    assert 0.8 <= (again - quiet) * 0.02 <= 1.3, (first, quiet, again, last)
    assert tone_share(freqs[first:quiet], OUR_TONE) >= 0.9 and tone_share(freqs[again:last + 1], OUR_TONE) >= 0.9
