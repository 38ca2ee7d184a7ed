"""The lab as its users' presence server and busy-lamp-field (BLF) notifier, so that phones on
the lab watch each other with no other server: :class:`PresenceNotifier` serves the
``presence`` (RFC 3856) and ``dialog`` (RFC 4235) event packages of every lab user's AOR, over
the RFC 6665 bookkeeping of :class:`~skinnysip.lab.notifier.EventNotifier` (grant, refresh,
``Expires: 0``, expiry, one NOTIFY in flight per subscription over the SUBSCRIBE's flow; a
NOTIFY answered 481/408 or not at all ends the subscription).

- ``Event: dialog``: an authenticated lab user's SUBSCRIBE to any lab user's AOR (its own
  too) → 200, then NOTIFYs of full ``application/dialog-info+xml`` documents (``state="full"``,
  ``entity`` the watched AOR, ``version`` 0 in the first NOTIFY of each subscription and one
  more in each next one, RFC 4235 §4.1) listing that user's calls through the lab. The calls
  are the proxy's own record (:class:`~skinnysip.lab.proxy.CallRecord`, what ``/api/lab/calls``
  shows): :class:`DialogTracker` follows each INVITE call's state there, as pua_dialoginfo
  (Kamailio) and Asterisk do — the caller's dialog (``direction="initiator"``) is ``trying``
  once the lab forwards its INVITE; both sides are ``early`` when the callee rings (the callee's
  dialog has ``direction="recipient"``: its lamp blinks), ``confirmed`` on the 2xx,
  ``terminated`` on the BYE (``local-bye``/``remote-bye``), the CANCEL (``cancelled``) or a
  final failure (``rejected`` or ``timeout`` with the code). A terminated dialog is told once,
  then forgotten. Dialog ids are stable per call and side; each carries the Call-ID, the tags
  known and the other party's URI as remote identity.
- ``Event: presence``: a lab user's SUBSCRIBE to a lab user's AOR → 200 and NOTIFYs of a PIDF
  (``application/pidf+xml``): the document that user last PUBLISHed, else one made from the
  registrar (basic ``open`` while the user has a binding, ``closed`` otherwise). A NOTIFY
  follows each change: a PUBLISH that changes the document, a registration or its removal,
  a binding or a publication expiring.
- PUBLISH (RFC 3903 §6) by a user to its own AOR (authenticated; another AOR's: 403) for
  ``Event: presence`` (another event: 489 Bad Event): a new publication (a body, no
  ``SIP-If-Match``) → 200 with a new ``SIP-ETag`` and the granted ``Expires`` (default and
  at most :data:`MAX_PUBLISH_EXPIRES` s); a refresh (``SIP-If-Match``, no body), a
  modification (``SIP-If-Match`` and a body) or a removal (``Expires: 0``) of one we know; 412
  for an unknown entity-tag; 400 for a new one without a body or a malformed ``Expires``; 415
  for a body that is not ``application/pidf+xml``; 400 with a ``Warning`` for a PIDF that does
  not parse. At most :data:`MAX_PUBLICATIONS_PER_USER` publications a user (the oldest goes).
- Another event package at a lab user's AOR (not ``message-summary``, ``presence``,
  ``dialog``): 489 Bad Event with ``Allow-Events`` (:data:`LAB_EVENTS`).

Every watcher may watch every lab user (no authorisation policy, no watcher info: a lab).
Bounds: :data:`MAX_SUBSCRIPTIONS` subscriptions in all, :data:`MAX_PER_WATCHER` of one
subscriber (503 beyond), :data:`MAX_DIALOGS_PER_USER` dialogs tracked a user (the oldest
goes). Python units: seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skinnysip.lab.notifier import EventNotifier, EventSubscription, arm_expiry, disarm
from skinnysip.lab.registrar import Registrar
from skinnysip.lab.voicemail import EVENT as MWI_EVENT
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.sip.message import Request
from skinnysip.sip.presence import (
    CONTENT_TYPE_DIALOG_INFO,
    CONTENT_TYPE_PIDF,
    DialogInfoDialog,
    PresenceError,
    build_dialog_info,
    build_pidf,
    parse_pidf,
)
from skinnysip.sip.request import event_package, warning_field
from skinnysip.sip.server_transaction import ServerTransaction
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import user_of

if TYPE_CHECKING:
    from skinnysip.lab.proxy import CallRecord

__all__ = [
    "DIALOG", "LAB_EVENTS", "MAX_DIALOGS_PER_USER", "MAX_EXPIRES", "MAX_PER_WATCHER", "MAX_PUBLICATIONS_PER_USER",
    "MAX_PUBLISH_EXPIRES", "MAX_SUBSCRIPTIONS", "PRESENCE", "DialogTracker", "PresenceNotifier", "Publication",
]

#: the event packages served here
PRESENCE = "presence"
DIALOG = "dialog"
#: every event package the lab serves (its ``Allow-Events``)
LAB_EVENTS = (MWI_EVENT, PRESENCE, DIALOG)
#: the longest subscription granted (s); a longer Expires is cut to it (RFC 6665 §4.2.1.1)
MAX_EXPIRES = 3600
#: presence and dialog subscriptions live at once, all subscribers together
MAX_SUBSCRIPTIONS = 4096
#: … of one subscriber
MAX_PER_WATCHER = 32
#: dialogs tracked for one user (the oldest is forgotten first)
MAX_DIALOGS_PER_USER = 16
#: publications kept for one user (the oldest is removed first)
MAX_PUBLICATIONS_PER_USER = 8
#: the longest publication granted (s), and the one given to a PUBLISH without Expires
MAX_PUBLISH_EXPIRES = 3600


def _terminal(state: str) -> tuple[str | None, int | None] | None:
    """(event, code) of RFC 4235 §4.1.5 for a call record's state that ends the call, None
    for one that does not. ``ended`` gives no event here (who sent the BYE decides)."""
    if state == "ended":
        return None, None
    if state == "cancelled":
        return "cancelled", None
    if state.startswith("failed ("):
        digits = state[len("failed ("):][:3]
        code = int(digits) if digits.isdigit() and 100 <= int(digits) <= 699 else None
        return ("timeout" if code == 408 else "rejected"), code
    return None


#: the call record's states that are no end, and the dialog state each gives
_LIVE_STATES = {"trying": "trying", "ringing": "early", "connected": "confirmed"}


class DialogTracker:
    """The dialogs of each lab user (``users``), as RFC 4235 describes them, from the lab
    proxy's call records: :meth:`update` after each change of a record's state, :meth:`dialogs`
    for a NOTIFY, :meth:`prune` once a terminated dialog was told."""

    def __init__(self, users: set[str]) -> None:
        self.users = set(users)
        self._dialogs: dict[str, OrderedDict[str, DialogInfoDialog]] = {}

    def dialogs(self, user: str) -> tuple[DialogInfoDialog, ...]:
        """``user``'s dialogs, oldest first (the terminated ones not yet pruned too)."""
        return tuple(self._dialogs.get(user, {}).values())

    def prune(self, user: str) -> None:
        """Forget ``user``'s terminated dialogs."""
        dialogs = self._dialogs.get(user)
        if dialogs is None:
            return
        for ident in [i for i, d in dialogs.items() if d.state == "terminated"]:
            del dialogs[ident]
        if not dialogs:
            del self._dialogs[user]

    def update(self, call: CallRecord, request: Request) -> list[str]:
        """Apply the new state of ``call`` (an INVITE's record; others are ignored), whose
        transaction ``request`` changed it (the INVITE, or the BYE that ended it). Returns the
        users whose dialogs changed: the caller (From) and the callee (To) when lab users."""
        if call.method != "INVITE":
            return []
        live = _LIVE_STATES.get(call.state)
        end = None if live is not None else _terminal(call.state)
        if live is None and end is None:
            return []
        by_caller = request.method == "BYE" and request.from_tag == call.from_tag
        changed: list[str] = []
        for uri, other, direction in ((call.from_, call.to, "initiator"), (call.to, call.from_, "recipient")):
            user = user_of(uri)
            if user is None or user not in self.users:
                continue
            if live == "trying" and direction == "recipient":
                continue  # the callee's dialog starts when it rings (pua_dialoginfo's callee_trying 0)
            event, code = end if end is not None else (None, None)
            if call.state == "ended":
                event = "local-bye" if by_caller == (direction == "initiator") else "remote-bye"
            local_tag, remote_tag = ((call.from_tag, call.to_tag) if direction == "initiator"
                                     else (call.to_tag, call.from_tag))
            dialog = DialogInfoDialog(
                id=_dialog_id(call.call_id, direction), state=live or "terminated", call_id=call.call_id,
                local_tag=local_tag, remote_tag=remote_tag, direction=direction, event=event, code=code,
                local_identity=uri, remote_identity=other)
            if self._set(user, dialog):
                changed.append(user)
        return changed

    def _set(self, user: str, dialog: DialogInfoDialog) -> bool:
        dialogs = self._dialogs.get(user)
        old = dialogs.get(dialog.id) if dialogs is not None else None
        if old is None and dialog.state == "terminated":
            return False  # never told (a challenged INVITE, say): nothing to end
        if old == dialog:
            return False
        if dialogs is None:
            dialogs = self._dialogs[user] = OrderedDict()
        dialogs[dialog.id] = dialog
        while len(dialogs) > MAX_DIALOGS_PER_USER:
            dialogs.popitem(last=False)
        return True


def _dialog_id(call_id: str, direction: str) -> str:
    """A dialog id stable for one call and one side of it, that tells nothing of the Call-ID."""
    return "d" + hashlib.blake2s(f"{call_id}\n{direction}".encode(errors="replace"), digest_size=8).hexdigest()


@dataclass(eq=False)
class Publication:
    """One publication of a user's presence (RFC 3903): ``etag`` (its entity-tag now),
    ``body`` (the PIDF as published), ``order`` (larger: published or modified later),
    ``expires_at`` (loop time)."""

    user: str
    etag: str
    body: bytes
    order: int
    expires_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class PresenceNotifier(EventNotifier):
    """The ``presence`` and ``dialog`` notifier of the lab's ``users`` (AORs
    ``sip:<user>@<domain>``) on ``endpoint`` (the lab proxy's), with the lab ``registrar``
    for the presence of users who published none. The proxy hands it the SUBSCRIBEs and
    PUBLISHes to a lab user's AOR (:meth:`handle`), the requests in its subscriptions' dialogs
    (:meth:`owns`, :meth:`in_dialog`), each change of a call record (:meth:`call_changed`) and
    each registration (:meth:`registration_changed`)."""

    packages = (PRESENCE, DIALOG)
    max_subscriptions = MAX_SUBSCRIPTIONS
    max_per_watcher = MAX_PER_WATCHER

    def __init__(self, endpoint: SIPEndpoint, *, registrar: Registrar, users: set[str], domain: str,
                 allow_events: tuple[str, ...] = LAB_EVENTS) -> None:
        super().__init__(endpoint, allow_events=allow_events)
        self.registrar = registrar
        self.users = set(users)
        self.domain = domain
        self.tracker = DialogTracker(self.users)
        self._publications: dict[str, OrderedDict[str, Publication]] = {}
        self._told: dict[str, bytes] = {}  # user → the presence document its watchers were last told
        self._binding_timers: dict[str, asyncio.TimerHandle] = {}
        self._order = itertools.count()

    @property
    def max_expires(self) -> int:
        return MAX_EXPIRES

    async def close(self) -> None:
        """Drop every subscription and publication; stop every timer."""
        for timer in self._binding_timers.values():
            timer.cancel()
        self._binding_timers.clear()
        for pubs in self._publications.values():
            for pub in pubs.values():
                disarm(pub)
        self._publications.clear()
        await super().close()

    def aor(self, user: str) -> str:
        """``sip:<user>@<domain>``: the entity of the documents about ``user``."""
        return f"sip:{user}@{self.domain}"

    @property
    def publications(self) -> int:
        """Publications live now."""
        return sum(len(p) for p in self._publications.values())

    # -- requests ----------------------------------------------------------------------------
    def handle(self, tx: ServerTransaction, request: Request, flow: Flow, user: str,
               authenticated: str | None) -> None:
        """A new SUBSCRIBE or PUBLISH (no To tag) to lab user ``user``'s AOR from the
        ``authenticated`` lab user (None: not one, 403): SUBSCRIBE ``presence``/``dialog`` →
        :meth:`subscribe`; PUBLISH → :meth:`publish`; another event package → 489 with
        ``Allow-Events`` (RFC 6665 §8.3.1)."""
        if authenticated is None:
            self._respond(tx, 403, "Forbidden (not a lab user)")
            return
        if request.method == "PUBLISH":
            self.publish(tx, request, user, authenticated)
            return
        package = event_package(request)
        if request.method != "SUBSCRIBE" or package not in self.packages:
            self._respond(tx, 489)
            return
        self.subscribe(tx, request, flow, user, watcher=authenticated, package=package)

    def publish(self, tx: ServerTransaction, request: Request, user: str, authenticated: str) -> None:
        """A PUBLISH to ``user``'s AOR by ``authenticated`` (RFC 3903 §6; the module docstring
        lists the answers)."""
        if authenticated != user:
            self._respond(tx, 403, f"Forbidden (not the presentity of {authenticated})"[:80])
            return
        if event_package(request) != PRESENCE:  # §6 step 2
            self._respond(tx, 489)
            return
        raw = (request.headers.get("Expires") or str(MAX_PUBLISH_EXPIRES)).strip()
        if not raw.isdigit() or len(raw) > 10:
            self._respond(tx, 400, "Bad Request (Expires)")
            return
        granted = min(int(raw), MAX_PUBLISH_EXPIRES)
        pubs = self._publications.get(user, OrderedDict())
        match = request.headers.get("SIP-If-Match")
        pub: Publication | None = None
        if match is not None:  # §6 step 3: a refresh, modification or removal of one we know
            pub = pubs.get(match.strip())
            if pub is None:
                self._respond(tx, 412)
                return
        elif not request.body:
            self._respond(tx, 400, "Bad Request (a new publication needs a body, RFC 3903 §6)")
            return
        if request.body:  # §6 step 4
            if request.media_type != CONTENT_TYPE_PIDF:
                self._respond(tx, 415, headers=[("Accept", CONTENT_TYPE_PIDF)])
                return
            try:
                parse_pidf(request.body)
            except PresenceError as exc:
                self._respond(tx, 400, "Bad Request (PIDF)", headers=[warning_field(str(exc)[:200])])
                return
        etag = _new_etag()
        if granted == 0:  # §6 step 6 / §4.5: a removal
            if pub is not None:
                self._remove(pub)
            self._respond(tx, 200, headers=[("SIP-ETag", pub.etag if pub is not None else etag), ("Expires", "0")])
            if pub is not None:
                self._presence_changed(user)
            return
        if pub is None:
            pub = Publication(user, etag, request.body, next(self._order))
            while len(pubs) >= MAX_PUBLICATIONS_PER_USER:
                self._remove(next(iter(pubs.values())))
        else:
            del pubs[pub.etag]
            pub.etag = etag  # §6 step 8: a new entity-tag for each successful PUBLISH
            if request.body:
                pub.body, pub.order = request.body, next(self._order)
        pubs[etag] = pub
        self._publications[user] = pubs
        arm_expiry(pub, granted, self._publication_expired)
        self._respond(tx, 200, headers=[("SIP-ETag", etag), ("Expires", str(granted))])
        self._presence_changed(user)

    # -- what the proxy tells ------------------------------------------------------------------
    def call_changed(self, call: CallRecord, request: Request) -> None:
        """A call record's state changed (its transaction's ``request``): NOTIFY the dialog
        watchers of the lab users in the call."""
        for user in self.tracker.update(call, request):
            self.changed(user, DIALOG)  # the snapshot is taken now: a terminated dialog is told once
            self.tracker.prune(user)

    def registration_changed(self, user: str) -> None:
        """``user`` registered (or refreshed, or removed bindings): NOTIFY its presence
        watchers when the document changed."""
        self._presence_changed(user)

    # -- what a NOTIFY carries -----------------------------------------------------------------
    def document(self, user: str) -> bytes:
        """``user``'s PIDF now: the last one published (modified), else ``open`` while the
        user has a binding and ``closed`` otherwise."""
        pubs = self._publications.get(user)
        if pubs:
            return max(pubs.values(), key=lambda p: p.order).body
        bound = bool(self.registrar.lookup(user, time.monotonic()))
        return build_pidf(self.aor(user), "open" if bound else "closed", tuple_id="lab", contact=self.aor(user))

    def _snapshot(self, sub: EventSubscription) -> Any:
        if sub.package == DIALOG:
            return self.tracker.dialogs(sub.resource)
        return self.document(sub.resource)

    def _body(self, sub: EventSubscription, snapshot: Any) -> tuple[bytes, str]:
        if sub.package == DIALOG:
            return build_dialog_info(self.aor(sub.resource), sub.version, snapshot), CONTENT_TYPE_DIALOG_INFO
        return bytes(snapshot), CONTENT_TYPE_PIDF

    def _subscribed(self, sub: EventSubscription) -> None:
        if sub.package == PRESENCE:
            self._told[sub.resource] = self.document(sub.resource)
            self._arm_bindings(sub.resource)

    # -- internals ---------------------------------------------------------------------------
    def _presence_changed(self, user: str) -> None:
        """NOTIFY ``user``'s presence watchers if its document is not the one told last."""
        document = self.document(user)
        if self._told.get(user) != document:
            self._told[user] = document
            self.changed(user, PRESENCE)
        self._arm_bindings(user)

    def _arm_bindings(self, user: str) -> None:
        """While ``user`` has presence watchers and no publication, look again when its first
        binding expires (the registrar drops bindings only when asked)."""
        old = self._binding_timers.pop(user, None)
        if old is not None:
            old.cancel()
        if self._closed or self._publications.get(user) or not self.subscriptions(user, PRESENCE):
            return
        now = time.monotonic()
        bindings = self.registrar.lookup(user, now)
        if bindings:
            delay = max(0.05, min(b.expires_at for b in bindings) - now + 0.05)
            self._binding_timers[user] = asyncio.get_running_loop().call_later(delay, self._presence_changed, user)

    def _publication_expired(self, pub: Publication) -> None:
        pubs = self._publications.get(pub.user)
        if pubs is not None and pubs.get(pub.etag) is pub:
            self._remove(pub)
            self._presence_changed(pub.user)

    def _remove(self, pub: Publication) -> None:
        pubs = self._publications.get(pub.user)
        if pubs is not None and pubs.get(pub.etag) is pub:
            del pubs[pub.etag]
            if not pubs:
                del self._publications[pub.user]
        disarm(pub)


def _new_etag() -> str:
    """An entity-tag (RFC 3903 §11.3.1: a token; unguessable, so nobody else's PUBLISH hits it)."""
    return secrets.token_hex(10)
