"""The notifier side of RFC 6665 that the lab's event packages share: the voicemail's
``message-summary`` (:mod:`skinnysip.lab.voicemail`) and the ``presence`` and ``dialog``
packages (:mod:`skinnysip.lab.presence`) are :class:`EventNotifier` subclasses that say only
what a NOTIFY carries (:meth:`EventNotifier._snapshot`, :meth:`EventNotifier._body`).

What is common (RFC 6665 §4.2):

- A new SUBSCRIBE (no To tag), already authenticated and authorised by the proxy, is answered
  200 with the granted ``Expires`` — the one asked (absent: the package's default,
  :attr:`EventNotifier.default_expires`), cut to :attr:`EventNotifier.max_expires`; no minimum
  is imposed, so no 423 — and a NOTIFY with the full state follows at once (§4.2.1.2), after
  each refresh, and whenever the resource changes (:meth:`EventNotifier.changed`).
  ``Expires: 0`` on a new SUBSCRIBE is a fetch (§4.4.3): 200 and one ``terminated`` NOTIFY.
  400 for a malformed ``Expires``, a missing Contact or From tag; 503 (``Retry-After``) past
  :attr:`EventNotifier.max_subscriptions` live subscriptions or past
  :attr:`EventNotifier.max_per_watcher` of one subscriber.
- In the subscription's dialog: SUBSCRIBE refreshes (200, NOTIFY) or ends it (``Expires: 0``:
  200 and a last NOTIFY with ``Subscription-State: terminated``); other methods 405; a CSeq out
  of order 500 (RFC 3261 §12.2.2); a dialog we do not know 481.
- A subscription not refreshed in time ends with ``terminated;reason=timeout`` (§4.2.2). A
  NOTIFY answered 481, 408 or any other final response above 299, or not answered within
  :data:`NOTIFY_TIMEOUT` s, ends it silently (§4.2.2: the subscriber is gone).
- NOTIFYs go over the flow the SUBSCRIBE came on (its connection, or its source address), as
  the lab reaches registered phones. One NOTIFY of a subscription is in flight at a time: a
  change while one is unanswered is sent after it with the state as it is then (changes in
  between coalesce), so the NOTIFYs of a subscription arrive in CSeq order even over UDP and
  a package's per-subscription version counter (:attr:`EventSubscription.version`, RFC 4235
  §4.1) rises by one per NOTIFY.
- Every response carries ``Allow-Events`` (§7.2.2) with the packages the lab serves.

Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from skinnysip.lab.tasks import TaskOwner
from skinnysip.net.sip_endpoint import SIPEndpoint, SIPTransportError
from skinnysip.sip.dialog import Dialog
from skinnysip.sip.message import Request, SIPParseError
from skinnysip.sip.request import build_response
from skinnysip.sip.server_transaction import ServerTransaction
from skinnysip.sip.transaction import Flow

__all__ = ["DEFAULT_EXPIRES", "NOTIFY_TIMEOUT", "SERVER", "EventNotifier", "EventSubscription", "arm_expiry",
           "disarm"]

log = logging.getLogger("skinnysip.lab")

#: seconds a NOTIFY waits for its response
NOTIFY_TIMEOUT = 8.0
#: the subscription duration when a SUBSCRIBE has no Expires (s): 3600 for message-summary
#: (RFC 3842 §4), presence (RFC 3856 §6.4) and dialog (RFC 4235 §3.3)
DEFAULT_EXPIRES = 3600
SERVER = "skinnysip-lab"
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]{1,64}")  # RFC 3261 §25.1 token (bounded)


def _event_id(request: Request) -> str | None:
    """The ``id`` parameter of the Event header field (RFC 6665 §8.2.1), None when absent or
    not a token (then it is ignored)."""
    for param in (request.headers.get("Event") or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "id" and _TOKEN.fullmatch(value.strip()):
            return value.strip()
    return None


class Expiring(Protocol):
    """Something that ends at ``expires_at`` (loop time) by its ``timer``."""

    expires_at: float
    timer: asyncio.TimerHandle | None


_E = TypeVar("_E", bound=Expiring)


def arm_expiry(item: _E, seconds: float, expired: Callable[[_E], None]) -> None:
    """Let ``item`` end ``seconds`` from now: its ``expires_at`` set (loop time), its timer
    (re)started to call ``expired(item)`` then. Needs a running loop."""
    loop = asyncio.get_running_loop()
    item.expires_at = loop.time() + seconds
    disarm(item)
    item.timer = loop.call_later(seconds, expired, item)


def disarm(item: Expiring) -> None:
    """Stop ``item``'s timer, if it runs."""
    if item.timer is not None:
        item.timer.cancel()
        item.timer = None


@dataclass(eq=False)
class EventSubscription:
    """One subscription: ``package`` (lower case), ``event`` (the Event value of its NOTIFYs:
    the package and the SUBSCRIBE's ``id``, RFC 6665 §8.2.1), ``resource`` (the watched
    user), ``watcher`` (the authenticated subscriber), its ``dialog`` and ``flow`` (where the
    NOTIFYs go), ``expires_at`` (loop time), ``version`` (NOTIFYs built so far: the next one's
    dialog-info version, RFC 4235 §4.1)."""

    package: str
    event: str
    resource: str
    watcher: str
    dialog: Dialog
    flow: Flow
    expires_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    version: int = 0
    pending: tuple[str, Any] | None = None  # (state, snapshot) of the next NOTIFY
    sending: bool = False  # a NOTIFY task runs for it

    @property
    def key(self) -> tuple[str, str, str]:
        """(Call-ID, our tag, their tag): how its in-dialog requests are found."""
        return self.dialog.call_id, self.dialog.local_tag, self.dialog.remote_tag


class EventNotifier(TaskOwner):
    """The notifier of RFC 6665 on ``endpoint`` (the lab proxy's) for the packages of a
    subclass. ``allow_events``: the packages named in ``Allow-Events`` (every package the lab
    serves; default :attr:`packages`). The proxy hands it an authenticated SUBSCRIBE
    (:meth:`subscribe`) and every request in one of its dialogs (:meth:`owns`,
    :meth:`in_dialog`)."""

    #: the event packages served, the first one the default of :meth:`subscribe`
    packages: tuple[str, ...] = ()
    #: the seconds granted when a SUBSCRIBE has no Expires
    default_expires: int = DEFAULT_EXPIRES
    #: subscriptions live at once, all subscribers together (503 beyond)
    max_subscriptions: int = 256
    #: subscriptions live at once of one subscriber (None: no bound of its own; 503 beyond)
    max_per_watcher: int | None = None

    def __init__(self, endpoint: SIPEndpoint, *, allow_events: tuple[str, ...] | None = None) -> None:
        self.endpoint = endpoint
        self.allow_events = allow_events or self.packages
        self._subs: dict[tuple[str, str, str], EventSubscription] = {}
        self._closed = False

    @property
    def max_expires(self) -> int:
        """The longest subscription granted (s); a longer Expires is cut to it (RFC 6665
        §4.2.1.1). Subclasses read their module's constant here (tests shorten it)."""
        return 3600

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        """Drop every subscription (no NOTIFY: the lab is going away) and end the NOTIFYs under way."""
        self._closed = True
        for sub in self._subs.values():
            disarm(sub)
        self._subs.clear()
        tasks = list(getattr(self, "_tasks", ()))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    @property
    def count(self) -> int:
        """Subscriptions live now."""
        return len(self._subs)

    def counts(self) -> dict[str, int]:
        """Live subscriptions per package: ``{package: n}`` for each of :attr:`packages`."""
        out = dict.fromkeys(self.packages, 0)
        for sub in self._subs.values():
            out[sub.package] = out.get(sub.package, 0) + 1
        return out

    def subscriptions(self, resource: str, package: str | None = None) -> list[EventSubscription]:
        """The live subscriptions to ``resource`` (of ``package``, or of any)."""
        return [s for s in self._subs.values() if s.resource == resource and package in (None, s.package)]

    # -- requests ----------------------------------------------------------------------------
    def subscribe(self, tx: ServerTransaction, request: Request, flow: Flow, resource: str, *,
                  watcher: str | None = None, package: str | None = None) -> None:
        """A new SUBSCRIBE (no To tag) from ``watcher`` (authenticated; default ``resource``
        itself) to ``package`` (default the first of :attr:`packages`) of ``resource``: 200
        and the first NOTIFY; 400 for a malformed Expires, without a Contact or a From tag;
        503 past the bounds; 200 and a terminated NOTIFY for ``Expires: 0`` (a fetch, RFC 6665
        §4.4.3)."""
        package = package or self.packages[0]
        watcher = watcher if watcher is not None else resource
        expires = self._expires(request)
        if expires is None:
            self._respond(tx, 400, "Bad Request (Expires)")
            return
        if expires and len(self._subs) >= self.max_subscriptions:
            self._respond(tx, 503, "Service Unavailable (too many subscriptions)", headers=[("Retry-After", "60")])
            return
        if (expires and self.max_per_watcher is not None
                and sum(1 for s in self._subs.values() if s.watcher == watcher) >= self.max_per_watcher):
            self._respond(tx, 503, f"Service Unavailable (too many subscriptions of {watcher})"[:80],
                          headers=[("Retry-After", "60")])
            return
        tag = secrets.token_hex(6)
        try:
            dialog = Dialog.uas(request, tag)
        except SIPParseError as exc:
            self._respond(tx, 400, f"Bad Request ({exc})"[:80])
            return
        dialog.local_cseq = secrets.randbelow(1 << 30)
        granted = min(expires, self.max_expires)
        event_id = _event_id(request)
        sub = EventSubscription(package, f"{package};id={event_id}" if event_id else package, resource, watcher,
                                dialog, flow.back())
        self._respond(tx, 200, headers=[("Expires", str(granted))], to_tag=tag, flow=flow)
        if granted:
            self._subs[sub.key] = sub
            arm_expiry(sub, granted, self._expired)
            self._subscribed(sub)
            self._notify(sub, "active")
        else:
            self._notify(sub, "terminated;reason=timeout")

    def owns(self, request: Request) -> bool:
        """True when ``request`` is in one of our subscriptions' dialogs."""
        return _request_key(request) in self._subs

    def in_dialog(self, tx: ServerTransaction, request: Request) -> None:
        """A request in a subscription's dialog: SUBSCRIBE refreshes (200 and a NOTIFY) or
        ends it (``Expires: 0``: 200 and a terminated NOTIFY); other methods get 405; a CSeq
        out of order gets 500 (RFC 3261 §12.2.2); an unknown dialog 481."""
        sub = self._subs.get(_request_key(request))
        if sub is None:
            self._respond(tx, 481)
            return
        if request.method != "SUBSCRIBE":
            self._respond(tx, 405, headers=[("Allow", "SUBSCRIBE")])
            return
        refusal = sub.dialog.receive_request(request)
        if refusal is not None:
            self._respond(tx, refusal)
            return
        expires = self._expires(request)
        if expires is None:
            self._respond(tx, 400, "Bad Request (Expires)")
            return
        granted = min(expires, self.max_expires)
        self._respond(tx, 200, headers=[("Expires", str(granted))], flow=sub.flow)
        if granted:
            arm_expiry(sub, granted, self._expired)
            self._notify(sub, "active")
        else:
            self._drop(sub)
            self._notify(sub, "terminated")

    def changed(self, resource: str, package: str | None = None) -> None:
        """``resource``'s state (of ``package``, or of every package) changed: a NOTIFY to
        each of its subscriptions, with the state as it is now."""
        if self._closed:
            return
        for sub in self.subscriptions(resource, package):
            self._notify(sub, "active")

    # -- what a package says -----------------------------------------------------------------
    def _snapshot(self, sub: EventSubscription) -> Any:
        """The state of ``sub``'s resource now, taken when a NOTIFY is decided (it may be sent
        later, when the one before it is answered)."""
        raise NotImplementedError

    def _body(self, sub: EventSubscription, snapshot: Any) -> tuple[bytes, str]:
        """(body, Content-Type) of the NOTIFY carrying ``snapshot``; ``sub.version`` is this
        NOTIFY's version. ``ValueError`` ends the subscription."""
        raise NotImplementedError

    def _subscribed(self, sub: EventSubscription) -> None:
        """Told of each new subscription (before its first NOTIFY); nothing by default."""

    # -- internals ---------------------------------------------------------------------------
    def _expires(self, request: Request) -> int | None:
        """The SUBSCRIBE's Expires (RFC 6665 §4.1.2.1; absent: :attr:`default_expires`); None
        when malformed."""
        value = (request.headers.get("Expires") or str(self.default_expires)).strip()
        if not value.isdigit() or len(value) > 10:
            return None
        return int(value)

    def _expired(self, sub: EventSubscription) -> None:
        if self._subs.get(sub.key) is sub:
            self._drop(sub)
            self._notify(sub, "terminated;reason=timeout")

    def _drop(self, sub: EventSubscription) -> None:
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]
        disarm(sub)

    def _notify(self, sub: EventSubscription, state: str) -> None:
        """Send a NOTIFY with ``state`` (``active``, or ``terminated[;reason=…]``) and the
        resource's state now — at once, or after the NOTIFY in flight is answered (a later
        call replaces an ``active`` one still waiting; a ``terminated`` one is never replaced)."""
        if sub.pending is not None and sub.pending[0].startswith("terminated"):
            return
        sub.pending = (state, self._snapshot(sub))
        if not sub.sending:
            sub.sending = True
            self._spawn(self._pump(sub))

    async def _pump(self, sub: EventSubscription) -> None:
        """Send ``sub``'s waiting NOTIFYs one after the other until none waits, the
        subscription ended or a NOTIFY failed."""
        try:
            while sub.pending is not None:
                (state, snapshot), sub.pending = sub.pending, None
                if not await self._send(sub, state, snapshot) or state.startswith("terminated"):
                    sub.pending = None
                    return
        finally:
            sub.sending = False

    async def _send(self, sub: EventSubscription, state: str, snapshot: Any) -> bool:
        """One NOTIFY (RFC 6665 §4.2.2); False (the subscription dropped) when it could not be
        sent or was refused or not answered."""
        if state == "active":
            remaining = sub.expires_at - asyncio.get_running_loop().time()
            state = f"active;expires={max(1, int(remaining))}"
        try:
            body, content_type = self._body(sub, snapshot)
            request = sub.dialog.request(
                "NOTIFY", self.endpoint.via(sub.flow), headers=[("Event", sub.event), ("Subscription-State", state)],
                body=body, content_type=content_type, contact=self.endpoint.contact(sub.flow))
            sub.version += 1
            outcome = await self.endpoint.transact(request, sub.flow, timeout=NOTIFY_TIMEOUT)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            log.info("lab notifier: NOTIFY %s of %s to %s failed: %s", sub.package, sub.resource, sub.watcher,
                     getattr(exc, "reason", None) or exc)
            self._drop(sub)
            return False
        code = outcome.response.status_code if outcome.response is not None else None
        if code is None or code >= 300:  # RFC 6665 §4.2.2: 481, 408, … or silence: the subscription is gone
            log.info("lab notifier: NOTIFY %s of %s to %s answered %s: subscription dropped", sub.package,
                     sub.resource, sub.watcher, code if code is not None else outcome.error)
            self._drop(sub)
            return False
        return True

    def _respond(self, tx: ServerTransaction, code: int, reason: str | None = None, *,
                 headers: list[tuple[str, str]] | None = None, to_tag: str | None = None,
                 flow: Flow | None = None) -> None:
        """A response with Allow-Events (RFC 6665 §7.2.2) and, on a 2xx with ``flow``, our
        Contact (§4.2.1.1: the NOTIFYs' dialog needs it); a new To tag unless ``to_tag`` or the
        request has one."""
        tag = to_tag or (None if tx.request.to_tag else secrets.token_hex(6))
        contact = self.endpoint.contact(flow) if flow is not None and code < 300 else None
        with contextlib.suppress(SIPTransportError, SIPParseError, ValueError):
            response = build_response(tx.request, code, reason, to_tag=tag, contact=contact, server=SERVER,
                                      headers=[("Allow-Events", ", ".join(self.allow_events)), *(headers or [])])
            self.endpoint.send_response(tx, response)


def _request_key(request: Request) -> tuple[str, str, str]:
    return request.call_id or "", request.to_tag or "", request.from_tag or ""
