"""The lab's registrar and its digest guard, sans-IO (times are passed in, in seconds).

- :class:`NonceGuard` issues and checks digest nonces (RFC 7616 §3.3, §3.5; RFC 3261
  §22.4): a nonce is ``<issue time>.<random>.<HMAC of both>`` under a per-process secret, so any
  nonce this lab issued is recognised without state; one older than ``lifetime`` seconds
  gets a new challenge with ``stale=true`` (the client retries without asking its user).
  Responses are checked by :func:`skinnysip.sip.auth.verify_credentials`. A nonce may be
  used again (clients reuse credentials within a Call-ID, RFC 3261 §22.3) under a growing
  ``nc`` only: the highest ``nc`` seen per user and nonce is kept (at most
  :data:`MAX_NONCE_COUNTS` of them, the oldest forgotten first), and a count not above
  it — a replayed request — gets a ``stale=true`` challenge (RFC 7616 §3.4: ``nc`` lets a server detect replays).
- :class:`Registrar` keeps the bindings of RFC 3261 §10.3: per user, any number of
  contacts, each with its expiry (``expires`` Contact parameter, else the ``Expires``
  header field, else ``default_expires``; shorter than ``min_expires`` → 423 with
  ``Min-Expires``, longer → capped at ``max_expires``), ``Contact: *`` with ``Expires: 0``
  removes them all, a contact with expires 0 is removed, Call-ID/CSeq ordering is kept
  (an older CSeq of the same Call-ID is refused). Each binding keeps the
  :class:`~skinnysip.sip.transaction.Flow` its REGISTER came on, so a request for a UA
  behind a TCP/TLS connection or a NAT goes back over that flow (RFC 5626 style).
- SIP outbound (RFC 5626 §6): a Contact with ``+sip.instance`` and ``reg-id`` in a REGISTER
  whose ``Supported`` lists ``outbound`` makes an *outbound binding*, keyed by (AoR,
  instance-id, reg-id) instead of the Contact URI: a REGISTER over a new flow replaces it,
  whatever its Contact URI. The 200 then carries ``Require: outbound`` and ``Flow-Timer``
  (seconds the lab waits for a keep-alive before it may treat the flow as dead: by default
  120 on TCP/TLS and 29 on UDP, the RFC's own keep-alive defaults of §4.4.1, so a UA keeps
  its usual rhythm). More than one Contact with ``reg-id`` → 400; ``reg-id`` over more than
  one hop without a ``Path`` with ``ob`` → 439 (the lab is the first hop, §6 step 2). A
  ``reg-id`` without ``+sip.instance``, or without ``Supported: outbound``, is ignored.
- Path (RFC 3327): a REGISTER's ``Path`` values are kept with its bindings (requests to them
  are routed through those proxies) and given back in the 200 when ``Supported`` lists ``path``.
- GRUU (RFC 5627 §5): a REGISTER with ``Supported: gruu`` gets, on every Contact with an
  instance-id, ``pub-gruu`` (the AoR with ``gr=<instance-id>``) and ``temp-gruu`` (an
  unguessable ``sip:tgruu.<token>@<domain>;gr``, a new one per registration; it stays valid
  while the registrar remembers it: at most :data:`MAX_TEMP_GRUUS` in all,
  :data:`MAX_TEMP_GRUUS_PER_INSTANCE` per instance, and not past a REGISTER of that
  instance under another Call-ID, which is a reboot, §5.2). :meth:`Registrar.gruu_bindings`
  resolves a GRUU Request-URI (§5.5: 404 unknown, 480 nothing registered);
  :func:`pick_targets` keeps one flow per instance (RFC 5626 §5.3, §7).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from skinnysip.sip.auth import DigestCredentials, challenge_value, response_auth, verify_credentials
from skinnysip.sip.message import Request, SIPParseError
from skinnysip.sip.syntax import quote_string, uint_or_none
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = [
    "DEFAULT_FLOW_TIMER",
    "DEFAULT_FLOW_TIMER_UDP",
    "MAX_CONTACTS_PER_USER",
    "MAX_TEMP_GRUUS",
    "MAX_TEMP_GRUUS_PER_INSTANCE",
    "AuthResult",
    "Binding",
    "NonceGuard",
    "RegisterOutcome",
    "Registrar",
    "pick_targets",
]

MAX_CONTACTS_PER_USER = 16
#: temporary GRUUs remembered in all (the oldest are forgotten first) and per (AoR, instance)
MAX_TEMP_GRUUS = 4096
MAX_TEMP_GRUUS_PER_INSTANCE = 8
#: Flow-Timer (seconds) of an outbound 200 OK: TCP/TLS/WS flows, UDP flows (RFC 5626 §4.4.1's
#: keep-alive defaults: 95-120 s on streams, 24-29 s on UDP, whose NAT bindings die sooner)
DEFAULT_FLOW_TIMER = 120
DEFAULT_FLOW_TIMER_UDP = 29
#: the user part of a temporary GRUU starts with this (the rest is a random token)
TEMP_GRUU_PREFIX = "tgruu."
#: a reg-id is a positive 31-bit integer (RFC 5626 §11.1: 1*DIGIT, no leading zero; bounded here)
MAX_REG_ID = 2**31 - 1


@dataclass(frozen=True)
class AuthResult:
    """What :meth:`NonceGuard.check` found: ``user`` authenticated (None: not), ``stale``
    (right password, expired nonce: challenge again with ``stale=true``), ``reason``
    (why not, one line, for the record)."""

    user: str | None
    stale: bool = False
    reason: str = ""
    credentials: DigestCredentials | None = None  # the ones that authenticated ``user``


#: nonces whose highest ``nc`` :class:`NonceGuard` remembers (replay detection, RFC 7616 §3.4)
MAX_NONCE_COUNTS = 8192


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
        self._counts: dict[tuple[str, str, str], int] = {}  # (user, nonce, algorithm) → highest nc accepted

    def nonce(self, now: float) -> str:
        """A nonce issued at ``now`` (seconds, wall clock): ``<time>.<12 random hex>.<HMAC>``,
        so two challenges in one millisecond differ (each starts its own ``nc`` count)."""
        issued = f"{now:.3f}.{secrets.token_hex(6)}"
        mac = hmac.new(self._secret, issued.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{issued}.{mac}"

    def _issued(self, nonce: str) -> float | None:
        issued, _, mac = nonce.rpartition(".")
        expected = hmac.new(self._secret, issued.encode(), hashlib.sha256).hexdigest()[:32]
        if not issued or not hmac.compare_digest(mac, expected):
            return None
        try:
            return float(issued.rpartition(".")[0])
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
            if cred.qop and not self._count_grows((cred.username, cred.nonce, cred.algorithm), cred.nc or ""):
                return AuthResult(None, stale=True, reason=f"nc {cred.nc} not above the last under this nonce "
                                                           "(a replayed request?)")
            return AuthResult(cred.username, credentials=cred)
        return AuthResult(None, reason=f"no credentials for realm {self.realm!r}")

    def authentication_info(self, result: AuthResult) -> tuple[str, str] | None:
        """The ``Authentication-Info`` field for a 2xx to a request ``result`` authenticated
        (RFC 3261 §20.6, RFC 2617 §3.2.3): ``nextnonce`` (the same nonce: the client may go on
        counting under it), ``qop``, ``rspauth`` (proves to the client that the lab knows its
        password), ``cnonce``, ``nc``. None without qop credentials."""
        cred = result.credentials
        if cred is None or result.user is None or not cred.qop:
            return None
        rspauth = response_auth(cred, self.passwords[result.user])
        return ("Authentication-Info", f"nextnonce={quote_string(cred.nonce)}, qop={cred.qop}, "
                f"rspauth={quote_string(rspauth)}, cnonce={quote_string(cred.cnonce or '')}, nc={cred.nc}")

    def _count_grows(self, key: tuple[str, str, str], nc: str) -> bool:
        """Record ``nc`` (8 hex digits, RFC 7616 §3.4) under ``key`` (user, nonce, algorithm: a
        nonce is a time stamp, so users challenged in the same millisecond share it); False
        when it is not above the highest seen (or not a count at all)."""
        try:
            count = int(nc, 16) if len(nc) == 8 else -1
        except ValueError:
            return False
        if count < 1 or count <= self._counts.get(key, 0):
            return False
        self._counts.pop(key, None)
        self._counts[key] = count
        while len(self._counts) > MAX_NONCE_COUNTS:
            del self._counts[next(iter(self._counts))]
        return True


@dataclass
class Binding:
    """One contact bound to a user (RFC 3261 §10.3): ``contact`` (the Contact value as
    registered, without ``expires`` and GRUU parameters), ``uri`` (its URI text),
    ``expires_at`` (seconds, the registrar's clock), ``flow`` (where the REGISTER came from),
    ``call_id``/``cseq`` of the REGISTER that last refreshed it, ``q`` (preference).
    ``instance``: the ``+sip.instance`` value without quotes and ``<>`` (``urn:uuid:…``,
    as given; None without one); ``reg_id``: set only for an outbound binding (RFC 5626 §6);
    ``temp_gruu``: the newest temporary GRUU made for it (RFC 5627 §5.2), None if none;
    ``updated``: when a REGISTER last refreshed it (registrar's clock). ``path``: the
    REGISTER's ``Path`` values, in order (RFC 3327: the proxies between us and the UA, which
    requests to the binding are routed through)."""

    user: str
    contact: NameAddr
    uri: str
    expires_at: float
    flow: Flow
    call_id: str
    cseq: int
    q: float = 1.0
    instance: str | None = None
    reg_id: int | None = None
    temp_gruu: str | None = None
    updated: float = 0.0
    path: tuple[str, ...] = ()

    @property
    def outbound(self) -> bool:
        """True for an RFC 5626 binding: reached only over its flow (or another flow of its instance)."""
        return self.reg_id is not None

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


def pick_targets(bindings: list[Binding], alive: Callable[[Binding], bool]) -> tuple[list[Binding], bool]:
    """The bindings to fork a request to, and whether an instance was left out because all
    its flows failed. At most one binding per (AoR, instance-id) (RFC 5626 §7, RFC 5627
    §5.5): its outbound bindings in ``reg_id`` order whose flow ``alive`` accepts (§5.3: the
    next flow when one has failed), then its other bindings, newest first. Bindings without
    an instance-id are all kept. Order: that of ``bindings``, at each instance's first
    binding. ``(chosen, flow_failed)``: ``flow_failed`` is True when some instance had only
    outbound bindings and none had a live flow (the caller answers 430 when nothing else
    is left, RFC 5626 §11.4)."""
    chosen: list[Binding] = []
    seen: set[tuple[str, str]] = set()
    failed = False
    for binding in bindings:
        if binding.instance is None:
            chosen.append(binding)
            continue
        key = (binding.user, binding.instance)
        if key in seen:
            continue
        seen.add(key)
        group = [b for b in bindings if (b.user, b.instance) == key]
        flows = sorted((b for b in group if b.outbound), key=lambda b: b.reg_id or 0)
        plain = sorted((b for b in group if not b.outbound), key=lambda b: -b.updated)
        pick = next((b for b in flows if alive(b)), None) or next(iter(plain), None)
        if pick is None:
            failed = True
            continue
        chosen.append(pick)
    return chosen, failed


@dataclass(frozen=True)
class _TempGruu:
    user: str
    instance: str
    call_id: str


class Registrar:
    """The location service of the lab (RFC 3261 §10.3): user → bindings. ``users``: the
    users that may register. Expiry bounds in seconds. ``domain``: the host part of the AoRs
    and of the GRUUs made here (RFC 5627 §3.1). ``flow_timer``/``flow_timer_udp``: the
    ``Flow-Timer`` value (seconds) answered to an outbound REGISTER over a stream / over UDP
    (RFC 5626 §6)."""

    def __init__(self, users: set[str], *, min_expires: int = 10, max_expires: int = 3600,
                 default_expires: int = 3600, domain: str = "localhost", flow_timer: int = DEFAULT_FLOW_TIMER,
                 flow_timer_udp: int = DEFAULT_FLOW_TIMER_UDP) -> None:
        self.users = set(users)
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.domain = domain
        self.flow_timer = flow_timer
        self.flow_timer_udp = flow_timer_udp
        self.bindings: dict[str, list[Binding]] = {}
        #: temporary GRUU user part → what it names, oldest first (bounded: MAX_TEMP_GRUUS)
        self._temp_gruus: OrderedDict[str, _TempGruu] = OrderedDict()

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

    # -- GRUU (RFC 5627) ------------------------------------------------------------------
    def pub_gruu(self, binding: Binding) -> str | None:
        """The public GRUU of ``binding`` (RFC 5627 §3.1: its AoR with ``gr`` = the
        instance-id), None without an instance-id."""
        if binding.instance is None:
            return None
        # the instance-id escaped as a URI parameter value (RFC 5627 §3.1, RFC 3261 §25.1
        # paramchar: unreserved, param-unreserved, escaped); gruu_bindings() unescapes it
        gr = quote(binding.instance, safe="!*'()[]/:&+$")
        return str(SipURI("sip", binding.user, None, self.domain, None, {"gr": gr}))

    def _new_temp_gruu(self, user: str, instance: str, call_id: str) -> str:
        """A new temporary GRUU for (``user``, ``instance``) (RFC 5627 §3.2: it must not
        reveal the AoR and must not be guessable: 96 random bits)."""
        mine = [k for k, v in self._temp_gruus.items() if (v.user, v.instance) == (user, instance)]
        for stale in mine[:max(0, len(mine) - MAX_TEMP_GRUUS_PER_INSTANCE + 1)]:
            del self._temp_gruus[stale]
        token = TEMP_GRUU_PREFIX + secrets.token_hex(12)
        self._temp_gruus[token] = _TempGruu(user, instance, call_id)
        while len(self._temp_gruus) > MAX_TEMP_GRUUS:
            self._temp_gruus.popitem(last=False)
        return str(SipURI("sip", token, None, self.domain, None, {"gr": None}))

    def _forget_temp_gruus(self, user: str, instance: str, live_call_ids: set[str]) -> None:
        """Invalidate the temporary GRUUs of (``user``, ``instance``) made under a Call-ID no
        binding of that instance has any more (RFC 5627 §5.2: a REGISTER under a new Call-ID
        means the UA restarted; one removed or expired is gone)."""
        for token in [k for k, v in self._temp_gruus.items() if (v.user, v.instance) == (user, instance)
                      and v.call_id not in live_call_ids]:
            del self._temp_gruus[token]

    def temp_gruu(self, binding: Binding) -> str | None:
        """The newest temporary GRUU made for ``binding`` while the registrar still remembers
        it (None once it was forgotten or never made)."""
        if binding.temp_gruu is None:
            return None
        token = binding.temp_gruu.split(":", 1)[1].split("@", 1)[0]
        return binding.temp_gruu if token in self._temp_gruus else None

    @staticmethod
    def is_gruu(uri: SipURI) -> bool:
        """True when ``uri`` carries a ``gr`` parameter (RFC 5627 §3.1)."""
        return "gr" in uri.params

    def gruu_bindings(self, uri: SipURI, now: float) -> list[Binding] | tuple[int, str]:
        """The live bindings a GRUU Request-URI (one of this registrar's domain, with ``gr``)
        names (RFC 5627 §5.5), outbound ones by ``reg_id``, or ``(code, reason)``: a public
        GRUU (``gr=<instance-id>``) → the bindings of that AoR with that instance-id; a
        temporary GRUU (bare ``gr``) → those of the instance it was made for; an unknown
        AoR or temporary GRUU → 404; nothing registered for the instance now → 480."""
        gr = uri.params.get("gr")
        if gr:
            user, instance = uri.user or "", unquote(gr)
            if user not in self.users:
                return 404, "Not Found"
        else:
            temp = self._temp_gruus.get(uri.user or "")
            if temp is None:
                return 404, "Not Found (unknown temporary GRUU)"
            user, instance = temp.user, temp.instance
        found = [b for b in self.lookup(user, now) if b.instance == instance]
        if not found:
            return 480, "Temporarily Unavailable (no registration of that instance)"
        return sorted(found, key=lambda b: (b.reg_id is None, b.reg_id or 0, -b.updated))

    # -- REGISTER -------------------------------------------------------------------------
    def _contact_list(self, user: str, now: float, gruu: bool) -> list[tuple[str, str]]:
        out = []
        for b in self.lookup(user, now):
            value = f"{b.contact};expires={b.remaining(now)}"
            pub = self.pub_gruu(b) if gruu else None
            if pub is not None:
                value += f";pub-gruu={quote_string(pub)}"
                temp = self.temp_gruu(b)
                if temp is not None:
                    value += f";temp-gruu={quote_string(temp)}"
            out.append(("Contact", value))
        return out

    def register(self, user: str, request: Request, flow: Flow, now: float) -> RegisterOutcome:
        """Apply an authenticated REGISTER of ``user`` received on ``flow`` (RFC 3261 §10.3
        steps 6-8; RFC 5626 §6; RFC 5627 §5.2). Without Contact it is a query: 200 with the
        current bindings. Codes: 200, 400 (bad Contact/Expires/reg-id, two reg-ids), 423
        (with ``Min-Expires``), 439 (outbound asked beyond the first hop), 500 (old CSeq)."""
        try:
            call_id = request.call_id or ""
            cseq = request.cseq[0]
            contacts = [v for v in request.headers.values("Contact") if v.strip()]
            options = request.headers.option_tags("Supported")
            hops = len(request.headers.values("Via"))
            path = tuple(v.strip() for v in request.headers.values("Path") if v.strip())
        except SIPParseError as exc:
            return RegisterOutcome(400, reason=exc.reason)
        gruu = "gruu" in options
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
        parsed: list[tuple[NameAddr, int, str | None, int | None]] = []
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
            instance = contact.instance
            reg_id: int | None = None
            if "outbound" in options and instance is not None and "reg-id" in contact.params:
                reg_id = uint_or_none(contact.params.get("reg-id") or "", MAX_REG_ID)
                if not reg_id:
                    return RegisterOutcome(400, reason="bad reg-id (a number from 1 to 2^31-1, RFC 5626 §11.1)")
            parsed.append((contact, min(expires, self.max_expires), instance, reg_id))
        if "outbound" in options and sum(1 for c, *_ in parsed if "reg-id" in c.params) > 1:
            return RegisterOutcome(400, reason="more than one Contact with reg-id (RFC 5626 §6)")
        outbound = any(reg_id is not None for *_, reg_id in parsed)
        if outbound and hops > 1 and not _path_with_ob(path):
            return RegisterOutcome(439, reason="First Hop Lacks Outbound Support")
        added: list[Binding] = []
        for contact, expires, instance, reg_id in parsed:
            uri = str(contact.uri)
            key = _comparable(uri)
            if reg_id is not None:  # RFC 5626 §6: the binding is (AoR, instance-id, reg-id)
                olds = [b for b in current if (b.instance, b.reg_id) == (instance, reg_id)
                        or (not b.outbound and _comparable(b.uri) == key)]
            else:
                olds = [b for b in current if _comparable(b.uri) == key]
            if any(old.call_id == call_id and cseq <= old.cseq for old in olds):
                return RegisterOutcome(500, reason="CSeq not above the last REGISTER of this Call-ID")
            for old in olds:
                current.remove(old)
            if expires == 0:
                continue
            try:
                q = float(contact.params.get("q") or 1.0)
            except ValueError:
                q = 1.0
            stored = NameAddr(contact.display_name, contact.uri,
                              {k: v for k, v in contact.params.items() if k not in ("expires", "pub-gruu",
                                                                                     "temp-gruu")})
            binding = Binding(user, stored, uri, now + expires, flow, call_id, cseq, q, instance, reg_id,
                              temp_gruu=next((o.temp_gruu for o in olds if o.instance == instance), None),
                              updated=now, path=path)
            current.append(binding)
            added.append(binding)
        for binding in added:  # the REGISTER is accepted: a new temporary GRUU each (RFC 5627 §5.2)
            if gruu and binding.instance is not None:
                binding.temp_gruu = self._new_temp_gruu(user, binding.instance, call_id)
        if len(current) > MAX_CONTACTS_PER_USER:
            current = sorted(current, key=lambda b: b.expires_at)[-MAX_CONTACTS_PER_USER:]
        if current:
            self.bindings[user] = current
        else:
            self.bindings.pop(user, None)
        for instance in {instance for _, _, instance, _ in parsed if instance is not None}:
            self._forget_temp_gruus(user, instance, {b.call_id for b in current if b.instance == instance})
        headers = [*self._contact_list(user, now, gruu), ("Date", _http_date(now))]
        if outbound:
            timer = self.flow_timer_udp if flow.transport == "udp" else self.flow_timer
            headers += [("Require", "outbound"), ("Flow-Timer", str(timer))]
        if path and "path" in options:  # RFC 3327 §5.3: the path we store, for a UA that knows Path
            headers += [("Path", value) for value in path]
        return RegisterOutcome(200, headers)


def _path_with_ob(path: tuple[str, ...]) -> bool:
    """True when a ``Path`` value of the REGISTER (RFC 3327) has the ``ob`` URI parameter:
    the first hop is an edge proxy that supports outbound (RFC 5626 §5.1)."""
    for value in path:
        try:
            uri = NameAddr.parse(value).uri
        except SIPParseError:
            continue
        if isinstance(uri, SipURI) and "ob" in uri.params:
            return True
    return False


def _http_date(now: float) -> str:
    """A ``Date`` value (RFC 3261 §20.17, RFC 1123 format) — the registrar's clock is
    monotonic, so the wall clock is read here."""
    import email.utils
    import time

    del now
    return email.utils.formatdate(time.time(), usegmt=True)

