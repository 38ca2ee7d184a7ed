"""The lab on IPv4 and IPv6 at once: our phone registered over IPv6 UDP (``[::1]``) calls our
phone registered over IPv6 TCP while an IPv4 phone is registered beside them; the lab forwards
across transports, record-routing twice (RFC 5658: one Record-Route per side), and audio flows
both ways over IPv6. (The lab is a proxy, not a media relay: between a phone registered over
IPv4 and one over IPv6 the media flows only because our phones answer an offer in its own
family when they have a route there, RFC 6157 §3.2 — a single-stack phone would refuse it.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_lab_sip import DOMAIN, OUR_TONE, registered, settings
from test_phone_baresip import share_of

from skinnysip.lab.runner import Lab
from skinnysip.phone.api import IncomingCall
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

OTHER_TONE = 770.0


async def test_ipv6_phone_calls_ipv4_phone(tmp_path: Path) -> None:
    async with Lab(settings(hosts=("127.0.0.1", "::1"))) as lab:
        assert lab.proxy is not None
        v6 = lab.proxy.listeners[("udp", "::1")]
        tcp6 = lab.proxy.listeners[("tcp", "::1")]
        v4 = lab.proxy.listeners[("udp", "127.0.0.1")]
        caller_account = SIPAccount(aor=f"sip:1001@{DOMAIN}", password="demo1001", registrar=f"[::1]:{v6[1]}",
                                    expires=60, source=f"tone:{OUR_TONE}", record_dir=str(tmp_path / "a"))
        callee_account = SIPAccount(aor=f"sip:1002@{DOMAIN}", password="demo1002", registrar=f"[::1]:{tcp6[1]}",
                                    transport="tcp", expires=60, source=f"tone:{OTHER_TONE}", auto_answer=0.1,
                                    record_dir=str(tmp_path / "b"))
        v4_account = SIPAccount(aor=f"sip:1003@{DOMAIN}", password="demo1003", registrar=f"127.0.0.1:{v4[1]}",
                                expires=60, source="silence")
        async with SIPPhone(caller_account) as caller, SIPPhone(callee_account) as callee, SIPPhone(v4_account):
            for user in ("1001", "1002", "1003"):
                await registered(lab, user)
            bindings = {b["user"]: b for b in lab.proxy.bindings()}
            assert bindings["1001"]["source"].startswith("[::1]:") and bindings["1001"]["transport"] == "udp"
            assert bindings["1002"]["source"].startswith("[::1]:") and bindings["1002"]["transport"] == "tcp"
            assert bindings["1003"]["source"].startswith("127.0.0.1:")
            call = await caller.call("1002")
            assert await call.wait_connected(15), call.end_reason
            event = await callee.next_event(5)
            while event is not None and not isinstance(event, IncomingCall):
                event = await callee.next_event(5)
            assert isinstance(event, IncomingCall)
            answered = event.call
            await asyncio.sleep(3)
            await call.hangup()
            assert await answered.wait_ended(10)
            caller_report, callee_report = call.media_report(), answered.media_report()
            invite = next(m.raw for m in answered.exchange if m.summary.startswith("INVITE"))
    record_routes = [line for line in invite.splitlines() if line.startswith("Record-Route:")]
    assert len(record_routes) == 2, record_routes  # the TCP side (callee's) and the UDP side (caller's)
    assert "[::1]" in record_routes[0] and "transport=tcp" in record_routes[0]
    assert "[::1]" in record_routes[1] and "transport" not in record_routes[1]
    assert caller_report is not None and callee_report is not None
    assert share_of(Path(caller_report["recordings"]["rx"]), OTHER_TONE, skip=0.5) >= 0.85
    assert share_of(Path(callee_report["recordings"]["rx"]), OUR_TONE, skip=0.5) >= 0.85
