"""The lab's registrar, nonce guard and server-side digest check (sans-IO, fake clocks).

Server-side verification is checked against RFC 7616 §3.9.1's published credentials (SHA-256
and MD5, password "Circle of Life", erratum 4495) and against our own client."""

from __future__ import annotations

import pytest

from skinnysip.lab.registrar import NonceGuard, Registrar
from skinnysip.sip.auth import (
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    challenge_value,
    verify_credentials,
)
from skinnysip.sip.message import Headers, Request, SIPParseError
from skinnysip.sip.transaction import Flow

NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(("algorithm", "response"), [
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
])
def test_rfc7616_credentials_verify(algorithm: str, response: str) -> None:
    value = (f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
             f'algorithm={algorithm}, nonce="{NONCE}", nc=00000001, cnonce="{CNONCE}", qop=auth, '
             f'response="{response}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    cred = DigestCredentials.parse(value)
    assert (cred.username, cred.algorithm, cred.qop, cred.nc) == ("Mufasa", algorithm, "auth", "00000001")
    assert verify_credentials(cred, "Circle of Life", "GET")
    assert not verify_credentials(cred, "Circle Of Life", "GET")  # the pre-erratum password
    assert not verify_credentials(cred, "Circle of Life", "POST")


def test_credentials_parse_errors() -> None:
    with pytest.raises(SIPParseError, match="without response"):
        DigestCredentials.parse('Digest username="a", realm="r", nonce="n", uri="sip:x"')
    with pytest.raises(SIPParseError, match="without nc or cnonce"):
        DigestCredentials.parse('Digest username="a", realm="r", nonce="n", uri="sip:x", response="00", qop=auth')
    with pytest.raises(SIPParseError, match="only Digest"):
        DigestCredentials.parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l")


def register(user: str = "1001", *, contact: str | None = "<sip:1001@127.0.0.1:5070>", expires: str | None = None,
             call_id: str = "c1", cseq: int = 1, auth: str | None = None) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
    h.add("From", f"<sip:{user}@lab>;tag=a")
    h.add("To", f"<sip:{user}@lab>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} REGISTER")
    if contact is not None:
        h.add("Contact", contact)
    if expires is not None:
        h.add("Expires", expires)
    if auth is not None:
        h.add("Authorization", auth)
    return Request("REGISTER", "sip:lab", h)


FLOW = Flow("udp", ("127.0.0.1", 5070), local=("127.0.0.1", 5060))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_guard_challenge_answer_and_stale(algorithm: str) -> None:
    guard = NonceGuard("lab", {"1001": "demo1001"}, algorithms=(algorithm,), lifetime=300)
    assert guard.check(register(), 1000.0, proxy=False).reason == "no credentials"
    [(name, value)] = guard.challenge(1000.0, proxy=False)
    assert name == "WWW-Authenticate"
    challenge = DigestChallenge.parse(value)
    assert challenge.algorithm == algorithm and challenge.qop_options == ["auth"] and not challenge.stale
    _, auth = DigestClient("1001", "demo1001").authorization(challenge, "REGISTER", "sip:lab")
    assert guard.check(register(auth=auth), 1010.0, proxy=False).user == "1001"
    late = guard.check(register(auth=auth), 1301.0, proxy=False)
    assert late.user is None and late.stale  # right password, nonce too old: stale=true
    assert DigestChallenge.parse(guard.challenge(1301.0, proxy=True, stale=True)[0][1]).stale
    _, wrong = DigestClient("1001", "nope").authorization(challenge, "REGISTER", "sip:lab")
    refused = guard.check(register(auth=wrong), 1010.0, proxy=False)
    assert refused.user is None and not refused.stale and "wrong password" in refused.reason
    forged = DigestChallenge.parse(challenge_value("lab", "1000.000.deadbeef", algorithm=algorithm))
    _, forged_auth = DigestClient("1001", "demo1001").authorization(forged, "REGISTER", "sip:lab")
    assert guard.check(register(auth=forged_auth), 1010.0, proxy=False).reason == "a nonce we did not issue"
    _, other_uri = DigestClient("1001", "demo1001").authorization(challenge, "REGISTER", "sip:elsewhere")
    assert guard.check(register(auth=other_uri), 1010.0, proxy=False).user is None


def test_guard_takes_a_nonce_again_under_a_growing_nc_only() -> None:
    """RFC 3261 §22.3 reuse, RFC 7616 §3.5 replay: the same nonce with nc 2 and 3 is accepted;
    the nc-2 request replayed, or a count that is not 8 hex digits, gets a stale challenge;
    a new nonce counts from 1 again."""
    guard = NonceGuard("lab", {"1001": "demo1001"}, lifetime=300)
    challenge = DigestChallenge.parse(guard.challenge(1000.0, proxy=False)[0][1])
    client = DigestClient("1001", "demo1001")
    sent = [client.authorization(challenge, "REGISTER", "sip:lab")[1] for _ in range(3)]
    assert [guard.check(register(auth=auth), 1001.0, proxy=False).user for auth in sent] == ["1001"] * 3
    replayed = guard.check(register(auth=sent[1]), 1002.0, proxy=False)
    assert replayed.user is None and replayed.stale and "nc 00000002" in replayed.reason
    odd = sent[2].replace("nc=00000003", "nc=4")
    assert guard.check(register(auth=odd), 1002.0, proxy=False).user is None
    fresh = DigestChallenge.parse(guard.challenge(1003.0, proxy=False)[0][1])
    assert guard.check(register(auth=client.authorization(fresh, "REGISTER", "sip:lab")[1]), 1003.0,
                       proxy=False).user == "1001"


def test_bindings_expiry_multiple_contacts_and_star() -> None:
    reg = Registrar({"1001"}, min_expires=10, max_expires=3600, default_expires=3600)
    out = reg.register("1001", register(contact="<sip:1001@127.0.0.1:5070>;expires=30, <sip:1001@127.0.0.1:5072>",
                                        expires="7200"), FLOW, 0.0)
    assert out.code == 200
    contacts = [v for n, v in out.headers if n == "Contact"]
    assert contacts == ["<sip:1001@127.0.0.1:5070>;expires=30", "<sip:1001@127.0.0.1:5072>;expires=3600"]
    assert len(reg.lookup("1001", 29.0)) == 2
    assert [b.uri for b in reg.lookup("1001", 31.0)] == ["sip:1001@127.0.0.1:5072"]  # the first expired
    assert reg.register("1001", register(expires="5", cseq=2), FLOW, 40.0).code == 423  # below Min-Expires
    assert ("Min-Expires", "10") in reg.register("1001", register(expires="5", cseq=3), FLOW, 40.0).headers
    assert reg.register("1001", register(expires="20", cseq=1), FLOW, 40.0).code == 200  # new contact, new entry
    assert reg.register("1001", register(expires="20", cseq=1), FLOW, 41.0).code == 500  # same Call-ID, old CSeq
    query = reg.register("1001", register(contact=None, cseq=5), FLOW, 42.0)
    assert query.code == 200 and len([n for n, _ in query.headers if n == "Contact"]) == 2
    assert reg.register("1001", register(contact="<sip:1001@127.0.0.1:5070>;expires=0", cseq=6), FLOW, 43.0).code == 200
    assert [b.uri for b in reg.lookup("1001", 43.0)] == ["sip:1001@127.0.0.1:5072"]
    assert reg.register("1001", register(contact="*", cseq=7), FLOW, 44.0).code == 400  # * needs Expires: 0
    assert reg.register("1001", register(contact="*", expires="0", cseq=8), FLOW, 44.0).code == 200
    assert reg.lookup("1001", 44.0) == []


def test_guard_offers_two_algorithms_strongest_first() -> None:
    guard = NonceGuard("lab", {"1001": "demo1001"}, algorithms=("SHA-256", "MD5"))
    offered = [DigestChallenge.parse(v) for _, v in guard.challenge(1000.0, proxy=True)]
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"] and offered[0].nonce == offered[1].nonce
    for challenge in offered:
        _, auth = DigestClient("1001", "demo1001").authorization(challenge, "REGISTER", "sip:lab")
        assert guard.check(register(auth=auth), 1001.0, proxy=False).user == "1001"


@pytest.mark.parametrize("bad", ["²", "٣", "9" * 5000, "-1"])
def test_bad_expires_is_400_not_a_crash(bad: str) -> None:
    """Expires and the Contact expires parameter are ASCII ``1*DIGIT`` (RFC 3261 §20.19):
    a Unicode digit or a number beyond Python's int-conversion limit is the client's fault (400)."""
    reg = Registrar({"1001"})
    assert reg.register("1001", register(expires=bad), FLOW, 0.0).code == 400
    assert reg.register("1001", register(contact=f"<sip:1001@127.0.0.1:5070>;expires={bad}", cseq=2),
                        FLOW, 0.0).code == 400
