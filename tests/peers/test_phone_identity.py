"""STIR/SHAKEN against real peers (RFC 8224, RFC 8225, RFC 8588): ``secsipidx`` 1.2.0 checks what
we sign and signs what we check; Kamailio 5.6's ``secsipid`` module verifies our phone's
INVITEs (fetching our x5u) and refuses forged ones with 438; Kamailio as authentication
service signs a baresip call that our phone verifies, chain to a CA included. The peers are
described in stir_peer.py."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from baresip_peer import baresip
from stir_peer import (
    CertServer,
    StirCredentials,
    cert_server,
    kamailio_stir,
    secsipid_rc,
    secsipidx_check,
    secsipidx_sign,
    stir_ca,
    stir_credentials,
)
from test_api_sip_http import api  # noqa: F401 - the API server fixture
from test_phone_baresip import share_of

from peertools import require
from skinnysip.phone.api import IncomingCall
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.sip.identity import IdentitySigner, verify_identity

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

CALLER, CALLEE = "12155550100", "12155550111"
CALLER_TONE, CALLEE_TONE = 440.0, 660.0


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> StirCredentials:
    require("secsipidx")
    return stir_ca(tmp_path_factory.mktemp("sti"))


@pytest.fixture(scope="module")
def site(creds: StirCredentials) -> Iterator[CertServer]:
    with cert_server(creds.cert.parent) as server:
        yield server


def signer(creds: StirCredentials, x5u: str) -> IdentitySigner:
    return IdentitySigner.from_pem(creds.key.read_bytes(), x5u)


def test_secsipidx_and_we_verify_each_others_passports(creds: StirCredentials, site: CertServer,
                                                       tmp_path: Path) -> None:
    x5u = site.url("cert.pem")
    ours = signer(creds, x5u).sign(f"+{CALLER}", CALLEE, time.time())
    assert secsipidx_check(ours, creds)[0] == 0 and secsipidx_check(ours, creds)[1].strip() == "ok"
    stranger = stir_credentials(tmp_path / "stranger")
    status, output = secsipidx_check(ours, stranger)
    assert secsipid_rc(status) == -251 and "not-ok" in output  # another key: ECDSA verification failed
    stale = signer(creds, x5u).sign(CALLER, CALLEE, time.time() - 120)
    assert secsipid_rc(secsipidx_check(stale, creds)[0]) == -232  # expired iat, as ours says 403

    theirs = secsipidx_sign(creds, CALLER, CALLEE, x5u, attest="B")
    cert = creds.cert.read_bytes()
    check = verify_identity(theirs, from_uri=f"sip:+{CALLER}@x.test", to_uri=f"tel:{CALLEE}", now=time.time(),
                            certificate=cert, roots=[_ca(creds)])
    assert check.verified and check.chain == "trusted", check
    assert (check.attest, check.orig, check.dest, check.ppt, check.x5u) == ("B", CALLER, (CALLEE,), "shaken", x5u)
    wrong = verify_identity(theirs, from_uri="sip:19995550000@x.test", to_uri=f"sip:{CALLEE}@x.test",
                            now=time.time(), certificate=cert)
    assert wrong.code == 438 and "orig" in wrong.reason  # secsipid does not compare numbers; RFC 8224 §6.2.2 does
    other = verify_identity(theirs, from_uri=f"sip:{CALLER}@x.test", to_uri=f"sip:{CALLEE}@x.test",
                            now=time.time(), certificate=stranger.cert.read_bytes())
    assert other.code == 438 and "signature" in other.reason


def _ca(creds: StirCredentials) -> Any:
    from cryptography import x509

    assert creds.ca is not None
    return x509.load_pem_x509_certificate(creds.ca.read_bytes())


def account(peer: Any, user: str, tone: float, **kw: Any) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{peer.realm}", registrar=peer.registrar, expires=60,
                      source=f"tone:{tone}", **kw)


async def registered(peer: Any, user: str) -> None:
    await asyncio.to_thread(peer.wait_registered, user, 10.0)


async def incoming(phone: SIPPhone, seconds: float = 10.0) -> tuple[Any, list[Any]]:
    """The phone's next IncomingCall (None) and the events before it."""
    seen: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        event = await phone.next_event(left)
        if isinstance(event, IncomingCall):
            return event, seen
        if event is not None:
            seen.append(event)
    return None, seen


@pytest.mark.parametrize("check", ["url", "file"])
async def test_kamailio_verifies_our_signed_call_and_relays_it(creds: StirCredentials, site: CertServer,
                                                              tmp_path: Path, check: str) -> None:
    """alice (our phone, signing with x5u on the certificate site) calls bob (our phone,
    fetching the x5u): Kamailio's check passes (``url``: it fetched the certificate too), the
    INVITE reaches bob with ``X-Identity-Checked: ok``, bob's check passes with the chain to
    the CA, and the call carries audio both ways."""
    x5u = site.url("cert.pem")
    before = len(site.requests)
    with kamailio_stir(creds, x5u, check=check, sign=False) as peer:  # type: ignore[arg-type]
        bob_acc = account(peer, CALLEE, CALLEE_TONE, auto_answer=0.2, identity_fetch=True,
                          identity_ca=str(creds.ca), identity_required=True, record_dir=str(tmp_path))
        alice_acc = account(peer, CALLER, CALLER_TONE, identity_key=str(creds.key), identity_x5u=x5u,
                            record_dir=str(tmp_path))
        async with SIPPhone(bob_acc) as bob, SIPPhone(alice_acc) as alice:
            await registered(peer, CALLEE)
            call = await alice.call(f"sip:{CALLEE}@{peer.realm}")
            event, _ = await incoming(bob)
            assert event is not None
            assert await call.wait_connected(10)
            await asyncio.sleep(2.0)
            await call.hangup()
            assert await event.call.wait_ended(10)
            theirs, ours = event.call.media_report(), call.media_report()
        assert peer.checks() == [1]
        [relayed] = peer.sent("INVITE")
        assert "X-Identity-Checked: ok" in relayed
    identity = event.call.identity
    assert identity.verified and identity.chain == "trusted" and identity.attest == "A", identity
    assert (identity.orig, identity.dest) == (CALLER, (CALLEE,))
    fetched = site.requests[before:]
    assert fetched.count("/cert.pem") == (2 if check == "url" else 1), fetched  # Kamailio's fetch, then bob's
    assert share_of(Path(theirs["recordings"]["rx"]), CALLER_TONE) >= 0.9
    assert share_of(Path(ours["recordings"]["rx"]), CALLEE_TONE) >= 0.9


async def test_kamailio_refuses_a_forged_identity_with_438(creds: StirCredentials, site: CertServer,
                                                           tmp_path: Path) -> None:
    """alice signs with a key that is not the certificate's at x5u: Kamailio answers 438 with
    its libsecsipid code -251 (ECDSA verification failed), the call never reaches bob."""
    x5u = site.url("cert.pem")
    stranger = stir_credentials(tmp_path / "stranger")
    with kamailio_stir(creds, x5u, check="url", sign=False) as peer:
        async with SIPPhone(account(peer, CALLEE, CALLEE_TONE, auto_answer=0.2)) as bob, \
                SIPPhone(account(peer, CALLER, CALLER_TONE, identity_key=str(stranger.key), identity_x5u=x5u)) as alice:
            await registered(peer, CALLEE)
            call = await alice.call(f"sip:{CALLEE}@{peer.realm}")
            assert await call.wait_ended(10)
            event, _ = await incoming(bob, 1.0)
        assert peer.checks() == [-251] and peer.sent("INVITE") == []
    assert call.end_reason == "438 Invalid Identity Header" and event is None
    final = [m.raw for m in call.exchange if m.direction == "received" and m.summary.startswith("438")]
    assert final and "X-Secsipid-Rc: -251" in final[0]


async def test_kamailio_signs_baresips_call_and_our_phone_verifies_it(creds: StirCredentials, site: CertServer,
                                                                     tmp_path: Path) -> None:
    """baresip (12155550100, no Identity of its own) calls our phone through Kamailio, which
    signs as authentication service (attest A, a Date added); our phone requires an identity,
    fetches the x5u, checks the chain to the CA, and answers: the call is verified and heard."""
    x5u = site.url("cert.pem")
    with kamailio_stir(creds, x5u, check="off", sign=True) as peer:
        async with SIPPhone(account(peer, CALLEE, CALLEE_TONE, auto_answer=0.2, identity_fetch=True,
                                    identity_ca=str(creds.ca), identity_required=True,
                                    record_dir=str(tmp_path))) as bob:
            await registered(peer, CALLEE)
            async with baresip(CALLER, "unused", peer.registrar, tone_hz=CALLER_TONE) as caller:
                await asyncio.to_thread(peer.wait_registered, CALLER, 10.0)
                await caller.command("dial", f"sip:{CALLEE}@{peer.realm}")
                event, _ = await incoming(bob)
                assert event is not None, peer.log_text()[-2000:]
                assert await event.call.wait_connected(10)
                await asyncio.sleep(2.0)
                await caller.command("hangup")
                assert await event.call.wait_ended(10)
                report = event.call.media_report()
        assert peer.signs() == [1]
    identity = event.call.identity
    assert identity.verified and identity.chain == "trusted", identity
    assert (identity.attest, identity.orig, identity.dest, identity.x5u) == ("A", CALLER, (CALLEE,), x5u)
    assert event.call.invite.headers.get("Date")  # Kamailio added it with the Identity (RFC 8224 §4)
    assert share_of(Path(report["recordings"]["rx"]), CALLER_TONE) >= 0.9


async def test_the_cli_signs_and_verifies_through_kamailio(creds: StirCredentials, site: CertServer,
                                                           tmp_path: Path) -> None:
    """``skinnysip phone --identity-fetch --identity-required --auto-answer --json`` takes a
    call our signing phone places through Kamailio (which checks it): its incomingCall line
    says verified; an unsigned call to it is refused 428, which its error line says."""
    x5u = site.url("cert.pem")
    with kamailio_stir(creds, x5u, check="url", sign=False) as peer:
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "skinnysip", "phone", f"sip:{CALLEE}@{peer.realm}", "--registrar", peer.registrar,
            "--auto-answer", "0.2", "--duration", "12", "--identity-fetch", "--identity-required",
            "--identity-ca", str(creds.ca), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await registered(peer, CALLEE)
            async with SIPPhone(account(peer, CALLER, CALLER_TONE, identity_key=str(creds.key),
                                        identity_x5u=x5u)) as alice, \
                    SIPPhone(account(peer, "12155550199", CALLER_TONE)) as mallory:
                call = await alice.call(f"sip:{CALLEE}@{peer.realm}")
                assert await call.wait_connected(10)
                await call.hangup()
                unsigned = await mallory.call(f"sip:{CALLEE}@{peer.realm}")
                assert await unsigned.wait_ended(10)
        finally:
            cli.terminate()
            out, err = await asyncio.wait_for(cli.communicate(), 15)
    assert unsigned.end_reason == "428 Use Identity Header"
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    [ringing] = [line for line in lines if line["event"] == "incomingCall"]
    assert ringing["identity"]["verified"] and ringing["identity"]["chain"] == "trusted", ringing
    assert any(line["event"] == "error" and "refused 428" in line["reason"] for line in lines), lines
    assert b"Traceback" not in err


def test_the_api_phone_verifies_and_shows_the_identity(creds: StirCredentials, site: CertServer,
                                                       api: httpx.Client) -> None:  # noqa: F811
    """A phone made over the HTTP API with PEM texts (identityKey/identityX5u to sign,
    identityCertificate to verify) calls through Kamailio to another API phone: the callee's
    call view has the verified identity; the key is never shown back; a bad key is a 400."""
    x5u = site.url("cert.pem")
    made: list[str] = []
    with kamailio_stir(creds, x5u, check="file", sign=False) as peer:
        try:
            callee = api.post("/api/phones", json={
                "aor": f"sip:{CALLEE}@{peer.realm}", "registrar": peer.registrar, "autoAnswer": 200,
                "identityCertificate": creds.cert.read_text(), "identityRequired": True})
            assert callee.status_code == 201, callee.text
            made.append(callee.json()["id"])
            caller = api.post("/api/phones", json={
                "aor": f"sip:{CALLER}@{peer.realm}", "registrar": peer.registrar,
                "identitySigning": {"key": creds.key.read_text(), "x5u": x5u, "attest": "C"}})
            assert caller.status_code == 201, caller.text
            made.append(caller.json()["id"])
            shown = caller.json()["account"]
            assert shown["identitySigning"] == {"x5u": x5u, "attest": "C"}  # the key is never shown
            peer.wait_registered(CALLEE)
            placed = api.post(f"/api/phones/{made[1]}/calls", json={"target": f"sip:{CALLEE}@{peer.realm}"})
            assert placed.status_code == 201, placed.text
            calls: list[dict[str, Any]] = []
            for _ in range(100):
                calls = api.get(f"/api/phones/{made[0]}/calls").json()
                if calls and calls[0]["state"] == "confirmed":
                    break
                time.sleep(0.1)
            assert calls and calls[0]["identity"]["verified"], calls
            assert calls[0]["identity"]["attest"] == "C" and calls[0]["identity"]["orig"] == CALLER
            bad = api.post("/api/phones", json={"aor": f"sip:{CALLER}@{peer.realm}", "identitySigning": {
                "x5u": x5u, "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}})
            assert bad.status_code == 400 and "not a PEM private key" in bad.text, bad.text
            path = api.post("/api/phones", json={"aor": f"sip:{CALLER}@{peer.realm}", "identityCertificate": "/etc/passwd"})
            assert path.status_code == 400  # PEM text only: never a file on the server
        finally:
            for phone in made:
                api.delete(f"/api/phones/{phone}")


async def test_load_calls_signed_for_kamailios_verifier(creds: StirCredentials, site: CertServer,
                                                        tmp_path: Path) -> None:
    """``skinnysip load call --identity-key --identity-x5u`` loads Kamailio's verification
    service: every INVITE is checked (and its certificate fetched) and relayed to our phone,
    which verifies each too; signed with a stranger's key, every call is refused 438 and the
    summary counts them by status."""
    x5u = site.url("cert.pem")
    stranger = stir_credentials(tmp_path / "stranger")

    async def load(key: Path) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "skinnysip", "load", "call", peer.registrar, "--domain", peer.realm,
            "--user", CALLER, "--to", f"sip:{CALLEE}@{peer.realm}", "-r", "5", "-m", "6", "-l", "6", "--hold", "0.5",
            "--identity-key", str(key), "--identity-x5u", x5u, "--attest", "B", "--json", "--quiet",
            "--max-failures", "100%", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert b"Traceback" not in err, err.decode()[-2000:]
        return dict(json.loads(out))

    with kamailio_stir(creds, x5u, check="url", sign=False) as peer:
        async with SIPPhone(account(peer, CALLEE, CALLEE_TONE, auto_answer=0.0, max_calls=20,
                                    identity_certificate=str(creds.cert))) as bob:
            await registered(peer, CALLEE)
            good = await load(creds.key)
            verified = []
            while (event := await bob.next_event(0.2)) is not None:
                if isinstance(event, IncomingCall):
                    verified.append(event.call.identity)
            bad = await load(stranger.key)
        checks = peer.checks()
    assert (good["attempted"], good["successful"], good["failed"]) == (6, 6, 0), good
    assert len(verified) == 6 and all(v.verified and v.attest == "B" for v in verified), verified
    assert (bad["attempted"], bad["successful"], bad["failed"]) == (6, 0, 6), bad
    assert bad["failedByStatus"] == {"438": 6}, bad
    assert checks == [1] * 6 + [-251] * 6, checks


def test_the_invite_probe_signs_for_kamailios_verifier(creds: StirCredentials, site: CertServer, tmp_path: Path,
                                                       api: httpx.Client) -> None:  # noqa: F811
    """``skinnysip sip invite --identity-key --identity-x5u`` and ``POST /api/sip/invite`` with
    ``identitySigning``: Kamailio's verifier passes the signed probe on (to no one: 404 Not
    Found) and refuses the one signed with a stranger's key, 438 — one INVITE each, as a
    security tester probes an SBC's verification service."""
    x5u = site.url("cert.pem")
    stranger = stir_credentials(tmp_path / "stranger")
    with kamailio_stir(creds, x5u, check="url", sign=False) as peer:
        def probe(key: Path) -> dict[str, Any]:
            done = subprocess.run([sys.executable, "-m", "skinnysip", "sip", "invite", peer.registrar,
                                   "--from", f"sip:+{CALLER}@{peer.realm}", "--to", f"sip:{CALLEE}@{peer.realm}",
                                   "--identity-key", str(key), "--identity-x5u", x5u, "--attest", "C", "--json"],
                                  capture_output=True, text=True, timeout=60)
            assert "Traceback" not in done.stderr, done.stderr
            return dict(json.loads(done.stdout))

        good, forged = probe(creds.key), probe(stranger.key)
        body = {"host": "127.0.0.1", "port": peer.udp_port, "from": f"sip:{CALLER}@{peer.realm}",
                "to": f"sip:{CALLEE}@{peer.realm}", "timeout": 5000,
                "identitySigning": {"key": stranger.key.read_text(), "x5u": x5u}}
        over_api = api.post("/api/sip/invite", json=body)
        bad_key = api.post("/api/sip/invite", json={**body, "identitySigning": {
            "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "x5u": x5u}})
        checks = peer.checks()
        received = peer.received("INVITE")
    assert good["statusCode"] == 404 and forged["statusCode"] == 438, (good, forged)
    assert over_api.status_code == 200 and over_api.json()["statusCode"] == 438, over_api.text
    assert bad_key.status_code == 400 and "not a PEM private key" in bad_key.text, bad_key.text
    assert checks == [1, -251, -251], checks
    passport = received[0].split("Identity: ", 1)[1].split(".", 2)[1]
    claims = json.loads(base64.urlsafe_b64decode(passport + "=" * (-len(passport) % 4)))
    assert (claims["attest"], claims["orig"], claims["dest"]) == ("C", {"tn": CALLER}, {"tn": [CALLEE]})
    assert "Date: " in received[0]
