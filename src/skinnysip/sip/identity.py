"""Authenticated caller identity — STIR/SHAKEN (sans-IO): the ``Identity`` header field of
RFC 8224, the PASSporT it carries (RFC 8225) and SHAKEN's claims (RFC 8588).

An **authentication service** signs a new INVITE: :func:`shaken_claims` gives the claims
(``attest`` A/B/C, ``dest``, ``iat``, ``orig``, ``origid``), :func:`sign_passport` makes the
JWS (ES256, RFC 7518 §3.4: ECDSA P-256 + SHA-256, the signature R‖S) and
:func:`identity_value` the header value::

    Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3NoYWtlbi5wZW0ifQ.eyJhdHRlc3QiOiJBIi…;info=<https://cert.example.org/shaken.pem>;alg=ES256;ppt=shaken

A **verification service** (RFC 8224 §6.2) reads it with :func:`parse_identity`, fetches the
certificate its ``info`` (and the PASSporT's ``x5u``) names — that is I/O, done by the caller —
and gets an :class:`IdentityCheck` from :func:`verify_identity`: the signature, the freshness
of ``iat`` (60 s by default, §6.2.2 step 4), the telephone numbers against From and To
(canonicalised as §8.3 says), the certificate's validity period and, when trust anchors are
given, its chain. A failure names the response code RFC 8224 gives it (§13.2): 436 Bad
Identity Info, 437 Unsupported Credential, 438 Invalid Identity Header, 403 Stale Date; a
request without the field where one is required is answered 428 Use Identity Header.

Nothing here reads the clock or the network: ``now`` and the certificate bytes are arguments.
Crypto is the ``cryptography`` package's; the JWS framing and the claims are ours. Everything
read from the wire is bounded (:data:`MAX_IDENTITY_BYTES`, :data:`MAX_CERTIFICATE_BYTES`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "IdentityError", "IdentityHeader", "PASSporT", "IdentityCheck", "IdentitySigner",
    "parse_identity", "decode_passport", "sign_passport", "identity_value", "shaken_claims",
    "canonical_tn", "uri_tn", "signed_party", "verify_identity", "load_certificates",
    "ATTESTATIONS", "FRESHNESS", "MAX_IDENTITY_BYTES", "MAX_CERTIFICATE_BYTES",
    "USE_IDENTITY_HEADER", "BAD_IDENTITY_INFO", "UNSUPPORTED_CREDENTIAL", "INVALID_IDENTITY_HEADER",
    "STALE_DATE", "STALE_DATE_PHRASE", "certificate_url", "stir_reason",
]

#: SHAKEN attestation levels (RFC 8588 §4): full, partial, gateway
ATTESTATIONS = ("A", "B", "C")
#: how far ``iat`` may be from now, s (RFC 8224 §6.2.2 step 4: sixty seconds RECOMMENDED)
FRESHNESS = 60.0
#: an Identity header value longer than this is refused (a SHAKEN one is ~700 bytes)
MAX_IDENTITY_BYTES = 8192
#: a certificate (chain) body longer than this is refused
MAX_CERTIFICATE_BYTES = 65536

#: RFC 8224 §13.2's response codes
USE_IDENTITY_HEADER = 428
BAD_IDENTITY_INFO = 436
UNSUPPORTED_CREDENTIAL = 437
INVALID_IDENTITY_HEADER = 438
STALE_DATE = 403
#: the reason phrase of a 403 for an ``iat`` or Date that is not fresh (RFC 8224 §6.2.2 step 4)
STALE_DATE_PHRASE = "Stale Date"


class IdentityError(ValueError):
    """An Identity header, PASSporT, key or certificate that cannot be used. ``reason`` says
    what is wrong; ``code`` is the RFC 8224 §13.2 response code a verifier answers with."""

    def __init__(self, reason: str, code: int = INVALID_IDENTITY_HEADER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


# -- telephone numbers (RFC 8224 §8.3) -------------------------------------------------------
_VISUAL_SEPARATORS = re.compile(r"[-.()\s]")


def canonical_tn(text: str) -> str | None:
    """The canonical form of a telephone number (RFC 8224 §8.3): visual separators
    (``-``, ``.``, ``(``, ``)``, spaces) and a leading ``+`` dropped, URI parameters
    (``;phone-context=…``) cut; None unless what is left is 1–32 digits."""
    number = text.split(";", 1)[0]
    number = _VISUAL_SEPARATORS.sub("", number)
    if number.startswith("+"):
        number = number[1:]
    if 0 < len(number) <= 32 and number.isascii() and number.isdigit():
        return number
    return None


def _addr_spec(text: str) -> str:
    """The ``<…>`` part of a name-addr (display name and header parameters cut), else the text."""
    text = text.strip()
    return text[text.index("<") + 1:].split(">", 1)[0] if "<" in text else text


def uri_tn(uri: str) -> str | None:
    """The telephone number of a From/To URI, canonical (RFC 8224 §8.3): a ``tel:`` URI's
    number, or the user part of a ``sip:``/``sips:`` URI when it is a telephone number (with
    or without ``user=phone``). ``<…>`` and a display name around it are cut; None when the
    URI names no telephone number."""
    scheme, colon, rest = _addr_spec(uri).partition(":")
    if not colon:
        return None
    scheme = scheme.strip().lower()
    if scheme == "tel":
        return canonical_tn(rest)
    if scheme in ("sip", "sips") and "@" in rest:
        return canonical_tn(rest.rsplit("@", 1)[0].split(":", 1)[0])
    return None


def signed_party(uri: str) -> str:
    """What a PASSporT names for a From/To/Request-URI ``uri``: its telephone number (RFC
    8224 §8.3), else the URI without parameters (a ``uri`` claim, RFC 8225 §5.2.1)."""
    from skinnysip.sip.uri import SipURI

    tn = uri_tn(uri)
    if tn is not None:
        return tn
    try:
        parsed = SipURI.parse(uri)
    except ValueError:
        return uri
    return f"{parsed.scheme}:{parsed.user + '@' if parsed.user else ''}{parsed.host}"


# -- JWS compact serialisation (RFC 7515 §7.1) ------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise IdentityError(f"the PASSporT's {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise IdentityError(f"the PASSporT's {what} is not base64url: {exc}") from exc


def _canonical_json(value: Any) -> bytes:
    """RFC 8225 §9: keys in lexicographic order, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IdentityError(f"the PASSporT's {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise IdentityError(f"the PASSporT's {what} is not a JSON object")
    return value


@dataclass(frozen=True)
class IdentityHeader:
    """One ``Identity`` header field value (RFC 8224 §4.1)::

        Identity = signed-identity-digest SEMI ident-info *( SEMI ident-info-params )
        ident-info = "info" EQUAL LAQUOT absoluteURI RAQUOT

    ``token``: the PASSporT (JWS compact form, or its compact form ``header..signature``);
    ``info``: the certificate's URI; ``alg`` and ``ppt`` (quotes removed) when present;
    ``params``: every parameter, names lower-cased."""

    token: str
    info: str | None
    alg: str | None
    ppt: str | None
    params: tuple[tuple[str, str], ...] = ()


_PARAM = re.compile(r'\s*;\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*(?:=\s*(<[^<>]*>|"[^"]*"|[^;\s]+))?\s*')


def parse_identity(value: str) -> IdentityHeader:
    """Parse an ``Identity`` header field value (RFC 8224 §4.1). Raises
    :class:`IdentityError` (438) for a value that is too long or does not follow the syntax.
    The ``info`` parameter is optional here (SHAKEN's verifiers fall back to the PASSporT's
    ``x5u``); its URI is returned without the angle brackets."""
    if len(value) > MAX_IDENTITY_BYTES:
        raise IdentityError(f"an Identity header of {len(value)} bytes (at most {MAX_IDENTITY_BYTES})")
    text = value.strip()
    digest, _, rest = text.partition(";")
    digest = digest.strip()
    if not digest or not re.fullmatch(r"[A-Za-z0-9_\-+/=.]+", digest):
        raise IdentityError("the Identity header has no signed-identity-digest (base64url and dots)")
    params: list[tuple[str, str]] = []
    position = 0
    rest = ";" + rest if rest else ""
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise IdentityError(f"bad Identity header parameters: {rest[position:position + 40]!r}")
        params.append((match.group(1).lower(), match.group(2) or ""))
        position = match.end()
    found = dict(params)

    def unquoted(name: str) -> str | None:
        raw = found.get(name)
        if raw is None:
            return None
        return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw

    info = found.get("info")
    if info is not None:
        if not (info.startswith("<") and info.endswith(">")) or len(info) < 3:
            raise IdentityError("the Identity header's info is not a <URI> (RFC 8224 §4.1)", BAD_IDENTITY_INFO)
        info = info[1:-1].strip()
    return IdentityHeader(token=digest, info=info, alg=unquoted("alg"), ppt=unquoted("ppt"),
                          params=tuple((name, raw) for name, raw in params))


@dataclass(frozen=True)
class PASSporT:
    """A decoded PASSporT (RFC 8225): its JOSE ``header`` and ``claims`` (JSON objects as
    dicts), what the signature covers (``signing_input``: ASCII ``header.payload``) and the
    ``signature`` (R‖S, 64 bytes for ES256). ``compact``: the token had no payload and the
    claims were rebuilt from the request (RFC 8224 §7)."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    compact: bool = False

    @property
    def ppt(self) -> str | None:
        return _text(self.header.get("ppt"))

    @property
    def x5u(self) -> str | None:
        return _text(self.header.get("x5u"))

    @property
    def iat(self) -> int | None:
        value = self.claims.get("iat")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def attest(self) -> str | None:
        return _text(self.claims.get("attest"))

    @property
    def origid(self) -> str | None:
        return _text(self.claims.get("origid"))

    @property
    def orig(self) -> str | None:
        """The originator: the ``orig`` claim's ``tn`` or ``uri`` (RFC 8225 §5.2.1)."""
        return _who(self.claims.get("orig"))

    @property
    def dest(self) -> tuple[str, ...]:
        """The destinations: the ``dest`` claim's ``tn`` and ``uri`` values (RFC 8225 §5.2.1)."""
        return _dests(self.claims.get("dest"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def decode_passport(token: str, *, rebuild: dict[str, Any] | None = None) -> PASSporT:
    """Split and decode a PASSporT in JWS compact serialisation (RFC 7515 §7.1; RFC 8225 §6).
    The compact form ``header..signature`` (RFC 8224 §7) needs ``rebuild``: the claims the
    verifier rebuilds from the request (``orig``, ``dest``, ``iat``), serialised canonically
    (RFC 8225 §9). Raises :class:`IdentityError` (438) for anything that is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise IdentityError(f"a PASSporT has 3 dot-separated parts, this one {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_unb64url(header_b64, "header"), "header")
    compact = payload_b64 == ""
    if compact:
        if rebuild is None:
            raise IdentityError("a compact-form PASSporT, and no claims to rebuild it from")
        claims = dict(rebuild)
        payload_b64 = _b64url(_canonical_json(claims))
    else:
        claims = _json_object(_unb64url(payload_b64, "payload"), "payload")
    return PASSporT(header=header, claims=claims, signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
                    signature=_unb64url(signature_b64, "signature"), compact=compact)


def shaken_claims(orig: str, dest: list[str] | tuple[str, ...] | str, *, attest: str, iat: int,
                  origid: str | None = None) -> dict[str, Any]:
    """SHAKEN's claims (RFC 8588 §4, on RFC 8225 §5.2): ``orig``/``dest`` telephone numbers
    (canonicalised: :func:`canonical_tn`; a value that is not one is used as a ``uri``
    claim), ``attest`` one of :data:`ATTESTATIONS`, ``iat`` seconds since the epoch,
    ``origid`` a UUID (a new one when None). Raises :class:`IdentityError` for a bad
    attestation level."""
    if attest not in ATTESTATIONS:
        raise IdentityError(f"attestation level {attest!r}: not one of {', '.join(ATTESTATIONS)}")
    dests = [dest] if isinstance(dest, str) else list(dest)

    def who(value: str) -> tuple[str, str]:
        tn = canonical_tn(value)
        return ("tn", tn) if tn is not None else ("uri", value)

    kind, value = who(orig)
    dest_claim: dict[str, list[str]] = {}
    for d in dests:
        dkind, dvalue = who(d)
        dest_claim.setdefault(dkind, []).append(dvalue)
    return {"attest": attest, "dest": dest_claim, "iat": int(iat), "orig": {kind: value},
            "origid": origid or str(uuid.uuid4())}


def sign_passport(claims: dict[str, Any], private_key: Any, x5u: str, *, ppt: str | None = "shaken") -> str:
    """The full-form PASSporT (RFC 8225 §6-§9) of ``claims``, signed ES256 with
    ``private_key`` (a ``cryptography`` EC P-256 private key): header ``alg``, ``ppt``,
    ``typ: passport``, ``x5u``, both serialised canonically. Raises :class:`IdentityError`
    for a key that is not EC P-256."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
        raise IdentityError("ES256 needs an EC P-256 (secp256r1) private key", UNSUPPORTED_CREDENTIAL)
    header: dict[str, Any] = {"alg": "ES256", "typ": "passport", "x5u": x5u}
    if ppt:
        header["ppt"] = ppt
    signing_input = f"{_b64url(_canonical_json(header))}.{_b64url(_canonical_json(claims))}"
    r, s = decode_dss_signature(private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def identity_value(token: str, info: str, *, ppt: str | None = "shaken") -> str:
    """The ``Identity`` header field value for ``token`` (RFC 8224 §4.1; ATIS-1000074's form):
    ``token;info=<info>;alg=ES256;ppt=shaken``."""
    value = f"{token};info=<{info}>;alg=ES256"
    return f"{value};ppt={ppt}" if ppt else value


@dataclass
class IdentitySigner:
    """What an authentication service needs (RFC 8224 §5): the EC P-256 ``private_key``
    (a ``cryptography`` key object), the certificate's public URL ``x5u``, the SHAKEN
    ``attest`` level. :meth:`from_pem` loads the key from PEM bytes."""

    private_key: Any
    x5u: str
    attest: str = "A"

    @classmethod
    def from_pem(cls, pem: bytes, x5u: str, attest: str = "A", password: bytes | None = None) -> IdentitySigner:
        """Raises :class:`IdentityError` for PEM that is not an EC P-256 private key, an
        attestation level not in :data:`ATTESTATIONS`, or an ``x5u`` that is not an
        http(s) URL."""
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        if attest not in ATTESTATIONS:
            raise IdentityError(f"attestation level {attest!r}: not one of {', '.join(ATTESTATIONS)}")
        if not re.fullmatch(r"(?i)https?://[!#-;=?-~]+", x5u):
            raise IdentityError(f"the certificate URL {x5u!r} is not an http(s) URL")
        try:
            key = load_pem_private_key(pem, password)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"not a PEM private key: {exc}", UNSUPPORTED_CREDENTIAL) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise IdentityError("ES256 needs an EC P-256 (secp256r1) private key", UNSUPPORTED_CREDENTIAL)
        return cls(private_key=key, x5u=x5u, attest=attest)

    def sign(self, orig: str, dest: str, now: float, origid: str | None = None) -> str:
        """An ``Identity`` header value for a request from ``orig`` to ``dest`` (telephone
        numbers or URIs), ``iat`` = ``now`` (s since the epoch)."""
        claims = shaken_claims(orig, dest, attest=self.attest, iat=int(now), origid=origid)
        return identity_value(sign_passport(claims, self.private_key, self.x5u), self.x5u)

    def header_fields(self, orig: str, dest: str, now: float, *, date: bool = True) -> list[tuple[str, str]]:
        """The header fields an authentication service adds to a new request (RFC 8224 §5):
        a ``Date`` of ``now`` (RFC 3261 §20.17; left out with ``date`` False, when the request
        has one) and the ``Identity`` (:meth:`sign`) whose ``iat`` is that time."""
        import email.utils

        fields = [("Date", email.utils.formatdate(int(now), usegmt=True))] if date else []
        return [*fields, ("Identity", self.sign(orig, dest, now))]


# -- verification (RFC 8224 §6.2) -------------------------------------------------------------
def load_certificates(data: bytes) -> list[Any]:
    """The certificates of a PEM bundle (the end entity first, then its intermediates, as
    SHAKEN's x5u documents hold them) or of one DER certificate (``application/pkix-cert``).
    Raises :class:`IdentityError` (437) for more than :data:`MAX_CERTIFICATE_BYTES` or
    bytes that hold no certificate."""
    from cryptography import x509

    if len(data) > MAX_CERTIFICATE_BYTES:
        raise IdentityError(f"a certificate of {len(data)} bytes (at most {MAX_CERTIFICATE_BYTES})",
                            UNSUPPORTED_CREDENTIAL)
    try:
        if b"-----BEGIN" in data:
            certs = list(x509.load_pem_x509_certificates(data))
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise IdentityError(f"not a certificate: {exc}", UNSUPPORTED_CREDENTIAL) from exc
    if not certs:
        raise IdentityError("no certificate in the document", UNSUPPORTED_CREDENTIAL)
    return certs


@dataclass(frozen=True)
class IdentityCheck:
    """What a verification service found (RFC 8224 §6.2). ``verified``: the signature holds,
    ``iat`` is fresh and the numbers are the request's; otherwise ``code`` is the response
    code RFC 8224 §13.2 gives the failure and ``reason`` says what failed. ``attest``,
    ``orig`` (a TN or URI), ``dest`` (TNs or URIs), ``origid``, ``iat`` (s since the epoch),
    ``ppt`` and ``x5u`` are the PASSporT's as far as they could be read; ``age`` is now minus
    ``iat`` (s). ``chain``: ``"trusted"`` (the certificate chains to a given trust anchor),
    ``"not checked"`` (no trust anchors given) or the reason it does not chain."""

    verified: bool
    code: int | None
    reason: str
    attest: str | None = None
    orig: str | None = None
    dest: tuple[str, ...] = ()
    origid: str | None = None
    iat: int | None = None
    ppt: str | None = None
    x5u: str | None = None
    age: float | None = None
    chain: str = "not checked"
    compact: bool = False

    def summary(self) -> dict[str, Any]:
        """A JSON view (the API's and the CLI's ``identity``): camelCase keys."""
        return {"verified": self.verified, "code": self.code, "reason": self.reason, "attest": self.attest,
                "orig": self.orig, "dest": list(self.dest), "origid": self.origid, "iat": self.iat,
                "age": None if self.age is None else round(self.age, 3), "ppt": self.ppt, "x5u": self.x5u,
                "chain": self.chain, "compact": self.compact}


def stir_reason(check: IdentityCheck) -> str:
    """The ``Reason`` header field value telling upstream why ``check`` failed (RFC 9410 §3:
    protocol ``STIR``, the RFC 8224 code as cause): ``STIR;cause=438;text="Invalid Identity
    Header"``. ``ValueError`` for a check that verified."""
    from skinnysip.sip.reason import Reason
    from skinnysip.sip.request import reason_phrase

    if check.verified or check.code is None:
        raise ValueError("a verified identity has no STIR reason")
    phrase = STALE_DATE_PHRASE if check.code == STALE_DATE else reason_phrase(check.code)
    return Reason("STIR", check.code, phrase).header_value()


def _who(claim: Any) -> str | None:
    if isinstance(claim, dict):
        for key in ("tn", "uri"):
            value = claim.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, list) and value and isinstance(value[0], str):
                return value[0]
    return None


def _dests(claim: Any) -> tuple[str, ...]:
    out: list[str] = []
    if isinstance(claim, dict):
        for key in ("tn", "uri"):
            values = claim.get(key)
            if isinstance(values, str):
                values = [values]
            if isinstance(values, list):
                out.extend(v for v in values if isinstance(v, str))
    return tuple(out)


def _chain_result(certs: list[Any], roots: list[Any], at: Any) -> str:
    """``"trusted"`` when ``certs[0]`` chains through ``certs[1:]`` to one of ``roots``
    (each link's signature and issuer checked by ``cryptography``; each certificate valid at
    ``at``), else the reason it does not."""
    from cryptography.exceptions import InvalidSignature

    current = certs[0]
    pool = certs[1:]
    for _ in range(len(pool) + 2):
        for root in roots:
            try:
                current.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            if not (root.not_valid_before_utc <= at <= root.not_valid_after_utc):
                return "the trust anchor is outside its validity period"
            return "trusted"
        parent = None
        for candidate in pool:
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            parent = candidate
            break
        if parent is None:
            return "untrusted: the certificate does not chain to a given trust anchor"
        if not (parent.not_valid_before_utc <= at <= parent.not_valid_after_utc):
            return "untrusted: an intermediate certificate is outside its validity period"
        pool.remove(parent)
        current = parent
    return "untrusted: the chain is too long"


def certificate_url(value: str) -> str | None:
    """Where the certificate of an ``Identity`` header field value is: the full-form
    PASSporT's ``x5u`` (SHAKEN's verifiers use it), else the field's ``info``; None when the
    value names none or does not parse."""
    try:
        header = parse_identity(value)
        parts = header.token.split(".")
        if len(parts) == 3 and parts[1]:
            x5u = _json_object(_unb64url(parts[0], "header"), "header").get("x5u")
            if isinstance(x5u, str) and x5u:
                return x5u
    except IdentityError:
        return None
    return header.info or None


def verify_identity(value: str, *, from_uri: str, to_uri: str, now: float,
                    certificate: bytes | None, roots: list[Any] | None = None,
                    freshness: float = FRESHNESS, date: float | None = None,
                    unavailable: str = "the certificate could not be fetched") -> IdentityCheck:
    """Verify an ``Identity`` header field value against its request (RFC 8224 §6.2.2):
    ``from_uri``/``to_uri`` are the request's From and To (their telephone numbers are
    compared with ``orig`` and ``dest``, canonical: §8.3); ``now`` is the time, s since the
    epoch; ``certificate`` the bytes fetched from ``info``/``x5u`` (PEM bundle or DER; None
    when they could not be fetched: 436 with ``unavailable`` as the reason); ``roots``
    trust anchors (``cryptography`` certificates) or None not to check the chain; ``freshness`` s (``iat`` farther from
    ``now`` → 403 Stale Date); ``date``: the request's Date (s since the epoch), needed to
    rebuild a compact-form PASSporT. Never raises on what came from the wire: the result
    says what failed."""
    partial: dict[str, Any] = {}
    try:
        header = parse_identity(value)
        rebuild = None
        from_tn, to_tn = uri_tn(from_uri), uri_tn(to_uri)
        if date is not None and from_tn is not None and to_tn is not None:
            rebuild = {"dest": {"tn": [to_tn]}, "iat": int(date), "orig": {"tn": from_tn}}
        passport = decode_passport(header.token, rebuild=rebuild)
        partial = {"attest": passport.attest, "orig": passport.orig, "dest": passport.dest,
                   "origid": passport.origid, "iat": passport.iat,
                   "ppt": passport.ppt or header.ppt, "x5u": passport.x5u or header.info, "compact": passport.compact}
        if passport.iat is not None:
            partial["age"] = now - passport.iat
        _check_passport(header, passport)
        if certificate is None:
            raise IdentityError(unavailable, BAD_IDENTITY_INFO)
        certs = _check_certificate(certificate, now)
        _check_signature(passport, certs[0])
        chain = "not checked"
        if roots is not None:
            chain = _chain_result(certs, roots, datetime.fromtimestamp(now, UTC))
            if chain != "trusted":
                raise IdentityError(f"the certificate is {chain.removeprefix('untrusted: ')}", UNSUPPORTED_CREDENTIAL)
        partial["chain"] = chain
        assert passport.iat is not None
        if abs(now - passport.iat) > freshness:
            raise IdentityError(f"iat is {now - passport.iat:.0f} s from now (at most {freshness:g} s)", STALE_DATE)
        _check_numbers(passport, from_uri, to_uri, from_tn, to_tn)
    except IdentityError as exc:
        return IdentityCheck(verified=False, code=exc.code, reason=exc.reason, **partial)
    return IdentityCheck(verified=True, code=None, reason="verified", **partial)


def _check_passport(header: IdentityHeader, passport: PASSporT) -> None:
    alg = passport.header.get("alg")
    if alg != "ES256" or (header.alg is not None and header.alg != "ES256"):
        raise IdentityError(f"algorithm {alg!r}: only ES256 is supported", UNSUPPORTED_CREDENTIAL)
    typ = passport.header.get("typ")
    if typ is not None and typ != "passport":
        raise IdentityError(f"typ {typ!r} is not passport")
    if header.ppt is not None and passport.ppt is not None and header.ppt != passport.ppt:
        raise IdentityError(f"ppt {header.ppt!r} in the header field, {passport.ppt!r} in the PASSporT")
    if passport.iat is None:
        raise IdentityError("the PASSporT has no iat (an integer)")
    if passport.orig is None or not passport.dest:
        raise IdentityError("the PASSporT has no orig or no dest")
    if passport.ppt == "shaken":
        if passport.compact:
            raise IdentityError("a SHAKEN PASSporT in compact form (RFC 8588 §6 requires the full form)")
        if passport.attest not in ATTESTATIONS:
            raise IdentityError(f"SHAKEN attest {passport.attest!r} is not one of {', '.join(ATTESTATIONS)}")
        if not passport.origid:
            raise IdentityError("the SHAKEN PASSporT has no origid")
    if passport.x5u is None and header.info is None:
        raise IdentityError("no certificate URL: neither info nor x5u", BAD_IDENTITY_INFO)


def _check_certificate(certificate: bytes, now: float) -> list[Any]:
    from cryptography.hazmat.primitives.asymmetric import ec

    certs = load_certificates(certificate)
    key = certs[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise IdentityError("the certificate's key is not EC P-256 (ES256)", UNSUPPORTED_CREDENTIAL)
    at = datetime.fromtimestamp(now, UTC)
    if not (certs[0].not_valid_before_utc <= at <= certs[0].not_valid_after_utc):
        raise IdentityError(f"the certificate is valid {certs[0].not_valid_before_utc:%Y-%m-%d %H:%M} to "
                            f"{certs[0].not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now", UNSUPPORTED_CREDENTIAL)
    return certs


def _check_signature(passport: PASSporT, certificate: Any) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if len(passport.signature) != 64:
        raise IdentityError(f"an ES256 signature is 64 bytes, this one {len(passport.signature)}")
    r = int.from_bytes(passport.signature[:32], "big")
    s = int.from_bytes(passport.signature[32:], "big")
    try:
        certificate.public_key().verify(encode_dss_signature(r, s), passport.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise IdentityError("the signature does not verify with the certificate's key") from None


def _bare_uri(text: str) -> str:
    """A URI for comparing a ``uri`` claim with From/To: its addr-spec, parameters cut,
    lower case."""
    return _addr_spec(text).split(";", 1)[0].strip().lower()


def _check_numbers(passport: PASSporT, from_uri: str, to_uri: str, from_tn: str | None, to_tn: str | None) -> None:
    """RFC 8224 §6.2.2 step 1: the PASSporT's orig is the From's, and the To is one of its
    dest (telephone numbers canonical; a URI claim compared as it is)."""
    orig = passport.orig
    orig_claim = passport.claims.get("orig")
    if isinstance(orig_claim, dict) and "tn" in orig_claim:
        if orig is None or canonical_tn(orig) != from_tn:
            raise IdentityError(f"orig {orig!r} is not the From's number ({from_tn or 'none'})")
    elif orig is not None and _bare_uri(orig) != _bare_uri(from_uri):
        raise IdentityError(f"orig {orig!r} is not the From ({from_uri})")
    dests = passport.dest
    canonical = {canonical_tn(d) for d in dests}
    if to_tn is not None and to_tn in canonical:
        return
    if any(_bare_uri(d) == _bare_uri(to_uri) for d in dests if canonical_tn(d) is None):
        return
    raise IdentityError(f"dest {', '.join(dests)} does not name the To ({to_tn or to_uri})")
