"""One user on two phones behind Kamailio: a call to it forks to both registrations (RFC 3261
§16.6); the one that answers gets the call, and Kamailio's tm CANCELs the other with
``Reason: SIP;cause=200;text="Call completed elsewhere"`` (RFC 3326), which that phone reports
as "answered elsewhere" — not as a call the user missed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import account
from test_phone_replaces import incoming

from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


async def both_registered(pbx: KamailioPeer, user: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if len(pbx.contacts(user)) >= 2:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user} has {pbx.contacts(user)} registered")


async def test_the_phone_that_lost_the_fork_was_answered_elsewhere(tmp_path: Path) -> None:
    with kamailio(pbx=True) as pbx:
        async with SIPPhone(account(pbx, "bob", "udp")) as desk, SIPPhone(account(pbx, "bob", "tcp")) as mobile, \
                SIPPhone(account(pbx, "alice")) as alice:
            await both_registered(pbx, "bob")
            call = await alice.call("bob")
            ringing_desk, ringing_mobile = await incoming(desk), await incoming(mobile)
            await ringing_mobile.answer()
            assert await call.wait_connected(10), call.end_reason
            assert await ringing_desk.wait_ended(10)
            assert ringing_desk.state is CallState.TERMINATED and not ringing_desk.connected
            assert ringing_desk.end_reason == "answered elsewhere", ringing_desk.end_reason
            assert ringing_desk.remote_reason is not None and "SIP cause 200" in ringing_desk.remote_reason
            await call.hangup()
            assert await ringing_mobile.wait_ended(10) and ringing_mobile.end_reason == "BYE received"
