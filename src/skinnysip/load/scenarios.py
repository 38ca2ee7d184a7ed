"""What one load *attempt* is: OPTIONS, REGISTER (digest, then unregister), MESSAGE, a request
of another method (``request``: SUBSCRIBE, NOTIFY, INFO…), a call with media, or a user's own
async function — all on the SIP core the probes and phones use.

- ``options``/``register``/``message``/``request`` share one :class:`~skinnysip.net.sip_endpoint.SIPEndpoint`
  (wire trace off) and its flow to the server; each attempt is one non-INVITE transaction
  (:meth:`SIPEndpoint.transact`, digest by the core's :class:`~skinnysip.sip.auth.ChallengeRetry`).
- ``call`` and user scenarios (:mod:`skinnysip.load.calls`, imported only for them) run on
  :class:`~skinnysip.phone.sip_phone.SIPPhone` objects
  (one account per user, several phones per user when the concurrency needs it, each at most
  ``MAX_CALLS`` calls): INVITE with auth → 200 → ACK → media both ways (RTP + RTCP,
  :class:`~skinnysip.net.media.MediaStream`) for the hold time → BYE; the call's final media
  report (G.107 MOS, loss, jitter) goes into the counters.
- ``answer`` (:mod:`skinnysip.load.calls` too) is the called side, as SIPp's ``-sn uas``
  behind a registration: one registered :class:`~skinnysip.phone.sip_phone.SIPPhone` per
  user, and each call the server brings is an attempt: 180 → 200 with the SDP answer → ACK
  → media both ways until the caller's BYE (or ``hold``) — the runner starts none itself.

Every attempt ends by itself: transactions end by Timer B/F (RFC 3261 §17.1) or the
scenario's ``timeout``, calls by the hold time. Python units: seconds.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import re
import traceback
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic  # response times at full resolution on any loop (skinnysip.net.event_loop)
from typing import TYPE_CHECKING, Any, Literal

from skinnysip.addresses import format_host, ip_literal
from skinnysip.net.event_loop import set_once
from skinnysip.net.resolver import ServerTarget, default_port
from skinnysip.net.sip_endpoint import USER_AGENT, Exchange, Outcome, SIPEndpoint, SIPTransportError
from skinnysip.net.sip_transport import closed_by_peer
from skinnysip.sip.auth import ChallengeRetry, DigestClient
from skinnysip.sip.message import Request, Response, SIPParseError, canonical_name
from skinnysip.sip.request import (
    check_header_field,
    check_one_request,
    granted_expires,
    min_expires_retry,
    new_call_id,
    new_request,
    new_tag,
    resend_request,
)
from skinnysip.sip.transaction import Flow, Timers
from skinnysip.sip.transactions import LayerEvent, RequestReceived, SuccessRetransmission, UnmatchedResponse
from skinnysip.sip.uri import NameAddr, SipURI, is_user

from .stats import Counters

if TYPE_CHECKING:
    from skinnysip.sdp import SRTPMode

    from .report import MessageLog

__all__ = ["SCENARIOS", "InlineAttempt", "LoadConfig", "Scenario", "User", "make_scenario", "read_users"]

ScenarioName = Literal["options", "register", "call", "message", "request", "user", "answer"]
SCENARIOS: tuple[str, ...] = ("options", "register", "call", "message", "request", "user", "answer")
MAX_USERS = 100_000  # lines read from a users file
MAX_REFRESHES = 10_000  # refreshes of one binding (--refreshes)
MAX_REFRESH_INTERVAL = 86_400.0  # s between refreshes at most (--refresh-interval)
#: UDP datagrams of one loop round sent together, at most (SIPTransportLayer.udp_send_burst):
#: the server reads a run per wake-up and its answers come back as one. Measured against
#: Kamailio on 2 cores (2026-12-06): at 6400/s with --processes 2 this halved Kamailio's CPU a
#: registration (0.12 → 0.06 ms) and cut ours by a third; 8 gathered too few, 64 no better
UDP_SEND_BURST = 16


#: SIPp's ``-deadcall_wait`` default: seconds an ended attempt's Call-ID is remembered, so a
#: message for it counts as ``DeadCallMsgs`` and not ``OutOfCallMsgs``
DEAD_CALL_WAIT = 33.0
#: ended Call-IDs remembered at most (the oldest forgotten first: at 3000 attempts/s, 33 s)
MAX_DEAD_CALLS = 100_000


class CallLedger:
    """The Call-IDs of the attempts running now and of those that ended in the last ``wait``
    seconds (at most ``limit`` of them): what tells a late message of an ended attempt
    (SIPp's ``DeadCallMsgs``) from one of no attempt of ours (``OutOfCallMsgs``)."""

    def __init__(self, wait: float = DEAD_CALL_WAIT, limit: int = MAX_DEAD_CALLS) -> None:
        self.wait = wait
        self.limit = max(1, limit)
        self._live: set[str] = set()  # the Call-IDs of the attempts running now
        self._ended: OrderedDict[str, float] = OrderedDict()  # Call-ID -> when it ended, oldest first

    def start(self, call_id: str) -> None:
        """An attempt now uses ``call_id``."""
        self._live.add(call_id)
        self._ended.pop(call_id, None)

    def end(self, call_id: str, now: float) -> None:
        """An attempt that used ``call_id`` ended at ``now`` (loop seconds)."""
        self._live.discard(call_id)
        self._ended[call_id] = now
        self._ended.move_to_end(call_id)
        self._forget(now)

    def _forget(self, now: float) -> None:
        ended = self._ended
        while ended:
            oldest, when = next(iter(ended.items()))
            if now - when <= self.wait and len(ended) <= self.limit:
                break
            del ended[oldest]

    def classify(self, call_id: str | None, now: float) -> Literal["live", "dead", "out-of-call"]:
        """``live`` (an attempt uses it now), ``dead`` (one ended at most ``wait`` s before
        ``now``) or ``out-of-call`` (none of ours, or ended longer ago)."""
        self._forget(now)
        if call_id is None:
            return "out-of-call"
        if call_id in self._live:
            return "live"
        return "dead" if call_id in self._ended else "out-of-call"


MAX_ERROR_MESSAGE = 4000  # characters of one message in a failure's text (Counters.errors)


def _message_text(message: Request | Response) -> str:
    text = message.to_bytes().decode("utf-8", errors="replace").rstrip("\r\n")
    return text if len(text) <= MAX_ERROR_MESSAGE else f"{text[:MAX_ERROR_MESSAGE]}\n… ({len(text)} characters)"


def record_failure(counters: Counters, status: str, kind: str, response_time: float | None = None, *,
                   sent: Request | None = None, received: Request | Response | None = None,
                   note: str = "") -> None:
    """Count one failed attempt (:meth:`Counters.failure`) and, while the counters keep
    failure details, what it was: ``status (kind): note`` then the request ``sent`` and the
    response ``received`` as text (each cut at :data:`MAX_ERROR_MESSAGE` characters)."""
    counters.failure(status, kind, response_time)
    if not counters.wants_error:
        return
    parts = [f"{status} ({kind})" + (f": {note}" if note else "")]
    if sent is not None:
        parts.append("sent:\n" + _message_text(sent))
    if received is not None:
        parts.append("received:\n" + _message_text(received))
    counters.errors.append("\n".join(parts))


def exception_note(exc: BaseException) -> str:
    """``Type: message at file:line in function`` (the innermost frame) for a failure's text."""
    note = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE]
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        note += f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
    return note


@dataclass(frozen=True)
class User:
    """One account of a users file: ``user``, ``password`` (None: no credentials) and an
    optional ``auth_user`` (digest username, default ``user``). ``fields``: every field of
    its line, as SIPp's ``[fieldN]`` (0-based) names them in ``--to`` and ``--header`` values."""

    user: str
    password: str | None = None
    auth_user: str | None = None
    fields: tuple[str, ...] = field(default=(), compare=False)  # the same account, whatever else its line says


#: SIPp's keyword for a field of the injection file's line of this attempt's user
FIELD_KEYWORD = re.compile(r"\[field(\d{1,3})\]")


def substitute_fields(text: str, user: User) -> str:
    """``text`` with every ``[fieldN]`` replaced by field N (0-based) of ``user``'s line, as
    SIPp's scenarios inject ``-inf`` fields. ``ValueError`` naming the user when its line
    has no field N."""
    if "[field" not in text:
        return text

    def field_value(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if n >= len(user.fields):
            raise ValueError(f"[field{n}] but the line of user {user.user!r} has {len(user.fields)} field(s)")
        return user.fields[n]

    return FIELD_KEYWORD.sub(field_value, text)


#: the orders a users file's first line may name (SIPp ``-inf``)
USER_ORDERS = ("SEQUENTIAL", "RANDOM", "USER")
MAX_USERS_FILE_BYTES = 32 * 1024 * 1024  # read from a users file at most
_AUTH_FIELD = re.compile(r"\[authentication(?:\s+([^\]]*))?\]", re.IGNORECASE)
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')
_PRINTF_FIELD = re.compile(r"%(%|[-0-9.]*d)?")


def _users_header(line: str, where: str) -> tuple[str, int | None, int, int] | None:
    """The first line of a SIPp injection file, ``ORDER[,PRINTF=N][,PRINTFOFFSET=N]
    [,PRINTFMULTIPLE=N]``: (order, virtual lines or None, offset, multiple); None when the
    line is a user line instead."""
    words = [word.strip() for word in line.split(",")]
    if ";" in line or words[0].upper() not in USER_ORDERS:
        return None
    options: dict[str, int] = {}
    for word in words[1:]:
        name, sep, value = word.partition("=")
        name = name.strip().upper()
        if not sep or name not in ("PRINTF", "PRINTFOFFSET", "PRINTFMULTIPLE"):
            raise ValueError(f"{where}: {word!r} is not PRINTF=N, PRINTFOFFSET=N or PRINTFMULTIPLE=N")
        try:
            options[name] = int(value.strip())
        except ValueError:
            raise ValueError(f"{where}: {name}={value.strip()!r} is not a whole number") from None
        if options[name] < 0:
            raise ValueError(f"{where}: {name} must not be negative")
    virtual = options.get("PRINTF")
    if virtual is not None and not 1 <= virtual <= MAX_USERS:
        raise ValueError(f"{where}: PRINTF={virtual}: a printf file makes 1..{MAX_USERS} users")
    return words[0].upper(), virtual, options.get("PRINTFOFFSET", 0), options.get("PRINTFMULTIPLE", 1)


def _printf_field(text: str, number: int, where: str) -> str:
    """SIPp's printf expansion of one field: every ``%d`` (with width/flags such as ``%04d``)
    becomes ``number``, ``%%`` a ``%``."""
    def expand(match: re.Match[str]) -> str:
        spec = match.group(1)
        if spec is None:
            raise ValueError(f"{where}: {text!r}: a printf field may only hold %d formats (and %%)")
        if spec == "%":
            return "%"
        try:
            return ("%" + spec) % number
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {match.group(0)!r} is not a printf %d format") from None
    return _PRINTF_FIELD.sub(expand, text)


def _user_from_fields(fields: list[str], where: str) -> User:
    """One user line's fields: ``user;password[;auth_user]``, or SIPp's habit of a field
    ``[authentication username=U password=P]`` (the keyword a scenario injects with
    ``[fieldN]``): then the password and digest username come from it and the other fields
    after the user are ignored."""
    if not fields[0]:
        raise ValueError(f"{where}: no user")
    if not is_user(fields[0]):  # RFC 3261 §25.1 user
        # an address or a line of another format (/etc/passwd, e-mail addresses) gets the format
        hint = " (user;password[;auth_user] lines)" if ":" in fields[0] or "@" in fields[0] else ""
        raise ValueError(f"{where}: {fields[0][:40]!r} is not a SIP user name{hint}")
    for text in fields[1:]:
        match = _AUTH_FIELD.fullmatch(text)
        if match is None:
            continue
        params = {param.group(1).lower(): param.group(2) if param.group(2) is not None else param.group(3)
                  for param in _AUTH_PARAM.finditer(match.group(1) or "")}
        if "password" not in params:
            raise ValueError(f"{where}: {text!r} has no password=")
        return User(fields[0], params["password"], params.get("username") or None, tuple(fields))
    return User(fields[0], fields[1] if len(fields) > 1 and fields[1] else None,
                fields[2] if len(fields) > 2 and fields[2] else None, tuple(fields))


def read_users(path: str | Path) -> tuple[list[User], str]:
    """Users from a SIPp ``-inf`` style injection file. Returns (users, order).

    - First line, optional: ``SEQUENTIAL``, ``RANDOM`` or ``USER`` (the order; default
      SEQUENTIAL), with SIPp's ``,PRINTF=N[,PRINTFOFFSET=O][,PRINTFMULTIPLE=M]``: N users made
      from the lines in turn, every ``%d`` in a field replaced by ``O + i*M`` for user ``i``
      (``user%04d;pw`` with ``PRINTF=1000,PRINTFOFFSET=1`` gives user0001 … user1000).
    - Then one user a line: ``user;password[;auth_user]`` (``,`` also accepted as the
      separator when a line has no ``;``), or SIPp's ``user;domain;[authentication
      username=U password=P]``. ``#`` comments and blank lines are skipped. Every field is
      kept (:attr:`User.fields`) for ``[fieldN]`` in ``--to`` and ``--header`` values
      (``alice;pw;alice;bob`` with ``--to '[field3]'``: alice calls bob).

    ``ValueError`` naming the file and line for a line without a user, a malformed header or
    printf field, an ``[authentication]`` field without a password, or a file without users;
    ``OSError`` when it cannot be read. At most :data:`MAX_USERS` users (the rest of a longer
    file is ignored) and :data:`MAX_USERS_FILE_BYTES` read."""
    with open(path, "rb") as stream:
        data = stream.read(MAX_USERS_FILE_BYTES + 1)
    if len(data) > MAX_USERS_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_USERS_FILE_BYTES // (1024 * 1024)} MiB")
    order, virtual, offset, multiple = "SEQUENTIAL", None, 0, 1
    lines: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if number == 1:
            header = _users_header(line, f"{path}:1")
            if header is not None:
                order, virtual, offset, multiple = header
                continue
        lines.append((number, [f.strip() for f in (line.split(";") if ";" in line else line.split(","))]))
        if len(lines) >= MAX_USERS:
            break
    if not lines:
        raise ValueError(f"{path}: no users")
    if virtual is None:
        return [_user_from_fields(fields, f"{path}:{number}") for number, fields in lines], order
    users = []
    for index in range(virtual):
        number, fields = lines[index % len(lines)]
        where = f"{path}:{number}"
        value = offset + index * multiple
        users.append(_user_from_fields([_printf_field(f, value, where) for f in fields], where))
    return users, order


#: what a load run's ``headers`` use instead of a field skinnysip writes
LOAD_HINTS = {"Expires": "use --expires"}


@dataclass
class LoadConfig:
    """One load run (Python units: seconds; rates per second).

    ``scenario``: ``options``, ``register``, ``call``, ``message``, ``request``, ``user`` or
    ``answer``. ``method``/``body``/``content_type``: what ``request`` sends — one request of
    that method (not INVITE, ACK, CANCEL or REGISTER:
    :func:`~skinnysip.sip.request.check_method`) to ``to`` (else the domain), with our Contact,
    the body (at most :data:`~skinnysip.sip.request.MAX_REQUEST_BODY` octets) of that type (default ``text/plain``); digest
    when challenged.
    ``host``/``port`` (None: 5060, 5061 for TLS)/``transport``: the server every request goes to
    (an IP literal or a name, RFC 3263 A/AAAA). ``domain``: of the Request-URI and the
    From/To URIs (default ``host[:port]``). ``users``: the accounts (cycled through by
    attempt index, SEQUENTIAL, or drawn at RANDOM: ``user_order``); none: ``load`` without
    credentials. ``to``: MESSAGE/call target (``bob``, ``bob@host`` or a full URI); OPTIONS
    goes to it too when given. ``rate``: attempts started per second; ``limit``: attempts in
    progress at most (SIPp ``-l``); ``count``: attempts in all (``-m``); ``duration``: stop
    starting new ones after this; ``ramp_up``: the rate grows linearly from 5 % to ``rate``
    over these seconds. ``hold``: seconds a call stays up with media. ``timeout``: the
    longest an attempt's transaction may take (Timer B/F is 64·T1 = 32 s by default).
    ``expires``: of a REGISTER; ``unregister``: remove the binding after each successful
    registration (REGISTER Expires 0, authenticated with the last challenge).
    ``refreshes``: REGISTER refreshes of each binding, as a phone keeps its registration
    (RFC 3261 §10.2.4: same Call-ID, CSeq + 1; the credentials cached for the Call-ID sent
    at once, §22.3, so a server that takes the nonce again answers no new challenge)
    every ``refresh_interval`` seconds (None: half the expiry the registrar granted, at
    least 1 s); the attempt succeeds when every refresh does.
    ``local_ports``: (first, last) local UDP ports to bind (SIP sockets; a phone per port).
    ``source_ip``: the local address every flow (and a call's media) starts from, an IP literal
    of this host (SIPp ``-i``); None: the one the routing table picks for the server.
    ``user_script``: the Python file of a ``user`` scenario (``async def scenario(phone,
    index)``). ``source``: what calls send (``tone:440``, ``silence``, ``echo``, a WAV).
    ``codecs``: the audio codecs calls offer and accept, by name in preference order
    (:attr:`~skinnysip.phone.sip_phone.SIPAccount.codecs`; None: every one available).
    ``srtp``: the calls' media protection, as :attr:`~skinnysip.phone.sip_phone.SIPAccount.srtp`
    (``off``, ``optional``, ``mandatory``: SDES; ``dtls``: DTLS-SRTP).
    ``t1``: RFC 3261 T1. ``index_start``/``index_step``: the attempt indexes this runner
    uses (``start + k·step``; a distributed run's workers interleave them).

    Rate steps, as SIPp's ``-rate_increase``/``-rate_interval``/``-rate_max``/``-no_rate_quit``:
    every ``rate_interval`` seconds the driver (:class:`~skinnysip.load.runner.Monitor`) adds
    ``rate_increase`` to the current rate (0: no steps); when that would pass ``rate_max``
    the rate stays at ``rate_max`` and, with ``rate_quit``, no new attempt starts (the run
    ends once the running ones have). So with ``rate_max`` every step up to it, itself
    included, runs for a whole interval. A stepped run with ``rate_quit`` and neither
    ``count`` nor ``duration`` starts attempts for :meth:`stepped_duration` seconds (the
    runner's own bound is one ``rate_interval`` later).

    ``connection_per_attempt`` (SIPp ``-t tn``/``-t ln``/``-t un``): each attempt opens its
    own connection (TLS: its own handshake), or over UDP binds its own socket (a port of
    ``local_ports`` when given), and closes it when done, instead of all sharing one;
    options, register and message scenarios (a call's phone keeps its connection).

    ``rtp_ports``: (first, last), the range calls take their RTP/RTCP port pairs from
    (:attr:`~skinnysip.phone.sip_phone.SIPAccount.rtp_ports`; None: any free pair).

    ``to`` and ``headers`` values may hold SIPp's ``[fieldN]``: field N (0-based) of the
    users file line of the attempt's user (:func:`substitute_fields`; every user's line must
    have it: checked by :meth:`validate`), so each user calls, or messages, its own target.

    ``headers``: (name, value) header fields added, in order, to the request each attempt
    starts (its digest retry and a REGISTER's unregister too; a call's INVITE), as a SIPp
    scenario's own lines or sipsak's ``-j``: ``X-…``, ``P-Asserted-Identity``, ``Route``…
    A ``User-Agent`` replaces ours. The fields the scenario writes itself
    (:data:`~skinnysip.sip.request.MANAGED_HEADERS`) are refused, as are names that are no token (RFC 3261 §25.1)
    and values with a line break.

    ``trace_msg``: a file to write every SIP message sent and received to, as SIPp's
    ``-trace_msg`` (:class:`~skinnysip.load.report.MessageLog`; a fanned-out run's worker
    ``i`` writes ``trace_msg.i``). ``record_dir``: calls (``call``, ``user``, ``answer``)
    write their WAV recordings there (``call<N>-rx.wav``/``-tx.wav``,
    :class:`~skinnysip.net.media.MediaStream`; a fanned-out run's worker ``i`` writes to
    ``record_dir/i``).

    The ``answer`` scenario is the called side (SIPp ``-sn uas`` behind a registration):
    each user of ``users`` (the share ``index_start + k·index_step`` of a worker) registers
    (``expires``, refreshed; ``rate`` registrations started per second at first) and every
    call the server brings to one is an attempt, answered at once: its response time is
    INVITE → ACK, its length INVITE → the end. ``ring``: seconds between our 180 (Ringing)
    and the 200, as a phone rings (a CANCEL meanwhile fails the call as ``cancelled``). The
    caller hangs up; ``hold`` (when not None) is the longest we keep a call before hanging
    up ourselves. ``limit``: calls at once (one more is refused 486 and counted failed,
    ``limit``); ``count``: calls in all, then the run ends (later ones, and calls while
    paused or stopping, are refused 480 and not counted). At the end every user
    unregisters. ``register`` False: no registration — the scenario listens on
    ``host:port`` itself (UDP or TCP) and answers every call sent there, as SIPp's ``-sn
    uas`` (no users; one process).

    STIR/SHAKEN (RFC 8224, RFC 8588): with ``identity_key`` (an EC P-256 private key, PEM
    text: the workers of a distributed run need no file) and ``identity_x5u`` every INVITE
    of ``call``/``user`` carries a ``Date`` and an ``Identity`` signed ES256 with SHAKEN
    attestation ``identity_attest`` — loading a verification service (an SBC's, Kamailio's
    secsipid), whose refusals (438, 436, 437, 403) are counted by status as any other."""

    scenario: ScenarioName
    host: str
    port: int | None = None
    transport: Literal["udp", "tcp", "tls", "ws", "wss"] = "udp"
    ws_path: str = "/"
    domain: str | None = None
    users: list[User] = field(default_factory=list)
    user_order: str = "SEQUENTIAL"
    to: str | None = None
    rate: float = 10.0
    limit: int = 100
    count: int | None = None
    duration: float | None = None
    ramp_up: float = 0.0
    hold: float | None = 5.0
    timeout: float = 32.0
    expires: int = 60
    unregister: bool = True
    message: str = "skinnysip load"
    method: str | None = None
    body: str | None = None
    content_type: str | None = None
    local_ports: tuple[int, int] | None = None
    source_ip: str | None = None
    user_script: str | None = None
    source: str = "tone:440"
    codecs: tuple[str, ...] | None = None
    srtp: SRTPMode = "off"
    tls_verify: bool = True
    ca_file: str | None = None
    t1: float = 0.5
    index_start: int = 0
    index_step: int = 1
    rate_increase: float = 0.0
    rate_interval: float = 1.0
    rate_max: float | None = None
    rate_quit: bool = True
    connection_per_attempt: bool = False
    trace_msg: str | None = None
    rtp_ports: tuple[int, int] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    record_dir: str | None = None
    ring: float = 0.0
    register: bool = True
    identity_key: str | None = None
    identity_x5u: str | None = None
    identity_attest: str = "A"
    refreshes: int = 0
    refresh_interval: float | None = None

    def refresh_after(self, granted: int | None = None) -> float:
        """Seconds from a registration (or refresh) to its next refresh: ``refresh_interval``,
        else half the expiry ``granted`` (RFC 3261 §10.2.4), never more than half of
        ``expires`` (what we asked for; the most a registrar grants without a 423) and at
        least 1 s."""
        if self.refresh_interval is not None:
            return self.refresh_interval
        return max(1.0, min(granted or self.expires, self.expires) / 2)

    @property
    def attempt_hold(self) -> float:
        """Seconds an attempt stays up beyond its transactions: a call's ``hold``; the
        refreshes of a registration (each :meth:`refresh_after` at most, and one
        ``timeout``)."""
        if self.scenario == "register":
            return self.refreshes * (self.refresh_after() + self.timeout)
        return self.hold or 0.0

    @property
    def stepped(self) -> bool:
        """True when the rate steps up while the run goes (``rate_increase`` > 0)."""
        return self.rate_increase > 0

    def stepped_duration(self) -> float | None:
        """Seconds until a stepped run passes ``rate_max`` and stops starting attempts
        (``rate_quit``): one ``rate_interval`` for each step from ``rate`` to ``rate_max``;
        None when the steps do not end the run (no steps, no ``rate_max`` or no quit)."""
        if not self.stepped or self.rate_max is None or not self.rate_quit:
            return None
        steps = math.floor((self.rate_max - self.rate) / self.rate_increase + 1e-9) + 1
        return max(1, steps) * self.rate_interval

    def validate(self) -> None:
        """``ValueError`` naming the first bad field."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario: one of {', '.join(SCENARIOS)}")
        if not self.rate > 0 or not math.isfinite(self.rate):
            raise ValueError("rate: must be > 0")
        if self.limit < 1:
            raise ValueError("limit: must be >= 1")
        if self.count is not None and self.count < 1:
            raise ValueError("count: must be >= 1")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration: must be > 0")
        if self.ramp_up < 0 or (self.hold is not None and self.hold < 0) or not self.timeout > 0:
            raise ValueError("ramp_up/hold must be >= 0, timeout > 0")
        if not self.register and self.scenario != "answer":
            raise ValueError("register: only the answer scenario listens instead of registering (--no-register)")
        if not (self.ring >= 0 and math.isfinite(self.ring)) or (self.ring and self.scenario != "answer"):
            raise ValueError("ring: seconds >= 0 that the answer scenario rings before answering (--ring)")
        if self.hold is None and self.scenario != "answer":
            raise ValueError("hold: calls need a hold time (only the answer scenario waits for the caller's BYE)")
        if not (self.rate_increase >= 0 and math.isfinite(self.rate_increase)):
            raise ValueError("rate_increase: must be a finite number >= 0 (--rate-increase)")
        if not (self.rate_interval > 0 and math.isfinite(self.rate_interval)):
            raise ValueError("rate_interval: must be a finite number of seconds > 0 (--rate-interval)")
        if self.rate_max is not None:
            if not self.stepped:
                raise ValueError("rate_max: only with rate_increase, which steps the rate up to it (--rate-increase)")
            if not math.isfinite(self.rate_max):
                raise ValueError("rate_max: must be a finite number (--rate-max)")
            if self.rate_max < self.rate:
                raise ValueError(f"rate_max: must be >= the starting rate {self.rate:g} (-r)")
        if (self.rate_max is not None and not self.rate_quit and self.count is None
                and self.duration is None):
            raise ValueError("rate_quit: a run that keeps going at rate_max (--no-rate-quit) needs a count (-m) "
                             "or a duration (--duration) to end")
        if self.refreshes and self.scenario != "register":
            raise ValueError("refreshes: only the register scenario refreshes its bindings (--refreshes)")
        if not 0 <= self.refreshes <= MAX_REFRESHES:
            raise ValueError(f"refreshes: 0 … {MAX_REFRESHES} refreshes of each binding (--refreshes)")
        if self.refresh_interval is not None and not (0 < self.refresh_interval <= MAX_REFRESH_INTERVAL):
            raise ValueError(f"refresh_interval: seconds > 0 and <= {MAX_REFRESH_INTERVAL:g} between refreshes "
                             "(--refresh-interval)")
        if self.scenario in ("message", "call") and not self.to:
            raise ValueError(f"to: the {self.scenario} scenario needs a target (--to)")
        self._check_request()
        if self.scenario == "user" and not self.user_script:
            raise ValueError("user_script: the user scenario needs a Python file")
        if self.user_script and self.scenario != "user":
            raise ValueError(f"user_script: only the user scenario runs a Python file, not {self.scenario} (--script)")
        if self.scenario == "answer":
            self._check_answer()
        if self.scenario in ("call", "user", "answer"):  # the calls' audio: read once here, not failed per call
            from skinnysip.rtp.audio import source_from_spec

            try:
                source_from_spec(self.source)
            except ValueError as exc:
                raise ValueError(f"source: {exc}") from None
            if self.codecs is not None:
                from skinnysip.rtp.codecs import payload_types

                payload_types(self.codecs)  # "codecs: …" for an unknown or missing one
        from skinnysip.sdp import SRTP_MODES

        if self.srtp not in SRTP_MODES:
            raise ValueError(f"srtp {self.srtp!r}: {', '.join(SRTP_MODES[:-1])} or {SRTP_MODES[-1]}")
        if self.srtp != "off" and self.scenario not in ("call", "user", "answer"):
            raise ValueError("srtp: for the calls of call, user and answer (--srtp)")
        if self.identity_key is not None or self.identity_x5u is not None:
            if self.scenario not in ("call", "user"):
                raise ValueError("identity_key: the INVITEs of call and user are signed (--identity-key)")
            from skinnysip.phone.identity import IdentityService

            try:
                IdentityService(key=self.identity_key, x5u=self.identity_x5u, attest=self.identity_attest)
            except ValueError as exc:
                raise ValueError(f"{exc} (--identity-key, --identity-x5u, --attest)") from None
        for user in self.users:
            if not is_user(user.user):
                raise ValueError(f"users: {user.user[:40]!r} is not a SIP user name (RFC 3261 §25.1: letters, "
                                 "digits, -_.!~*'()&=+$,;?/# and %XX escapes)")
        for name, value in self.headers:
            check_header_field(name, value, LOAD_HINTS)
        self._check_fields()
        if self.headers and self.scenario == "user":
            raise ValueError("headers: a user scenario writes its own requests (--header)")
        if self.connection_per_attempt and self.scenario in ("call", "user", "answer"):
            raise ValueError("connection_per_attempt: options, register and message only (--connection-per-attempt)")
        if self.local_ports is not None:
            first, last = self.local_ports
            if not 1 <= first <= last <= 65535:
                raise ValueError("local_ports: FIRST-LAST within 1-65535")
        if self.source_ip is not None:
            try:
                self.source_ip = ip_literal(self.source_ip)
            except ValueError as exc:
                raise ValueError(f"source_ip: {exc} (--local-ip)") from None
        if self.rtp_ports is not None:
            from skinnysip.net.media import check_port_range

            check_port_range(self.rtp_ports, "rtp_ports (--rtp-ports)")
        checks = [("domain", f"sip:load@{self.sip_domain}")]
        targets = {self.target_for(user) for user in self.users} if self.to and "[field" in self.to else {self.to}
        for target in sorted(t for t in targets if t):
            if not target.lower().startswith("tel:"):
                checks.append(("to", self.uri(target)))
        for name, text in checks:
            try:
                SipURI.parse(text)
            except SIPParseError as exc:
                raise ValueError(f"{name}: {text!r} is not a SIP URI ({exc.reason})") from None

    def _check_answer(self) -> None:
        """``ValueError`` for what the called side does not take: a target, added header
        fields, rate steps or a ramp (the caller sets the pace; ``rate`` paces the first
        registrations), ``user_order`` RANDOM (each user registers once)."""
        refused = [("to", "--to", self.to is not None), ("headers", "--header", bool(self.headers)),
                   ("rate_increase", "--rate-increase", self.stepped), ("ramp_up", "--ramp-up", self.ramp_up > 0),
                   ("user_order", "RANDOM", self.user_order == "RANDOM")]
        if not self.register:
            refused += [("users", "--users", bool(self.users)),
                        ("transport", self.transport, self.transport in ("tls", "wss")),
                        ("index_step", "--processes", self.index_step > 1)]
        for name, flag, given in refused:
            if given:
                why = ("listens on HOST:PORT for every caller (--no-register)" if name in ("users", "transport",
                       "index_step") else "is the called side (the callers choose targets and pace)")
                raise ValueError(f"{name}: the answer scenario takes no {flag}: it {why}")

    def _check_fields(self) -> None:
        """``ValueError`` when ``to`` or a header value names a ``[fieldN]`` that a user's
        line lacks, or names one with no users file."""
        texts = [("to", None, self.to or "")] + [(f"headers: {name}", name, value) for name, value in self.headers]
        for what, header, text in texts:
            keyword = FIELD_KEYWORD.search(text)
            if keyword is None:
                continue
            if not self.users:
                raise ValueError(f"{what}: {keyword.group(0)} needs a users file (--users) whose lines have it")
            for user in self.users:
                try:
                    filled = substitute_fields(text, user)
                except ValueError as exc:
                    raise ValueError(f"{what}: {exc}") from None
                if header is not None:  # what a user's fields make of a value: still one (bounded)
                    check_header_field(header, filled, LOAD_HINTS)

    def _check_request(self) -> None:
        """The ``request`` scenario's own fields (``ValueError`` naming the flag)."""
        if self.scenario != "request":
            for name, flag in (("method", "--method"), ("body", "--body"), ("content_type", "--content-type")):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only the request scenario sends a method of your own ({flag})")
            return
        if self.method is None:
            raise ValueError("method: the request scenario needs a method (--method NOTIFY, SUBSCRIBE, INFO…)")
        try:
            check_one_request(self.method, (self.body or "").encode(), self.content_type)
        except ValueError as exc:
            field = str(exc).partition(":")[0]
            raise ValueError(f"{exc} (--{field.replace('_', '-')})") from None

    def target_for(self, user: User) -> str | None:
        """``to`` for an attempt of ``user``: its ``[fieldN]`` replaced (:func:`substitute_fields`)."""
        return None if self.to is None else substitute_fields(self.to, user)

    def headers_for(self, user: User) -> list[tuple[str, str]]:
        """``headers`` for an attempt of ``user``: ``[fieldN]`` in their values replaced."""
        if not any("[field" in value for _, value in self.headers):
            return self.headers
        return [(name, substitute_fields(value, user)) for name, value in self.headers]

    @property
    def server_port(self) -> int:
        return self.port or default_port(self.transport)

    @property
    def sip_domain(self) -> str:
        if self.domain:
            return self.domain
        default = 5061 if self.transport == "tls" else 5060  # a URI's default port (RFC 3261 §19.1.2)
        host = format_host(self.host)
        return host if self.server_port == default else f"{host}:{self.server_port}"

    def user_for(self, index: int) -> User:
        if not self.users:
            return User("load")
        if self.user_order == "RANDOM":
            return random.choice(self.users)
        return self.users[index % len(self.users)]

    def uri(self, target: str) -> str:
        """``bob`` → ``sip:bob@domain``, ``bob@host`` → ``sip:bob@host``, a URI as it is."""
        if re.match(r"^(sips?|tel):", target, re.I):
            return target
        return f"sip:{target}" if "@" in target else f"sip:{target}@{self.sip_domain}"


def _refuse(attempt: Coroutine[Any, Any, None]) -> int:
    attempt.close()
    return 480


class Scenario:
    """One kind of attempt. ``counters()`` is the runner's current interval (the runner
    swaps it at each snapshot, so a scenario always asks for it). :meth:`open` before the
    first attempt (may raise :class:`SIPTransportError`/:class:`PhoneError` with one line),
    :meth:`attempt` per attempt (never raises for network problems: it counts them),
    :meth:`close` at the end. :meth:`retransmissions` is the running total."""

    #: True for a scenario whose attempts the far end starts (``answer``): the runner starts
    #: none and the scenario hands each to :attr:`admit`
    answers = False
    #: True (after :meth:`open`) when the runner starts attempts with :meth:`start` (callbacks,
    #: no task) instead of running :meth:`attempt` as a task
    inline = False

    def __init__(self, config: LoadConfig, counters: Callable[[], Counters]) -> None:
        self.config = config
        self.counters = counters
        self.message_log: MessageLog | None = None
        # set by the runner: run an attempt the far end started (None) or the status to refuse
        # it with (LoadRunner.admit); whether the run was asked to stop
        self.admit: Callable[[Coroutine[Any, Any, None]], int | None] = _refuse
        self.halted: Callable[[], bool] = lambda: False
        self.ledger = CallLedger()

    def stray(self, call_id: str | None) -> None:
        """A message that belongs to no running attempt arrived (a response matching no
        transaction, an in-dialog request for no call): count it as SIPp does, by its Call-ID
        (:class:`CallLedger`)."""
        kind = self.ledger.classify(call_id, asyncio.get_running_loop().time())
        if kind == "dead":
            self.counters().dead_call_msgs += 1
        elif kind == "out-of-call":
            self.counters().out_of_call_msgs += 1

    def auto_answers(self, request: Request) -> bool:
        """True (and counted as SIPp's AutoAnswered) for an out-of-dialog OPTIONS: the
        endpoint answers it 200 by itself (RFC 3261 §11.2), as SIPp does under ``-aa``."""
        if request.method == "OPTIONS" and request.to_tag is None:
            self.counters().auto_answered += 1
            return True
        return False

    def open_message_log(self) -> MessageLog | None:
        """The ``trace_msg`` file's :class:`~skinnysip.load.report.MessageLog` (None without
        one); ``ValueError`` with one line when it cannot be created."""
        if self.config.trace_msg is None:
            return None
        from .report import MessageLog

        try:
            self.message_log = MessageLog(self.config.trace_msg, on_error=lambda text: self.counters().warn(text))
        except OSError as exc:
            raise ValueError(f"--trace-msg: cannot write {self.config.trace_msg!r}: {exc.strerror or exc}") from None
        return self.message_log

    def close_message_log(self) -> None:
        if self.message_log is not None:
            self.message_log.close()

    async def open(self) -> None:
        raise NotImplementedError

    async def attempt(self, index: int) -> None:
        raise NotImplementedError

    def start(self, index: int, done: Callable[[InlineAttempt], None]) -> InlineAttempt:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def retransmissions(self) -> int:
        raise NotImplementedError


class TransactionScenario(Scenario):
    """OPTIONS, REGISTER, MESSAGE and ``request``'s method: one shared endpoint, one transaction (plus digest
    retries and, for REGISTER, the unregister) per attempt."""

    async def open(self) -> None:
        c = self.config
        log = self.open_message_log()
        # no wire trace (load), unless every message goes to the --trace-msg file: then the
        # trace keeps only the newest record and hands each to the file
        self.ep = SIPEndpoint(timers=Timers(t1=c.t1, t2=max(4.0, c.t1)), trace=log is not None, trace_limit=1,
                              tls_verify=c.tls_verify, ca_file=c.ca_file, ws_path=c.ws_path, source_ip=c.source_ip,
                              udp_send_burst=UDP_SEND_BURST)
        self.ep.trace.listener = log
        self.ep.add_handler(self._unexpected)
        # the users' AORs, the targets and our Contact per (flow, user) repeat every attempt:
        # made once per run (bounded; the results are only read)
        self._uri = functools.lru_cache(maxsize=MAX_USERS + 2)(SipURI.parse)
        # the From/To address and Contact values, written once per user (and flow)
        self._address = functools.lru_cache(maxsize=MAX_USERS + 2)(lambda uri: str(NameAddr(None, self._uri(uri))))
        self._contact = functools.lru_cache(maxsize=MAX_USERS + 2)(lambda flow, user: str(self.ep.contact(flow, user)))
        added = {canonical_name(name) for name, _ in c.headers}
        self._user_agent = None if "User-Agent" in added else USER_AGENT
        self.ep.start()
        targets = await self.ep.resolve(c.host, port=c.server_port, transport=c.transport, timeout=10.0)
        self.target: ServerTarget = targets[0]
        if c.transport == "udp" and not c.connection_per_attempt:
            await self.ep.transport.bind_udp(self.ep.transport.local_ip_for(self.target.address), c.local_ports)
        self.flow: Flow = await self.ep.flow_to(self.target, timeout=10.0, server_name=c.host,
                                                reuse=not c.connection_per_attempt, ports=c.local_ports)
        if c.connection_per_attempt:  # it showed the server answers; each attempt opens its own
            await self.ep.close_flow(self.flow)
        # UDP on the one socket: attempts need no task (start); streams connect first (attempt)
        self.inline = c.transport == "udp" and not c.connection_per_attempt

    async def close(self) -> None:
        if hasattr(self, "ep"):
            self.counters().dropped(self.ep.transport.malformed_count, self.ep.transport.last_malformed)
            await self.ep.close()
        self.close_message_log()

    def retransmissions(self) -> int:
        return self.ep.retransmissions if hasattr(self, "ep") else 0

    def _unexpected(self, event: LayerEvent) -> bool:
        """Count what reaches the endpoint outside our transactions (SIPp's OutOfCallMsgs,
        DeadCallMsgs); the endpoint's default still answers a request (§8.2)."""
        if isinstance(event, UnmatchedResponse | SuccessRetransmission):
            self.stray(event.response.call_id)
        elif isinstance(event, RequestReceived) and not self.auto_answers(event.request):
            self.stray(event.request.call_id)
        return False

    async def _flow(self) -> Flow | None:
        """The flow for this attempt: UDP's one socket, the open (or re-opened) connection,
        or with ``connection_per_attempt`` a new connection, or UDP socket, of its own."""
        own = self.config.connection_per_attempt
        if self.config.transport == "udp" and not own:
            return self.flow
        try:
            flow = await self.ep.flow_to(self.target, timeout=min(10.0, self.config.timeout),
                                         server_name=self.config.host, reuse=not own, ports=self.config.local_ports)
        except SIPTransportError as exc:
            kind = "FailedCannotSendMessage" if self.config.transport == "udp" else "FailedTcpConnect"
            record_failure(self.counters(), "transport", kind, note=str(exc))
            return None
        if not own:
            self.flow = flow
        return flow

    def _request(self, method: str, ruri: str, from_uri: str, to_uri: str, flow: Flow, user: User, *,
                 call_id: str, from_tag: str | None = None, cseq: int = 1,
                 contact_user: str | None = None, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", content_type: str | None = None) -> Request:
        added = self.config.headers_for(user)
        return new_request(
            method, ruri, from_=f"{self._address(from_uri)};tag={from_tag or new_tag()}",
            to=self._address(to_uri), via=self.ep.via(flow), call_id=call_id,
            cseq=cseq, contact=self._contact(flow, contact_user) if contact_user is not None else None,
            user_agent=self._user_agent, headers=[*(headers or ()), *added], body=body, content_type=content_type)

    def _failed(self, outcome: Outcome, elapsed: float) -> None:
        """Count a failed outcome under its status and SIPp's failure kind."""
        counters = self.counters()
        if outcome.response is not None:
            # a 401/407 left unanswered: the digest rule says why (credentials refused, …)
            refused = outcome.auth.refused if outcome.auth is not None else None
            record_failure(counters, str(outcome.response.status_code), "FailedUnexpectedMessage", elapsed,
                           sent=outcome.request, received=outcome.response,
                           note=f"not answered: {refused}" if refused else "")
        elif outcome.error == "timeout":
            # on UDP, Timer F ended it after the retransmissions; a --timeout shorter than Timer F is ours
            kind = "FailedMaxUDPRetrans" if self.config.transport == "udp" and outcome.timer else "FailedTimeoutOnRecv"
            record_failure(counters, "timeout", kind, sent=outcome.request,
                           note=f"no final response ({outcome.timer or 'deadline'}){self.ep.ignored_note()}")
        else:
            kind = "FailedTcpClosed" if closed_by_peer(outcome.error or "") else "FailedCannotSendMessage"
            record_failure(counters, "transport", kind, sent=outcome.request, note=outcome.error or "")

    def _credentials(self, user: User) -> DigestClient | None:
        return DigestClient(user.auth_user or user.user, user.password) if user.password is not None else None

    def start(self, index: int, done: Callable[[InlineAttempt], None]) -> InlineAttempt:
        """Start attempt ``index`` on the shared UDP flow with no task (:attr:`inline`): its
        :class:`InlineAttempt` runs from the endpoint's receive path and calls ``done`` with
        itself once it has ended (possibly before this returns: ``ended``). Never raises: a
        bug is counted as a failed attempt, as the runner counts one in an attempt task."""
        attempt = InlineAttempt(self, self.flow, index, monotonic(), done)
        try:
            attempt.begin()
        except Exception as exc:
            if not attempt.ended:
                record_failure(self.counters(), f"error: {type(exc).__name__}", "FailedCallRejected",
                               note=exception_note(exc))
                attempt.stop()
        return attempt

    async def attempt(self, index: int) -> None:
        started = monotonic()
        flow = await self._flow()
        if flow is None:
            return
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        run = InlineAttempt(self, flow, index, started, lambda _: set_once(finished, None))
        try:
            run.begin()
            await finished
        finally:
            if not run.ended:  # cancelled while waiting (the runner aborts): end it without a count
                run.stop()
            if self.config.connection_per_attempt:
                await self.ep.close_flow(flow)


class InlineAttempt:
    """One OPTIONS, REGISTER or MESSAGE attempt of a :class:`TransactionScenario`, run by
    callbacks from the endpoint's receive path (:meth:`SIPEndpoint.exchange`): the request
    (401/407 answered there), for REGISTER once more after a 423 with the registrar's
    Min-Expires (RFC 3261 §10.2.8), its ``refreshes`` (§10.2.4) and the unregister (Expires:
    0); both with the same Call-ID and the credentials cached for it (§22.3). Counts its
    outcome in the scenario's counters, then calls ``done(self)`` once. Never raises for
    network problems."""

    __slots__ = ("scenario", "flow", "started", "user", "call_id", "done", "ended", "exchange", "rule",
                 "expires_retried", "unregister_started", "response_time", "refreshed", "timer", "binding")

    def __init__(self, scenario: TransactionScenario, flow: Flow, index: int, started: float,
                 done: Callable[[InlineAttempt], None]) -> None:
        self.scenario, self.flow, self.started, self.done = scenario, flow, started, done
        self.user = scenario.config.user_for(index)
        self.call_id = new_call_id()
        self.ended = False
        self.exchange: Exchange | None = None
        self.rule = ChallengeRetry(scenario._credentials(self.user))
        self.expires_retried = False
        self.unregister_started: float | None = None
        self.response_time = 0.0  # s to the REGISTER's final response (refreshes or an unregister follow)
        self.refreshed = 0  # refreshes answered 2xx so far
        self.timer: asyncio.TimerHandle | None = None  # the next refresh
        self.binding: Request | None = None  # the REGISTER that last set the binding

    def begin(self) -> None:
        """Build and send the attempt's request."""
        scenario, c, user, flow = self.scenario, self.scenario.config, self.user, self.flow
        scenario.ledger.start(self.call_id)
        aor = f"sip:{user.user}@{c.sip_domain}"
        try:
            if c.scenario == "options":
                target = c.target_for(user)
                ruri = c.uri(target) if target else f"sip:{c.sip_domain}"
                request = scenario._request("OPTIONS", ruri, aor, ruri, flow, user, call_id=self.call_id,
                                            headers=[("Accept", "application/sdp")])
            elif c.scenario == "message":
                target = c.target_for(user)
                assert target is not None
                ruri = c.uri(target)
                request = scenario._request("MESSAGE", ruri, aor, ruri, flow, user, call_id=self.call_id,
                                            body=c.message.encode(), content_type="text/plain;charset=UTF-8")
            elif c.scenario == "request":
                assert c.method is not None
                target = c.target_for(user)
                ruri = c.uri(target) if target else f"sip:{c.sip_domain}"
                body = (c.body or "").encode()
                request = scenario._request(c.method, ruri, aor, ruri, flow, user, call_id=self.call_id,
                                            contact_user=user.user, body=body,
                                            content_type=(c.content_type or "text/plain") if body else None)
            else:
                request = scenario._request("REGISTER", f"sip:{c.sip_domain}", aor, aor, flow, user,
                                            call_id=self.call_id, contact_user=user.user,
                                            headers=[("Expires", str(c.expires))])
            self._send(request, self._answered)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            self._broken(exc)

    def stop(self) -> None:
        """End it now without counting (its task was cancelled; the runner counts that)."""
        if self.exchange is not None:
            self.exchange.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._end()

    def abort(self) -> None:
        """End it now, counted failed (``aborted``, as a cancelled attempt task is)."""
        if not self.ended:
            self.scenario.counters().failure("aborted", "FailedTimeoutOnRecv")
            self.stop()

    def _send(self, request: Request, then: Callable[[Outcome], None]) -> None:
        self.exchange = self.scenario.ep.exchange(request, self.flow, timeout=self.scenario.config.timeout,
                                                  auth=self.rule, on_outcome=then)

    def _again(self, previous: Request, expires: int, then: Callable[[Outcome], None]) -> None:
        """REGISTER ``previous``'s binding again for ``expires`` seconds (0: remove it): same
        Call-ID, From tag, To, Contact; CSeq + 1; a new branch; the credentials the rule's
        client cached for the Call-ID, a new challenge answered once (RFC 3261 §10.2.2,
        §10.2.8, §22.3). A request that cannot be built or sent ends the attempt, counted."""
        try:
            request = resend_request(previous, self.scenario.ep.via(self.flow))
            request.headers.set("Expires", str(expires))
            self.rule = ChallengeRetry(self.rule.client)
            self._send(request, then)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            self._broken(exc)

    def _count_sent(self) -> None:
        """The requests the last exchange sent: its first and each digest retry."""
        self.scenario.counters().requests_sent += 1 + self.rule.attempts

    def _answered(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self._count_sent()
        c = self.scenario.config
        try:
            if c.scenario == "register" and outcome.response is not None and not self.expires_retried:
                longer = min_expires_retry(outcome.response, c.expires)
                if longer is not None:  # 423: once more for the registrar's Min-Expires, as a phone does
                    self.expires_retried = True
                    self._again(outcome.request, longer, self._answered)
                    return
            elapsed = monotonic() - self.started
            if outcome.response is None or not 200 <= outcome.response.status_code < 300:
                self.scenario._failed(outcome, elapsed)
                self._end()
                return
            if c.scenario == "register" and (c.refreshes or c.unregister):
                self.response_time = elapsed
                self.binding = outcome.request
                if c.refreshes:
                    self._wait_to_refresh(outcome)
                else:
                    self._unbind()
                return
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            self._broken(exc)
            return
        self.scenario.counters().success(elapsed, monotonic() - self.started)
        self._end()

    def _wait_to_refresh(self, outcome: Outcome) -> None:
        """Refresh the binding after :meth:`LoadConfig.refresh_after` the expiry granted."""
        granted = granted_expires(outcome.response, outcome.request) if outcome.response is not None else None
        self.timer = asyncio.get_running_loop().call_later(self.scenario.config.refresh_after(granted),
                                                           self._refresh)

    def _refresh(self) -> None:
        self.timer = None
        if not self.ended and self.binding is not None:
            self._again(self.binding, self.scenario.config.expires, self._refreshed)

    def _refreshed(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self._count_sent()
        counters = self.scenario.counters()
        if self.rule.attempts:  # the cached credentials were not taken: the server challenged again
            counters.refresh_challenges += 1
        response = outcome.response
        if response is None or not 200 <= response.status_code < 300:
            self.scenario._failed(outcome, monotonic() - self.started)
            self._end()
            return
        counters.refreshes += 1
        self.refreshed += 1
        self.binding = outcome.request
        c = self.scenario.config
        if self.refreshed < c.refreshes:
            self._wait_to_refresh(outcome)
        elif c.unregister:
            self._unbind()
        else:
            counters.success(self.response_time, monotonic() - self.started)
            self._end()

    def _unbind(self) -> None:
        """The unregister: REGISTER Expires 0 for the binding."""
        assert self.binding is not None
        self.unregister_started = monotonic()
        self._again(self.binding, 0, self._unregistered)

    def _unregistered(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self._count_sent()
        response = outcome.response
        if response is None or not 200 <= response.status_code < 300:
            self.scenario._failed(outcome, monotonic() - (self.unregister_started or self.started))
        else:
            self.scenario.counters().success(self.response_time, monotonic() - self.started)
        self._end()

    def _broken(self, exc: Exception) -> None:
        record_failure(self.scenario.counters(), "transport", "FailedCannotSendMessage", note=str(exc))
        self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.exchange = None  # no cycle with the exchange's callback: freed by reference counting
        self.scenario.ledger.end(self.call_id, asyncio.get_running_loop().time())
        self.done(self)


def make_scenario(config: LoadConfig, counters: Callable[[], Counters]) -> Scenario:
    """The :class:`Scenario` for ``config.scenario``."""
    if config.scenario in ("call", "user", "answer"):
        from .calls import AnswerScenario, PhoneScenario  # the phone and media stack: only for calls

        return (AnswerScenario if config.scenario == "answer" else PhoneScenario)(config, counters)
    return TransactionScenario(config, counters)
