"""skinnysip.sip.auth: Digest client against published vectors (RFC 2617, RFC 7616, RFC 2069).

Vector sources: RFC 2617 §3.5 (password "Circle Of Life"), RFC 7616 §3.9.1 (password
"Circle of Life" with a lower-case "of", RFC 7616 erratum 4495), RFC 2069 §2.4 (password
"CircleOfLife", no qop). The -sess values for the RFC 7616 inputs agree with an
independent published implementation; SHA-512-256 and auth-int are checked against the
RFC 7616 §3.4 formulas written out step by step with hashlib.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.auth import (
    DigestChallenge,
    DigestClient,
    challenges_from,
    choose_challenge,
    digest_response,
)
from skinnysip.sip.message import Headers, Response, SIPParseError, parse_message

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def _params(value: str) -> dict[str, str]:
    """Re-parse an Authorization value with the challenge parser (same auth-param grammar)."""
    return DigestChallenge.parse(value).params


def test_rfc2617_section_3_5_vector() -> None:
    assert digest_response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth") == (
        "6629fae49393a05397450978507c4ef1"
    )
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    name, value = client.authorization(DigestChallenge.parse(RFC2617_CHALLENGE), "GET", "/dir/index.html")
    assert name == "Authorization"
    p = _params(value)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert (p["username"], p["uri"], p["qop"], p["nc"], p["cnonce"]) == (
        "Mufasa", "/dir/index.html", "auth", "00000001", "0a4f113b")
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert "algorithm" not in p  # the challenge named none, so none is echoed


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5-sess", "e783283f46242139c486a698fec7211d"),
        ("SHA-256-sess", "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    challenge = DigestChallenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    name, value = client.authorization(challenge, "GET", "/dir/index.html")
    p = _params(value)
    assert name == "Authorization"
    assert p["response"] == expected
    assert p["algorithm"] == algorithm and p["opaque"] == RFC7616_OPAQUE and p["nc"] == "00000001"


def test_rfc2069_no_qop_vector() -> None:
    client = DigestClient("Mufasa", "CircleOfLife")
    challenge = DigestChallenge.parse(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    _, value = client.authorization(challenge, "GET", "/dir/index.html")
    p = _params(value)
    assert p["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in p and "nc" not in p and "cnonce" not in p


def _h(name: str, data: str | bytes) -> str:
    return hashlib.new(name, data.encode() if isinstance(data, str) else data).hexdigest()


def test_sha512_256_and_auth_int_follow_rfc7616_formulas() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    ha1 = _h("sha512_256", "bob:biloxi.com:zanzibar")
    ha2 = _h("sha512_256", "INVITE:sips:bob@biloxi.com:" + _h("sha512_256", body))
    expected = _h("sha512_256", f"{ha1}:n0nce:00000001:c1:auth-int:{ha2}")
    assert digest_response("SHA-512-256", "bob", "biloxi.com", "zanzibar", "INVITE", "sips:bob@biloxi.com",
                           "n0nce", "00000001", "c1", "auth-int", body) == expected
    sess_ha1 = _h("sha512_256", f"{ha1}:n0nce:c1")
    ha2_auth = _h("sha512_256", "INVITE:sips:bob@biloxi.com")
    assert digest_response("SHA-512-256-sess", "bob", "biloxi.com", "zanzibar", "INVITE", "sips:bob@biloxi.com",
                           "n0nce", "00000001", "c1", "auth") == _h(
        "sha512_256", f"{sess_ha1}:n0nce:00000001:c1:auth:{ha2_auth}")


def test_auth_int_is_used_when_it_is_the_only_qop_and_hashes_the_body() -> None:
    challenge = DigestChallenge.parse('Digest realm="r", nonce="n", qop="auth-int"')
    client = DigestClient("u", "p", cnonce_factory=lambda: "c")
    _, with_body = client.authorization(challenge, "INVITE", "sip:x@y", body=b"abc")
    p = _params(with_body)
    assert p["qop"] == "auth-int"
    assert p["response"] == digest_response("MD5", "u", "r", "p", "INVITE", "sip:x@y", "n", "00000001", "c",
                                            "auth-int", b"abc")
    assert p["response"] != digest_response("MD5", "u", "r", "p", "INVITE", "sip:x@y", "n", "00000001", "c",
                                            "auth-int", b"")


def test_explicit_qop_and_refusals() -> None:
    both = DigestChallenge.parse('Digest realm="r", nonce="n", qop="auth,auth-int"')
    client = DigestClient("u", "p")
    assert _params(client.authorization(both, "REGISTER", "sip:r", qop="auth-int")[1])["qop"] == "auth-int"
    with pytest.raises(ValueError, match="not offered"):
        client.authorization(DigestChallenge.parse('Digest realm="r", nonce="n", qop="auth"'), "REGISTER",
                             "sip:r", qop="auth-int")
    with pytest.raises(ValueError, match="cannot answer"):
        client.authorization(DigestChallenge.parse('Digest realm="r", nonce="n", algorithm=AKAv1-MD5'),
                             "REGISTER", "sip:r")
    with pytest.raises(ValueError, match="cannot answer"):
        client.authorization(DigestChallenge.parse('Digest realm="r", nonce="n", qop="auth-conf"'),
                             "REGISTER", "sip:r")


def test_nc_counts_per_nonce_and_cnonce_is_random() -> None:
    client = DigestClient("u", "p")
    c1 = DigestChallenge.parse('Digest realm="r", nonce="one", qop="auth"')
    c2 = DigestChallenge.parse('Digest realm="r", nonce="two", qop="auth"')
    ncs = [_params(client.authorization(c, "REGISTER", "sip:r")[1])["nc"] for c in (c1, c1, c2, c1)]
    assert ncs == ["00000001", "00000002", "00000001", "00000003"]
    cnonces = {_params(client.authorization(c1, "REGISTER", "sip:r")[1])["cnonce"] for _ in range(5)}
    assert len(cnonces) == 5 and all(len(c) == 32 for c in cnonces)


def test_proxy_challenge_gives_proxy_authorization_and_uri_is_kept() -> None:
    challenge = DigestChallenge.parse('Digest realm="r", nonce="n"', proxy=True)
    name, value = DigestClient("u", "p").authorization(challenge, "INVITE", "sips:bob@example.com;transport=tls")
    assert name == "Proxy-Authorization"
    assert _params(value)["uri"] == "sips:bob@example.com;transport=tls"


def test_userhash() -> None:
    challenge = DigestChallenge.parse('Digest realm="api@example.org", nonce="n", qop="auth", '
                                      'algorithm=SHA-256, userhash=true')
    assert challenge.userhash
    _, value = DigestClient("Jäsøn Doe", "Secret, or not?", cnonce_factory=lambda: "c").authorization(
        challenge, "GET", "/doe.json")
    p = _params(value)
    assert p["username"] == _h("sha256", "Jäsøn Doe:api@example.org") and p["userhash"] == "true"
    assert p["response"] == digest_response("SHA-256", "Jäsøn Doe", "api@example.org", "Secret, or not?", "GET",
                                            "/doe.json", "n", "00000001", "c", "auth")


def test_challenge_fields() -> None:
    c = DigestChallenge.parse('digest REALM="a\\"b", nonce=xyz, algorithm=sha-256-SESS, stale=TRUE, '
                              'domain="sip:a sip:b", qop="auth", charset=UTF-8, opaque=""')
    assert (c.realm, c.nonce, c.algorithm, c.algorithm_token) == ('a"b', "xyz", "SHA-256-sess", "sha-256-SESS")
    assert c.stale and c.domain == "sip:a sip:b" and c.charset == "UTF-8" and c.opaque == ""
    assert c.qop_options == ["auth"] and c.supported and not c.proxy
    assert DigestChallenge.parse('Digest realm="a", nonce="b"').algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    ['Basic realm="x"', 'Digest nonce="n"', 'Digest realm="r"', "Digest", "", 'Digest realm="r", nonce="n" junk',
     'Digest realm="r", realm="s", nonce="n"', 'Digest realm="unterminated, nonce="n"'],
)
def test_bad_challenges_raise(value: str) -> None:
    with pytest.raises(SIPParseError):
        DigestChallenge.parse(value)


def test_challenges_from_corpus_responses() -> None:
    from pathlib import Path

    corpus = Path(__file__).parents[1] / "data" / "sip-corpus" / "real"
    assert corpus.is_dir(), f"SIP corpus missing at {corpus}"
    www = challenges_from(parse_message((corpus / "02_401_www_authenticate.sip").read_bytes()))
    assert len(www) == 1 and not www[0].proxy and www[0].realm
    proxy = challenges_from(parse_message((corpus / "11_407_proxy_authenticate.sip").read_bytes()))
    assert len(proxy) == 1 and proxy[0].proxy and proxy[0].realm == "sip.cybercity.dk"


def test_choose_strongest_supported_challenge() -> None:
    resp = Response(401, "Unauthorized", Headers([
        ("WWW-Authenticate", 'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"'),
        ("WWW-Authenticate", 'Basic realm="r"'),
        ("WWW-Authenticate", 'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"'),
        ("WWW-Authenticate", 'Digest realm="r", nonce="3", algorithm=AKAv1-MD5, qop="auth"'),
        ("WWW-Authenticate", 'Digest realm="r", nonce="4", algorithm=SHA-256-sess, qop="auth"'),
        ("WWW-Authenticate", "garbage ="),
    ]))
    found = challenges_from(resp)
    assert [c.nonce for c in found] == ["1", "2", "3", "4"]
    best = choose_challenge(found)
    assert best is not None and best.nonce == "2"  # SHA-256 beats MD5; first of equal rank wins
    several = Response(401, "x", Headers([("WWW-Authenticate",
                                           'Digest realm="r", nonce="a", Digest realm="r", nonce="b", '
                                           "algorithm=SHA-512-256")]))
    chosen = choose_challenge(challenges_from(several))
    assert chosen is not None and chosen.nonce == "b"
    assert choose_challenge([c for c in found if c.nonce == "3"]) is None
    assert choose_challenge([]) is None


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.text(max_size=100),
                 st.text(alphabet='Digest realm nonce = " , \\ qop auth algorithm MD5 SHA-256', max_size=100)))
def test_challenge_parse_raises_only_sip_parse_error(text: str) -> None:
    try:
        c = DigestChallenge.parse(text)
    except SIPParseError:
        return
    if c.supported:
        DigestClient("u", "p").authorization(c, "REGISTER", "sip:x")


# -- the common-shape fast path of the challenge parser ------------------------------------

_TOKENS = st.text(alphabet="abcdefgHIJ0123456789-.!%*_+`'~", min_size=1, max_size=8)
_QUOTED_TEXT = st.text(alphabet='abc XYZ=,;:@/\\"\t0123', max_size=10)
_UNQUOTED = st.text(alphabet="abc019-.:/@=%~", min_size=1, max_size=8)


@st.composite
def _auth_values(draw: st.DrawFn) -> str:
    """Challenge/credential values, most of the plain shape, some with what leaves it
    (blanks around '=', escapes, '=' in unquoted values, several challenges, no comma)."""
    params = []
    for _ in range(draw(st.integers(1, 5))):
        name = draw(_TOKENS)
        if draw(st.booleans()):
            value = '"' + draw(_QUOTED_TEXT) + '"'
        else:
            value = draw(_UNQUOTED)
        eq = draw(st.sampled_from(["=", "=", "=", " = ", "= "]))
        params.append(f"{name}{eq}{value}")
    sep = draw(st.sampled_from([", ", ", ", ",", " ,  ", " "]))
    value = f"{draw(_TOKENS)} " + sep.join(params)
    if draw(st.integers(0, 9)) == 0:
        value += ", Digest realm=\"b\", nonce=\"n\""
    return value


@settings(max_examples=600, deadline=None)
@given(_auth_values())
def test_the_plain_challenge_path_reads_what_the_full_parser_reads(value: str) -> None:
    from skinnysip.sip.auth import _parse_auth_loop, _parse_plain_auth

    try:
        full: object = _parse_auth_loop(value)
    except SIPParseError as exc:
        full = ("error", str(exc))
    try:
        plain: object = _parse_plain_auth(value)
    except SIPParseError as exc:
        plain = ("error", str(exc))
    if plain is not None:  # None: not the plain shape, the full parser alone reads it
        assert plain == full


def test_the_plain_challenge_path_takes_the_usual_servers_values() -> None:
    from skinnysip.sip.auth import _parse_plain_auth

    for value in (
        'Digest realm="skinnysip.test", nonce="axVVLGsVVPDDENU6uxNSIsm0FqrLRnVV", qop="auth", algorithm=MD5',
        'Digest algorithm=MD5, realm="asterisk", nonce="1a2b3c4d"',
        'Digest realm="x", nonce="YQ==", algorithm=SHA-256, qop="auth", opaque="o"',
        RFC2617_CHALLENGE,
    ):
        assert _parse_plain_auth(value) is not None, value
    assert _parse_plain_auth('Digest realm="a\\"b", nonce="n"') is None  # a quoted-pair: the full parser
    with pytest.raises(SIPParseError, match="repeated"):
        _parse_plain_auth('Digest realm="a", Realm="b"')
