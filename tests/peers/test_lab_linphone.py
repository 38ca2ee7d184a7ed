"""linphonec (SHA-256) and baresip (MD5 only) on one lab (nonces live 2 s, so linphonec's
re-used nonce meets stale=true): the lab challenges user 1001 with
SHA-256 and 1002 with MD5 (per-user algorithms: baresip 1.0 fails a registration whose 401
offers SHA-256 at all, in either order beside MD5, so one lab-wide list cannot serve both).
linphonec registers with SHA-256 credentials and calls baresip through the lab — two real
third-party phones, neither of them ours — and each hears the other's tone. linphonec also
transfers (attended) one of our phones to another through the lab."""

from __future__ import annotations

import asyncio
import re

import pytest
from baresip_peer import baresip
from linphone_peer import linphonec
from test_lab_sip import DOMAIN, port, registered, settings
from test_phone_baresip import share_of
from test_phone_replaces import answered

from skinnysip.lab.config import LabUser
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

LINPHONE_TONE, BARESIP_TONE = 660.0, 440.0
SHA256_CREDENTIALS = re.compile(r"(?i)Authorization:\s*Digest[^\r\n]*algorithm=\"?SHA-256")


async def test_linphonec_sha256_calls_baresip_through_the_lab() -> None:
    users = (LabUser("1001", "demo1001", algorithm="SHA-256"), LabUser("1002", "demo1002"))
    async with Lab(settings(algorithm="MD5", users=users, nonce_lifetime=2.0)) as lab, \
            baresip("1002", "demo1002", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE) as callee, \
            linphonec("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", realm=DOMAIN, algorithm="SHA-256",
                      tone_hz=LINPHONE_TONE, auto_answer=False) as caller:
        await caller.wait_registered(15)
        await registered(lab, "1001")
        await registered(lab, "1002")
        await asyncio.sleep(2.5)  # linphonec re-uses its REGISTER's nonce for the INVITE: now stale
        mark = len(caller.lines)
        await caller.command(f"call sip:1002@{DOMAIN}")
        await callee.wait_event("CALL_ESTABLISHED", timeout=20)
        await caller.wait_line(r"^Call (\d+) with sip:1002@\S+ connected", 15, mark)
        await asyncio.sleep(4)
        await caller.command("terminate")
        await callee.wait_event("CALL_CLOSED", timeout=10)
        await asyncio.sleep(0.5)
        sip_log = caller.sip_log()
        baresip_heard = share_of(callee.recordings()["dec"], LINPHONE_TONE, skip=0.5)
        assert caller.recording is not None
        linphone_heard = share_of(caller.recording, BARESIP_TONE, skip=0.5)
        calls = lab.calls()
    registers = sip_log.split("REGISTER sip:")[1:]
    assert any(SHA256_CREDENTIALS.search(m) for m in registers), "linphonec did not answer with SHA-256"
    assert "algorithm=MD5" not in sip_log.replace("algorithm=MD5-", "")
    # its INVITE with the expired nonce got a 407 with stale=true, and the retry went through
    assert re.search(r"Proxy-Authenticate: Digest [^\r\n]*stale=true", sip_log), "no stale challenge seen"
    assert baresip_heard >= 0.85, baresip_heard
    assert linphone_heard >= 0.85, linphone_heard
    call = next(c for c in calls if c["to"].startswith(f"sip:1002@{DOMAIN}"))
    assert call["state"] == "ended", call["state"]


async def test_linphonec_transfers_attended_between_our_phones_through_the_lab() -> None:
    """linphonec (1001) calls our 1002, pauses it, calls our 1003, then ``transfer 1
    --to-call 2``: REFER with Replaces to 1002 through the lab; 1002's INVITE replaces
    linphonec's call with 1003 (RFC 3891), linphonec's two calls end, and 1002 and 1003 are
    in one call with media."""
    async with Lab(settings()) as lab:
        lab_port = port(lab, "udp")

        def member(user: str) -> SIPAccount:
            return SIPAccount(aor=f"sip:{user}@{DOMAIN}", password=f"demo{user}", registrar=f"127.0.0.1:{lab_port}",
                              expires=60, source="tone:440")

        async with linphonec("1001", "demo1001", f"127.0.0.1:{lab_port}", realm=DOMAIN, algorithm="MD5",
                             auto_answer=False) as lin, SIPPhone(member("1002")) as b, SIPPhone(member("1003")) as c:
            await lin.wait_registered(15)
            await registered(lab, "1002")
            await registered(lab, "1003")
            await lin.command(f"call sip:1002@{DOMAIN}")
            first = await answered(b)
            await lin.wait_line(r"Media streams established with sip:1002")
            await lin.command("pause 1")
            await lin.wait_line(r"Call 1 .* is now paused")
            await lin.command(f"call sip:1003@{DOMAIN}")
            consult = await answered(c)
            await lin.wait_line(r"Media streams established with sip:1003")
            await lin.command("transfer 1 --to-call 2")
            await lin.wait_line(r"Call 2 with sip:1003\S* ended", 15)
            assert await first.wait_ended(10) and await consult.wait_ended(10)
            assert consult.end_reason == "replaced (RFC 3891)"
            live = [x for x in b.calls if x.state is CallState.CONFIRMED]
            assert len(live) == 1 and live[0].remote == f"sip:1003@{DOMAIN}", [(x.remote, x.state) for x in b.calls]
            await asyncio.sleep(1)
            assert live[0].media_report()["received"]["packets"] > 20  # type: ignore[index]  # 1003's RTP

