"""The softphone through a back-to-back user agent: the Sippy B2BUA (``sippy_peer.py``) between
two of our phones, as a PBX sits between two extensions. Every call is two dialogs (new
Call-ID, tags, CSeq on bob's side); the re-INVITEs, INFOs, REFERs and BYEs a phone gets are the
B2BUA's, not the other phone's; the B2BUA re-INVITEs a leg by itself to see that it is alive,
ends calls whose credit ran out, filters the codecs an offer may carry, hangs up a transferred
call at once, refuses what it does not take (MESSAGE), and logs in at a server with digest as a
UAC of its own (the lab, as a trunk would).

Audio is proven by listening on both sides (the dominant frequency of ≥ 95 % of 20 ms frames is
the other's tone)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sippy_peer import SippyB2BUA, sippy_b2bua
from test_lab_sip import lab, port  # noqa: F401 - lab: fixture
from test_load_answer import finish
from test_load_answer import tone_share as load_tone_share
from test_phone_baresip import OUR_TONE, THEIR_TONE
from test_phone_baresip import _wav as wav_samples
from test_phone_replaces import incoming
from test_phone_sipp import _events

from peertools import free_port
from peertools import tone_share as frame_share
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import DTMFReceived, ErrorEvent, PhoneError
from skinnysip.phone.sip_phone import SIPAccount, SIPCall, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


def account(user: str, tone: float, tmp_path: Path, **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@127.0.0.1", register=False, listen_host="127.0.0.1",
                      listen_port=free_port(socket.SOCK_DGRAM), source=f"tone:{tone}",
                      record_dir=str(tmp_path / user), **kw)  # type: ignore[arg-type]


async def digits(phone: SIPPhone, count: int) -> list[DTMFReceived]:
    """The digits ``phone`` reports, once ``count`` came (or after 40 waits for events)."""
    got: list[DTMFReceived] = []
    for _ in range(40):
        got += [e for e in await _events(phone) if isinstance(e, DTMFReceived)]
        if len(got) >= count:
            break
    return got


async def call_through(b2bua: SippyB2BUA, alice: SIPPhone, bob: SIPPhone) -> tuple[SIPCall, SIPCall]:
    """alice calls bob through the B2BUA; both sides once connected."""
    call = await alice.call(b2bua.uri("bob"))
    far = await incoming(bob)
    assert await call.wait_connected(10), (call.end_reason, b2bua.log()[-3000:])
    assert await far.wait_connected(5), far.end_reason
    return call, far


async def test_a_call_through_the_b2bua_holds_resumes_sends_digits_and_is_heard(tmp_path: Path) -> None:
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}") as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            # two dialogs: the B2BUA made its own call to bob
            assert call.call_id != far.call_id
            await asyncio.sleep(1.5)
            await call.hold()
            assert await until(lambda: far.remote_hold), far.audio
            await asyncio.sleep(0.8)
            await call.resume()
            assert await until(lambda: not far.remote_hold), far.audio
            await asyncio.sleep(1.5)
            await call.send_dtmf("15#", duration=0.1)
            got = await digits(bob, 3)
            assert [e.digit for e in got] == ["1", "5", "#"], got
            await far.hangup()  # bob's BYE reaches alice as the B2BUA's
            assert await call.wait_ended(5) and call.end_reason == "BYE received", call.end_reason
            ours, theirs = call.media_report(), far.media_report()
        assert not [e for e in await _events(alice) if isinstance(e, ErrorEvent)]
        assert not [e for e in await _events(bob) if isinstance(e, ErrorEvent)]
    assert ours is not None and theirs is not None
    # bob heard alice all along until the digits (alice kept sending while she held him; her
    # RFC 4733 events replace her audio while they last); alice heard bob before the hold and
    # after the resume (not while he was held: sendonly from alice means bob sends nothing)
    assert tone_share(theirs, 0.3, 3.5, OUR_TONE) >= 0.95
    assert tone_share(ours, 0.3, 1.5, THEIR_TONE) >= 0.95
    assert tone_share(ours, -1.2, None, THEIR_TONE) >= 0.95


def heard_each_other(ours: dict[str, object] | None, theirs: dict[str, object] | None,
                     we_hear: float, they_hear: float) -> None:
    """Both calls' received recordings carry the other's tone all along (≥ 95 % of frames after
    the first 0.3 s)."""
    assert ours is not None and theirs is not None
    assert tone_share(ours, 0.3, None, we_hear) >= 0.95
    assert tone_share(theirs, 0.3, None, they_hear) >= 0.95


def tone_share(report: dict[str, object], start: float, end: float | None, tone: float) -> float:
    """Share of the 20 ms frames of the received recording between ``start`` and ``end`` s
    (negative: from its end) whose dominant frequency is within 25 Hz of ``tone``
    (:func:`peertools.tone_share`: a few silent frames are forgiven)."""
    samples, rate = wav_samples(Path(report["recordings"]["rx"]))  # type: ignore[index]
    span = samples[int(start * rate):None if end is None else int(end * rate)]
    return frame_share(dominant_frequencies(span, rate), tone)


async def until(check: object, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(check())  # type: ignore[operator]


async def test_the_b2buas_keepalive_reinvites_keep_the_call_and_its_audio(tmp_path: Path) -> None:
    """``--keepalive_ans``/``--keepalive_orig``: the B2BUA re-INVITEs each leg every second with
    the SDP that leg last got from it (the same ``o=`` version: no change, RFC 3264 §8); both
    phones answer each with 200 and their own unchanged SDP, and the audio goes on."""
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}",
                         options=("--keepalive_ans=1", "--keepalive_orig=1")) as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            versions = (call.local_sdp.origin.session_version, far.local_sdp.origin.session_version)  # type: ignore[union-attr]
            await asyncio.sleep(4.5)
            for leg in (call, far):
                reinvites = [m for m in leg.exchange if m.direction == "received" and m.summary.startswith("INVITE")]
                assert len(reinvites) >= 3 + (leg is far), [m.summary for m in leg.exchange]
                assert not leg.local_hold and not leg.remote_hold
            # an unchanged offer got an unchanged answer: the same SDP version (RFC 3264 §8).
            # bob's stays; alice's went up once: her first answer (one codec) is not her offer
            assert (call.local_sdp.origin.session_version,  # type: ignore[union-attr]
                    far.local_sdp.origin.session_version) == (versions[0] + 1, versions[1])  # type: ignore[union-attr]
            await call.hangup()
            assert await far.wait_ended(5) and far.end_reason == "BYE received", far.end_reason
            ours, theirs = call.media_report(), far.media_report()
        assert not [e for e in await _events(alice) if isinstance(e, ErrorEvent)]
        assert not [e for e in await _events(bob) if isinstance(e, ErrorEvent)]
    heard_each_other(ours, theirs, THEIR_TONE, OUR_TONE)


async def test_the_b2bua_ends_a_call_whose_credit_ran_out(tmp_path: Path) -> None:
    """``--max_credit_time=2``: after 2 s the B2BUA sends BYE to both legs; both phones end
    the call with "BYE received"."""
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}", options=("--max_credit_time=2",)) as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            assert await call.wait_ended(6) and await far.wait_ended(2)
            assert (call.end_reason, far.end_reason) == ("BYE received", "BYE received")


@pytest.mark.parametrize("dtmf", ["rfc4733", "info"])
async def test_bob_holds_alice_and_digits_pass_the_b2bua(tmp_path: Path, dtmf: str) -> None:
    """The callee holds (its re-INVITE is re-originated by the B2BUA toward the caller, who
    sees the hold, RFC 3264 §8.4) and sends digits as RFC 4733 events or as SIP INFO (the
    B2BUA relays INFO in the dialog)."""
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1, dtmf=dtmf)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}") as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            await far.hold()
            assert await until(lambda: call.remote_hold), call.audio
            assert call.audio is not None and call.audio.direction == "recvonly"
            await far.resume()
            assert await until(lambda: not call.remote_hold), call.audio
            assert call.audio.direction == "sendrecv"
            await asyncio.sleep(0.5)
            await far.send_dtmf("28*", duration=0.1)
            got = await digits(alice, 3)
            assert [(e.digit, e.method) for e in got] == [("2", dtmf), ("8", dtmf), ("*", dtmf)], got
            await call.hangup()
            assert await far.wait_ended(5)


async def test_the_b2bua_filters_the_offer_to_pcma_and_digits_go_as_info(tmp_path: Path) -> None:
    """``--allowed_pts=8``: the B2BUA strips every payload type but PCMA from alice's offer,
    telephone-event too; bob answers PCMA, both hear each other in it, and alice's digits,
    with no RFC 4733 negotiated, go as SIP INFO (RFC 6086) through the B2BUA."""
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}", options=("--allowed_pts=8",)) as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            assert far.remote_offer is not None
            assert far.remote_offer.media[0].formats == ["8"], far.remote_offer.media[0]
            assert call.audio is not None and call.audio.payload_type == 8 and call.audio.telephone_event is None
            await asyncio.sleep(2)
            await call.send_dtmf("7", duration=0.1)
            got = await digits(bob, 1)
            assert [(e.digit, e.method) for e in got] == [("7", "info")], got
            await call.hangup()
            assert await far.wait_ended(5)
            ours, theirs = call.media_report(), far.media_report()
    heard_each_other(ours, theirs, THEIR_TONE, OUR_TONE)


@pytest.mark.parametrize("keepalive", [False, True])
def test_a_call_load_through_the_b2bua_is_counted_on_both_legs_and_heard(tmp_path: Path, keepalive: bool) -> None:
    """``skinnysip load call`` → the B2BUA → ``skinnysip load answer --no-register``: every call
    is two dialogs; the B2BUA's own log is the independent count (as many INVITEs taken from
    the caller as it placed toward the answering side, and as many BYEs), both sides count
    every call successful and hear each other's tone in each. With ``keepalive`` the B2BUA
    also re-INVITEs both legs of each call every second, and every one is answered 200."""
    calls, port = 8, free_port(socket.SOCK_DGRAM)
    answer_rec, call_rec = tmp_path / "answered", tmp_path / "called"
    answer = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}", "--no-register", "-m", str(calls),
         "--duration", "60", "--source", f"tone:{OUR_TONE:g}", "--record", str(answer_rec), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        options = ("--keepalive_ans=1", "--keepalive_orig=1") if keepalive else ()
        with sippy_b2bua(f"127.0.0.1:{port}", options=options) as b2bua:
            caller = subprocess.run(
                [sys.executable, "-m", "skinnysip", "load", "call", f"127.0.0.1:{b2bua.port}", "--to", "bob",
                 # a hold of 2.5 s: the B2BUA's keep-alives go out at 1 s and 2 s, so none crosses the
                 # caller's BYE (a re-INVITE arriving after it is rightly answered 481)
                 "-r", "4", "-l", "4", "-m", str(calls), "--hold", "2.5", "--source", f"tone:{THEIR_TONE:g}",
                 "--record", str(call_rec), "--json"],
                capture_output=True, text=True, timeout=90)
            code, answered, err = finish(answer)
            log = b2bua.log()
    finally:
        if answer.poll() is None:
            answer.kill()
    assert caller.returncode == 0, caller.stderr[-2000:]
    result = json.loads(caller.stdout)
    assert (result["attempted"], result["successful"], result["failed"]) == (calls, calls, 0), result
    assert code == 0, err[-2000:]
    assert (answered["attempted"], answered["successful"]) == (calls, calls), answered
    received = re.findall(r"RECEIVED message from udp:127\.0\.0\.1:(\d+):\n(INVITE|BYE) ", log)
    sent = re.findall(r"SENDING message to udp:127\.0\.0\.1:(\d+):\n(INVITE|BYE) ", log)
    reinvites = calls if keepalive else 0  # at least one a leg in a 2.5 s call
    assert sum(1 for _, m in received if m == "INVITE") == calls, received
    assert [m for p, m in sent if int(p) == port].count("INVITE") >= calls + reinvites, sent
    assert len([m for p, m in sent if int(p) != port and m == "INVITE"]) >= reinvites, sent
    refused = re.search(r"RECEIVED message from [^\n]*\nSIP/2\.0 [3-6]\d\d [^\n]*(\n[^\n]+)*", log)
    assert refused is None, f"a request of the B2BUA was refused:\n{refused.group(0) if refused else ''}"
    assert sum(1 for _, m in received if m == "BYE") == calls  # the caller hung up each call…
    assert [m for p, m in sent if int(p) == port].count("BYE") == calls  # …and the B2BUA ended each other leg
    for folder, tone in ((call_rec, OUR_TONE), (answer_rec, THEIR_TONE)):
        heard = sorted(folder.glob("*-rx.wav"))
        assert len(heard) == calls and all(load_tone_share(path, tone) > 0.8 for path in heard), heard


async def test_a_blind_transfer_through_the_b2bua(tmp_path: Path) -> None:
    """bob REFERs alice to carol (RFC 3515) through the B2BUA, which passes the REFER on as its
    own, hangs up both legs as soon as alice accepts it (202) and refuses her NOTIFY (the dialog
    is gone): alice calls carol all the same (the transferor may leave at once, RFC 5589 §6.1),
    and alice and carol hear each other."""
    carol_tone = 880.0
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path, auto_answer=0.1)) as bob, \
            SIPPhone(account("carol", carol_tone, tmp_path, auto_answer=0.1)) as carol, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}") as b2bua:
            call, far = await call_through(b2bua, alice, bob)
            await far.transfer(f"sip:carol@127.0.0.1:{carol.account.listen_port}")
            assert await call.wait_ended(5) and await far.wait_ended(5)
            referred = await incoming(carol)
            assert await referred.wait_connected(5), referred.end_reason
            [new] = [c for c in alice.calls if c is not call]
            assert await new.wait_connected(5), new.end_reason
            await asyncio.sleep(2)
            await new.hangup()
            assert await referred.wait_ended(5)
            ours, theirs = new.media_report(), referred.media_report()
    heard_each_other(ours, theirs, carol_tone, OUR_TONE)


async def test_cancel_busy_and_message_through_the_b2bua(tmp_path: Path) -> None:
    """alice gives up while bob rings: the B2BUA CANCELs bob's leg (RFC 3261 §9); bob's 486
    reaches alice as the B2BUA's; a MESSAGE, which this B2BUA does not take, is refused 501 and
    alice says so (:class:`PhoneError`)."""
    async with SIPPhone(account("bob", THEIR_TONE, tmp_path)) as bob, \
            SIPPhone(account("alice", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{bob.account.listen_port}") as b2bua:
            call = await alice.call(b2bua.uri("bob"))
            far = await incoming(bob)
            await asyncio.sleep(0.5)
            await call.hangup()
            assert await far.wait_ended(5) and far.end_reason == "cancelled by the caller", far.end_reason
            assert call.end_reason == "cancelled"
            call = await alice.call(b2bua.uri("bob"))
            far = await incoming(bob)
            await far.reject(486)
            assert await call.wait_ended(5) and call.end_reason == "486 Busy Here", call.end_reason
            with pytest.raises(PhoneError, match="501"):
                await alice.message(b2bua.uri("bob"), "hello")


async def test_the_b2bua_logs_in_at_the_lab_and_its_echo_answers(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    """The B2BUA in front of the lab, as a trunk: its route carries the lab user 1001's
    credentials (``;auth=1001:demo1001``), so the lab's proxy challenges its INVITE (407) and it
    answers with its own digest (RFC 3261 §22, RFC 2617); alice, who never registered, dials
    the echo (600) through it and hears her own tone."""
    async with SIPPhone(account("1001", OUR_TONE, tmp_path)) as alice:
        with sippy_b2bua(f"127.0.0.1:{port(lab, 'udp')};auth=1001:demo1001") as b2bua:
            call = await alice.call(b2bua.uri("600"))
            assert await call.wait_connected(10), (call.end_reason, b2bua.log()[-3000:])
            await asyncio.sleep(3)
            await call.hangup()
            log = b2bua.log()
            report = call.media_report()
    assert re.search(r"RECEIVED message from [^\n]*\nSIP/2\.0 407 ", log), log[-3000:]
    assert re.search(r"SENDING message to [^\n]*\nINVITE [^\n]*\n(?:[^\n]+\n)*Proxy-Authorization: Digest ", log)
    assert report is not None and tone_share(report, 0.5, None, OUR_TONE) >= 0.95
