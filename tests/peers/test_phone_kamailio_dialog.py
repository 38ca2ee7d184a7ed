"""Kamailio's dialog module in the call path, as PBX deployments run it: it sends OPTIONS
inside each call's dialog to both ends to see they are still there (a call whose end answers
481 or not at all is torn down), and ends calls that outlive their timeout with a BYE to both
ends. Both are requests our phones never sent a dialog for themselves: the CSeq, route set and
tags are Kamailio's reconstruction (RFC 3261 §12.2.2: an in-dialog request with a lower CSeq
must be refused 500, so a phone that counts wrongly would drop the keep-alive)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import account, registered
from test_phone_replaces import incoming

from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPCall, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


async def call_bob(pbx: KamailioPeer, alice: SIPPhone, bob: SIPPhone) -> tuple[SIPCall, SIPCall]:
    await registered(pbx, "alice")
    await registered(pbx, "bob")
    call = await alice.call("bob")
    far = await incoming(bob)
    assert await call.wait_connected(10), call.end_reason
    assert await far.wait_connected(5), far.end_reason
    return call, far


def options_answers(call: SIPCall) -> list[tuple[str, str]]:
    """For each OPTIONS that came in the call's dialog: what RFC 3261 §12.2.2 wants for it
    (``500`` when its CSeq is lower than the far end's last request's, else ``200``) and the
    status we answered."""
    out: list[tuple[str, str]] = []
    remote_cseq: int | None = None
    for i, message in enumerate(call.exchange):
        if message.direction != "received" or message.raw.startswith("SIP/") or message.summary.startswith("ACK"):
            continue
        found = re.search(r"^CSeq:\s*(\d+)", message.raw, re.M | re.I)
        assert found is not None, message.raw
        cseq = int(found.group(1))
        if message.summary.startswith("OPTIONS"):
            wanted = "500" if remote_cseq is not None and cseq < remote_cseq else "200"
            answer = next((m.summary for m in call.exchange[i + 1:] if m.direction == "sent"), "")
            out.append((wanted, answer[:3]))
        if remote_cseq is None or cseq > remote_cseq:
            remote_cseq = cseq
    return out


async def test_kamailios_dialog_keepalives_are_answered_and_the_call_stays(tmp_path: Path) -> None:
    """Kamailio's shortest keep-alive interval is 30 s (``ka_interval``), so this call lasts
    ~31–40 s. Each end gets OPTIONS in its dialog. Kamailio 5.6 sends the callee's with a CSeq
    below the caller's INVITE (1 after the INVITE's 2, the authenticated retry): RFC 3261
    §12.2.2 says refuse it 500, which we do; the caller's, with no request from the callee yet,
    gets 200. Kamailio takes only 408 and 481 as "gone", so the call stays up."""
    with kamailio(pbx=True, dialog=(30, 120)) as pbx:
        async with SIPPhone(account(pbx, "alice")) as alice, SIPPhone(account(pbx, "bob", auto_answer=0.1)) as bob:
            call, far = await call_bob(pbx, alice, bob)
            for _ in range(45 * 4):
                if all(options_answers(leg) and options_answers(leg)[-1][1] for leg in (call, far)):
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(1)
            for leg in (call, far):
                answers = options_answers(leg)
                assert answers and all(wanted == got for wanted, got in answers), \
                    (answers, [m.summary for m in leg.exchange])
                assert leg.state is CallState.CONFIRMED
            await call.hangup()
            assert await far.wait_ended(5) and far.end_reason == "BYE received"


async def test_kamailio_ends_a_call_that_outlived_its_dialog_timeout(tmp_path: Path) -> None:
    """``default_timeout`` 3 s with ``send_bye``: Kamailio's BYE reaches both ends, which
    take it (200) and end the call."""
    with kamailio(pbx=True, dialog=(30, 3)) as pbx:
        async with SIPPhone(account(pbx, "alice")) as alice, SIPPhone(account(pbx, "bob", auto_answer=0.1)) as bob:
            call, far = await call_bob(pbx, alice, bob)
            # (the second BYE may trail the first on a loaded machine: both get the same deadline)
            assert await call.wait_ended(8) and await far.wait_ended(8), (call.end_reason, far.end_reason)
            assert (call.end_reason, far.end_reason) == ("BYE received", "BYE received")
            for leg in (call, far):
                bye = [i for i, m in enumerate(leg.exchange) if m.direction == "received" and m.summary.startswith("BYE")]
                assert bye and leg.exchange[bye[0] + 1].summary == "200 OK", [m.summary for m in leg.exchange]
