"""Attended transfer with ``Replaces`` (RFC 3891, RFC 5589 §7) between three of our own phones
through the Kamailio PBX of test_phone_baresip.py, proven by listening.

alice calls bob (660 Hz) and puts him on hold, calls carol (880 Hz), then transfers bob to
carol attended: REFER to bob whose Refer-To carries ``?Replaces=`` naming the alice–carol
dialog; bob's INVITE to carol carries ``Replaces``; carol answers it by herself and ends the
call with alice by BYE; alice ends hers with bob after the NOTIFY 200. bob and carol end up in
one call and hear each other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sip_peers import KamailioPeer
from test_phone_baresip import account, pbx, registered, share_of  # noqa: F401 - pbx: fixture

from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sip_phone import SIPCall, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

BOB_TONE, CAROL_TONE = 660.0, 880.0


async def incoming(phone: SIPPhone, timeout: float = 10.0) -> SIPCall:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (event := await phone.next_event(max(0.01, end - loop.time()))) is not None:
        if isinstance(event, IncomingCall) and isinstance(event.call, SIPCall):
            return event.call
    raise AssertionError("no incoming call")


async def answered(phone: SIPPhone, timeout: float = 10.0) -> SIPCall:
    """The next incoming call of ``phone``, answered and confirmed."""
    call = await incoming(phone, timeout)
    await call.answer()
    assert await call.wait_connected(timeout), (call.end_reason, [(m.direction, m.summary) for m in call.exchange])
    return call


async def test_attended_transfer_replaces_the_call_with_the_target(pbx: KamailioPeer, tmp_path: Path) -> None:  # noqa: F811
    bob_account = account(pbx, "bob", auto_answer=0.1, record_dir=str(tmp_path / "bob"))
    bob_account.source = f"tone:{BOB_TONE}"
    carol_account = account(pbx, "carol", record_dir=str(tmp_path / "carol"))  # answers by hand
    carol_account.source = f"tone:{CAROL_TONE}"
    async with SIPPhone(account(pbx, "alice")) as alice, SIPPhone(bob_account) as bob, \
            SIPPhone(carol_account) as carol:
        await registered(pbx, "bob")
        await registered(pbx, "carol")
        to_bob = await alice.call("bob")
        assert await to_bob.wait_connected(15), to_bob.end_reason
        await to_bob.hold()
        to_carol = await alice.call("carol")
        carol_from_alice = await incoming(carol)
        await carol_from_alice.answer()
        assert await to_carol.wait_connected(15), to_carol.end_reason
        bob_from_alice = next(c for c in bob.calls if isinstance(c, SIPCall))

        await to_bob.transfer("carol", replaces=to_carol)

        assert to_bob.state is CallState.TERMINATED and to_bob.end_reason == "transferred"
        assert await to_carol.wait_ended(5) and to_carol.end_reason == "BYE received"  # carol's BYE
        assert await carol_from_alice.wait_ended(5)
        assert carol_from_alice.end_reason == "replaced (RFC 3891)"
        assert await bob_from_alice.wait_ended(5) and bob_from_alice.end_reason == "BYE received"
        bob_live = [c for c in bob.calls if c.state is CallState.CONFIRMED]
        carol_live = [c for c in carol.calls if c.state is CallState.CONFIRMED]
        assert len(bob_live) == 1 and len(carol_live) == 1 and not alice.calls
        bob_to_carol, carol_from_bob = bob_live[0], carol_live[0]
        assert isinstance(bob_to_carol, SIPCall) and isinstance(carol_from_bob, SIPCall)
        assert carol_from_bob.replaces is carol_from_alice and carol_from_bob.call_id == bob_to_carol.call_id

        # the wire: alice's REFER names the alice-carol dialog in an escaped Replaces
        refer = next(m.raw for m in to_bob.exchange if m.direction == "sent" and m.summary.startswith("REFER"))
        d = to_carol.dialog
        assert d is not None
        assert (f"Refer-To: <sip:carol@{pbx.realm}?Replaces={d.call_id}%3Bto-tag%3D{d.remote_tag}"
                f"%3Bfrom-tag%3D{d.local_tag}>") in refer, refer
        # bob's INVITE carries it unescaped, and Referred-By; carol received it through the PBX
        invite = next(m.raw for m in carol_from_bob.exchange if m.direction == "received"
                      and m.summary.startswith("INVITE"))
        assert f"Replaces: {d.call_id};to-tag={d.remote_tag};from-tag={d.local_tag}" in invite, invite
        assert f"Referred-By: <sip:alice@{pbx.realm}>" in invite

        await asyncio.sleep(2.5)
        await bob_to_carol.hangup()
        assert await carol_from_bob.wait_ended(5)
        bob_rx = Path(bob_to_carol.media_report()["recordings"]["rx"])  # type: ignore[index]
        carol_rx = Path(carol_from_bob.media_report()["recordings"]["rx"])  # type: ignore[index]
    assert share_of(bob_rx, CAROL_TONE) >= 0.9
    assert share_of(carol_rx, BOB_TONE) >= 0.9
