"""The SIP phone's registration against Kamailio: the granted expiry is honoured and refreshed
with no gap in the location table, a refused login is an event with its reason, close
unregisters (RFC 3261 §10)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest
from sip_peers import KamailioPeer, kamailio

from peertools import distinct
from skinnysip.phone.api import RegistrationChanged, RegistrationState
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def short_pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True, max_expires=10) as peer:
        yield peer


def _account(pbx: KamailioPeer, password: str = "wonderland", transport: str = "udp") -> SIPAccount:
    return SIPAccount(aor=f"sip:alice@{pbx.realm}", password=password, registrar=f"127.0.0.1:{pbx.port(transport)}",
                      transport=transport, tls_verify=False, expires=600)  # type: ignore[arg-type]


@pytest.mark.parametrize(("transport", "watch"), [("udp", 17.0), ("tcp", 12.0)])
async def test_short_expiry_is_refreshed_without_a_gap(short_pbx: KamailioPeer, transport: str, watch: float) -> None:
    """Kamailio grants 10 s of the 600 asked; the phone refreshes in time (at half the
    lifetime), so for 17 s (UDP; 12 s over TCP: longer than one granted lifetime, two or three
    refreshes) the binding never leaves the location table; close removes it."""
    async with SIPPhone(_account(short_pbx, transport=transport)) as phone:
        assert phone.registration is RegistrationState.REGISTERED
        assert phone.expires_granted == 10
        started = time.monotonic()
        gaps = 0
        while time.monotonic() - started < watch:
            if not short_pbx.contacts("alice"):
                gaps += 1
            await asyncio.sleep(0.5)
        assert gaps == 0
        registers = [m for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("REGISTER")]
        # the first: REGISTER + authorised REGISTER; each refresh, every 5 s: one REGISTER with the
        # credentials of the first challenge (RFC 3261 §22.3; Kamailio's nonces last 60 s)
        assert len(registers) >= 1 + int(watch // 5)
        assert len(distinct([m for m in phone.endpoint.trace
                             if m.direction == "received" and m.summary.startswith("401")])) == 1
    await asyncio.sleep(0.5)
    assert short_pbx.contacts("alice") == []


async def test_interval_too_brief_is_retried_with_min_expires() -> None:
    """Kamailio set to refuse registrations shorter than 60 s (423 with Min-Expires: 60):
    the phone asking for 20 s registers again for 60 s at once (RFC 3261 §10.2.8), with
    credentials for the challenge it just answered (no second 401), and its next
    registration asks for 60 s straight away instead of drawing another 423."""
    with kamailio(pbx=True, min_expires=60) as pbx:
        account = _account(pbx)
        account.expires = 20
        async with SIPPhone(account) as phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert phone.expires_granted == 60 and pbx.contacts("alice")
            assert await phone.register()
            codes = [m.summary[:3] for m in phone.endpoint.trace if m.direction == "received"]
            expires = [re.search(rb"^Expires: *(\d+)", m.raw, re.M | re.I).group(1).decode()  # type: ignore[union-attr]
                       for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("REGISTER")]
        # Kamailio checks the credentials first: 20 → 401, 20 with credentials → 423, 60 with
        # credentials → 200; then register(): 60 with the same credentials → 200 (a UDP
        # retransmission may repeat an entry). Kamailio's usual `if (!save("location")) sl_reply_error();` also
        # sends a 500 after its 423, to the transaction that is already over: it changes nothing.
        assert codes.count("423") == 1 and codes.count("200") == 2, codes
        after = codes[codes.index("423") + 1:]
        assert "401" not in after[:after.index("200")], codes
        first_long = expires.index("60")
        assert first_long >= 2 and set(expires[:first_long]) == {"20"} and set(expires[first_long:]) == {"60"}, expires


async def test_wrong_password_is_a_failed_registration_with_its_reason(short_pbx: KamailioPeer) -> None:
    phone = SIPPhone(_account(short_pbx, password="not-it"))
    try:
        await phone.start()
        assert phone.registration is RegistrationState.FAILED
        events = []
        while (event := await phone.next_event(0.2)) is not None:
            events.append(event)
        failed = [e for e in events if isinstance(e, RegistrationChanged) and e.state is RegistrationState.FAILED]
        assert failed and failed[0].reason.startswith("403 Forbidden")
    finally:
        await phone.close()
    assert short_pbx.contacts("alice") == []


async def test_unreachable_registrar_is_a_clear_error() -> None:
    import socket

    from peertools import free_port

    port = free_port(socket.SOCK_STREAM)
    phone = SIPPhone(SIPAccount(aor="sip:alice@127.0.0.1", password="x", registrar=f"127.0.0.1:{port}",
                                transport="tcp"))
    from skinnysip.phone.api import PhoneError

    with pytest.raises(PhoneError, match=f"connection refused by 127.0.0.1:{port}/tcp"):
        await phone.start()
    await phone.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_registrar_restart_is_survived(transport: str) -> None:
    """Kamailio keeps its location table in memory: a restart forgets us. The next refresh
    (or the retries after failures, with backoff) registers again, with no user action;
    over TCP on a new connection, the old one having died with the server (RFC 3261 §18.1.1)."""
    with kamailio(pbx=True, max_expires=10) as first:
        ports = (first.udp_port, first.tcp_port, first.tls_port)
        phone = SIPPhone(_account(first, transport=transport))
        await phone.start()
        assert first.contacts("alice")
    try:
        await asyncio.sleep(3)  # down for a while: a refresh may fail meanwhile
        with kamailio(pbx=True, max_expires=10, ports=ports) as second:
            assert second.contacts("alice") == []  # forgotten
            for _ in range(300):
                if second.contacts("alice"):
                    break
                await asyncio.sleep(0.1)
            assert second.contacts("alice"), phone.registration_reason
            # contacts() runs kamcmd and blocks this loop: the 200 that made the binding may
            # still wait unread on the phone's socket
            for _ in range(50):
                if phone.registration is RegistrationState.REGISTERED:
                    break
                await asyncio.sleep(0.1)
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
    finally:
        await phone.close()


async def test_a_lost_tcp_connection_is_replaced_and_its_binding_removed(short_pbx: KamailioPeer) -> None:
    """Our TCP connection to Kamailio dies (closed under the phone): the next registration
    opens a new one (RFC 3261 §18.1.1), registers the new Contact (a new local port) and
    removes the old binding, so the location table holds one contact, the live one."""
    async with SIPPhone(_account(short_pbx, transport="tcp")) as phone:
        assert phone.registration is RegistrationState.REGISTERED
        before = short_pbx.contacts("alice")
        assert len(before) == 1
        assert phone.flow is not None and phone.flow.connection is not None
        await phone.endpoint.transport.connections[phone.flow.connection].close()
        assert not phone.endpoint.transport.is_open(phone.flow)
        assert await phone.register()
        after = short_pbx.contacts("alice")
        assert len(after) == 1 and after != before, (before, after)
        assert phone.endpoint.transport.is_open(phone.flow)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_unregister_removes_the_binding_and_stops_the_refresh(short_pbx: KamailioPeer, transport: str) -> None:
    """``unregister()`` (pjsua's ``ru``): REGISTER Expires 0 for our Contact on the same
    Call-ID, CSeq + 1 (RFC 3261 §10.2.2) → the location table is empty and stays so (no
    refresh comes back: the 10 s granted would bring one within 5 s); ``register()``
    registers again and refreshes again."""
    async with SIPPhone(_account(short_pbx, transport=transport)) as phone:
        assert phone.registration is RegistrationState.REGISTERED and short_pbx.contacts("alice")
        assert await phone.unregister()
        assert phone.registration is RegistrationState.UNREGISTERED
        assert short_pbx.contacts("alice") == []
        registers = [m for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("REGISTER")]
        last = registers[-1].raw.decode()
        assert re.search(r"^Expires: *0\r$", last, re.M | re.I) and "Authorization: Digest" in last
        call_ids = {re.search(r"^Call-ID: *(\S+)", m.raw.decode(), re.M | re.I).group(1)  # type: ignore[union-attr]
                    for m in registers}
        assert len(call_ids) == 1
        await asyncio.sleep(6.5)  # past the refresh due at half the granted 10 s
        assert short_pbx.contacts("alice") == []
        sent = [m for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("REGISTER")]
        assert len(sent) == len(registers)
        assert await phone.register()
        assert phone.registration is RegistrationState.REGISTERED and short_pbx.contacts("alice")
        for _ in range(70):  # and it is refreshed again: a REGISTER more within 5 s or so (each with
            await asyncio.sleep(0.1)  # the credentials cached for the Call-ID: no 401 in between)
            if len([m for m in phone.endpoint.trace if m.direction == "sent"
                    and m.summary.startswith("REGISTER")]) > len(sent) + 1:
                break
        else:
            raise AssertionError("no refresh after register()")
    await asyncio.sleep(0.5)
    assert short_pbx.contacts("alice") == []
