"""The SIP phone's subscriptions, as the subscriber of RFC 6665: SUBSCRIBE to an event
package of a resource, kept alive by refreshes, subscribed again after a failure or a
termination, each NOTIFY answered.

- :class:`MWISubscription`: the ``message-summary`` package (RFC 3842) of its mailbox — what
  pjsua's ``--mwi`` and baresip's ``mwi`` module do. Voicemail servers that notify only
  subscribers (Kamailio's ``presence_mwi``, most IP-PBXs unless told otherwise) need it; the
  unsolicited NOTIFYs that others send are handled by the phone without a subscription.
  Its summaries become :class:`~skinnysip.phone.api.MessageWaiting` events.
- :class:`PresenceSubscription`: the ``presence`` package (RFC 3856) of a presentity, PIDF
  bodies (RFC 3863) → :class:`~skinnysip.phone.api.PresenceChanged` events (a buddy list).
- :class:`DialogSubscription`: the ``dialog`` package (RFC 4235) of a line, dialog-info
  bodies → :class:`~skinnysip.phone.api.DialogStateChanged` events: a busy-lamp-field key.

A body that does not parse is answered 400 with a Warning; failures are
:class:`~skinnysip.phone.api.ErrorEvent` events and the subscription is tried again later.
Every wait has a deadline and the retries are spaced (at least :data:`RETRY_INTERVAL` s).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from skinnysip.net.sip_endpoint import USER_AGENT, SIPTransportError
from skinnysip.phone.api import (
    DialogStateChanged,
    ErrorEvent,
    MessageWaiting,
    PhoneError,
    PresenceChanged,
    dialog_to_dict,
)
from skinnysip.sip.dialog import Dialog, dialog_id
from skinnysip.sip.message import Request, SIPParseError
from skinnysip.sip.mwi import parse_message_summary
from skinnysip.sip.request import event_package, new_call_id, new_request, warning_field
from skinnysip.sip.uri import NameAddr, SipURI

if TYPE_CHECKING:
    from skinnysip.phone.sip_phone import SIPPhone
    from skinnysip.sip.presence import DialogInfoView
    from skinnysip.sip.transaction import Flow
    from skinnysip.sip.transactions import RequestReceived

#: Seconds a subscription is asked for (RFC 3842 §5 suggests nothing; servers pick ~3600).
EXPIRES = 3600
#: Seconds before trying again after a failed SUBSCRIBE or a terminated subscription.
RETRY_INTERVAL = 60.0
#: Seconds between two new SUBSCRIBEs at least (a notifier that terminates every
#: subscription at once does not make a loop of them).
MIN_SPACING = 5.0


class Subscription:
    """The subscriber side of one subscription (RFC 6665 §4.1) to the :attr:`EVENT` package
    of ``uri``; subclasses say how a NOTIFY's body is read (:meth:`_parse`) and what it
    tells (:meth:`_deliver`).

    ``state``: ``"init"`` (nothing sent), ``"pending"``/``"active"`` (the notifier's last
    Subscription-State), ``"terminated"``, or ``"failed"`` (the last SUBSCRIBE was refused;
    ``reason`` says how). ``expires_at``: the monotonic time the subscription ends unless
    refreshed.
    """

    #: the event package (RFC 6665 §7.2) and the body type we accept in its NOTIFYs
    EVENT = ""
    ACCEPT = ""

    def __init__(self, phone: SIPPhone, uri: str, expires: int = EXPIRES) -> None:
        self.phone = phone
        self.uri = uri
        self.expires = expires
        self.state = "init"
        self.reason = ""
        self.expires_at: float | None = None
        self.dialog: Dialog | None = None
        self._call_id = new_call_id()
        self._tag = secrets.token_hex(6)
        self._wake = asyncio.Event()
        #: we ended it (:meth:`unsubscribe`): NOTIFYs still coming are answered 200 and ignored
        self.ended = False

    # -- what the phone's loop runs ------------------------------------------------------------
    async def run(self) -> None:
        """Subscribe, refresh before expiry, subscribe again after a failure or a
        termination, until cancelled (at :meth:`SIPPhone.close`)."""
        while True:
            started = time.monotonic()
            self._wake.clear()  # a NOTIFY that asks for the next SUBSCRIBE while this one runs counts
            granted = await self._subscribe(self.expires)
            if granted is None:
                delay = RETRY_INTERVAL
            else:  # RFC 6665 §4.1.2.2: refresh before the granted time runs out
                delay = max(1.0, min(granted * 0.8, granted - 5.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            await asyncio.sleep(max(0.0, started + MIN_SPACING - time.monotonic()))

    async def unsubscribe(self, timeout: float = 3.0) -> None:
        """SUBSCRIBE with Expires 0 in the dialog (RFC 6665 §4.1.2.3), bounded by ``timeout``
        seconds; nothing when there is no subscription."""
        self.ended = True  # the notifier's last NOTIFY (§4.2.1.2: it follows) is answered 200, quietly
        if self.dialog is None or self.state in ("terminated", "failed"):
            return
        with contextlib.suppress(TimeoutError, PhoneError, SIPTransportError, SIPParseError, ValueError):
            await asyncio.wait_for(self._subscribe(0), timeout)
        self.state = "terminated"
        self.dialog = None

    async def _subscribe(self, expires: int) -> int | None:
        """One SUBSCRIBE (a new one, or a refresh in the dialog): the granted seconds on a
        2xx, None after a failure (reported as an ErrorEvent)."""
        phone = self.phone
        try:
            flow = await phone._flow_for(self.uri)
            request = self._request(flow, expires)
            outcome = await phone.endpoint.transact(request, flow, timeout=phone.account.timeout,
                                                    credentials=phone.credentials)
        except (PhoneError, SIPTransportError, SIPParseError, ValueError) as exc:
            self._failed(f"SUBSCRIBE {self.EVENT}: {getattr(exc, 'reason', None) or exc}")
            return None
        response = outcome.response
        if response is None:
            self._failed(f"SUBSCRIBE {self.EVENT}: {outcome.error}")
            return None
        code = response.status_code
        if self.dialog is not None:
            self.dialog.local_cseq = max(self.dialog.local_cseq or 0, outcome.request.cseq[0])
        if code == 423 and expires:  # RFC 6665 §4.1.2.1: ask again for at least Min-Expires
            minimum = (response.headers.get("Min-Expires") or "").strip()
            if minimum.isdigit() and expires < int(minimum) <= 86400:
                self.expires = int(minimum)
                return await self._subscribe(self.expires)
        if code == 481 and self.dialog is not None:  # the notifier forgot us: a new subscription
            self._restart()
            return await self._subscribe(expires) if expires else None
        if not 200 <= code < 300:
            self._failed(f"SUBSCRIBE {self.EVENT} refused: {response.summary}")
            return None
        if self.dialog is None:
            try:
                self.dialog = Dialog.uac(outcome.request, response)
            except (SIPParseError, ValueError) as exc:
                self._failed(f"SUBSCRIBE {self.EVENT}: {getattr(exc, 'reason', None) or exc}")
                return None
        value = (response.headers.get("Expires") or "").strip()
        granted = int(value) if value.isdigit() else expires  # §4.1.2.1: a 2xx carries Expires
        granted = min(granted, expires) if expires else 0
        if expires == 0:
            return 0
        if self.state in ("init", "failed", "terminated"):
            self.state = "pending"  # until a NOTIFY says more (§4.1.2.1)
        self.reason = ""
        self.expires_at = time.monotonic() + granted
        return granted

    def _request(self, flow: Flow, expires: int) -> Request:
        phone = self.phone
        headers = [("Event", self.EVENT), ("Accept", self.ACCEPT), ("Expires", str(expires))]
        contact = phone._contact(flow)
        via = phone.endpoint.via(flow)
        if self.dialog is not None:
            return self.dialog.request("SUBSCRIBE", via, headers=[*headers, ("User-Agent", USER_AGENT)],
                                       contact=contact)
        return new_request("SUBSCRIBE", self.uri, from_=phone.identity(self._tag), to=NameAddr(None, SipURI.parse(self.uri)), via=via,
                           call_id=self._call_id, contact=contact, route_set=phone._route_set(),
                           user_agent=USER_AGENT, headers=headers)

    def _failed(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        self.phone.emit(ErrorEvent(reason))

    # -- NOTIFY (RFC 6665 §4.1.3) ----------------------------------------------------------------
    def owns(self, request: Request) -> bool:
        """True for a NOTIFY of this subscription: our Call-ID, our tag as its To tag."""
        return request.method == "NOTIFY" and request.call_id == self._call_id and request.to_tag == self._tag

    def notify_received(self, event: RequestReceived) -> None:
        """Answer the NOTIFY: 489 for another event package, 400 for a body that does not
        parse, 200 (and the package's event when it carries a body) otherwise; a ``terminated`` Subscription-State ends the
        subscription and, unless its reason forbids it, brings the next attempt forward."""
        request, tx = event.request, event.transaction
        endpoint = self.phone.endpoint
        if event_package(request) != self.EVENT:
            endpoint.respond(tx, 489)
            return
        if self.ended:
            endpoint.respond(tx, 200)
            return
        if self.dialog is None:  # §4.1.2.4: a NOTIFY may come before the 2xx; it makes the dialog
            try:
                self.dialog = Dialog.uas(request, self._tag)
            except (SIPParseError, ValueError):
                endpoint.respond(tx, 400)
                return
        elif self.dialog.id != dialog_id(request, local_is_from=False):
            endpoint.respond(tx, 481)
            return
        else:
            refusal = self.dialog.receive_request(request)
            if refusal is not None:
                endpoint.respond(tx, refusal)
                return
        parsed = None
        if request.body:
            try:
                parsed = self._parse(request.body)
            except ValueError as exc:
                endpoint.respond(tx, 400, headers=[warning_field(str(exc))])
                return
        endpoint.respond(tx, 200)
        state, _, params = (request.headers.get("Subscription-State") or "active").partition(";")
        self.state = state.strip().lower() or "active"
        if parsed is not None:
            self._deliver(parsed)
        if self.state == "terminated":
            self.expires_at = None
            reason = next((p.split("=", 1)[1].strip().lower() for p in params.split(";")
                           if p.strip().lower().startswith("reason=")), "")
            self.reason = f"terminated by the notifier{f' ({reason})' if reason else ''}"
            self.phone.emit(ErrorEvent(f"{self.EVENT} subscription {self.reason}"))
            self._restart()
            if reason not in ("noresource", "rejected", "invariant"):  # §4.1.3: those ask not to retry now
                self._wake.set()

    def summary(self) -> dict[str, Any]:
        """The watch as JSON (the CLI's ``watches``, the API's phone view): ``uri``, ``event``
        (the package), ``state``, ``reason``, and what the package tells (subclasses)."""
        return {"uri": self.uri, "event": self.EVENT, "state": self.state, "reason": self.reason}

    # -- what a package says ---------------------------------------------------------------------
    def _parse(self, body: bytes) -> Any:
        """A NOTIFY body read; ``ValueError`` (its message goes in the 400's Warning) when
        malformed."""
        raise NotImplementedError

    def _deliver(self, parsed: Any) -> None:
        """What a read body tells, as phone events."""
        raise NotImplementedError

    def _restart(self) -> None:
        """The subscription is over (terminated, or forgotten by the notifier): the next
        SUBSCRIBE makes a new one."""
        self.dialog = None
        self._call_id = new_call_id()


class MWISubscription(Subscription):
    """The ``message-summary`` subscription (RFC 3842) to ``uri``, the mailbox: the phone's
    AOR unless the account names another. Summaries become :class:`MessageWaiting` events."""

    EVENT = "message-summary"
    ACCEPT = "application/simple-message-summary"

    def _parse(self, body: bytes) -> Any:
        return parse_message_summary(body)  # MessageSummaryError is a ValueError

    def _deliver(self, parsed: Any) -> None:
        self.phone.emit(MessageWaiting(parsed.waiting, parsed.account, parsed.counts))


class PresenceSubscription(Subscription):
    """The ``presence`` subscription (RFC 3856) to a presentity ``uri``: each PIDF document
    (RFC 3863) becomes a :class:`PresenceChanged` event; ``basic`` is the last one's status
    (``open``/``closed``/None)."""

    EVENT = "presence"
    ACCEPT = "application/pidf+xml"

    def __init__(self, phone: SIPPhone, uri: str, expires: int = EXPIRES) -> None:
        super().__init__(phone, uri, expires)
        self.basic: str | None = None
        self.notes: tuple[str, ...] = ()
        self.activities: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """:meth:`Subscription.summary` with ``basic``, ``notes`` and ``activities``."""
        return {**super().summary(), "basic": self.basic, "notes": list(self.notes),
                "activities": list(self.activities)}

    def _parse(self, body: bytes) -> Any:
        from skinnysip.sip.presence import parse_pidf  # XML only for a phone that watches

        return parse_pidf(body)  # PresenceError is a ValueError

    def _deliver(self, parsed: Any) -> None:
        notes = parsed.notes or tuple(n for t in parsed.tuples for n in t.notes)
        self.basic, self.notes, self.activities = parsed.basic, notes, parsed.activities
        self.phone.emit(PresenceChanged(self.uri, parsed.basic, notes, parsed.activities))


class DialogSubscription(Subscription):
    """The ``dialog`` subscription (RFC 4235) to a line ``uri``, as a busy-lamp-field key
    watches it: the dialog-info documents are merged (full ones replace, partial ones update
    by dialog id, versions in order: :class:`~skinnysip.sip.presence.DialogInfoView`) and each
    change becomes a :class:`DialogStateChanged` event with the lamp (``idle``, ``calling``,
    ``ringing``, ``busy``). An old or repeated version is discarded; a document that cannot
    be applied (a version gap, or a partial one before any full one) makes the subscription
    refresh now, which brings a full document (RFC 4235 §4.1, RFC 6665 §4.2.1)."""

    EVENT = "dialog"
    ACCEPT = "application/dialog-info+xml"

    def __init__(self, phone: SIPPhone, uri: str, expires: int = EXPIRES) -> None:
        super().__init__(phone, uri, expires)
        self.view = _dialog_info_view()

    @property
    def lamp(self) -> str:
        """``idle``, ``calling``, ``ringing`` or ``busy``: what the line's dialogs show."""
        return self.view.summary

    def summary(self) -> dict[str, Any]:
        """:meth:`Subscription.summary` with the ``lamp`` and the ``dialogs`` (as
        :func:`~skinnysip.phone.api.dialog_to_dict` gives them)."""
        return {**super().summary(), "lamp": self.lamp,
                "dialogs": [dialog_to_dict(d) for d in self.view.dialogs.values()]}

    def _parse(self, body: bytes) -> Any:
        from skinnysip.sip.presence import parse_dialog_info

        return parse_dialog_info(body)

    def _deliver(self, parsed: Any) -> None:
        if self.view.version is not None and parsed.version <= self.view.version:
            return  # RFC 4235 §4.1.1: an old or repeated version is discarded
        if not self.view.apply(parsed):
            self.phone.emit(ErrorEvent(f"dialog-info version {parsed.version} of {self.uri} does not follow "
                                       f"{self.view.version}: refreshing for the full state"))
            self._wake.set()
            return
        self.phone.emit(DialogStateChanged(self.uri, self.view.summary, tuple(self.view.dialogs.values())))

    def _restart(self) -> None:
        super()._restart()
        self.view = _dialog_info_view()


def _dialog_info_view() -> DialogInfoView:
    from skinnysip.sip.presence import DialogInfoView  # imported by the first dialog watch only

    return DialogInfoView()
