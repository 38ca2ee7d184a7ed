"""The lab's registrar and its digest guard, sans-IO (times are passed in, in seconds).

- :class:`NonceGuard` issues and checks digest nonces (RFC 7616 §3.3, §3.5; RFC 3261
  §22.4): a nonce is ``<issue time>.<HMAC of it>`` under a per-process secret, so any
  nonce this lab issued is recognised without state; one older than ``lifetime`` seconds
  gets a new challenge with ``stale=true`` (the client retries without asking its user).
  Responses are checked by :func:`skinnysip.sip.auth.verify_credentials`.
- :class:`Registrar` keeps the bindings of RFC 3261 §10.3: per user, any number of
  contacts, each with its expiry (``expires`` Contact parameter, else the ``Expires``
  header field, else ``default_expires``; shorter than ``min_expires`` → 423 with
  ``Min-Expires``, longer → capped at ``max_expires``), ``Contact: *`` with ``Expires: 0``
  removes them all, a contact with expires 0 is removed, Call-ID/CSeq ordering is kept
  (an older CSeq of the same Call-ID is refused). Each binding keeps the
  :class:`~skinnysip.sip.transaction.Flow` its REGISTER came on, so a request for a UA
  behind a TCP/TLS connection or a NAT goes back over that flow (RFC 5626 style).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from skinnysip.sip.auth import DigestCredentials, challenge_value, verify_credentials
from skinnysip.sip.message import Request, SIPParseError
from skinnysip.sip.syntax import uint_or_none
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = ["AuthResult", "Binding", "NonceGuard", "RegisterOutcome", "Registrar"]

MAX_CONTACTS_PER_USER = 16


@dataclass(frozen=True)
class AuthResult:
    """What :meth:`NonceGuard.check` found: ``user`` authenticated (None: not), ``stale``
    (right password, expired nonce: challenge again with ``stale=true``), ``reason``
    (why not, one line, for the record)."""

    user: str | None
    stale: bool = False
    reason: str = ""


class NonceGuard:
    """Digest challenges and checks for one ``realm`` (qop ``auth``). ``algorithms``: one
    challenge per algorithm, in this order (RFC 8760 §2.4: strongest first, so that a client
    picks the strongest it supports; e.g. ``("SHA-256", "MD5")`` serves SHA-256 clients and
    MD5-only ones). ``passwords``: user → password. ``lifetime``: seconds a nonce stays
    fresh. ``secret``: HMAC key (random by default). ``per_user``: user → algorithms for
    that user instead (a server keeps credentials per algorithm; an MD5-only phone and a
    SHA-256 one can then share a lab even when the MD5-only one fails on a SHA-256 challenge,
    as baresip 1.0 does)."""

    def __init__(self, realm: str, passwords: dict[str, str], *, algorithms: tuple[str, ...] = ("MD5",),
                 lifetime: float = 300.0, secret: bytes | None = None,
                 per_user: dict[str, tuple[str, ...]] | None = None) -> None:
        self.realm = realm
        self.passwords = dict(passwords)
        self.algorithms = algorithms
        self.per_user = dict(per_user or {})
        self.lifetime = lifetime
        self._secret = secret or secrets.token_bytes(32)
        self.opaque = secrets.token_hex(8)

    def nonce(self, now: float) -> str:
        """A nonce issued at ``now`` (seconds, wall clock)."""
        stamp = f"{now:.3f}"
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def _issued(self, nonce: str) -> float | None:
        stamp, _, mac = nonce.rpartition(".")
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not stamp or not hmac.compare_digest(mac, expected):
            return None
        try:
            return float(stamp)
        except ValueError:
            return None

    def algorithms_for(self, user: str | None) -> tuple[str, ...]:
        """The algorithms challenged for ``user`` (the lab's, unless the user has their own)."""
        return self.per_user.get(user or "", self.algorithms)

    def challenge(self, now: float, *, proxy: bool, stale: bool = False,
                  user: str | None = None) -> list[tuple[str, str]]:
        """[(header name, value)], one per algorithm of ``user``: ``WWW-Authenticate`` for a
        401, ``Proxy-Authenticate`` for a 407 (RFC 3261 §22.1, §22.3)."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self.nonce(now)
        return [(name, challenge_value(self.realm, nonce, algorithm=algorithm, qop="auth", opaque=self.opaque,
                                       stale=stale)) for algorithm in self.algorithms_for(user)]

    def check(self, request: Request, now: float, *, proxy: bool,
              uri_ok: Callable[[str], bool] | None = None) -> AuthResult:
        """Check the credentials of ``request`` for our realm (``Proxy-Authorization`` when
        ``proxy``, else ``Authorization``). The credentials' ``uri`` must be the
        Request-URI (RFC 7616 §3.4.6 asks the server to check it) or a URI ``uri_ok``
        accepts (SIPp 3.6 names the server it sends to, ``sip:IP:port``, there)."""
        name = "Proxy-Authorization" if proxy else "Authorization"
        values = request.headers.get_all(name)
        if not values:
            return AuthResult(None, reason="no credentials")
        for value in values:
            try:
                cred = DigestCredentials.parse(value)
            except SIPParseError as exc:
                return AuthResult(None, reason=f"bad credentials: {exc.reason}")
            if cred.realm != self.realm:
                continue  # credentials for another realm (RFC 3261 §22.3): not ours
            password = self.passwords.get(cred.username)
            if password is None:
                return AuthResult(None, reason=f"unknown user {cred.username!r}")
            if cred.algorithm not in self.algorithms_for(cred.username):
                return AuthResult(None, reason=f"algorithm {cred.algorithm} was not challenged")
            if cred.uri != request.uri and not (uri_ok is not None and uri_ok(cred.uri)):
                return AuthResult(None, reason="credentials for another Request-URI")
            issued = self._issued(cred.nonce)
            if issued is None:
                return AuthResult(None, reason="a nonce we did not issue")
            if not verify_credentials(cred, password, request.method, request.body):
                return AuthResult(None, reason=f"wrong password for {cred.username}")
            if now - issued > self.lifetime:
                return AuthResult(None, stale=True, reason="nonce expired")
            return AuthResult(cred.username)
        return AuthResult(None, reason=f"no credentials for realm {self.realm!r}")


@dataclass
class Binding:
    """One contact bound to a user (RFC 3261 §10.3): ``contact`` (the Contact value as
    registered, without ``expires``), ``uri`` (its URI text), ``expires_at`` (seconds, the
    registrar's clock), ``flow`` (where the REGISTER came from), ``call_id``/``cseq`` of the
    REGISTER that last refreshed it, ``q`` (preference)."""

    user: str
    contact: NameAddr
    uri: str
    expires_at: float
    flow: Flow
    call_id: str
    cseq: int
    q: float = 1.0

    def remaining(self, now: float) -> int:
        """Whole seconds left (at least 0)."""
        return max(0, int(self.expires_at - now + 0.5))


@dataclass
class RegisterOutcome:
    """The answer to a REGISTER: ``code`` (200, 400, 423, 500), extra ``headers``
    (Contact list with ``expires``, Min-Expires, Date) and ``reason`` for errors."""

    code: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""


def _comparable(uri: str) -> str:
    """A contact URI for comparison (§10.3 step 7 uses §19.1.4 URI equality; lower-casing
    scheme and host and dropping the order of parameters is close enough here)."""
    try:
        parsed = SipURI.parse(uri)
    except SIPParseError:
        return uri
    params = ";".join(sorted(f"{k.lower()}={(v or '').lower()}" for k, v in parsed.params.items()))
    return f"{parsed.scheme}:{parsed.user or ''}@{parsed.host.lower()}:{parsed.port or ''};{params}"


class Registrar:
    """The location service of the lab (RFC 3261 §10.3): user → bindings. ``users``: the
    users that may register. Expiry bounds in seconds."""

    def __init__(self, users: set[str], *, min_expires: int = 10, max_expires: int = 3600,
                 default_expires: int = 3600) -> None:
        self.users = set(users)
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.bindings: dict[str, list[Binding]] = {}

    def lookup(self, user: str, now: float) -> list[Binding]:
        """The live bindings of ``user``, highest ``q`` first (expired ones removed)."""
        self.expire(now)
        return sorted(self.bindings.get(user, []), key=lambda b: -b.q)

    def expire(self, now: float) -> None:
        """Drop every binding whose time is up."""
        for user in list(self.bindings):
            live = [b for b in self.bindings[user] if b.expires_at > now]
            if live:
                self.bindings[user] = live
            else:
                del self.bindings[user]

    def all(self, now: float) -> list[Binding]:
        """Every live binding."""
        self.expire(now)
        return [b for items in self.bindings.values() for b in items]

    def _contact_list(self, user: str, now: float) -> list[tuple[str, str]]:
        return [("Contact", f"{b.contact};expires={b.remaining(now)}") for b in self.lookup(user, now)]

    def register(self, user: str, request: Request, flow: Flow, now: float) -> RegisterOutcome:
        """Apply an authenticated REGISTER of ``user`` received on ``flow`` (§10.3 steps
        6-8). Without Contact it is a query: 200 with the current bindings."""
        try:
            call_id = request.call_id or ""
            cseq = request.cseq[0]
            contacts = [v for v in request.headers.values("Contact") if v.strip()]
        except SIPParseError as exc:
            return RegisterOutcome(400, reason=exc.reason)
        header_expires: int | None = None
        raw = request.headers.get("Expires")
        if raw is not None:
            asked = uint_or_none(raw)
            if asked is None:
                return RegisterOutcome(400, reason="bad Expires value")
            header_expires = min(asked, 2**31)
        current = list(self.lookup(user, now))
        if any(c.strip() == "*" for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                return RegisterOutcome(400, reason="Contact: * needs Expires: 0 and no other Contact (§10.2.2)")
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    return RegisterOutcome(500, reason="CSeq not above the last REGISTER of this Call-ID")
            self.bindings.pop(user, None)
            return RegisterOutcome(200, [("Date", _http_date(now))])
        parsed: list[tuple[NameAddr, int]] = []
        for value in contacts:
            try:
                contact = NameAddr.parse(value)
            except SIPParseError as exc:
                return RegisterOutcome(400, reason=f"bad Contact: {exc.reason}")
            expires = header_expires
            param = contact.params.get("expires")
            if param is not None:
                number = uint_or_none(param)
                if number is None:
                    return RegisterOutcome(400, reason="bad Contact expires parameter")
                expires = min(number, 2**31)
            if expires is None:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                return RegisterOutcome(423, [("Min-Expires", str(self.min_expires))],
                                       reason=f"{expires} s is below {self.min_expires} s")
            parsed.append((contact, min(expires, self.max_expires)))
        for contact, expires in parsed:
            uri = str(contact.uri)
            key = _comparable(uri)
            old = next((b for b in current if _comparable(b.uri) == key), None)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return RegisterOutcome(500, reason="CSeq not above the last REGISTER of this Call-ID")
            if old is not None:
                current.remove(old)
            if expires == 0:
                continue
            try:
                q = float(contact.params.get("q") or 1.0)
            except ValueError:
                q = 1.0
            stored = NameAddr(contact.display_name, contact.uri,
                              {k: v for k, v in contact.params.items() if k != "expires"})
            current.append(Binding(user, stored, uri, now + expires, flow, call_id, cseq, q))
        if len(current) > MAX_CONTACTS_PER_USER:
            current = sorted(current, key=lambda b: b.expires_at)[-MAX_CONTACTS_PER_USER:]
        if current:
            self.bindings[user] = current
        else:
            self.bindings.pop(user, None)
        return RegisterOutcome(200, [*self._contact_list(user, now), ("Date", _http_date(now))])


def _http_date(now: float) -> str:
    """A ``Date`` value (RFC 3261 §20.17, RFC 1123 format) — the registrar's clock is
    monotonic, so the wall clock is read here."""
    import email.utils
    import time

    del now
    return email.utils.formatdate(time.time(), usegmt=True)

