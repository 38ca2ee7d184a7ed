"""The lab's voicemail: a mailbox per lab user, and the lab as the message-waiting notifier
(the ``message-summary`` event package of RFC 3842 over RFC 6665).

- :class:`Mailboxes` keeps each user's voice messages in memory (at most
  :data:`MAX_MESSAGES` a box, each at most :data:`MAX_MESSAGE_SECONDS` of 8000 Hz audio):
  the services' deposit (``*<user>``) adds one, their ``voicemail`` extension plays the new
  ones to their owner and marks them heard. Every change is told to the listeners.
- :class:`MWINotifier` is the notifier side of RFC 6665 §4.2 for those mailboxes: an
  authenticated user's SUBSCRIBE to its own AOR with ``Event: message-summary`` is answered
  200 with the granted ``Expires`` (at most :data:`MAX_EXPIRES` s), and a NOTIFY with the
  summary follows at once (§4.2.1.2), after each refresh, and whenever the mailbox changes.
  ``Expires: 0`` ends the subscription with a last NOTIFY (``terminated``); a subscription not
  refreshed in time ends with ``terminated;reason=timeout`` (§4.2.2). A NOTIFY answered 481,
  or not answered at all, ends it too. NOTIFYs go over the flow the SUBSCRIBE came on (its
  connection, or its source address), as the lab reaches registered phones. At most
  :data:`MAX_SUBSCRIPTIONS` live at once (503 beyond). Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from skinnysip.lab.tasks import TaskOwner
from skinnysip.net.sip_endpoint import SIPEndpoint, SIPTransportError
from skinnysip.sip.dialog import Dialog
from skinnysip.sip.message import Request, SIPParseError
from skinnysip.sip.mwi import CONTENT_TYPE, MessageSummary, format_message_summary
from skinnysip.sip.request import build_response
from skinnysip.sip.server_transaction import ServerTransaction
from skinnysip.sip.transaction import Flow

__all__ = ["MAX_EXPIRES", "MAX_MESSAGES", "MAX_MESSAGE_SECONDS", "MAX_SUBSCRIPTIONS", "EVENT", "Mailboxes",
           "MWINotifier", "VoiceMessage"]

log = logging.getLogger(__name__)

#: messages a mailbox keeps (the oldest goes first)
MAX_MESSAGES = 20
#: seconds of a message kept at most
MAX_MESSAGE_SECONDS = 60.0
#: the longest subscription granted (s); a longer Expires is cut to it (RFC 6665 §4.2.1.1)
MAX_EXPIRES = 3600
#: subscriptions live at once, all users together
MAX_SUBSCRIPTIONS = 256
#: seconds a NOTIFY waits for its response
NOTIFY_TIMEOUT = 8.0
#: the event package served
EVENT = "message-summary"
RATE = 8000
SERVER = "skinnysip-lab"


@dataclass
class VoiceMessage:
    """One message: who left it (the caller's AOR user or URI), when (wall-clock seconds), its
    audio (int16, 8000 Hz mono) and whether its owner has heard it yet."""

    caller: str
    time: float
    samples: npt.NDArray[np.int16] = field(repr=False)
    new: bool = True

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


class Mailboxes:
    """The lab users' mailboxes (``users``: who has one). ``listeners`` are called with a
    user's name after each change of that user's box."""

    def __init__(self, users: set[str], domain: str) -> None:
        self.users = set(users)
        self.domain = domain
        self._boxes: dict[str, deque[VoiceMessage]] = {}
        self.listeners: list[Callable[[str], None]] = []

    def has(self, user: str) -> bool:
        return user in self.users

    def deposit(self, user: str, caller: str, samples: npt.NDArray[np.int16]) -> VoiceMessage:
        """Leave a message in ``user``'s box (cut to :data:`MAX_MESSAGE_SECONDS`; the oldest
        message goes when the box holds :data:`MAX_MESSAGES`). ``KeyError`` for a user without
        a box."""
        if user not in self.users:
            raise KeyError(user)
        message = VoiceMessage(caller, time.time(), np.asarray(samples[: int(MAX_MESSAGE_SECONDS * RATE)],
                                                               dtype=np.int16))
        self._boxes.setdefault(user, deque(maxlen=MAX_MESSAGES)).append(message)
        self._changed(user)
        return message

    def messages(self, user: str) -> list[VoiceMessage]:
        """``user``'s messages, oldest first."""
        return list(self._boxes.get(user, ()))

    def take_new(self, user: str) -> list[VoiceMessage]:
        """The new messages of ``user``, oldest first, now marked heard (a change when any)."""
        fresh = [m for m in self._boxes.get(user, ()) if m.new]
        for message in fresh:
            message.new = False
        if fresh:
            self._changed(user)
        return fresh

    def summary(self, user: str) -> MessageSummary:
        """``user``'s summary: waiting when a message is new; Message-Account the AOR; the
        voice-message counts (new/old)."""
        box = self._boxes.get(user, ())
        new = sum(1 for m in box if m.new)
        return MessageSummary(new > 0, f"sip:{user}@{self.domain}", (("voice-message", (new, len(box) - new, 0, 0)),))

    def _changed(self, user: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(user)
            except Exception:  # a listener's fault must not lose the message
                log.exception("voicemail listener failed")


@dataclass
class _Subscription:
    user: str
    dialog: Dialog
    flow: Flow
    expires_at: float  # loop time
    timer: asyncio.TimerHandle | None = None


class MWINotifier(TaskOwner):
    """The notifier for ``mailboxes`` on ``endpoint`` (the lab proxy's). The proxy hands it
    an authenticated user's SUBSCRIBE (:meth:`subscribe`) and every in-dialog request
    (:meth:`owns`, :meth:`in_dialog`)."""

    def __init__(self, endpoint: SIPEndpoint, mailboxes: Mailboxes) -> None:
        self.endpoint = endpoint
        self.mailboxes = mailboxes
        self._subs: dict[tuple[str, str, str], _Subscription] = {}  # (Call-ID, our tag, their tag)
        self._closed = False
        mailboxes.listeners.append(self.changed)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        """Drop every subscription (no NOTIFY: the lab is going away) and end the NOTIFYs under way."""
        self._closed = True
        for sub in self._subs.values():
            if sub.timer is not None:
                sub.timer.cancel()
        self._subs.clear()
        with contextlib.suppress(ValueError):
            self.mailboxes.listeners.remove(self.changed)
        tasks = list(getattr(self, "_tasks", ()))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    @property
    def count(self) -> int:
        return len(self._subs)

    # -- requests ----------------------------------------------------------------------------
    def subscribe(self, tx: ServerTransaction, request: Request, flow: Flow, user: str) -> None:
        """A new SUBSCRIBE (no To tag) from ``user``, already authenticated, to its own
        mailbox: 200 and the first NOTIFY; 400 without a Contact or From tag, 503 when
        :data:`MAX_SUBSCRIPTIONS` are live, 200 + a terminated NOTIFY for ``Expires: 0`` (a
        fetch, RFC 6665 §4.4.3)."""
        expires = _expires(request)
        if expires is None:
            self._respond(tx, 400, "Bad Request (Expires)")
            return
        if expires and len(self._subs) >= MAX_SUBSCRIPTIONS:
            self._respond(tx, 503, headers=[("Retry-After", "60")])
            return
        tag = secrets.token_hex(6)
        try:
            dialog = Dialog.uas(request, tag)
        except SIPParseError as exc:
            self._respond(tx, 400, f"Bad Request ({exc})"[:80])
            return
        dialog.local_cseq = secrets.randbelow(1 << 30)
        granted = min(expires, MAX_EXPIRES)
        sub = _Subscription(user, dialog, flow.back(), 0.0)
        self._respond(tx, 200, headers=[("Expires", str(granted))], to_tag=tag, flow=flow)
        if granted:
            self._subs[_key(dialog)] = sub
            self._arm(sub, granted)
            self._spawn(self._notify(sub, f"active;expires={granted}"))
        else:
            self._spawn(self._notify(sub, "terminated;reason=timeout"))

    def owns(self, request: Request) -> bool:
        """True when ``request`` is in one of our subscriptions' dialogs."""
        return _request_key(request) in self._subs

    def in_dialog(self, tx: ServerTransaction, request: Request) -> None:
        """A request in a subscription's dialog: SUBSCRIBE refreshes (200 and a NOTIFY) or
        ends it (``Expires: 0``: 200 and a terminated NOTIFY); other methods get 405; a CSeq
        out of order gets 500 (RFC 3261 §12.2.2)."""
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
        expires = _expires(request)
        if expires is None:
            self._respond(tx, 400, "Bad Request (Expires)")
            return
        granted = min(expires, MAX_EXPIRES)
        self._respond(tx, 200, headers=[("Expires", str(granted))], flow=sub.flow)
        if granted:
            self._arm(sub, granted)
            self._spawn(self._notify(sub, f"active;expires={granted}"))
        else:
            self._drop(sub)
            self._spawn(self._notify(sub, "terminated"))

    def changed(self, user: str) -> None:
        """``user``'s mailbox changed: a NOTIFY to each of its subscriptions."""
        if self._closed:
            return
        now = asyncio.get_running_loop().time()
        for sub in [s for s in self._subs.values() if s.user == user]:
            self._spawn(self._notify(sub, f"active;expires={max(1, int(sub.expires_at - now))}"))

    # -- internals ---------------------------------------------------------------------------
    def _arm(self, sub: _Subscription, seconds: int) -> None:
        loop = asyncio.get_running_loop()
        sub.expires_at = loop.time() + seconds
        if sub.timer is not None:
            sub.timer.cancel()
        sub.timer = loop.call_later(seconds, self._expired, sub)

    def _expired(self, sub: _Subscription) -> None:
        if self._subs.get(_key(sub.dialog)) is sub:
            self._drop(sub)
            self._spawn(self._notify(sub, "terminated;reason=timeout"))

    def _drop(self, sub: _Subscription) -> None:
        self._subs.pop(_key(sub.dialog), None)
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None

    async def _notify(self, sub: _Subscription, state: str) -> None:
        body = format_message_summary(self.mailboxes.summary(sub.user))
        try:
            request = sub.dialog.request(
                "NOTIFY", self.endpoint.via(sub.flow), headers=[("Event", EVENT), ("Subscription-State", state)],
                body=body, content_type=CONTENT_TYPE, contact=self.endpoint.contact(sub.flow))
            outcome = await self.endpoint.transact(request, sub.flow, timeout=NOTIFY_TIMEOUT)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            log.info("lab voicemail: NOTIFY to %s failed: %s", sub.user, exc)
            self._drop(sub)
            return
        code = outcome.response.status_code if outcome.response is not None else None
        if code is None or code == 481 or code >= 300:  # RFC 6665 §4.2.2: the subscription is gone
            log.info("lab voicemail: NOTIFY to %s answered %s: subscription dropped", sub.user,
                     code if code is not None else outcome.error)
            self._drop(sub)

    def _respond(self, tx: ServerTransaction, code: int, reason: str | None = None, *,
                 headers: list[tuple[str, str]] | None = None, to_tag: str | None = None,
                 flow: Flow | None = None) -> None:
        """A response with Allow-Events (RFC 6665 §7.2.2) and, on a 2xx, our Contact (§4.2.1.1:
        the NOTIFYs' dialog needs it); a new To tag unless ``to_tag`` or the request has one."""
        tag = to_tag or (None if tx.request.to_tag else secrets.token_hex(6))
        contact = self.endpoint.contact(flow) if flow is not None and code < 300 else None
        with contextlib.suppress(SIPTransportError, SIPParseError, ValueError):
            response = build_response(tx.request, code, reason, to_tag=tag, contact=contact, server=SERVER,
                                      headers=[("Allow-Events", EVENT), *(headers or [])])
            self.endpoint.send_response(tx, response)


def _expires(request: Request) -> int | None:
    """The SUBSCRIBE's Expires (RFC 6665 §4.1.2.1; absent: the package's default, 3600 s for
    message-summary, RFC 3842 §4); None when malformed."""
    value = (request.headers.get("Expires") or "3600").strip()
    if not value.isdigit() or len(value) > 10:
        return None
    return int(value)


def _key(dialog: Dialog) -> tuple[str, str, str]:
    return dialog.call_id, dialog.local_tag, dialog.remote_tag


def _request_key(request: Request) -> tuple[str, str, str]:
    return request.call_id or "", request.to_tag or "", request.from_tag or ""

