"""Digest authentication, client side (RFC 7616, RFC 8760 for SIP, RFC 2617, RFC 3261 §22).

* :meth:`DigestChallenge.parse` reads one ``WWW-Authenticate`` / ``Proxy-Authenticate``
  value; :func:`challenges_from` collects every challenge of a 401/407 response;
  :func:`choose_challenge` picks the strongest one we support.
* :class:`DigestClient` answers a challenge with an ``Authorization`` (401) or
  ``Proxy-Authorization`` (407) value, counting ``nc`` per nonce and drawing a random
  ``cnonce`` (``secrets``).
* :func:`digest_response` is the pure response computation (RFC 7616 §3.4.1-§3.4.3).
* Server side: :meth:`DigestCredentials.parse` reads one ``Authorization`` /
  ``Proxy-Authorization`` value, :func:`verify_credentials` checks it against a password
  (RFC 7616 §3.5, RFC 3261 §22.4), :func:`challenge_value` writes a challenge.

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess;
qop ``auth``, ``auth-int`` (H(entity-body)) or none (RFC 2069 compatibility).
``stale=true`` is exposed as :attr:`DigestChallenge.stale`; retrying is the caller's job.
Errors: :class:`~skinnysip.sip.message.SIPParseError` for unparseable challenges,
``ValueError`` for a challenge this client cannot answer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from skinnysip.sip.message import Headers, Request, Response, SIPParseError
from skinnysip.sip.request import resend_request
from skinnysip.sip.syntax import quote_string, unquote_string

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "challenge_value",
    "challenges_from",
    "choose_challenge",
    "digest_response",
    "verify_credentials",
]

#: Canonical algorithm names → (hash constructor name, strength rank). RFC 7616 §6.1.
ALGORITHMS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 1),
    "MD5-sess": ("md5", 1),
    "SHA-256": ("sha256", 2),
    "SHA-256-sess": ("sha256", 2),
    "SHA-512-256": ("sha512_256", 3),
    "SHA-512-256-sess": ("sha512_256", 3),
}
_BY_UPPER = {name.upper(): name for name in ALGORITHMS}

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM_RE = re.compile(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*({_QUOTED}|[^\s,\"]+)[ \t]*(?:,|$)", re.S)
_SCHEME_RE = re.compile(rf"[ \t,]*({_TOKEN})(?:[ \t]+|$)")
_TOKEN68_RE = re.compile(r"[ \t]*([A-Za-z0-9\-._~+/]+=*)[ \t]*(?:,|$)")


def _parse_challenge_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split one header value into ``(scheme, {param: unquoted value})`` challenges.

    RFC 7235 §4.1 allows several challenges in one field: a new challenge starts where
    a token is followed by whitespace instead of ``=``. A token68 credential (e.g.
    ``Negotiate abc==``) is stored under the empty name.
    """
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    n = len(value)
    while True:
        while pos < n and value[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        m = _SCHEME_RE.match(value, pos)
        if m is None:
            raise SIPParseError(f"bad challenge near {value[pos:pos + 30]!r}")
        scheme = m.group(1)
        pos = m.end()
        params: dict[str, str] = {}
        m68 = _TOKEN68_RE.match(value, pos)
        if m68 is not None:
            params[""] = m68.group(1)
            pos = m68.end()
        else:
            while (pm := _PARAM_RE.match(value, pos)) is not None:
                name = pm.group(1).lower()
                if name in params:
                    raise SIPParseError(f"auth-param {name!r} repeated")
                params[name] = unquote_string(pm.group(2))
                pos = pm.end()
        out.append((scheme, params))
    if not out:
        raise SIPParseError("empty challenge")
    return out


@dataclass
class DigestChallenge:
    """One Digest challenge (RFC 7616 §3.3, RFC 3261 §22.4).

    ``algorithm`` is canonical (``"MD5"``, ``"MD5-sess"``, ``"SHA-256"``,
    ``"SHA-256-sess"``, ``"SHA-512-256"``, ``"SHA-512-256-sess"``; ``"MD5"`` when absent;
    unknown algorithms are kept as sent, see :attr:`supported`); ``algorithm_token`` is
    the algorithm as the server spelled it (``None`` if absent). ``qop_options`` are
    lower-cased tokens (``[]`` means RFC 2069 mode). ``proxy`` is true for a
    ``Proxy-Authenticate`` challenge (answer with ``Proxy-Authorization``).
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop_options: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    charset: str | None = None
    userhash: bool = False
    proxy: bool = False
    algorithm_token: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header_value: str, proxy: bool = False) -> DigestChallenge:
        """Parse one ``WWW-Authenticate``/``Proxy-Authenticate`` value holding one challenge.

        Raises :class:`SIPParseError` for another scheme (e.g. ``Basic``), several
        challenges, a missing ``realm`` or ``nonce``, or bad syntax.
        """
        if not isinstance(header_value, str):
            raise SIPParseError("challenge must be text")
        challenges = _parse_challenge_list(header_value)
        if len(challenges) != 1:
            raise SIPParseError(f"{len(challenges)} challenges in one value; use challenges_from()")
        return cls._from_params(*challenges[0], proxy=proxy)

    @classmethod
    def _from_params(cls, scheme: str, params: dict[str, str], proxy: bool) -> DigestChallenge:
        if scheme.lower() != "digest":
            raise SIPParseError(f"unsupported authentication scheme {scheme!r} (only Digest)")
        if "realm" not in params:
            raise SIPParseError("Digest challenge without realm")
        if "nonce" not in params:
            raise SIPParseError("Digest challenge without nonce")
        token = params.get("algorithm")
        algorithm = "MD5" if token is None else _BY_UPPER.get(token.upper(), token)
        qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=algorithm,
            qop_options=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            domain=params.get("domain"),
            charset=params.get("charset"),
            userhash=params.get("userhash", "").lower() == "true",
            proxy=proxy,
            algorithm_token=token,
            params=dict(params),
        )

    @property
    def supported(self) -> bool:
        """True if :class:`DigestClient` can answer: known algorithm, and no qop or auth/auth-int."""
        if self.algorithm not in ALGORITHMS:
            return False
        offered = self.qop_options
        return not offered or "auth" in offered or "auth-int" in offered

    @property
    def strength(self) -> int:
        """Rank for :func:`choose_challenge`: SHA-512-256 3, SHA-256 2, MD5 1, unsupported 0."""
        return ALGORITHMS[self.algorithm][1] if self.supported else 0


class _HasHeaders(Protocol):
    headers: Headers


def challenges_from(response: _HasHeaders) -> list[DigestChallenge]:
    """Every Digest challenge of a response, in wire order (RFC 3261 §22.2, §22.3).

    ``WWW-Authenticate`` fields give ``proxy=False``, ``Proxy-Authenticate`` fields
    ``proxy=True``. Fields that do not parse, and non-Digest challenges, are skipped.
    """
    out: list[DigestChallenge] = []
    for name, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
        for value in response.headers.get_all(name):
            try:
                items = _parse_challenge_list(value)
            except SIPParseError:
                continue
            for scheme, params in items:
                try:
                    out.append(DigestChallenge._from_params(scheme, params, proxy))
                except SIPParseError:
                    continue
    return out


def choose_challenge(challenges: Iterable[DigestChallenge]) -> DigestChallenge | None:
    """The strongest supported challenge (SHA-512-256 > SHA-256 > MD5; ``-sess`` ranks
    like its base; first one wins a tie), or ``None`` if none is supported (RFC 7616 §3.7)."""
    best: DigestChallenge | None = None
    for c in challenges:
        if c.strength and (best is None or c.strength > best.strength):
            best = c
    return best


def _hash(algorithm: str) -> Callable[[bytes], str]:
    canonical = _BY_UPPER.get(algorithm.upper())
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    name = ALGORITHMS[canonical][0]

    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return h


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (lower-case hex), RFC 7616 §3.4.1-§3.4.3 / RFC 2617 §3.2.2.

    ``A1 = username:realm:password`` (``-sess``: ``H(A1):nonce:cnonce``);
    ``A2 = method:uri`` (``auth-int``: ``method:uri:H(body)``); with ``qop``:
    ``KD(H(A1), nonce:nc:cnonce:qop:H(A2))``, without: ``KD(H(A1), nonce:H(A2))``.
    Strings are hashed as the octets they stand for (:func:`octets`): what we typed as
    UTF-8, and a realm or nonce taken from a server's message exactly as the server sent
    it, UTF-8 or not (a Latin-1 realm ``sip.c\xfcbercity.dk`` is hashed with its one octet
    0xFC; RFC 7616 §3.4: ``charset=UTF-8`` only says how username and password are
    encoded). Raises ``ValueError`` for an unknown algorithm.
    """
    h = _hash(algorithm)
    a1 = h(octets(f"{username}:{realm}:{password}"))
    if algorithm.upper().endswith("-SESS"):
        a1 = h(octets(f"{a1}:{nonce}:{cnonce or ''}"))
    if qop == "auth-int":
        a2 = h(octets(f"{method}:{uri}:") + h(body).encode())
    else:
        a2 = h(octets(f"{method}:{uri}"))
    if qop:
        return h(octets(f"{a1}:{nonce}:{nc}:{cnonce}:{qop}:{a2}"))
    return h(octets(f"{a1}:{nonce}:{a2}"))


def octets(text: str) -> bytes:
    """The octets ``text`` stands for: UTF-8, except that text decoded from a message with
    ``surrogateescape`` (how :mod:`skinnysip.sip.message` keeps octets that are not UTF-8)
    gives those octets back unchanged."""
    return text.encode("utf-8", "surrogateescape")


def _default_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers Digest challenges for one set of credentials (RFC 7616 §3.4, RFC 3261 §22.2).

    Keeps the nonce count per nonce (``nc``: ``"00000001"``, ``"00000002"``, ... for
    successive requests under one nonce; at most 64 nonces remembered). ``cnonce_factory``
    returns a fresh cnonce (default: 32 random hex digits from ``secrets``).
    """

    _MAX_NONCES = 64

    def __init__(self, username: str, password: str, cnonce_factory: Callable[[], str] | None = None) -> None:
        self.username = username
        self._password = password
        self._cnonce = cnonce_factory or _default_cnonce
        self._nc: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    def _next_nc(self, nonce: str) -> str:
        count = self._nc.pop(nonce, 0) + 1
        self._nc[nonce] = count
        while len(self._nc) > self._MAX_NONCES:
            del self._nc[next(iter(self._nc))]
        return f"{count:08x}"

    def authorization(
        self,
        challenge: DigestChallenge,
        method: str,
        uri: str,
        body: bytes = b"",
        qop: str | None = None,
    ) -> tuple[str, str]:
        """Build the credentials for ``challenge``.

        Returns ``(header name, value)``: ``"Authorization"`` or, for a proxy challenge,
        ``"Proxy-Authorization"``. ``uri`` is the Request-URI exactly as sent (a ``sips:``
        URI stays ``sips:``); ``body`` is the message body (used by ``auth-int``).
        qop: ``qop`` if given (must be offered), else ``auth`` if offered, else
        ``auth-int``, else none (RFC 2069 style). ``opaque`` is echoed; ``algorithm`` is
        echoed as the server spelled it. Raises ``ValueError`` if the challenge is not
        :attr:`~DigestChallenge.supported` or ``qop`` was not offered.
        """
        if not challenge.supported:
            raise ValueError(
                f"cannot answer challenge: algorithm {challenge.algorithm!r}, qop {challenge.qop_options!r}"
            )
        offered = challenge.qop_options
        if qop is not None:
            if qop not in offered or qop not in ("auth", "auth-int"):
                raise ValueError(f"qop {qop!r} not offered (offered: {offered!r})")
            chosen: str | None = qop
        elif "auth" in offered:
            chosen = "auth"
        elif "auth-int" in offered:
            chosen = "auth-int"
        else:
            chosen = None
        sess = challenge.algorithm.endswith("-sess")
        cnonce = self._cnonce() if (chosen or sess) else None
        nc = self._next_nc(challenge.nonce) if chosen else None
        response = digest_response(
            challenge.algorithm, self.username, challenge.realm, self._password,
            method, uri, challenge.nonce, nc, cnonce, chosen, body,
        )
        if challenge.userhash:
            username = _hash(challenge.algorithm)(octets(f"{self.username}:{challenge.realm}"))
        else:
            username = self.username
        parts = [
            f"Digest username={quote_string(username)}",
            f"realm={quote_string(challenge.realm)}",
            f"nonce={quote_string(challenge.nonce)}",
            f"uri={quote_string(uri)}",
            f"response={quote_string(response)}",
        ]
        if challenge.algorithm_token is not None:
            parts.append(f"algorithm={challenge.algorithm_token}")
        if cnonce is not None:
            parts.append(f"cnonce={quote_string(cnonce)}")
        if chosen:
            parts.append(f"qop={chosen}")
            parts.append(f"nc={nc}")
        if challenge.opaque is not None:
            parts.append(f"opaque={quote_string(challenge.opaque)}")
        if challenge.userhash:
            parts.append("userhash=true")
        name = "Proxy-Authorization" if challenge.proxy else "Authorization"
        return name, ", ".join(parts)


class ChallengeRetry:
    """The one challenge-retry rule of the core (RFC 3261 §8.1.3.5, §22.2, §22.3; RFC 7616
    §3.3), kept per realm: a 401/407 is answered with credentials for the strongest
    supported challenge of each realm it names. A realm already answered is answered again
    only if its new challenge says ``stale=true`` (the credentials were right, the nonce had
    expired), once; otherwise the credentials were refused and the rule stops. So a proxy's
    407 followed by the registrar's 401 (two realms) is answered twice, each retry carrying
    the credentials of every realm so far. Every retry is the same request with a new top
    Via (new branch) and CSeq + 1. ``client`` None: never retries. At most ``max_retries``.

    ``challenge`` is the last challenge answered (for later requests that pre-empt it,
    e.g. an unregister); ``attempts`` counts the retries made.
    """

    def __init__(self, client: DigestClient | None, max_retries: int = 4) -> None:
        self.client = client
        self.max_retries = max_retries
        self.challenge: DigestChallenge | None = None
        self.answered: dict[tuple[bool, str], DigestChallenge] = {}
        self._stale_used: set[tuple[bool, str]] = set()
        self.attempts = 0
        self.refused: str | None = None
        self.challenged: list[Response] = []  # every 401/407 seen, in order

    @staticmethod
    def answers(response: Response) -> bool:
        """Whether ``response`` is one the rule may retry at all: a 401 or 407 (RFC 3261
        §22.2, §22.3). A caller can skip building a retry's Via for anything else."""
        return response.status_code in (401, 407)

    def retry(self, request: Request, response: Response, via: str) -> Request | None:
        """The retried request for ``response`` to ``request``, or None when the rule says
        stop (not a 401/407, no credentials, no supported challenge, a realm answered
        before and not stale, or too many retries; :attr:`refused` says which)."""
        self.refused = None
        if not self.answers(response):
            return None
        self.challenged.append(response)
        if self.client is None:
            self.refused = "no credentials"
            return None
        best: dict[tuple[bool, str], DigestChallenge] = {}
        for c in challenges_from(response):
            key = (c.proxy, c.realm)
            if c.strength and (key not in best or c.strength > best[key].strength):
                best[key] = c
        if not best:
            self.refused = "no supported Digest challenge"
            return None
        fresh: dict[tuple[bool, str], DigestChallenge] = {}
        for key, c in best.items():
            if key not in self.answered:
                fresh[key] = c
            elif c.stale and key not in self._stale_used:
                self._stale_used.add(key)
                fresh[key] = c
        if not fresh or self.attempts >= self.max_retries:
            self.refused = "credentials refused" if not fresh else "too many challenges"
            return None
        self.attempts += 1
        self.answered.update(fresh)
        self.challenge = next(reversed(fresh.values()))
        return self._with_credentials(request, list(self.answered.values()), via, next_cseq=True)

    def authorize(self, request: Request, challenge: DigestChallenge, via: str, *, next_cseq: bool) -> Request:
        """A copy of ``request`` with a new top Via, CSeq + 1 if ``next_cseq``, and
        credentials for ``challenge`` replacing any it carried (RFC 3261 §22.2). Raises
        ``ValueError`` without a client."""
        return self._with_credentials(request, [challenge], via, next_cseq=next_cseq)

    def _with_credentials(self, request: Request, challenges: list[DigestChallenge], via: str, *,
                          next_cseq: bool) -> Request:
        if self.client is None:
            raise ValueError("no credentials to answer the challenge with")
        retry = resend_request(request, via, next_cseq=next_cseq)
        for challenge in challenges:
            name, value = self.client.authorization(challenge, request.method, request.uri, request.body)
            retry.headers.add(name, value)
        return retry


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True)
class DigestCredentials:
    """One Digest ``Authorization``/``Proxy-Authorization`` value (RFC 7616 §3.4, RFC 3261
    §22.4): ``username``, ``realm``, ``nonce``, ``uri``, ``response`` (hex), ``algorithm``
    (canonical name; ``"MD5"`` when absent), ``qop`` (``None``: RFC 2069 style), ``nc``
    (8 hex digits), ``cnonce``, ``opaque``, ``userhash``."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @classmethod
    def parse(cls, header_value: str) -> DigestCredentials:
        """Parse one credentials value. Raises :class:`SIPParseError` for another scheme,
        bad syntax, or a missing ``username``/``realm``/``nonce``/``uri``/``response``, or
        ``qop`` without ``nc``/``cnonce`` (RFC 7616 §3.4)."""
        if not isinstance(header_value, str):
            raise SIPParseError("credentials must be text")
        items = _parse_challenge_list(header_value)
        if len(items) != 1:
            raise SIPParseError(f"{len(items)} credentials in one value")
        scheme, params = items[0]
        if scheme.lower() != "digest":
            raise SIPParseError(f"unsupported authentication scheme {scheme!r} (only Digest)")
        missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in params]
        if missing:
            raise SIPParseError(f"Digest credentials without {', '.join(missing)}")
        token = params.get("algorithm")
        algorithm = "MD5" if token is None else _BY_UPPER.get(token.upper(), token)
        qop = params.get("qop")
        if qop and ("nc" not in params or "cnonce" not in params):
            raise SIPParseError("Digest credentials with qop but without nc or cnonce")
        return cls(username=params["username"], realm=params["realm"], nonce=params["nonce"], uri=params["uri"],
                   response=params["response"].lower(), algorithm=algorithm, qop=qop.lower() if qop else None,
                   nc=params.get("nc"), cnonce=params.get("cnonce"), opaque=params.get("opaque"),
                   userhash=params.get("userhash", "").lower() == "true")


def verify_credentials(credentials: DigestCredentials, password: str, method: str, body: bytes = b"") -> bool:
    """True if ``credentials`` carry the right ``response`` for ``password`` and ``method``
    (RFC 7616 §3.4.1-§3.4.3: the server computes the same ``response`` the client did, from
    the credentials' own realm, nonce, uri, nc, cnonce and qop; ``auth-int`` hashes
    ``body``). Pure: the caller checks that the nonce is one it issued and still fresh
    (§3.5, ``stale``), that the realm is its own and that the uri is the Request-URI.
    A credential with ``userhash=true`` must be matched to its user by the caller first;
    ``username`` is then not used here. Unknown algorithms give False (never raise)."""
    if credentials.algorithm not in ALGORITHMS:
        return False
    if credentials.qop not in (None, "auth", "auth-int"):
        return False
    expected = digest_response(credentials.algorithm, credentials.username, credentials.realm, password, method,
                               credentials.uri, credentials.nonce, credentials.nc, credentials.cnonce,
                               credentials.qop, body)
    return secrets.compare_digest(expected, credentials.response)


def challenge_value(realm: str, nonce: str, *, algorithm: str = "MD5", qop: str | None = "auth",
                    opaque: str | None = None, stale: bool = False) -> str:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` value (RFC 7616 §3.3, RFC 3261
    §22.1): ``Digest realm="…", nonce="…", algorithm=…, qop="auth"[, opaque="…"]
    [, stale=true]``. Raises ``ValueError`` for an unknown algorithm."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    parts = [f"Digest realm={quote_string(realm)}", f"nonce={quote_string(nonce)}", f"algorithm={algorithm}"]
    if qop:
        parts.append(f"qop={quote_string(qop)}")
    if opaque is not None:
        parts.append(f"opaque={quote_string(opaque)}")
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)
