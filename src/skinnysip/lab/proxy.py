"""The lab's SIP registrar and stateful, record-routing proxy (RFC 3261 §10, §16).

:class:`LabProxy` is one :class:`~skinnysip.net.sip_endpoint.SIPEndpoint` listening on UDP
and TCP (``sip_port``) and TLS (``sips_port``) on every configured host (IPv4 and IPv6).
It is a user of the core: the transaction layer matches and retransmits, the endpoint's
handler hands the proxy every new request, CANCEL and ACK for a 2xx.

- REGISTER (§10.3): 401 digest challenge (:class:`~skinnysip.lab.registrar.NonceGuard`,
  MD5 and/or SHA-256, qop auth, ``stale=true`` for an expired nonce), then the
  :class:`~skinnysip.lab.registrar.Registrar` updates the bindings and answers 200 with
  them (423 + Min-Expires for too short a time), with SIP outbound (RFC 5626: ``Require:
  outbound``, ``Flow-Timer``) and GRUUs (RFC 5627: ``pub-gruu``/``temp-gruu``) when asked.
- SIP outbound's keep-alives (RFC 5626 §8): STUN Binding requests to the SIP UDP ports are
  answered (XOR-MAPPED-ADDRESS = their source), CRLF CRLF pings on streams with a CRLF pong.
- A new request (INVITE, MESSAGE, SUBSCRIBE, …) from anyone but the lab's own services is
  challenged with 407 and must come from the authenticated user (403 otherwise). Its
  Request-URI's user names the target: an extension (600…) → the services' UAS; an SCCP line
  (2001…) → the SCCP bridge's UAS; a user → every binding in parallel (forking; one binding
  per ``+sip.instance``, RFC 5626 §7); a GRUU (a ``gr`` parameter, RFC 5627 §5.5: the
  public one → the bindings of that instance, a temporary one → the instance it was made
  for; 404 unknown, 480 nothing registered); a Request-URI that is itself a registered
  contact (the Refer-To of an attended transfer, as Twinkle writes it) → that contact;
  anything else 404, a known user without bindings 480.
- Forwarding is §16.6: copy, Request-URI = the target, Max-Forwards − 1 (483 at 0), our
  Record-Route (two of them when the request changes transport or address family, RFC 5658)
  for dialog-creating requests, our Via on top, and the request goes out in a client
  transaction. A registered UA is reached over the flow its REGISTER came on (the TCP/TLS
  connection, or the UDP source address): RFC 5626's flow reuse, so a UA behind a
  connection or a NAT is callable from any transport. An outbound binding (RFC 5626) is
  reached only over its flow; when that connection is gone the instance's next flow
  (another ``reg-id``) is used, and with none left the answer is 430 Flow Failed (§5.3,
  §11.4). A binding registered through proxies is reached through them: its ``Path`` becomes
  the request's Route (RFC 3327 §5.3; an edge proxy's flow token, RFC 5626 §5.2). An outbound
  UDP flow counts as failed once no STUN keep-alive came within its
  Flow-Timer (and 2 s); other UDP flows live as long as their binding.
- Responses (§16.7): 100 is sent at once by the proxy and never forwarded; other 1xx and
  every 2xx are forwarded at once (our Via popped); the best final response of all branches
  is forwarded when none answered 2xx (6xx first, then the lowest class; 503 becomes 500);
  a 2xx or 6xx CANCELs the other branches (after a 2xx with ``Reason: SIP;cause=200;text="Call
  completed elsewhere"``, RFC 3326: those phones were not missed). Timer C: an INVITE branch
  ringing for ``ring_timeout`` seconds is cancelled.
- CANCEL (§16.10): answered 200 at once and forwarded to every pending branch (after its
  first provisional, §9.1), with the caller's Reason field lines. ACK for a 2xx and every
  in-dialog request follow their Route header (loose routing, §16.4: our own Route values are
  removed) or, without one, the Request-URI — for a registered contact over its binding's flow.
- Music on hold: a relayed re-INVITE that offers ``sendonly``/``inactive`` and is answered
  ``recvonly``/``inactive``, or that holds by address (``c=0.0.0.0``, RFC 2543), starts the
  services' music towards the held party's RTP address; the resuming re-INVITE or the BYE
  stops it.

- Notifier (RFC 6665): a SUBSCRIBE or PUBLISH to a lab user's AOR is the lab's own to answer
  (after the challenge): ``message-summary`` of one's own mailbox (lab/voicemail.py),
  ``presence`` and ``dialog`` of any lab user, PUBLISH of one's own ``presence``
  (lab/presence.py), 489 with ``Allow-Events`` for another package. OPTIONS to the lab lists
  the packages in ``Allow-Events``.

Every call (Call-ID of a request other than REGISTER/OPTIONS) is on record with every
message the lab sent or received for it (:meth:`LabProxy.calls`; the last
``MAX_CALLS`` calls, ``MAX_MESSAGES_PER_CALL`` messages each); each change of a call's state
is told to :attr:`LabProxy.call_listeners` (the dialog package's tracker is one). Python
units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from skinnysip.addresses import hostport, is_ip, strip_brackets
from skinnysip.lab.config import LabSettings
from skinnysip.lab.presence import LAB_EVENTS, PresenceNotifier
from skinnysip.lab.registrar import Binding, NonceGuard, Registrar, pick_targets
from skinnysip.lab.voicemail import EVENT as MWI_EVENT
from skinnysip.lab.voicemail import Mailboxes, MWINotifier
from skinnysip.net.resolver import ServerTarget
from skinnysip.net.sip_endpoint import ClientHandle, SIPEndpoint, SIPTransportError
from skinnysip.net.sip_transport import Transport, uri_transport
from skinnysip.net.trace import TraceRecord, to_wire_messages
from skinnysip.sdp import SDPParseError, SessionDescription, combine_directions, held_by_address
from skinnysip.sip.message import Headers, Request, Response, SIPParseError
from skinnysip.sip.reason import COMPLETED_ELSEWHERE, MAX_REASONS
from skinnysip.sip.request import (
    DIALOG_CREATING,
    build_cancel,
    build_response,
    event_package,
    new_branch,
    new_tag,
)
from skinnysip.sip.server_transaction import ServerState, ServerTransaction
from skinnysip.sip.syntax import split_comma, uint_or_none
from skinnysip.sip.transaction import Flow
from skinnysip.sip.transactions import (
    AckReceived,
    CancelReceived,
    LayerEvent,
    RequestReceived,
    ResponseReceived,
    SuccessRetransmission,
    TimedOut,
    TransportFailed,
)
from skinnysip.sip.uas import DEFAULT_ALLOW, UASCore
from skinnysip.sip.uri import NameAddr, SipURI, uri_of, user_of

if TYPE_CHECKING:
    from skinnysip.sip.identity import IdentitySigner

__all__ = ["MAX_CALLS", "MAX_MESSAGES_PER_CALL", "CallRecord", "LabProxy", "MusicOnHold"]

log = logging.getLogger("skinnysip.lab")

MAX_CALLS = 200
MAX_MESSAGES_PER_CALL = 1000
MAX_PENDING = 2048  # proxy transactions in progress at once
FLOW_GRACE = 2.0  # s past a UDP flow's Flow-Timer before its silence counts as a failed flow
RING_TIMEOUT = 120.0  # Timer C (§16.6 step 11: > 3 min is the RFC's floor for real proxies; a lab rings less)
AUTHENTICATED = ("INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "PUBLISH", "NOTIFY", "INFO", "UPDATE", "OPTIONS")


class _FlowFailed(SIPTransportError):
    """Every flow of an outbound binding's instance is gone (RFC 5626 §5.3): answer 430."""


class MusicOnHold(Protocol):
    """What the proxy needs from the services for music on hold (``lab/services.py``)."""

    def moh_start(self, key: str, remote: tuple[str, int], payload_type: int) -> None: ...

    def moh_stop(self, key: str) -> None: ...


@dataclass
class CallRecord:
    """One call (one Call-ID) as the lab saw it: ``call_id``, ``from_``/``to`` (URIs of the
    first request), ``method``, ``state`` (``trying``, ``ringing``, ``connected``,
    ``ended``, ``failed (486 Busy Here)``, ``delivered``, ``subscribed``, ``published``…),
    ``started`` (epoch seconds),
    the ``records`` of every message on the wire (bounded), ``from_tag`` (the first request's)
    and ``to_tag`` (an INVITE's answerer's: the 2xx's, else the first provisional's)."""

    call_id: str
    from_: str
    to: str
    method: str
    started: float
    state: str = "trying"
    records: deque[TraceRecord] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES_PER_CALL))
    from_tag: str | None = None
    to_tag: str | None = None

    def to_api(self) -> dict[str, Any]:
        """``{"callId", "from", "to", "method", "state", "started", "messages": [WireMessage…]}``."""
        return {"callId": self.call_id, "from": self.from_, "to": self.to, "method": self.method,
                "state": self.state, "started": self.started,
                "messages": [m.to_api() for m in to_wire_messages(list(self.records))]}


@dataclass
class _Branch:
    request: Request
    flow: Flow
    label: str
    handle: ClientHandle | None = None
    provisional: bool = False
    final: Response | None = None
    cancel_wanted: bool = False
    cancel_reasons: tuple[str, ...] = ()  # the Reason field values of its CANCEL (RFC 3326)
    cancelled: bool = False


@dataclass
class _Forward:
    """One proxied request: its server transaction and the branches (§16 "response context")."""

    tx: ServerTransaction
    request: Request
    branches: list[_Branch] = field(default_factory=list)
    answered: bool = False  # a final response went upstream
    cancelled: bool = False
    timer: asyncio.TimerHandle | None = None


def _ignore(event: object) -> None:
    """The listener of our CANCEL transactions: their 200 needs nothing."""


def _pop_via(message: Response) -> Response:
    """A copy of ``message`` without its top Via value (§16.7 step 3)."""
    headers = Headers()
    popped = False
    for name, value in message.headers:
        if name == "Via" and not popped:
            popped = True
            rest = split_comma(value)[1:]
            if rest:
                headers.add("Via", ", ".join(rest))
            continue
        headers.add(name, value)
    return Response(message.status_code, message.reason, headers, message.body)


def _audio_of(body: bytes) -> tuple[str, tuple[str, int] | None, int | None, bool] | None:
    """(direction, RTP address, first payload type, held by address) of the first audio
    stream of an SDP body; a stream at ``c=0.0.0.0`` (RFC 2543's hold,
    :func:`~skinnysip.sdp.held_by_address`) does not receive, whatever its direction
    attribute says."""
    if not body:
        return None
    try:
        sd = SessionDescription.parse(body)
    except SDPParseError:
        return None
    for m in sd.media:
        if m.media != "audio":
            continue
        conn = sd.connection_for(m)
        remote = None
        if conn is not None and m.port and conn.host not in ("0.0.0.0", "::"):
            remote = (conn.host, m.port)
        pts = m.payload_types
        direction, by_address = sd.direction_of(m), held_by_address(sd, m)
        if by_address:
            direction = combine_directions(direction, "sendonly")
        return direction, remote, (pts[0] if pts else None), by_address
    return None


class _ProxyChecks(UASCore):
    """What a proxy checks before it acts on a request (RFC 3261 §16.3): the Request-URI
    scheme (416) and ``Proxy-Require`` (420; the lab supports no proxy extension). A proxy
    does not look at ``Require``, bodies or methods: those are the UAS's business."""

    def check(self, request: Request, *, in_dialog_known: bool | None = None,
              branch: str | None = None) -> Response | None:
        if request.method in ("ACK", "CANCEL"):
            return None
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            return self._response(request, 416)
        required = [v.strip() for v in request.headers.values("Proxy-Require") if v.strip()]
        if required:
            return self._response(request, 420, [("Unsupported", ", ".join(required))])
        return None


class LabProxy:
    """The lab's registrar + proxy. ``settings``: the lab's :class:`LabSettings`;
    ``tls_cert``/``tls_key``: PEM files for the TLS listeners. After :meth:`start`:
    ``services``/``bridge`` (the UDP addresses of the lab's own UASes; their requests are
    trusted, not challenged) and ``moh`` may be set at any time."""

    def __init__(self, settings: LabSettings, *, tls_cert: str | None = None, tls_key: str | None = None,
                 ring_timeout: float = RING_TIMEOUT) -> None:
        self.settings = settings
        self.ring_timeout = ring_timeout
        self.endpoint = SIPEndpoint(trying_delay=None, tls_cert=tls_cert, tls_key=tls_key, tls_verify=False,
                                    uas=_ProxyChecks(server="skinnysip-lab", allow=(*DEFAULT_ALLOW, "REGISTER",
                                                                                    "SUBSCRIBE", "PUBLISH")),
                                    user_agent="skinnysip-lab",
                                    trace_limit=20000, idle_timeout=900.0)
        self.guard = NonceGuard(settings.realm, {u.user: u.password for u in settings.users},
                                algorithms=settings.algorithms, lifetime=settings.nonce_lifetime,
                                per_user={u.user: u.algorithms for u in settings.users if u.algorithm})
        self.registrar = Registrar({u.user for u in settings.users}, min_expires=settings.min_expires,
                                   max_expires=settings.max_expires, default_expires=settings.default_expires,
                                   domain=settings.domain, flow_timer=settings.flow_timer,
                                   flow_timer_udp=settings.flow_timer_udp)
        # RFC 5626 §8: a registrar doing outbound is a STUN server on its SIP UDP ports
        self.endpoint.transport.answer_stun = True
        self.lines = {d.line for d in settings.devices}
        #: every lab user's voicemail box, and the lab as their message-summary notifier
        self.mailboxes = Mailboxes({u.user for u in settings.users}, settings.domain)
        self.notifier = MWINotifier(self.endpoint, self.mailboxes, allow_events=LAB_EVENTS)
        #: the lab as its users' presence server and busy-lamp-field notifier (lab/presence.py)
        self.presence = PresenceNotifier(self.endpoint, registrar=self.registrar, users=self.mailboxes.users,
                                         domain=settings.domain)
        #: told (record, the request of the transaction that changed it) after each call state change
        self.call_listeners: list[Callable[[CallRecord, Request], None]] = [self.presence.call_changed]
        self.services: tuple[str, int] | None = None
        self.bridge: tuple[str, int] | None = None
        #: the STIR/SHAKEN authentication service's signer (``stir.sign``; set by the Lab)
        self.stir: IdentitySigner | None = None
        self.moh: MusicOnHold | None = None
        #: (transport, IP) → bound (IP, port)
        self.listeners: dict[tuple[str, str], tuple[str, int]] = {}
        self._calls: OrderedDict[str, CallRecord] = OrderedDict()
        self._forwards: dict[int, _Forward] = {}
        self._moh_keys: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove_handler: Callable[[], None] | None = None

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Listen on every host: UDP and TCP on ``sip_port``, TLS on ``sips_port`` (0: a free
        port, the same for UDP and TCP when it can be), WebSocket on ``ws_port`` and
        ``wss_port`` when set. Returns ``{"udp": "h:p", "tcp": …, "tls": …}`` (and ``ws``,
        ``wss``) of the first host. Raises :class:`SIPTransportError` (a busy port)."""
        self.endpoint.trace.listener = self._traced
        self._remove_handler = self.endpoint.add_handler(self._handle)
        s = self.settings
        for host in s.hosts:
            host = strip_brackets(host)
            udp = await self.endpoint.listen("udp", host, s.sip_port)
            self.listeners[("udp", host)] = udp
            self.listeners[("tcp", host)] = await self._listen_stream("tcp", host, s.sip_port or udp[1])
            self.listeners[("tls", host)] = await self._listen_stream("tls", host, s.sips_port)
            if s.ws_port is not None:  # SIP over WebSocket (RFC 7118): browser phones
                self.listeners[("ws", host)] = await self.endpoint.listen("ws", host, s.ws_port)
            if s.wss_port is not None:
                self.listeners[("wss", host)] = await self.endpoint.listen("wss", host, s.wss_port)
        first = strip_brackets(s.hosts[0])
        return {t: hostport(*self.listeners[(t, first)]) for t in ("udp", "tcp", "tls", "ws", "wss")
                if (t, first) in self.listeners}

    async def _listen_stream(self, transport: Transport, host: str, port: int) -> tuple[str, int]:
        try:
            return await self.endpoint.listen(transport, host, port)
        except SIPTransportError:
            fixed = self.settings.sip_port if transport == "tcp" else self.settings.sips_port
            if fixed:
                raise
            return await self.endpoint.listen(transport, host, 0)  # UDP's free port is taken for TCP

    async def close(self) -> None:
        """Stop listening and end every task (idempotent)."""
        if self._remove_handler is not None:
            self._remove_handler()
        for forward in self._forwards.values():
            if forward.timer is not None:
                forward.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.notifier.close()
        await self.presence.close()
        await self.endpoint.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what the lab shows -----------------------------------------------------------------
    def calls(self) -> list[dict[str, Any]]:
        """Every call on record, oldest first (:meth:`CallRecord.to_api`)."""
        return [c.to_api() for c in self._calls.values()]

    def bindings(self) -> list[dict[str, Any]]:
        """The live registrations: ``{"user", "contact", "expires" (s), "transport", "source"}``,
        and where present ``"instance"`` (the ``+sip.instance`` URN), ``"regId"`` (an outbound
        binding's reg-id, RFC 5626), ``"pubGruu"``/``"tempGruu"`` (RFC 5627; the newest
        temporary GRUU made for it), ``"path"`` (the proxies it registered through, RFC 3327)."""
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        for b in self.registrar.all(now):
            row: dict[str, Any] = {"user": b.user, "contact": b.uri, "expires": b.remaining(now),
                                   "transport": b.flow.transport, "source": hostport(*b.flow.remote)}
            if b.instance is not None:
                row["instance"] = b.instance
                row["pubGruu"] = self.registrar.pub_gruu(b)
            if b.reg_id is not None:
                row["regId"] = b.reg_id
            temp = self.registrar.temp_gruu(b)
            if temp is not None:
                row["tempGruu"] = temp
            if b.path:
                row["path"] = list(b.path)
            out.append(row)
        return out

    def subscriptions(self) -> dict[str, int]:
        """What the lab serves as a notifier now: live subscriptions per event package
        (``message-summary``, ``presence``, ``dialog``) and ``publications`` (RFC 3903)."""
        return {**self.notifier.counts(), **self.presence.counts(), "publications": self.presence.publications}

    def _traced(self, record: TraceRecord) -> None:
        call = self._calls.get(record.call_id or "")
        if call is not None:
            call.records.append(record)

    def _record(self, request: Request) -> CallRecord | None:
        call_id = request.call_id or ""
        call = self._calls.get(call_id)
        if call is None and request.method not in ("REGISTER", "OPTIONS", "ACK", "CANCEL") and request.to_tag is None:
            call = CallRecord(call_id, uri_of(request.headers.get("From")), uri_of(request.headers.get("To")),
                              request.method, time.time(), from_tag=request.from_tag)
            call.records.extend(self.endpoint.trace.for_call(call_id)[-MAX_MESSAGES_PER_CALL:])
            self._calls[call_id] = call
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)
        return call

    # -- our addresses ----------------------------------------------------------------------
    def _ours(self, uri: SipURI | str, *, domain: bool = False) -> bool:
        """True if ``uri`` names this proxy (its domain, or one of its listening addresses).

        A URI with an address and no port names the default port (5060, 5061 for TLS), so a
        Route or Record-Route value is ours only at a port we listen on. With ``domain`` the URI
        is a Request-URI naming a domain (RFC 3261 §10.2: the registrar's domain; §16.5 a user
        in it): a domain is a host, so one of our addresses without a port is ours on whatever
        port we listen — what a phone sends whose domain is the lab's IP address.
        """
        if not isinstance(uri, SipURI) or uri.scheme == "tel":
            return False
        host = strip_brackets(uri.host).lower()
        if host in (self.settings.domain.lower(), "localhost"):
            return True
        ports = {p for (_t, ip), (_, p) in self.listeners.items() if ip == host}
        if not ports:
            return False
        if domain and uri.port is None:
            return True
        default = 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
        return (uri.port or default) in ports

    def _own_routes_removed(self, request: Request) -> tuple[list[str], int]:
        """(Route values left after ours at the top are removed (§16.4), how many were ours).
        Raises :class:`SIPParseError` for a malformed Route."""
        routes = [r for r in request.headers.values("Route") if r.strip()]
        popped = 0
        while routes and self._ours(NameAddr.parse(routes[0]).uri):
            routes.pop(0)
            popped += 1
        return routes, popped

    def _known_target(self, uri: SipURI) -> bool:
        """True if ``uri`` is a registered contact, a GRUU of the lab's domain (RFC 5627) or
        the address of a lab service/bridge."""
        if any(b.uri == str(uri) for b in self.registrar.all(time.monotonic())):
            return True
        if self.registrar.is_gruu(uri) and self._ours(uri, domain=True):
            return True
        if uri.port is None:
            return False
        return (strip_brackets(uri.host), uri.port) in (self.services, self.bridge)

    def _names_us(self, uri: str) -> bool:
        """True if the text ``uri`` is a SIP URI naming this proxy without a user."""
        try:
            parsed = SipURI.parse(uri)
        except SIPParseError:
            return False
        return parsed.user is None and self._ours(parsed)

    def _record_route(self, flow: Flow) -> str:
        """Our Record-Route value as seen over ``flow``: the listener of its transport and
        address family, ``lr`` (RFC 3261 §16.6 step 4)."""
        local_ip = self.endpoint.local_address(flow)[0]
        six = ":" in local_ip
        ip, port = next(((ip, addr[1]) for (t, ip), addr in self.listeners.items()
                         if t == flow.transport and (":" in ip) == six), (local_ip, 5060))
        params: dict[str, str | None] = {}
        if flow.transport != "udp":
            params["transport"] = uri_transport(flow.transport)
        params["lr"] = None
        return str(NameAddr(None, SipURI("sip", None, None, ip, port, params)))

    # -- the handler ------------------------------------------------------------------------
    def _handle(self, event: LayerEvent) -> bool:
        if isinstance(event, RequestReceived):
            self._record(event.request)
            self._on_request(event)
            return True
        if isinstance(event, CancelReceived):
            self._on_cancel(event)
            return True
        if isinstance(event, AckReceived):
            self._spawn(self._forward_ack(event.request))
            return True
        if isinstance(event, SuccessRetransmission):
            self._spawn(self._forward_stateless_response(event.response))
            return True
        return False

    def _respond(self, tx: ServerTransaction, code: int, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        with contextlib.suppress(ValueError, SIPParseError):
            response = build_response(tx.request, code, reason, to_tag=new_tag() if code >= 200 else None,
                                      headers=headers or [], server="skinnysip-lab")
            self.endpoint.send_response(tx, response)
            if code >= 300:
                self._set_state(tx.request, f"failed ({response.summary})")

    def _notifier_answered(self, tx: ServerTransaction) -> None:
        """The call record of a SUBSCRIBE/PUBLISH the lab answered itself says how (it said
        the challenge's 407 until then): ``subscribed``/``published``, or ``failed (…)``."""
        answer = tx.last_response
        if answer is None:
            return
        if answer.status_code < 300:
            self._set_state(tx.request, "subscribed" if tx.request.method == "SUBSCRIBE" else "published")
        else:
            self._set_state(tx.request, f"failed ({answer.summary})")

    def _set_state(self, request: Request, state: str, response: Response | None = None) -> None:
        """The state of the call of ``request`` (a request outside a dialog), and its answerer's
        tag from ``response`` (a 2xx's wins over a provisional's)."""
        call = self._calls.get(request.call_id or "")
        if call is not None and request.to_tag is None:
            call.state = state
            if response is not None and response.to_tag and (call.to_tag is None or response.status_code >= 200):
                call.to_tag = response.to_tag
            self._call_changed(call, request)

    def _call_changed(self, call: CallRecord, request: Request) -> None:
        for listener in list(self.call_listeners):
            try:
                listener(call, request)
            except Exception:  # a listener's fault must not stop the proxy
                log.exception("lab: call listener failed")

    def _sign(self, request: Request, user: str, target: SipURI) -> None:
        """STIR/SHAKEN authentication service (RFC 8224 §5, RFC 8588): the INVITE of a lab
        user the lab just authenticated gets a Date (when it has none) and an Identity with
        ``orig`` that user, ``dest`` the Request-URI's user, attestation ``stir.attest``."""
        assert self.stir is not None
        for name, value in self.stir.header_fields(user, target.user or str(target), time.time(),
                                                   date=not request.headers.get("Date")):
            request.headers.add(name, value)

    def _trusted(self, flow: Flow) -> bool:
        return flow.transport == "udp" and flow.remote in (self.services, self.bridge)

    def _on_request(self, event: RequestReceived) -> None:
        request, tx, flow = event.request, event.transaction, event.flow
        if request.method == "INVITE":
            self._respond(tx, 100)  # §16.2: at once, so the caller stops retransmitting
        try:
            max_forwards = int((request.headers.get("Max-Forwards") or "70").strip())
        except ValueError:
            self._respond(tx, 400, "Bad Request (Max-Forwards)")
            return
        try:
            routes, popped = self._own_routes_removed(request)
        except SIPParseError:
            self._respond(tx, 400, "Bad Request (Route)")
            return
        try:
            target = SipURI.parse(request.uri)
        except SIPParseError:
            self._respond(tx, 416)
            return
        in_dialog = request.to_tag is not None
        if not routes and self._ours(target, domain=True) and not in_dialog:
            if request.method == "REGISTER":
                self._register(tx, request, flow)
                return
            if request.method == "OPTIONS" and not target.user:
                response = self.endpoint.uas.options(request)
                response.headers.add("Allow-Events", ", ".join(LAB_EVENTS))  # RFC 6665 §7.2.2
                self.endpoint.send_response(tx, response)
                return
        if max_forwards <= 0:
            self._respond(tx, 483)
            return
        if len(self._forwards) >= MAX_PENDING:
            self._respond(tx, 503, headers=[("Retry-After", "5")])
            return
        notifier = next((n for n in (self.notifier, self.presence) if n.owns(request)), None) if in_dialog else None
        if notifier is not None and not routes:  # a dialog of one of the lab's subscriptions
            notifier.in_dialog(tx, request)
            return
        if in_dialog:
            # a dialog the lab record-routed (our Route value was on top), or a request straight
            # to a registered contact or a lab service; anything else would make the lab an
            # open relay for whoever forges a To tag
            if not popped and not self._known_target(target):
                self._respond(tx, 403, "Forbidden (not a dialog through the lab)")
                return
            self._spawn(self._forward(self._pending(tx, request), routes, max_forwards, in_dialog=True))
            return
        # a Request-URI that is a registered contact (an attended transfer's Refer-To names the
        # target's Contact, as Twinkle's does) is forwarded to it; other domains are not ours
        direct = not routes and not self._ours(target, domain=True)
        if direct and not self._known_target(target):
            self._respond(tx, 404, "Not Found (not a lab domain)")
            return
        authenticated: str | None = None
        if not self._trusted(flow) and request.method in AUTHENTICATED:
            result = self.guard.check(request, time.time(), proxy=True, uri_ok=self._names_us)
            if result.user is None:
                self._respond(tx, 407, headers=self.guard.challenge(
                    time.time(), proxy=True, stale=result.stale, user=user_of(request.headers.get("From"))))
                return
            if user_of(request.headers.get("From")) != result.user:
                self._respond(tx, 403, f"Forbidden (From is not {result.user})")
                return
            authenticated = result.user
        if (request.method in ("SUBSCRIBE", "PUBLISH") and not routes and not direct and target.user
                and not self.registrar.is_gruu(target) and self.mailboxes.has(target.user)):
            if request.method == "SUBSCRIBE" and event_package(request) == MWI_EVENT:
                # the lab is the voicemail server: a user's own mailbox only (RFC 3842 §6)
                if authenticated != target.user:
                    self._respond(tx, 403, f"Forbidden (not the mailbox of {authenticated or 'a lab service'})")
                    return
                self.notifier.subscribe(tx, request, flow, target.user)
            else:  # presence, busy lamps (dialog), PUBLISH; 489 for another event (lab/presence.py)
                self.presence.handle(tx, request, flow, target.user, authenticated)
            self._notifier_answered(tx)
            return
        if request.method == "INVITE":
            self._set_state(request, "trying")  # forwarded now (after the challenge, if any)
            if self.stir is not None and authenticated is not None and not request.headers.get_all("Identity"):
                self._sign(request, authenticated, target)
        # a pre-loaded Route beyond the lab (§16.4) is followed, but only for an authenticated user
        self._spawn(self._forward(self._pending(tx, request), routes, max_forwards, in_dialog=False,
                                  direct=direct, user="" if routes else target.user or ""))

    # -- registrar --------------------------------------------------------------------------
    def _register(self, tx: ServerTransaction, request: Request, flow: Flow) -> None:
        now = time.time()
        result = self.guard.check(request, now, proxy=False, uri_ok=self._names_us)
        if result.user is None:
            self._respond(tx, 401, headers=self.guard.challenge(
                now, proxy=False, stale=result.stale, user=user_of(request.headers.get("To"))))
            return
        aor_user = user_of(request.headers.get("To"))
        if aor_user != result.user:
            self._respond(tx, 403, f"Forbidden ({result.user} may not register {aor_user})")
            return
        outcome = self.registrar.register(result.user, request, flow, time.monotonic())
        info = self.guard.authentication_info(result) if outcome.code == 200 else None
        self._respond_register(tx, outcome.code, outcome.reason, [*outcome.headers, *([info] if info else [])])
        if outcome.code == 200:
            self.presence.registration_changed(result.user)

    def _respond_register(self, tx: ServerTransaction, code: int, reason: str, headers: list[tuple[str, str]]) -> None:
        phrase = None if code == 200 or not reason else f"{'Bad Request' if code == 400 else 'Error'} ({reason})"
        if code in (423, 439):  # the standard phrase (RFC 3261 §21.4.17, RFC 5626 §11.5)
            phrase = None
        self._respond(tx, code, phrase, headers)

    # -- locating and forwarding ------------------------------------------------------------
    async def _flow_for_uri(self, uri: SipURI) -> Flow:
        """The flow to ``uri``: a registered contact's binding flow when it is one (its
        connection if still open, else its source address over UDP), else the URI's own host,
        port and transport (IP literals only: the lab does no DNS)."""
        wanted = str(uri)
        now = time.monotonic()
        matches = [b for b in self.registrar.all(now) if b.uri == wanted]
        for binding in matches:
            if self._alive(binding):
                return binding.flow.back()
        outbound = next((b for b in matches if b.outbound), None)
        if outbound is not None:  # RFC 5626 §5.3: another flow of that instance, else 430
            others = sorted((b for b in self.registrar.lookup(outbound.user, now)
                             if b.outbound and b.instance == outbound.instance and self._alive(b)),
                            key=lambda b: b.reg_id or 0)
            if others:
                return others[0].flow.back()
            raise _FlowFailed(f"every flow of {outbound.instance} is gone")
        host = strip_brackets(uri.host)
        if not is_ip(host):
            raise SIPTransportError(f"{uri.host} is not an address the lab can reach (no DNS in the lab)")
        transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
        if transport in ("ws", "wss"):
            raise SIPTransportError(f"{uri} is a WebSocket client whose connection is gone: it cannot be "
                                    "connected to (RFC 7118 §5)")
        if transport not in ("udp", "tcp", "tls"):
            raise SIPTransportError(f"transport {transport} is not supported")
        port = uri.port or (5061 if transport == "tls" else 5060)
        return await self.endpoint.flow_to(ServerTarget(host, port, transport, host), timeout=5.0)  # type: ignore[arg-type]

    def _path(self, uri: str) -> list[str]:
        """The ``Path`` (RFC 3327 §5.3) of the binding whose contact is ``uri``: the route a
        request to it takes (through an edge proxy and its flow token, RFC 5626 §5.2); none
        for a UA that registered directly."""
        for binding in self.registrar.all(time.monotonic()):
            if binding.uri == uri and binding.path:
                return list(binding.path)
        return []

    def _alive(self, binding: Binding) -> bool:
        """Whether the flow ``binding`` registered over can still carry a request: an outbound
        UDP flow while a STUN keep-alive (or its REGISTER) came from it within the Flow-Timer
        (RFC 5626 §4.4: how long the server waits for a keep-alive before it counts the flow
        dead), :data:`FLOW_GRACE` s more for the network; another UDP flow always; a stream
        while its connection is open (TCP notices a dead peer itself)."""
        flow = binding.flow
        transport = self.endpoint.transport
        if flow.connection is None:
            if not binding.outbound:  # no keep-alive was agreed: the binding's life is the flow's
                return True
            last = max(binding.updated, transport.stun_seen.get(flow.remote, 0.0))
            return time.monotonic() - last <= self.registrar.flow_timer_udp + FLOW_GRACE
        conn = transport.connections.get(flow.connection)
        return conn is not None and not conn.closed

    def _chosen(self, bindings: list[Binding]) -> list[tuple[str, Flow | None]] | tuple[int, str]:
        """(Request-URI, known flow) for ``bindings``: one per instance (:func:`pick_targets`),
        an outbound one over its own flow; 430 when only failed flows were left (RFC 5626
        §5.3, §11.4)."""
        chosen, failed = pick_targets(bindings, self._alive)
        if not chosen:
            return (430, "Flow Failed") if failed else (480, "Temporarily Unavailable (not registered)")
        return [(b.uri, b.flow.back() if b.outbound else None) for b in chosen]

    def _gruu(self, uri: str) -> SipURI | None:
        """The Request-URI as a GRUU of the lab's domain (a ``gr`` parameter, RFC 5627 §3.1),
        else None."""
        try:
            parsed = SipURI.parse(uri)
        except SIPParseError:
            return None
        if self.registrar.is_gruu(parsed) and self._ours(parsed, domain=True):
            return parsed
        return None

    def _gruu_targets(self, gruu: SipURI) -> list[tuple[str, Flow | None]] | tuple[int, str]:
        """The one target of a GRUU (RFC 5627 §5.5: the Request-URI becomes the registered
        contact of that instance), or (404/480/430, reason)."""
        found = self.registrar.gruu_bindings(gruu, time.monotonic())
        if isinstance(found, tuple):
            return found
        return self._chosen(found)

    def _targets(self, user: str) -> list[tuple[str, Flow | None]] | tuple[int, str]:
        """(Request-URI, known flow) of every target for ``user``, or (code, reason)."""
        kind = self.settings.extensions.get(user)
        if kind is None and user.startswith("*") and self.mailboxes.has(user[1:]) \
                and "voicemail" in self.settings.extensions.values():
            kind = "voicemail"  # *<user>: straight to that user's mailbox, to leave a message
        if kind is not None:
            if self.services is None:
                return 480, f"Temporarily Unavailable ({kind} service not running)"
            return [(f"sip:{user}@{hostport(*self.services)}", Flow("udp", self.services))]
        if user in self.lines:
            if self.bridge is None:
                return 480, "Temporarily Unavailable (SCCP bridge not running)"
            return [(f"sip:{user}@{hostport(*self.bridge)}", Flow("udp", self.bridge))]
        if self.settings.user(user) is None:
            return 404, "Not Found"
        return self._chosen(self.registrar.lookup(user, time.monotonic()))

    def _pending(self, tx: ServerTransaction, request: Request) -> _Forward:
        """The response context of a request about to be forwarded, registered at once so a
        CANCEL arriving before the forwarding task runs finds it."""
        forward = _Forward(tx, request)
        self._forwards[id(tx)] = forward
        return forward

    async def _forward(self, forward: _Forward, routes: list[str], max_forwards: int, *,
                       in_dialog: bool, direct: bool = False, user: str = "") -> None:
        tx, request = forward.tx, forward.request
        try:
            if forward.cancelled or forward.answered:
                return
            gruu = None if routes else self._gruu(request.uri)
            if routes or ((in_dialog or direct) and gruu is None):
                targets: list[tuple[str, Flow | None]] = [(request.uri, None)]
            else:
                found = self._gruu_targets(gruu) if gruu is not None else self._targets(user)
                if isinstance(found, tuple):
                    self._respond(tx, found[0], found[1])
                    return
                targets = found
            flow_failed = False
            if request.method == "BYE":
                self._stop_moh(request.call_id or "")
            for uri, known in targets:
                try:
                    hops = routes or self._path(uri)
                    hop = NameAddr.parse(hops[0]).uri if hops else SipURI.parse(uri)
                    if not isinstance(hop, SipURI):
                        raise SIPTransportError(f"cannot route to {hop}")
                    flow = known or await self._flow_for_uri(hop)
                    if flow.transport == "udp" and flow.local is None:
                        flow = await self.endpoint.transport.udp_flow(flow.remote)
                    branch = _Branch(self._outgoing(request, uri, hops, max_forwards, tx, flow), flow, uri)
                except _FlowFailed as exc:
                    log.info("lab: cannot reach %s: %s", uri, exc.reason)
                    flow_failed = True
                    continue
                except (SIPTransportError, SIPParseError) as exc:
                    log.info("lab: cannot reach %s: %s", uri, exc.reason)
                    continue
                if forward.cancelled or forward.answered:
                    break
                forward.branches.append(branch)
                try:
                    handle = self.endpoint.send_request(branch.request, flow)
                except (SIPTransportError, ValueError, SIPParseError) as exc:
                    branch.final = self._synthetic(branch, 503, str(getattr(exc, "reason", exc)))
                    continue
                assert handle is not None
                branch.handle = handle
                handle.set_listener(functools.partial(self._branch_event, forward, branch))
            if not forward.branches:
                if flow_failed:
                    self._respond(tx, 430)
                else:
                    self._respond(tx, 480 if not routes else 502, "Temporarily Unavailable (no reachable contact)")
                return
            if tx.method == "INVITE" and not forward.answered:
                loop = asyncio.get_running_loop()
                forward.timer = loop.call_later(self.ring_timeout, self._timer_c, forward)
            self._maybe_final(forward)
        finally:
            self._done(forward)

    def _outgoing(self, request: Request, uri: str, routes: list[str], max_forwards: int, tx: ServerTransaction,
                  flow: Flow) -> Request:
        """The request to send on one branch (§16.6 steps 1-8)."""
        headers = Headers()
        headers.add("Via", self.endpoint.via(flow))
        dialog_creating = request.method in DIALOG_CREATING and request.to_tag is None
        if dialog_creating:
            outer = self._record_route(flow)
            inner = self._record_route(tx.flow) if tx.flow is not None else outer
            headers.add("Record-Route", outer)
            if inner != outer:  # RFC 5658: one for each side when transport or family changes
                headers.add("Record-Route", inner)
        for route in routes:
            headers.add("Route", route)
        for name, value in request.headers:
            if name in ("Route", "Max-Forwards"):
                continue
            if name == "Proxy-Authorization" and f'realm="{self.settings.realm}"' in value:
                continue  # our own credentials end here (RFC 3261 §22.3)
            headers.add(name, value)
        headers.set("Max-Forwards", str(max_forwards - 1))
        return Request(request.method, uri, headers, request.body)

    def _synthetic(self, branch: _Branch, code: int, reason: str) -> Response:
        return build_response(branch.request, code, f"{'Request Timeout' if code == 408 else 'Service Unavailable'}"
                              f" ({reason})"[:120], to_tag=new_tag())

    # -- responses --------------------------------------------------------------------------
    def _branch_event(self, forward: _Forward, branch: _Branch, event: ResponseReceived | TimedOut | TransportFailed) -> None:
        if isinstance(event, TimedOut):
            if branch.final is None:
                branch.final = self._synthetic(branch, 408, "no answer")
            self._maybe_final(forward)
            return
        if isinstance(event, TransportFailed):
            if branch.final is None:
                branch.final = self._synthetic(branch, 503, event.reason)
            self._maybe_final(forward)
            return
        response = event.response
        code = response.status_code
        if code == 100:
            return
        upstream = _pop_via(response)
        if code < 200:
            branch.provisional = True
            if branch.cancel_wanted and not branch.cancelled:
                self._cancel_branch(branch)
            if not forward.answered:
                with contextlib.suppress(ValueError):
                    self.endpoint.send_response(forward.tx, upstream)
                if code in (180, 183):
                    self._set_state(forward.request, "ringing", response)
            return
        if code < 300:
            if branch.final is None:
                branch.final = response
            self._success(forward, branch, upstream)
            return
        if branch.final is None:
            branch.final = response
        if code >= 600:
            self._cancel_all(forward)
        self._maybe_final(forward)

    def _success(self, forward: _Forward, branch: _Branch, upstream: Response) -> None:
        """Forward a 2xx at once (§16.7 step 5), a retransmission or another branch's too."""
        tx = forward.tx
        if tx.state in (ServerState.PROCEEDING, ServerState.TRYING) and not forward.answered:
            with contextlib.suppress(ValueError):
                self.endpoint.send_response(tx, upstream)
            forward.answered = True
            if forward.timer is not None:
                forward.timer.cancel()
            method = forward.request.method
            self._set_state(forward.request, "connected" if method == "INVITE" else "delivered", upstream)
            if method == "BYE":
                self._set_call_state(forward.request, "ended")
            if method == "INVITE" and forward.request.to_tag is not None:
                self._check_hold(branch.request, upstream)
            # the other branches lost: their phones were not missed (RFC 3326 §1)
            self._cancel_all(forward, (COMPLETED_ELSEWHERE.header_value(),))
            self._done(forward)
        elif tx.flow is not None and tx.method == "INVITE":
            with contextlib.suppress(SIPTransportError):
                self.endpoint.send_stateless(upstream, tx.flow, "2xx retransmission")

    def _set_call_state(self, request: Request, state: str) -> None:
        call = self._calls.get(request.call_id or "")
        if call is not None:
            call.state = state
            self._call_changed(call, request)

    def _maybe_final(self, forward: _Forward) -> None:
        """When every branch has its final response and none was 2xx: send the best (§16.7
        step 6)."""
        if forward.answered or not forward.branches or any(b.final is None for b in forward.branches):
            return
        finals = [b.final for b in forward.branches if b.final is not None]
        six = [r for r in finals if r.status_code >= 600]
        best = six[0] if six else min(finals, key=lambda r: (r.status_code // 100, r.status_code))
        upstream = _pop_via(best)
        if upstream.status_code == 503:  # §16.7 step 6: a 503 is not passed on as such
            upstream = Response(500, "Server Internal Error (next hop unavailable)", upstream.headers, upstream.body)
        forward.answered = True
        if forward.timer is not None:
            forward.timer.cancel()
        with contextlib.suppress(ValueError):
            self.endpoint.send_response(forward.tx, upstream)
        if forward.request.method == "BYE":
            self._set_call_state(forward.request, "ended")
        else:
            self._set_state(forward.request, f"failed ({upstream.summary})")
        self._done(forward)

    def _done(self, forward: _Forward) -> None:
        """Forget a proxied request once its final response went upstream (its branches'
        listeners keep forwarding 2xx retransmissions)."""
        if forward.answered or forward.tx.final or forward.tx.terminated:
            self._forwards.pop(id(forward.tx), None)

    # -- CANCEL -----------------------------------------------------------------------------
    def _on_cancel(self, event: CancelReceived) -> None:
        """§16.10: 200 to the CANCEL at once; CANCEL every pending branch (their 487 goes
        upstream as the best response); 487 ourselves when nothing was forwarded yet."""
        self._respond(event.transaction, 200)
        forward = self._forwards.get(id(event.invite))
        if forward is None or not forward.branches:
            if forward is not None:  # not forwarded yet: it never will be
                forward.cancelled = forward.answered = True
                self._forwards.pop(id(event.invite), None)
            if not event.invite.final:
                self._respond(event.invite, 487)
            return
        forward.cancelled = True
        self._set_state(forward.request, "cancelled")
        self._cancel_all(forward, tuple(event.request.headers.get_all("Reason")[:MAX_REASONS]))  # the caller's why

    def _cancel_all(self, forward: _Forward, reasons: tuple[str, ...] = ()) -> None:
        """CANCEL every pending branch, with ``reasons`` as its Reason field values."""
        for branch in forward.branches:
            if branch.final is None and not branch.cancelled:
                branch.cancel_reasons = reasons
                if branch.provisional:
                    self._cancel_branch(branch)
                else:
                    branch.cancel_wanted = True  # §9.1: only after a provisional response

    def _cancel_branch(self, branch: _Branch) -> None:
        if branch.request.method != "INVITE":
            return
        branch.cancelled = True
        with contextlib.suppress(SIPTransportError, ValueError, SIPParseError):
            handle = self.endpoint.send_request(build_cancel(branch.request, reasons=branch.cancel_reasons),
                                                branch.flow)
            if handle is not None:
                handle.set_listener(_ignore)

    def _timer_c(self, forward: _Forward) -> None:
        """Timer C fired: nobody answered in ``ring_timeout`` seconds (§16.6 step 11)."""
        if not forward.answered:
            for branch in forward.branches:
                if branch.final is None and not branch.provisional:
                    branch.final = self._synthetic(branch, 408, "no answer")
            self._cancel_all(forward)
            self._maybe_final(forward)

    # -- ACK and stray 2xx ------------------------------------------------------------------
    async def _forward_ack(self, ack: Request) -> None:
        """Forward an ACK for a 2xx along its Route (or to its Request-URI) with our Via
        (§16.6, §16.11); not a transaction: sent once."""
        try:
            routes, popped = self._own_routes_removed(ack)
            uri, known = ack.uri, None
            gruu = None if routes else self._gruu(ack.uri)
            if gruu is not None:  # to a GRUU (RFC 5627 §5.5): to the contact of that instance
                found = self._gruu_targets(gruu)
                if isinstance(found, tuple):
                    return
                uri, known = found[0]
            hops = routes or self._path(uri)  # a registered contact behind an edge proxy: its Path
            hop = NameAddr.parse(hops[0]).uri if hops else SipURI.parse(uri)
            if not isinstance(hop, SipURI) or (not hops and self._ours(hop)):
                return  # an ACK for us, or for nowhere
            target = hop if routes or not hops else SipURI.parse(uri)
            if not popped and not (not routes and self._known_target(target)):
                return  # not through a dialog the lab record-routed (no open relay)
            flow = known or await self._flow_for_uri(hop)
            if flow.transport == "udp" and flow.local is None:
                flow = await self.endpoint.transport.udp_flow(flow.remote)
            max_forwards = int((ack.headers.get("Max-Forwards") or "70").strip())
            if max_forwards <= 0:
                return
            headers = Headers()
            headers.add("Via", self.endpoint.via(flow, new_branch()))
            for route in hops:
                headers.add("Route", route)
            for name, value in ack.headers:
                if name not in ("Route", "Max-Forwards"):
                    headers.add(name, value)
            headers.set("Max-Forwards", str(max_forwards - 1))
            self.endpoint.send_request(Request("ACK", uri, headers, ack.body), flow)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            log.info("lab: ACK not forwarded: %s", getattr(exc, "reason", exc))

    async def _forward_stateless_response(self, response: Response) -> None:
        """A 2xx retransmission whose client transaction has ended (§16.7 step 5 / RFC
        6026): pop our Via and send it where the next Via says."""
        upstream = _pop_via(response)
        try:
            via = upstream.top_via
            if via is None:
                return
            host = via.params.get("received") or via.host
            rport = via.params.get("rport")
            port = uint_or_none(rport, 65535) or via.port or 5060
            transport = via.transport.lower()
            if transport == "udp":
                flow = await self.endpoint.transport.udp_flow((strip_brackets(host), port))
            else:
                flow = Flow(transport, (strip_brackets(host), port))
            self.endpoint.send_stateless(upstream, flow, "2xx retransmission")
        except (SIPTransportError, SIPParseError, ValueError):
            return

    # -- music on hold ----------------------------------------------------------------------
    def _check_hold(self, offer_request: Request, answer: Response) -> None:
        """A re-INVITE's offer and its 2xx answer (RFC 3264 §8.4): hold starts the music
        towards the answerer (the held party), resume stops it."""
        if self.moh is None:
            return
        offer, reply = _audio_of(offer_request.body), _audio_of(answer.body)
        if offer is None or reply is None:
            return
        call_id = offer_request.call_id or ""
        key = f"{call_id}:{offer_request.to_tag or ''}"
        # RFC 2543's hold (the offer at c=0.0.0.0) is often answered sendrecv: the offer alone says it
        held = offer[0] in ("sendonly", "inactive") and (reply[0] in ("recvonly", "inactive") or offer[3])
        try:
            if held and reply[1] is not None and reply[2] is not None:
                self.moh.moh_start(key, reply[1], reply[2])
                self._moh_keys.setdefault(call_id, set()).add(key)
                log.info("lab: music on hold for %s to %s", key, hostport(*reply[1]))
            elif not held and key in self._moh_keys.get(call_id, set()):
                self.moh.moh_stop(key)
                self._moh_keys[call_id].discard(key)
        except Exception as exc:  # the services are another module: their failure must not stop the proxy
            log.warning("lab: music on hold failed: %r", exc)

    def _stop_moh(self, call_id: str) -> None:
        for key in self._moh_keys.pop(call_id, set()):
            if self.moh is not None:
                with contextlib.suppress(Exception):
                    self.moh.moh_stop(key)
