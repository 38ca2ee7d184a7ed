"""The phone behind a NAT (RFC 3581): a UDP relay between the phone and Kamailio plays the
NAT. Kamailio sees the relay's address; the phone learns it from ``received``/``rport`` in
the REGISTER's 200, registers that address as its Contact (removing the private one), and a
call from baresip reaches it through the "NAT"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import THEIR_TONE, account, registered

from peertools import UDPRelay
from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


async def test_contact_learned_from_rport_and_called_through_the_nat(pbx: KamailioPeer) -> None:
    nat = UDPRelay(("127.0.0.1", pbx.udp_port))
    nat_port = await nat.start()
    try:
        acc = account(pbx, "alice", auto_answer=0.1)
        acc.registrar = f"127.0.0.1:{nat_port}"
        async with SIPPhone(acc) as phone:
            assert nat.back is not None
            public_port = nat.back.get_extra_info("sockname")[1]
            local_port = phone.endpoint.local_address(phone.flow)[1]  # type: ignore[arg-type]
            contacts = pbx.contacts("alice")
            assert contacts == [f"sip:alice@127.0.0.1:{public_port}"], (contacts, local_port)
            async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
                await registered(pbx, "bob")
                await bob.command("dial", f"sip:alice@{pbx.realm}")
                event = await phone.next_event(10)
                while event is not None and not isinstance(event, IncomingCall):
                    event = await phone.next_event(10)
                assert isinstance(event, IncomingCall)
                assert await event.call.wait_connected(10)
                await bob.wait_event("CALL_ESTABLISHED")
                await bob.command("hangup")
                assert await event.call.wait_ended(10)
                assert event.call.state is CallState.TERMINATED
            assert any(d.startswith(b"INVITE") for d in nat.down)  # the call came through the "NAT"
    finally:
        nat.close()
    await asyncio.sleep(0.3)
    assert pbx.contacts("alice") == []
