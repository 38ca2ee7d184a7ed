"""Against a second, independent SIP stack: Net::SIP's registrar and stateless proxy
(``netsip_peer.py``), which challenges with 401 where Kamailio sends 407, tags no 401, takes a
nonce again while it is fresh and rewrites the Request-URI to the callee's contact.

- ``skinnysip load register`` with a SIPp ``-inf`` file of three users: every attempt
  registers and unregisters, and the server's own log agrees request by request.
- ``skinnysip load call`` through its proxy to ``load answer`` registered there: both sides
  count every call, the server saw exactly their requests, the recordings hold the tones.
- Three of our phones registered there: a MESSAGE, a call heard both ways, RFC 4733 digits,
  hold and resume, and a blind transfer (REFER, RFC 3515) after which the transferee and the
  target hear each other.
- Its user agent as the far-end phone: it echoes our call's RTP (we hear our tone), and it
  calls us with a µ-law stream and RFC 2833 digits (we hear the stream and report the digits).
- Its user agent as the lab's client: it registers with digest and calls the echo service.
- The ``sip invite`` probe through it: its BYE, challenged like any request, is answered.

Audio is proven by the recordings (dominant frequency per 20 ms).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from netsip_peer import NetSIPServer, netsip_call, netsip_echo, netsip_lab_call, netsip_server
from test_lab_sip import lab  # noqa: F401 - lab: fixture
from test_load_answer import finish
from test_load_answer import tone_share as load_tone_share
from test_phone_replaces import incoming
from test_phone_sippy_b2bua import digits, tone_share, until

from peertools import free_port
from peertools import tone_share as frame_share
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import CallState, ErrorEvent, MessageReceived
from skinnysip.phone.sip_phone import SIPAccount, SIPCall, SIPPhone
from skinnysip.probes.sip import ProbeRequest, invite
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.g711 import ulaw_decode, ulaw_encode

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

ALICE_TONE, BOB_TONE, CAROL_TONE = 440.0, 660.0, 880.0


def account(server: NetSIPServer, user: str, tone: float, tmp_path: Path, **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{server.domain}", password=server.users[user],
                      registrar=f"{server.host}:{server.port}", expires=60, source=f"tone:{tone}",
                      record_dir=str(tmp_path / user), **kw)  # type: ignore[arg-type]


def test_load_register_with_three_users_agrees_with_the_servers_log(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    with netsip_server() as server:
        users.write_text("SEQUENTIAL\n" + "".join(f"{u};{p}\n" for u, p in server.users.items()))
        run = subprocess.run([sys.executable, "-m", "skinnysip", "load", "register", server.host,
                              "-p", str(server.port), "--domain", server.domain, "--users", str(users),
                              "-r", "100", "-m", "150", "--expires", "60", "--json", "--quiet"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        summary = json.loads(run.stdout)
        seen = server.seen("REGISTER")
        registrations = server.registrations()
    assert (summary["attempted"], summary["successful"], summary["failed"]) == (150, 150, 0), summary
    assert summary["retransmissions"] == 0, summary
    # each attempt: REGISTER → 401, REGISTER with credentials → 200, the unregister under the
    # same nonce (Net::SIP takes it again) → 200; every one of them reached the server
    assert seen == summary["requestsSent"] == 450, (seen, summary["requestsSent"])
    # 150 bindings and 150 removals passed its digest check, 50 of each per user (SEQUENTIAL)
    assert Counter(registrations) == {(u, e): 50 for u in server.users for e in (60, 0)}, Counter(registrations)


def test_load_call_through_net_sip_to_load_answer_registered_there(tmp_path: Path) -> None:
    """``load answer`` registers bob at Net::SIP; ``load call`` places 10 calls as alice to bob
    through its proxy (each INVITE challenged once, ACK and BYE along its Record-Route); both
    sides count 10 calls, the server saw exactly those requests, and each side's recordings
    hold the other's tone."""
    with netsip_server() as server:
        users = tmp_path / "bob.csv"
        users.write_text("SEQUENTIAL\nbob;builder\n")
        common = [server.host, "-p", str(server.port), "--domain", server.domain, "--json", "--quiet"]
        answer = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "answer", *common, "--users", str(users),
                                   "-m", "10", "--duration", "40", "--source", f"tone:{BOB_TONE}",
                                   "--record", str(tmp_path / "answer")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert asyncio.run(until(lambda: ("bob", 60) in server.registrations(), 15)), server.lines()
            caller = subprocess.run([sys.executable, "-m", "skinnysip", "load", "call", *common, "-u", "alice",
                                     "--password", server.users["alice"], "--to", "bob", "-r", "5", "-m", "10",
                                     "-l", "10", "--hold", "2", "--source", f"tone:{ALICE_TONE}",
                                     "--record", str(tmp_path / "call")], capture_output=True, text=True, timeout=60)
        finally:
            code, answered, err = finish(answer)
        seen = {method: server.seen(method) for method in ("INVITE", "ACK", "BYE", "REGISTER")}
    assert caller.returncode == 0 and code == 0, caller.stdout[-1500:] + caller.stderr[-1500:] + err[-1500:]
    called = json.loads(caller.stdout)
    for side in (called, answered):
        assert (side["attempted"], side["successful"], side["failed"]) == (10, 10, 0), side
        assert side["media"]["rtpLost"] == 0 and side["media"]["mos"] > 4.0, side["media"]
    # INVITE twice a call (401, then with credentials), an ACK for the 401 and one for the
    # 200, one BYE; bob's REGISTER, its retry with credentials, the unregister (a busy machine
    # may make a side retransmit: the server sees those too, and the side counts them)
    assert called["requestsSent"] == 30, called
    assert seen["INVITE"] + seen["BYE"] == 30 + called["retransmissions"], (seen, called["retransmissions"])
    assert seen["BYE"] >= 10 and seen["ACK"] >= 20, seen
    assert seen["REGISTER"] == 3 + answered["retransmissions"], (seen, answered["retransmissions"])
    for n in (1, 10):
        assert load_tone_share(tmp_path / "call" / f"call{n}-rx.wav", BOB_TONE) >= 0.9
        assert load_tone_share(tmp_path / "answer" / f"call{n}-rx.wav", ALICE_TONE) >= 0.9


async def registered(server: NetSIPServer, *users: str, timeout: float = 10.0) -> None:
    assert await until(lambda: {u for u, e in server.registrations() if e} >= set(users), timeout), \
        server.lines()[-20:]


async def test_message_call_digits_hold_and_blind_transfer_through_net_sip(tmp_path: Path) -> None:
    with netsip_server() as server:
        async with SIPPhone(account(server, "bob", BOB_TONE, tmp_path, auto_answer=0.1)) as bob, \
                SIPPhone(account(server, "carol", CAROL_TONE, tmp_path, auto_answer=0.1)) as carol, \
                SIPPhone(account(server, "alice", ALICE_TONE, tmp_path)) as alice:
            await registered(server, "alice", "bob", "carol")

            await alice.message("bob", "through Net::SIP")  # 401 answered, relayed to bob's contact
            texts = []
            for _ in range(40):
                if (event := await bob.next_event(0.1)) is not None and isinstance(event, MessageReceived):
                    texts.append((event.sender, event.text))
                    break
            assert texts == [(f"sip:alice@{server.domain}", "through Net::SIP")], texts

            call = await alice.call("bob")
            far = await incoming(bob)
            assert await call.wait_connected(10), (call.end_reason, [m.summary for m in call.exchange])
            assert await far.wait_connected(5), far.end_reason
            await asyncio.sleep(1.5)
            await call.send_dtmf("19#", duration=0.1)
            got = await digits(bob, 3)
            assert [(e.digit, e.method) for e in got] == [("1", "rfc4733"), ("9", "rfc4733"), ("#", "rfc4733")], got

            await call.hold()  # re-INVITE a=sendonly, challenged and relayed in the dialog
            assert await until(lambda: far.remote_hold), far.audio
            await asyncio.sleep(0.5)
            await call.resume()
            assert await until(lambda: not far.remote_hold), far.audio
            await asyncio.sleep(1.5)
            before = call.media_report(), far.media_report()

            await call.transfer("carol")  # returns once bob's NOTIFY told the target's answer
            assert call.transfer_status == 200, call.transfer_status
            assert await call.wait_ended(5) and await far.wait_ended(5), (call.end_reason, far.end_reason)
            onward = next(c for c in bob.calls if isinstance(c, SIPCall) and "carol" in str(c.remote))
            assert await onward.wait_connected(5), onward.end_reason
            target = next(c for c in carol.calls if isinstance(c, SIPCall))
            assert target.state is CallState.CONFIRMED and "bob" in str(target.remote), target.remote
            await asyncio.sleep(2.0)
            await onward.hangup()
            assert await target.wait_ended(5), target.end_reason
            after = onward.media_report(), target.media_report()
            for phone in (alice, bob, carol):
                while (event := await phone.next_event(0.05)) is not None:
                    assert not isinstance(event, ErrorEvent), event
    ours, theirs = before
    assert ours is not None and theirs is not None
    # alice heard bob before the hold and after the resume; bob heard alice all along but for
    # her digits (her RFC 4733 events replace her audio while they last)
    assert tone_share(ours, 0.3, 1.5, BOB_TONE) >= 0.95
    assert tone_share(ours, -1.2, None, BOB_TONE) >= 0.95
    assert tone_share(theirs, 0.3, 1.5, ALICE_TONE) >= 0.95
    assert tone_share(theirs, -1.2, None, ALICE_TONE) >= 0.95
    # after the transfer bob and carol hear each other
    onward_report, target_report = after
    assert onward_report is not None and target_report is not None
    assert tone_share(onward_report, 0.3, None, CAROL_TONE) >= 0.95
    assert tone_share(target_report, 0.3, None, BOB_TONE) >= 0.95


async def test_our_phone_calls_net_sips_echo_and_hears_itself(tmp_path: Path) -> None:
    """Net::SIP's user agent answers our call and sends our RTP back: we hear our own tone."""
    with netsip_echo() as (port, log):
        async with SIPPhone(SIPAccount(aor="sip:alice@127.0.0.1", register=False, source=f"tone:{ALICE_TONE}",
                                       record_dir=str(tmp_path))) as alice:
            call = await alice.call(f"sip:echo@127.0.0.1:{port}")
            assert await call.wait_connected(10), (call.end_reason, [m.summary for m in call.exchange])
            await asyncio.sleep(3)
            await call.hangup()
            assert await call.wait_ended(5)
            report = call.media_report()
        assert await until(lambda: "cleanup" in log.read_text(), 5), log.read_text()
    assert report is not None
    assert tone_share(report, 0.3, -0.2, ALICE_TONE) >= 0.95


async def test_net_sip_calls_our_phone_with_audio_and_rfc2833_digits(tmp_path: Path) -> None:
    """Net::SIP's user agent calls our phone, sends a 1000 Hz µ-law stream and the digits 159
    as RFC 2833 events, then hangs up: we hear the tone and report the digits."""
    pcmu = write_pcmu_tone(tmp_path / "tone.pcmu", 1000.0)
    async with SIPPhone(SIPAccount(aor="sip:bob@127.0.0.1", register=False, listen_host="127.0.0.1",
                                   listen_port=free_port(socket.SOCK_DGRAM), auto_answer=0.1,
                                   source=f"tone:{BOB_TONE}", record_dir=str(tmp_path))) as bob:
        uri = f"sip:bob@127.0.0.1:{bob.account.listen_port}"
        calling = asyncio.ensure_future(asyncio.to_thread(netsip_call, uri, pcmu, "159", 3.5))
        far = await incoming(bob)
        caller = await calling
        assert caller.returncode == 0 and "digits sent" in caller.stdout, caller.stdout + caller.stderr[-2000:]
        assert await far.wait_ended(5) and far.end_reason == "BYE received", far.end_reason
        got = await digits(bob, 3)
        report = far.media_report()
    assert [(e.digit, e.method) for e in got] == [("1", "rfc4733"), ("5", "rfc4733"), ("9", "rfc4733")], got
    assert report is not None
    # the digits replace the tone while they last (~0.5 s of the first 1.5 s): judge the rest
    assert tone_share(report, 1.8, -0.2, 1000.0) >= 0.95


async def test_the_invite_probes_bye_answers_its_challenge(tmp_path: Path) -> None:
    """``sip invite`` through Net::SIP to bob: Net::SIP does not record-route, so the probe's
    ACK and BYE (sent over its flow to the server) reach it as new requests, and it challenges
    the BYE. The probe answers that 401 with the INVITE's credentials (RFC 3261 §22.2) and
    bob's call ends; it used to stop at the 401, report "BYE answered 401" and leave the call
    up."""
    with netsip_server() as server:
        async with SIPPhone(account(server, "bob", BOB_TONE, tmp_path, auto_answer=0.1)) as bob:
            await registered(server, "bob")
            result = await invite(ProbeRequest(host=server.host, port=server.port, domain=server.domain,
                                               to_uri="bob", username="alice", password=server.users["alice"],
                                               timeout=10))
            far = await incoming(bob)
            assert await far.wait_ended(5), far.state
    summaries = [m.summary.split(" sip:")[0] for m in result.exchange]
    assert result.success and result.status_code == 200 and result.cleanup == "ack+bye", result.message
    assert summaries[-4:] == ["BYE", "401 Authorization required", "BYE", "200 OK"], summaries
    assert "BYE answered" not in (result.message or ""), result.message
    assert far.end_reason == "BYE received", far.end_reason


def write_pcmu_tone(path: Path, hz: float, seconds: float = 6.0) -> Path:
    """A raw 8 kHz µ-law file of a ``hz`` tone (Net::SIP sends such files as RTP)."""
    t = np.arange(int(8000 * seconds)) / 8000
    path.write_bytes(bytes(ulaw_encode((np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16))))
    return path


async def test_net_sips_user_agent_registers_at_the_lab_and_hears_the_echo(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    """Another stack as the lab's client: Net::SIP registers 1001 with digest (the lab's 401,
    qop=auth), calls the echo extension 600 through the lab's proxy, and hears its own 1000 Hz
    tone back; then it hangs up and unregisters."""
    heard = tmp_path / "heard.pcmu"
    done = await asyncio.to_thread(netsip_lab_call, lab.sip["udp"], lab.settings.domain, "1001", "demo1001", "600",
                                   write_pcmu_tone(tmp_path / "tone.pcmu", 1000.0), heard, 3.0)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.split() == ["registered", "established", "end"], done.stdout
    samples = np.asarray(ulaw_decode(np.frombuffer(heard.read_bytes(), dtype=np.uint8)), dtype=np.int16)
    assert frame_share(dominant_frequencies(samples[4000:], 8000), 1000.0) >= 0.95
    assert lab.proxy is not None
    assert not [b for b in lab.proxy.bindings() if b["user"] == "1001"]  # unregistered
