"""Digest credentials reused within a Call-ID (RFC 3261 §22.3) against Kamailio's auth
module in its nonce modes: a phone's refresh and unregister carry the credentials of the
challenge it answered (``nc`` counting on, RFC 7616 §3.4) and draw no new 401; a server that
refuses a nonce twice (``one_time_nonce``) gets the challenge answered once more; a server's
``Authentication-Info`` (``nextnonce``, ``rspauth``, RFC 2617 §3.2.3) is taken in and its
``rspauth`` checked; a call's in-dialog requests carry the INVITE's Proxy-Authorization."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sip_peers import KamailioPeer, kamailio
from test_api_phone_http import alice, uvicorn_server
from test_lab_sip import DOMAIN as LAB_DOMAIN
from test_lab_sip import port as lab_port
from test_lab_sip import settings as lab_settings
from test_phone_baresip import registered

from peertools import distinct
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import ErrorEvent, RegistrationState
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.sip.auth import DigestCredentials, parse_authentication_info

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CLI = [sys.executable, "-m", "skinnysip"]


def _account(pbx: KamailioPeer, user: str = "alice", **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{pbx.realm}", password=pbx.users[user], registrar=f"127.0.0.1:{pbx.udp_port}",
                      expires=600, **kw)  # type: ignore[arg-type]


def _sent(trace: list[Any], method: str) -> list[Any]:
    return distinct([m for m in trace if m.direction == "sent" and m.summary.startswith(method + " ")])


def _received(trace: list[Any], code: str) -> list[Any]:
    return distinct([m for m in trace if m.direction == "received" and m.summary.startswith(code)])


def _auth_json(pbx: KamailioPeer, *flags: str) -> dict[str, Any]:
    """``skinnysip sip auth`` as alice with ``flags`` and ``--json``: the result (exit 0)."""
    run = subprocess.run([*CLI, "sip", "auth", f"127.0.0.1:{pbx.udp_port}", "-u", "alice", "--domain", pbx.realm,
                          *flags, "--json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SKINNYSIP_PASSWORD": pbx.users["alice"]})
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def _text(message: Any) -> str:
    return message.raw.decode() if isinstance(message.raw, bytes) else message.raw


def _credentials(message: Any, name: str = "Authorization") -> DigestCredentials | None:
    m = re.search(rf"^{name}: *(.*?)\r?$", _text(message), re.M | re.I)
    return DigestCredentials.parse(m.group(1)) if m else None


@pytest.mark.parametrize("mode", ["nonce_expire", "nonce_count"])
async def test_refresh_and_unregister_reuse_the_answered_challenge(mode: str) -> None:
    """Kamailio accepts a nonce again until it expires (``nonce_expire``), or with ``nonce_count``
    only under a growing ``nc``: the phone's second REGISTER and its unregister carry
    credentials for the first challenge, with nc 2 and 3 under its nonce, and Kamailio answers
    both 200 — one 401 in all (pjsip and libre behave the same way)."""
    params: dict[str, int | str] = {"nonce_count": 1} if mode == "nonce_count" else {}
    with kamailio(pbx=True, auth_params=params) as pbx:
        phone = SIPPhone(_account(pbx))
        async with phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert await phone.register()
            assert pbx.contacts("alice")
            assert await phone.unregister()
            assert pbx.contacts("alice") == []
        trace = phone.endpoint.trace
        registers = _sent(trace, "REGISTER")
        assert len(registers) == 4, [m.summary for m in trace]
        assert len(_received(trace, "401")) == 1
        assert len(_received(trace, "200")) == 3
        first, *later = (_credentials(m) for m in registers[1:])
        assert _credentials(registers[0]) is None and first is not None
        assert [c.nc if c else None for c in later] == ["00000002", "00000003"]
        assert all(c is not None and c.nonce == first.nonce and c.cnonce != first.cnonce for c in later)


async def test_one_time_nonces_and_authentication_info() -> None:
    """With ``one_time_nonce`` every nonce is good once; with ``add_authinfo_hdr`` each 200 names
    the next one (``nextnonce``) and proves the server knows the password (``rspauth``). The
    phone's refresh uses the nextnonce (nc 1 again) and is answered 200 at once, and it finds
    the rspauth right (``SIPPhone.server_authenticated``, and ``serverAuthenticated`` in the
    API's registration view)."""
    with kamailio(pbx=True, auth_params={"one_time_nonce": 1, "add_authinfo_hdr": 1}) as pbx:
        phone = SIPPhone(_account(pbx))
        async with phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert await phone.register()
            errors = []
            while (event := await phone.next_event(0.1)) is not None:
                if isinstance(event, ErrorEvent):
                    errors.append(event.reason)
        trace = phone.endpoint.trace
        infos = [parse_authentication_info(v) for m in _received(trace, "200")
                 for v in re.findall(r"^Authentication-Info: *(.*?)\r?$", _text(m), re.M | re.I)]
        assert len(infos) >= 2 and all("nextnonce" in i and "rspauth" in i for i in infos), infos
        registers = _sent(trace, "REGISTER")
        refresh = _credentials(registers[2])
        assert refresh is not None and refresh.nonce == infos[0]["nextnonce"] and refresh.nc == "00000001"
        assert len(_received(trace, "401")) == 1, [m.summary for m in trace]
        assert phone.server_authenticated is True
        assert not [e for e in errors if "rspauth" in e], errors
        # the API's phone view says so too
        with uvicorn_server() as (address, _):
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as api:
                created = await api.post("/api/phones", json=alice(pbx))
                assert created.status_code == 201, created.text
                assert created.json()["registration"]["serverAuthenticated"] is True
                assert (await api.delete(f"/api/phones/{created.json()['id']}")).status_code == 200


async def test_a_nonce_refused_the_second_time_is_answered_again() -> None:
    """``one_time_nonce`` without ``Authentication-Info``: the cached nonce is refused (a new
    401, without ``stale``), and the phone answers that challenge as a first one and is
    registered again — the cache costs nothing where a server will not reuse nonces."""
    with kamailio(pbx=True, auth_params={"one_time_nonce": 1}) as pbx:
        phone = SIPPhone(_account(pbx))
        async with phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert await phone.register()
            assert await phone.register()
        trace = phone.endpoint.trace
        # first: 401 + 200; each refresh and the unregister at close: cached nonce → 401 → new
        # nonce → 200
        assert len(_received(trace, "401")) == 4, [m.summary for m in trace]
        assert len(_received(trace, "200")) == 4, [m.summary for m in trace]
        assert len(_sent(trace, "REGISTER")) == 8


async def test_a_calls_in_dialog_requests_carry_the_invites_credentials() -> None:
    """Kamailio as PBX asks the caller to authenticate its INVITE (407). Once answered, the
    call's re-INVITE (hold) and BYE carry Proxy-Authorization for the same realm and nonce,
    nc counting on (RFC 3261 §22.3: every later request with that Call-ID), and the ACK for the 2xx
    carries the INVITE's own (§13.2.2.4)."""
    with kamailio(pbx=True) as pbx:
        async with SIPPhone(_account(pbx, "bob", auto_answer=0.1)), SIPPhone(_account(pbx)) as alice:
            await registered(pbx, "bob")
            call = await alice.call("bob")
            assert await call.wait_connected(10), call.end_reason
            await call.hold()
            await call.hangup()
            assert await call.wait_ended(5)
        trace = alice.endpoint.trace
        invites = _sent(trace, "INVITE")
        assert len(_received(trace, "407")) == 1, [m.summary for m in trace]
        answered = _credentials(invites[1], "Proxy-Authorization")
        reinvite = _credentials(invites[-1], "Proxy-Authorization")
        bye = _credentials(_sent(trace, "BYE")[0], "Proxy-Authorization")
        assert answered is not None and reinvite is not None and bye is not None
        assert reinvite.nonce == bye.nonce == answered.nonce
        # Kamailio's nonces are stateless (time and secret): the REGISTER's 401 may have named the
        # same one, and nc counts every request under a nonce (RFC 7616 §3.4), so count from it
        assert answered.nc is not None and reinvite.nc is not None and bye.nc is not None
        assert (int(reinvite.nc, 16), int(bye.nc, 16)) == (int(answered.nc, 16) + 1, int(answered.nc, 16) + 2)
        acks = _sent(trace, "ACK")
        assert any(_credentials(a, "Proxy-Authorization") == answered for a in acks)


@pytest.mark.parametrize(("params", "reuse", "replay", "proved"), [
    ({}, "accepted", "accepted", None),
    ({"nonce_count": 1}, "accepted", "challenged", None),
    ({"one_time_nonce": 1}, "challenged", "challenged", None),
    ({"one_time_nonce": 1, "add_authinfo_hdr": 1}, "accepted", "challenged", True),
])
def test_the_auth_probe_reports_how_a_server_takes_reused_and_replayed_credentials(
        params: dict[str, int | str], reuse: str, replay: str, proved: bool | None) -> None:
    """``skinnysip sip auth --digest-checks`` after the login: the nonce again under nc 2, then
    the login's Authorization replayed. Kamailio's auth module by default takes both (its
    nonces are good until they expire: a captured REGISTER can be replayed for a minute);
    with ``nonce_count`` it takes the reuse and challenges the replay; with ``one_time_nonce``
    it challenges both — unless its Authentication-Info names the next nonce, which the reuse
    then takes, and whose rspauth proves that it knows the password."""
    with kamailio(auth_params=params) as pbx:
        result = _auth_json(pbx, "--digest-checks")
    assert result["authenticated"] is True and result["unregistered"] is True
    assert (result["nonceReuse"], result["replay"], result["serverAuthenticated"]) == (reuse, replay, proved), result


async def test_the_auth_probe_against_the_lab_through_the_api() -> None:
    """The lab's registrar takes a nonce again under a growing nc, answers a replay with a
    stale challenge and proves the password in Authentication-Info, and it answers an unknown
    user as it answers a wrong password (401 again); ``POST /api/sip/digest-auth`` with
    ``digestChecks`` and ``enumerationCheck`` says so."""
    async with Lab(lab_settings()) as lab:
        with uvicorn_server() as (address, _):
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as api:
                answer = await api.post("/api/sip/digest-auth", json={
                    "host": "127.0.0.1", "port": lab_port(lab, "udp"), "domain": LAB_DOMAIN, "username": "1001",
                    "password": "demo1001", "digestChecks": True, "enumerationCheck": True})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["authenticated"] is True and result["unregistered"] is True, result
    assert (result["nonceReuse"], result["replay"], result["serverAuthenticated"]) == (
        "accepted", "challenged (stale)", True), result
    assert result["userEnumeration"] is False and result["unknownUserStatus"] == result["wrongPasswordStatus"] == 401


@pytest.mark.parametrize("proxy_realm", [False, True])
async def test_the_proxy_realm_is_reused_across_calls_and_messages(proxy_realm: bool) -> None:
    """Kamailio as PBX proxy-authenticates every INVITE and MESSAGE (407). By default each new
    dialog starts without credentials (RFC 3261 §22.3: not cached across dialogs), so a second
    call and a MESSAGE each draw their own 407. With ``proxy_realm`` naming the PBX's realm
    (§22.3's one exception: the UA's own proxy) only the first request is challenged: the
    second call and the MESSAGE carry Proxy-Authorization at once, nc counting on, and Kamailio
    takes it."""
    with kamailio(pbx=True) as pbx:
        extra: dict[str, Any] = {"proxy_realm": pbx.realm} if proxy_realm else {}
        async with SIPPhone(_account(pbx, "bob", auto_answer=0.1)) as bob, \
                SIPPhone(_account(pbx, **extra)) as alice:
            await registered(pbx, "bob")
            for _ in range(2):
                call = await alice.call("bob")
                assert await call.wait_connected(10), call.end_reason
                await call.hangup()
                assert await call.wait_ended(5)
            await alice.message("bob", "hello")
            for _ in range(50):
                if any(m.direction == "received" and m.summary.startswith("MESSAGE") for m in bob.endpoint.trace):
                    break
                await asyncio.sleep(0.1)
        trace = alice.endpoint.trace
        challenged = _received(trace, "407")
        assert len(challenged) == (1 if proxy_realm else 3), [m.summary for m in trace]
        invites = [_credentials(m, "Proxy-Authorization") for m in _sent(trace, "INVITE")]
        message = _credentials(_sent(trace, "MESSAGE")[-1], "Proxy-Authorization")
        if proxy_realm:
            first = invites[1]
            assert first is not None and invites[2] is not None and message is not None
            assert invites[2].nonce == message.nonce == first.nonce
            assert int(message.nc or "0", 16) > int(invites[2].nc or "0", 16) > int(first.nc or "0", 16)
        else:
            assert invites[0] is None and invites[2] is None


@pytest.mark.parametrize("leaks", [False, True])
def test_the_auth_probe_tells_whether_users_can_be_enumerated(leaks: bool) -> None:
    """``sip auth --enumeration-check``: a login as a user that cannot exist and one as alice
    with a wrong password (both ``Expires: 0``). Kamailio as the tests configure it answers
    both 403 — nothing to learn; set to answer an unknown user 404, it tells users apart, and
    the probe says so. Nothing stays registered."""
    with kamailio(unknown_user_404=leaks) as pbx:
        result = _auth_json(pbx, "--enumeration-check")
        assert pbx.contacts("alice") == [] and result["unregistered"] is True
    assert (result["unknownUserStatus"], result["wrongPasswordStatus"], result["userEnumeration"]) == (
        (404, 403, True) if leaks else (403, 403, False)), result
    nobody = [m for m in result["exchange"] if m["direction"] == "sent" and "skinnysip-nobody-" in m["raw"]]
    assert nobody and all("\r\nExpires: 0\r\n" in m["raw"] for m in nobody)
