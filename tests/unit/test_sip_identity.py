"""STIR/SHAKEN in the SIP core (RFC 8224 Identity, RFC 8225 PASSporT, RFC 8588 SHAKEN): signing,
parsing and every verification outcome with its RFC 8224 §13.2 code; hostile values never
raise. Real interop (secsipidx, Kamailio's secsipid) is in tests/peers/test_phone_identity.py."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.identity import (
    IdentityError,
    IdentitySigner,
    canonical_tn,
    certificate_url,
    decode_passport,
    identity_value,
    parse_identity,
    shaken_claims,
    sign_passport,
    stir_reason,
    uri_tn,
    verify_identity,
)
from skinnysip.sip.message import Request, parse_message
from skinnysip.sip.request import build_response

X5U = "https://cert.example.test/shaken.pem"
NOW = 1_800_000_000.0
FROM = "<sip:+12155550100@pbx.example.test;user=phone>;tag=a1"
TO = "sip:12155550111@pbx.example.test"


def make_cert(key: Any, *, issuer_key: Any = None, issuer: str | None = None, name: str = "sti",
              ca: bool = False, days: tuple[float, float] = (-1, 30), at: float = NOW) -> x509.Certificate:
    """A certificate of ``key``'s public key, signed by ``issuer_key`` (self-signed without),
    valid ``days`` (from, to) around ``at`` (s since the epoch)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or name)])
    start = dt.datetime.fromtimestamp(at, dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start + dt.timedelta(days=days[0])).not_valid_after(start + dt.timedelta(days=days[1])))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


KEY = ec.generate_private_key(ec.SECP256R1())
CERT = make_cert(KEY)


def signed(orig: str = "+1 215 555 0100", dest: str = "12155550111", *, iat: float = NOW,
           key: Any = KEY, ppt: str | None = "shaken", claims: dict[str, Any] | None = None) -> str:
    body = claims or shaken_claims(orig, dest, attest="A", iat=int(iat))
    return identity_value(sign_passport(body, key, X5U, ppt=ppt), X5U, ppt=ppt)


def check(value: str, **kw: Any) -> Any:
    args: dict[str, Any] = {"from_uri": FROM, "to_uri": TO, "now": NOW, "certificate": pem(CERT)}
    args.update(kw)
    return verify_identity(value, **args)


# -- telephone numbers (RFC 8224 §8.3) -------------------------------------------------------
@pytest.mark.parametrize(("text", "tn"), [
    ("+1 (215) 555-0100", "12155550100"), ("12155550100", "12155550100"), ("+1.215.555.0100", "12155550100"),
    ("2155550100;phone-context=+1", "2155550100"), ("alice", None), ("+", None), ("", None), ("1" * 33, None),
    ("١٢٣", None),  # Arabic-Indic digits are not ASCII digits
])
def test_canonical_telephone_numbers(text: str, tn: str | None) -> None:
    assert canonical_tn(text) == tn


@pytest.mark.parametrize(("uri", "tn"), [
    ("tel:+1-215-555-0100", "12155550100"), ("<sip:+12155550100@h;user=phone>;tag=x", "12155550100"),
    ('"Alice" <sips:12155550100@h:5061>', "12155550100"), ("sip:alice@h", None), ("sip:h", None),
    ("mailto:x@y", None), ("garbage", None),
])
def test_the_number_of_a_from_or_to(uri: str, tn: str | None) -> None:
    assert uri_tn(uri) == tn


# -- signing ------------------------------------------------------------------------------------
def test_a_signed_passport_is_canonical_json_with_shakens_claims() -> None:
    value = signed()
    token, _, params = value.partition(";")
    assert params == f"info=<{X5U}>;alg=ES256;ppt=shaken"
    head, payload, signature = token.split(".")
    decode = lambda part: base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))  # noqa: E731
    assert decode(head) == json.dumps({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U},
                                      separators=(",", ":")).encode()  # RFC 8225 §9: sorted, no blanks
    claims = json.loads(decode(payload))
    assert list(claims) == sorted(claims)
    assert claims["orig"] == {"tn": "12155550100"} and claims["dest"] == {"tn": ["12155550111"]}
    assert claims["attest"] == "A" and claims["iat"] == int(NOW) and len(claims["origid"]) == 36
    assert len(decode(signature)) == 64  # R‖S, RFC 7518 §3.4
    assert certificate_url(value) == X5U


def test_a_party_that_is_no_number_is_a_uri_claim() -> None:
    claims = shaken_claims("sip:alice@example.test", ["12155550111", "sip:bob@example.test"], attest="C", iat=1,
                           origid="o")
    assert claims["orig"] == {"uri": "sip:alice@example.test"}
    assert claims["dest"] == {"tn": ["12155550111"], "uri": ["sip:bob@example.test"]}


def test_signing_refuses_what_es256_cannot_use() -> None:
    with pytest.raises(IdentityError):
        shaken_claims("1", "2", attest="D", iat=1)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(IdentityError) as refused:
        sign_passport({}, rsa_key, X5U)
    assert refused.value.code == 437
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(IdentityError, match="P-256"):
        IdentitySigner.from_pem(p384, X5U)
    for url in ("ftp://x/", "http://x/<y>", 'https://x/"', "https://x/ y"):  # it goes inside info=<…>
        with pytest.raises(IdentityError, match="http"):
            IdentitySigner.from_pem(b"", url)
    with pytest.raises(IdentityError, match="PEM"):
        IdentitySigner.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", X5U)


# -- the header field (RFC 8224 §4.1) --------------------------------------------------------------
def test_identity_parameters_quoted_or_not() -> None:
    header = parse_identity('abc.def.ghi ; info = <https://x.test/c.pem> ;alg=ES256;ppt="shaken";x=1')
    assert (header.token, header.info, header.alg, header.ppt) == ("abc.def.ghi", "https://x.test/c.pem", "ES256",
                                                                   "shaken")
    assert ("x", "1") in header.params
    assert parse_identity("abc.def.ghi").info is None


@pytest.mark.parametrize("value", ["", ";info=<x>", "a b c;info=<x>", "abc;info=https://x/", "abc;;", "abc;info=<>",
                                   "x" * 9000])
def test_malformed_identity_fields_are_refused(value: str) -> None:
    with pytest.raises(IdentityError):
        parse_identity(value)


# -- verification (RFC 8224 §6.2) ----------------------------------------------------------------
def test_a_good_identity_verifies_and_says_what_it_claims() -> None:
    result = check(signed())
    assert result.verified and result.code is None and result.reason == "verified"
    assert (result.attest, result.orig, result.dest, result.ppt, result.x5u) == (
        "A", "12155550100", ("12155550111",), "shaken", X5U)
    assert result.iat == int(NOW) and result.chain == "not checked"
    assert result.summary()["dest"] == ["12155550111"]


def test_the_numbers_must_be_the_requests() -> None:
    assert check(signed(), from_uri="<sip:+12155550101@h>").code == 438
    assert "orig" in check(signed(), from_uri="<sip:+12155550101@h>").reason
    assert "dest" in check(signed(), to_uri="tel:+12155550112").reason
    assert check(signed(), to_uri="tel:+1-215-555-0111").verified  # visual separators do not matter


def test_uri_claims_are_compared_as_uris() -> None:
    """A party that is no number is a ``uri`` claim (RFC 8225 §5.2.1), compared without
    parameters — not as a substring."""
    claims = shaken_claims("sip:alice@example.test", "sip:bob@example.test", attest="C", iat=int(NOW))
    value = signed(claims=claims)
    assert check(value, from_uri='"A" <sip:alice@example.test;transport=tcp>;tag=1',
                 to_uri="<sip:bob@example.test>").verified
    assert check(value, from_uri="sip:alice@example.test.evil", to_uri="sip:bob@example.test").code == 438
    assert check(value, from_uri="sip:alice@example.test", to_uri="sip:bob@example.testing").code == 438


def test_a_changed_claim_breaks_the_signature() -> None:
    token, _, params = signed().partition(";")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["attest"] = "C"  # still valid JSON, still SHAKEN: only the signature can tell
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    result = check(f"{head}.{forged}.{sig};{params}")
    assert not result.verified and result.code == 438 and "signature" in result.reason
    assert result.attest == "C"  # what it claimed is still shown


def test_another_key_or_a_dead_certificate() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert check(signed(key=other)).code == 438
    assert check(signed(), certificate=pem(make_cert(KEY, days=(-30, -1)))).code == 437  # expired
    assert check(signed(), certificate=pem(make_cert(KEY, days=(1, 30)))).code == 437  # not yet valid
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "P-256" in check(signed(), certificate=pem(make_cert(rsa_key))).reason
    assert check(signed(), certificate=b"not a certificate").code == 437
    assert check(signed(), certificate=b"x" * 70000).code == 437
    assert check(signed(), certificate=CERT.public_bytes(serialization.Encoding.DER)).verified  # pkix-cert


def test_no_certificate_is_bad_identity_info() -> None:
    result = check(signed(), certificate=None, unavailable="fetching is off")
    assert (result.verified, result.code, result.reason) == (False, 436, "fetching is off")
    assert result.attest == "A"  # the claims are still read


def test_freshness_of_iat_is_stale_date() -> None:
    assert check(signed(iat=NOW - 61)).code == 403
    assert check(signed(iat=NOW + 61)).code == 403
    assert check(signed(iat=NOW - 59)).verified
    assert check(signed(iat=NOW - 100), freshness=120).verified


def test_chains_to_a_trust_anchor_through_an_intermediate() -> None:
    root_key, mid_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, name="root", ca=True)
    mid = make_cert(mid_key, issuer_key=root_key, issuer="root", name="mid", ca=True)
    leaf = make_cert(KEY, issuer_key=mid_key, issuer="mid", name="leaf")
    assert check(signed(), certificate=pem(leaf, mid), roots=[root]).chain == "trusted"
    alone = check(signed(), certificate=pem(leaf), roots=[root])
    assert alone.code == 437 and "chain" in alone.reason
    stranger = make_cert(ec.generate_private_key(ec.SECP256R1()), name="root", ca=True)
    assert check(signed(), certificate=pem(leaf, mid), roots=[stranger]).code == 437
    assert check(signed(), certificate=pem(leaf, mid), roots=None).chain == "not checked"


def test_what_shaken_requires() -> None:
    assert check(signed(claims={"dest": {"tn": ["12155550111"]}, "iat": int(NOW), "orig": {"tn": "12155550100"}})
                 ).code == 438  # no attest
    no_origid = shaken_claims("12155550100", "12155550111", attest="B", iat=int(NOW))
    del no_origid["origid"]
    assert "origid" in check(signed(claims=no_origid)).reason
    value = signed()
    assert check(value.replace("ppt=shaken", "ppt=div")).code == 438  # field and PASSporT disagree
    assert check(value.replace("alg=ES256", "alg=RS256")).code == 437


def test_a_compact_form_is_rebuilt_from_the_request() -> None:
    """RFC 8224 §7: the payload is left out; the verifier rebuilds it from From, To and Date."""
    claims = {"dest": {"tn": ["12155550111"]}, "iat": int(NOW), "orig": {"tn": "12155550100"}}
    head, _, sig = sign_passport(claims, KEY, X5U, ppt=None).split(".")
    compact = identity_value(f"{head}..{sig}", X5U, ppt=None)
    assert check(compact, date=NOW).verified and check(compact, date=NOW).compact
    assert check(compact, date=NOW + 1).code == 438  # a different Date: other claims, other signature
    assert check(compact).code == 438  # no Date: nothing to rebuild from
    token, _, params = signed().partition(";")
    head, _, sig = token.split(".")
    shaken = check(f"{head}..{sig};{params}", date=NOW)
    assert shaken.code == 438 and "compact" in shaken.reason  # RFC 8588 §6: full form


def test_alg_none_and_other_forms_are_refused() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"passport","x5u":"https://x/"}').rstrip(b"=").decode()
    payload = signed().split(".")[1]
    assert check(f"{header}.{payload}.;info=<https://x/>").code == 437
    assert check("a.b;info=<https://x/>").code == 438
    assert check("!!.b.c;info=<https://x/>").code == 438
    with pytest.raises(IdentityError):
        decode_passport("e30.W10.AA")  # a JSON array is not a claims set


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_text_is_a_result_never_an_exception(text: str) -> None:
    result = verify_identity(text, from_uri=text, to_uri=FROM, now=time.time(), certificate=text.encode())
    assert not result.verified and result.code in (403, 436, 437, 438)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_certificate_bytes_are_a_result(data: bytes) -> None:
    result = check(signed(), certificate=data)
    assert result.code == 437 or result.verified


def test_the_stir_reason_of_a_failure() -> None:
    """RFC 9410 §3: a verifier tells upstream why with ``Reason: STIR;cause=…``."""
    assert stir_reason(check(signed(key=ec.generate_private_key(ec.SECP256R1())))) == \
        'STIR;cause=438;text="Invalid Identity Header"'
    assert stir_reason(check(signed(iat=NOW - 300))) == 'STIR;cause=403;text="Stale Date"'
    assert stir_reason(check(signed(), certificate=None)) == 'STIR;cause=436;text="Bad Identity Info"'
    with pytest.raises(ValueError):
        stir_reason(check(signed()))


def test_rfc_8224_reason_phrases() -> None:
    request = parse_message(b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
                            b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(request, Request)
    phrases = {code: build_response(request, code).reason for code in (428, 436, 437, 438)}
    assert phrases == {428: "Use Identity Header", 436: "Bad Identity Info", 437: "Unsupported Credential",
                       438: "Invalid Identity Header"}
