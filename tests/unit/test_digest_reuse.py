"""skinnysip.sip.auth: credentials reused within a Call-ID (RFC 3261 §22.3), the nonce count
under one nonce (RFC 7616 §3.4), ``Authentication-Info`` (RFC 3261 §20.6): ``nextnonce`` and
the server's ``rspauth`` (RFC 2617 §3.2.3). The peers' side is in
``peers/test_phone_credential_reuse.py`` (Kamailio's nonce modes)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from test_lab_presence import account as lab_account
from test_lab_presence import settings as lab_settings
from test_sip_request_dialog_uas import REGISTER, challenge, parse, request

from skinnysip.lab.runner import Lab
from skinnysip.phone.api import RegistrationState
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.sip.auth import (
    ChallengeRetry,
    DigestClient,
    DigestCredentials,
    challenges_from,
    parse_authentication_info,
    response_auth,
    verify_credentials,
)
from skinnysip.sip.message import Request, Response
from skinnysip.sip.request import new_branch, resend_request

PASSWORD = "zanzibar"
VIA = "SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch="


def _via() -> str:
    return VIA + new_branch()


def _ok(request_: Request, *, authentication_info: str | None = None) -> Response:
    text = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {request_.headers.get('Via')}\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=2493k59kd\r\n"
        "From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
        f"Call-ID: {request_.call_id}\r\n"
        f"CSeq: {request_.cseq[0]} {request_.cseq[1]}\r\n"
        + (f"Authentication-Info: {authentication_info}\r\n" if authentication_info is not None else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse(text)
    assert isinstance(message, Response)
    return message


def _credentials(message: Request, name: str = "Authorization") -> DigestCredentials:
    value = message.headers.get(name)
    assert value is not None, message.to_bytes().decode()
    return DigestCredentials.parse(value)


def _edited(code: int = 401, *, old: str, new: str, nonce: str | None = None) -> Response:
    """:func:`challenge` (``code``, ``nonce``) with ``old`` replaced by ``new`` in its text."""
    base = challenge(code) if nonce is None else challenge(code, nonce=nonce)
    edited = parse(base.to_bytes().decode().replace(old, new))
    assert isinstance(edited, Response)
    return edited


def _answered(client: DigestClient, *challenges: Response) -> Request:
    """A REGISTER whose ``challenges`` were each answered in turn and whose 200 was filed:
    the last one sent."""
    rule = ChallengeRetry(client)
    sent = request(REGISTER)
    for each in challenges:
        retried = rule.retry(sent, each, _via())
        assert retried is not None
        sent = retried
    rule.settle(sent, _ok(sent))
    return sent


def test_a_refresh_carries_the_answered_challenge_with_the_next_nc() -> None:
    """After a 401 answered and a 200, the next REGISTER with that Call-ID carries credentials
    before any challenge: the same nonce, nc 2, a new cnonce, a response a registrar accepts
    for the request's own method and URI; the one after that nc 3."""
    client = DigestClient("bob", PASSWORD)
    first = _credentials(_answered(client, challenge()))
    assert first.nc == "00000001"
    previous = request(REGISTER)
    for nc in ("00000002", "00000003"):
        rule = ChallengeRetry(client)
        refresh = rule.preempt(resend_request(previous, _via()))
        credentials = _credentials(refresh)
        assert (credentials.nonce, credentials.nc) == (first.nonce, nc)
        assert credentials.cnonce != first.cnonce and credentials.uri == refresh.uri
        assert verify_credentials(credentials, PASSWORD, "REGISTER")
        assert rule.challenge is not None and rule.attempts == 0
        rule.settle(refresh, _ok(refresh))
        previous = refresh


def test_nothing_is_preempted_for_another_call_id_an_ack_a_cancel_or_a_request_with_credentials() -> None:
    client = DigestClient("bob", PASSWORD)
    authorised = _answered(client, challenge())
    other = request(REGISTER, Call_ID="another-call@998sdasdh09")
    assert "Authorization" not in ChallengeRetry(client).preempt(other).headers
    for method in ("ACK", "CANCEL"):
        text = REGISTER.replace("REGISTER sip:", f"{method} sip:").replace("1826 REGISTER", f"1826 {method}")
        assert "Authorization" not in ChallengeRetry(client).preempt(request(text)).headers
    again = ChallengeRetry(client).preempt(authorised)
    assert len(again.headers.get_all("Authorization")) == 1  # its own, not a second
    assert "Authorization" not in ChallengeRetry(None).preempt(request(REGISTER)).headers
    assert "Authorization" not in ChallengeRetry(DigestClient("bob", PASSWORD)).preempt(request(REGISTER)).headers


def test_a_challenge_to_cached_credentials_is_answered_once_then_refused_and_forgotten() -> None:
    """A server that will not take the cached nonce again challenges without ``stale``: that
    challenge is answered like a first one (once); another is a refusal, and the cache entry
    is dropped, so the next request starts without credentials."""
    client = DigestClient("bob", PASSWORD)
    authorised = _answered(client, challenge())
    rule = ChallengeRetry(client)
    refresh = rule.preempt(resend_request(authorised, _via()))
    retried = rule.retry(refresh, challenge(nonce="second"), _via())
    assert retried is not None and rule.attempts == 1
    assert _credentials(retried).nonce == "second" and len(retried.headers.get_all("Authorization")) == 1
    assert rule.retry(retried, challenge(nonce="third"), _via()) is None and rule.refused == "credentials refused"
    rule.settle(retried, challenge(nonce="third"))
    assert client.cached(authorised.call_id) == []
    assert "Authorization" not in ChallengeRetry(client).preempt(resend_request(authorised, _via())).headers


def test_a_403_drops_the_cached_credentials_and_a_423_keeps_them() -> None:
    client = DigestClient("bob", PASSWORD)
    authorised = _answered(client, challenge())
    rule = ChallengeRetry(client)
    refresh = rule.preempt(resend_request(authorised, _via()))
    brief = parse(_ok(refresh).to_bytes().decode().replace("200 OK", "423 Interval Too Brief"))
    assert isinstance(brief, Response)
    rule.settle(refresh, brief)
    assert [c.nonce for c in client.cached(authorised.call_id)] == [_credentials(authorised).nonce]
    forbidden = parse(_ok(refresh).to_bytes().decode().replace("200 OK", "403 Forbidden"))
    assert isinstance(forbidden, Response)
    rule.settle(refresh, forbidden)
    assert client.cached(authorised.call_id) == []


def test_a_cached_proxy_realm_goes_along_when_only_the_registrar_challenges_again() -> None:
    """Two protection spaces cached (an outbound proxy's 407, the registrar's 401); the next
    request carries both; the registrar's nonce has expired (401, stale): the retry carries
    the new registrar credentials and the proxy's cached ones, so the proxy does not
    challenge again (§22.3)."""
    client = DigestClient("bob", PASSWORD)
    proxy = _edited(407, old='realm="biloxi.example.com"', new='realm="proxy.example"')
    third = _answered(client, proxy, challenge(401))
    rule = ChallengeRetry(client)
    refresh = rule.preempt(resend_request(third, _via()))
    assert _credentials(refresh, "Proxy-Authorization").realm == "proxy.example"
    assert _credentials(refresh).realm == "biloxi.example.com"
    retried = rule.retry(refresh, challenge(401, stale=True, nonce="renewed"), _via())
    assert retried is not None
    assert _credentials(retried).nonce == "renewed"
    assert _credentials(retried, "Proxy-Authorization").realm == "proxy.example"


def test_nextnonce_is_used_by_the_next_request_from_nc_1() -> None:
    client = DigestClient("bob", PASSWORD)
    rule = ChallengeRetry(client)
    retried = rule.retry(request(REGISTER), challenge(), _via())
    assert retried is not None
    rule.settle(retried, _ok(retried, authentication_info='nextnonce="47364c23432d2e131a5fb210812c", qop=auth'))
    refresh = ChallengeRetry(client).preempt(resend_request(retried, _via()))
    credentials = _credentials(refresh)
    assert (credentials.nonce, credentials.nc) == ("47364c23432d2e131a5fb210812c", "00000001")
    assert verify_credentials(credentials, PASSWORD, "REGISTER")


def test_rspauth_proves_the_server_knows_the_password() -> None:
    """RFC 2617 §3.2.3: rspauth is the response with an empty method, A2 = ":" uri. The right
    one → True; one computed with another password → False; none → None."""
    client = DigestClient("bob", PASSWORD)
    rule = ChallengeRetry(client)
    retried = rule.retry(request(REGISTER), challenge(), _via())
    assert retried is not None
    sent = _credentials(retried)
    ha1 = hashlib.md5(f"bob:{sent.realm}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f":{sent.uri}".encode()).hexdigest()
    by_hand = hashlib.md5(f"{ha1}:{sent.nonce}:{sent.nc}:{sent.cnonce}:auth:{ha2}".encode()).hexdigest()
    assert response_auth(sent, PASSWORD) == by_hand
    info = f'nextnonce="{sent.nonce}", qop=auth, rspauth="{by_hand}", cnonce="{sent.cnonce}", nc={sent.nc}'
    rule.settle(retried, _ok(retried, authentication_info=info))
    assert rule.server_authenticated is True
    forged = ChallengeRetry(client)
    again = forged.retry(request(REGISTER), challenge(nonce="n2"), _via())
    assert again is not None
    wrong = response_auth(_credentials(again), "not-the-password")
    forged.settle(again, _ok(again, authentication_info=f'rspauth="{wrong}"'))
    assert forged.server_authenticated is False
    plain = ChallengeRetry(client)
    third = plain.retry(request(REGISTER), challenge(nonce="n3"), _via())
    assert third is not None
    plain.settle(third, _ok(third))
    assert plain.server_authenticated is None


def test_a_sess_algorithm_keeps_its_cnonce_under_one_nonce() -> None:
    """RFC 7616 §3.4.2: with ``-sess`` the cnonce is part of the session key H(A1), so the
    requests under one nonce share it; a new nonce draws a new one."""
    client = DigestClient("bob", PASSWORD)
    retried = _answered(client, _edited(old="algorithm=MD5", new="algorithm=MD5-sess"))
    refresh = ChallengeRetry(client).preempt(resend_request(retried, _via()))
    one, two = _credentials(retried), _credentials(refresh)
    assert one.cnonce == two.cnonce and (one.nc, two.nc) == ("00000001", "00000002")
    assert verify_credentials(two, PASSWORD, "REGISTER")
    other = _answered(client, _edited(old="algorithm=MD5", new="algorithm=MD5-sess", nonce="other"))
    assert _credentials(other).cnonce != one.cnonce


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    client = DigestClient("bob", PASSWORD)
    (one,) = challenges_from(challenge())
    for i in range(300):
        client.remember(f"call-{i}", [one])
    client.remember("call-0", [])  # not added: nothing to keep, and call-0 was dropped long ago
    assert client.cached("call-0") == [] and client.cached("call-299") == [one]
    assert len(client._by_call_id) == DigestClient._MAX_CALL_IDS
    client.forget("call-299")
    assert client.cached("call-299") == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_authentication_info_never_raises(value: str) -> None:
    params = parse_authentication_info(value)
    assert all(name == name.lower() for name in params)


async def test_the_lab_takes_our_cached_credentials_and_refuses_a_replay() -> None:
    """Both roles on loopback: our phone's second REGISTER and its unregister carry the cached
    credentials and the lab's registrar answers 200 at once (nc 2, 3); the nc-2 REGISTER sent
    again as a new transaction is a replay, and the lab answers it with a ``stale=true``
    challenge (RFC 7616 §3.4: nc detects replays). The lab's 200s carry ``Authentication-Info`` with an rspauth
    our phone checks (RFC 2617 §3.2.3)."""
    async with Lab(lab_settings()) as lab:
        phone = SIPPhone(lab_account(lab, "1001"))
        async with phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert await phone.register()
            sent = [m for m in phone.endpoint.trace if m.direction == "sent" and m.summary.startswith("REGISTER")]
            replay = parse(sent[-1].raw.decode())
            assert isinstance(replay, Request) and _credentials(replay).nc == "00000002"
            flow = phone.flow
            assert flow is not None
            again = resend_request(replay, phone.endpoint.via(flow), next_cseq=True)
            again.headers.add("Authorization", replay.headers.get("Authorization") or "")
            outcome = await phone.endpoint.transact(again, flow, timeout=5.0)
            assert outcome.response is not None and outcome.response.status_code == 401
            (stale,) = challenges_from(outcome.response)
            assert stale.stale
            assert await phone.unregister()
        codes = [m.summary[:3] for m in phone.endpoint.trace if m.direction == "received"]
        assert codes.count("401") == 2 and codes.count("200") == 3, codes
        # the lab's 200s carry Authentication-Info: its rspauth proved it knows the password
        assert phone.server_authenticated is True


def test_a_realm_wide_challenge_goes_with_every_call_id_until_refused() -> None:
    """RFC 3261 §22.3: the realm of the UA's own proxy MAY be cached across dialogs
    (``realm_wide``): a challenge of that realm answered under one Call-ID is pre-empted under
    any other, nc counting on; another realm's stays with its Call-ID; a refusal drops it."""
    client = DigestClient("bob", PASSWORD)
    client.realm_wide = frozenset({"biloxi.example.com"})
    proxy = _edited(407, old='realm="biloxi.example.com"', new='realm="other.example"', nonce="proxy-nonce")
    _answered(client, proxy, challenge(401))
    elsewhere = ChallengeRetry(client).preempt(request(REGISTER, Call_ID="a-new-dialog@998sdasdh09"))
    credentials = _credentials(elsewhere)
    assert credentials.realm == "biloxi.example.com" and credentials.nc == "00000002"
    assert verify_credentials(credentials, PASSWORD, "REGISTER")
    assert "Proxy-Authorization" not in elsewhere.headers  # other.example is not realm-wide
    refusal = ChallengeRetry(client)
    refused = refusal.preempt(request(REGISTER, Call_ID="a-third-dialog@998sdasdh09"))
    forbidden = parse(_ok(refused).to_bytes().decode().replace("200 OK", "403 Forbidden"))
    assert isinstance(forbidden, Response)
    refusal.settle(refused, forbidden)
    assert "Authorization" not in ChallengeRetry(client).preempt(request(REGISTER, Call_ID="x@y")).headers


def test_rspauth_with_a_hashed_username_is_computed_with_the_real_one() -> None:
    """RFC 7616 §3.4.4: with ``userhash=true`` the credentials carry H(user:realm), but A1 is
    still computed from the user name, for the response and for the server's rspauth."""
    client = DigestClient("bob", PASSWORD)
    hashed = _edited(old="algorithm=MD5", new="algorithm=MD5, userhash=true")
    rule = ChallengeRetry(client)
    retried = rule.retry(request(REGISTER), hashed, _via())
    assert retried is not None
    sent = _credentials(retried)
    assert sent.userhash and sent.username == hashlib.md5(f"bob:{sent.realm}".encode()).hexdigest()
    right = response_auth(DigestCredentials(**{**sent.__dict__, "username": "bob"}), PASSWORD)
    rule.settle(retried, _ok(retried, authentication_info=f'rspauth="{right}"'))
    assert rule.server_authenticated is True
