"""The SIP probe operations: ``options``, ``register``, ``invite``, ``digest_auth``, ``traceroute``,
``request`` (any other method), ``usrloc`` (a registration's reachability).

Each is an ``async`` function taking a :class:`ProbeRequest` and returning a result dataclass
(a :class:`skinnysip.result.Result`) whose ``to_api()`` is the HTTP API's
response body. They never raise for network or peer problems: those give
``success: false`` and a one-line ``error``. ``success`` means the probe ran to the end and
got a final response (any status). Every result carries the whole ``exchange``: every
message sent and received (retransmissions, ACK, CANCEL, BYE included).

They are short flows on the SIP core: a :class:`~skinnysip.net.sip_endpoint.SIPEndpoint`
(its own UDP socket, bound and listening, or TCP/TLS connections), RFC 3263 server
location with failover to the next target when one does not answer, the transaction
layer, the core's one digest retry rule and :class:`~skinnysip.sip.dialog.Dialog`.

Units: the Python request uses seconds (``timeout``, ``t1``); results use milliseconds
(``rtt``: from the first transmission of the request that got the reported final response
to that response's arrival, both as the transport stamped them in the exchange — the same
two points and the same clock the ladder shows; see
:func:`~skinnysip.net.sip_endpoint.round_trip`).

Sources: RFC 3261 (§8.1 requests, §10 REGISTER, §11 OPTIONS, §13 INVITE, §9 CANCEL,
§17 transactions, §22 authentication), RFC 3263 (server location), RFC 3581 (``rport``),
RFC 7616 / RFC 8760 (Digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from skinnysip import policy as target_policy
from skinnysip._regex import compile_on_use
from skinnysip.addresses import check_host, format_host, hostport, strip_brackets
from skinnysip.net.resolver import Resolver, ServerTarget, default_port
from skinnysip.net.sip_endpoint import (
    USER_AGENT,
    ClientEvent,
    ClientHandle,
    SIPEndpoint,
    SIPTransportError,
    round_trip,
)
from skinnysip.net.trace import to_wire_messages, wire_time
from skinnysip.result import (
    MAX_EXCHANGE_BYTES,
    MAX_EXCHANGE_MESSAGES,
    ExchangeLimit,
    Result,
    TLSInfo,
    WireMessage,
)
from skinnysip.sip.auth import ChallengeRetry, DigestChallenge, DigestClient, challenges_from
from skinnysip.sip.headers import parse_warning
from skinnysip.sip.message import Request, Response, SIPParseError, canonical_name
from skinnysip.sip.request import (
    build_ack_for_failure,
    build_cancel,
    check_header_field,
    check_one_request,
    new_call_id,
    new_request,
    new_tag,
)
from skinnysip.sip.syntax import parse_uint
from skinnysip.sip.transaction import Flow, Timers

if TYPE_CHECKING:
    from skinnysip.sip.identity import IdentitySigner
from skinnysip.sip.transactions import (
    LayerEvent,
    RequestReceived,
    ResponseReceived,
    SuccessRetransmission,
    TimedOut,
    TransportFailed,
)
from skinnysip.sip.uri import NameAddr, SipURI, parse_uri

__all__ = [
    "USER_RE",
    "DigestAuthResult",
    "HeaderField",
    "InviteResult",
    "OptionsResult",
    "ProbeRequest",
    "RegisterResult",
    "RequestResult",
    "SIPProbeResult",
    "TraceHop",
    "TracerouteResult",
    "USRLOC_METHODS",
    "UsrlocResult",
    "check_host",
    "check_party",
    "check_uri",
    "check_user",
    "digest_auth",
    "invite",
    "options",
    "request",
    "traceroute",
    "register",
]

RAW_LIMIT = 16384  # characters of the final response kept in ``raw``
DEFAULT_USER = "probe"
_URI_SCHEME_RE = compile_on_use(r"^(sips?|tel):", re.I)


# --------------------------------------------------------------------------- request

# RFC 3261 §25.1 user part without escapes and without ; ? / (which would end a URI part)
USER_RE = compile_on_use(r"[A-Za-z0-9._~+\-!*'()&=$,]{1,128}")


def check_user(value: str) -> str:
    """A user name for URIs and Digest: 1-128 of letters, digits and ``._~+-!*'()&=$,``."""
    if not USER_RE.fullmatch(value):
        raise ValueError("only letters, digits and ._~+-!*'()&=$, allowed (1-128)")
    return value


def check_party(value: str) -> str:
    """A user part (``alice``) or a full ``sip:``/``sips:``/``tel:`` URI."""
    if _URI_SCHEME_RE.match(value):
        return check_uri(value)
    if not USER_RE.fullmatch(value):
        raise ValueError("not a SIP user part or sip:/sips:/tel: URI")
    return value


def check_uri(value: str) -> str:
    """A ``sip:``/``sips:``/``tel:`` URI (RFC 3261 §19.1, RFC 3966)."""
    if any(c in value for c in "\r\n\t ") or len(value) > 1024:
        raise ValueError("not a valid URI (whitespace or too long)")
    try:
        SipURI.parse(value)
    except SIPParseError as exc:
        raise ValueError(f"not a valid SIP URI: {exc.reason}") from exc
    return value




@dataclass
class ProbeRequest:
    """What to probe and how (Python units: seconds).

    ``host``: name, IPv4 or IPv6 literal. ``port``: explicit port; None: located by
    RFC 3263 (SRV for the transport, else 5060, or 5061 for TLS; IP literals skip DNS).
    ``transport``: ``udp``/``tcp``/``tls``, or ``ws``/``wss`` (SIP over WebSocket, RFC 7118:
    default port 80/443, the handshake asks for ``ws_path``); None (Python only): chosen by
    RFC 3263 (NAPTR, then SRV, else UDP; TLS for ``sips``). ``nameservers``: DNS servers to ask, as
    ``[(ip, port)]`` (Python only; default: the system's). ``scheme``: ``sip`` or ``sips`` (the URIs we
    build; ``sips`` needs TLS). ``uri``: the Request-URI (default per operation).
    ``from_uri``/``to_uri``: a user part (``alice``) or a full ``sip:``/``sips:``/``tel:``
    URI. ``username``/``password``: Digest credentials (``username`` is also the user of
    REGISTER's To/From/Contact; default ``probe``). ``domain``: SIP domain of built URIs
    (default: host, with the port if not the scheme's default). ``timeout``: seconds to wait
    for each final response (and for connecting); whatever the peer sends, the whole
    operation ends within ``steps × timeout + 1 s`` (:func:`operation_budget`; steps:
    OPTIONS and REGISTER 2, digest-auth 6, INVITE 8). ``t1``: RFC 3261 T1 in seconds
    (retransmission base on UDP). ``tls_verify``/``ca_file``: TLS certificate checking.
    ``expires``: the Expires of digest-auth's REGISTER (seconds; 0 = only de-register).
    ``max_exchange_messages``/``max_exchange_bytes``: the bound of the result's ``exchange``
    (the first messages within both are kept, later ones only counted in
    ``dropped_messages``; default 1000 messages, 1,000,000 octets of raw text).
    ``identity``: INVITE's STIR/SHAKEN signer (:class:`~skinnysip.sip.identity.IdentitySigner`,
    RFC 8224 §5): the INVITE carries a Date and an Identity whose PASSporT names the From's
    number as ``orig`` and the Request-URI's as ``dest`` — what a verification service (an
    SBC, Kamailio's secsipid) makes of a signed call, or of a forged one.
    ``digest_checks``: digest-auth also tries, after a successful login, whether the server
    takes the credentials again under the next ``nc`` (RFC 3261 §22.3 credential reuse) and whether
    it takes the login's own Authorization sent again (a replay; RFC 7616 §3.4: ``nc`` lets a server detect replays): two more
    REGISTERs of the test binding. ``enumeration_check``: digest-auth also logs in as a user
    that cannot exist and as ``username`` with a wrong password, each with ``Expires: 0``
    (no binding is made), and compares the two answers: a server that answers them
    differently tells anyone which users exist (RFC 3261 §26.1.5's concern; what
    ``svwar`` looks for). Mind that the wrong password counts towards any lock-out policy.
    ``source_ip``/``source_port``: the local address to send from (an IP literal of this host,
    SIPp ``-i``; port as sipsak ``-l``, 0: any); None: the one the routing table picks. An
    address the host does not have, or of the other family than the server's, fails the probe
    with that error before anything is sent; a malformed one raises ``ValueError``.
    ``headers``: (name, value) fields added to every request the probe builds, after its own
    (sipsak ``-j``): ``X-…``, ``P-Asserted-Identity``, ``Route``, ``Event``…; a ``User-Agent``
    replaces ours; the fields skinnysip writes itself
    (:data:`~skinnysip.sip.request.MANAGED_HEADERS`) are refused (``invalid request: …``), as
    :func:`~skinnysip.sip.request.check_header_field` says.
    """

    host: str
    port: int | None = None
    transport: Literal["udp", "tcp", "tls", "ws", "wss"] | None = "udp"
    scheme: Literal["sip", "sips"] = "sip"
    uri: str | None = None
    from_uri: str | None = None
    to_uri: str | None = None
    username: str | None = None
    password: str | None = None
    domain: str | None = None
    timeout: float = 10.0
    t1: float = 0.5
    tls_verify: bool = True
    ca_file: str | None = None
    expires: int = 60
    nameservers: list[tuple[str, int]] | None = None
    max_exchange_messages: int = MAX_EXCHANGE_MESSAGES
    max_exchange_bytes: int = MAX_EXCHANGE_BYTES
    ws_path: str = "/"
    identity: IdentitySigner | None = None
    digest_checks: bool = False
    enumeration_check: bool = False
    source_ip: str | None = None
    source_port: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return default_port(self.transport or ("tls" if self.scheme == "sips" else "udp"))

    @property
    def bare_host(self) -> str:
        return strip_brackets(self.host.strip())


# --------------------------------------------------------------------------- results


@dataclass
class HeaderField(Result):
    """One header field line of a response, in wire order (duplicates kept)."""

    name: str
    value: str


@dataclass(kw_only=True)
class SIPProbeResult(Result):
    """Fields every SIP probe result has.

    ``server``: ``host:port`` probed; ``status_code``/``status_text``: the final response
    the operation reports; ``headers``: its header fields in order; ``raw``: its text
    (first 16384 characters); ``server_agent``: its ``Server`` (else ``User-Agent``);
    ``rtt``: milliseconds from the first transmission of the request that got that response
    (after a digest retry, the authenticated one) to its arrival — the times of those two
    messages in ``exchange``, on one monotonic clock;
    ``call_id``: the Call-ID used; ``tls``: the handshake report (TLS only);
    ``exchange``: every message sent and received, up to the request's bound (default the
    first 1000 messages / 1,000,000 octets); ``dropped_messages``: how many more were sent or
    received but not kept (JSON ``droppedMessages``).
    """

    success: bool = False
    error: str | None = None
    server: str
    transport: str
    status_code: int | None = None
    status_text: str | None = None
    headers: list[HeaderField] = field(default_factory=list)
    raw: str | None = None
    server_agent: str | None = None
    rtt: float | None = field(default=None, metadata={"description": (
        "Round trip in ms: from the first transmission of the request that got the reported final response "
        "(after a digest retry, the authenticated one) to that response's arrival - the times of those two "
        "messages in `exchange`, on one monotonic clock (the ladder's two points).")})
    call_id: str | None = None
    tls: TLSInfo | None = None
    exchange: list[WireMessage] = field(default_factory=list)
    dropped_messages: int = field(default=0, metadata={"description": (
        "Messages sent or received but not kept in `exchange` (its bound: by default the first 1000 messages "
        "and 1,000,000 octets of raw text are kept).")})


@dataclass(kw_only=True)
class OptionsResult(SIPProbeResult):
    """OPTIONS (RFC 3261 §11): ``allowed_methods`` (Allow), ``supported_extensions``
    (Supported), ``content_types`` (Accept); None when the header is absent."""

    allowed_methods: list[str] | None = None
    supported_extensions: list[str] | None = None
    content_types: list[str] | None = None


@dataclass(kw_only=True)
class TraceHop(Result):
    """One step of a SIP traceroute: the OPTIONS sent with ``max_forwards`` and what came back.

    ``status_code``/``status_text``: its final response (None: none within the timeout, then
    ``error`` says so); ``agent``: who answered as far as the answer tells — the warn-agent of
    its ``Warning`` (RFC 3261 §20.43, as sipsak shows), else its ``Server`` (or ``User-Agent``);
    ``to_tag``: the answer's To tag (an element's own answers often share a prefix: Kamailio's
    stateless replies derive theirs from its sockets, so two proxies' 483s differ there);
    ``contact``: its Contact, if any; ``rtt``: ms from the request's first transmission to
    the answer."""

    max_forwards: int
    status_code: int | None = None
    status_text: str | None = None
    agent: str | None = None
    to_tag: str | None = None
    contact: str | None = None
    rtt: float | None = None
    error: str | None = None


@dataclass(kw_only=True)
class TracerouteResult(SIPProbeResult):
    """SIP traceroute (sipsak ``-T``): OPTIONS with Max-Forwards 0, 1, 2… (RFC 3261 §16.3 step 2:
    the element that finds it 0 answers 483 Too Many Hops instead of forwarding) until an
    answer other than 483 comes — the destination's, or where the path ends. ``hops``: one
    :class:`TraceHop` a step, in order; ``reached``: the last step got such a final answer
    (reported as the result's status, headers and ``rtt``) within ``max_hops`` steps."""

    hops: list[TraceHop] = field(default_factory=list)
    reached: bool = False


@dataclass(kw_only=True)
class RequestResult(SIPProbeResult):
    """A request of any method but INVITE, ACK, CANCEL and REGISTER (sipsak with a crafted message):
    ``method`` sent; ``requires_auth``/``auth_scheme``: the server challenged it (401/407), and
    without credentials (or with refused ones) that challenge is the reported answer."""

    method: str
    requires_auth: bool = False
    auth_scheme: str | None = None


@dataclass(kw_only=True)
class RegisterResult(SIPProbeResult):
    """REGISTER with ``Expires: 0`` (RFC 3261 §10.2.2): does the registrar demand
    authentication? ``auth_scheme``/``auth_realm`` of the first challenge,
    ``auth_algorithms``/``auth_qop`` offered across all challenges, ``contact_expires``
    (seconds) from the Contact's ``expires`` or the Expires header."""

    requires_auth: bool = False
    auth_scheme: str | None = None
    auth_realm: str | None = None
    contact_expires: int | None = None
    auth_algorithms: list[str] = field(default_factory=list)
    auth_qop: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class InviteResult(SIPProbeResult):
    """INVITE (RFC 3261 §13): ``provisional`` lists the 1xx codes seen; ``cancelled`` is
    true when the probe sent CANCEL; ``cleanup`` says what was sent after the final
    response (``ack``, ``ack+bye``, ``cancel+ack``, ``cancel``, ``none``); ``allow`` is the
    final response's Allow value; ``message`` a one-line summary."""

    requires_auth: bool = False
    auth_scheme: str | None = None
    allow: str | None = None
    provisional: list[int] = field(default_factory=list)
    cancelled: bool = False
    cleanup: str | None = None
    message: str | None = None


@dataclass(kw_only=True)
class DigestAuthResult(SIPProbeResult):
    """Digest login by REGISTER (RFC 7616, RFC 3261 §22): ``authenticated`` iff the
    authenticated REGISTER got a 2xx; ``no_auth_required`` if the first REGISTER already
    did; ``challenge_code`` 401/407; ``nonce`` first 16 characters + ``...``;
    ``unregistered``: the binding was removed again (``Expires: 0``) after success.
    ``server_authenticated``: the 2xx's ``Authentication-Info`` rspauth proved that the
    server knows the password (True), did not match (False), or none came (None; RFC 2617
    §3.2.3). With ``digest_checks``: ``nonce_reuse`` is what the server made of a REGISTER
    carrying the login's credentials again under the next ``nc`` (the login's nonce, or the
    ``nextnonce`` its 2xx named; RFC 3261 §22.3, RFC 7616 §3.4), and
    ``replay`` what it made of the login's own Authorization sent again on a new transaction
    (a server that takes it accepts a captured request) — each
    ``"accepted"`` (2xx), ``"challenged"``, ``"challenged (stale)"`` or ``"refused (<status>)"``.
    With ``enumeration_check``: ``unknown_user_status`` and ``wrong_password_status``, the
    final answers to a login as a user that cannot exist and as ``username`` with a wrong
    password (a challenge answered once each), and ``user_enumeration``: True when they
    differ (the server tells which users exist), False when they are the same."""

    authenticated: bool = False
    no_auth_required: bool = False
    challenge_code: int | None = None
    realm: str | None = None
    nonce: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    unregistered: bool | None = None
    server_authenticated: bool | None = None
    nonce_reuse: str | None = None
    replay: str | None = None
    unknown_user_status: int | None = None
    wrong_password_status: int | None = None
    user_enumeration: bool | None = None


#: the methods :func:`usrloc` sends to the registered AOR: requests outside a dialog that
#: make none, so answering one leaves nothing behind
USRLOC_METHODS = ("MESSAGE", "OPTIONS")
#: seconds :func:`usrloc` still waits for its request after a 2xx that was not ours (another
#: binding of the AOR answered a forked copy first)
USRLOC_GRACE = 1.0


@dataclass(kw_only=True)
class UsrlocResult(SIPProbeResult):
    """Does a registration make us reachable? (sipsak's usrloc mode): ``registered`` and
    ``register_status`` say how the REGISTER of the binding ended; ``method`` is what was then
    sent to the AOR through the server; ``delivered``: it reached our registered Contact
    (RFC 3261 §10.3, §16.5: the location service's work), ``delivery_time`` ms after it left
    us (the transmission the server took, after any challenge), with ``hops`` Via fields above
    ours (the proxies it passed), from ``delivered_from`` (host:port) and with
    ``delivered_uri`` as its Request-URI (the Contact the server looked up). ``b2bua``: it came
    back as a new request, not ours relayed (another Call-ID, our Via gone: a back-to-back user
    agent, as PBXs relay a MESSAGE; recognised by the random text of its body); ``hops`` then
    counts all its Via fields. ``status_code``/``status_text``/``rtt``: the final response to
    that request (ours when a proxy relayed it; a registration refused: the REGISTER's).
    ``unregistered``: the binding was removed again (``Expires: 0``)."""

    method: str = "MESSAGE"
    registered: bool = False
    register_status: int | None = None
    delivered: bool = False
    delivery_time: float | None = None
    hops: int | None = None
    delivered_from: str | None = None
    delivered_uri: str | None = None
    b2bua: bool | None = None
    unregistered: bool | None = None


R = TypeVar("R", bound=SIPProbeResult)



# --------------------------------------------------------------------------- helpers


class _ProbeFailure(Exception):
    """Ends a probe with ``success: false`` and this error. ``failover``: nothing at all
    came back from this server, so the next RFC 3263 target may be tried."""

    def __init__(self, reason: str, *, failover: bool = False) -> None:
        super().__init__(reason)
        self.failover = failover


def _has_scheme(value: str) -> bool:
    return bool(_URI_SCHEME_RE.match(value))


def _name_addr(uri: str, tag: str | None = None) -> NameAddr:
    """A From/To value for ``uri`` (a URI text we built or the user gave)."""
    return NameAddr(None, parse_uri(uri), {"tag": tag} if tag else {})


class _Session:
    """One probe's flow on the core: endpoint, flow, Call-ID, From tag, CSeq."""

    def __init__(self, request: ProbeRequest, ep: SIPEndpoint, flow: Flow, target: ServerTarget) -> None:
        self.req = request
        self.ep = ep
        self.flow = flow
        self.target = target
        self.call_id = new_call_id()
        self.from_tag = new_tag()
        self.cseq = 0
        self.bye_answer: str | None = None
        self.digest: DigestClient | None = None  # the INVITE's credentials, for a challenged BYE too
        self.scheme = request.scheme
        self.answered = False  # did this server send anything back?
        self.last_request: Request | None = None  # the last request a transaction sent (after any retry)
        port = request.effective_port
        usual = 5061 if self.scheme == "sips" or target.transport == "tls" else 5060  # the URI's default (§19.1.2)
        self.domain = request.domain or (
            format_host(request.bare_host) + ("" if port == usual else f":{port}")
        )

    @property
    def where(self) -> str:
        return f"{hostport(self.target.address, self.target.port)}/{self.target.transport}"

    # URIs ------------------------------------------------------------------------
    def uri(self, value: str | None, default_user: str | None) -> str:
        """A user part or full URI → a URI (user@domain, or the domain without user)."""
        if value and _has_scheme(value):
            return value
        user = value or default_user
        return f"{self.scheme}:{user}@{self.domain}" if user else f"{self.scheme}:{self.domain}"

    def aor(self, user: str) -> str:
        """The AOR a REGISTER of the probe names (To and From): ``from_uri``, else user@domain."""
        return self.uri(self.req.from_uri or user, user)

    def registrar_uri(self) -> str:
        """The Request-URI of the probe's REGISTERs: ``uri``, else the domain (RFC 3261 §10.2)."""
        return self.req.uri or f"{self.scheme}:{self.domain}"

    def contact(self, user: str) -> NameAddr:
        return self.ep.contact(self.flow, user, scheme=self.scheme)

    def timeout_ms(self) -> str:
        return f"{self.req.timeout * 1000:.0f} ms"

    def build(self, method: str, request_uri: str, from_uri: str, to_uri: str, *,
              contact_user: str | None = None, headers: list[tuple[str, str]] | None = None,
              body: bytes = b"", content_type: str | None = None, max_forwards: int = 70) -> Request:
        """A request per RFC 3261 §8.1.1 on this session's Call-ID, From tag and next CSeq."""
        self.cseq += 1
        added = self.req.headers
        return new_request(
            method, request_uri,
            from_=_name_addr(from_uri, self.from_tag), to=_name_addr(to_uri),
            via=self.ep.via(self.flow), call_id=self.call_id, cseq=self.cseq,
            contact=self.contact(contact_user) if contact_user is not None else None,
            max_forwards=max_forwards,
            user_agent=None if any(canonical_name(n) == "User-Agent" for n, _ in added) else USER_AGENT,
            headers=[*(headers or []), *added], body=body, content_type=content_type,
        )

    # transactions --------------------------------------------------------------------
    async def transact(self, request: Request, auth: ChallengeRetry | None = None) -> tuple[Response, float]:
        """Run a non-INVITE transaction (with the core's digest retry when ``auth`` has
        credentials) to its final response → (response, rtt ms). Raises
        :class:`_ProbeFailure` on timeout or transport failure."""
        outcome = await self.ep.transact(request, self.flow, timeout=self.req.timeout, auth=auth)
        self.cseq = max(self.cseq, outcome.request.cseq[0])
        self.last_request = outcome.request
        if outcome.response is not None:
            self.answered = True
            return outcome.response, (outcome.rtt or 0.0) * 1000
        last = outcome.provisional[-1] if outcome.provisional else None
        if last is not None:
            self.answered = True
        if outcome.error == "timeout":
            if outcome.timer is not None:
                raise _ProbeFailure(self.timed_out(request.method, outcome.timer, last), failover=not self.answered)
            raise _ProbeFailure(self.no_response(request.method, last), failover=not self.answered)
        raise _ProbeFailure(outcome.error or "no response", failover=not self.answered)

    def timed_out(self, method: str, timer: str, provisional: Response | None) -> str:
        """The transaction's own timeout (Timer B/F, 64·T1) came before ``timeout``."""
        within = f"within {64 * self.req.t1 * 1000:.0f} ms (RFC 3261 Timer {timer})"
        if provisional is not None:
            return f"no final response to {method} from {self.where} {within} (last: {provisional.summary})"
        return f"no response from {self.where} {within}{self.ignored()}"

    def no_response(self, method: str, provisional: Response | None) -> str:
        if provisional is not None:
            return (f"no final response to {method} from {self.where} within {self.timeout_ms()} "
                    f"(last: {provisional.summary})")
        return f"no response from {self.where} within {self.timeout_ms()}{self.ignored()}"

    def ignored(self) -> str:
        """What did arrive but could not be a response to us (:meth:`SIPEndpoint.ignored_note`;
        malformed messages stay in the exchange)."""
        return self.ep.ignored_note()


def _fill(result: SIPProbeResult, response: Response, rtt: float | None) -> None:
    result.status_code = response.status_code
    result.status_text = response.reason
    result.headers = [HeaderField(name=n, value=v) for n, v in response.headers]
    result.raw = response.to_bytes().decode("utf-8", errors="replace")[:RAW_LIMIT]
    result.server_agent = response.headers.get("Server") or response.headers.get("User-Agent")
    result.rtt = round(rtt, 3) if rtt is not None else None


def _list(response: Response, name: str) -> list[str] | None:
    if name not in response.headers:
        return None
    try:
        return [v.strip() for v in response.headers.values(name) if v.strip()]
    except SIPParseError:
        return [v.strip() for v in ",".join(response.headers.get_all(name)).split(",") if v.strip()]


def _auth_header_values(response: Response) -> list[str]:
    name = "Proxy-Authenticate" if response.status_code == 407 else "WWW-Authenticate"
    return response.headers.get_all(name) or response.headers.get_all(
        "WWW-Authenticate" if name == "Proxy-Authenticate" else "Proxy-Authenticate")


def _challenges(response: Response) -> list[DigestChallenge]:
    try:
        return challenges_from(response)
    except SIPParseError:
        return []


def _auth_scheme(response: Response) -> str | None:
    values = _auth_header_values(response)
    if not values:
        return None
    first = values[0].strip().split(None, 1)
    return first[0] if first else None


def operation_budget(request: ProbeRequest, steps: int) -> float:
    """Seconds an operation of ``steps`` waits (locating and connecting, each final
    response) may take at most, whatever the peer sends: ``steps × timeout + 1 s``."""
    return steps * request.timeout + 1.0


async def _run(request: ProbeRequest, result: R, flow: Callable[[_Session, R], Awaitable[None]],
               steps: int = 2) -> R:
    """Locate the server (RFC 3263), run ``flow`` against the first target that answers
    (the next one when a target gives no response at all or refuses the connection),
    always close; turn every failure into ``success: false``. A watchdog ends the whole
    operation after :func:`operation_budget` (failover to many targets, a peer that keeps
    the flow busy) with ``operation did not finish within N ms``."""
    budget = operation_budget(request, steps)
    try:
        async with asyncio.timeout(budget):
            return await _run_bounded(request, result, flow)
    except TimeoutError:
        result.success = False
        result.error = (f"operation did not finish within {budget * 1000:.0f} ms "
                        f"({steps} × timeout + 1 s){result.error and '; ' + result.error or ''}")
        return result


async def _run_bounded(request: ProbeRequest, result: R, flow: Callable[[_Session, R], Awaitable[None]]) -> R:
    try:
        for name, value in request.headers:
            check_header_field(name, value)
    except ValueError as exc:
        result.success, result.error = False, f"invalid request: {exc}"
        return result
    ep = SIPEndpoint(timers=Timers(t1=request.t1, t2=max(4.0, request.t1)), tls_verify=request.tls_verify,
                     ca_file=request.ca_file,
                     exchange_limit=ExchangeLimit(request.max_exchange_messages, request.max_exchange_bytes),
                     resolver=Resolver(request.nameservers) if request.nameservers else None,
                     ws_path=request.ws_path, source_ip=request.source_ip, source_port=request.source_port)
    try:
        async with ep:
            if request.scheme == "sips" and request.transport not in ("tls", "wss", None):
                raise _ProbeFailure("sips: URIs need the tls or wss transport (RFC 3261 §26.2.2, RFC 7118 §5.2)")
            targets = await ep.resolve(request.bare_host, port=request.port, transport=request.transport,
                                       secure=request.scheme == "sips", timeout=request.timeout)
            if request.transport is not None:
                targets = [t for t in targets if t.transport == request.transport] or targets[:1]
            errors: list[str] = []
            for index, target in enumerate(targets):
                last = index == len(targets) - 1
                try:
                    link = await ep.flow_to(target, timeout=request.timeout, server_name=request.bare_host)
                except SIPTransportError as exc:
                    if exc.reason.startswith("TLS") or last:
                        errors.append(exc.reason)
                        raise _ProbeFailure("; ".join(errors)) from exc
                    errors.append(exc.reason)
                    continue
                result.transport = target.transport
                result.server = hostport(request.bare_host, target.port)
                info = ep.tls_info(link)
                result.tls = info if isinstance(info, TLSInfo) else None
                session = _Session(request, ep, link, target)
                result.call_id = session.call_id
                try:
                    await flow(session, result)
                except _ProbeFailure as exc:
                    if exc.failover and not last:
                        errors.append(str(exc))
                        continue
                    raise
                break
            result.success = result.error is None
    except _ProbeFailure as exc:
        result.success, result.error = False, str(exc)
    except SIPTransportError as exc:
        result.success, result.error = False, exc.reason
    except SIPParseError as exc:
        result.success = False
        result.error = f"malformed message from the server {result.server}/{result.transport}: {exc.reason}"
    except ValueError as exc:  # a bad argument from a Python caller (the API validates first)
        result.success, result.error = False, f"invalid request: {exc}"
    finally:
        result.exchange = to_wire_messages(ep.trace)
        result.dropped_messages = ep.trace.dropped
    return result


def _new_result(cls: type[R], request: ProbeRequest, **fields: object) -> R:
    return cls(server=hostport(request.bare_host, request.effective_port), transport=request.transport or "udp",
               **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- OPTIONS


async def options(request: ProbeRequest) -> OptionsResult:
    """Send OPTIONS (RFC 3261 §11) and report the server's capabilities.

    Request-URI: ``uri``, else ``to_uri`` if it is a URI, else ``sip:<domain>``; To: the
    ``to_uri`` (or Request-URI); From: ``from_uri`` or ``sip:probe@<domain>``.
    """

    async def flow(s: _Session, result: OptionsResult) -> None:
        to = s.uri(request.to_uri, None)
        ruri = request.uri or to
        req = s.build("OPTIONS", ruri, s.uri(request.from_uri, DEFAULT_USER), to, contact_user=DEFAULT_USER,
                      headers=[("Accept", "application/sdp")])
        response, rtt = await s.transact(req)
        _fill(result, response, rtt)
        result.allowed_methods = _list(response, "Allow")
        result.supported_extensions = _list(response, "Supported")
        result.content_types = _list(response, "Accept")

    return await _run(request, _new_result(OptionsResult, request), flow)


# --------------------------------------------------------------------------- traceroute

#: steps of a traceroute at most (Max-Forwards 0 … 69: a request starts with 70, RFC 3261 §8.1.1.6)
MAX_TRACE_HOPS = 70
#: a traceroute ends after this many steps in a row got no answer (a hop that drops what it
#: cannot forward, as traceroute's ``* * *``)
TRACE_SILENT_STEPS = 3


def _answering_agent(response: Response) -> str | None:
    """The warn-agent of the response's first Warning, else its Server or User-Agent."""
    for value in response.headers.get_all("Warning"):
        try:
            warnings = parse_warning(value)
        except SIPParseError:
            continue
        if warnings:
            return warnings[0][1]
    return response.headers.get("Server") or response.headers.get("User-Agent")


async def traceroute(request: ProbeRequest, max_hops: int = 20) -> TracerouteResult:
    """SIP traceroute, as sipsak's ``-T``: OPTIONS (addressed as :func:`options` addresses
    it) with Max-Forwards 0, then 1, 2, … — each a new transaction of one Call-ID — until an
    answer other than 483 (RFC 3261 §16.3 step 2) or ``max_hops`` steps (1 …
    :data:`MAX_TRACE_HOPS`). A step with no answer within ``timeout`` is a hop that stays
    silent (``error`` set); :data:`TRACE_SILENT_STEPS` of them in a row end the trace. The
    whole trace takes at most ``(max_hops + 1) × timeout + 1 s``. Raises ``ValueError`` for
    ``max_hops`` out of range."""
    if not 1 <= max_hops <= MAX_TRACE_HOPS:
        raise ValueError(f"max_hops: 1 … {MAX_TRACE_HOPS}")

    async def flow(s: _Session, result: TracerouteResult) -> None:
        to = s.uri(request.to_uri, None)
        ruri = request.uri or to
        silent, last = 0, None
        for hops in range(max_hops):
            req = s.build("OPTIONS", ruri, s.uri(request.from_uri, DEFAULT_USER), to, contact_user=DEFAULT_USER,
                          headers=[("Accept", "application/sdp")], max_forwards=hops)
            step = TraceHop(max_forwards=hops)
            result.hops.append(step)
            try:
                response, rtt = await s.transact(req)
            except _ProbeFailure as exc:
                if not s.answered:
                    raise  # nothing ever answered: the server itself is not there (failover)
                step.error = str(exc)
                silent += 1
                if silent == TRACE_SILENT_STEPS:
                    if last is not None:
                        _fill(result, *last)  # the farthest answer
                    result.error = f"{silent} steps in a row got no answer (the last: {exc})"
                    return
                continue
            silent = 0
            step.status_code, step.status_text = response.status_code, response.reason
            step.agent = _answering_agent(response)
            step.to_tag = response.to_tag
            step.contact = response.headers.get("Contact")
            step.rtt = round(rtt, 3)
            last = (response, rtt)
            if response.status_code != 483:
                _fill(result, response, rtt)
                result.reached = True
                return
        if last is not None:
            _fill(result, *last)  # the farthest 483
        result.error = f"no answer but 483 within {max_hops} hops (Max-Forwards 0 … {max_hops - 1})"

    return await _run(request, _new_result(TracerouteResult, request), flow, steps=max_hops + 1)


# --------------------------------------------------------------------------- any method

async def request(request: ProbeRequest, method: str, body: bytes = b"",
                  content_type: str | None = None) -> RequestResult:
    """Send one request of ``method`` (MESSAGE, NOTIFY, INFO, PUBLISH, SUBSCRIBE, an extension
    method…) and report its final answer: a non-INVITE transaction (RFC 3261 §17.1.2)
    addressed as :func:`options` addresses it, with our Contact, ``request.headers`` (an
    ``Event`` for NOTIFY/SUBSCRIBE/PUBLISH, say) and ``body`` (at most
    :data:`~skinnysip.sip.request.MAX_REQUEST_BODY` octets) of ``content_type`` (default ``text/plain`` when there is
    a body). With ``username`` and ``password`` a 401/407 is answered with Digest credentials
    (RFC 3261 §22.2, the core's :class:`~skinnysip.sip.auth.ChallengeRetry`: a fresh challenge
    each time, a few at most). Raises ``ValueError`` for what
    :func:`~skinnysip.sip.request.check_one_request` refuses."""
    check_one_request(method, body, content_type)
    if body and content_type is None:
        content_type = "text/plain"

    async def flow(s: _Session, result: RequestResult) -> None:
        from_uri = s.uri(request.from_uri, request.username or DEFAULT_USER)
        to = s.uri(request.to_uri, None)
        req = s.build(method, request.uri or to, from_uri, to, contact_user=request.username or DEFAULT_USER,
                      body=body, content_type=content_type)
        client = (DigestClient(request.username, request.password)
                  if request.username and request.password is not None else None)
        response, rtt = await s.transact(req, ChallengeRetry(client) if client is not None else None)
        _fill(result, response, rtt)
        if response.status_code in (401, 407):
            result.requires_auth = True
            result.auth_scheme = _auth_scheme(response)

    result = _new_result(RequestResult, request, method=method)
    return await _run(request, result, flow)


# --------------------------------------------------------------------------- REGISTER


def _contact_expires(response: Response, ours: NameAddr) -> int | None:
    """The expiry granted to our Contact (its ``expires`` parameter, else ``Expires``;
    RFC 3261 §10.2.4), seconds. Raises :class:`SIPParseError` naming the header when the
    server wrote a value that is not a number 0..2**32-1 (``Expires: ²``, 5000 digits)."""
    try:
        contacts = [NameAddr.parse(v) for v in response.headers.values("Contact") if v.strip() != "*"]
    except SIPParseError:
        contacts = []
    mine = None
    if isinstance(ours.uri, SipURI):
        for c in contacts:
            if isinstance(c.uri, SipURI) and (c.uri.host, c.uri.port) == (ours.uri.host, ours.uri.port):
                mine = c
                break
    for c in ([mine] if mine else []) + contacts:
        value = c.params.get("expires")
        if value is not None:
            return parse_uint(value, "Contact expires")
    expires = response.headers.get("Expires")
    return None if expires is None else parse_uint(expires, "Expires")


async def register(request: ProbeRequest) -> RegisterResult:
    """Send REGISTER with ``Expires: 0`` (RFC 3261 §10.2.2: remove our binding, so nothing
    is left behind) to learn whether the registrar demands authentication.

    Request-URI: ``uri`` or ``sip:<domain>``; To/From: ``sip:<username|probe>@<domain>``;
    Contact: our real local address. No credentials are sent.
    """

    async def flow(s: _Session, result: RegisterResult) -> None:
        user = request.username or DEFAULT_USER
        aor = s.aor(user)
        req = s.build("REGISTER", s.registrar_uri(), aor, aor, contact_user=user, headers=[("Expires", "0")])
        response, rtt = await s.transact(req)
        _fill(result, response, rtt)
        result.requires_auth = response.status_code in (401, 407)
        result.auth_scheme = _auth_scheme(response)
        challenges = _challenges(response)
        if challenges:
            result.auth_realm = challenges[0].realm
        result.auth_algorithms = list(dict.fromkeys(c.algorithm for c in challenges))
        result.auth_qop = list(dict.fromkeys(q for c in challenges for q in c.qop_options))
        result.contact_expires = _contact_expires(response, s.contact(user))

    return await _run(request, _new_result(RegisterResult, request), flow)


# --------------------------------------------------------------------------- digest-auth


def _login(s: _Session, what: str) -> tuple[str, DigestClient, Callable[[int], Request]]:
    """What a probe that logs in by REGISTER (``what``: digest-auth, usrloc) needs: the user,
    its Digest credentials and a builder of its REGISTER with a given Expires (Request-URI:
    :meth:`_Session.registrar_uri`; To/From: :meth:`_Session.aor`; Contact: us; RFC 3261
    §10.2). :class:`_ProbeFailure` without a username."""
    request = s.req
    if not request.username:
        raise _ProbeFailure(f"{what} needs a username")
    user = request.username
    aor = s.aor(user)
    ruri = s.registrar_uri()

    def register(expires: int) -> Request:
        return s.build("REGISTER", ruri, aor, aor, contact_user=user, headers=[("Expires", str(expires))])

    return user, DigestClient(user, request.password or ""), register


def _truncate_nonce(nonce: str) -> str:
    return nonce[:16] + "..." if len(nonce) > 16 else nonce


async def digest_auth(request: ProbeRequest) -> DigestAuthResult:
    """Log in with Digest by REGISTER (RFC 3261 §22.2, RFC 7616): REGISTER → 401/407 →
    REGISTER with (Proxy-)Authorization (same Call-ID and From tag, CSeq + 1, new branch);
    a ``stale=true`` challenge is answered once more with the new nonce (the core's one
    retry rule, :class:`~skinnysip.sip.auth.ChallengeRetry`). The strongest supported
    challenge is used; the digest URI is the Request-URI as sent. After a successful login
    with ``expires`` > 0 the binding is removed (``Expires: 0``, authenticated). A wrong
    password is ``authenticated: false`` with the server's status.
    """

    async def flow(s: _Session, result: DigestAuthResult) -> None:
        user, client, make = _login(s, "digest-auth")
        rule = ChallengeRetry(client)
        response, elapsed = await s.transact(make(request.expires), rule)
        if not rule.challenged:
            _fill(result, response, elapsed)
            if 200 <= response.status_code < 300:
                result.authenticated = True
                result.no_auth_required = True
                if request.expires > 0:
                    cleanup, _ = await s.transact(make(0))
                    result.unregistered = 200 <= cleanup.status_code < 300
            return  # accepted without a challenge, or neither accepted nor challenged
        first = rule.challenged[0]
        result.challenge_code = first.status_code
        if rule.challenge is None:
            _fill(result, response, elapsed)
            schemes = ", ".join(_auth_header_values(first))[:200] or "none"
            raise _ProbeFailure(f"no supported Digest challenge in the {first.status_code} (offered: {schemes})")
        challenge = rule.challenge
        result.realm = challenge.realm
        result.nonce = _truncate_nonce(challenge.nonce)
        result.algorithm = challenge.algorithm
        offered_qop = challenge.qop_options
        result.qop = "auth" if "auth" in offered_qop else ("auth-int" if "auth-int" in offered_qop else None)
        _fill(result, response, elapsed)
        result.authenticated = 200 <= response.status_code < 300
        result.server_authenticated = rule.server_authenticated
        if result.authenticated and request.digest_checks:
            login = s.last_request
            assert login is not None
            # the next REGISTER of this Call-ID carries the cached credentials (nc + 1), unanswered
            reuse = ChallengeRetry(client).preempt(make(request.expires))
            result.nonce_reuse = _digest_verdict((await s.transact(reuse, ChallengeRetry(None)))[0])
            replay = make(request.expires)
            for name in ("Authorization", "Proxy-Authorization"):
                for value in login.headers.get_all(name):
                    replay.headers.add(name, value)
            result.replay = _digest_verdict((await s.transact(replay, ChallengeRetry(None)))[0])
        if result.authenticated and request.expires > 0:
            result.unregistered = await _unregister(s, make(0), client)
        if request.enumeration_check:
            nobody = f"skinnysip-nobody-{os.urandom(6).hex()}"
            result.unknown_user_status = await _login_status(s, nobody, request.password or "")
            result.wrong_password_status = await _login_status(s, user, f"not-{os.urandom(8).hex()}")
            result.user_enumeration = result.unknown_user_status != result.wrong_password_status

    steps = 6 + 2 * request.digest_checks + 4 * request.enumeration_check
    return await _run(request, _new_result(DigestAuthResult, request), flow, steps=steps)


async def _login_status(s: _Session, user: str, password: str) -> int:
    """The final status of a de-registration (``Expires: 0``: no binding is made) by ``user``
    with ``password``, its challenge answered once, on a Call-ID of its own."""
    aor = s.uri(user, user)
    request = s.build("REGISTER", s.registrar_uri(), aor, aor, contact_user=user, headers=[("Expires", "0")])
    request.headers.set("Call-ID", new_call_id())
    response, _ = await s.transact(request, ChallengeRetry(DigestClient(user, password), max_retries=1))
    return response.status_code


def _digest_verdict(response: Response) -> str:
    """What a server made of credentials it was sent (:class:`DigestAuthResult`)."""
    if 200 <= response.status_code < 300:
        return "accepted"
    if response.status_code in (401, 407):
        return "challenged (stale)" if any(c.stale for c in challenges_from(response)) else "challenged"
    return f"refused ({response.status_code} {response.reason})"


async def _unregister(s: _Session, request: Request, client: DigestClient) -> bool:
    """Remove the binding just made (Expires: 0) with the credentials ``client`` cached for the
    session's Call-ID (RFC 3261 §22.3, :meth:`ChallengeRetry.preempt`); a fresh challenge is
    answered once (the core's retry rule)."""
    try:
        response, _ = await s.transact(request, ChallengeRetry(client))
        return 200 <= response.status_code < 300
    except _ProbeFailure:
        return False


# --------------------------------------------------------------------------- usrloc


async def usrloc(request: ProbeRequest, method: str = "MESSAGE") -> UsrlocResult:
    """Check that a registration makes its AOR reachable, as sipsak's usrloc mode does:
    REGISTER a binding of the AOR (``from_uri``, else ``username@domain``) to our own address
    for ``expires`` seconds (Digest answered: RFC 3261 §10.2, §22), send ``method`` (MESSAGE,
    RFC 3428, with a short text holding a random token; or OPTIONS) to that AOR through the
    server on a Call-ID of its own (a challenge answered with the same credentials), answer it
    with 200 when the server delivers it to our Contact — relayed by a proxy (the location
    service, §10.3, §16.5), or for a MESSAGE also sent anew by a B2BUA with the same text —
    then remove the binding (``Expires: 0``). Nothing else is left behind: neither method
    makes a dialog.

    Raises ``ValueError`` for a method not in :data:`USRLOC_METHODS`. A refused
    registration ends the probe with that answer (``error`` says so); a request the server
    answers without delivering it (404, 480…, or a 2xx of its own) is ``delivered: false``.
    When a 2xx comes from elsewhere (another binding of the AOR answered a forked copy first),
    our copy is awaited :data:`USRLOC_GRACE` seconds more; ``server_agent`` says who answered.
    """
    method = method.upper()
    if method not in USRLOC_METHODS:
        raise ValueError(f"usrloc sends {' or '.join(USRLOC_METHODS)}, not {method!r}")

    async def flow(s: _Session, result: UsrlocResult) -> None:
        if request.expires < 1:
            raise _ProbeFailure("usrloc needs a binding to route to: expires of 1 s or more")
        user, client, binding = _login(s, "usrloc")
        aor = s.aor(user)
        response, rtt = await s.transact(binding(request.expires), ChallengeRetry(client))
        result.register_status = response.status_code
        if not 200 <= response.status_code < 300:
            _fill(result, response, rtt)
            result.error = f"registration refused: {response.status_code} {response.reason}"
            return
        result.registered = True
        call_id = new_call_id()
        # a MESSAGE's text carries a random token: a B2BUA's new request is known by it
        token = f"skinnysip usrloc check {os.urandom(8).hex()}".encode() if method == "MESSAGE" else b""
        arrivals: list[tuple[Request, Flow, float]] = []
        arrived_event = asyncio.Event()

        def deliver(event: LayerEvent) -> bool:
            """Our request as the server delivers it to the binding: noted and answered 200."""
            if not (isinstance(event, RequestReceived) and event.request.method == method
                    and (event.request.call_id == call_id or (token and token in event.request.body))):
                return False
            arrivals.append((event.request, event.flow, wire_time()))  # the trace's clock, at arrival
            arrived_event.set()
            if method == "OPTIONS":
                s.ep.send_response(event.transaction, s.ep.uas.options(event.request))
            else:
                s.ep.respond(event.transaction, 200, to_tag=new_tag())
            return True

        body, content_type = (token, "text/plain") if token else (b"", None)
        probe = s.build(method, aor, aor, aor, body=body, content_type=content_type)
        probe.headers.set("Call-ID", call_id)
        remove = s.ep.add_handler(deliver)
        try:
            answer, answer_rtt = await s.transact(probe, ChallengeRetry(client))
            _fill(result, answer, answer_rtt)
            if not arrivals and 200 <= answer.status_code < 300:
                # another binding of the AOR answered first (a forked request, RFC 3261 §16.7):
                # ours may still be on its way
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived_event.wait(), min(request.timeout, USRLOC_GRACE))
            if arrivals:
                arrived, where, at = arrivals[0]
                result.delivered = True
                sent = s.last_request  # after a challenge: the request the server took
                if sent is not None and sent.sent_at is not None:
                    result.delivery_time = round(max(0.0, at - sent.sent_at) * 1000, 3)
                vias = arrived.vias
                branch = sent.top_via.branch if sent is not None and sent.top_via is not None else None
                ours = next((i for i, via in enumerate(vias) if branch and via.branch == branch), None)
                result.b2bua = ours is None
                result.hops = len(vias) if ours is None else ours
                result.delivered_from = hostport(*where.remote)
                result.delivered_uri = str(arrived.uri)
        finally:
            remove()
            result.unregistered = await _unregister(s, binding(0), client)

    return await _run(request, _new_result(UsrlocResult, request, method=method), flow, steps=6)


# --------------------------------------------------------------------------- INVITE


class _RTPSink(asyncio.DatagramProtocol):
    """Absorbs media sent to the port we offer in SDP (discarded)."""

    def __init__(self) -> None:
        self.packets = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1


async def invite(request: ProbeRequest) -> InviteResult:
    """Place a probe call (RFC 3261 §13) and clean up so no dialog is left on the server.

    INVITE with an SDP offer (our local address, a really bound RTP port, PCMU/PCMA/
    telephone-event); provisional responses are followed to a final one. 2xx → ACK (new
    branch, to the Contact, through the route set, §13.2.2.4) then BYE and its 200 (a 401/407
    to the BYE answered with the same credentials, §22.2); non-2xx → ACK (by the transaction, §17.1.1.3); 401/407 → ``requires_auth``, and with
    credentials the core's retry rule (CSeq + 1; once more on ``stale=true``). If
    ``timeout`` passes with only 1xx, CANCEL (§9.1), then the 487 is consumed and ACKed.
    No response at all → failure. Request-URI: ``uri``, else ``to_uri``/
    ``sip:<to|probe>@<domain>``. Via and Contact name the endpoint's own socket, so
    requests the server sends back (a BYE, a re-INVITE) are heard; ACK and BYE go over the
    flow to the server the user named (no traffic to an address nobody named). The probe
    sends no RTP; still, a 2xx whose SDP answer aims media at an address the target policy
    refuses (:func:`skinnysip.policy.sdp_media_refusal`) makes it ``success: false`` with
    that reason (after the ACK and BYE), as a phone would hang up on it.
    """

    # imported here: only INVITE offers SDP and binds an RTP port (not the other probes' start-up)
    from skinnysip.net.rtp import bind_even_port

    async def flow(s: _Session, result: InviteResult) -> None:
        local_host = s.ep.local_address(s.flow)[0]
        sink, rtp_port = await bind_even_port(local_host, _RTPSink)
        try:
            await _invite_flow(s, result, local_host, rtp_port)
        finally:
            if sink.transport is not None:
                sink.transport.close()

    return await _run(request, _new_result(InviteResult, request), flow, steps=8)


async def _invite_flow(s: _Session, result: InviteResult, local_host: str, rtp_port: int) -> None:
    req = s.req
    from_uri = s.uri(req.from_uri, req.username or DEFAULT_USER)
    to_uri = s.uri(req.to_uri, DEFAULT_USER)
    ruri = req.uri or to_uri
    user = req.username or (from_uri.split(":", 1)[1].split("@", 1)[0] if "@" in from_uri else DEFAULT_USER)
    from skinnysip.sdp import audio_offer

    sdp = audio_offer(local_host, rtp_port, session_id=int(time.time())).to_bytes()
    client = DigestClient(req.username, req.password) if req.username and req.password is not None else None
    rule = ChallengeRetry(client)
    s.digest = client
    headers = [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")]
    if req.identity is not None:  # RFC 8224 §5: Date and Identity
        from skinnysip.sip.identity import signed_party

        headers += req.identity.header_fields(signed_party(from_uri), signed_party(ruri), time.time())
    invite_req = s.build("INVITE", ruri, from_uri, to_uri, contact_user=user, headers=headers,
                         body=sdp, content_type="application/sdp")
    for _ in range(3):  # first try + the retry rule's at most two answers to a challenge
        response, rtt = await _invite_once(s, result, invite_req)
        if response is None:
            return  # cancelled without a final response, or failed: already reported
        _fill(result, response, rtt)
        code = response.status_code
        result.allow = ", ".join(response.headers.get_all("Allow")) or None
        if code in (401, 407):
            result.requires_auth = True
            result.auth_scheme = _auth_scheme(response)
            retried = rule.retry(invite_req, response, s.ep.via(s.flow))
            if retried is not None:
                invite_req = retried
                s.cseq = invite_req.cseq[0]
                continue
        break
    if result.cleanup is None:
        result.cleanup = "ack+bye" if 200 <= (result.status_code or 0) < 300 else "ack"
    result.message = f"INVITE {result.status_code} {result.status_text} in {result.rtt or 0:.0f} ms ({result.cleanup})"
    if s.bye_answer is not None:
        result.message += f"; BYE answered {s.bye_answer}"


async def _invite_once(s: _Session, result: InviteResult, invite_req: Request) -> tuple[Response | None, float]:
    """Send one INVITE and see it through: final response, or CANCEL at the deadline.
    Returns (final response, rtt ms); (None, 0) when the outcome is already reported."""
    loop = asyncio.get_running_loop()
    handle = s.ep.send_request(invite_req, s.flow)
    assert handle is not None
    started = handle.started
    deadline = started + s.req.timeout
    cancel_handle = None
    last: Response | None = None
    while True:
        event = await handle.next_event(deadline)
        if event is None:
            if cancel_handle is not None:
                raise _ProbeFailure(f"CANCEL sent but no final response to the INVITE from {s.where}")
            if last is None:
                result.cleanup = "none"
                raise _ProbeFailure(s.no_response("INVITE", None), failover=not s.answered)
            # only provisional responses: cancel (RFC 3261 §9.1), then wait for the 487
            cancel_handle = s.ep.send_request(build_cancel(invite_req), s.flow)
            result.cancelled = True
            result.cleanup = "cancel"
            deadline = loop.time() + min(max(s.req.timeout, 4 * s.req.t1), 64 * s.req.t1)
            continue
        if isinstance(event, ResponseReceived):
            s.answered = True
            response = event.response
            if not event.final:
                last = response
                result.provisional.append(response.status_code)
                continue
            rtt = round_trip(handle.transaction.request, response, loop.time() - started) * 1000
            if response.status_code < 300:
                _fill(result, response, rtt)  # kept even if the 2xx turns out unusable below
                await _ack_and_bye(s, result, invite_req, response, handle)
                result.cleanup = "cancel+ack+bye" if cancel_handle is not None else "ack+bye"
                refused = _answer_refusal(response)
                if refused is not None:
                    result.error = f"{refused} (no RTP sent; the call was ended)"
            elif cancel_handle is not None:
                result.cleanup = "cancel+ack"
            return response, rtt
        if isinstance(event, TimedOut):
            result.cleanup = "none"
            raise _ProbeFailure(s.timed_out("INVITE", event.timer, last), failover=not s.answered)
        if isinstance(event, TransportFailed):
            raise _ProbeFailure(event.reason, failover=not s.answered)


def _answer_refusal(response: Response) -> str | None:
    """Why the active target policy refuses the media address of ``response``'s SDP (None:
    allowed, no SDP, or no policy); unparsable SDP is not judged here."""
    pol = target_policy.active()
    if pol is None or not response.body:
        return None
    from skinnysip.sdp import SDPParseError, SessionDescription

    try:
        answer = SessionDescription.parse(response.body)
    except SDPParseError:
        return None
    return target_policy.sdp_media_refusal(answer, pol)


async def _ack_and_bye(s: _Session, result: InviteResult, invite_req: Request, ok: Response,
                       invite_handle: ClientHandle) -> None:
    """ACK the 2xx (§13.2.2.4) and end the dialog with BYE (§15.1.1), re-ACKing any 2xx
    retransmission that arrives meanwhile (from the INVITE transaction in Accepted, or
    after it ended). ACK and BYE go over the flow to the server the user named."""
    from skinnysip.sip.dialog import Dialog  # here: only an INVITE probe needs the dialog layer

    try:
        dialog = Dialog.from_2xx(invite_req, ok)
    except SIPParseError as exc:
        # A 2xx that cannot set up a dialog (RFC 3261 §12.1.2: no To tag, bad Contact, …).
        # ACK it as well as we can so the server stops retransmitting; no BYE is possible.
        s.ep.send_stateless(build_ack_for_failure(invite_req, ok), s.flow, "ACK, best effort")
        result.cleanup = "ack"
        raise _ProbeFailure(f"the {ok.summary} cannot set up a dialog ({exc.reason}): ACKed, "
                            "but no BYE can be sent; the server may keep the call up") from exc
    ack = dialog.ack(s.ep.via(s.flow))
    s.ep.send_stateless(ack, s.flow)

    def re_ack(event: LayerEvent) -> bool:
        if isinstance(event, SuccessRetransmission) and event.response.call_id == s.call_id:
            s.ep.send_stateless(ack, s.flow, "re-ACK")
            return True
        return False

    remove = s.ep.add_handler(re_ack)

    def re_ack_accepted(event: ClientEvent) -> None:
        # the INVITE transaction reports 2xx retransmissions while Accepted (RFC 6026 §7.2)
        if isinstance(event, ResponseReceived) and 200 <= event.response.status_code < 300:
            s.ep.send_stateless(ack, s.flow, "re-ACK")

    invite_handle.set_listener(re_ack_accepted)
    try:
        bye = dialog.bye(s.ep.via(s.flow), USER_AGENT)
        # a proxy or the far end may challenge the BYE too (RFC 3261 §22.2: any request):
        # answered with the INVITE's credentials, as the core answers every challenge
        outcome = await s.ep.transact(bye, s.flow, timeout=s.req.timeout, auth=ChallengeRetry(s.digest))
        if outcome.response is None:
            if outcome.error == "timeout" and outcome.timer is None:
                raise _ProbeFailure(f"no response to BYE from {s.where} within {s.timeout_ms()}; the call may remain")
            if outcome.error == "timeout":
                raise _ProbeFailure(f"no response to BYE from {s.where}; the call may remain")
            raise _ProbeFailure(outcome.error or f"no response to BYE from {s.where}; the call may remain")
        if outcome.response.status_code >= 300:
            s.bye_answer = outcome.response.summary
    finally:
        remove()
