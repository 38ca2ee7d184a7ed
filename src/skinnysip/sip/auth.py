"""Digest authentication, client side (RFC 7616, RFC 8760 for SIP, RFC 2617, RFC 3261 §22).

* :meth:`DigestChallenge.parse` reads one ``WWW-Authenticate`` / ``Proxy-Authenticate``
  value; :func:`challenges_from` collects every challenge of a 401/407 response;
  :func:`choose_challenge` picks the strongest one we support.
* :class:`DigestClient` answers a challenge with an ``Authorization`` (401) or
  ``Proxy-Authorization`` (407) value, counting ``nc`` per nonce and drawing a random
  ``cnonce`` (``os.urandom``). It also keeps the challenges answered per Call-ID, so later
  requests with that Call-ID carry credentials at once (RFC 3261 §22.3, see
  :class:`ChallengeRetry`), with a server's ``nextnonce`` (``Authentication-Info``,
  RFC 3261 §20.6) taken in.
* :func:`response_auth` computes a server's ``rspauth`` (RFC 2617 §3.2.3) and
  :func:`parse_authentication_info` reads the field that carries it.
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

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from skinnysip._regex import compile_on_use
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
    "parse_authentication_info",
    "response_auth",
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
_PARAM_RE = compile_on_use(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*({_QUOTED}|[^\s,\"]+)[ \t]*(?:,|$)", re.S)
_SCHEME_RE = compile_on_use(rf"[ \t,]*({_TOKEN})(?:[ \t]+|$)")
_TOKEN68_RE = compile_on_use(r"[ \t]*([A-Za-z0-9\-._~+/]+=*)[ \t]*(?:,|$)")
# The common shape of one challenge or credentials value, as servers and phones write it:
# ``Scheme name=value, name="quoted", …`` — single spaces, no blanks around ``=``, quoted
# values without quoted-pairs, unquoted values of token characters (and ``:/@``, never
# ``=``, so no token68 reading applies). What it matches, the general loop below reads the
# same way; anything else (several challenges, escapes, other spacing) goes that way.
_PLAIN_AUTH_VALUE = r'(?:"[^"\\\r\n]*"|[A-Za-z0-9\-.!%*_+`\'~:/@]+)'
_PLAIN_AUTH_RE = compile_on_use(
    rf"({_TOKEN}) {_TOKEN}={_PLAIN_AUTH_VALUE}(?:[ \t]*,[ \t]*{_TOKEN}={_PLAIN_AUTH_VALUE})*")
_PLAIN_AUTH_PARAM_RE = compile_on_use(rf"({_TOKEN})=({_PLAIN_AUTH_VALUE})")


def _parse_plain_auth(value: str) -> list[tuple[str, dict[str, str]]] | None:
    """:func:`_parse_challenge_list` of a value of the common shape (``_PLAIN_AUTH_RE``),
    else None. Raises :class:`SIPParseError` for a repeated parameter, as the loop does."""
    m = _PLAIN_AUTH_RE.fullmatch(value)
    if m is None:
        return None
    params: dict[str, str] = {}
    for name, raw in _PLAIN_AUTH_PARAM_RE.findall(value, m.end(1)):
        name = name.lower()
        if name in params:
            raise SIPParseError(f"auth-param {name!r} repeated")
        params[name] = raw[1:-1] if raw[0] == '"' else raw
    return [(m.group(1), params)]


def _parse_challenge_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split one header value into ``(scheme, {param: unquoted value})`` challenges.

    RFC 7235 §4.1 allows several challenges in one field: a new challenge starts where
    a token is followed by whitespace instead of ``=``. A token68 credential (e.g.
    ``Negotiate abc==``) is stored under the empty name.
    """
    plain = _parse_plain_auth(value)
    return _parse_auth_loop(value) if plain is None else plain


def _parse_auth_loop(value: str) -> list[tuple[str, dict[str, str]]]:
    """:func:`_parse_challenge_list` of any value, one parameter at a time."""
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
    """The hex digest function of ``algorithm`` (any case; ``-sess`` hashes as its base).
    Raises ``ValueError`` for an unknown one."""
    known = _HASHES.get(algorithm)
    if known is not None:
        return known
    canonical = _BY_UPPER.get(algorithm.upper())
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    name = ALGORITHMS[canonical][0]

    import hashlib  # here: hashlib is not on the start-up path of unchallenged commands

    # hashlib's named constructors (md5, sha256) skip hashlib.new's look-up by name
    make = getattr(hashlib, name, None) or functools.partial(hashlib.new, name)

    def h(data: bytes) -> str:
        return make(data).hexdigest()

    if algorithm in ALGORITHMS:  # the canonical names only: a bounded memo
        _HASHES[algorithm] = h
    return h


#: the digest functions made so far, by canonical algorithm name
_HASHES: dict[str, Callable[[bytes], str]] = {}


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
    return os.urandom(16).hex()


class DigestClient:
    """Answers Digest challenges for one set of credentials (RFC 7616 §3.4, RFC 3261 §22.2).

    Keeps the nonce count per nonce (``nc``: ``"00000001"``, ``"00000002"``, ... for
    successive requests under one nonce; at most 64 nonces remembered). ``cnonce_factory``
    returns a fresh cnonce (default: 32 random hex digits from ``os.urandom``); a ``-sess``
    algorithm keeps the first cnonce drawn for a nonce, since it is part of the session key
    H(A1) (RFC 7616 §3.4.2).

    The credential cache (RFC 3261 §22.3): :meth:`remember` keeps the challenges answered
    for a Call-ID, :meth:`cached` gives them back, :meth:`forget` drops them; at most 256
    Call-IDs, the least recently used dropped first. §22.3 asks for credentials "in all
    subsequent requests that contain the same Call-ID" and forbids caching them across
    dialogs — except for the realm of the UA's own outbound proxy, which it MAY cache across
    dialogs: ``realm_wide`` names such realms, and the newest challenge of each (proxy or
    server) then goes with every request, whatever its Call-ID.
    """

    _MAX_NONCES = 64
    _MAX_CALL_IDS = 256

    def __init__(self, username: str, password: str, cnonce_factory: Callable[[], str] | None = None) -> None:
        self.username = username
        self._password = password
        self._cnonce = cnonce_factory or _default_cnonce
        self._nc: dict[str, int] = {}
        self._sess_cnonce: dict[str, str] = {}
        self._by_call_id: dict[str, dict[tuple[bool, str], DigestChallenge]] = {}
        self.realm_wide: frozenset[str] = frozenset()
        self._by_space: dict[tuple[bool, str], DigestChallenge] = {}  # the realm_wide ones

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    def _next_nc(self, nonce: str) -> str:
        count = self._nc.pop(nonce, 0) + 1
        self._nc[nonce] = count
        while len(self._nc) > self._MAX_NONCES:
            del self._nc[next(iter(self._nc))]
        return f"{count:08x}"

    def _session_cnonce(self, nonce: str) -> str:
        cnonce = self._sess_cnonce.get(nonce)
        if cnonce is None:
            cnonce = self._sess_cnonce[nonce] = self._cnonce()
            while len(self._sess_cnonce) > self._MAX_NONCES:
                del self._sess_cnonce[next(iter(self._sess_cnonce))]
        return cnonce

    # -- the credential cache (RFC 3261 §22.3) --------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether anything is cached at all (a request's look-up can be skipped when not)."""
        return bool(self._by_call_id or self._by_space)

    def cached(self, call_id: str | None) -> list[DigestChallenge]:
        """The challenges answered for ``call_id`` and those of the ``realm_wide`` realms
        (one per protection space: proxy or not, realm; the newest of a realm-wide one),
        oldest first; ``[]`` when none."""
        spaces = self._by_call_id.get(call_id) if call_id is not None else None
        if not self._by_space:
            return list(spaces.values()) if spaces else []
        return list({**(spaces or {}), **self._by_space}.values())

    def remember(self, call_id: str | None, challenges: Iterable[DigestChallenge]) -> None:
        """Keep ``challenges`` for ``call_id``, each replacing the one of its protection
        space (proxy or not, realm); a ``realm_wide`` realm's for every Call-ID."""
        if call_id is None:
            return
        spaces = self._by_call_id.pop(call_id, {})
        for challenge in challenges:
            spaces[(challenge.proxy, challenge.realm)] = challenge
            if challenge.realm in self.realm_wide:
                self._by_space[(challenge.proxy, challenge.realm)] = challenge
        if spaces:
            self._by_call_id[call_id] = spaces
            while len(self._by_call_id) > self._MAX_CALL_IDS:
                del self._by_call_id[next(iter(self._by_call_id))]

    def forget(self, call_id: str | None, spaces: Iterable[tuple[bool, str]] = ()) -> None:
        """Drop what :meth:`remember` kept for ``call_id``, and the realm-wide challenges of
        its protection spaces and of ``spaces`` (refused credentials are not tried on the
        next dialog either)."""
        kept = self._by_call_id.pop(call_id, None) if call_id is not None else None
        for key in [*(kept or ()), *spaces]:
            self._by_space.pop(key, None)

    def next_nonce(self, call_id: str | None, nonce: str) -> None:
        """A 2xx's ``Authentication-Info: nextnonce`` (RFC 3261 §20.6, RFC 2617 §3.2.3):
        the next request with ``call_id`` answers the server's (``WWW-Authenticate``)
        challenge with ``nonce``. Ignored when ``call_id`` has no such challenge cached, or
        several realms of it (the field does not say which it is for)."""
        spaces = self._by_call_id.get(call_id) if call_id is not None else None
        if not spaces:
            return
        servers = [key for key in spaces if not key[0]]
        if len(servers) == 1 and nonce and spaces[servers[0]].nonce != nonce:
            key = servers[0]
            spaces[key] = dataclasses.replace(spaces[key], nonce=nonce, stale=False)
            if key in self._by_space:
                self._by_space[key] = spaces[key]

    def response_auth(self, credentials: DigestCredentials, body: bytes = b"") -> str:
        """The ``rspauth`` a server that knows our password sends for ``credentials`` (ours,
        as sent): :func:`response_auth` with our password (and our username where the
        credentials carried its hash, ``userhash``, RFC 7616 §3.4.4)."""
        if credentials.userhash:
            credentials = dataclasses.replace(credentials, username=self.username)
        return response_auth(credentials, self._password, body)

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
        cnonce = self._session_cnonce(challenge.nonce) if sess else self._cnonce() if chosen else None
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

    ``challenge`` is the last challenge answered or pre-empted; ``attempts`` counts the
    retries made.

    Credentials reused (RFC 3261 §22.3): :meth:`preempt` gives a new request the
    credentials its client has cached for the request's Call-ID before it is first sent
    (``nc`` counting on, RFC 7616 §3.4); :meth:`settle` files the final response: the
    challenges answered (and any ``nextnonce``) are cached for the Call-ID, a refusal drops
    them. A challenge to a request that carried cached credentials is answered like a first
    one (the cached nonce may have expired without the server saying ``stale``), once.
    ``server_authenticated``: after :meth:`settle`, True when the 2xx's
    ``Authentication-Info`` carried the ``rspauth`` only a server knowing the password can
    compute (RFC 2617 §3.2.3), False when it carried a wrong one, None without one.
    """

    def __init__(self, client: DigestClient | None, max_retries: int = 4) -> None:
        self.client = client
        self.max_retries = max_retries
        self.challenge: DigestChallenge | None = None
        self.answered: dict[tuple[bool, str], DigestChallenge] = {}
        self.preempted: dict[tuple[bool, str], DigestChallenge] = {}
        self._stale_used: set[tuple[bool, str]] = set()
        self.attempts = 0
        self.refused: str | None = None
        self.challenged: list[Response] = []  # every 401/407 seen, in order
        self.server_authenticated: bool | None = None

    def preempt(self, request: Request) -> Request:
        """``request`` (not yet sent; changed in place and returned) with credentials for
        every challenge its client has cached for its Call-ID (RFC 3261 §22.3). Nothing is
        added without a client or cache entry, to an ACK or CANCEL (they take the INVITE's
        credentials, §13.2.2.4, §9.1), or to a request that already carries credentials."""
        client = self.client
        if client is None or not client.caching or request.method in ("ACK", "CANCEL"):
            return request
        cached = client.cached(request.call_id)
        if not cached or "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
            return request
        for challenge in cached:
            self.preempted[(challenge.proxy, challenge.realm)] = challenge
            name, value = client.authorization(challenge, request.method, request.uri, request.body)
            request.headers.add(name, value)
        self.challenge = cached[-1]
        return request

    def settle(self, request: Request, response: Response | None) -> None:
        """File ``response``, the final response to ``request`` (the last one sent), in the
        client's cache for the request's Call-ID: a 401/407 this rule did not answer again,
        or a 403, drops the entry (the credentials were refused); any other final response
        keeps the challenges answered and pre-empted, with a 2xx's ``nextnonce``. Checks a
        2xx's ``rspauth`` (:attr:`server_authenticated`). No-op without a client or
        response."""
        client = self.client
        if client is None or response is None or response.status_code < 200:
            return
        call_id = request.call_id
        code = response.status_code
        if code in (401, 403, 407):
            if self.answered or self.preempted:
                client.forget(call_id, [*self.preempted, *self.answered])
            return
        spaces = {**self.preempted, **self.answered}
        if not spaces:
            return
        client.remember(call_id, spaces.values())
        if code >= 300:
            return
        info_value = response.headers.get("Authentication-Info")
        if info_value is None:
            return
        info = parse_authentication_info(info_value)
        nextnonce = info.get("nextnonce")
        rspauth = info.get("rspauth")
        if rspauth is not None:
            self.server_authenticated = self._rspauth_matches(request, response, rspauth.lower())
        if nextnonce:
            client.next_nonce(call_id, nextnonce)

    def _rspauth_matches(self, request: Request, response: Response, rspauth: str) -> bool:
        import hmac  # here: hmac and hashlib are not on the start-up path of unchallenged commands

        assert self.client is not None
        for value in request.headers.get_all("Authorization"):
            try:
                credentials = DigestCredentials.parse(value)
            except SIPParseError:
                continue
            if credentials.algorithm in ALGORITHMS and credentials.qop in (None, "auth", "auth-int"):
                expected = self.client.response_auth(credentials, response.body)
                if hmac.compare_digest(expected, rspauth):
                    return True
        return False

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
        spaces = {**self.preempted, **self.answered}  # cached ones not challenged again go along
        return self._with_credentials(request, list(spaces.values()), via)

    def _with_credentials(self, request: Request, challenges: list[DigestChallenge], via: str) -> Request:
        if self.client is None:
            raise ValueError("no credentials to answer the challenge with")
        retry = resend_request(request, via)
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
    import hmac  # as in _rspauth_matches

    return hmac.compare_digest(expected, credentials.response)


def response_auth(credentials: DigestCredentials, password: str, body: bytes = b"") -> str:
    """The ``rspauth`` of an ``Authentication-Info`` (RFC 2617 §3.2.3, RFC 3261 §20.6) for
    a request that carried ``credentials``: the ``response`` computed with an empty method
    (``A2 = ":" digest-uri``; ``auth-int``: with H(response body)), so only a server that
    knows ``password`` can give it. Lower-case hex. Raises ``ValueError`` for an unknown
    algorithm."""
    return digest_response(credentials.algorithm, credentials.username, credentials.realm, password, "",
                           credentials.uri, credentials.nonce, credentials.nc, credentials.cnonce,
                           credentials.qop, body)


def parse_authentication_info(value: str) -> dict[str, str]:
    """The parameters of an ``Authentication-Info`` value (RFC 3261 §20.6, §25.1 ``ainfo``:
    ``nextnonce``, ``qop``, ``rspauth``, ``cnonce``, ``nc``), names lower-cased, quoted
    values unquoted. Never raises: a value that does not parse gives the parameters read
    before the fault (``{}`` at worst)."""
    params: dict[str, str] = {}
    pos = 0
    while (match := _PARAM_RE.match(value, pos)) is not None and match.end() > pos:
        params.setdefault(match.group(1).lower(), unquote_string(match.group(2)))
        pos = match.end()
    return params


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
